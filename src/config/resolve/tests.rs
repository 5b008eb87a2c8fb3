use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::config::{FIXED_AT_START, reload};

/// A file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("zibai-config-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn resolve_with(argv: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut full = vec!["zibai"];
    full.extend_from_slice(argv);
    let lookup = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    Args::try_parse_from(full)
        .unwrap()
        .resolve_with(&lookup, Path::new("/"))
}

fn error(argv: &[&str], env: &[(&str, &str)]) -> String {
    match resolve_with(argv, env) {
        Ok(c) => panic!("{argv:?} {env:?} resolved: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn precedence_command_line_then_env_then_file_then_default() {
    let file = TempFile::new("app = \"a:b\"\nmax-workers = 3\n");
    let f = file.path();
    let env = [("ZIBAI_MAX_WORKERS", "5")];
    assert_eq!(resolve_with(&["-c", f, "-w", "7"], &env).unwrap().max_workers, 7);
    assert_eq!(
        resolve_with(&["-c", f, "--max-workers=7"], &env).unwrap().max_workers,
        7
    );
    assert_eq!(resolve_with(&["-c", f], &env).unwrap().max_workers, 5);
    assert_eq!(resolve_with(&["-c", f], &[]).unwrap().max_workers, 3);
    assert_eq!(resolve_with(&["a:b"], &[]).unwrap().max_workers, 10);
    // The same for APP: command line, ZIBAI_APP, the file.
    let app = |argv: &[&str], env: &[(&str, &str)]| resolve_with(argv, env).unwrap().app.to_string();
    assert_eq!(app(&["-c", f, "x:y"], &[("ZIBAI_APP", "e:f")]), "x:y");
    assert_eq!(app(&["-c", f], &[("ZIBAI_APP", "e:f")]), "e:f");
    assert_eq!(app(&["-c", f], &[]), "a:b");
}

#[test]
fn flags_follow_the_same_precedence() {
    let file = TempFile::new("app = \"a:b\"\nno-access-log = true\ndaemon = true\n");
    let f = file.path();
    let c = resolve_with(&["-c", f], &[]).unwrap();
    assert!(!c.access_log && c.daemon);
    // A variable turns the file's true off; the command line turns it on.
    let c = resolve_with(&["-c", f], &[("ZIBAI_NO_ACCESS_LOG", "0"), ("ZIBAI_DAEMON", "no")]).unwrap();
    assert!(c.access_log && !c.daemon);
    let c = resolve_with(&["-c", f, "--daemon"], &[("ZIBAI_DAEMON", "no")]).unwrap();
    assert!(c.daemon);
    // An empty variable is unset.
    let c = resolve_with(&["-c", f], &[("ZIBAI_NO_ACCESS_LOG", "")]).unwrap();
    assert!(!c.access_log);
}

#[test]
fn config_file_from_the_environment() {
    let a = TempFile::new("app = \"a:b\"\nmax-workers = 3\n");
    let b = TempFile::new("app = \"a:b\"\nmax-workers = 4\n");
    let env = [("ZIBAI_CONFIG", a.path())];
    let c = resolve_with(&[], &env).unwrap();
    assert_eq!((c.max_workers, c.config_file.as_deref()), (3, Some(a.0.as_path())));
    assert_eq!(resolve_with(&["--config", b.path()], &env).unwrap().max_workers, 4);
}

#[test]
fn bool_variables() {
    for (text, want) in [
        ("1", true),
        ("true", true),
        ("yes", true),
        ("TRUE", true),
        ("Yes", true),
        ("0", false),
        ("false", false),
        ("no", false),
        ("NO", false),
        ("on", true),
        ("off", false),
    ] {
        let c = resolve_with(&["a:b"], &[("ZIBAI_NO_ACCESS_LOG", text)]).unwrap();
        assert_eq!(!c.access_log, want, "{text}");
    }
    assert_eq!(
        error(&["a:b"], &[("ZIBAI_REUSE_PORT", "maybe")]),
        "ZIBAI_REUSE_PORT=maybe: invalid value \"maybe\" for --reuse-port: expected 1, 0, true, false, yes, no, on or off"
    );
}

#[test]
fn list_variables_split_on_whitespace() {
    let c = resolve_with(
        &["a:b"],
        &[
            ("ZIBAI_LISTEN", "127.0.0.1:8000 unix:/run/z.sock\t [::1]:9000"),
            ("ZIBAI_PYTHONPATH", "/opt/a:/opt/b  lib"),
            ("ZIBAI_ENV", "A=1 B=x=y"),
            ("ZIBAI_FORWARDED_ALLOW_IPS", "10.0.0.0/8, 192.168.0.1 ::1"),
        ],
    )
    .unwrap();
    let listen: Vec<String> = c.listen.iter().map(ListenAddr::to_spec).collect();
    assert_eq!(listen, ["127.0.0.1:8000", "unix:/run/z.sock", "[::1]:9000"]);
    assert_eq!(
        c.pythonpath,
        [PathBuf::from("/opt/a"), PathBuf::from("/opt/b"), PathBuf::from("lib")]
    );
    assert_eq!(
        c.env,
        [("A".to_string(), "1".to_string()), ("B".to_string(), "x=y".to_string())]
    );
    assert_eq!(c.forwarded_allow_ips.to_string(), "10.0.0.0/8,192.168.0.1,::1");
    // The command line repeats instead.
    let c = resolve_with(
        &["a:b", "--pythonpath", "/x:/y", "--pythonpath", "/z", "--env", "K=v w"],
        &[],
    )
    .unwrap();
    assert_eq!(c.pythonpath.len(), 3);
    assert_eq!(c.env, [("K".to_string(), "v w".to_string())]);
    // A list in the file: an array, or one string.
    let file = TempFile::new("app = \"a:b\"\nlisten = \":8000\"\nenv = [\"A=1\", \"B=2 3\"]\n");
    let c = resolve_with(&["-c", file.path()], &[]).unwrap();
    assert_eq!(c.listen[0].to_spec(), ":8000");
    assert_eq!(c.env[1], ("B".to_string(), "2 3".to_string()));
}

#[test]
fn file_errors_name_the_file_the_key_and_the_value() {
    let cases: &[(&str, &str)] = &[
        (
            "max_worker = 3",
            "unknown key \"max_worker\" (did you mean \"max-workers\"?)",
        ),
        // An alias is a key; giving both names of one option is not.
        (
            "workers = 3\nsubprocess = 2",
            "both workers and subprocess are set: they are one option",
        ),
        ("no-such-thing = 3", "unknown key \"no-such-thing\""),
        (
            "config = \"x.toml\"",
            "key \"config\" cannot be set in a config file (give it with --config or ZIBAI_CONFIG)",
        ),
        (
            "max-workers = 0",
            "key \"max-workers\": invalid value 0: must be between 1 and 10000",
        ),
        (
            "max-workers = \"20\"",
            "key \"max-workers\": invalid value \"20\": expected an integer",
        ),
        (
            "max-workers = 2.5",
            "key \"max-workers\": invalid value 2.5: expected an integer",
        ),
        ("daemon = 1", "key \"daemon\": invalid value 1: expected true or false"),
        (
            "timeout = \"30\"",
            "key \"timeout\": invalid value \"30\": expected a number of seconds",
        ),
        (
            "keep-alive = -1",
            "key \"keep-alive\": invalid value -1: expected a positive number of seconds",
        ),
        (
            "listen = [1]",
            "key \"listen\": invalid value [1]: expected a string or an array of strings",
        ),
        (
            "listen = []",
            "key \"listen\": invalid value []: at least one address is needed",
        ),
        (
            "listen = [\"127.0.0.1:1\", \"localhost\"]",
            "key \"listen\": invalid value \"localhost\": expected HOST:PORT, unix:PATH or fd://N",
        ),
        (
            "url-prefix = \"api\"",
            "key \"url-prefix\": invalid value \"api\": must start with '/'",
        ),
        (
            "umask = 0o1777",
            "key \"umask\": invalid value 0o1777: expected octal mode like 600",
        ),
        (
            "forwarded-allow-ips = \"10.0.0.0/33\"",
            "key \"forwarded-allow-ips\": invalid value \"10.0.0.0/33\": invalid trusted proxy \"10.0.0.0/33\": the \
             prefix length must be a number from 0 to 32",
        ),
        (
            "access-log-format = \"%(h)s %(z)s\"",
            "key \"access-log-format\": invalid value \"%(h)s %(z)s\": unknown atom %(z)s",
        ),
        (
            "user = \"zibai-no-such-user\"",
            "key \"user\": invalid value \"zibai-no-such-user\": no such user",
        ),
        ("[server]\nlisten = \":1\"", "unknown key \"server\""),
    ];
    for (text, want) in cases {
        let file = TempFile::new(&format!("app = \"a:b\"\n{text}\n"));
        let got = error(&["-c", file.path()], &[]);
        assert_eq!(got, format!("config file {}: {want}", file.path()), "{text}");
    }
}

#[test]
fn modes_in_a_file() {
    let file = TempFile::new("app = \"a:b\"\numask = 0o027\nunix-socket-perms = \"660\"\n");
    let c = resolve_with(&["-c", file.path()], &[]).unwrap();
    assert_eq!((c.umask, c.unix_socket_perms), (Some(0o027), 0o660));
    let file = TempFile::new("app = \"a:b\"\numask = \"027\"\n");
    assert_eq!(resolve_with(&["-c", file.path()], &[]).unwrap().umask, Some(0o027));
}

#[test]
fn unreadable_and_malformed_files() {
    let missing = "/zibai/no/such/file.toml";
    let got = error(&["a:b", "-c", missing], &[]);
    assert!(
        got.starts_with(&format!("cannot read config file {missing}: ")),
        "{got}"
    );
    let file = TempFile::new("max-workers = = 3\n");
    let got = error(&["a:b", "-c", file.path()], &[]);
    assert!(got.starts_with(&format!("config file {}: ", file.path())), "{got}");
    assert!(got.contains("line 1"), "{got}");
    let file = TempFile::new("max-workers = 3\n");
    assert_eq!(
        error(&["-c", file.path()], &[]),
        "no app given: pass APP on the command line, set ZIBAI_APP, or set `app` in the config file"
    );
}

#[test]
fn variable_errors_name_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "ZIBAI_MAX_WORKERS",
            "abc",
            "invalid value \"abc\" for --max-workers: expected a whole number",
        ),
        (
            "ZIBAI_MAX_WORKERS",
            "0",
            "invalid value \"0\" for --max-workers: must be between 1 and 10000",
        ),
        (
            "ZIBAI_BACKLOG",
            "-5",
            "invalid value \"-5\" for --backlog: must be at least 1",
        ),
        (
            "ZIBAI_LISTEN",
            "127.0.0.1:1 nonsense",
            "invalid value \"nonsense\" for --listen: expected HOST:PORT, unix:PATH or fd://N",
        ),
        (
            "ZIBAI_FORWARDED_ALLOW_IPS",
            "10.1.2.3/8",
            "invalid value \"10.1.2.3/8\" for --forwarded-allow-ips: invalid trusted proxy \"10.1.2.3/8\": host bits \
             are set; the network is 10.0.0.0/8",
        ),
        (
            "ZIBAI_ACCESS_LOG_FORMAT",
            "%(h)s %(bogus)s",
            "invalid value \"%(h)s %(bogus)s\" for --access-log-format: unknown atom %(bogus)s",
        ),
        (
            "ZIBAI_USER",
            "zibai-no-such-user",
            "invalid value \"zibai-no-such-user\" for --user: no such user",
        ),
        (
            "ZIBAI_ENV",
            "A=1 =2",
            "invalid value \"=2\" for --env: \"\" is not a valid variable name (letters, digits and _, not \
             starting with a digit)",
        ),
        (
            "ZIBAI_TIMEOUT",
            "soon",
            "invalid value \"soon\" for --timeout: expected a positive number of seconds",
        ),
        (
            "ZIBAI_APP",
            "a:1x",
            "invalid value \"a:1x\" for APP: the attribute after ':' must be a dotted name",
        ),
    ];
    for (var, value, want) in cases {
        let argv: &[&str] = if *var == "ZIBAI_APP" { &[] } else { &["a:b"] };
        assert_eq!(error(argv, &[(var, value)]), format!("{var}={value}: {want}"));
    }
}

#[test]
fn command_line_errors() {
    assert_eq!(
        error_cli(&["a:b", "--forwarded-allow-ips", "10.0.0.0/33"]),
        "invalid value \"10.0.0.0/33\" for --forwarded-allow-ips: invalid trusted proxy \"10.0.0.0/33\": the prefix \
         length must be a number from 0 to 32"
    );
    assert_eq!(
        error_cli(&["a:b", "--access-log-format", "%(h)s %(x)s"]),
        "invalid value \"%(h)s %(x)s\" for --access-log-format: unknown atom %(x)s"
    );
    assert_eq!(
        error_cli(&["a:b", "--user", "zibai-no-such-user"]),
        "invalid value \"zibai-no-such-user\" for --user: no such user"
    );
    assert_eq!(
        error_cli(&["a:b", "--group", "zibai-no-such-group"]),
        "invalid value \"zibai-no-such-group\" for --group: no such group"
    );
    // A uid without a passwd entry has no group to switch to: the workers
    // would have kept root's.
    assert_eq!(
        error_cli(&["a:b", "--user", "3999999999"]),
        "invalid value \"3999999999\" for --user: this uid has no passwd entry, so no group: give --group too"
    );
    assert!(resolve_with(&["a:b", "--user", "3999999999", "--group", "0"], &[]).is_ok());
    assert_eq!(
        error_cli(&["a:b", "--chdir", "/zibai/no/such/dir"])
            .split(" (")
            .next()
            .unwrap(),
        "invalid value \"/zibai/no/such/dir\" for --chdir: not a directory"
    );
    assert_eq!(
        error_cli(&["a:b", "--log-level", "loud"]),
        "invalid value \"loud\" for --log-level: expected error, warn, info or debug (or gunicorn's critical, warning)"
    );
}

fn error_cli(argv: &[&str]) -> String {
    error(argv, &[])
}

#[test]
fn virtualenv_defaults_to_virtual_env_below_the_file() {
    let file = TempFile::new("app = \"a:b\"\nvirtualenv = \"/\"\n");
    let env = [("VIRTUAL_ENV", "/zibai/no/such/venv")];
    // The file beats $VIRTUAL_ENV (a default), and "" in it means none.
    assert_eq!(
        resolve_with(&["-c", file.path()], &env).unwrap().virtualenv.as_deref(),
        Some(Path::new("/"))
    );
    file.write("app = \"a:b\"\nvirtualenv = \"\"\n");
    assert_eq!(resolve_with(&["-c", file.path()], &env).unwrap().virtualenv, None);
    assert_eq!(
        error(&["a:b"], &env).split(" (").next().unwrap(),
        "VIRTUAL_ENV=/zibai/no/such/venv: invalid value \"/zibai/no/such/venv\" for --virtualenv: not a directory"
    );
}

/// Everything away from its default, where a value can be set without
/// the machine's help (users, directories).
const RICH: &str = r#"
app = "pkg.web:make('prod', debug=False)"
listen = [":8000", "[::1]:9000", "unix:/run/z.sock", "unix:@zibai", "fd://3"]
backlog = 100
dualstack-ipv6 = true
unix-socket-perms = "660"
reuse-port = true
max-workers = 20
watchfiles = "*.py;*.toml"
timeout = 0
boot-timeout = 0.25
max-request-pre-process = 1000
max-requests-jitter = 50
graceful-exit-timeout = 2.5
pid = "/run/zibai.pid"
daemon = true
chdir = "/"
user = "0"
group = "0"
umask = 0o022
url-scheme = "https"
url-prefix = "/api/"
pythonpath = ["/opt/lib", "rel"]
env = ["A=1", "B=two words", "C=x=\"y\""]
forwarded-allow-ips = ["10.0.0.0/8", "::ffff:192.168.0.0/112", "2001:db8::1"]
proxy-protocol = true
before-serve = "hooks:serve"
before-graceful-exit = "hooks:bye"
before-died = "hooks:died"
no-access-log = true
access-log = "/var/log/access.log"
access-log-format = '%(h)s "%(r)s" %({X-Real-IP}i)s 100%%'
access-log-json = true
error-log = "/var/log/error.log"
log-level = "debug"
limit-request-line = 1000
limit-request-fields = 50000
limit-request-field-size = 2000
limit-request-head-size = 10000
max-body-size = 0
header-timeout = 1e-3
keep-alive = 0.1
read-timeout = 7
write-timeout = 123456.789
"#;

#[test]
fn print_config_round_trip() {
    for text in [RICH, "app = \"m\"\n"] {
        let file = TempFile::new(text);
        let first = resolve_with(&["-c", file.path()], &[]).unwrap();
        let printed = first.to_toml();
        // Fed back as the file, with nothing else: the same text.
        let again = TempFile::new(&printed);
        let second = resolve_with(&["--config", again.path()], &[]).unwrap();
        assert_eq!(second.to_toml(), printed);
        // And as a worker receives it.
        let third = Config::from_resolved(&printed).unwrap();
        assert_eq!(third.to_toml(), printed);
        assert_eq!(third.listen, first.listen);
        assert_eq!(third.timeouts, first.timeouts);
        assert_eq!(third.access_log_format, first.access_log_format);
        assert_eq!(third.forwarded_allow_ips, first.forwarded_allow_ips);
        assert_eq!(third.env, first.env);
    }
}

#[test]
fn rich_values_resolve_as_written() {
    let file = TempFile::new(RICH);
    let c = resolve_with(&["-c", file.path()], &[]).unwrap();
    assert_eq!(c.app.call_args.as_deref(), Some("'prod', debug=False"));
    assert_eq!(c.subprocess, 1, "--watchfiles implies a worker");
    assert_eq!(c.timeout, None);
    assert_eq!(c.boot_timeout, Duration::from_millis(250));
    assert_eq!(c.url_prefix.as_deref(), Some("/api"));
    assert_eq!(c.limits.max_headers, 32768);
    assert_eq!(c.limits.max_body_size, 0);
    assert_eq!(c.timeouts.header, Duration::from_millis(1));
    assert_eq!(
        c.forwarded_allow_ips.to_string(),
        "10.0.0.0/8,192.168.0.0/16,2001:db8::1"
    );
    assert_eq!(c.user.as_ref().map(|u| u.uid), Some(0));
    assert_eq!(c.env[2], ("C".to_string(), "x=\"y\"".to_string()));
    assert!(!c.access_log && c.access_log_json && c.proxy_protocol && c.reuse_port);
    assert_eq!(c.log_level, log::LevelFilter::Debug);
    let printed = c.to_toml();
    for line in [
        "app = \"pkg.web:make('prod', debug=False)\"",
        "listen = [\":8000\", \"[::1]:9000\", \"unix:/run/z.sock\", \"unix:@zibai\", \"fd://3\"]",
        "umask = \"022\"",
        "timeout = 0.0",
        "boot-timeout = 0.25",
        "write-timeout = 123456.789",
        "url-prefix = \"/api\"",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line:?} not in:\n{printed}");
    }
}

#[test]
fn print_config_has_every_option_once() {
    let printed = resolve_with(&["a:b"], &[]).unwrap().to_toml();
    let table: toml::Table = printed.parse().unwrap();
    for (id, _) in OPTIONS {
        let n = printed
            .lines()
            .filter(|l| l.starts_with(&format!("{} = ", key(id))))
            .count();
        let want = usize::from(*id != "no_gevent");
        assert_eq!(n, want, "{id} in:\n{printed}");
    }
    assert_eq!(table.len(), OPTIONS.len() - 1);
}

#[test]
fn resolved_text_ignores_the_environment() {
    // VIRTUAL_ENV and SCRIPT_NAME are defaults of the master's, not the
    // worker's: from_resolved has no environment to look at.
    let c = resolve_with(&["a:b"], &[]).unwrap();
    let w = Config::from_resolved(&c.to_toml()).unwrap();
    assert_eq!((w.virtualenv, w.url_prefix), (None, None));
    let err = Config::from_resolved("app = \"a:b\"\nmax-workers = 0\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "resolved configuration ($ZIBAI_RESOLVED_CONFIG): key \"max-workers\": invalid value 0: must be between 1 \
         and 10000"
    );
}

#[test]
fn durations_round_trip_through_text() {
    for secs in [
        0.001,
        0.1,
        0.25,
        1.0,
        2.5,
        7.0,
        30.0,
        86400.5,
        123456.789,
        1e-9,
        999999999.0,
    ] {
        let d = Duration::from_secs_f64(secs);
        let text = toml::Value::Float(d.as_secs_f64()).to_string();
        let back: f64 = text.parse().unwrap();
        assert_eq!(Duration::from_secs_f64(back), d, "{secs} printed as {text}");
    }
}

#[test]
fn reload_rereads_the_file_and_keeps_start_only_options() {
    let file = TempFile::new("app = \"a:b\"\nmax-workers = 3\nlisten = [\"127.0.0.1:1\"]\n");
    let args = Args::try_parse_from(["zibai", "-c", file.path()]).unwrap();
    let first = args.resolve_with(&|_| None, Path::new("/")).unwrap();
    file.write("app = \"c:d\"\nmax-workers = 4\nlisten = [\"127.0.0.1:2\"]\nbacklog = 7\n");
    let r = reload(&first).unwrap();
    assert_eq!((r.config.max_workers, r.config.app.to_string()), (4, "c:d".to_string()));
    assert_eq!(r.config.listen, first.listen);
    assert_eq!(r.config.backlog, first.backlog);
    assert_eq!(r.ignored, ["listen", "backlog"]);
    for name in &r.ignored {
        assert!(FIXED_AT_START.contains(name));
    }
    // A broken file is an error; the caller keeps `first`.
    file.write("app = \"c:d\"\nmax-workers = 0\n");
    let err = reload(&first).unwrap_err().to_string();
    assert!(err.contains("key \"max-workers\""), "{err}");
    // A resolved configuration reloads to itself.
    let w = Config::from_resolved(&first.to_toml()).unwrap();
    assert_eq!(reload(&w).unwrap().config.to_toml(), first.to_toml());
}

#[test]
fn options_match_the_command_line() {
    let cmd = crate::config::cli::command();
    let ids: Vec<&str> = cmd.get_arguments().map(|a| a.get_id().as_str()).collect();
    for (id, kind) in OPTIONS {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == *id)
            .unwrap_or_else(|| panic!("{id} is not a clap argument"));
        if *id != "app" {
            assert_eq!(arg.get_long(), Some(key(id).as_str()), "{id}");
        }
        // A flag: `--flag` alone, or `--flag=false` (see `cli::command`).
        let is_flag = arg.is_require_equals_set();
        assert_eq!(is_flag, *kind == Kind::Bool, "{id}");
        if matches!(kind, Kind::Int | Kind::Seconds) {
            assert!(!arg.get_default_values().is_empty(), "{id} needs a default");
        }
    }
    for id in ids {
        assert!(
            kind(id).is_some() || NOT_OPTIONS.contains(&id),
            "{id} is neither in OPTIONS nor in NOT_OPTIONS"
        );
    }
    for (alias, target) in ALIASES {
        let arg = cmd.get_arguments().find(|a| a.get_long() == Some(*target)).unwrap();
        assert!(arg.get_all_aliases().unwrap_or_default().contains(alias), "{alias}");
    }
}

#[test]
fn suggestions() {
    assert_eq!(suggest("max_workers").as_deref(), Some("max-workers"));
    assert_eq!(suggest("MAX-WORKERS").as_deref(), Some("max-workers"));
    assert_eq!(suggest("listn").as_deref(), Some("listen"));
    assert_eq!(suggest("max-requests").as_deref(), Some("max-request-pre-process"));
    assert_eq!(suggest("completely-different"), None);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
}

#[test]
fn reload_keeps_every_start_only_option() {
    let before = "app = \"a:b\"\nsubprocess = 1\n";
    let after = "app = \"a:b\"\nsubprocess = 1\nlisten = [\"127.0.0.1:2\"]\nbacklog = 7\ndualstack-ipv6 = true\n\
                 unix-socket-perms = \"660\"\nreuse-port = true\npid = \"/run/z.pid\"\ndaemon = true\n\
                 chdir = \"/\"\nuser = \"0\"\ngroup = \"0\"\numask = \"022\"\nerror-log = \"/var/log/e.log\"\n\
                 watchfiles = \"*.py\"\nmax-workers = 4\n";
    let file = TempFile::new(before);
    let first = resolve_with(&["-c", file.path()], &[]).unwrap();
    file.write(after);
    let r = reload(&first).unwrap();
    assert_eq!(r.ignored, FIXED_AT_START);
    assert_eq!(r.config.max_workers, 4);
    assert_eq!(
        r.config.to_toml().replace("max-workers = 4", "max-workers = 10"),
        first.to_toml()
    );
}

/// A flag a file (or variable) turned on is turned off on the command line
/// with `=false`; `--flag` alone still means true and never takes the next
/// word (the app) as its value.
#[test]
fn flags_take_false_on_the_command_line() {
    let file = TempFile::new("app = \"a:b\"\ndaemon = true\nno-access-log = true\ncapture-output = true\n");
    let c = resolve_with(&["-c", file.path()], &[]).unwrap();
    assert!(c.daemon && !c.access_log && c.capture_output);
    let c = resolve_with(
        &[
            "-c",
            file.path(),
            "--daemon=false",
            "--no-access-log=0",
            "--capture-output=off",
        ],
        &[],
    )
    .unwrap();
    assert!(!c.daemon && c.access_log && !c.capture_output, "{c:?}");
    let c = resolve_with(&["--daemon", "x:app"], &[("ZIBAI_DAEMON", "0")]).unwrap();
    assert!(c.daemon);
    assert_eq!(c.app.to_string(), "x:app");
    let c = resolve_with(&["--call=yes", "x:make"], &[]).unwrap();
    assert!(c.call);
    let bad = Args::try_parse_from(["zibai", "x:app", "--daemon=maybe"])
        .unwrap_err()
        .to_string();
    assert!(bad.contains("--daemon"), "{bad}");
}

/// A repeated option's last value wins, as with Python Zibai's argparse;
/// list options accumulate.
#[test]
fn a_repeated_option_takes_its_last_value() {
    let c = resolve_with(
        &[
            "x:app",
            "-w",
            "10",
            "-w",
            "20",
            "-l",
            "127.0.0.1:1",
            "-l",
            "127.0.0.1:2",
            "--daemon",
            "--daemon",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.max_workers, 20);
    assert_eq!(c.listen.len(), 2);
    assert!(c.daemon);
}

/// Python Zibai reads modes with int(x, 8), which takes a `0o` prefix.
#[test]
fn modes_take_an_0o_prefix() {
    let c = resolve_with(&["x:app", "--umask", "0o027", "--unix-socket-perms", "0o660"], &[]).unwrap();
    assert_eq!((c.umask, c.unix_socket_perms), (Some(0o027), 0o660));
}

/// The aliases name variables too, as they name keys of the file; the
/// option's own variable wins. (They were ignored without a word.)
#[test]
fn aliases_name_variables() {
    let c = resolve_with(&["x:app"], &[("ZIBAI_WORKERS", "4"), ("ZIBAI_MAX_REQUESTS", "100")]).unwrap();
    assert_eq!((c.subprocess, c.max_requests), (4, 100));
    let c = resolve_with(&["x:app"], &[("ZIBAI_WORKERS", "4"), ("ZIBAI_SUBPROCESS", "2")]).unwrap();
    assert_eq!(c.subprocess, 2);
    let e = error(&["x:app"], &[("ZIBAI_WORKERS", "many")]);
    assert!(e.contains("ZIBAI_WORKERS"), "{e}");
}

/// One address twice: an fd:// would be owned (and closed) twice, a path
/// or port refused as "in use" by ourselves.
#[test]
fn an_address_given_twice_is_refused() {
    for argv in [
        &["x:app", "-l", "fd://3", "-l", "fd://3"][..],
        &["x:app", "-l", "unix:/run/a.sock", "unix:/run/a.sock"],
        &["x:app", "-l", "localhost:8000", "-l", "127.0.0.1:8000"],
    ] {
        let e = error(argv, &[]);
        assert!(e.contains("--listen") && e.contains("is given twice"), "{argv:?}: {e}");
    }
}
