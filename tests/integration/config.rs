//! Issue 4, sources and precedence: the config file, `ZIBAI_*` variables,
//! `--print-config` and `--check-config`, run through the real binary.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{BIN, Server, TempDir, apps_dir, describe_status};

const EXIT_WAIT: Duration = Duration::from_secs(20);

/// `zibai ARGS` in `tests/apps` with a clean environment (no inherited
/// `ZIBAI_*`, `VIRTUAL_ENV` or `SCRIPT_NAME`) plus `envs`; killed if it
/// has not exited within `EXIT_WAIT` (a server wrongly accepting its
/// options would serve forever).
fn zibai(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(apps_dir())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run zibai");
    let deadline = Instant::now() + EXIT_WAIT;
    // The outputs are small: they fit in the pipes while we poll.
    while child.try_wait().expect("waitpid").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("zibai's output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}\n--- stderr:\n{}",
        describe_status(&o.status),
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn write(dir: &TempDir, name: &str, content: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn print_config_output_fed_back_prints_the_same() {
    let dir = TempDir::new("printcfg");
    let first = zibai(
        &[
            "echo_app:app",
            "--print-config",
            "-l",
            "127.0.0.1:0",
            "unix:/tmp/zibai-never.sock",
            "-w",
            "7",
            "--url-prefix",
            "/api",
            "--env",
            "GREETING=hello world",
            "--forwarded-allow-ips",
            "10.0.0.0/8,::1",
            "--access-log-format",
            "%(h)s %(r)s %({user-agent}i)s",
        ],
        &[("ZIBAI_KEEP_ALIVE", "2.5"), ("ZIBAI_PYTHONPATH", "/opt/a:/opt/b lib")],
    );
    assert!(first.status.success(), "{}", show(&first));
    let printed = text(&first.stdout);
    for line in [
        "app = \"echo_app:app\"",
        "max-workers = 7",
        "keep-alive = 2.5",
        "url-prefix = \"/api\"",
        "pythonpath = [\"/opt/a\", \"/opt/b\", \"lib\"]",
        "env = [\"GREETING=hello world\"]",
        "listen = [\"127.0.0.1:0\", \"unix:/tmp/zibai-never.sock\"]",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line:?} not in:\n{printed}");
    }
    let file = write(&dir, "zibai.toml", &printed);
    let second = zibai(&["--config", &file, "--print-config"], &[]);
    assert!(second.status.success(), "{}", show(&second));
    assert_eq!(text(&second.stdout), printed);
    // ZIBAI_CONFIG names the file just as well.
    let third = zibai(&["--print-config"], &[("ZIBAI_CONFIG", &file)]);
    assert_eq!(text(&third.stdout), printed, "{}", show(&third));
}

#[test]
fn command_line_beats_variables_beats_file() {
    let dir = TempDir::new("precedence");
    let file = write(
        &dir,
        "z.toml",
        "app = \"echo_app:app\"\nmax-workers = 3\nbacklog = 99\n",
    );
    let workers = |args: &[&str], envs: &[(&str, &str)]| {
        let o = zibai(args, envs);
        assert!(o.status.success(), "{}", show(&o));
        let out = text(&o.stdout);
        let w = out
            .lines()
            .find(|l| l.starts_with("max-workers = "))
            .unwrap()
            .to_string();
        let b = out.lines().find(|l| l.starts_with("backlog = ")).unwrap().to_string();
        (w, b)
    };
    let env = [("ZIBAI_MAX_WORKERS", "5")];
    assert_eq!(
        workers(&["-c", &file, "--print-config", "-w", "6"], &env),
        ("max-workers = 6".into(), "backlog = 99".into())
    );
    assert_eq!(
        workers(&["-c", &file, "--print-config"], &env),
        ("max-workers = 5".into(), "backlog = 99".into())
    );
    assert_eq!(
        workers(&["-c", &file, "--print-config"], &[]),
        ("max-workers = 3".into(), "backlog = 99".into())
    );
    assert_eq!(
        workers(&["echo_app:app", "--print-config"], &[]),
        ("max-workers = 10".into(), "backlog = 2048".into())
    );
}

#[test]
fn check_config_loads_a_good_app() {
    let o = zibai(&["echo_app:app", "--check-config"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(text(&o.stdout).trim(), "config OK, app echo_app:app loaded");
}

#[test]
fn check_config_reports_an_app_that_cannot_import() {
    let o = zibai(&["import_boom:app", "--check-config"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    for needle in ["import_boom", "RuntimeError: boom at import time"] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    assert!(!text(&o.stdout).contains("config OK"), "{}", show(&o));
}

/// A bad --watchfiles glob is a configuration error, found by the check
/// and before anything is bound. It used to pass the check and fail only
/// when the watcher started (after a daemon had detached).
#[test]
fn check_config_reports_a_bad_watchfiles_glob() {
    for args in [
        &["echo_app:app", "--watchfiles", "*.py;[a", "--check-config"][..],
        &["echo_app:app", "--watchfiles", "[a", "-l", "127.0.0.1:0"],
    ] {
        let o = zibai(args, &[]);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", show(&o));
        assert!(
            text(&o.stderr).contains("invalid pattern \"[a\" in --watchfiles"),
            "{args:?}: {}",
            show(&o)
        );
        assert!(!text(&o.stderr).contains("Listening"), "{args:?}: {}", show(&o));
    }
}

#[test]
fn check_config_reports_a_hook_that_cannot_import() {
    let o = zibai(
        &[
            "echo_app:app",
            "--before-serve",
            "zibai_no_such_hook:f",
            "--check-config",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("zibai_no_such_hook"), "{}", show(&o));
}

#[test]
fn check_config_uses_the_config_file_and_pythonpath() {
    let dir = TempDir::new("checkpp");
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    std::fs::write(
        dir.path().join("lib").join("zibai_pp_app.py"),
        "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'pp']\n",
    )
    .unwrap();
    let lib = dir.path().join("lib");
    let file = write(
        &dir,
        "z.toml",
        &format!(
            "app = \"zibai_pp_app:app\"\npythonpath = [{:?}]\n",
            lib.to_str().unwrap()
        ),
    );
    let o = zibai(&["--config", &file, "--check-config"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(text(&o.stdout).contains("config OK, app zibai_pp_app:app loaded"));
}

/// Waits for an access log line of `GET /` in the server's stderr.
fn access_line_seen(s: &Server, wait: Duration) -> bool {
    s.wait_for_log("\"GET / HTTP/1.1\"", wait)
}

fn file_and_env_configure_the_server(dir: &TempDir, extra: &str) {
    let file = write(dir, "z.toml", &format!("max-workers = 3\n{extra}"));
    let s = Server::builder("echo_app:app")
        .args(["--config", file.as_str()])
        .env("ZIBAI_NO_ACCESS_LOG", "1")
        .start();
    assert!(
        s.wait_for_log("Serving with 3 app threads", Duration::from_secs(10)),
        "no `Serving with 3 app threads` in:\n{}",
        s.stderr()
    );
    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.get("/").status, 200);
    assert!(!access_line_seen(&s, Duration::from_millis(500)), "{}", s.stderr());
    // The control: the same server without the variable logs the requests.
    let c = Server::builder("echo_app:app")
        .args(["--config", file.as_str()])
        .start();
    assert_eq!(c.get("/").status, 200);
    assert!(access_line_seen(&c, Duration::from_secs(5)), "{}", c.stderr());
}

#[test]
fn file_and_variable_configure_a_single_process_server() {
    let dir = TempDir::new("cfgsingle");
    file_and_env_configure_the_server(&dir, "");
}

#[test]
fn file_and_variable_configure_workers() {
    let dir = TempDir::new("cfgworkers");
    file_and_env_configure_the_server(&dir, "subprocess = 1\n");
}

#[test]
fn errors_in_the_file_name_the_file_and_the_key() {
    let dir = TempDir::new("cfgerr");
    for (content, needles) in [
        (
            "max-workers = 0\n",
            &["key \"max-workers\"", "invalid value 0", "must be between 1 and 10000"][..],
        ),
        (
            "max_worker = 3\n",
            &["unknown key \"max_worker\"", "did you mean \"max-workers\""][..],
        ),
        ("backlog = \"many\"\n", &["key \"backlog\"", "expected an integer"][..]),
        ("listen = = 1\n", &["line 1"][..]),
    ] {
        let file = write(&dir, "bad.toml", content);
        let o = zibai(&["echo_app:app", "--config", &file], &[]);
        assert_eq!(o.status.code(), Some(1), "{content}: {}", show(&o));
        let err = text(&o.stderr);
        assert!(err.contains(&format!("config file {file}")), "{content}: {err}");
        for n in needles {
            assert!(err.contains(n), "{content}: {n:?} not in {err}");
        }
    }
    let o = zibai(&["echo_app:app", "--config", "/zibai/no/such.toml"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("cannot read config file /zibai/no/such.toml"));
}

/// Modes in the file are octal however they are written: a string, a 0o
/// integer, or decimal digits as chmod takes them (`umask = 22` used to be
/// read as the number 22, that is 0o26).
#[test]
fn octal_modes_in_the_file() {
    let dir = TempDir::new("cfgmode");
    for (content, want) in [
        ("umask = \"022\"\n", "umask = \"022\""),
        ("umask = 0o22\n", "umask = \"022\""),
        ("umask = 22\n", "umask = \"022\""),
        ("unix-socket-perms = 0o660\n", "unix-socket-perms = \"660\""),
        ("unix-socket-perms = 660\n", "unix-socket-perms = \"660\""),
    ] {
        let file = write(&dir, "mode.toml", content);
        let o = zibai(&["echo_app:app", "--config", &file, "--print-config"], &[]);
        assert!(o.status.success(), "{content}: {}", show(&o));
        assert!(text(&o.stdout).contains(want), "{content}: {}", show(&o));
    }
}

/// A timeout under a millisecond is refused where it is given (it used to
/// pass, become 0 in the resolved configuration, and fail every worker's
/// boot with an error naming an internal variable).
#[test]
fn sub_millisecond_timeouts_are_refused() {
    for opt in ["--keep-alive", "--timeout", "--boot-timeout"] {
        let o = zibai(&["echo_app:app", opt, "1e-10", "--print-config"], &[]);
        assert_eq!(o.status.code(), Some(1), "{opt}: {}", show(&o));
        let err = text(&o.stderr);
        assert!(
            err.contains(opt) && err.contains("at least 0.001 seconds"),
            "{opt}: {err}"
        );
    }
}

#[test]
fn variable_errors_name_the_variable() {
    let o = zibai(&["echo_app:app"], &[("ZIBAI_MAX_WORKERS", "abc")]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("ZIBAI_MAX_WORKERS=abc: invalid value \"abc\" for --max-workers"),
        "{}",
        show(&o)
    );
}

#[test]
fn app_from_the_environment_alone() {
    let o = zibai(&["--print-config"], &[("ZIBAI_APP", "echo_app:app")]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("app = \"echo_app:app\""));
    let o = zibai(&["--print-config"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("no app given"), "{}", show(&o));
}

/// The command line's aliases are keys of the file too (`workers = 4` is
/// how gunicorn's configuration says it; it was refused), a uid or gid may
/// be a number as on the command line, and gunicorn's level names are
/// understood.
#[test]
fn aliases_numeric_ids_and_gunicorn_levels_in_the_file() {
    let dir = TempDir::new("cfgalias");
    let file = write(
        &dir,
        "alias.toml",
        "workers = 3\nmax-requests = 7\nuser = 0\ngroup = 0\nlog-level = \"warning\"\n",
    );
    let o = zibai(&["echo_app:app", "--config", &file, "--print-config"], &[]);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    for want in [
        "subprocess = 3",
        "max-request-pre-process = 7",
        "user = \"0\"",
        "group = \"0\"",
        "log-level = \"warn\"",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    // Both names of one option: refused, naming both.
    let file = write(&dir, "both.toml", "workers = 3\nsubprocess = 2\n");
    let o = zibai(&["echo_app:app", "--config", &file, "--print-config"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("both workers and subprocess"), "{}", show(&o));
    // A bad value through an alias is reported under the name written.
    let file = write(&dir, "bad.toml", "workers = \"many\"\n");
    let o = zibai(&["echo_app:app", "--config", &file, "--print-config"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("workers"), "{}", show(&o));
}
