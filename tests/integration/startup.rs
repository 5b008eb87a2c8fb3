//! Starting up: the ways of naming an app, virtualenvs, and every way
//! startup can fail (exit status and a message that names the culprit).

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use crate::util::{Finished, Server, TempDir, assert_failed, describe_status};

const EXIT_WAIT: Duration = Duration::from_secs(10);

fn run(app: &str, args: &[&str]) -> Finished {
    Server::builder(app).args(args.iter().copied()).run_to_exit(EXIT_WAIT)
}

#[test]
fn missing_module_exits_4_naming_it() {
    let f = run("zibai_no_such_module:app", &[]);
    assert_failed(&f, Some(4), &["zibai_no_such_module", "ModuleNotFoundError"]);
    assert!(f.elapsed < EXIT_WAIT);
}

#[test]
fn module_raising_at_import_exits_4_with_traceback() {
    let f = run("import_boom:app", &[]);
    assert_failed(
        &f,
        Some(4),
        &["import_boom", "RuntimeError: boom at import time", "Traceback"],
    );
}

#[test]
fn missing_attribute_names_it() {
    let f = run("echo_app:no_such_attribute", &[]);
    assert_failed(&f, None, &["no_such_attribute"]);
}

#[test]
fn module_without_application_or_app_fails() {
    let f = run("hooks", &[]);
    assert_failed(&f, None, &["hooks", "application"]);
}

#[test]
fn non_callable_app_fails() {
    let f = run("factory:NOT_CALLABLE", &[]);
    assert_failed(&f, None, &["NOT_CALLABLE", "not callable"]);
}

#[test]
fn hook_that_cannot_be_imported_fails_startup() {
    let f = run("echo_app:app", &["--before-serve", "zibai_no_such_hook_module:fn"]);
    assert_failed(&f, None, &["zibai_no_such_hook_module"]);
}

#[test]
fn bad_option_values_name_the_option() {
    let dir = TempDir::new("badopts");
    let missing = dir.path().join("no-such-venv");
    let missing = missing.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--unix-socket-perms", "999"], "--unix-socket-perms"),
        (&["--unix-socket-perms", "rw"], "--unix-socket-perms"),
        (&["-l", "nonsense"], "--listen"),
        (&["-l", "127.0.0.1:99999"], "--listen"),
        (&["-l", "fd://x"], "--listen"),
        (&["-w", "0"], "--max-workers"),
        (&["--url-scheme", "ftp"], "--url-scheme"),
        (&["--url-prefix", "api"], "--url-prefix"),
        (&["--keep-alive=-1"], "--keep-alive"),
        // A negative number is a value, not an unknown option.
        (&["--timeout", "-5"], "--timeout"),
        (&["--graceful-exit-timeout", "-1"], "--graceful-exit-timeout"),
        (&["--backlog", "-1"], "--backlog"),
        (&["--header-timeout", "0"], "--header-timeout"),
        (&["--read-timeout", "nan"], "--read-timeout"),
        (&["--backlog", "0"], "--backlog"),
        (&["--limit-request-line", "0"], "--limit-request-line"),
        (&["--before-serve", "nocolon"], "--before-serve"),
        (&["--virtualenv", missing], "--virtualenv"),
    ];
    // Somewhere harmless to listen, should an option wrongly be accepted.
    let sock = format!("unix:{}", dir.path().join("never.sock").display());
    let mut failures = Vec::new();
    for (args, option) in cases {
        // These fail before any socket or Python is touched.
        let f = Server::builder("echo_app:app")
            .listen_args(["-l", sock.as_str()].into_iter().chain(args.iter().copied()), None)
            .run_to_exit(EXIT_WAIT);
        let code = f.status.code();
        if code != Some(1) || !f.stderr.contains(option) || f.stderr.contains("panicked") {
            failures.push(format!(
                "{args:?}: {}; stderr: {}",
                describe_status(&f.status),
                f.stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "options not refused with exit 1 naming them:\n{}",
        failures.join("\n")
    );
}

#[test]
fn bad_app_spec_names_app() {
    let f = Server::builder("echo_app:1x")
        .listen_args(Vec::<String>::new(), None)
        .run_to_exit(EXIT_WAIT);
    assert_failed(&f, Some(1), &["APP"]);
}

#[test]
fn unknown_option_is_a_usage_error() {
    let f = run("echo_app:app", &["--no-such-option"]);
    assert_failed(&f, Some(2), &["--no-such-option"]);
}

#[test]
fn factory_call_with_non_literal_arguments_is_refused() {
    let f = run("factory:create(__import__('os').getpid())", &[]);
    assert!(!f.status.success(), "{}", describe_status(&f.status));
    assert!(f.stderr.contains("factory"), "{}", f.stderr);
}

#[test]
fn call_and_factory_arguments_together_are_refused() {
    let f = run("factory:create('x')", &["--call"]);
    assert_failed(&f, Some(1), &["--call"]);
}

#[test]
fn port_in_use_is_one_clear_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let f = Server::builder("echo_app:app")
        .listen_args(["-l", addr.as_str()], None)
        .run_to_exit(EXIT_WAIT);
    assert_failed(&f, None, &[&format!("cannot listen on {addr}"), "in use"]);
    let lines: Vec<&str> = f.stderr.lines().filter(|l| l.contains(&addr)).collect();
    assert_eq!(lines.len(), 1, "{}", f.stderr);
    drop(taken);
}

#[test]
fn serving_line_reports_the_thread_count() {
    let s = Server::start("echo_app:app", &["-w", "3"]);
    s.expect_log(
        &format!("Serving with 3 app threads [pid {}]", s.pid()),
        Duration::from_secs(1),
    );
}

#[test]
fn factory_with_literal_arguments() {
    let s = Server::start("factory:create('x', n=2)", &[]);
    assert_eq!(s.get("/").text(), "created x 2");
}

#[test]
fn call_option_calls_the_attribute() {
    let s = Server::start("factory:make", &["--call"]);
    assert_eq!(s.get("/").text(), "made by --call");
}

#[test]
fn module_alone_prefers_application() {
    let s = Server::start("factory", &[]);
    assert_eq!(s.get("/").text(), "application");
}

#[test]
fn module_alone_falls_back_to_app() {
    let s = Server::start("echo_app", &[]);
    assert_eq!(s.get("/fallback").kv().at("PATH_INFO"), "/fallback");
}

#[test]
fn dotted_attribute_path() {
    let s = Server::start("factory:holder.inner", &[]);
    assert_eq!(s.get("/").text(), "nested attribute");
}

/// A virtualenv holding `zibai_venv_probe`, made by the Python zibai was
/// built against, or `None` (with the reason printed) where that Python
/// cannot make one.
fn make_venv(dir: &TempDir) -> Option<std::path::PathBuf> {
    let venv = dir.path().join("venv");
    let python = option_env!("ZIBAI_BUILD_PYTHON").unwrap_or("python3");
    let out = Command::new(python)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skipped: {python} -m venv failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("skipped: cannot run {python}: {e}");
            return None;
        }
    }
    let site = Command::new(venv.join("bin").join("python"))
        .args(["-c", "import site; print(site.getsitepackages()[0])"])
        .output()
        .expect("run the venv's python");
    let site = std::path::PathBuf::from(String::from_utf8(site.stdout).unwrap().trim());
    std::fs::write(site.join("zibai_venv_probe.py"), "VALUE = 'from the venv'\n").unwrap();
    Some(venv)
}

#[test]
fn virtualenv_option_makes_its_packages_importable() {
    let dir = TempDir::new("venv");
    let Some(venv) = make_venv(&dir) else { return };
    // The control: without the venv the app cannot load.
    let f = run("venv_app:app", &[]);
    assert_failed(&f, Some(4), &["zibai_venv_probe"]);
    let s = Server::start("venv_app:app", &["--virtualenv", venv.to_str().unwrap()]);
    assert_eq!(s.get("/").text(), "from the venv");
}

#[test]
fn virtual_env_variable_makes_its_packages_importable() {
    let dir = TempDir::new("venvenv");
    let Some(venv) = make_venv(&dir) else { return };
    let s = Server::builder("venv_app:app")
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .start();
    assert_eq!(s.get("/").text(), "from the venv");
}

/// The app runs as the virtualenv's own python would: its prefix and
/// executable, and no site-packages but its own (a venv made without
/// --system-site-packages does not see the base installation's packages, nor
/// run their .pth files).
#[test]
fn virtualenv_runs_as_its_own_python() {
    let dir = TempDir::new("venvsys");
    let Some(venv) = make_venv(&dir) else { return };
    let s = Server::start("venv_app:app", &["--virtualenv", venv.to_str().unwrap()]);
    let sys = s.get("/sys").text();
    let venv = venv.to_str().unwrap();
    let field = |name: &str| {
        let at = sys
            .find(&format!("\"{name}\": \""))
            .unwrap_or_else(|| panic!("{name} in {sys}"));
        let rest = &sys[at + name.len() + 5..];
        rest[..rest.find('"').unwrap()].to_string()
    };
    assert_eq!(field("prefix"), venv, "{sys}");
    assert_eq!(field("executable"), format!("{venv}/bin/python"), "{sys}");
    let path = &sys[sys.find("\"path\": [").expect("path") + 9..];
    let path = &path[..path.find(']').unwrap()];
    let sites: Vec<&str> = path
        .split(", ")
        .map(|p| p.trim_matches('"'))
        .filter(|p| p.ends_with("site-packages"))
        .collect();
    assert!(!sites.is_empty(), "{sys}");
    for site in sites {
        assert!(site.starts_with(venv), "{site} is outside the venv: {sys}");
    }
}

#[test]
fn virtualenv_of_another_python_is_refused_naming_both_versions() {
    let dir = TempDir::new("venvold");
    std::fs::write(dir.path().join("pyvenv.cfg"), "home = /usr/bin\nversion = 2.7.18\n").unwrap();
    let f = run("echo_app", &["--virtualenv", dir.path().to_str().unwrap()]);
    assert_failed(
        &f,
        Some(4),
        &["--virtualenv", "made by Python 2.7, but zibai-worker runs Python 3."],
    );
}

#[test]
fn a_directory_that_is_not_a_virtualenv_is_refused() {
    let dir = TempDir::new("novenv");
    let f = run("echo_app", &["--virtualenv", dir.path().to_str().unwrap()]);
    assert_failed(
        &f,
        Some(4),
        &["--virtualenv", "pyvenv.cfg", "is it a virtual environment?"],
    );
}

/// zibai-worker takes its configuration from zibai alone: run by hand, it
/// says so instead of reading a command line.
#[test]
fn zibai_worker_by_hand_says_it_is_started_by_zibai() {
    let out = Command::new(env!("CARGO_BIN_EXE_zibai-worker"))
        .arg("echo_app")
        .env_remove("ZIBAI_RESOLVED_CONFIG")
        .output()
        .expect("run zibai-worker");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("zibai-worker is started by zibai"), "{stderr}");
}

/// The binary finds libpython through the rpath set at build time, and
/// Python its standard library, with no LD_LIBRARY_PATH or PYTHONHOME.
#[test]
fn runs_with_an_empty_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_zibai"))
        .arg("--version")
        .env_clear()
        .output()
        .expect("run zibai");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("zibai "));
    let f = Server::builder("zibai_no_such_module:app")
        .env_clear()
        .run_to_exit(EXIT_WAIT);
    // Python started (the import was attempted and failed cleanly).
    assert_failed(&f, Some(4), &["ModuleNotFoundError"]);
}
