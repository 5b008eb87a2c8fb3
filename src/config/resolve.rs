//! The two stages of resolution. First each option's raw text is gathered
//! with its [`Origin`] (command line > `ZIBAI_*` > config file > default);
//! then [`build`] validates the texts into a [`Config`], so an error can say
//! which option, which value, and where it came from.
//!
//! Also the way back: [`to_toml`] writes a config file that resolves to the
//! same configuration.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::cli::Args;
use super::{
    AppSpec, Config, ConfigError, Group, HookSpec, ListenAddr, LogTarget, Origin, RESOLVED_ENV, Sources, Timeouts, User,
};
use crate::proto::forwarded::TrustedProxies;
use crate::proto::request::Limits;

/// How an option's value is written in a config file (and split in a
/// variable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// TOML `true`/`false`; in a variable 1/0/true/false/yes/no.
    Bool,
    /// A TOML integer.
    Int,
    /// A TOML integer or float.
    Seconds,
    /// A TOML string.
    Str,
    /// An octal mode: a string (`"022"`), a TOML integer (`0o022`), or
    /// decimal digits read as octal ones (`22`, as chmod takes them).
    Mode,
    /// A string or an array of strings; in a variable, values separated by
    /// whitespace.
    List,
}

/// Every option the environment and a config file may set, by clap id. The
/// file key is the long name (`max_workers` -> `max-workers`), the
/// variable `ZIBAI_` and the id upper-cased (`ZIBAI_MAX_WORKERS`).
/// `--config`, `--print-config` and `--check-config` are not here: they
/// say where to read and what to do, not how to serve.
const OPTIONS: &[(&str, Kind)] = &[
    ("app", Kind::Str),
    ("call", Kind::Bool),
    ("no_gevent", Kind::Bool),
    ("virtualenv", Kind::Str),
    ("listen", Kind::List),
    ("backlog", Kind::Int),
    ("dualstack_ipv6", Kind::Bool),
    ("unix_socket_perms", Kind::Mode),
    ("reuse_port", Kind::Bool),
    ("subprocess", Kind::Int),
    ("max_workers", Kind::Int),
    ("watchfiles", Kind::Str),
    ("timeout", Kind::Seconds),
    ("boot_timeout", Kind::Seconds),
    ("max_request_pre_process", Kind::Int),
    ("max_requests_jitter", Kind::Int),
    ("graceful_exit_timeout", Kind::Seconds),
    ("pid", Kind::Str),
    ("daemon", Kind::Bool),
    ("chdir", Kind::Str),
    ("user", Kind::Str),
    ("group", Kind::Str),
    ("umask", Kind::Mode),
    ("url_scheme", Kind::Str),
    ("url_prefix", Kind::Str),
    ("pythonpath", Kind::List),
    ("env", Kind::List),
    ("forwarded_allow_ips", Kind::List),
    ("proxy_protocol", Kind::Bool),
    ("before_serve", Kind::Str),
    ("before_graceful_exit", Kind::Str),
    ("before_died", Kind::Str),
    ("no_access_log", Kind::Bool),
    ("access_log", Kind::Str),
    ("access_log_format", Kind::Str),
    ("access_log_json", Kind::Bool),
    ("capture_output", Kind::Bool),
    ("error_log", Kind::Str),
    ("log_level", Kind::Str),
    ("limit_request_line", Kind::Int),
    ("limit_request_fields", Kind::Int),
    ("limit_request_field_size", Kind::Int),
    ("limit_request_head_size", Kind::Int),
    ("max_body_size", Kind::Int),
    ("header_timeout", Kind::Seconds),
    ("keep_alive", Kind::Seconds),
    ("read_timeout", Kind::Seconds),
    ("write_timeout", Kind::Seconds),
];

/// Visible command-line aliases, also keys of the file and variables
/// (`workers = 4`, `bind = [...]`, as gunicorn's configuration says it).
const ALIASES: &[(&str, &str)] = &[
    ("workers", "subprocess"),
    ("max-requests", "max-request-pre-process"),
    ("h11-max-incomplete-event-size", "limit-request-head-size"),
    ("bind", "listen"),
    ("graceful-timeout", "graceful-exit-timeout"),
    ("error-logfile", "error-log"),
];

/// Variables some defaults come from, as before this module read files.
const DEFAULT_FROM_ENV: &[(&str, &str)] = &[("virtualenv", "VIRTUAL_ENV"), ("url_prefix", "SCRIPT_NAME")];

const CONFIG_ENV: &str = "ZIBAI_CONFIG";

fn kind(id: &str) -> Option<Kind> {
    OPTIONS.iter().find(|(i, _)| *i == id).map(|(_, k)| *k)
}

fn key(id: &str) -> String {
    id.replace('_', "-")
}

fn env_var(id: &str) -> String {
    format!("ZIBAI_{}", id.to_ascii_uppercase())
}

fn option_name(id: &str) -> String {
    if id == "app" {
        "APP".to_string()
    } else {
        format!("--{}", key(id))
    }
}

/// The note added to an option's `--help`: its variable.
pub(super) fn env_help(id: &str) -> Option<String> {
    if id == "config" {
        return Some(format!("[env: {CONFIG_ENV}]"));
    }
    Some(match kind(id)? {
        Kind::List => format!("[env: {}, values separated by spaces]", env_var(id)),
        Kind::Bool => format!("[env: {}=1|0]", env_var(id)),
        _ => format!("[env: {}]", env_var(id)),
    })
}

/// One value as given, and as an error message shows it: quoted text, or
/// the TOML literal from a file.
#[derive(Debug)]
struct Item {
    text: String,
    shown: String,
}

#[derive(Debug)]
struct Value {
    origin: Origin,
    /// The whole value as shown (for a list: all of it).
    shown: String,
    /// One for scalars; any number for lists.
    items: Vec<Item>,
}

fn quoted(s: &str) -> Item {
    Item {
        text: s.to_string(),
        shown: format!("{s:?}"),
    }
}

/// A parsed config file (or resolved configuration text).
struct File {
    /// `config file PATH`, as messages name it.
    place: String,
    table: toml::Table,
    /// Top-level keys whose value is an integer written in decimal (the
    /// table keeps no radix).
    decimal: Vec<String>,
    /// (key, alias) for the options the file set through an alias.
    written: Vec<(String, String)>,
}

impl File {
    fn read(path: &Path) -> Result<File, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        File::parse(format!("config file {}", path.display()), &text)
    }

    fn parse(place: String, text: &str) -> Result<File, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            place: place.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut table = table;
        // An alias is its option's key, named as written in messages.
        let mut written = Vec::new();
        for (alias, canonical) in ALIASES {
            if let Some(v) = table.remove(*alias) {
                if table.contains_key(*canonical) {
                    return Err(ConfigError::Syntax {
                        place,
                        message: format!("both {alias} and {canonical} are set: they are one option"),
                    });
                }
                table.insert(canonical.to_string(), v);
                written.push((canonical.to_string(), alias.to_string()));
            }
        }
        // A Table is sorted, so the first bad key reported is stable.
        for k in table.keys() {
            if OPTIONS.iter().any(|(id, _)| key(id) == *k) {
                continue;
            }
            let place = place.clone();
            return Err(match k.as_str() {
                "config" => ConfigError::NotInFile {
                    place,
                    key: k.clone(),
                    why: "give it with --config or ZIBAI_CONFIG",
                },
                "print-config" | "check-config" => ConfigError::NotInFile {
                    place,
                    key: k.clone(),
                    why: "it is a command-line action",
                },
                _ => ConfigError::UnknownKey {
                    place,
                    key: k.clone(),
                    hint: suggest(k),
                },
            });
        }
        let decimal = match toml::de::DeTable::parse(text) {
            Ok(t) => t
                .get_ref()
                .iter()
                .filter(|(_, v)| matches!(v.get_ref(), toml::de::DeValue::Integer(i) if i.radix() == 10))
                .map(|(k, _)| {
                    let k = k.get_ref().to_string();
                    match ALIASES.iter().find(|(a, _)| *a == k) {
                        Some((_, canonical)) => canonical.to_string(),
                        None => k,
                    }
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        Ok(File {
            place,
            table,
            decimal,
            written,
        })
    }

    /// The file's value for option `id`, checked against its kind.
    fn value(&self, id: &str, kind: Kind) -> Result<Option<Value>, ConfigError> {
        use toml::Value as T;
        let Some(v) = self.table.get(&key(id)) else {
            return Ok(None);
        };
        let origin = Origin::File {
            place: self.place.clone(),
            key: self
                .written
                .iter()
                .find(|(k, _)| *k == key(id))
                .map_or_else(|| key(id), |(_, alias)| alias.clone()),
        };
        let item = |text: String, v: &T| Item {
            text,
            shown: v.to_string(),
        };
        let items = match (kind, v) {
            (Kind::Bool, T::Boolean(b)) => vec![item(b.to_string(), v)],
            (Kind::Int | Kind::Seconds, T::Integer(i)) => vec![item(i.to_string(), v)],
            (Kind::Seconds, T::Float(f)) => vec![item(f.to_string(), v)],
            (Kind::Str | Kind::Mode | Kind::List, T::String(s)) => vec![item(s.clone(), v)],
            // A uid or gid, as on the command line (`--user 1000`).
            (Kind::Str, T::Integer(i)) if (id == "user" || id == "group") && *i >= 0 => vec![item(i.to_string(), v)],
            // 0o022 is a TOML integer; "022" is not one (leading zero). A
            // mode written in decimal digits (`umask = 22`) means what chmod
            // and the command line make of them: octal. (Read as a number it
            // used to become 0o26, a wrong umask without a word.)
            (Kind::Mode, T::Integer(i)) if *i >= 0 && self.decimal.contains(&key(id)) => vec![item(i.to_string(), v)],
            (Kind::Mode, T::Integer(i)) if *i >= 0 => vec![Item {
                text: format!("{i:o}"),
                // As written: TOML keeps no radix, and 0o1777 shown as
                // 1023 made no sense to its writer.
                shown: format!("0o{i:o}"),
            }],
            (Kind::List, T::Array(a)) if a.iter().all(T::is_str) => a
                .iter()
                .map(|e| item(e.as_str().unwrap_or_default().to_string(), e))
                .collect(),
            _ => {
                let expected = match kind {
                    Kind::Bool => "expected true or false",
                    Kind::Int => "expected an integer",
                    Kind::Seconds => "expected a number of seconds",
                    Kind::Str => "expected a string",
                    Kind::Mode => "expected an octal mode, as a string (\"022\") or an octal integer (0o022)",
                    Kind::List => "expected a string or an array of strings",
                };
                return Err(ConfigError::Invalid {
                    origin: Box::new(origin),
                    option: option_name(id),
                    value: v.to_string(),
                    reason: expected.to_string(),
                });
            }
        };
        Ok(Some(Value {
            origin,
            shown: v.to_string(),
            items,
        }))
    }
}

/// The closest known key, if it is close enough to be a likely typo.
fn suggest(unknown: &str) -> Option<String> {
    let names = OPTIONS
        .iter()
        .map(|(id, _)| (key(id), key(id)))
        .chain(ALIASES.iter().map(|(a, k)| (a.to_string(), k.to_string())));
    let normal = unknown.to_ascii_lowercase().replace('_', "-");
    names
        .map(|(name, target)| (edit_distance(&normal, &name), target))
        .filter(|(d, _)| *d <= 2.max(normal.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, target)| target)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// Stage one's result: each option's value, from wherever it came.
struct Raw {
    values: HashMap<&'static str, Value>,
}

fn gather(args: Option<&Args>, env: &dyn Fn(&str) -> Option<String>, file: Option<&File>) -> Result<Raw, ConfigError> {
    let mut values = HashMap::new();
    for &(id, kind) in OPTIONS {
        let from_args = || -> Vec<Item> {
            args.and_then(|a| a.matches.get_raw(id))
                .into_iter()
                .flatten()
                .map(|s| quoted(&s.to_string_lossy()))
                .collect()
        };
        // An empty variable counts as unset (as `FOO= zibai` often means).
        // An alias names a variable too (`ZIBAI_WORKERS`, as `workers` is
        // a key of the file); the option's own name wins.
        let from_env = std::iter::once(env_var(id))
            .chain(
                ALIASES
                    .iter()
                    .filter(|(_, canonical)| key(id) == *canonical)
                    .map(|(alias, _)| env_var(&alias.replace('-', "_"))),
            )
            .find_map(|var| env(&var).filter(|v| !v.is_empty()).map(|v| (var, v)));
        let value = if args.is_some_and(|a| a.given(id)) {
            let items = from_args();
            Some(Value {
                origin: Origin::CommandLine,
                shown: items.iter().map(|i| i.shown.as_str()).collect::<Vec<_>>().join(" "),
                items,
            })
        } else if let Some((var, v)) = from_env {
            let items = match kind {
                Kind::List => v.split_whitespace().map(quoted).collect(),
                _ => vec![quoted(&v)],
            };
            Some(Value {
                origin: Origin::Env { var, value: v.clone() },
                shown: format!("{v:?}"),
                items,
            })
        } else if let Some(v) = file.map(|f| f.value(id, kind)).transpose()?.flatten() {
            Some(v)
        } else {
            let items = from_args();
            (!items.is_empty()).then(|| Value {
                origin: Origin::Default,
                shown: String::new(),
                items,
            })
        };
        if let Some(v) = value {
            values.insert(id, v);
        }
    }
    for &(id, var) in DEFAULT_FROM_ENV {
        if values.contains_key(id) {
            continue;
        }
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            let origin = Origin::Env {
                var: var.to_string(),
                value: v.clone(),
            };
            values.insert(
                id,
                Value {
                    origin,
                    shown: format!("{v:?}"),
                    items: vec![quoted(&v)],
                },
            );
        }
    }
    Ok(Raw { values })
}

impl Raw {
    fn origin(&self, id: &str) -> &Origin {
        self.values.get(id).map_or(&Origin::Default, |v| &v.origin)
    }

    fn fail(&self, id: &str, origin: &Origin, shown: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: Box::new(origin.clone()),
            option: option_name(id),
            value: shown.to_string(),
            reason: reason.into(),
        }
    }

    /// A scalar option through `f`; `None` when no source set it.
    fn with<T>(&self, id: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, ConfigError> {
        debug_assert!(kind(id).is_some(), "{id} is not in OPTIONS");
        let Some(v) = self.values.get(id) else {
            return Ok(None);
        };
        let Some(item) = v.items.first() else {
            return Ok(None);
        };
        f(&item.text)
            .map(Some)
            .map_err(|reason| self.fail(id, &v.origin, &item.shown, reason))
    }

    /// Like [`with`](Self::with), an empty value counting as unset: `""` in
    /// a file turns an optional setting off.
    fn optional<T>(&self, id: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, ConfigError> {
        self.with(id, |s| if s.is_empty() { Ok(None) } else { f(s).map(Some) })
            .map(Option::flatten)
    }

    /// Every value of a list option through `f`.
    fn each<T>(&self, id: &str, mut f: impl FnMut(&str) -> Result<T, String>) -> Result<Vec<T>, ConfigError> {
        debug_assert!(kind(id).is_some(), "{id} is not in OPTIONS");
        let Some(v) = self.values.get(id) else {
            return Ok(Vec::new());
        };
        v.items
            .iter()
            .map(|item| f(&item.text).map_err(|reason| self.fail(id, &v.origin, &item.shown, reason)))
            .collect()
    }

    fn flag(&self, id: &str) -> Result<bool, ConfigError> {
        Ok(self.with(id, parse_bool)?.unwrap_or(false))
    }

    /// An integer in `range`. Bounds from i32::MAX up are the storage
    /// type's limits, not policy, and messages say "at least" for them.
    fn int(&self, id: &str, range: RangeInclusive<i64>) -> Result<i64, ConfigError> {
        let (lo, hi) = (*range.start(), *range.end());
        let n = self.with(id, |s| {
            let n: i64 = s.trim().parse().map_err(|_| "expected a whole number".to_string())?;
            if range.contains(&n) {
                Ok(n)
            } else if hi >= i32::MAX as i64 {
                Err(if n < lo {
                    format!("must be at least {lo}")
                } else {
                    format!("must be at most {hi}")
                })
            } else {
                Err(format!("must be between {lo} and {hi}"))
            }
        })?;
        Ok(n.unwrap_or(lo))
    }

    fn seconds(&self, id: &str, allow_zero: bool) -> Result<Duration, ConfigError> {
        let d = self.with(id, |s| {
            let v: f64 = s.trim().parse().unwrap_or(f64::NAN);
            if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) || v > 1e9 {
                return Err("expected a positive number of seconds".to_string());
            }
            // Deadlines are kept in milliseconds: a shorter one would be 0,
            // which means "none" where 0 is allowed and fails the workers'
            // own check of the resolved configuration where it is not.
            if v != 0.0 && v < 0.001 {
                return Err("expected at least 0.001 seconds".to_string());
            }
            Ok(Duration::from_secs_f64(v))
        })?;
        Ok(d.unwrap_or_default())
    }

    fn hook(&self, id: &str) -> Result<Option<HookSpec>, ConfigError> {
        self.optional(id, |s| match AppSpec::parse(s) {
            Ok(spec) if !spec.attrs.is_empty() && spec.call_args.is_none() => Ok(spec),
            _ => Err("expected module:attribute".to_string()),
        })
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected 1, 0, true, false, yes, no, on or off".to_string()),
    }
}

fn octal_mode(s: &str) -> Result<u32, String> {
    // Python's int(x, 8), which Zibai uses, takes an `0o` prefix too.
    let digits = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")).unwrap_or(s);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| "expected octal mode like 600".to_string())
}

/// `cwd.join(p)` without `.` components: relative paths are relative to
/// where zibai was started, whatever `--chdir` does later.
fn absolute(cwd: &Path, p: &str) -> PathBuf {
    cwd.join(p).components().filter(|c| *c != Component::CurDir).collect()
}

fn log_target(cwd: &Path, s: &str) -> Result<LogTarget, String> {
    match s {
        "-" => Ok(LogTarget::Stderr),
        "" => Err("expected a file name, or - for stderr".to_string()),
        path => Ok(LogTarget::File(absolute(cwd, path))),
    }
}

fn env_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    let mut chars = k.chars();
    let valid = matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
    if !valid {
        return Err(format!(
            "{k:?} is not a valid variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    if v.contains('\0') {
        return Err("the value holds a NUL byte".to_string());
    }
    Ok((k.to_string(), v.to_string()))
}

fn log_level(s: &str) -> Result<log::LevelFilter, String> {
    match s.to_ascii_lowercase().as_str() {
        // gunicorn's names too: `critical` has no level of its own here.
        "error" | "critical" => Ok(log::LevelFilter::Error),
        "warn" | "warning" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        _ => Err("expected error, warn, info or debug (or gunicorn's critical, warning)".to_string()),
    }
}

fn directory(cwd: &Path, s: &str) -> Result<PathBuf, String> {
    let p = absolute(cwd, s);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => Err("not a directory".to_string()),
        Err(e) => Err(format!("not a directory ({e})")),
    }
}

/// Stage two: every value validated, relative paths made absolute.
fn build(raw: &Raw, cwd: &Path, sources: Sources) -> Result<Config, ConfigError> {
    let reason = ConfigError::reason;
    let app = raw
        .optional("app", |s| AppSpec::parse(s).map_err(reason))?
        .ok_or(ConfigError::MissingApp)?;
    let call = raw.flag("call")?;
    if call && app.call_args.is_some() {
        return Err(raw.fail(
            "call",
            raw.origin("call"),
            &format!("{:?}", app.to_string()),
            "--call calls the attribute itself; give either --call or factory(args), not both",
        ));
    }
    raw.flag("no_gevent")?;
    let virtualenv = raw.optional("virtualenv", |s| directory(cwd, s))?;
    let listen = raw.each("listen", |s| ListenAddr::parse(s).map_err(reason))?;
    if let Some(v) = raw.values.get("listen")
        && listen.is_empty()
    {
        return Err(raw.fail("listen", &v.origin, &v.shown, "at least one address is needed"));
    }
    // Twice the same fd:// would be one descriptor owned (and closed)
    // twice; the same path or port, a bind that fails as "in use" by us.
    if let Some(v) = raw.values.get("listen")
        && let Some(twice) = listen.iter().enumerate().find(|(i, l)| listen[..*i].contains(l))
    {
        return Err(raw.fail("listen", &v.origin, &v.shown, format!("{} is given twice", twice.1)));
    }
    let backlog = raw.int("backlog", 1..=i32::MAX as i64)? as i32;
    let unix_socket_perms = raw.with("unix_socket_perms", octal_mode)?.unwrap_or(0o600);
    let subprocess = raw.int("subprocess", 0..=1024)? as usize;
    let watchfiles = raw.optional("watchfiles", |s| Ok(s.to_string()))?;
    let timeout = raw.seconds("timeout", true)?;
    let url_scheme = raw
        .with("url_scheme", |s| match s {
            "http" | "https" => Ok(s.to_string()),
            _ => Err("must be http or https".to_string()),
        })?
        .unwrap_or_else(|| "http".to_string());
    let url_prefix = raw
        .with("url_prefix", |p| match p {
            "" | "/" => Ok(None),
            p if !p.starts_with('/') => Err("must start with '/'".to_string()),
            p => Ok(Some(p.trim_end_matches('/').to_string())),
        })?
        .flatten();
    let mut forwarded_allow_ips = TrustedProxies::none();
    // A list split on whitespace ("10.0.0.0/8, ::1") leaves commas at the ends.
    for list in raw.each("forwarded_allow_ips", |s| TrustedProxies::parse(s.trim_matches(',')))? {
        forwarded_allow_ips.merge(list);
    }
    let size = 1..=isize::MAX as i64;
    let limits = Limits {
        max_request_line: raw.int("limit_request_line", size.clone())? as usize,
        max_headers: (raw.int("limit_request_fields", size.clone())? as usize).min(32768),
        max_field_size: raw.int("limit_request_field_size", size.clone())? as usize,
        max_head_size: raw.int("limit_request_head_size", size)? as usize,
        max_body_size: raw.int("max_body_size", 0..=i64::MAX)? as u64,
    };
    let user = raw.optional("user", User::resolve)?;
    let group = raw.optional("group", Group::resolve)?;
    // A uid with no passwd entry has no primary group: the workers would
    // keep root's group (0) and supplementary groups.
    if let (Some(u), None) = (&user, &group)
        && u.gid.is_none()
    {
        let v = raw.values.get("user").map_or(String::new(), |v| v.shown.clone());
        return Err(raw.fail(
            "user",
            raw.origin("user"),
            &v,
            "this uid has no passwd entry, so no group: give --group too",
        ));
    }
    let timeouts = Timeouts {
        header: raw.seconds("header_timeout", false)?,
        keep_alive: raw.seconds("keep_alive", false)?,
        read: raw.seconds("read_timeout", false)?,
        write: raw.seconds("write_timeout", false)?,
    };
    Ok(Config {
        app,
        // Zibai's rule: watching files needs workers to restart.
        subprocess: if watchfiles.is_some() {
            subprocess.max(1)
        } else {
            subprocess
        },
        watchfiles,
        timeout: (!timeout.is_zero()).then_some(timeout),
        boot_timeout: raw.seconds("boot_timeout", false)?,
        max_requests: raw.int("max_request_pre_process", 0..=i64::MAX)? as u64,
        max_requests_jitter: raw.int("max_requests_jitter", 0..=i64::MAX)? as u64,
        pidfile: raw.optional("pid", |s| Ok(absolute(cwd, s)))?,
        daemon: raw.flag("daemon")?,
        call,
        listen,
        backlog,
        dualstack_ipv6: raw.flag("dualstack_ipv6")?,
        unix_socket_perms,
        reuse_port: raw.flag("reuse_port")?,
        max_workers: raw.int("max_workers", 1..=10_000)? as usize,
        url_scheme,
        url_prefix,
        graceful_exit_timeout: raw.seconds("graceful_exit_timeout", true)?,
        before_serve: raw.hook("before_serve")?,
        before_graceful_exit: raw.hook("before_graceful_exit")?,
        before_died: raw.hook("before_died")?,
        access_log: !raw.flag("no_access_log")?,
        access_log_file: raw
            .with("access_log", |s| log_target(cwd, s))?
            .unwrap_or(LogTarget::Stderr),
        access_log_format: raw
            .with("access_log_format", crate::logging::access::Format::parse)?
            .unwrap_or_default(),
        access_log_json: raw.flag("access_log_json")?,
        capture_output: raw.flag("capture_output")?,
        error_log: raw
            .with("error_log", |s| log_target(cwd, s))?
            .unwrap_or(LogTarget::Stderr),
        log_level: raw.with("log_level", log_level)?.unwrap_or(log::LevelFilter::Info),
        limits,
        timeouts,
        virtualenv,
        chdir: raw.optional("chdir", |s| directory(cwd, s))?,
        pythonpath: raw
            .each("pythonpath", |s| {
                Ok(s.split(':')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect::<Vec<_>>())
            })?
            .into_iter()
            .flatten()
            .collect(),
        env: raw.each("env", env_pair)?,
        user,
        group,
        umask: raw.optional("umask", octal_mode)?,
        forwarded_allow_ips,
        proxy_protocol: raw.flag("proxy_protocol")?,
        config_file: None,
        sources,
    })
}

/// The whole resolution of a command line (see [`Args::resolve_with`]).
pub(super) fn resolve(args: &Args, env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Result<Config, ConfigError> {
    let file_path = if args.given("config") {
        args.matches.get_one::<PathBuf>("config").cloned()
    } else {
        env(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
    };
    let file_path = file_path.map(|p| absolute(cwd, &p.to_string_lossy()));
    let file = file_path.as_deref().map(File::read).transpose()?;
    let raw = gather(Some(args), env, file.as_ref())?;
    let sources = Sources::Args {
        argv: args.argv.clone(),
        cwd: cwd.to_path_buf(),
    };
    let mut config = build(&raw, cwd, sources)?;
    config.config_file = file_path;
    Ok(config)
}

/// A worker's configuration: the master's resolved text alone. It names
/// every value, defaults included, so no command line is parsed (the worker
/// binary does without clap's parser, a quarter of its code).
pub(super) fn from_resolved(text: &str) -> Result<Config, ConfigError> {
    let file = File::parse(format!("resolved configuration (${RESOLVED_ENV})"), text)?;
    let raw = gather(None, &|_| None, Some(&file))?;
    // Every path in the text is already absolute.
    build(&raw, Path::new("/"), Sources::Resolved(text.to_string()))
}

/// TOML lines under `# Heading` comments, in `--help` order.
struct Writer {
    out: String,
}

impl Writer {
    fn heading(&mut self, name: &str) {
        self.out.push_str(&format!("\n# {name}\n"));
    }

    fn set(&mut self, key: &str, v: impl Into<toml::Value>) {
        debug_assert!(kind(&key.replace('-', "_")).is_some(), "{key} is not an option");
        self.out.push_str(&format!("{key} = {}\n", v.into()));
    }

    fn text(&mut self, key: &str, v: impl std::fmt::Display) {
        self.set(key, v.to_string());
    }

    fn path(&mut self, key: &str, v: Option<&Path>) {
        self.set(key, v.map(|p| p.display().to_string()).unwrap_or_default());
    }

    fn list(&mut self, key: &str, v: impl IntoIterator<Item = String>) {
        self.set(
            key,
            toml::Value::Array(v.into_iter().map(toml::Value::String).collect()),
        );
    }

    fn int(&mut self, key: &str, v: impl TryInto<i64>) {
        // Every integer option is range-checked into i64 when resolved.
        self.set(key, v.try_into().unwrap_or(i64::MAX));
    }

    fn seconds(&mut self, key: &str, v: Duration) {
        self.set(key, v.as_secs_f64());
    }
}

fn or_empty<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_default()
}

pub(super) fn to_toml(c: &Config) -> String {
    let mut w = Writer {
        out: "# zibai's resolved configuration: every option, defaults included (\"\" is unset).\n\
              # Usable as is with `zibai --config FILE`.\n"
            .to_string(),
    };
    w.text("app", &c.app);
    w.set("call", c.call);
    w.path("virtualenv", c.virtualenv.as_deref());
    w.heading("Sockets");
    w.list("listen", c.listen.iter().map(ListenAddr::to_spec));
    w.int("backlog", c.backlog);
    w.set("dualstack-ipv6", c.dualstack_ipv6);
    w.text("unix-socket-perms", format!("{:03o}", c.unix_socket_perms));
    w.set("reuse-port", c.reuse_port);
    w.heading("Workers");
    w.int("subprocess", c.subprocess);
    w.int("max-workers", c.max_workers);
    w.text("watchfiles", or_empty(&c.watchfiles));
    w.seconds("timeout", c.timeout.unwrap_or_default());
    w.seconds("boot-timeout", c.boot_timeout);
    w.int("max-request-pre-process", c.max_requests);
    w.int("max-requests-jitter", c.max_requests_jitter);
    w.seconds("graceful-exit-timeout", c.graceful_exit_timeout);
    w.heading("Process");
    w.path("pid", c.pidfile.as_deref());
    w.set("daemon", c.daemon);
    w.path("chdir", c.chdir.as_deref());
    w.text("user", c.user.as_ref().map(|u| u.spec.clone()).unwrap_or_default());
    w.text("group", c.group.as_ref().map(|g| g.spec.clone()).unwrap_or_default());
    w.text("umask", c.umask.map(|m| format!("{m:03o}")).unwrap_or_default());
    w.heading("WSGI");
    w.text("url-scheme", &c.url_scheme);
    w.text("url-prefix", or_empty(&c.url_prefix));
    w.heading("Python");
    w.list("pythonpath", c.pythonpath.iter().map(|p| p.display().to_string()));
    w.list("env", c.env.iter().map(|(k, v)| format!("{k}={v}")));
    w.heading("Proxy");
    w.text("forwarded-allow-ips", &c.forwarded_allow_ips);
    w.set("proxy-protocol", c.proxy_protocol);
    w.heading("Hooks");
    w.text("before-serve", or_empty(&c.before_serve));
    w.text("before-graceful-exit", or_empty(&c.before_graceful_exit));
    w.text("before-died", or_empty(&c.before_died));
    w.heading("Logging");
    w.set("no-access-log", !c.access_log);
    w.text("access-log", &c.access_log_file);
    w.text("access-log-format", &c.access_log_format);
    w.set("access-log-json", c.access_log_json);
    w.set("capture-output", c.capture_output);
    w.text("error-log", &c.error_log);
    w.text("log-level", c.log_level.as_str().to_ascii_lowercase());
    w.heading("Limits");
    w.int("limit-request-line", c.limits.max_request_line);
    w.int("limit-request-fields", c.limits.max_headers);
    w.int("limit-request-field-size", c.limits.max_field_size);
    w.int("limit-request-head-size", c.limits.max_head_size);
    w.int("max-body-size", c.limits.max_body_size);
    w.heading("Timeouts");
    w.seconds("header-timeout", c.timeouts.header);
    w.seconds("keep-alive", c.timeouts.keep_alive);
    w.seconds("read-timeout", c.timeouts.read);
    w.seconds("write-timeout", c.timeouts.write);
    w.out
}

/// The ids `cli.rs` defines that are not in [`OPTIONS`].
#[cfg(test)]
const NOT_OPTIONS: &[&str] = &["config", "print_config", "check_config", "help", "version"];

#[cfg(test)]
mod tests;
