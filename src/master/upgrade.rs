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
use crate::config::ListenAddr;

/// The listening fds a new master inherits, comma-separated.
const FDS_ENV: &str = "ZIBAI_UPGRADE_FDS";
/// The pid of the master that started this one.
const FROM_ENV: &str = "ZIBAI_UPGRADE_FROM";
/// The `listen` values the old master's sockets were bound for, one per
/// line: the new master says so when its own differ.
const LISTEN_ENV: &str = "ZIBAI_UPGRADE_LISTEN";

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

/// Starts the new master; returns its pid. `listen` is the configuration
/// the sockets were bound for.
pub fn start_new_master(listeners: &[Listener], listen: &[ListenAddr]) -> io::Result<Pid> {
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
    cmd.env(FDS_ENV, list)
        .env(FROM_ENV, std::process::id().to_string())
        .env(LISTEN_ENV, listen_text(listen));
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

fn listen_text(listen: &[ListenAddr]) -> String {
    listen.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n")
}

/// What a master started by USR2 takes over from the old one.
pub struct Inherited {
    /// The listening fds, with whether their socket file becomes ours once
    /// the old master is gone.
    pub fds: Vec<(RawFd, bool)>,
    /// The old master.
    pub from: Pid,
    /// The `listen` values its sockets were bound for.
    listen: Option<String>,
}

impl Inherited {
    /// A warning when this master's `listen` differs from the one the
    /// inherited sockets were bound for: an upgrade keeps the sockets (as
    /// gunicorn's and nginx's do), so the change needs a restart.
    pub fn listen_change(&self, listen: &[ListenAddr]) -> Option<String> {
        let old = self.listen.as_deref()?;
        let new = listen_text(listen);
        (old != new).then(|| {
            format!(
                "--listen changed ({} -> {}); this master serves on the sockets it inherited, \
                 so the new value applies only after a restart",
                old.replace('\n', " "),
                new.replace('\n', " ")
            )
        })
    }
}

/// In a master started by USR2: what it inherits from the old master.
/// Removes the variables so workers do not see them.
pub fn inherited() -> Option<Inherited> {
    let fds = std::env::var(FDS_ENV).ok()?;
    let from = std::env::var(FROM_ENV).ok()?;
    let listen = std::env::var(LISTEN_ENV).ok();
    // SAFETY: called from main before any other thread exists.
    unsafe {
        std::env::remove_var(FDS_ENV);
        std::env::remove_var(FROM_ENV);
        std::env::remove_var(LISTEN_ENV);
    }
    let fds = fds
        .split(',')
        .map(|f| match f.strip_suffix('+') {
            Some(fd) => fd.parse().map(|fd| (fd, true)),
            None => f.parse().map(|fd| (fd, false)),
        })
        .collect::<Result<Vec<(RawFd, bool)>, _>>()
        .ok()?;
    Some(Inherited {
        fds,
        from: Pid::from_raw(from.parse().ok()?),
        listen,
    })
}

/// `PIDFILE.2`: where a new master writes its pid while the old one lives.
pub fn upgrade_pidfile(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".2");
    PathBuf::from(p)
}
