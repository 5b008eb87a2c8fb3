//! The worker: initialises Python once, loads the app, and serves HTTP/1.1
//! on the listeners it is given until told to stop. Run in the main process
//! for single-process mode.

pub mod control;
mod flusher;
mod input;
mod io;
pub mod privileges;
pub mod python;
pub mod registry;
mod response;
mod server;
mod strings;
mod wsgi;

use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags};
use nix::time::{ClockId, clock_gettime};
use pyo3::prelude::*;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::master::balance::{PARKED_RECHECK, Table};
use crate::master::listeners::Listener;
use crate::master::notify::Announcer;
use python::LoadError;
use registry::Registry;
use server::Shared;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot set up the worker: {0}")]
    Setup(String),
}

impl WorkerError {
    fn setup(what: &str, e: impl std::fmt::Display) -> Self {
        WorkerError::Setup(format!("{what}: {e}"))
    }
}

/// How often the timer thread expires deadlines.
const TIMER_STEP: Duration = Duration::from_millis(100);

/// How long a stop may take past its own deadline (none for a quick one,
/// `--graceful-exit-timeout` for a graceful one) before the process exits
/// regardless.
const STOP_BACKSTOP: Duration = Duration::from_secs(3);

/// On a graceful stop, how long a connection with nothing to answer (just
/// accepted, or idle between keep-alive requests) has to send a request.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Set once the worker begins to stop: responses from then on close their
/// connections. Process-wide, like the signal that sets it.
pub(crate) static STOPPING: AtomicBool = AtomicBool::new(false);

thread_local! {
    static DATE: Cell<(u64, [u8; 29])> = const { Cell::new((0, [0; 29])) };
}

/// A clock read from the time of the last tick (a few milliseconds old at
/// most) without reading the TSC: 8 ns a call here, against 26 ns for
/// `Instant::now()` or `SystemTime::now()`. For what is counted in seconds
/// (deadlines, the Date header), read several times a request.
fn coarse(clock: ClockId) -> Duration {
    // Both clocks exist on every Linux since 2.6.32; should one fail, time
    // stands still and deadlines wait for the next reading that works.
    clock_gettime(clock).map(Duration::from).unwrap_or_default()
}

/// CLOCK_MONOTONIC_COARSE, as a `Duration` since boot.
pub fn coarse_monotonic() -> Duration {
    coarse(ClockId::CLOCK_MONOTONIC_COARSE)
}

/// The `Date` header value, formatted at most once a second per thread.
pub fn date_now() -> [u8; 29] {
    let secs = coarse(ClockId::CLOCK_REALTIME_COARSE).as_secs();
    DATE.with(|c| {
        let (cached, value) = c.get();
        if cached == secs {
            return value;
        }
        let value = crate::proto::date::http_date(secs);
        c.set((secs, value));
        value
    })
}

fn lock(a: &Mutex<Announcer>) -> std::sync::MutexGuard<'_, Announcer> {
    // Announcer holds no invariant a panic could break.
    a.lock().unwrap_or_else(|p| p.into_inner())
}

struct Hooks {
    before_graceful_exit: Option<Py<PyAny>>,
    before_died: Option<Py<PyAny>>,
}

/// Whom the worker answers to.
pub enum Role {
    /// Single-process mode: the worker is the server, and tells systemd
    /// (or `--daemon`'s parent) itself.
    Single(Announcer),
    /// Started by a master, which it talks to through this channel.
    Worker(control::Control),
}

/// Runs a thread's body; a panic in it (a bug of ours) ends the process.
/// A worker whose app thread died could accept and never answer, one whose
/// timer died would enforce no deadline, and nothing would replace either:
/// ended, it is replaced by its master (or its supervisor).
fn exit_on_panic(what: &str, body: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        log::error!("{what} panicked (a bug in zibai); exiting so that the worker is replaced");
        // SAFETY: ends the process at once, from a state we cannot trust.
        unsafe { libc::_exit(70) }
    }
}

/// Serves until a signal (or the master) says stop; returns the process
/// exit code.
pub fn run(config: Config, listeners: Vec<Listener>, role: Role) -> Result<i32, WorkerError> {
    let multiprocess = matches!(role, Role::Worker(_));
    keep_freed_memory();
    python::initialize(&config)?;
    let (app, statics, before_serve, hooks) = Python::attach(|py| -> Result<_, WorkerError> {
        let loaded = python::load_all(py, &config)?;
        let hooks = Hooks {
            before_graceful_exit: loaded.before_graceful_exit,
            before_died: loaded.before_died,
        };
        let statics = wsgi::Statics::new(py, &config, multiprocess).map_err(|e| WorkerError::setup("environ", e))?;
        Ok((loaded.app, statics, loaded.before_serve, hooks))
    })?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| WorkerError::setup("epoll", e))?;
    // Before anything can announce readiness (a request served, a log line
    // a supervisor waits for), signals must already be ours.
    // The master's signals (HUP, TTIN, ...) reach workers too when sent to
    // the process group; they mean nothing here and must not kill us.
    let mut signals = Signals::new([
        SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH,
    ])
    .map_err(|e| WorkerError::setup("signals", e))?;
    let threads = config.max_workers;
    let access_log = config
        .access_log
        .then(|| crate::logging::access::AccessLog::new(config.access_log_format.clone(), config.access_log_json));
    // Set before the first request can be accepted, so that every request
    // counts (requests served before the control channel started used to
    // carry the count past the limit, and the worker never retired).
    match &role {
        Role::Worker(c) => control::set_max_requests(c.max_requests, true),
        Role::Single(_) => control::set_max_requests(config.max_requests, false),
    }
    let balance = match &role {
        Role::Worker(c) => c.balance.as_ref().and_then(|fd| join_balance(fd.as_fd(), threads)),
        Role::Single(_) => None,
    };
    let shared = Arc::new(Shared {
        config,
        epoll,
        listeners,
        registry: Registry::publishing(balance.as_ref().map(|b| b.member().conns())),
        balance,
        app,
        statics,
        access_log,
        activity: server::Activity::new(threads),
    });
    // As in Python Zibai, a before_serve that raises ends the worker before
    // it serves (exit 3: the master stops at the start, or retries while
    // other workers serve); what it was to set up is not there.
    python::try_hook(&before_serve, "before_serve").map_err(WorkerError::Setup)?;
    // Told to stop while it booted (the master stops a booting worker it
    // replaces, or the server): leave before accepting anything.
    if signals.pending().any(|s| matches!(s, SIGTERM | SIGINT | SIGQUIT)) {
        log::info!("Asked to stop while loading the app; exiting before serving");
        return Ok(0);
    }
    shared
        .register_listeners()
        .map_err(|e| WorkerError::setup("epoll", e))?;
    for i in 0..threads {
        let s = shared.clone();
        std::thread::Builder::new()
            .name(format!("zibai-app-{i}"))
            // Python code runs on these threads: give them the stack size
            // of a main thread, not Rust's 2 MiB default.
            .stack_size(8 << 20)
            .spawn(move || {
                exit_on_panic(&format!("app thread {i}"), || server::thread_main(&s, i));
            })
            .map_err(|e| WorkerError::setup("threads", e))?;
    }
    let (control, announcer) = match role {
        Role::Single(a) => (None, Some(Arc::new(Mutex::new(a)))),
        Role::Worker(c) => (Some(c), None),
    };
    {
        let s = shared.clone();
        let announcer = announcer.clone();
        std::thread::Builder::new()
            .name("zibai-timer".into())
            .spawn(move || {
                exit_on_panic("the timer thread", || {
                    // A coarse periodic scan: deadlines are seconds long, so
                    // 100 ms of slack is noise and costs nothing per request.
                    let mut next_scan = Instant::now();
                    let mut queued = false;
                    // Armed by an app thread (server::Activity::guard): a look
                    // every NET_STEP until nothing has waited for a whole
                    // TIMER_STEP, for what threads stuck in the app hold while
                    // no other thread watches.
                    let mut quiet_since: Option<Instant> = None;
                    loop {
                        // Read before the net: a thread that arms it after
                        // this wakes the wait below (read after, its wake
                        // could come first and the wait slept a whole step).
                        let seq = s.balance.as_ref().map(|b| b.member().wake_seq());
                        let mut step = next_scan.saturating_duration_since(Instant::now());
                        let net = s.activity.net_armed();
                        if net {
                            step = step.min(server::NET_STEP);
                        }
                        if let Some(a) = &announcer {
                            // Single-process mode: wake when systemd's watchdog
                            // is due, not at the next scan (a ping due just
                            // after a scan waited a whole step more).
                            step = step.min(lock(a).max_sleep().unwrap_or(step));
                        }
                        match s.balance.as_ref().zip(seq) {
                            // Accept balancing: a heartbeat for the other
                            // workers, and while parked a look every
                            // PARKED_RECHECK (or when another worker wakes us)
                            // whether to accept again.
                            Some((b, seq)) => {
                                b.member().heartbeat();
                                s.recheck_parked(&mut queued);
                                if b.is_parked() {
                                    step = step.min(PARKED_RECHECK);
                                }
                                b.member().wait(seq, step);
                                s.unpark_if_due(false);
                            }
                            None => s.activity.bell.wait(step),
                        }
                        if let Some(a) = &announcer {
                            lock(a).tick();
                        }
                        if net || s.activity.net_armed() {
                            if s.activity.net_look(&s) {
                                quiet_since = None;
                            } else if quiet_since.get_or_insert_with(Instant::now).elapsed() >= TIMER_STEP {
                                s.activity.disarm_net();
                                quiet_since = None;
                            }
                        }
                        if Instant::now() < next_scan {
                            continue;
                        }
                        next_scan = Instant::now() + TIMER_STEP;
                        // The last resort for events stashed by a thread stuck
                        // in the app when no other thread could put them back
                        // (see server::Stash); the watcher does it within 1 ms,
                        // or the net above within 5 ms when there is none. And
                        // the only way for the parked piece of a single app
                        // thread (see server::Activity::cover_parked).
                        s.activity.release_stuck_stashes(&s, usize::MAX);
                        let n = s.registry.expire();
                        if n > 0 {
                            log::debug!("closed {n} connections past their deadline");
                        }
                    }
                })
            })
            .map_err(|e| WorkerError::setup("timer thread", e))?;
    }
    if !multiprocess {
        for l in &shared.listeners {
            log::info!("Listening on {}", l.display());
        }
    }
    log::info!("Serving with {threads} app threads [pid {}]", std::process::id());
    if let Some(control) = control {
        control.start().map_err(|e| WorkerError::setup("control channel", e))?;
    }
    if let Some(a) = &announcer {
        lock(a).ready(&format!("serving with {threads} threads"));
    }
    let graceful = loop {
        match signals.forever().next() {
            Some(SIGTERM) => break true,
            Some(SIGINT | SIGQUIT) => break false,
            // Single-process mode: logrotate signals this process itself.
            Some(SIGUSR1) => crate::logging::reopen(),
            // The master's signals, sent to this process alone: say why
            // nothing happens (a worker under a master hears them from
            // `kill` on the process group, and stays quiet).
            Some(sig) if !multiprocess => log::warn!(
                "Received {}: ignored in single-process mode (-p 0); reloads, scaling and upgrades need a master (-p 1 or more)",
                nix::sys::signal::Signal::try_from(sig).map_or("a signal", |s| s.as_str())
            ),
            _ => continue,
        }
    };
    if let Some(a) = &announcer {
        lock(a).stopping();
    }
    // The hooks and the last flush need the interpreter: a thread holding
    // the GIL in a C call that never returns would hold the stop forever,
    // and a single process has no master to kill it. Past the stop's own
    // deadline, give up.
    let backstop = STOP_BACKSTOP
        + if graceful {
            shared.config.graceful_exit_timeout
        } else {
            Duration::ZERO
        };
    std::thread::Builder::new()
        .name("zibai-backstop".into())
        .spawn(move || {
            std::thread::sleep(backstop);
            log::error!("The stop did not finish within {backstop:?} (a thread holding the interpreter?); exiting now");
            // SAFETY: ends the process at once; nothing of ours must run after.
            unsafe { libc::_exit(1) }
        })
        .map_err(|e| WorkerError::setup("backstop thread", e))?;
    if graceful {
        log::info!("Received SIGTERM, finishing in-flight requests");
        shared.stop_accepting();
        python::run_hook(&hooks.before_graceful_exit, "before_graceful_exit");
        shared.registry.close_idle(STOP_GRACE);
        let deadline = Instant::now() + shared.config.graceful_exit_timeout;
        let mut quick = false;
        while !shared
            .registry
            .wait_empty(Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())))
        {
            if Instant::now() >= deadline {
                // Idle ones still in their grace are no news (a graceful
                // timeout under a second).
                match shared.registry.busy() {
                    0 => log::debug!(
                        "closing {} idle connections at the graceful timeout",
                        shared.registry.len()
                    ),
                    n => log::warn!("{n} connections still busy after the graceful timeout; closing them"),
                }
                break;
            }
            if signals.pending().any(|s| s == SIGINT || s == SIGQUIT) {
                quick = true;
                break;
            }
            // Connections that were busy when the stop began are closed by
            // their threads when done; anything that turned idle since gets
            // its grace here.
            shared.registry.close_idle(STOP_GRACE);
        }
        if quick {
            log::info!("Received SIGINT, exiting now");
        }
    } else {
        log::info!("Received SIGINT, exiting now");
        shared.stop_accepting();
    }
    shared.registry.close_all();
    if let Some(b) = &shared.balance {
        b.member().leave();
    }
    python::run_hook(&hooks.before_died, "before_died");
    Python::attach(|py| {
        for stream in ["stdout", "stderr"] {
            if let Ok(s) = py.import("sys").and_then(|sys| sys.getattr(stream)) {
                let _ = s.call_method0("flush");
            }
        }
    });
    for l in &shared.listeners {
        if let Some(p) = &l.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(0)
}

/// This worker's place in its master's accept-balancing table; without
/// one it accepts as if alone (logged: it still serves).
fn join_balance(fd: BorrowedFd<'_>, threads: usize) -> Option<server::Balance> {
    let table = match Table::open(fd) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("no accept balancing with the other workers: {e}");
            return None;
        }
    };
    match table.join(std::process::id(), threads) {
        Some(member) => Some(server::Balance::new(member)),
        None => {
            log::warn!("no accept balancing with the other workers: too many workers");
            None
        }
    }
}

/// glibc gives memory freed at the top of a thread's arena back to the
/// kernel once more than 128 KiB are free there. Every request with a 64 KiB
/// body allocates and frees its buffer and its Python `bytes`, so each one
/// crossed that line: a madvise(2) per two requests and the page faults to
/// take the pages back (strace, bench's post scenario). Up to 4 MiB per
/// arena is now kept for the next request.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    {
        const TRIM_THRESHOLD: libc::c_int = 4 << 20;
        // SAFETY: mallopt only changes a tunable of the allocator; it is
        // called before any thread of ours allocates concurrently.
        if unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) } != 1 {
            log::debug!("mallopt(M_TRIM_THRESHOLD) refused");
        }
    }
}
