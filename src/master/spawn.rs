//! Starting a worker: fork+exec of our own binary in the worker role, with
//! the listeners and one end of a control socket inherited. Everything else
//! stays close-on-exec; the child only clears that flag on the fds it must
//! keep, in `pre_exec`, as shellflip does.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

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
    pub max_requests: u64,
}

/// Starts a worker running `exe` with our own arguments.
pub fn spawn_worker(exe: &std::path::Path, listeners: &[Listener], max_requests: u64) -> io::Result<Spawned> {
    // SOCK_CLOEXEC on both ends (std sets it); the child clears it on its end.
    let (master_end, worker_end) = UnixStream::pair()?;
    let mut fds: Vec<RawFd> = vec![worker_end.as_raw_fd()];
    fds.extend(listeners.iter().map(|l| l.fd.as_raw_fd()));
    let list = fds.iter().map(|fd| fd.to_string()).collect::<Vec<_>>().join(",");
    let master_pid = nix::unistd::getpid();
    let mut cmd = reexec(exe, fds);
    cmd.env(WORKER_ENV, list)
        .env(MAX_REQUESTS_ENV, max_requests.to_string());
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

/// In a worker: takes the inherited fds named by the environment, and
/// removes the variables so the app does not see them.
pub fn inherited() -> Option<io::Result<Inherited>> {
    let list = std::env::var(WORKER_ENV).ok()?;
    let max_requests = std::env::var(MAX_REQUESTS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: called from main before any other thread exists, so nothing
    // reads the environment concurrently.
    unsafe {
        std::env::remove_var(WORKER_ENV);
        std::env::remove_var(MAX_REQUESTS_ENV);
        // systemd talks to the master; an app that notified it from a
        // worker would confuse it.
        std::env::remove_var("NOTIFY_SOCKET");
        std::env::remove_var("WATCHDOG_USEC");
        std::env::remove_var("WATCHDOG_PID");
    }
    let parse = || -> io::Result<Inherited> {
        let mut fds = list.split(',').map(|s| {
            s.parse::<RawFd>()
                .map_err(|_| io::Error::other(format!("bad {WORKER_ENV} value {list:?}")))
        });
        let control = fds
            .next()
            .ok_or_else(|| io::Error::other(format!("empty {WORKER_ENV}")))??;
        // SAFETY: `control` is one end of the socketpair our master made and
        // handed to this process alone; nothing else here owns it.
        let control = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(control) };
        set_cloexec(&control)?;
        Ok(Inherited {
            control,
            listeners: fds.collect::<io::Result<Vec<_>>>()?,
            max_requests,
        })
    };
    Some(parse())
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}
