//! The clap definition. Option names and meanings follow the Python server
//! Zibai, so `zibai example:app -l 0.0.0.0:8000 -w 20` means the same in both.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::{AppSpec, Config, ConfigError, ListenAddr, Timeouts};
use crate::proto::request::Limits;

#[derive(Debug, Parser)]
#[command(
    name = "zibai",
    version,
    about = "A production WSGI server for Python, written in Rust",
    long_about = None,
    after_help = "APP is module:attribute (dots allowed, e.g. pkg.web:server.app), a module \
                  alone (its `application`, else its `app`), or module:factory(args) with \
                  literal arguments."
)]
pub struct Cli {
    /// WSGI app: module:attr, module, or module:factory(args)
    pub app: String,

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
          default_value = "127.0.0.1:8000", help_heading = "Sockets")]
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

    /// Replace the workers when files matching these `;`-separated globs change under the current directory (implies -p 1 at least)
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

    /// Seconds a graceful exit waits for in-flight requests
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, help_heading = "Workers")]
    pub graceful_exit_timeout: f64,

    /// wsgi.url_scheme given to the app
    #[arg(long, value_name = "SCHEME", default_value = "http", help_heading = "WSGI")]
    pub url_scheme: String,

    /// SCRIPT_NAME given to the app [default: $SCRIPT_NAME]
    #[arg(long, value_name = "PREFIX", help_heading = "WSGI")]
    pub url_prefix: Option<String>,

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

    /// Seconds to wait for the next part of a request body
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, help_heading = "Timeouts")]
    pub read_timeout: f64,

    /// Seconds to wait for a client to accept more of a response
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, help_heading = "Timeouts")]
    pub write_timeout: f64,
}

fn seconds(option: &'static str, v: f64, allow_zero: bool) -> Result<Duration, ConfigError> {
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) || v > 1e9 {
        return Err(ConfigError::invalid(
            option,
            v.to_string(),
            "expected a positive number of seconds",
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

fn hook(option: &'static str, v: &Option<String>) -> Result<Option<AppSpec>, ConfigError> {
    match v {
        None => Ok(None),
        Some(s) => match AppSpec::parse(s) {
            Ok(spec) if !spec.attrs.is_empty() && spec.call_args.is_none() => Ok(Some(spec)),
            _ => Err(ConfigError::invalid(option, s, "expected module:attribute")),
        },
    }
}

impl Cli {
    /// Validates every option into a [`Config`]; `env` looks up the
    /// environment variables some defaults come from.
    pub fn into_config(self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let app = AppSpec::parse(&self.app)?;
        if self.call && app.call_args.is_some() {
            return Err(ConfigError::invalid(
                "--call",
                &self.app,
                "--call calls the attribute itself; give either --call or factory(args), not both",
            ));
        }
        let listen = self
            .listen
            .iter()
            .map(|s| ListenAddr::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        if self.backlog <= 0 {
            return Err(ConfigError::invalid(
                "--backlog",
                self.backlog.to_string(),
                "must be at least 1",
            ));
        }
        let unix_socket_perms = u32::from_str_radix(&self.unix_socket_perms, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "--unix-socket-perms",
                    &self.unix_socket_perms,
                    "expected octal mode like 600",
                )
            })?;
        if self.subprocess > 1024 {
            return Err(ConfigError::invalid(
                "--subprocess",
                self.subprocess.to_string(),
                "must be between 0 and 1024",
            ));
        }
        if self.max_workers == 0 || self.max_workers > 10_000 {
            return Err(ConfigError::invalid(
                "--max-workers",
                self.max_workers.to_string(),
                "must be between 1 and 10000",
            ));
        }
        if !matches!(self.url_scheme.as_str(), "http" | "https") {
            return Err(ConfigError::invalid(
                "--url-scheme",
                &self.url_scheme,
                "must be http or https",
            ));
        }
        let url_prefix = self.url_prefix.clone().or_else(|| env("SCRIPT_NAME"));
        let url_prefix = match url_prefix {
            Some(p) if p.is_empty() || p == "/" => None,
            Some(p) if !p.starts_with('/') => {
                return Err(ConfigError::invalid("--url-prefix", p, "must start with '/'"));
            }
            Some(p) => Some(p.trim_end_matches('/').to_string()),
            None => None,
        };
        let positive = |option: &'static str, v: usize| {
            if v == 0 {
                Err(ConfigError::invalid(option, "0", "must be at least 1"))
            } else {
                Ok(v)
            }
        };
        let limits = Limits {
            max_request_line: positive("--limit-request-line", self.limit_request_line)?,
            max_headers: positive("--limit-request-fields", self.limit_request_fields)?.min(32768),
            max_field_size: positive("--limit-request-field-size", self.limit_request_field_size)?,
            max_head_size: positive("--limit-request-head-size", self.limit_request_head_size)?,
            max_body_size: self.max_body_size,
        };
        let timeouts = Timeouts {
            header: seconds("--header-timeout", self.header_timeout, false)?,
            keep_alive: seconds("--keep-alive", self.keep_alive, false)?,
            read: seconds("--read-timeout", self.read_timeout, false)?,
            write: seconds("--write-timeout", self.write_timeout, false)?,
        };
        let virtualenv = self
            .virtualenv
            .clone()
            .or_else(|| env("VIRTUAL_ENV").map(PathBuf::from));
        if let Some(v) = &virtualenv
            && !v.is_dir()
        {
            return Err(ConfigError::invalid(
                "--virtualenv",
                v.display().to_string(),
                "not a directory",
            ));
        }
        let timeout = seconds("--timeout", self.timeout, true)?;
        Ok(Config {
            // Zibai's rule: watching files needs workers to restart.
            subprocess: if self.watchfiles.is_some() {
                self.subprocess.max(1)
            } else {
                self.subprocess
            },
            watchfiles: self.watchfiles.clone(),
            timeout: (!timeout.is_zero()).then_some(timeout),
            boot_timeout: seconds("--boot-timeout", self.boot_timeout, false)?,
            max_requests: self.max_request_pre_process,
            max_requests_jitter: self.max_requests_jitter,
            pidfile: self.pid.clone(),
            daemon: self.daemon,
            call: self.call,
            listen,
            backlog: self.backlog,
            dualstack_ipv6: self.dualstack_ipv6,
            unix_socket_perms,
            max_workers: self.max_workers,
            url_scheme: self.url_scheme.clone(),
            url_prefix,
            graceful_exit_timeout: seconds("--graceful-exit-timeout", self.graceful_exit_timeout, true)?,
            before_serve: hook("--before-serve", &self.before_serve)?,
            before_graceful_exit: hook("--before-graceful-exit", &self.before_graceful_exit)?,
            before_died: hook("--before-died", &self.before_died)?,
            access_log: !self.no_access_log,
            limits,
            timeouts,
            virtualenv,
            app,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["zibai"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().into_config(|_| None)
    }

    #[test]
    fn defaults() {
        let c = cfg(&["example:app"]).unwrap();
        assert_eq!(c.max_workers, 10);
        assert_eq!(c.unix_socket_perms, 0o600);
        assert_eq!(c.listen.len(), 1);
        assert!(c.access_log);
        assert_eq!(c.url_prefix, None);
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
        ] {
            let err = cfg(args).unwrap_err().to_string();
            assert!(err.contains(option), "{args:?}: {err}");
        }
    }

    #[test]
    fn script_name_from_environment() {
        let argv = ["zibai", "a:b"];
        let c = Cli::try_parse_from(argv)
            .unwrap()
            .into_config(|k| (k == "SCRIPT_NAME").then(|| "/api/".to_string()))
            .unwrap();
        assert_eq!(c.url_prefix.as_deref(), Some("/api"));
    }

    #[test]
    fn app_specs() {
        let s = AppSpec::parse("pkg.mod:a.b").unwrap();
        assert_eq!((s.module.as_str(), s.attrs.len()), ("pkg.mod", 2));
        assert!(AppSpec::parse("mod").unwrap().attrs.is_empty());
        let f = AppSpec::parse("mod:make('x', 1)").unwrap();
        assert_eq!(f.call_args.as_deref(), Some("'x', 1"));
        assert!(AppSpec::parse(":app").is_err());
        assert!(AppSpec::parse("mod:").is_err());
        assert!(AppSpec::parse("mod:1x").is_err());
    }
}
