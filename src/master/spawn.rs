//! Starting workers: fork+exec of the `zibai-worker` binary (the only one
//! that links libpython, so the master stays small), with the listeners
//! and one end of a control socket inherited. Everything else stays
//! close-on-exec; the child only clears that flag on the fds it must keep,
//! in `pre_exec`, as shellflip does. Single-process mode execs the worker
//! binary in place of the `zibai` process.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::master::balance::BALANCE_ENV;
use crate::master::listeners::Listener;

/// Environment variable through which a worker learns its role and its
/// inherited fds: `CONTROL_FD,LISTENER_FD,...`.
pub const WORKER_ENV: &str = "ZIBAI_WORKER_FDS";
/// The worker's max requests, jitter already applied.
pub const MAX_REQUESTS_ENV: &str = "ZIBAI_WORKER_MAX_REQUESTS";

pub struct Spawned {
    pub child: Child,
    /// The master's end of the control socket.
    pub control: UnixStream,
}

/// What a worker finds in its environment, read once at start.
pub struct Inherited {
    pub control: OwnedFd,
    pub listeners: Vec<RawFd>,
    /// The accept-balancing table (see `master::balance`).
    pub balance: Option<OwnedFd>,
    pub max_requests: u64,
}

/// Single-process mode: `FD[+],...`, the listeners (`+`: bound by us, so
/// ours to shut down and, for unix sockets, to remove).
pub const SINGLE_ENV: &str = "ZIBAI_SINGLE_FDS";
/// Single-process mode: the `--daemon` readiness pipe's fd.
pub const READY_ENV: &str = "ZIBAI_READY_FD";
/// Single-process mode: the pidfile to remove at exit if it still names us.
pub const PIDFILE_ENV: &str = "ZIBAI_PIDFILE";

/// Our own binary's path as it is on disk now (after a package upgrade
/// replaced the file, not the deleted one we run).
pub fn own_exe() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// The path of a binary installed next to ours.
pub fn sibling(name: &str) -> io::Result<PathBuf> {
    Ok(own_exe()?.with_file_name(name))
}

/// The worker binary, opened once: workers keep running the binary this
/// master started with even if a package upgrade replaces it on disk
/// (a binary upgrade is USR2's job), and a missing file is reported at once.
pub struct WorkerBinary {
    file: std::fs::File,
}

impl WorkerBinary {
    pub fn open() -> io::Result<WorkerBinary> {
        let path = sibling("zibai-worker")?;
        let file = std::fs::File::open(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the worker binary {}: {e}", path.display()),
            )
        })?;
        Ok(WorkerBinary { file })
    }

    /// A path that execs the opened file (the fd is close-on-exec: the
    /// kernel opens the path before it closes anything).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// Single-process mode: replaces this process with the worker binary,
/// serving on `listeners`. Returns only on failure.
pub fn exec_single(
    listeners: &[Listener],
    ready: Option<&OwnedFd>,
    pidfile: Option<&Path>,
    config: &crate::config::Config,
) -> io::Error {
    let exe = match sibling("zibai-worker") {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut inherit: Vec<RawFd> = listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
    inherit.extend(ready.map(|fd| fd.as_raw_fd()));
    let list = listeners
        .iter()
        .map(|l| format!("{}{}", l.fd.as_raw_fd(), if l.bound_here { "+" } else { "" }))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = reexec(&exe, inherit);
    cmd.env(SINGLE_ENV, list);
    with_config(&mut cmd, config);
    if let Some(fd) = ready {
        cmd.env(READY_ENV, fd.as_raw_fd().to_string());
    }
    if let Some(p) = pidfile {
        cmd.env(PIDFILE_ENV, p);
    }
    let err = cmd.exec();
    io::Error::new(
        err.kind(),
        format!("cannot run the worker binary {}: {err}", exe.display()),
    )
}

/// Starts a worker running `exe` with our own arguments.
/// Hands a worker the master's resolved configuration (it never parses
/// the command line or the environment itself) and the app's `--env`.
fn with_config(cmd: &mut Command, config: &crate::config::Config) {
    cmd.env(crate::config::RESOLVED_ENV, config.to_toml())
        .envs(config.env.iter().map(|(k, v)| (k, v)));
}

pub fn spawn_worker(
    exe: &std::path::Path,
    listeners: &[Listener],
    balance: Option<BorrowedFd<'_>>,
    max_requests: u64,
    config: &crate::config::Config,
) -> io::Result<Spawned> {
    // SOCK_CLOEXEC on both ends (std sets it); the child clears it on its end.
    let (master_end, worker_end) = UnixStream::pair()?;
    let mut fds: Vec<RawFd> = vec![worker_end.as_raw_fd()];
    fds.extend(listeners.iter().map(|l| l.fd.as_raw_fd()));
    let list = fds.iter().map(|fd| fd.to_string()).collect::<Vec<_>>().join(",");
    fds.extend(balance.map(|b| b.as_raw_fd()));
    let master_pid = nix::unistd::getpid();
    let mut cmd = reexec(exe, fds);
    cmd.env(WORKER_ENV, list)
        .env(MAX_REQUESTS_ENV, max_requests.to_string());
    match balance {
        Some(b) => cmd.env(BALANCE_ENV, b.as_raw_fd().to_string()),
        None => cmd.env_remove(BALANCE_ENV),
    };
    with_config(&mut cmd, config);
    // Each worker changes to `--chdir` again (the master did once, at its
    // start): where that is a symlink a deploy moves, a worker started by
    // a HUP works in the new release, as its imports do (see
    // `python::initialize`).
    if let Some(dir) = &config.chdir {
        cmd.current_dir(dir);
    }
    // SAFETY: runs in the forked child before exec (after `reexec`'s step)
    // and only makes async-signal-safe calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            // If the master dies, the kernel tells the worker, even if the
            // control socket's EOF were somehow missed.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The master may have died before prctl took effect.
            if libc::getppid() != master_pid.as_raw() {
                return Err(io::Error::other("the master exited"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(worker_end);
    Ok(Spawned {
        child,
        control: master_end,
    })
}

/// A command that runs `exe` with our own arguments (and `argv[0]`), with
/// the fds in `inherit` left open across exec: close-on-exec is cleared on
/// them in the child only, so nothing else leaks into it.
pub fn reexec(exe: &std::path::Path, inherit: Vec<RawFd>) -> Command {
    let mut cmd = Command::new(exe);
    let mut argv = std::env::args_os();
    cmd.arg0(argv.next().unwrap_or_else(|| "zibai".into())).args(argv);
    // SAFETY: the closure runs in the forked child before exec; fcntl is
    // async-signal-safe, the fds are open in the child, nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

/// How the worker binary was started, read once from the environment.
pub enum Start {
    /// By a master, with a control socket.
    Worker(Inherited),
    /// In place of `zibai` in single-process mode.
    Single(SingleStart),
}

pub struct SingleStart {
    /// Listening fds, and whether we bound them ourselves.
    pub listeners: Vec<(RawFd, bool)>,
    pub ready: Option<OwnedFd>,
    pub pidfile: Option<PathBuf>,
}

/// Reads and removes the variables that give the worker its role and fds
/// (the app must not see them). `None`: not started by zibai.
pub fn start() -> Option<io::Result<Start>> {
    let worker = std::env::var(WORKER_ENV).ok();
    let balance = std::env::var(BALANCE_ENV).ok();
    let single = std::env::var(SINGLE_ENV).ok();
    let ready = std::env::var(READY_ENV).ok();
    let pidfile = std::env::var_os(PIDFILE_ENV);
    let max_requests = std::env::var(MAX_REQUESTS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: called from main before any other thread exists, so nothing
    // reads the environment concurrently.
    unsafe {
        for var in [
            WORKER_ENV,
            BALANCE_ENV,
            SINGLE_ENV,
            READY_ENV,
            PIDFILE_ENV,
            MAX_REQUESTS_ENV,
        ] {
            std::env::remove_var(var);
        }
        if worker.is_some() {
            // systemd talks to the master; an app that notified it from a
            // worker would confuse it.
            std::env::remove_var("NOTIFY_SOCKET");
            std::env::remove_var("WATCHDOG_USEC");
            std::env::remove_var("WATCHDOG_PID");
        }
    }
    let bad = |what: &str, value: &str| io::Error::other(format!("bad {what} value {value:?}"));
    let fd = |s: &str, what: &str, value: &str| s.parse::<RawFd>().map_err(|_| bad(what, value));
    if let Some(list) = worker {
        let parse = || -> io::Result<Start> {
            let mut fds = list.split(',').map(|s| fd(s, WORKER_ENV, &list));
            let control = fds.next().ok_or_else(|| bad(WORKER_ENV, &list))??;
            // SAFETY: `control` is one end of the socketpair our master made
            // and handed to this process alone; nothing else here owns it.
            let control = unsafe { OwnedFd::from_raw_fd(control) };
            set_cloexec(&control)?;
            let balance = match &balance {
                Some(v) => {
                    // SAFETY: the table's memfd, handed to this process by
                    // our master; nothing else here owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd(v, BALANCE_ENV, v)?) };
                    set_cloexec(&fd)?;
                    Some(fd)
                }
                None => None,
            };
            Ok(Start::Worker(Inherited {
                control,
                balance,
                listeners: fds.collect::<io::Result<Vec<_>>>()?,
                max_requests,
            }))
        };
        return Some(parse());
    }
    let list = single?;
    let parse = || -> io::Result<Start> {
        let listeners = list
            .split(',')
            .map(|s| match s.strip_suffix('+') {
                Some(n) => fd(n, SINGLE_ENV, &list).map(|fd| (fd, true)),
                None => fd(s, SINGLE_ENV, &list).map(|fd| (fd, false)),
            })
            .collect::<io::Result<Vec<_>>>()?;
        let ready = match ready {
            Some(v) => {
                // SAFETY: the readiness pipe's write end, handed to this
                // process alone by the `zibai` process it replaced.
                let fd = unsafe { OwnedFd::from_raw_fd(fd(&v, READY_ENV, &v)?) };
                set_cloexec(&fd)?;
                Some(fd)
            }
            None => None,
        };
        Ok(Start::Single(SingleStart {
            listeners,
            ready,
            pidfile: pidfile.map(PathBuf::from),
        }))
    };
    Some(parse())
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}
