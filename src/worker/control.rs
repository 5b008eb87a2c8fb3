//! The worker's end of its control channel to the master: says when the
//! app is loaded, beats while the interpreter is responsive, asks to be
//! replaced after max requests, and turns the master's orders (or its
//! disappearance) into the same signals an operator would send.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use pyo3::Python;

use crate::proto::control::{ExitReason, Message, ToMaster, ToWorker, drain};

/// Requests served by this worker, for heartbeats and max-requests.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Requests after which the worker retires; 0 for never.
static MAX_REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Whether a master replaces this worker when it retires (else it stops
/// by itself).
static SUPERVISED: AtomicBool = AtomicBool::new(false);
/// The write side of the control socket, shared by the control thread and
/// the app thread that serves the last request before retiring.
static WRITER: OnceLock<Mutex<UnixStream>> = OnceLock::new();

/// Sets max requests (0: never) before the first request is accepted;
/// `supervised`: a master replaces this worker, else it stops by itself
/// (for a supervisor such as systemd to restart).
pub fn set_max_requests(max: u64, supervised: bool) {
    SUPERVISED.store(supervised, Ordering::Relaxed);
    MAX_REQUESTS.store(max, Ordering::Relaxed);
}

/// Counts a served request; the one that reaches max requests retires the
/// worker at once, rather than at the control thread's next tick: asking
/// the master for a successor, or, without a master, stopping gracefully.
pub fn request_done() {
    let served = REQUESTS.fetch_add(1, Ordering::SeqCst) + 1;
    let max = MAX_REQUESTS.load(Ordering::Relaxed);
    if max == 0 || served != max {
        return;
    }
    if !SUPERVISED.load(Ordering::Relaxed) {
        log::info!("served {served} requests (max {max}); stopping");
        raise(libc::SIGTERM);
        return;
    }
    // Pairs with the fence in `Control::start`: either the channel is seen
    // here, or this request's count is seen there.
    std::sync::atomic::fence(Ordering::SeqCst);
    if WRITER.get().is_some() {
        ask_to_retire(served, max);
    }
}

fn ask_to_retire(served: u64, max: u64) {
    log::info!("served {served} requests (max {max}); asking to be replaced");
    let _ = send_shared(&ToMaster::Exiting {
        reason: ExitReason::MaxRequests,
    });
}

const TICK: Duration = Duration::from_millis(100);
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How often a worker beats: once a second, or four times per `--timeout`
/// where that is shorter. (Beating once a second, a worker with
/// `--timeout 1` or less was killed as hung while it served.)
pub fn heartbeat_for(timeout: Option<Duration>) -> Duration {
    match timeout {
        Some(t) if !t.is_zero() => (t / 4).clamp(Duration::from_millis(10), HEARTBEAT),
        _ => HEARTBEAT,
    }
}

pub struct Control {
    pub sock: UnixStream,
    /// Requests after which to ask for a replacement; 0 for never.
    pub max_requests: u64,
    /// The accept-balancing table's memfd (see `master::balance`).
    pub balance: Option<std::os::fd::OwnedFd>,
    /// See [`heartbeat_for`].
    pub heartbeat: Duration,
}

/// Sends through the shared writer (set once the worker has booted).
fn send_shared(msg: &ToMaster) -> io::Result<()> {
    let w = WRITER.get().ok_or(io::ErrorKind::NotConnected)?;
    // A panic while sending leaves the socket as usable as it was.
    send(&mut w.lock().unwrap_or_else(|p| p.into_inner()), msg)
}

fn send(sock: &mut UnixStream, msg: &ToMaster) -> io::Result<()> {
    let mut buf = Vec::with_capacity(16);
    msg.encode(&mut buf);
    sock.write_all(&buf)
}

/// Stops this process the way the matching signal would.
fn raise(sig: i32) {
    if let Err(e) = signal_hook::low_level::raise(sig) {
        log::error!("cannot raise signal {sig}: {e}");
    }
}

impl Control {
    /// Tells the master the app is loaded, then serves the channel on a
    /// thread of its own.
    pub fn start(mut self) -> io::Result<()> {
        send(&mut self.sock, &ToMaster::Booted)?;
        self.sock.set_read_timeout(Some(TICK.min(self.heartbeat / 2)))?;
        let _ = WRITER.set(Mutex::new(self.sock.try_clone()?));
        // Requests served before the channel was up (the listeners open
        // before it) may have reached the limit already: `request_done`
        // left the asking to this.
        std::sync::atomic::fence(Ordering::SeqCst);
        let (served, max) = (REQUESTS.load(Ordering::SeqCst), self.max_requests);
        if max != 0 && served >= max {
            ask_to_retire(served, max);
        }
        std::thread::Builder::new()
            .name("zibai-control".into())
            .spawn(move || self.run())?;
        Ok(())
    }

    fn run(mut self) {
        let mut inbox = Vec::new();
        let mut chunk = [0u8; 512];
        let mut last_beat = Instant::now();
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => {
                    log::warn!("the master went away; stopping");
                    raise(libc::SIGTERM);
                    return;
                }
                Ok(n) => inbox.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("control channel failed: {e}; stopping");
                    raise(libc::SIGTERM);
                    return;
                }
            }
            match drain::<ToWorker>(&mut inbox) {
                Ok(msgs) => {
                    for m in msgs {
                        match m {
                            ToWorker::Stop { graceful: true } => raise(libc::SIGTERM),
                            ToWorker::Stop { graceful: false } => raise(libc::SIGINT),
                            ToWorker::ReopenLogs => {
                                log::debug!("reopening logs");
                                crate::logging::reopen();
                            }
                        }
                    }
                }
                Err(e) => {
                    log::error!("bad message from the master ({e}); stopping");
                    raise(libc::SIGTERM);
                    return;
                }
            }
            let served = REQUESTS.load(Ordering::Relaxed);
            if last_beat.elapsed() >= self.heartbeat {
                // Beating needs the interpreter: a worker whose GIL is held
                // forever (a stuck C extension) stops beating and is replaced.
                Python::attach(|_| ());
                if send_shared(&ToMaster::Heartbeat { requests: served }).is_err() {
                    log::warn!("the master went away; stopping");
                    raise(libc::SIGTERM);
                    return;
                }
                last_beat = Instant::now();
            }
        }
    }
}
