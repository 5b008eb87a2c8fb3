//! Operating the server: the pidfile, `--daemon`, systemd's notify socket
//! (READY, RELOADING, STOPPING, WATCHDOG) and socket activation, the USR2
//! binary upgrade, and `--watchfiles`.
//!
//! Most tests use the harness. Three kinds of run it cannot make have their
//! own small runner here ([`Proc`]): a server in another working directory
//! (`--watchfiles` watches it), one started through a shell that sets
//! `LISTEN_PID` to its own pid (socket activation), and `zibai --daemon`,
//! whose server leaves the harness's process group. Processes that escape
//! every process group we kill (a daemon, a master started by USR2 whose
//! parent exited) are killed on drop by a [`Strays`] guard.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{
    BIN, Client, Load, LoadMode, Server, Target, TempDir, WORKER_COMM, apps_dir, children, describe_status, fd_targets,
    proc_gone, proc_info, unique, wait_until,
};

/// How long workers (or a daemon) may take to boot.
const BOOT: Duration = Duration::from_secs(10);
/// How long a stop may take.
const STOP: Duration = Duration::from_secs(10);

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid the test just saw alive as a zibai process it
    // started (read from a pidfile or the server's log and checked in /proc).
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

/// The pid a pidfile names, if it holds `PID\n`.
fn pidfile_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.strip_suffix('\n')?.parse().ok()
}

fn is_zibai(pid: i32) -> bool {
    proc_info(pid).is_some_and(|p| !p.is_dead() && p.comm.starts_with("zibai"))
}

/// The session id of a process (`/proc/PID/stat` field 6).
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(3)?.parse().ok()
}

/// The `Umask:` line of `/proc/WHO/status`.
fn umask_of(who: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{who}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("Umask:"))
        .unwrap_or_else(|| panic!("no Umask in /proc/{who}/status"))
        .to_string()
}

/// The live workers of master `pid`.
fn workers_of(pid: i32) -> Vec<i32> {
    children(pid)
        .into_iter()
        .filter(|p| p.comm == WORKER_COMM)
        .map(|p| p.pid)
        .collect()
}

/// The pid in a `... pid=N` answer.
fn pid_in(text: &str) -> i32 {
    text.rsplit("pid=")
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"))
}

/// CLOCK_MONOTONIC in microseconds, the clock of `MONOTONIC_USEC`.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(r, 0);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// SIGKILLs, on drop, zibai processes that no process group we kill holds:
/// the pids given, the one a pidfile names, and their workers. A pid is
/// killed only while `/proc` shows it alive and named zibai, so a pid that
/// was reused meanwhile is left alone.
#[derive(Default)]
struct Strays {
    pids: Vec<i32>,
    pidfiles: Vec<PathBuf>,
}

impl Strays {
    fn pid(pid: i32) -> Strays {
        Strays {
            pids: vec![pid],
            pidfiles: Vec::new(),
        }
    }

    fn pidfile(path: &Path) -> Strays {
        Strays {
            pids: Vec::new(),
            pidfiles: vec![path.to_path_buf()],
        }
    }
}

impl Drop for Strays {
    fn drop(&mut self) {
        let mut pids = self.pids.clone();
        pids.extend(self.pidfiles.iter().filter_map(|p| pidfile_pid(p)));
        let workers: Vec<i32> = pids.iter().flat_map(|&p| workers_of(p)).collect();
        for pid in pids.into_iter().chain(workers) {
            if is_zibai(pid) {
                // SAFETY: just seen alive and named zibai: one of ours.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A runner for what the harness cannot start.

/// Output of a child, filled by a reader thread: (bytes, EOF seen).
type Captured = Arc<Mutex<(Vec<u8>, bool)>>;

fn capture(mut r: impl Read + Send + 'static) -> Captured {
    let c: Captured = Arc::default();
    let c2 = c.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            let n = r.read(&mut buf).unwrap_or(0);
            let mut d = c2.lock().unwrap();
            if n == 0 {
                d.1 = true;
                return;
            }
            d.0.extend_from_slice(&buf[..n]);
        }
    });
    c
}

fn text(c: &Captured) -> String {
    String::from_utf8_lossy(&c.lock().unwrap().0).into_owned()
}

/// A zibai (or a shell exec'ing one) in its own process group, killed with
/// its group on drop; its output is shown when the test fails.
struct Proc {
    child: Child,
    cmdline: String,
    stderr: Captured,
    stdout: Captured,
    status: Option<ExitStatus>,
}

/// `zibai ARGS` run in `dir`, with the harness's environment.
fn zibai_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    server_env(&mut cmd, dir);
    cmd
}

fn server_env(cmd: &mut Command, dir: &Path) {
    cmd.current_dir(dir);
    for k in [
        "SCRIPT_NAME",
        "VIRTUAL_ENV",
        "ZIBAI_LOG",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1");
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let cmdline = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}"));
        let stderr = capture(child.stderr.take().unwrap());
        let stdout = capture(child.stdout.take().unwrap());
        Proc {
            child,
            cmdline,
            stderr,
            stdout,
            status: None,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stderr(&self) -> String {
        text(&self.stderr)
    }

    fn count(&self, needle: &str) -> usize {
        self.stderr().matches(needle).count()
    }

    fn expect_log(&self, needle: &str, timeout: Duration) {
        assert!(
            wait_until(timeout, || self.stderr().contains(needle)),
            "{needle:?} not in the server's stderr within {timeout:?}"
        );
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let mut got = None;
        wait_until(timeout, || {
            got = self.child.try_wait().expect("waitpid");
            got.is_some()
        });
        self.status = got;
        got.unwrap_or_else(|| panic!("{} did not exit within {timeout:?}", self.cmdline))
    }

    /// Waits (bounded) until both pipes reached EOF, for the full output.
    fn wait_eof(&self, timeout: Duration) {
        wait_until(timeout, || {
            self.stderr.lock().unwrap().1 && self.stdout.lock().unwrap().1
        });
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            // SAFETY: kill(2) on the process group we created for the child,
            // which is not reaped yet, so the group id cannot be reused.
            unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
            self.status = self.child.wait().ok();
        }
        if std::thread::panicking() {
            self.wait_eof(Duration::from_secs(2));
            eprintln!(
                "\n--- command: {}\n--- exit status: {:?}\n--- stderr:\n{}\n--- stdout:\n{}\n--- end of output",
                self.cmdline,
                self.status,
                self.stderr(),
                text(&self.stdout)
            );
        }
    }
}

/// Hands `listener` to the child as `fd://N` (clears close-on-exec there).
fn pass_listener(cmd: &mut Command, listener: &TcpListener) -> String {
    let fd = listener.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // fcntl, which is async-signal-safe, on an fd open in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    format!("fd://{fd}")
}

// ---------------------------------------------------------------------------
// --pid

fn pidfile_mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn pidfile_names_the_single_process_and_is_removed_at_exit() {
    let dir = TempDir::new("pid");
    let file = dir.path().join("zibai.pid");
    let mut s = Server::builder("echo_app:app")
        .args(["--pid", file.to_str().unwrap()])
        .start();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{}\n", s.pid()));
    assert_eq!(pidfile_mode(&file), 0o644);
    assert_eq!(s.get("/").status, 200);
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(STOP);
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
    assert!(!file.exists(), "the pidfile is left behind");
    // Nothing else was left in the directory (the atomic write's temp file).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn pidfile_names_the_master_and_is_removed_at_exit() {
    let dir = TempDir::new("pid");
    let file = dir.path().join("zibai.pid");
    let mut s = Server::builder("echo_app:app")
        .args(["-p", "2", "--pid", file.to_str().unwrap()])
        .start();
    let workers = s.wait_workers(2, BOOT);
    assert_eq!(pidfile_pid(&file), Some(s.pid()), "workers: {workers:?}");
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(STOP);
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
    assert!(!file.exists(), "the pidfile is left behind");
}

#[test]
fn pidfile_of_a_running_zibai_refuses_a_second_server() {
    let dir = TempDir::new("pid");
    let file = dir.path().join("zibai.pid");
    let first = Server::builder("echo_app:app")
        .args(["-p", "1", "--pid", file.to_str().unwrap()])
        .start();
    let f = Server::builder("echo_app:app")
        .args(["-p", "1", "--pid", file.to_str().unwrap()])
        .run_to_exit(Duration::from_secs(10));
    assert!(!f.status.success(), "{}", describe_status(&f.status));
    assert!(
        f.stderr.contains(&file.display().to_string()) && f.stderr.contains(&first.pid().to_string()),
        "the refusal names neither the file nor the running pid:\n{}",
        f.stderr
    );
    assert!(!f.stderr.contains("Booting worker"), "{}", f.stderr);
    // The running server and its pidfile are untouched.
    assert_eq!(pidfile_pid(&file), Some(first.pid()));
    assert_eq!(first.get("/").status, 200);
}

#[test]
fn stale_pidfiles_are_replaced_with_a_warning() {
    // A pid that is certainly dead: a child we ran and reaped.
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let cases = [
        ("not a pid\n".to_string(), "does not hold a pid"),
        (format!("{dead}\n"), "is not running"),
        // Alive, but not a zibai: this test process.
        (format!("{}\n", std::process::id()), "is not zibai"),
    ];
    for (content, why) in cases {
        let dir = TempDir::new("pid");
        let file = dir.path().join("zibai.pid");
        std::fs::write(&file, &content).unwrap();
        let mut s = Server::builder("echo_app:app")
            .args(["--pid", file.to_str().unwrap()])
            .start();
        assert_eq!(pidfile_pid(&file), Some(s.pid()), "for a pidfile holding {content:?}");
        let warning = s
            .stderr()
            .lines()
            .find(|l| l.contains("[WARN]") && l.contains(why))
            .map(str::to_string);
        let warning = warning.unwrap_or_else(|| panic!("no warning {why:?} for a pidfile holding {content:?}"));
        assert!(warning.contains(&file.display().to_string()), "{warning}");
        s.signal(libc::SIGTERM);
        assert!(s.wait_exit(STOP).success());
        assert!(!file.exists());
    }
}

#[test]
fn pidfile_that_no_longer_names_the_server_is_left_alone_at_exit() {
    let dir = TempDir::new("pid");
    let file = dir.path().join("zibai.pid");
    let mut s = Server::builder("echo_app:app")
        .args(["-p", "1", "--pid", file.to_str().unwrap()])
        .start();
    // Someone else took the name over meanwhile.
    std::fs::write(&file, "1\n").unwrap();
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(STOP);
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "1\n");
}

// ---------------------------------------------------------------------------
// --daemon

/// Runs `zibai APP --daemon --pid FILE -l unix:SOCK ARGS` in tests/apps and
/// waits for the command itself to exit.
fn run_daemon(app: &str, args: &[&str], pidfile: &Path, sock: &Path) -> (Proc, ExitStatus) {
    let sock_arg = format!("unix:{}", sock.display());
    let mut all = vec![app, "--daemon", "--pid", pidfile.to_str().unwrap(), "-l", &sock_arg];
    all.extend_from_slice(args);
    let mut p = Proc::spawn(zibai_in(&apps_dir(), &all));
    let st = p.wait_exit(Duration::from_secs(20));
    p.wait_eof(Duration::from_secs(2));
    (p, st)
}

fn daemon_serves_then_stops(mode: &[&str], want_workers: usize) {
    let dir = TempDir::new("daemon");
    let file = dir.path().join("d.pid");
    let sock = dir.path().join("d.sock");
    let _strays = Strays::pidfile(&file);
    let (launcher, st) = run_daemon("echo_app:app", mode, &file, &sock);
    assert_eq!(
        st.code(),
        Some(0),
        "{}; stderr:\n{}",
        describe_status(&st),
        launcher.stderr()
    );
    // No --error-log: the terminal is told, before it is left.
    assert!(
        launcher
            .stderr()
            .contains("warning: --daemon without --error-log: the log goes nowhere once detached"),
        "{}",
        launcher.stderr()
    );
    // Ready means ready: the pidfile is there and a request is served at
    // once, with no polling.
    let pid = pidfile_pid(&file).expect("a pidfile naming the daemon");
    assert!(is_zibai(pid), "the daemon {pid} is not running: {:?}", proc_info(pid));
    let r = Client::connect(&Target::Unix(sock.clone())).request(b"GET /d HTTP/1.0\r\n\r\n");
    assert_eq!((r.status, r.kv().at("PATH_INFO")), (200, "/d"));
    assert_eq!(workers_of(pid).len(), want_workers, "{:?}", children(pid));
    // Detached: another session and process group; the working directory
    // (the app was imported from it) and the umask kept; stdio on /dev/null.
    let me = session_of(std::process::id() as i32).unwrap();
    assert_ne!(session_of(pid), Some(me), "the daemon is still in our session");
    // Nor in the launcher's process group, which a terminal would signal.
    assert_ne!(proc_info(pid).unwrap().pgrp, launcher.pid());
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), apps_dir());
    assert_eq!(umask_of(&pid.to_string()), umask_of("self"));
    let fds = fd_targets(pid);
    for fd in 0..3 {
        assert!(
            fds.iter().any(|(n, t)| *n == fd && t == "/dev/null"),
            "fd {fd} of the daemon is not /dev/null: {fds:?}"
        );
    }
    kill(pid, libc::SIGTERM);
    assert!(
        wait_until(STOP, || proc_gone(pid)),
        "the daemon did not exit on SIGTERM"
    );
    assert!(
        wait_until(Duration::from_secs(2), || !file.exists()),
        "the pidfile is left behind"
    );
    assert!(!sock.exists(), "the socket file is left behind");
}

#[test]
fn daemon_returns_once_the_workers_serve() {
    daemon_serves_then_stops(&["-p", "2"], 2);
}

#[test]
fn daemon_single_process_returns_once_serving() {
    daemon_serves_then_stops(&["-p", "0"], 0);
}

/// USR2 to a daemon: the new master stays the old one's child (it used to
/// daemonize again, so each master took the other for dead, and the old
/// one's exit unlinked the Unix socket the new one served on), and after
/// WINCH and TERM the new master owns the pidfile and the socket.
#[test]
fn daemon_upgrade_hands_over() {
    let dir = TempDir::new("daemonup");
    let file = dir.path().join("d.pid");
    let file2 = upgrade_pidfile(&file);
    let sock = dir.path().join("d.sock");
    let _strays = Strays::pidfile(&file);
    let _strays2 = Strays::pidfile(&file2);
    let (launcher, st) = run_daemon("echo_app:app", &["-p", "1"], &file, &sock);
    assert_eq!(st.code(), Some(0), "{}", launcher.stderr());
    let old = pidfile_pid(&file).expect("a pidfile naming the daemon");
    kill(old, libc::SIGUSR2);
    let mut new = None;
    assert!(
        wait_until(BOOT, || {
            new = pidfile_pid(&file2).filter(|&p| workers_of(p).len() == 1);
            new.is_some()
        }),
        "no new master serving: {:?}",
        children(old)
    );
    let new = new.unwrap();
    assert_eq!(
        proc_info(new).map(|p| p.ppid),
        Some(old),
        "the new master is not the old one's child"
    );
    kill(old, libc::SIGWINCH);
    kill(old, libc::SIGTERM);
    assert!(wait_until(STOP, || proc_gone(old)), "the old master did not exit");
    assert!(
        wait_until(STOP, || pidfile_pid(&file) == Some(new)),
        "the new master did not take the pidfile over"
    );
    let r = Client::connect(&Target::Unix(sock.clone())).request(b"GET /after HTTP/1.0\r\n\r\n");
    assert_eq!((r.status, r.kv().at("PATH_INFO")), (200, "/after"));
    stop_new_master(new);
}

#[test]
fn daemon_that_cannot_load_the_app_fails_the_command() {
    for mode in ["0", "1"] {
        let dir = TempDir::new("daemon");
        let file = dir.path().join("d.pid");
        let sock = dir.path().join("d.sock");
        let _strays = Strays::pidfile(&file);
        let (launcher, st) = run_daemon("import_boom:app", &["-p", mode], &file, &sock);
        assert_eq!(st.code(), Some(1), "-p {mode}: {}", describe_status(&st));
        assert!(
            launcher.stderr().contains("exited before it was ready"),
            "-p {mode}: {}",
            launcher.stderr()
        );
        assert!(
            wait_until(Duration::from_secs(5), || !file.exists()),
            "-p {mode}: the pidfile of the dead daemon is left behind"
        );
    }
}

/// A log file the daemon could not open was reported nowhere (the daemon's
/// stderr is /dev/null): the command said only that the daemon exited. It
/// is checked before detaching now; and a daemon that dies later points at
/// its error log.
#[test]
fn daemon_reports_an_unusable_log_file_on_the_terminal() {
    let dir = TempDir::new("daemon");
    let file = dir.path().join("d.pid");
    let sock = dir.path().join("d.sock");
    let _strays = Strays::pidfile(&file);
    let bad = dir.path().join("no-such-dir").join("error.log");
    let (launcher, st) = run_daemon("echo_app:app", &["--error-log", bad.to_str().unwrap()], &file, &sock);
    assert_eq!(st.code(), Some(1), "{}", describe_status(&st));
    let err = launcher.stderr();
    assert!(
        err.contains(&format!("cannot open log file {}", bad.display())),
        "{err}"
    );
    assert!(!file.exists(), "a daemon started");
    // The app fails to load after detaching: the command names the log.
    let log = dir.path().join("error.log");
    let (launcher, st) = run_daemon("import_boom:app", &["--error-log", log.to_str().unwrap()], &file, &sock);
    assert_eq!(st.code(), Some(1), "{}", describe_status(&st));
    assert!(
        launcher
            .stderr()
            .contains(&format!("exited before it was ready; see {}", log.display())),
        "{}",
        launcher.stderr()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("boom at import time"), "{text}");
    assert!(
        !launcher.stderr().contains("--daemon without --error-log"),
        "{}",
        launcher.stderr()
    );
}

// ---------------------------------------------------------------------------
// systemd: NOTIFY_SOCKET

/// The test's end of `NOTIFY_SOCKET`.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
    _dir: TempDir,
    /// Everything received so far, with when.
    got: Vec<(Instant, String)>,
}

impl Notify {
    fn new() -> Notify {
        let dir = TempDir::new("notify");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        Notify {
            sock,
            path,
            _dir: dir,
            got: Vec::new(),
        }
    }

    fn path(&self) -> String {
        self.path.to_str().unwrap().to_string()
    }

    /// Receives one message, or `None` at the deadline.
    fn recv_until(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.sock.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.got.push((Instant::now(), m.clone()));
                Some(m)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => None,
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// The next message that is not a watchdog ping; panics at the deadline.
    fn next_state(&mut self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv_until(deadline) {
                Some(m) if m == "WATCHDOG=1\n" => {}
                Some(m) => return m,
                None => panic!(
                    "no {what} message within {timeout:?}; got so far: {:?}",
                    self.messages()
                ),
            }
        }
    }

    /// Receives until a message has the line `line`; panics at the deadline.
    fn expect_line(&mut self, line: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv_until(deadline) {
                Some(m) if m.lines().any(|l| l == line) => return m,
                Some(_) => {}
                None => panic!("no {line:?} within {timeout:?}; got: {:?}", self.messages()),
            }
        }
    }

    /// What is still queued; call once every sender has exited.
    fn rest(&mut self) -> Vec<String> {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let mut out = Vec::new();
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    }

    fn messages(&self) -> Vec<&str> {
        self.got.iter().map(|(_, m)| m.as_str()).collect()
    }
}

fn lines(m: &str) -> Vec<&str> {
    m.lines().collect()
}

/// TERM: STOPPING is announced, the server exits 0, and nothing follows.
fn term_announces_stopping_then_exits(s: &mut Server, n: &mut Notify) {
    s.signal(libc::SIGTERM);
    let stopping = n.next_state("STOPPING", STOP);
    assert_eq!(lines(&stopping), ["STOPPING=1", "STATUS=stopping"]);
    let st = s.wait_exit(STOP);
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
    assert_eq!(n.rest(), Vec::<String>::new(), "messages after STOPPING");
}

#[test]
fn notify_master_ready_reloading_ready_stopping() {
    let mut n = Notify::new();
    let mut s = Server::builder("pids:app")
        .args(["-p", "2"])
        .env("NOTIFY_SOCKET", n.path())
        .start();
    let ready = n.next_state("READY", BOOT);
    assert_eq!(lines(&ready), ["READY=1", "STATUS=2 workers"]);
    let old = s.wait_workers(2, BOOT);

    let before = monotonic_usec();
    s.signal(libc::SIGHUP);
    let reloading = n.next_state("RELOADING", BOOT);
    let after = monotonic_usec();
    let l = lines(&reloading);
    assert_eq!(l.len(), 2, "{reloading:?}");
    assert_eq!(l[0], "RELOADING=1");
    let usec: u64 = l[1]
        .strip_prefix("MONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(
        (before..=after).contains(&usec),
        "MONOTONIC_USEC {usec} is not between {before} and {after}"
    );

    // READY again only once the reload is over: both old workers are gone
    // (reaped before the message was sent) and two new ones serve.
    let ready = n.next_state("READY after the reload", BOOT);
    assert_eq!(lines(&ready), ["READY=1", "STATUS=2 workers"]);
    for pid in &old {
        assert!(proc_gone(*pid), "old worker {pid} still runs at READY");
    }
    let new = s.wait_workers(2, BOOT);
    assert!(new.iter().all(|p| !old.contains(p)), "old {old:?}, new {new:?}");
    let pid = pid_in(&s.get("/").text());
    assert!(new.contains(&pid), "answered by {pid}, not by a new worker {new:?}");

    term_announces_stopping_then_exits(&mut s, &mut n);
}

#[test]
fn notify_single_process_ready_then_stopping() {
    let mut n = Notify::new();
    let mut s = Server::builder("echo_app:app")
        .args(["-w", "3"])
        .env("NOTIFY_SOCKET", n.path())
        .start();
    let ready = n.next_state("READY", BOOT);
    assert_eq!(lines(&ready), ["READY=1", "STATUS=serving with 3 threads"]);
    assert_eq!(s.get("/").status, 200);
    term_announces_stopping_then_exits(&mut s, &mut n);
}

#[test]
fn notify_socket_in_the_abstract_namespace() {
    // sd_notify(3): a NOTIFY_SOCKET starting with '@' names a socket in the
    // abstract namespace.
    let name = format!("zibai-it-notify-{}-{}", std::process::id(), unique());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let s = Server::builder("echo_app:app")
        .args(["-w", "2"])
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .start();
    let mut buf = [0u8; 4096];
    let got = sock
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(
        matches!(&got, Ok(m) if m.starts_with("READY=1\n")),
        "no READY=1 on @{name}: {got:?}; stderr:\n{}",
        s.stderr()
    );
}

/// Collects `WATCHDOG=1` pings for `window` after READY; returns their
/// count and the longest gap between two (or from READY to the first).
fn watchdog_pings(n: &mut Notify, window: Duration) -> (usize, Duration) {
    n.expect_line("READY=1", BOOT);
    let start = Instant::now();
    let deadline = start + window;
    let mut last = start;
    let mut count = 0;
    let mut longest = Duration::ZERO;
    while let Some(m) = n.recv_until(deadline) {
        if m == "WATCHDOG=1\n" {
            let now = Instant::now();
            longest = longest.max(now - last);
            last = now;
            count += 1;
        }
    }
    (count, longest)
}

fn watchdog_case(args: &[&str]) {
    let mut n = Notify::new();
    let _s = Server::builder("echo_app:app")
        .args(args.iter().copied())
        .env("NOTIFY_SOCKET", n.path())
        .env("WATCHDOG_USEC", "200000")
        .start();
    let (count, longest) = watchdog_pings(&mut n, Duration::from_secs(1));
    // Pinged at half the interval: about 10 in a second. systemd kills a
    // service whose pings are 200 ms apart.
    assert!(count >= 5, "{count} WATCHDOG=1 in 1 s: {:?}", n.messages());
    assert!(
        longest < Duration::from_millis(190),
        "{longest:?} between two WATCHDOG=1 with WATCHDOG_USEC=200000"
    );
}

#[test]
fn watchdog_is_pinged_by_the_master() {
    watchdog_case(&["-p", "1"]);
}

#[test]
fn watchdog_is_pinged_in_single_process_mode() {
    watchdog_case(&[]);
}

#[test]
fn watchdog_for_another_pid_is_not_pinged() {
    let mut n = Notify::new();
    let _s = Server::builder("echo_app:app")
        .args(["-p", "1"])
        .env("NOTIFY_SOCKET", n.path())
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .start();
    // Five intervals' worth of silence: a ping would come every 100 ms.
    let (count, _) = watchdog_pings(&mut n, Duration::from_millis(500));
    assert_eq!(count, 0, "{:?}", n.messages());
}

/// Regression: a new master started by USR2 inherited WATCHDOG_PID, the
/// old master's pid, took the watchdog for someone else's and never
/// pinged: systemd killed the service one interval after the old master
/// exited.
#[test]
fn watchdog_is_pinged_by_the_new_master_after_usr2() {
    let dir = TempDir::new("upwatchdog");
    let sock = dir.path().join("s.sock");
    let listen = format!("unix:{}", sock.display());
    let mut n = Notify::new();
    let mut cmd = Command::new("/bin/sh");
    // As systemd starts it: WATCHDOG_PID is the (first) master's pid.
    cmd.arg("-c")
        .arg(r#"WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@""#)
        .arg(BIN)
        .args(["pids:app", "-p", "1", "-l", &listen]);
    server_env(&mut cmd, &apps_dir());
    cmd.env("NOTIFY_SOCKET", n.path()).env("WATCHDOG_USEC", "200000");
    let mut old = Proc::spawn(cmd);
    n.expect_line("READY=1", BOOT);
    kill(old.pid(), libc::SIGUSR2);
    old.expect_log("New master ", STOP);
    let new_master = new_master_in(&old.stderr());
    let _strays = Strays::pid(new_master);
    n.expect_line("READY=1", BOOT);
    kill(old.pid(), libc::SIGWINCH);
    kill(old.pid(), libc::SIGTERM);
    let st = old.wait_exit(STOP);
    assert_eq!(st.code(), Some(0), "the old master: {}", describe_status(&st));
    n.expect_line(&format!("MAINPID={new_master}"), STOP);
    // The new master alone now: pinged at half the interval.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut pings = 0;
    while let Some(m) = n.recv_until(deadline) {
        pings += usize::from(m == "WATCHDOG=1\n");
    }
    assert!(
        pings >= 5,
        "{pings} WATCHDOG=1 from the new master in 1 s: {:?}",
        n.messages()
    );
}

// ---------------------------------------------------------------------------
// systemd: socket activation

/// Runs `zibai ARGS` through `sh`, so that `LISTEN_PID` is the server's own
/// pid, with `fds` as fds 3, 4... and `LISTEN_FDS` set to how many.
fn socket_activated(fds: &[RawFd], args: &[&str]) -> Proc {
    // Copies at 10 and above, so that placing them at 3.. in the child
    // cannot overwrite one not yet placed.
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|&fd| {
            // SAFETY: F_DUPFD_CLOEXEC on an fd the caller keeps open; the
            // result is a new fd that we own.
            let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
            assert!(new >= 10, "dup: {}", io::Error::last_os_error());
            // SAFETY: `new` was just created and nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(new) }
        })
        .collect();
    let raw: Vec<RawFd> = high.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#)
        .arg(BIN)
        .args(args);
    server_env(&mut cmd, &apps_dir());
    cmd.env("LISTEN_FDS", fds.len().to_string());
    // SAFETY: runs in the forked child before exec and only calls dup2,
    // which is async-signal-safe, on fds open in the child; dup2 leaves the
    // new fd without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &fd) in raw.iter().enumerate() {
                if libc::dup2(fd, 3 + i as RawFd) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let p = Proc::spawn(cmd);
    drop(high);
    p
}

#[test]
fn socket_activation_serves_on_the_passed_socket_and_ignores_listen() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let p = socket_activated(&[listener.as_raw_fd()], &["echo_app:app", "-l", "127.0.0.1:1"]);
    drop(listener);
    p.expect_log("Serving with", BOOT);
    p.expect_log(
        "Using 1 sockets passed by systemd (--listen is ignored)",
        Duration::from_secs(1),
    );
    assert!(!p.stderr().contains("127.0.0.1:1\n"), "{}", p.stderr());
    let r = Client::connect(&Target::Tcp(addr)).request(b"GET /act HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    let kv = r.kv();
    assert_eq!(kv.at("PATH_INFO"), "/act");
    assert_eq!(kv.at("SERVER_PORT"), addr.port().to_string());
}

#[test]
fn socket_activation_with_two_sockets_and_workers() {
    let dir = TempDir::new("act");
    let path = dir.path().join("act.sock");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let addr = tcp.local_addr().unwrap();
    let p = socket_activated(
        &[tcp.as_raw_fd(), unix.as_raw_fd()],
        &["pids:app", "-p", "2", "-l", "127.0.0.1:1"],
    );
    drop((tcp, unix));
    p.expect_log("Using 2 sockets passed by systemd (--listen is ignored)", BOOT);
    let mut workers = Vec::new();
    assert!(
        wait_until(BOOT, || {
            workers = workers_of(p.pid());
            workers.len() == 2
                && workers
                    .iter()
                    .all(|w| p.stderr().contains(&format!("Worker {w} booted")))
        }),
        "two workers did not boot: {:?}",
        children(p.pid())
    );
    for target in [Target::Tcp(addr), Target::Unix(path.clone())] {
        let r = Client::connect(&target).request(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(r.status, 200, "{target:?}");
        assert!(
            workers.contains(&pid_in(&r.text())),
            "{target:?}: {r:?}, workers {workers:?}"
        );
    }
}

#[test]
fn socket_activation_refuses_an_fd_that_is_not_a_socket() {
    let dir = TempDir::new("act");
    let file = std::fs::File::create(dir.path().join("plain")).unwrap();
    let mut p = socket_activated(&[file.as_raw_fd()], &["echo_app:app", "-l", "127.0.0.1:1"]);
    let st = p.wait_exit(Duration::from_secs(10));
    p.wait_eof(Duration::from_secs(2));
    assert!(!st.success(), "{}", describe_status(&st));
    let err = p.stderr();
    assert!(err.contains("LISTEN_FDS") && err.contains("not a socket"), "{err}");
    assert!(!err.contains("Serving with"), "{err}");
}

#[test]
fn socket_activation_for_another_pid_is_ignored() {
    // LISTEN_PID names someone else: the variables are not for us, and the
    // server listens where -l says (the harness's fd://N).
    let s = Server::builder("echo_app:app")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .start();
    assert!(!s.stderr().contains("passed by systemd"), "{}", s.stderr());
    assert_eq!(s.get("/").status, 200);
}

// ---------------------------------------------------------------------------
// USR2: binary upgrade

/// The pid in an old master's `New master N started` log line.
fn new_master_in(log: &str) -> i32 {
    log.lines()
        .find_map(|l| l.split("New master ").nth(1)?.split(' ').next()?.parse().ok())
        .expect("the new master's pid in the log")
}

/// Sends USR2 to the master `s` (whose workers are `old`, whose pidfile is
/// `file`) and waits until the new master's two workers booted. Returns the
/// new master's pid, its workers, and a guard that kills them on drop (once
/// the old master is gone, nothing else would).
fn upgrade(s: &Server, old: &[i32], file: &Path) -> (i32, Vec<i32>, Strays) {
    let old_master = s.pid();
    s.signal(libc::SIGUSR2);
    s.expect_log("Received SIGUSR2: starting a new master from the binary on disk", STOP);
    s.expect_log("New master ", STOP);
    let new_master = new_master_in(&s.stderr());
    let strays = Strays::pid(new_master);
    assert!(
        s.stderr().contains(&format!(
            "New master {new_master} started; WINCH then TERM this one ({old_master}) to finish"
        )),
        "{}",
        s.stderr()
    );
    s.expect_log(&format!("Started by master {old_master} (binary upgrade)"), BOOT);
    assert_eq!(proc_info(new_master).map(|p| p.ppid), Some(old_master));
    // Both masters serve, each with two workers, on the same sockets.
    let mut new = Vec::new();
    assert!(
        wait_until(BOOT, || {
            new = workers_of(new_master);
            new.len() == 2 && new.iter().all(|&w| s.booted(w))
        }),
        "the new master's workers did not boot: {:?}",
        children(new_master)
    );
    assert_eq!(pidfile_pid(&upgrade_pidfile(file)), Some(new_master));
    assert_eq!(pidfile_pid(file), Some(old_master));
    assert_eq!(s.workers(), old, "the old master's workers changed");
    (new_master, new, strays)
}

/// Sends TERM to the master a USR2 started and waits until it is gone.
fn stop_new_master(pid: i32) {
    kill(pid, libc::SIGTERM);
    assert!(wait_until(STOP, || proc_gone(pid)), "the new master did not exit");
}

/// Sends WINCH to the old master `s` and waits until its workers `old` exited.
fn winch(s: &Server, old: &[i32]) {
    s.signal(libc::SIGWINCH);
    s.expect_log(
        "Received SIGWINCH: stopping this master's workers; the new master serves",
        STOP,
    );
    assert!(
        wait_until(STOP, || old.iter().all(|&w| proc_gone(w))),
        "the old workers did not stop: {:?}",
        children(s.pid())
    );
}

fn upgrade_pidfile(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".2");
    PathBuf::from(p)
}

/// The new master reads the old one's command line in the directory the
/// old one was started in, not the one its `--chdir` moved it to: a
/// relative `--chdir` (here `..`, with the app imported as `apps.pids`)
/// used to be applied twice, and the new master's workers could not import
/// the app.
#[test]
fn usr2_upgrade_with_a_relative_chdir() {
    let dir = TempDir::new("upchdir");
    let file = dir.path().join("m.pid");
    let mut s = Server::builder("apps.pids:app")
        .args(["-p", "2", "--chdir", "..", "--pid", file.to_str().unwrap()])
        .start();
    let old = s.wait_workers(2, BOOT);
    let (new_master, _new, _strays) = upgrade(&s, &old, &file);
    assert_eq!(
        std::fs::read_link(format!("/proc/{new_master}/cwd")).unwrap(),
        apps_dir().parent().unwrap()
    );
    stop_new_master(new_master);
    s.signal(libc::SIGTERM);
    s.wait_exit(STOP);
}

#[test]
fn usr2_upgrade_hands_over_without_a_failed_request() {
    let dir = TempDir::new("upgrade");
    let file = dir.path().join("m.pid");
    let file2 = upgrade_pidfile(&file);
    let mut n = Notify::new();
    let mut s = Server::builder("pids:app")
        .args(["-p", "2", "--pid", file.to_str().unwrap()])
        .env("NOTIFY_SOCKET", n.path())
        .start();
    let old_master = s.pid();
    let old = s.wait_workers(2, BOOT);
    n.expect_line("READY=1", BOOT);
    let load = Load::start_paced(
        s.addr(),
        "/",
        &[LoadMode::Fresh, LoadMode::Fresh],
        Duration::from_millis(10),
    );
    assert!(load.wait_ok(20, Duration::from_secs(5)), "the load got no answers");

    let (new_master, new, _strays) = upgrade(&s, &old, &file);
    // The new master is ready too, and says so.
    n.expect_line("READY=1", BOOT);
    assert!(!s.stderr().contains("--listen changed"), "{}", s.stderr());

    winch(&s, &old);
    // Only the new workers answer now.
    for _ in 0..4 {
        let pid = pid_in(&s.get("/").text());
        assert!(new.contains(&pid), "answered by {pid}, not by a new worker {new:?}");
    }
    let ok_before_term = load.ok();

    s.signal(libc::SIGTERM);
    let st = s.wait_exit(STOP);
    assert_eq!(st.code(), Some(0), "the old master: {}", describe_status(&st));
    // At once: the old master handed the name over as it exited (the file
    // used to be missing until the new master's next tick).
    assert_eq!(
        pidfile_pid(&file),
        Some(new_master),
        "no pidfile right after the old master exited"
    );
    s.expect_log(
        &format!("The old master {old_master} exited; this master takes over"),
        STOP,
    );
    assert!(
        wait_until(STOP, || pidfile_pid(&file) == Some(new_master) && !file2.exists()),
        "the pidfile was not taken over: {:?} / {:?}",
        std::fs::read_to_string(&file),
        std::fs::read_to_string(&file2)
    );
    n.expect_line(&format!("MAINPID={new_master}"), STOP);
    assert_eq!(workers_of(new_master), new, "the new master's workers changed");
    assert!(
        load.wait_ok(ok_before_term + 20, Duration::from_secs(5)),
        "the load stalled after the old master exited"
    );
    let report = load.stop();
    assert_eq!(report.failed, 0, "failed requests: {:#?}", report.failures);
    let served: BTreeSet<i32> = report.by_pid.keys().copied().collect();
    assert!(
        old.iter().any(|p| served.contains(p)) && new.iter().any(|p| served.contains(p)),
        "answered by {served:?}; old workers {old:?}, new {new:?}"
    );
    assert!(
        served.iter().all(|p| old.contains(p) || new.contains(p)),
        "answered by {served:?}"
    );

    // The new master stops like any master, and removes the pidfile.
    stop_new_master(new_master);
    assert!(new.iter().all(|&w| proc_gone(w)), "new workers outlived their master");
    assert!(
        wait_until(Duration::from_secs(2), || !file.exists()),
        "the pidfile is left behind"
    );
    // Both masters said goodbye: the old one at its TERM, the new one now.
    assert!(
        wait_until(Duration::from_secs(2), || s
            .log_count("Shutting down: all workers exited")
            == 2),
        "{}",
        s.stderr()
    );
}

#[test]
fn usr2_upgrade_rolls_back_when_the_new_master_is_stopped() {
    // After WINCH the old master has no workers; stopping the new master
    // instead of the old one must bring the old master's workers back.
    let dir = TempDir::new("upgrade");
    let file = dir.path().join("m.pid");
    let file2 = upgrade_pidfile(&file);
    let path = dir.path().join("u.sock");
    let s = Server::builder("pids:app")
        .args(["-p", "2", "--pid", file.to_str().unwrap()])
        .extra_listen(&[&format!("unix:{}", path.display())])
        .start();
    let old = s.wait_workers(2, BOOT);
    let load = Load::start_paced(s.addr(), "/", &[LoadMode::Fresh], Duration::from_millis(10));
    assert!(load.wait_ok(10, Duration::from_secs(5)), "the load got no answers");
    let (new_master, new, _strays) = upgrade(&s, &old, &file);
    winch(&s, &old);

    kill(new_master, libc::SIGTERM);
    s.expect_log(
        &format!("The new master {new_master} exited normally; this master keeps serving"),
        STOP,
    );
    assert!(proc_gone(new_master));
    assert!(new.iter().all(|&w| proc_gone(w)), "new workers outlived their master");
    let back = s.wait_workers(2, BOOT);
    assert!(
        back.iter().all(|p| !old.contains(p) && !new.contains(p)),
        "old {old:?}, new {new:?}, now {back:?}"
    );
    // The pidfile is the old master's again, and the new one's is gone.
    assert_eq!(pidfile_pid(&file), Some(s.pid()));
    assert!(!file2.exists(), "{} is left behind", file2.display());
    // The new master left the unix socket, which the old one still serves on.
    let r = Client::connect(&Target::Unix(path.clone())).request(b"GET / HTTP/1.0\r\n\r\n");
    assert!(back.contains(&pid_in(&r.text())), "{r:?}");
    let ok_now = load.ok();
    assert!(
        load.wait_ok(ok_now + 10, Duration::from_secs(5)),
        "the load stalled after the rollback"
    );
    let report = load.stop();
    assert_eq!(report.failed, 0, "failed requests: {:#?}", report.failures);
    assert!(
        back.iter().any(|p| report.by_pid.contains_key(p)),
        "the old master's new workers answered nothing: {:?}",
        report.by_pid
    );
}

/// Regression (found by review): a HUP to the old master after WINCH
/// (systemd still sees it as the service until its TERM: `systemctl
/// reload`, or --watchfiles) brought its workers back beside the new
/// master's.
#[test]
fn usr2_upgrade_a_reload_after_winch_keeps_the_old_master_idle() {
    let dir = TempDir::new("upgrade");
    let file = dir.path().join("m.pid");
    let s = Server::builder("pids:app")
        .args(["-p", "2", "--pid", file.to_str().unwrap()])
        .start();
    let old = s.wait_workers(2, BOOT);
    let (new_master, new, _strays) = upgrade(&s, &old, &file);
    winch(&s, &old);
    let booted = s.log_count("Booting worker");
    s.signal(libc::SIGHUP);
    s.expect_log("Received SIGHUP", STOP);
    // Workers would be spawned at once; give it a few ticks.
    let respawned = wait_until(Duration::from_secs(2), || {
        s.log_count("Booting worker") > booted || !s.workers().is_empty()
    });
    assert!(!respawned, "the old master started workers again:\n{}", s.stderr());
    assert_eq!(workers_of(new_master), new, "the new master's workers changed");
}

#[test]
fn usr2_upgrade_new_master_removes_the_unix_socket_at_exit() {
    // Without an upgrade the master removes the socket file it created at
    // exit. After a handover the new master owns the socket: once the old
    // master is gone, nobody else will remove the file.
    let dir = TempDir::new("upgrade");
    let file = dir.path().join("m.pid");
    let path = dir.path().join("u.sock");
    let mut s = Server::builder("pids:app")
        .args(["-p", "2", "--pid", file.to_str().unwrap()])
        .extra_listen(&[&format!("unix:{}", path.display())])
        .start();
    let old = s.wait_workers(2, BOOT);
    let (new_master, new, _strays) = upgrade(&s, &old, &file);
    winch(&s, &old);
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(STOP).success());
    s.expect_log(
        &format!("The old master {} exited; this master takes over", s.pid()),
        STOP,
    );
    let r = Client::connect(&Target::Unix(path.clone())).request(b"GET / HTTP/1.0\r\n\r\n");
    assert!(new.contains(&pid_in(&r.text())), "{r:?}");
    stop_new_master(new_master);
    assert!(!path.exists(), "{} is left behind by the new master", path.display());
}

/// The new master serves on the sockets it inherits, whatever its own
/// `listen` says (as gunicorn's does): when the configuration changed that,
/// it says the change needs a restart. It used to say nothing.
#[test]
fn usr2_upgrade_warns_that_a_changed_listen_needs_a_restart() {
    let dir = TempDir::new("uplisten");
    let file = dir.path().join("m.pid");
    let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let conf = dir.path().join("zibai.toml");
    let write_conf = |sock: &Path| std::fs::write(&conf, format!("listen = [\"unix:{}\"]\n", sock.display())).unwrap();
    write_conf(&a);
    let mut s = Server::builder("pids:app")
        .args(["-p", "2", "--pid", file.to_str().unwrap(), "-c", conf.to_str().unwrap()])
        .listen_args(Vec::<String>::new(), Some(Target::Unix(a.clone())))
        .start();
    let old = s.wait_workers(2, BOOT);
    write_conf(&b);
    let (new_master, new, _strays) = upgrade(&s, &old, &file);
    s.expect_log(
        &format!(
            "--listen changed (unix:{} -> unix:{}); this master serves on the sockets it inherited, \
             so the new value applies only after a restart",
            a.display(),
            b.display()
        ),
        BOOT,
    );
    winch(&s, &old);
    let r = Client::connect(&Target::Unix(a.clone())).request(b"GET / HTTP/1.0\r\n\r\n");
    assert!(new.contains(&pid_in(&r.text())), "{r:?}");
    assert!(!b.exists(), "the new master bound {}", b.display());
    stop_new_master(new_master);
    s.signal(libc::SIGTERM);
    s.wait_exit(STOP);
}

/// A socket file systemd (or fd://N) handed the first master is not the
/// new master's to remove: it took over every unix socket file after a
/// USR2, and removed the socket unit's file at its exit (clients then got
/// ENOENT until the socket unit was restarted).
#[test]
fn usr2_upgrade_leaves_a_socket_file_it_was_handed() {
    let dir = TempDir::new("upgradeact");
    let file = dir.path().join("m.pid");
    let path = dir.path().join("act.sock");
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let pid_arg = file.to_str().unwrap().to_string();
    let mut old = socket_activated(
        &[unix.as_raw_fd()],
        &["pids:app", "-p", "1", "-l", "127.0.0.1:1", "--pid", &pid_arg],
    );
    drop(unix);
    old.expect_log("Using 1 sockets passed by systemd", BOOT);
    assert!(
        wait_until(BOOT, || pidfile_pid(&file) == Some(old.pid())),
        "no pidfile: {}",
        old.stderr()
    );
    kill(old.pid(), libc::SIGUSR2);
    old.expect_log("New master ", STOP);
    let new_master = new_master_in(&old.stderr());
    let _strays = Strays::pid(new_master);
    assert!(
        wait_until(BOOT, || pidfile_pid(&upgrade_pidfile(&file)) == Some(new_master)
            && workers_of(new_master)
                .iter()
                .any(|&w| old.stderr().contains(&format!("Worker {w} booted")))),
        "the new master did not boot a worker: {}",
        old.stderr()
    );
    kill(old.pid(), libc::SIGWINCH);
    kill(old.pid(), libc::SIGTERM);
    let st = old.wait_exit(STOP);
    assert_eq!(st.code(), Some(0), "{}", describe_status(&st));
    old.expect_log(
        &format!("The old master {} exited; this master takes over", old.pid()),
        STOP,
    );
    let r = Client::connect(&Target::Unix(path.clone())).request(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    stop_new_master(new_master);
    assert!(
        path.exists(),
        "the new master removed {}, which systemd made",
        path.display()
    );
}

/// A master that cannot set itself up (here: no zibai-worker next to the
/// zibai binary) removes the pidfile and the socket file it made; they
/// were left behind, the pidfile naming a dead pid.
#[test]
fn a_master_that_cannot_start_leaves_no_files() {
    let dir = TempDir::new("noworker");
    let alone = dir.path().join("zibai");
    std::fs::copy(BIN, &alone).unwrap();
    let (file, sock) = (dir.path().join("m.pid"), dir.path().join("m.sock"));
    let listen = format!("unix:{}", sock.display());
    let mut cmd = Command::new(&alone);
    cmd.args(["pids:app", "-p", "2", "-l", &listen, "--pid", file.to_str().unwrap()]);
    server_env(&mut cmd, &apps_dir());
    let mut p = Proc::spawn(cmd);
    let st = p.wait_exit(Duration::from_secs(10));
    p.wait_eof(Duration::from_secs(2));
    assert!(!st.success(), "{}", describe_status(&st));
    assert!(p.stderr().contains("zibai-worker"), "{}", p.stderr());
    assert!(!file.exists(), "the pidfile is left behind");
    assert!(!sock.exists(), "the socket file is left behind");
}

// ---------------------------------------------------------------------------
// --watchfiles

fn write_app(dir: &Path, text: &str) {
    let src = format!(
        "import os\n\n\
         BODY = {text:?}\n\n\n\
         def app(environ, start_response):\n    \
             body = (\"%s pid=%d\" % (BODY, os.getpid())).encode()\n    \
             start_response(\"200 OK\", [(\"Content-Length\", str(len(body)))])\n    \
             return [body]\n"
    );
    // Written in place (truncate, write), as an editor without atomic save.
    std::fs::write(dir.join("watched_app.py"), src).unwrap();
}

fn get_text(addr: std::net::SocketAddr) -> String {
    Client::connect(&Target::Tcp(addr))
        .request(b"GET / HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n")
        .text()
}

/// Starts zibai in `root` with `args`, serving on a listener it is handed;
/// returns the process and the listener's address.
fn spawn_watched(root: &Path, args: &[&str]) -> (Proc, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cmd = zibai_in(root, args);
    let fd = pass_listener(&mut cmd, &listener);
    cmd.args(["-l", &fd]);
    let p = Proc::spawn(cmd);
    drop(listener);
    (p, addr)
}

/// The first reload's log line names `watched_app.py` first, and not `other`.
fn assert_first_reload_names_the_app(p: &Proc, root: &Path, other: &str) {
    let line = p
        .stderr()
        .lines()
        .find(|l| l.contains("Watched files changed"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!("({}", root.join("watched_app.py").display())) && !line.contains(other),
        "{line}"
    );
}

#[test]
fn watchfiles_reloads_on_matching_changes_only() {
    let dir = TempDir::new("watch");
    let root = dir.path().canonicalize().unwrap();
    write_app(&root, "v1");
    let (p, addr) = spawn_watched(&root, &["watched_app:app", "--watchfiles", "*.py;.env"]);
    p.expect_log(&format!("Watching {} for changes to *.py;.env", root.display()), BOOT);
    // --watchfiles implies a worker.
    p.expect_log("Booting worker", BOOT);
    p.expect_log("Serving with", BOOT);
    let first = get_text(addr);
    assert!(first.starts_with("v1 pid="), "{first}");
    let w1 = pid_in(&first);
    assert_eq!(workers_of(p.pid()), [w1]);

    // A file no glob matches: for a second, the same worker answers the
    // same text and nothing is reloaded.
    std::fs::write(root.join("notes.txt"), "not code\n").unwrap();
    let quiet_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < quiet_until {
        assert_eq!(get_text(addr), first, "a change to notes.txt changed the answer");
        assert_eq!(p.count("Watched files changed"), 0, "{}", p.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }

    write_app(&root, "v2");
    let mut now = String::new();
    assert!(
        wait_until(BOOT, || {
            now = get_text(addr);
            now.starts_with("v2 ")
        }),
        "the new text is not served: {now:?}"
    );
    let w2 = pid_in(&now);
    assert_ne!(w2, w1);
    assert_eq!(p.count("Watched files changed"), 1, "{}", p.stderr());
    assert_eq!(p.count("Received SIGHUP"), 1, "{}", p.stderr());
    assert_first_reload_names_the_app(&p, &root, "notes.txt");

    // `.env` is a glob of its own.
    std::fs::write(root.join(".env"), "A=1\n").unwrap();
    assert!(
        wait_until(BOOT, || p.count("Watched files changed") == 2),
        "no reload for .env: {}",
        p.stderr()
    );
    assert!(
        wait_until(BOOT, || pid_in(&get_text(addr)) != w2),
        "the worker was not replaced after .env changed"
    );
    assert!(get_text(addr).starts_with("v2 "));
}

/// A directory made after the start is watched (the watcher adds one watch
/// per directory now), and so is what was written into it before its watch
/// was added; a virtual environment in the tree is not watched at all (a
/// big one exhausted fs.inotify.max_user_watches).
#[test]
fn watchfiles_follows_new_directories_and_leaves_virtualenvs_out() {
    let dir = TempDir::new("watchdirs");
    let root = dir.path().canonicalize().unwrap();
    write_app(&root, "v1");
    let site = root.join("env/lib/python3.11/site-packages");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(root.join("env/pyvenv.cfg"), "home = /usr/bin\n").unwrap();
    let (p, addr) = spawn_watched(&root, &["watched_app:app", "--watchfiles", "*.py"]);
    p.expect_log("Serving with", BOOT);
    let w1 = pid_in(&get_text(addr));

    // A change inside the virtualenv, then one to the app: events come in
    // order, so were the virtualenv watched, its file would be the first
    // the reload names.
    std::fs::write(site.join("six.py"), "x = 1\n").unwrap();
    write_app(&root, "v2");
    assert!(
        wait_until(BOOT, || p.count("Watched files changed") == 1),
        "no reload: {}",
        p.stderr()
    );
    assert_first_reload_names_the_app(&p, &root, "six.py");
    let mut w2 = w1;
    assert!(
        wait_until(BOOT, || {
            w2 = pid_in(&get_text(addr));
            w2 != w1
        }),
        "the worker was not replaced"
    );

    // A package made in one go (as `git checkout` or `mv` would): the
    // directories appear with the file already in them.
    let staged = TempDir::new("watchstage");
    std::fs::create_dir_all(staged.path().join("pkg/sub")).unwrap();
    std::fs::write(staged.path().join("pkg/sub/new.py"), "").unwrap();
    std::fs::rename(staged.path().join("pkg"), root.join("pkg")).unwrap();
    assert!(
        wait_until(BOOT, || p.count("Watched files changed") == 2),
        "no reload for a directory moved in: {}",
        p.stderr()
    );
    assert!(
        p.stderr().contains(&root.join("pkg/sub/new.py").display().to_string()),
        "{}",
        p.stderr()
    );

    // And a file written later in that new directory.
    assert!(
        wait_until(BOOT, || pid_in(&get_text(addr)) != w2),
        "the worker was not replaced"
    );
    std::fs::write(root.join("pkg/sub/later.py"), "").unwrap();
    assert!(
        wait_until(BOOT, || p.count("Watched files changed") == 3),
        "no reload for a file in the new directory: {}",
        p.stderr()
    );
}

// ---------------------------------------------------------------------------
// A sandbox without memfd_create

/// Makes `cmd` run under a seccomp filter that fails memfd_create(2) with
/// ENOSYS, as some container sandboxes do.
fn without_memfd(cmd: &mut Command) {
    // SAFETY: runs in the forked child before exec; prctl is async-signal-
    // safe, and the filter program lives on this closure's stack for the
    // duration of the call that copies it into the kernel.
    unsafe {
        cmd.pre_exec(|| {
            let stmt = |code: u32, k: u32| libc::sock_filter {
                code: code as u16,
                jt: 0,
                jf: 0,
                k,
            };
            let mut filter = [
                // The syscall number (offset 0 of struct seccomp_data).
                stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
                libc::sock_filter {
                    code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 1,
                    k: libc::SYS_memfd_create as u32,
                },
                stmt(
                    libc::BPF_RET | libc::BPF_K,
                    libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
                ),
                stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_mut_ptr(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Regression: the master could not start where memfd_create is denied,
/// though the table it makes with it (accept balancing) is only an
/// optimisation. It now says balancing is off and serves.
#[test]
fn a_sandbox_without_memfd_serves_without_accept_balancing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cmd = zibai_in(&apps_dir(), &["pids:app", "-p", "2"]);
    let fd = pass_listener(&mut cmd, &listener);
    cmd.args(["-l", &fd]);
    without_memfd(&mut cmd);
    let p = Proc::spawn(cmd);
    drop(listener);
    p.expect_log("Accept balancing is off: cannot create the workers' shared table", BOOT);
    assert!(
        p.stderr().contains(&format!("os error {}", libc::ENOSYS)),
        "{}",
        p.stderr()
    );
    let mut workers = Vec::new();
    assert!(
        wait_until(BOOT, || {
            workers = workers_of(p.pid());
            workers.len() == 2 && p.count("Serving with") == 2
        }),
        "two workers did not boot: {}",
        p.stderr()
    );
    for _ in 0..4 {
        let pid = pid_in(&get_text(addr));
        assert!(
            workers.contains(&pid),
            "answered by {pid}, not by a worker of {workers:?}"
        );
    }
}

/// Regression: with --daemon the pidfile was written only after detaching,
/// so an unwritable pidfile was reported as a bare "the daemon exited".
#[test]
fn daemon_reports_an_unwritable_pidfile_on_the_terminal() {
    let f = Server::builder("echo_app:app")
        .args(["--daemon", "--pid", "/nonexistent-zibai-dir/x.pid"])
        .run_to_exit(Duration::from_secs(10));
    assert!(!f.status.success());
    assert!(
        f.stderr.contains("cannot write pidfile /nonexistent-zibai-dir/x.pid"),
        "{}",
        f.stderr
    );
}
