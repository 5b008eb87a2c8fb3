//! Command line -> one validated [`Config`].
//!
//! This module owns every option's name, default and validation. Nothing else
//! in the crate parses arguments or the environment; the worker receives a
//! finished `Config`.

mod cli;
mod listen;

pub use cli::Cli;
pub use listen::ListenAddr;

use std::path::PathBuf;
use std::time::Duration;

use crate::proto::request::Limits;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for {option}: {reason}")]
    Invalid {
        option: &'static str,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(option: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            option,
            value: value.into(),
            reason: reason.into(),
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

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic()) && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// A zero-argument hook given as `module:attr`.
pub type HookSpec = AppSpec;

#[derive(Clone, Debug)]
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
    pub max_workers: usize,
    pub url_scheme: String,
    pub url_prefix: Option<String>,
    pub graceful_exit_timeout: Duration,
    pub before_serve: Option<HookSpec>,
    pub before_graceful_exit: Option<HookSpec>,
    pub before_died: Option<HookSpec>,
    pub access_log: bool,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub virtualenv: Option<PathBuf>,
}
