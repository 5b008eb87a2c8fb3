//! The command line's definition and its parsing. Option names and meanings
//! follow the Python server Zibai, so `zibai example:app -l 0.0.0.0:8000 -w
//! 20` means the same in both.
//!
//! [`Cli`] only *defines* the options (names, help, defaults, and the types
//! clap checks command-line values against). Values are read from the
//! `ArgMatches` by id (see `resolve.rs`), so that each one knows whether the
//! command line gave it; the environment and the config file are consulted
//! for the rest.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

use super::{Config, ConfigError, resolve};

#[derive(Debug, clap::Parser)]
#[command(
    name = "zibai",
    version,
    about = "A production WSGI server for Python, written in Rust",
    long_about = None,
    after_help = "APP is module:attribute (dots allowed, e.g. pkg.web:server.app), a module \
                  alone (its `application`, else its `app`), or module:factory(args) with \
                  literal arguments."
)]
// Never constructed from matches: see the module doc.
#[allow(dead_code)]
pub(crate) struct Cli {
    /// WSGI app: module:attr, module, or module:factory(args) [may come from the config file instead]
    pub app: Option<String>,

    /// Read options from this TOML file: keys are the long option names (`max-workers = 20`)
    #[arg(short = 'c', long, value_name = "FILE", help_heading = "Configuration")]
    pub config: Option<PathBuf>,

    /// Print the resolved configuration as TOML (usable as --config FILE) and exit
    #[arg(long, conflicts_with = "check_config", help_heading = "Configuration")]
    pub print_config: bool,

    /// Check the configuration and that the app and hooks import, then exit (0: fine, 1: not)
    #[arg(long, help_heading = "Configuration")]
    pub check_config: bool,

    /// Call the named attribute with no arguments to get the app (a factory)
    #[arg(long)]
    pub call: bool,

    /// Accepted for compatibility with Python Zibai; zibai uses native threads
    #[arg(long)]
    pub no_gevent: bool,

    /// Python virtualenv whose site-packages the app imports from [default: $VIRTUAL_ENV]
    #[arg(long, value_name = "DIR")]
    pub virtualenv: Option<PathBuf>,

    /// Listen address: HOST:PORT, [IPv6]:PORT, unix:PATH, unix:@abstract, fd://N (several allowed)
    #[arg(short = 'l', long, value_name = "ADDR", num_args = 1.., action = clap::ArgAction::Append,
          default_value = "127.0.0.1:8000", visible_alias = "bind", help_heading = "Sockets")]
    pub listen: Vec<String>,

    /// Listen backlog
    #[arg(long, value_name = "N", default_value_t = 2048, help_heading = "Sockets")]
    pub backlog: i32,

    /// Accept IPv4 too on an IPv6 listener (clears IPV6_V6ONLY)
    #[arg(long, help_heading = "Sockets")]
    pub dualstack_ipv6: bool,

    /// Permissions of unix sockets, in octal
    #[arg(long, value_name = "MODE", default_value = "600", help_heading = "Sockets")]
    pub unix_socket_perms: String,

    /// Set SO_REUSEPORT on TCP listeners
    #[arg(long, help_heading = "Sockets")]
    pub reuse_port: bool,

    /// Worker processes; 0 serves from this process alone
    #[arg(
        short = 'p',
        long,
        visible_alias = "workers",
        value_name = "N",
        default_value_t = 0,
        help_heading = "Workers"
    )]
    pub subprocess: usize,

    /// Number of app threads in a worker
    #[arg(short = 'w', long, value_name = "N", default_value_t = 10, help_heading = "Workers")]
    pub max_workers: usize,

    /// Replace the workers when files matching these `;`-separated globs change under the current directory (implies -p 1 at least; virtual environments, caches and version control are not watched)
    #[arg(long, value_name = "GLOBS", help_heading = "Workers")]
    pub watchfiles: Option<String>,

    /// Seconds without a heartbeat before a worker is killed and replaced; 0 disables
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, help_heading = "Workers")]
    pub timeout: f64,

    /// Seconds a new worker may take to import the app before it is killed
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0, help_heading = "Workers")]
    pub boot_timeout: f64,

    /// Requests a worker serves before it is replaced; 0 for no limit
    #[arg(
        long,
        visible_alias = "max-requests",
        value_name = "N",
        default_value_t = 0,
        help_heading = "Workers"
    )]
    pub max_request_pre_process: u64,

    /// Adds a random 0..=J to each worker's max requests, so workers do not all restart at once
    #[arg(long, value_name = "J", default_value_t = 0, help_heading = "Workers")]
    pub max_requests_jitter: u64,

    /// Write the master's pid to FILE
    #[arg(long, value_name = "FILE", help_heading = "Process")]
    pub pid: Option<PathBuf>,

    /// Detach from the terminal; returns once the server is ready
    #[arg(long, help_heading = "Process")]
    pub daemon: bool,

    /// Change to DIR before loading the app
    #[arg(long, value_name = "DIR", help_heading = "Process")]
    pub chdir: Option<PathBuf>,

    /// Run workers as USER (a name or a numeric uid)
    #[arg(long, value_name = "USER", help_heading = "Process")]
    pub user: Option<String>,

    /// Run workers as GROUP (a name or a numeric gid) [default: USER's group]
    #[arg(long, value_name = "GROUP", help_heading = "Process")]
    pub group: Option<String>,

    /// File mode creation mask, in octal (e.g. 022) [default: inherited]
    #[arg(long, value_name = "MODE", help_heading = "Process")]
    pub umask: Option<String>,

    /// Seconds a graceful exit waits for in-flight requests
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        visible_alias = "graceful-timeout",
        help_heading = "Workers"
    )]
    pub graceful_exit_timeout: f64,

    /// wsgi.url_scheme given to the app
    #[arg(long, value_name = "SCHEME", default_value = "http", help_heading = "WSGI")]
    pub url_scheme: String,

    /// SCRIPT_NAME given to the app [default: $SCRIPT_NAME]
    #[arg(long, value_name = "PREFIX", help_heading = "WSGI")]
    pub url_prefix: Option<String>,

    /// Directories put first on sys.path, `:`-separated (repeatable)
    #[arg(long, value_name = "DIRS", action = clap::ArgAction::Append, help_heading = "Python")]
    pub pythonpath: Vec<String>,

    /// Set an environment variable for the app (repeatable)
    #[arg(long, value_name = "KEY=VALUE", action = clap::ArgAction::Append, help_heading = "Python")]
    pub env: Vec<String>,

    /// Peers trusted with X-Forwarded-* and PROXY headers: comma-separated IPs or CIDRs, or * for any
    #[arg(long, value_name = "CIDRS", default_value = "127.0.0.1,::1", help_heading = "Proxy")]
    pub forwarded_allow_ips: String,

    /// Accept a PROXY protocol v1 or v2 header from peers in --forwarded-allow-ips
    #[arg(long, help_heading = "Proxy")]
    pub proxy_protocol: bool,

    /// module:attr called with no arguments after the app loads
    #[arg(long, value_name = "HOOK", help_heading = "Hooks")]
    pub before_serve: Option<String>,

    /// module:attr called when a graceful exit starts
    #[arg(long, value_name = "HOOK", help_heading = "Hooks")]
    pub before_graceful_exit: Option<String>,

    /// module:attr called just before the process exits
    #[arg(long, value_name = "HOOK", help_heading = "Hooks")]
    pub before_died: Option<String>,

    /// Do not write an access log line per request
    #[arg(long, help_heading = "Logging")]
    pub no_access_log: bool,

    /// Write the access log to FILE; - is stderr
    #[arg(long, value_name = "FILE", default_value = "-", help_heading = "Logging")]
    pub access_log: String,

    /// Access log line, with gunicorn's atoms: %(h)s %(r)s %(s)s %({header}i)s %({header}o)s %({VAR}e)s ...
    #[arg(long, value_name = "FORMAT", default_value = crate::logging::access::DEFAULT_FORMAT, help_heading = "Logging")]
    pub access_log_format: String,

    /// Write each access log line as a JSON object
    #[arg(long, help_heading = "Logging")]
    pub access_log_json: bool,

    /// Send the app's stdout and stderr (print, logging to a stream) to the --error-log file, as gunicorn's option does
    #[arg(long, help_heading = "Logging")]
    pub capture_output: bool,

    /// Write the error log to FILE; - is stderr
    #[arg(
        long,
        value_name = "FILE",
        default_value = "-",
        visible_alias = "error-logfile",
        help_heading = "Logging"
    )]
    pub error_log: String,

    /// Log level: error, warn, info or debug (gunicorn's critical and warning too)
    #[arg(long, value_name = "LEVEL", default_value = "info", help_heading = "Logging")]
    pub log_level: String,

    /// Longest request line in bytes (414 above it)
    #[arg(long, value_name = "BYTES", default_value_t = 8190, help_heading = "Limits")]
    pub limit_request_line: usize,

    /// Most header fields in a request (431 above it)
    #[arg(long, value_name = "N", default_value_t = 100, help_heading = "Limits")]
    pub limit_request_fields: usize,

    /// Longest header field in bytes (431 above it)
    #[arg(long, value_name = "BYTES", default_value_t = 8190, help_heading = "Limits")]
    pub limit_request_field_size: usize,

    /// Largest request head in bytes (431 above it)
    #[arg(
        long,
        visible_alias = "h11-max-incomplete-event-size",
        value_name = "BYTES",
        default_value_t = 65536,
        help_heading = "Limits"
    )]
    pub limit_request_head_size: usize,

    /// Largest request body in bytes, 0 for no limit (413 above it)
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30, help_heading = "Limits")]
    pub max_body_size: u64,

    /// Seconds a client has to send a whole request head
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, help_heading = "Timeouts")]
    pub header_timeout: f64,

    /// Seconds an idle persistent connection is kept open
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, help_heading = "Timeouts")]
    pub keep_alive: f64,

    /// Seconds to wait for the next part of a request body (then 408 Request Timeout)
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, help_heading = "Timeouts")]
    pub read_timeout: f64,

    /// Seconds a client may take no part of a response (one that reads
    /// slowly but steadily is waited for)
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, help_heading = "Timeouts")]
    pub write_timeout: f64,
}

/// What the command line asks for besides serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Serve,
    /// `--print-config`: print [`Config::to_toml`] and exit.
    PrintConfig,
    /// `--check-config`: load the app in a child process and exit.
    CheckConfig,
}

/// A parsed command line, not yet resolved against the environment and the
/// config file.
#[derive(Debug)]
pub struct Args {
    pub(super) argv: Vec<OsString>,
    pub(super) matches: ArgMatches,
}

/// The clap command: [`Cli`]'s definition, with each option's variable
/// named in its help.
pub fn command() -> clap::Command {
    // A repeated option's last value wins, as with Python Zibai's argparse
    // (`zibai $DEFAULTS "$@"` wrappers); lists (`-l`) still accumulate.
    Cli::command().args_override_self(true).mut_args(|arg| {
        // A flag a config file or variable turned on can be turned off
        // here: `--daemon=false` (`--daemon` alone still means true, and
        // never takes the next word as its value).
        let arg = if matches!(arg.get_action(), clap::ArgAction::SetTrue)
            && !matches!(arg.get_id().as_str(), "print_config" | "check_config")
        {
            arg.action(clap::ArgAction::Set)
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .value_name("BOOL")
                .value_parser(clap::builder::BoolishValueParser::new())
        } else {
            arg
        };
        // `--timeout -5` is a bad value for --timeout, refused by name,
        // rather than an unknown option `-5` (there is none).
        let arg = if arg.get_action().takes_values() {
            arg.allow_negative_numbers(true)
        } else {
            arg
        };
        match resolve::env_help(arg.get_id().as_str()) {
            Some(note) => {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                arg.help(format!("{help} {note}"))
            }
            None => arg,
        }
    })
}

impl Args {
    /// Parses this process's command line; on a usage error, `--help` or
    /// `--version`, prints and exits as clap does.
    pub fn parse() -> Args {
        Args::try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    pub fn try_parse_from<I, T>(argv: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let matches = command().try_get_matches_from(&argv)?;
        Ok(Args { argv, matches })
    }

    pub fn action(&self) -> Action {
        if self.matches.get_flag("print_config") {
            Action::PrintConfig
        } else if self.matches.get_flag("check_config") {
            Action::CheckConfig
        } else {
            Action::Serve
        }
    }

    /// Resolves against this process's environment and current directory.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        self.resolve_with(&|k| std::env::var(k).ok(), &cwd)
    }

    /// Resolves with `env` as the environment and relative paths taken
    /// from `cwd`.
    pub fn resolve_with(&self, env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Result<Config, ConfigError> {
        resolve::resolve(self, env, cwd)
    }

    /// Whether the command line itself gave option `id`.
    pub(super) fn given(&self, id: &str) -> bool {
        self.matches.value_source(id) == Some(ValueSource::CommandLine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["zibai"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .unwrap()
            .resolve_with(&|_| None, Path::new("/srv"))
    }

    #[test]
    fn defaults() {
        let c = cfg(&["example:app"]).unwrap();
        assert_eq!(c.max_workers, 10);
        assert_eq!(c.unix_socket_perms, 0o600);
        assert_eq!(c.listen.len(), 1);
        assert!(c.access_log);
        assert_eq!(c.url_prefix, None);
        assert_eq!(c.access_log_file, super::super::LogTarget::Stderr);
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.forwarded_allow_ips.to_string(), "127.0.0.1,::1");
        assert_eq!(c.umask, None);
        assert!(c.config_file.is_none());
    }

    #[test]
    fn listen_takes_several_values_like_zibai() {
        let c = cfg(&["example:app", "-l", "127.0.0.1:1", "unix:/tmp/x.sock", "-l", "[::1]:2"]).unwrap();
        assert_eq!(c.listen.len(), 3);
    }

    #[test]
    fn bad_values_name_the_option() {
        for (args, option) in [
            (&["a:b", "--unix-socket-perms", "999"][..], "--unix-socket-perms"),
            (&["a:b", "-w", "0"][..], "--max-workers"),
            (&["a:b", "--url-scheme", "ftp"][..], "--url-scheme"),
            (&["a:b", "--keep-alive=-1"][..], "--keep-alive"),
            (&["a:b", "--before-serve", "nocolon"][..], "--before-serve"),
            (&["a:b", "-l", "localhost"][..], "--listen"),
            (&["a:b()x"][..], "APP"),
            (&["a:b", "--umask", "99"][..], "--umask"),
            (&["a:b", "--env", "1X=2"][..], "--env"),
            (&["a:b", "--env", "novalue"][..], "--env"),
            (&["a:b", "--log-level", "loud"][..], "--log-level"),
            (&["a:b", "--chdir", "/zibai/no/such/dir"][..], "--chdir"),
            (&["a:b", "--group", "zibai-no-such-group"][..], "--group"),
            (&["a:b", "--error-log", ""][..], "--error-log"),
        ] {
            let err = cfg(args).unwrap_err().to_string();
            assert!(err.contains(option), "{args:?}: {err}");
        }
    }

    #[test]
    fn command_line_errors_keep_their_format() {
        let err = cfg(&["a:b", "-w", "0"]).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid value \"0\" for --max-workers: must be between 1 and 10000"
        );
        let err = cfg(&["factory:create('x')", "--call"]).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid value \"factory:create('x')\" for --call: --call calls the attribute itself; give either \
             --call or factory(args), not both"
        );
    }

    #[test]
    fn script_name_from_environment() {
        let c = Args::try_parse_from(["zibai", "a:b"])
            .unwrap()
            .resolve_with(&|k| (k == "SCRIPT_NAME").then(|| "/api/".to_string()), Path::new("/"))
            .unwrap();
        assert_eq!(c.url_prefix.as_deref(), Some("/api"));
        let err = Args::try_parse_from(["zibai", "a:b"])
            .unwrap()
            .resolve_with(&|k| (k == "SCRIPT_NAME").then(|| "api".to_string()), Path::new("/"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "SCRIPT_NAME=api: invalid value \"api\" for --url-prefix: must start with '/'"
        );
    }

    #[test]
    fn relative_paths_are_made_absolute() {
        let c = cfg(&[
            "a:b",
            "--pid",
            "run/z.pid",
            "--access-log",
            "./logs/access.log",
            "--chdir",
            ".",
        ])
        .unwrap();
        assert_eq!(c.pidfile.as_deref(), Some(Path::new("/srv/run/z.pid")));
        assert_eq!(
            c.access_log_file,
            super::super::LogTarget::File("/srv/logs/access.log".into())
        );
        // "/srv" need not exist here, but --chdir checks; "/" does.
        let c = Args::try_parse_from(["zibai", "a:b", "--chdir", "."])
            .unwrap()
            .resolve_with(&|_| None, Path::new("/"))
            .unwrap();
        assert_eq!(c.chdir.as_deref(), Some(Path::new("/")));
    }

    #[test]
    fn actions() {
        let action = |args: &[&str]| Args::try_parse_from(args).unwrap().action();
        assert_eq!(action(&["zibai", "a:b"]), Action::Serve);
        assert_eq!(action(&["zibai", "--print-config"]), Action::PrintConfig);
        assert_eq!(action(&["zibai", "--check-config", "a:b"]), Action::CheckConfig);
        assert!(Args::try_parse_from(["zibai", "--check-config", "--print-config"]).is_err());
    }

    #[test]
    fn app_is_needed_from_somewhere() {
        let err = cfg(&[]).unwrap_err();
        assert!(matches!(err, ConfigError::MissingApp), "{err}");
    }

    #[test]
    fn help_names_each_variable() {
        let cmd = command();
        let help = |id: &str| {
            let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_help().map(|h| h.to_string()).unwrap_or_default()
        };
        for (id, note) in [
            ("max_workers", "[env: ZIBAI_MAX_WORKERS]"),
            ("listen", "[env: ZIBAI_LISTEN, values separated by spaces]"),
            ("no_access_log", "[env: ZIBAI_NO_ACCESS_LOG=1|0]"),
            ("config", "[env: ZIBAI_CONFIG]"),
            ("app", "[env: ZIBAI_APP]"),
        ] {
            assert!(help(id).ends_with(note), "{id}: {}", help(id));
        }
        assert!(!help("print_config").contains("env:"));
        cmd.debug_assert();
    }

    #[test]
    fn app_specs() {
        use super::super::AppSpec;
        let s = AppSpec::parse("pkg.mod:a.b").unwrap();
        assert_eq!((s.module.as_str(), s.attrs.len()), ("pkg.mod", 2));
        assert!(AppSpec::parse("mod").unwrap().attrs.is_empty());
        let f = AppSpec::parse("mod:make('x', 1)").unwrap();
        assert_eq!(f.call_args.as_deref(), Some("'x', 1"));
        assert!(AppSpec::parse(":app").is_err());
        assert!(AppSpec::parse("mod:").is_err());
        assert!(AppSpec::parse("mod:1x").is_err());
        for spec in ["pkg.mod:a.b", "mod", "mod:make('x', 1)", "m:f()"] {
            assert_eq!(AppSpec::parse(spec).unwrap().to_string(), spec);
        }
    }
}

#[cfg(test)]
mod docs_tests {
    /// The man page and completions (examples/gen-docs.rs, `make docs`)
    /// come from the same definition as `--help`, every option included.
    #[test]
    fn man_page_and_completions_cover_every_option() {
        let cmd = super::command();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        let mut bash = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut cmd.clone(), "zibai", &mut bash);
        let bash = String::from_utf8(bash).unwrap();
        let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        assert!(longs.len() > 40, "{longs:?}");
        for long in longs {
            // roff escapes the dashes of option names.
            assert!(
                page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                "--{long} not in the man page"
            );
            assert!(
                bash.contains(&format!("--{long}")),
                "--{long} not in the bash completion"
            );
        }
        assert!(page.contains("ZIBAI_MAX_WORKERS"));
    }
}
