//! Command line, `ZIBAI_*` environment variables and a TOML file -> one
//! validated [`Config`].
//!
//! This module owns every option's name, default, sources and validation.
//! Nothing else in the crate parses arguments, option variables or config
//! files: the master resolves once ([`Args::resolve`]) and hands workers the
//! finished result as TOML text ([`Config::to_toml`], read back with
//! [`Config::from_resolved`] from [`RESOLVED_ENV`]), so a worker can never
//! see a configuration that differs from its master's.
//!
//! Precedence, per option: command line > `ZIBAI_<OPTION>` > the file named
//! by `--config`/`ZIBAI_CONFIG` > the default. Resolution is two stages, as
//! in ripgrep: `resolve.rs` first gathers each option's raw text with its
//! origin, then validates it into typed fields, so that every error names
//! the option, the value and where it came from.
//!
//! Variables: `ZIBAI_` and the long name (or an alias) upper-cased, `-` as
//! `_` (`ZIBAI_MAX_WORKERS=20`, `ZIBAI_WORKERS=4`, `ZIBAI_APP=pkg.web:app`);
//! booleans take 1/0/true/false/yes/no/on/off; list options (`listen`,
//! `pythonpath`, `env`, `forwarded-allow-ips`) take several values separated
//! by whitespace; an empty variable counts as unset. File keys are the long
//! names or aliases (`max-workers = 20`, `workers = 4`, `app =
//! "pkg.web:app"`); `""` turns an optional setting off (`pid = ""`). On the
//! command line a flag takes `=false` to turn off what a variable or the
//! file turned on.
//!
//! `--config`, `--print-config` and `--check-config` are not settings: the
//! first may come from `ZIBAI_CONFIG`, none may appear in a file.

mod cli;
mod listen;
mod resolve;
mod users;

pub use cli::{Action, Args, command};
pub use listen::ListenAddr;
pub use users::{Group, User};

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::proto::request::Limits;

/// The master puts the resolved configuration ([`Config::to_toml`]) in this
/// variable for the workers it starts; a worker that finds it uses it
/// instead of parsing its command line and environment.
pub const RESOLVED_ENV: &str = "ZIBAI_RESOLVED_CONFIG";

/// Set (to `1`) by `zibai --check-config` for the `zibai-worker` it runs:
/// load the app and hooks, then exit 0, or 4 with the reason on stderr.
pub const CHECK_APP_ENV: &str = "ZIBAI_CHECK_APP";

/// Where a value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    /// An environment variable and its whole value.
    Env {
        var: String,
        value: String,
    },
    /// A key of a config file; `place` names the file (`config file PATH`).
    File {
        place: String,
        key: String,
    },
    Default,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not validate. `value` is shown as given: quoted
    /// text, or a TOML literal for a file's value.
    #[error("{}", invalid_message(.origin, .option, .value, .reason))]
    Invalid {
        // Boxed: keeps every `Result<_, ConfigError>` small.
        origin: Box<Origin>,
        option: String,
        value: String,
        reason: String,
    },
    #[error("{place}: unknown key {key:?}{}", did_you_mean(.hint))]
    UnknownKey {
        place: String,
        key: String,
        hint: Option<String>,
    },
    #[error("{place}: key {key:?} cannot be set in a config file ({why})")]
    NotInFile {
        place: String,
        key: String,
        why: &'static str,
    },
    #[error("cannot read config file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{place}: {message}")]
    Syntax { place: String, message: String },
    #[error("no app given: pass APP on the command line, set ZIBAI_APP, or set `app` in the config file")]
    MissingApp,
    /// The command line itself is wrong (only from [`Args::try_parse_from`]
    /// callers such as [`reload`]).
    #[error("{0}")]
    Usage(Box<clap::Error>),
}

fn did_you_mean(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!(" (did you mean {h:?}?)"))
        .unwrap_or_default()
}

fn invalid_message(origin: &Origin, option: &str, value: &str, reason: &str) -> String {
    match origin {
        Origin::CommandLine | Origin::Default => format!("invalid value {value} for {option}: {reason}"),
        Origin::Env { var, value: whole } => {
            format!("{var}={whole}: invalid value {value} for {option}: {reason}")
        }
        Origin::File { place, key } => format!("{place}: key {key:?}: invalid value {value}: {reason}"),
    }
}

impl ConfigError {
    /// A command-line value that does not validate.
    pub(crate) fn invalid(option: &str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            origin: Box::new(Origin::CommandLine),
            option: option.to_string(),
            value: format!("{:?}", value.into()),
            reason: reason.into(),
        }
    }

    /// Why a value was refused, without where it came from.
    pub(crate) fn reason(self) -> String {
        match self {
            ConfigError::Invalid { reason, .. } => reason,
            other => other.to_string(),
        }
    }
}

/// The app to serve: `module:attr[.attr…]`, `module` alone, or
/// `module:factory(args…)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSpec {
    pub module: String,
    /// Attribute path; empty means "look up `application`, then `app`".
    pub attrs: Vec<String>,
    /// Literal argument list source of a factory call, e.g. `"'prod', debug=False"`.
    pub call_args: Option<String>,
}

impl AppSpec {
    pub fn parse(s: &str) -> Result<AppSpec, ConfigError> {
        let bad = |why: &str| ConfigError::invalid("APP", s, why);
        let (module, rest) = match s.split_once(':') {
            Some((m, r)) => (m, Some(r)),
            None => (s, None),
        };
        if module.is_empty() || !module.split('.').all(is_identifier) {
            return Err(bad("expected module:attribute, with a dotted module name"));
        }
        let mut spec = AppSpec {
            module: module.to_string(),
            attrs: Vec::new(),
            call_args: None,
        };
        let Some(rest) = rest else { return Ok(spec) };
        let rest = rest.trim();
        let path = match rest.find('(') {
            Some(open) => {
                if !rest.ends_with(')') {
                    return Err(bad("a factory call must end with ')'"));
                }
                spec.call_args = Some(rest[open + 1..rest.len() - 1].to_string());
                &rest[..open]
            }
            None => rest,
        };
        if path.is_empty() || !path.split('.').all(is_identifier) {
            return Err(bad("the attribute after ':' must be a dotted name"));
        }
        spec.attrs = path.split('.').map(str::to_string).collect();
        Ok(spec)
    }
}

/// The spec as it would be written: `parse(spec.to_string()) == spec`.
impl fmt::Display for AppSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.module)?;
        if !self.attrs.is_empty() {
            write!(f, ":{}", self.attrs.join("."))?;
        }
        if let Some(args) = &self.call_args {
            write!(f, "({args})")?;
        }
        Ok(())
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic()) && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// A zero-argument hook given as `module:attr`.
pub type HookSpec = AppSpec;

#[derive(Clone, Debug, PartialEq)]
pub struct Timeouts {
    /// From the first byte of a request head to its end.
    pub header: Duration,
    /// Between requests on a persistent connection.
    pub keep_alive: Duration,
    /// Longest wait for the next piece of a request body.
    pub read: Duration,
    /// Longest wait for the client to accept more response bytes.
    pub write: Duration,
}

/// Where a log goes: `-` is stderr.
pub use crate::logging::Destination as LogTarget;

/// What the configuration was resolved from, so that [`reload`] can do it
/// again.
#[derive(Clone, Debug)]
enum Sources {
    /// The command line (argv[0] included) and the directory it was given
    /// in: relative paths in it, the config file's included, stay relative
    /// to that directory even after `--chdir`.
    Args { argv: Vec<OsString>, cwd: PathBuf },
    /// [`Config::from_resolved`] text.
    Resolved(String),
}

/// The validated configuration. Paths (`--pid`, `--chdir`, `--virtualenv`,
/// the log files) are absolute, made so against the directory zibai was
/// started in.
#[derive(Clone, Debug)]
pub struct Config {
    pub app: AppSpec,
    /// Worker processes; 0 is single-process mode.
    pub subprocess: usize,
    /// `;`-separated globs whose changes reload the workers.
    pub watchfiles: Option<String>,
    /// Heartbeat timeout of a booted worker; `None` disables it.
    pub timeout: Option<Duration>,
    /// How long a worker may take to report that it booted.
    pub boot_timeout: Duration,
    /// Requests before a worker is recycled; 0 for never.
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub pidfile: Option<PathBuf>,
    pub daemon: bool,
    pub call: bool,
    pub listen: Vec<ListenAddr>,
    pub backlog: i32,
    pub dualstack_ipv6: bool,
    pub unix_socket_perms: u32,
    /// SO_REUSEPORT on TCP listeners.
    pub reuse_port: bool,
    pub max_workers: usize,
    pub url_scheme: String,
    pub url_prefix: Option<String>,
    pub graceful_exit_timeout: Duration,
    pub before_serve: Option<HookSpec>,
    pub before_graceful_exit: Option<HookSpec>,
    pub before_died: Option<HookSpec>,
    /// False with `--no-access-log`, whatever `access_log_file` says.
    pub access_log: bool,
    pub access_log_file: LogTarget,
    pub access_log_format: crate::logging::access::Format,
    /// One JSON object per access log line instead of `access_log_format`.
    pub access_log_json: bool,
    /// The worker's stdout and stderr go to the error log file.
    pub capture_output: bool,
    pub error_log: LogTarget,
    pub log_level: log::LevelFilter,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub virtualenv: Option<PathBuf>,
    /// The directory to change to before loading the app.
    pub chdir: Option<PathBuf>,
    /// Put first on `sys.path`, in this order (relative entries are
    /// relative to the app's current directory).
    pub pythonpath: Vec<PathBuf>,
    /// `--env KEY=VALUE` pairs for the app's environment, in order.
    pub env: Vec<(String, String)>,
    pub user: Option<User>,
    pub group: Option<Group>,
    /// `None`: leave the inherited umask alone.
    pub umask: Option<u32>,
    /// Peers whose X-Forwarded-* (and PROXY) headers are believed.
    pub forwarded_allow_ips: crate::proto::forwarded::TrustedProxies,
    /// Expect a PROXY v1/v2 header from peers in `forwarded_allow_ips`.
    pub proxy_protocol: bool,
    /// The config file read, if any (informational: not part of `to_toml`).
    pub config_file: Option<PathBuf>,
    sources: Sources,
}

impl Config {
    /// The user and group workers run as (`--user`, `--group`), if set.
    pub fn worker_owner(&self) -> Option<(u32, u32)> {
        let uid = self.user.as_ref()?.uid;
        let gid = self.group.as_ref().map(|g| g.gid).or(self.user.as_ref()?.gid)?;
        Some((uid, gid))
    }

    /// Owner and group for unix socket files: the workers' user and group
    /// (`--group`, else the user's), each `None` when not switched.
    pub fn socket_owner(&self) -> (Option<u32>, Option<u32>) {
        let uid = self.user.as_ref().map(|u| u.uid);
        let gid = self
            .group
            .as_ref()
            .map(|g| g.gid)
            .or(self.user.as_ref().and_then(|u| u.gid));
        (uid, gid)
    }

    /// The resolved configuration as a TOML config file: every option,
    /// defaults included, keyed by its long name. Feeding it back with
    /// `--config` (and nothing else) resolves to the same configuration and
    /// so prints the same text; this is also what workers receive.
    pub fn to_toml(&self) -> String {
        resolve::to_toml(self)
    }

    /// A configuration from [`to_toml`](Self::to_toml) text alone: no
    /// command line, no environment variable (not even `VIRTUAL_ENV` or
    /// `SCRIPT_NAME`), only the text and the defaults.
    pub fn from_resolved(text: &str) -> Result<Config, ConfigError> {
        resolve::from_resolved(text)
    }
}

/// Options fixed when the server starts: [`reload`] keeps their old values.
/// The rest (the app, hooks, worker count, timeouts, limits, logging...)
/// apply to the workers started after a reload.
pub const FIXED_AT_START: &[&str] = &[
    "listen",
    "backlog",
    "dualstack-ipv6",
    "unix-socket-perms",
    "reuse-port",
    "pid",
    "daemon",
    "chdir",
    "user",
    "group",
    "umask",
    "error-log",
    "watchfiles",
];

/// What [`reload`] resolved.
#[derive(Debug)]
pub struct Reloaded {
    pub config: Config,
    /// Options in [`FIXED_AT_START`] whose new value differs from the
    /// running one and was ignored (the old one is kept); worth a warning.
    pub ignored: Vec<&'static str>,
}

/// Resolves the configuration again (HUP): the same command line, the
/// current environment and the config file as it is now. On an error the
/// caller keeps `previous` (and logs the error).
pub fn reload(previous: &Config) -> Result<Reloaded, ConfigError> {
    let mut config = match &previous.sources {
        Sources::Args { argv, cwd } => {
            let args = Args::try_parse_from(argv.clone()).map_err(|e| ConfigError::Usage(Box::new(e)))?;
            resolve::resolve(&args, &|k| std::env::var(k).ok(), cwd)?
        }
        Sources::Resolved(text) => Config::from_resolved(text)?,
    };
    let mut ignored = Vec::new();
    macro_rules! keep {
        ($($key:literal => $field:ident),* $(,)?) => {$(
            if config.$field != previous.$field {
                ignored.push($key);
                config.$field = previous.$field.clone();
            }
        )*};
    }
    keep!(
        "listen" => listen,
        "backlog" => backlog,
        "dualstack-ipv6" => dualstack_ipv6,
        "unix-socket-perms" => unix_socket_perms,
        "reuse-port" => reuse_port,
        "pid" => pidfile,
        "daemon" => daemon,
        "chdir" => chdir,
        "user" => user,
        "group" => group,
        "umask" => umask,
        "error-log" => error_log,
        "watchfiles" => watchfiles,
    );
    Ok(Reloaded { config, ignored })
}
