//! USR2 binary upgrade, nginx- and gunicorn-style: the old master starts a
//! new master from the binary on disk and hands it the listening sockets;
//! both serve until the operator sends WINCH (old workers stop) and TERM
//! (old master exits) to the old one. The new master writes `PIDFILE.2`
//! and takes over `PIDFILE` once its parent, the old master, is gone.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use super::listeners::Listener;

/// The listening fds a new master inherits, comma-separated.
const FDS_ENV: &str = "ZIBAI_UPGRADE_FDS";
/// The pid of the master that started this one.
const FROM_ENV: &str = "ZIBAI_UPGRADE_FROM";

/// The directory the master was started in, before `--chdir`: a new
/// master reads the same command line, so relative paths in it (the
/// `--chdir` itself, `--pid`, `-c`, logs) must mean what they meant.
static START_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Called by `main` before it changes directory.
pub fn remember_start_dir() {
    if let Ok(dir) = std::env::current_dir() {
        let _ = START_DIR.set(dir);
    }
}

/// Starts the new master; returns its pid.
pub fn start_new_master(listeners: &[Listener]) -> io::Result<Pid> {
    // The binary on disk now: upgrading is the point.
    let exe = super::spawn::own_exe()?;
    let fds: Vec<RawFd> = listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
    // `+` marks a socket whose file this master made (and would remove):
    // the new master takes that over once we are gone, and only that (a
    // file systemd or fd://N handed us is theirs).
    let list = listeners
        .iter()
        .map(|l| format!("{}{}", l.fd.as_raw_fd(), if l.owns_file() { "+" } else { "" }))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = super::spawn::reexec(&exe, fds);
    cmd.env(FDS_ENV, list).env(FROM_ENV, std::process::id().to_string());
    // systemd's WATCHDOG_PID names this master: the new one, which takes
    // over as the main process, would take the watchdog for someone else's
    // and never ping. It pings if this one does (NotifyAccess=all lets it
    // before it is MAINPID), and not otherwise.
    cmd.env_remove("WATCHDOG_PID");
    if sd_notify::watchdog_enabled().is_none() {
        cmd.env_remove("WATCHDOG_USEC");
    }
    if let Some(dir) = START_DIR.get() {
        cmd.current_dir(dir);
    }
    let child = cmd.spawn()?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// In a master started by USR2: the inherited listening fds (with whether
/// their socket file becomes ours once the old master is gone) and the old
/// master's pid. Removes the variables so workers do not see them.
pub fn inherited() -> Option<(Vec<(RawFd, bool)>, Pid)> {
    let fds = std::env::var(FDS_ENV).ok()?;
    let from = std::env::var(FROM_ENV).ok()?;
    // SAFETY: called from main before any other thread exists.
    unsafe {
        std::env::remove_var(FDS_ENV);
        std::env::remove_var(FROM_ENV);
    }
    let fds = fds
        .split(',')
        .map(|f| match f.strip_suffix('+') {
            Some(fd) => fd.parse().map(|fd| (fd, true)),
            None => f.parse().map(|fd| (fd, false)),
        })
        .collect::<Result<Vec<(RawFd, bool)>, _>>()
        .ok()?;
    Some((fds, Pid::from_raw(from.parse().ok()?)))
}

/// `PIDFILE.2`: where a new master writes its pid while the old one lives.
pub fn upgrade_pidfile(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".2");
    PathBuf::from(p)
}
