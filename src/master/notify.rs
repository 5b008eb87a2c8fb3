//! Telling whoever started us how we are doing: systemd through
//! `NOTIFY_SOCKET` (READY, RELOADING, STOPPING, STATUS, WATCHDOG, MAINPID),
//! and the parent of `--daemon` through a readiness pipe.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Where the server tells its state. Used by the master, and by the worker
/// in single-process mode (a worker under a master tells its master).
pub struct Announcer {
    /// The write end of `--daemon`'s readiness pipe: one byte means ready;
    /// closing it unwritten means we failed.
    ready_pipe: Option<OwnedFd>,
    watchdog: Option<Duration>,
    last_watchdog: Instant,
    ready: bool,
}

fn send(states: &[NotifyState<'_>]) {
    // No NOTIFY_SOCKET means nothing to do; a failure is worth a line, not
    // an exit: the server itself is fine.
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(&path, states) {
        log::warn!("cannot notify systemd at {}: {e}", path.to_string_lossy());
    }
}

/// sd_notify's wire format, sent ourselves because the sd-notify crate
/// (0.5) treats `@name` (an abstract socket, as systemd may pass) as a path.
fn send_to(path: &std::ffi::OsStr, states: &[NotifyState<'_>]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let addr = match path.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    let mut msg = String::new();
    for s in states {
        msg.push_str(&s.to_string());
        msg.push('\n');
    }
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(msg.as_bytes(), &addr)?;
    Ok(())
}

impl Announcer {
    pub fn new(ready_pipe: Option<OwnedFd>) -> Self {
        Announcer {
            ready_pipe,
            watchdog: sd_notify::watchdog_enabled(),
            last_watchdog: Instant::now(),
            ready: false,
        }
    }

    /// The server serves: READY=1 once, and the daemon's parent may exit.
    pub fn ready(&mut self, status: &str) {
        if self.ready {
            self.status(status);
            return;
        }
        self.ready = true;
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
        if let Some(fd) = self.ready_pipe.take() {
            let _ = std::fs::File::from(fd).write_all(b"1");
        }
    }

    pub fn status(&self, status: &str) {
        send(&[NotifyState::Status(status)]);
    }

    /// A reload began; `ready` ends it.
    pub fn reloading(&mut self) {
        self.ready = false;
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// After a binary upgrade, the new master is the main process.
    pub fn main_pid(&self, pid: u32) {
        send(&[NotifyState::MainPid(pid)]);
    }

    /// Pets systemd's watchdog at half its interval; call from the main loop.
    pub fn tick(&mut self) {
        if let Some(interval) = self.watchdog
            && self.last_watchdog.elapsed() >= interval / 2
        {
            send(&[NotifyState::Watchdog]);
            self.last_watchdog = Instant::now();
        }
    }

    /// How long the main loop may sleep without missing a watchdog beat.
    pub fn max_sleep(&self) -> Option<Duration> {
        self.watchdog
            .map(|w| (w / 2).saturating_sub(self.last_watchdog.elapsed()))
    }
}
