//! The master: binds the listeners once, spawns worker processes that
//! inherit them, and supervises them through their control sockets, in one
//! single-threaded loop over a signal self-pipe and those sockets. It never
//! initialises Python and holds no application state, so there is little in
//! it to crash.

pub mod balance;
pub mod daemon;
pub mod listeners;
pub mod notify;
pub mod pidfile;
pub mod spawn;
pub mod supervise;
pub mod upgrade;
pub mod watch;

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

use crate::config::Config;
use crate::proto::control::{ExitReason, Message, ToMaster, ToWorker, drain};
use listeners::Listener;
use supervise::{Action, Ending, State, WorkerView};

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot set up the master: {0}")]
    Setup(String),
    #[error("cannot start a worker: {0}")]
    Spawn(io::Error),
}

/// A worker that died within this long of starting counts as a crash for
/// the respawn back-off.
const EARLY_DEATH: Duration = Duration::from_secs(5);
/// After SIGABRT for a timeout, how long before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// After a quick stop, how long workers get before SIGKILL.
const QUICK_GRACE: Duration = Duration::from_secs(3);
const TICK: Duration = Duration::from_millis(200);
/// A loop that comes back this much later than its tick means the master
/// itself did not run (stopped, frozen, blocked writing its log): that time
/// does not count against the workers' heartbeats.
const STALL: Duration = Duration::from_secs(1);
/// Workers that died while loading the app at the start without saying
/// why (killed by a signal: a crash in a C extension, the OOM killer; or
/// `os._exit`) before the server stops, as it does at once for an app that
/// raises. Fewer are retried with the back-off (a run of early deaths that
/// ends: 0 to 0.8 s apart).
const BOOT_DEATHS: u32 = 5;

struct Worker {
    id: u64,
    pid: Pid,
    generation: u64,
    state: State,
    retiring: bool,
    control: Option<UnixStream>,
    inbox: Vec<u8>,
    started: Instant,
    last_beat: Instant,
    /// When it was told to stop gracefully.
    stop_sent: Option<Instant>,
    /// When it was sent SIGABRT for not answering.
    aborted: Option<Instant>,
    /// It was aborted for not loading the app within --boot-timeout.
    boot_timed_out: bool,
    /// Stopped before it said it booted (see `stop_booting`).
    stopped_booting: bool,
    killed: bool,
    requests: u64,
    /// `--timeout` and `--graceful-exit-timeout` as the worker was started
    /// with: it beats and stops by these, and a reload that changes them
    /// applies to its successors only.
    timeout: Option<Duration>,
    graceful_exit_timeout: Duration,
}

impl Worker {
    /// Stops a worker that has not said it booted: it reads its control
    /// socket only once it has. SIGTERM ends it while it imports the app
    /// (no handler yet); once its handlers are in (its before_serve hook,
    /// or Booted not yet read here) it leaves before accepting, or, if it
    /// already serves, stops gracefully. SIGINT there would cut off what
    /// it had just accepted.
    fn stop_booting(&mut self) {
        self.signal(Signal::SIGTERM);
        self.stopped_booting = true;
    }

    /// Still loading the app after `boot_timeout`.
    fn boot_overdue(&self, now: Instant, boot_timeout: Duration) -> bool {
        self.state == State::Booting && self.aborted.is_none() && now.duration_since(self.started) > boot_timeout
    }

    /// Running, and silent for longer than its `--timeout`.
    fn beat_overdue(&self, now: Instant) -> bool {
        self.state == State::Running
            && self.aborted.is_none()
            && self.timeout.is_some_and(|t| now.duration_since(self.last_beat) > t)
    }

    fn view(&self) -> WorkerView {
        WorkerView {
            id: self.id,
            generation: self.generation,
            state: self.state,
            retiring: self.retiring,
        }
    }

    fn tell(&mut self, msg: &ToWorker) {
        let Some(sock) = self.control.as_mut() else { return };
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        if let Err(e) = sock.write_all(&buf) {
            log::debug!("worker {}: cannot send {msg:?}: {e}", self.pid);
        }
    }

    fn signal(&self, sig: Signal) {
        if let Err(e) = kill(self.pid, sig) {
            log::debug!("cannot send {sig} to worker {}: {e}", self.pid);
        }
    }
}

/// How the master is stopping, once it is.
#[derive(Clone, Copy)]
enum Stopping {
    Graceful { kill_at: Instant },
    Quick { kill_at: Instant },
}

pub struct Master {
    config: Config,
    announcer: notify::Announcer,
    pidfile: Option<pidfile::Pidfile>,
    /// Every worker of the current generation has booted (READY was said).
    settled: bool,
    /// It has been settled once: the start is over.
    served: bool,
    listeners: Vec<Listener>,
    worker_binary: spawn::WorkerBinary,
    workers: Vec<Worker>,
    desired: usize,
    generation: u64,
    next_id: u64,
    crashes: u32,
    /// Workers in a row that died while loading the app before the start
    /// was over (a worker that boots ends the run).
    boot_deaths: u32,
    /// When the last of those early deaths was.
    last_crash: Option<Instant>,
    next_spawn: Instant,
    stopping: Option<Stopping>,
    /// The exit code once a worker failed to boot.
    halt: Option<i32>,
    /// A new master started by USR2, while it runs.
    new_master: Option<Pid>,
    /// Started by USR2: the old master, until it exits.
    old_master: Option<Pid>,
    /// The accept-balancing table the workers share, and its fd for them
    /// (none where it could not be made).
    balance: Option<(balance::Table, std::os::fd::OwnedFd)>,
    /// When `check_deadlines` last ran (see [`STALL`]).
    last_check: Instant,
    /// The last run of `check_deadlines` came after a stall.
    stalled: bool,
}

fn random_up_to(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS: good enough to spread restarts.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(max);
    h.finish() % (max + 1)
}

impl Master {
    /// This master was started by `old` (USR2): it takes over the pidfile
    /// name once `old` exits.
    pub fn upgraded_from(mut self, old: Pid) -> Self {
        self.old_master = Some(old);
        self
    }

    pub fn new(
        config: Config,
        listeners: Vec<Listener>,
        announcer: notify::Announcer,
        pidfile: Option<pidfile::Pidfile>,
    ) -> Result<Master, MasterError> {
        let worker_binary = match spawn::WorkerBinary::open().map_err(|e| MasterError::Setup(e.to_string())) {
            Ok(b) => b,
            Err(e) => {
                // What `Drop` would have cleaned up: no Master owns it yet.
                cleanup(&listeners);
                if let Some(p) = pidfile {
                    p.remove();
                }
                return Err(e);
            }
        };
        // Balancing is an optimisation: where the table cannot be made (a
        // seccomp filter without memfd_create), the workers accept as the
        // kernel wakes them, as before it existed.
        let balance = balance::Table::create()
            .inspect_err(|e| {
                log::warn!(
                    "Accept balancing is off: cannot create the workers' shared table ({e}); \
                     each worker accepts whatever connections it is woken for"
                )
            })
            .ok();
        Ok(Master {
            balance,
            announcer,
            pidfile,
            settled: false,
            served: false,
            desired: config.subprocess.max(1),
            config,
            listeners,
            worker_binary,
            workers: Vec::new(),
            generation: 0,
            next_id: 1,
            crashes: 0,
            boot_deaths: 0,
            last_crash: None,
            next_spawn: Instant::now(),
            stopping: None,
            halt: None,
            new_master: None,
            old_master: None,
            last_check: Instant::now(),
            stalled: false,
        })
    }

    /// Supervises until stopped; returns the exit code.
    pub fn run(mut self) -> Result<i32, MasterError> {
        let (read, write) = UnixStream::pair().map_err(|e| MasterError::Setup(format!("self-pipe: {e}")))?;
        read.set_nonblocking(true)
            .map_err(|e| MasterError::Setup(format!("self-pipe: {e}")))?;
        let mut signals = SignalDelivery::with_pipe(
            read,
            write,
            SignalOnly,
            [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD],
        )
        .map_err(|e| MasterError::Setup(format!("signals: {e}")))?;
        let mut scaling = Scaling::register().map_err(|e| MasterError::Setup(format!("signals: {e}")))?;
        for l in &self.listeners {
            log::info!("Listening on {}", l.display());
        }
        log::info!("Master started [pid {}]", std::process::id());
        // Signal handlers first: the watcher reloads by raising SIGHUP.
        if let Some(spec) = &self.config.watchfiles {
            let root = std::env::current_dir().map_err(|e| MasterError::Setup(format!("current directory: {e}")))?;
            watch::start(&root, spec).map_err(|e| MasterError::Setup(e.to_string()))?;
        }
        // Setup above (a --watchfiles scan of a large tree) is no stall.
        self.last_check = Instant::now();
        loop {
            self.reap();
            if let Some(code) = self.halt
                && self.workers.is_empty()
            {
                return Ok(code);
            }
            if self.stopping.is_some() && self.workers.is_empty() {
                log::info!("Shutting down: all workers exited");
                return Ok(0);
            }
            self.check_deadlines();
            if self.stopping.is_none() && self.halt.is_none() {
                self.apply(supervise::reconcile(self.desired, self.generation, &self.views()));
                self.announce();
            }
            self.announcer.tick();
            self.check_old_master();
            self.wait(&mut signals, &mut scaling)?;
        }
    }

    /// READY (and STATUS) once every wanted worker of the current
    /// generation serves and no old one is left.
    fn announce(&mut self) {
        let settled = self
            .workers
            .iter()
            .all(|w| w.state == State::Running && w.generation == self.generation)
            && self.workers.len() == self.desired;
        if settled && !self.settled {
            self.announcer.ready(&format!("{} workers", self.workers.len()));
        }
        self.settled = settled;
        self.served |= settled;
    }

    /// After a USR2 upgrade, the new master takes the pidfile name and
    /// becomes systemd's main process once the old master has exited.
    fn check_old_master(&mut self) {
        let Some(old) = self.old_master else { return };
        if nix::unistd::getppid() == old {
            return;
        }
        self.old_master = None;
        log::info!("The old master {old} exited; this master takes over");
        // The socket files it made are ours to remove at exit now (nginx's
        // rule); one systemd or fd://N handed it stays theirs.
        for l in &mut self.listeners {
            if let listeners::Local::Unix(path) = &l.local
                && l.file_after_takeover
                && !path.starts_with('@')
                && !path.is_empty()
            {
                l.unix_path = Some(PathBuf::from(path));
            }
        }
        if let (Some(p), Some(name)) = (self.pidfile.as_mut(), self.config.pidfile.as_ref())
            && let Err(e) = p.rename_to(name)
        {
            log::error!("{e}");
        }
        self.announcer.main_pid(std::process::id());
    }

    fn views(&self) -> Vec<WorkerView> {
        self.workers.iter().map(Worker::view).collect()
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Spawn => {
                    // Nor before a worker aborted for its boot timeout is
                    // reaped: whether to halt or retry is decided then.
                    if Instant::now() < self.next_spawn || self.workers.iter().any(|w| w.boot_timed_out) {
                        continue;
                    }
                    if let Err(e) = self.spawn() {
                        log::error!("cannot start a worker: {e}");
                        self.note_crash();
                        self.next_spawn = self.next_spawn.max(Instant::now() + TICK);
                    }
                }
                Action::Stop(id) => {
                    if let Some(w) = self.workers.iter_mut().find(|w| w.id == id) {
                        log::info!("Stopping worker {} gracefully", w.pid);
                        if w.state == State::Booting {
                            // Obsolete before it served.
                            w.stop_booting();
                        }
                        w.state = State::Stopping;
                        w.stop_sent = Some(Instant::now());
                        w.tell(&ToWorker::Stop { graceful: true });
                    }
                }
            }
        }
    }

    fn spawn(&mut self) -> io::Result<()> {
        let max = match self.config.max_requests {
            0 => 0,
            n => n + random_up_to(self.config.max_requests_jitter),
        };
        let spawned = spawn::spawn_worker(
            &self.worker_binary.path(),
            &self.listeners,
            self.balance.as_ref().map(|(_, fd)| fd.as_fd()),
            max,
            &self.config,
        )?;
        let pid = Pid::from_raw(spawned.child.id() as i32);
        spawned.control.set_nonblocking(true)?;
        // The Child handle is not needed: reaping is done by waitpid(-1).
        drop(spawned.child);
        let now = Instant::now();
        log::info!("Booting worker {pid}");
        self.workers.push(Worker {
            id: self.next_id,
            pid,
            generation: self.generation,
            state: State::Booting,
            retiring: false,
            control: Some(spawned.control),
            inbox: Vec::new(),
            started: now,
            last_beat: now,
            stop_sent: None,
            aborted: None,
            boot_timed_out: false,
            stopped_booting: false,
            killed: false,
            requests: 0,
            timeout: self.config.timeout,
            graceful_exit_timeout: self.config.graceful_exit_timeout,
        });
        self.next_id += 1;
        Ok(())
    }

    /// Waits for a signal, a worker message, or the next tick.
    fn wait(
        &mut self,
        signals: &mut SignalDelivery<UnixStream, SignalOnly>,
        scaling: &mut Scaling,
    ) -> Result<(), MasterError> {
        let sig_fd = signals.get_read().as_fd();
        let mut fds = vec![
            PollFd::new(sig_fd, PollFlags::POLLIN),
            PollFd::new(scaling.read.as_fd(), PollFlags::POLLIN),
        ];
        let socks: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].control.is_some())
            .collect();
        for &i in &socks {
            if let Some(c) = &self.workers[i].control {
                fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            }
        }
        let sleep = self.announcer.max_sleep().map_or(TICK, |w| w.min(TICK));
        let timeout = PollTimeout::try_from(sleep.as_millis() as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(MasterError::Setup(format!("poll: {e}"))),
        }
        let ready: Vec<usize> = fds[2..]
            .iter()
            .zip(&socks)
            .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, &i)| i)
            .collect();
        drop(fds);
        for i in ready {
            self.read_worker(i);
        }
        // Drain first, then act, or a signal arriving meanwhile is lost.
        let pending: Vec<i32> = signals.pending().collect();
        for sig in pending {
            self.on_signal(sig);
        }
        for up in scaling.drain() {
            self.scale(up);
        }
        Ok(())
    }

    /// TTIN (`up`) or TTOU, once per signal delivered.
    fn scale(&mut self, up: bool) {
        if self.stopping.is_some() {
            return;
        }
        if up {
            self.desired += 1;
            log::info!("Received SIGTTIN: {} workers", self.desired);
        } else {
            if self.desired > 1 {
                self.desired -= 1;
            }
            log::info!("Received SIGTTOU: {} workers", self.desired);
        }
    }

    fn read_worker(&mut self, i: usize) {
        let w = &mut self.workers[i];
        let Some(sock) = w.control.as_mut() else { return };
        let mut chunk = [0u8; 1024];
        loop {
            match sock.read(&mut chunk) {
                // It exited (or is about to); waitpid will tell how. A reset
                // says the same: it exited with our message unread (a worker
                // that failed to boot never reads its socket).
                Ok(0) => {
                    w.control = None;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    w.control = None;
                    break;
                }
                Ok(n) => w.inbox.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("worker {}: control socket failed: {e}", w.pid);
                    w.control = None;
                    break;
                }
            }
        }
        let msgs = match drain::<ToMaster>(&mut w.inbox) {
            Ok(m) => m,
            Err(e) => {
                log::error!("worker {} sent garbage ({e}); killing it", w.pid);
                w.signal(Signal::SIGKILL);
                w.control = None;
                return;
            }
        };
        let mut booted = false;
        for m in msgs {
            match m {
                ToMaster::Booted => {
                    booted = true;
                    log::info!("Worker {} booted", w.pid);
                    w.state = if w.state == State::Stopping {
                        State::Stopping
                    } else {
                        State::Running
                    };
                    w.last_beat = Instant::now();
                }
                ToMaster::Heartbeat { requests } => {
                    w.last_beat = Instant::now();
                    w.requests = requests;
                }
                ToMaster::Exiting {
                    reason: ExitReason::MaxRequests,
                } => {
                    log::info!("Worker {} reached its max requests; replacing it", w.pid);
                    w.retiring = true;
                }
                ToMaster::Exiting { reason } => log::info!("Worker {} is exiting: {reason:?}", w.pid),
            }
        }
        if booted {
            // Deaths while loading the app count in a row.
            self.boot_deaths = 0;
        }
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            SIGCHLD => {} // reaped at the top of the loop
            SIGTERM => self.stop(true, "Received SIGTERM"),
            SIGINT | SIGQUIT => self.stop(false, "Received SIGINT"),
            SIGHUP if self.stopping.is_none() => {
                match crate::config::reload(&self.config) {
                    Ok(r) => {
                        for key in &r.ignored {
                            log::warn!("--{key} changed; it applies only after a restart (kept the running value)");
                        }
                        if r.config.subprocess == 0 && self.config.subprocess != 0 {
                            log::warn!("-p 0 (a single process) applies only at start; keeping 1 worker");
                        }
                        self.config = r.config;
                        // After WINCH the new master serves: a reload here
                        // (systemd still sees this master until TERM) must
                        // not bring this one's workers back beside it.
                        if !(self.new_master.is_some() && self.desired == 0) {
                            self.desired = self.config.subprocess.max(1);
                        }
                        crate::logging::set_level(self.config.log_level);
                    }
                    Err(e) => log::error!("Cannot reload the configuration, keeping the current one: {e}"),
                }
                self.generation += 1;
                // A reload is the operator's (or the watcher's) word that
                // the app may load now: no back-off left from failed boots.
                self.next_spawn = Instant::now();
                log::info!("Received SIGHUP: replacing every worker, one at a time");
                self.announcer.reloading();
                self.settled = false;
            }
            SIGUSR2 if self.stopping.is_none() && self.new_master.is_none() && self.old_master.is_none() => {
                log::info!("Received SIGUSR2: starting a new master from the binary on disk");
                match upgrade::start_new_master(&self.listeners, &self.config.listen) {
                    Ok(pid) => {
                        log::info!(
                            "New master {pid} started; WINCH then TERM this one ({}) to finish",
                            std::process::id()
                        );
                        self.new_master = Some(pid);
                    }
                    Err(e) => log::error!("cannot start a new master: {e}"),
                }
            }
            SIGUSR2 => log::warn!("Received SIGUSR2 during an upgrade or a stop; ignored"),
            SIGWINCH if self.stopping.is_none() => {
                if self.new_master.is_some() {
                    log::info!("Received SIGWINCH: stopping this master's workers; the new master serves");
                    self.desired = 0;
                } else {
                    log::info!("Received SIGWINCH without an upgrade under way; ignored");
                }
            }
            SIGUSR1 => {
                log::info!("Received SIGUSR1: reopening logs");
                crate::logging::reopen();
                for w in &mut self.workers {
                    w.tell(&ToWorker::ReopenLogs);
                }
            }
            _ => {}
        }
    }

    /// Stops every worker; `why` starts the log line.
    fn stop(&mut self, graceful: bool, why: &str) {
        let now = Instant::now();
        match (self.stopping, graceful) {
            (None, true) => {
                log::info!("{why}: stopping gracefully");
                // Workers enforce the graceful timeout themselves; this is
                // the backstop for one that does not.
                let longest = self
                    .workers
                    .iter()
                    .map(|w| w.graceful_exit_timeout)
                    .max()
                    .unwrap_or(self.config.graceful_exit_timeout);
                let kill_at = now + longest + KILL_GRACE;
                self.stopping = Some(Stopping::Graceful { kill_at });
            }
            (None | Some(Stopping::Graceful { .. }), false) => {
                log::info!("{why}: stopping now");
                self.stopping = Some(Stopping::Quick {
                    kill_at: now + QUICK_GRACE,
                });
            }
            _ => return,
        }
        match self.new_master {
            // After USR2 the service goes on in the new master: tell systemd
            // whom to follow instead of announcing a stop.
            Some(pid) => self.announcer.main_pid(pid.as_raw() as u32),
            None => self.announcer.stopping(),
        }
        for w in &mut self.workers {
            if !graceful {
                // Also for a worker still importing the app, which reads
                // its control socket only once booted.
                w.signal(Signal::SIGINT);
            } else if w.state == State::Booting {
                w.stop_booting();
            }
            w.state = State::Stopping;
            w.tell(&ToWorker::Stop { graceful });
        }
    }

    /// Reaps every exited worker and decides what its end means.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(s) => s,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("waitpid failed: {e}");
                    return;
                }
            };
            let Some(pid) = status.pid() else { continue };
            if Some(pid) == self.new_master {
                let ending = supervise::classify(status);
                log::error!("The new master {pid} {}; this master keeps serving", ending.describe());
                self.new_master = None;
                if self.desired == 0 {
                    self.desired = self.config.subprocess.max(1);
                }
                continue;
            }
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let w = self.workers.remove(i);
            if let Some((table, _)) = &self.balance {
                table.forget(pid.as_raw() as u32);
            }
            let ending = supervise::classify(status);
            // A worker aborted for a timeout was told nothing: its end is a
            // failure like a crash.
            let expected = w.state == State::Stopping && w.aborted.is_none();
            let stopped_booting = w.stopped_booting && ending == Ending::Signaled(Signal::SIGTERM);
            let what = if w.killed && ending == Ending::Signaled(Signal::SIGKILL) {
                "was killed by zibai (SIGKILL)".to_string()
            } else if stopped_booting {
                "was stopped while loading the app".to_string()
            } else {
                ending.describe()
            };
            if expected && (stopped_booting || !matches!(ending, Ending::Signaled(_))) {
                log::info!("Worker {} {what}", w.pid);
            } else {
                log::warn!("Worker {} {what}", w.pid);
            }
            let boot_failure = match ending {
                Ending::Exited(code) if w.state == State::Booting && ending.is_boot_failure() => Some(code),
                _ if w.boot_timed_out => Some(supervise::WORKER_BOOT_ERROR),
                _ => None,
            };
            if let Some(code) = boot_failure
                && self.stopping.is_none()
            {
                if !self.served || !self.workers.iter().any(|w| w.state == State::Running) {
                    // gunicorn's rule: a worker that cannot load the app
                    // will not do better next time. At the start (before
                    // every first worker served), or with none serving:
                    // stop instead of looping.
                    log::error!("A worker failed to boot; shutting down (exit code {code})");
                    self.halt = Some(code);
                    self.stop(true, "A worker failed to boot");
                    continue;
                }
                // Others serve (a reload of a broken deploy, a recycled
                // worker's successor): they go on, and the new worker is
                // tried again with the back-off until the app loads.
                let serving = self.workers.iter().filter(|w| w.state == State::Running).count();
                let delay = self.note_crash();
                log::error!(
                    "A new worker could not load the app; the {serving} serving worker(s) go on serving. \
                     Trying again in {delay:?} (fix the app, or send HUP once fixed)"
                );
                self.announcer.ready(&format!(
                    "a new worker failed to load the app; {serving} old worker(s) serving"
                ));
                continue;
            }
            if w.state == State::Booting && !expected && self.stopping.is_none() && !self.served {
                // Retried forever with the back-off, this kept `--daemon`
                // (which waits for the start) from ever returning.
                self.boot_deaths += 1;
                if self.boot_deaths >= BOOT_DEATHS {
                    let code = supervise::WORKER_BOOT_ERROR;
                    log::error!(
                        "{} workers died while loading the app, the last one {what}; shutting down (exit code {code})",
                        self.boot_deaths
                    );
                    self.halt = Some(code);
                    self.stop(true, "Workers keep dying while loading the app");
                    continue;
                }
            }
            if !expected && w.started.elapsed() < EARLY_DEATH {
                let delay = self.note_crash();
                if !delay.is_zero() {
                    log::warn!("{} early worker deaths in a row; next start in {delay:?}", self.crashes);
                }
            } else if !expected && self.last_crash.is_none_or(|at| w.started > at) {
                // It served EARLY_DEATH and was started since the last
                // early death: that run is over (as in `check_deadlines`).
                self.crashes = 0;
            }
        }
    }

    /// Counts an early death (or a failed boot) and puts the next spawn
    /// off by the back-off; returns the delay.
    fn note_crash(&mut self) -> Duration {
        self.crashes += 1;
        self.last_crash = Some(Instant::now());
        let delay = supervise::backoff(self.crashes);
        self.next_spawn = Instant::now() + delay;
        delay
    }

    /// Timeouts: boot and heartbeat, and the stop backstop.
    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let gap = now.saturating_duration_since(self.last_check);
        self.last_check = now;
        let stalled = gap > TICK + STALL;
        if stalled && !self.stalled {
            // Heartbeats could not be read meanwhile, nor sent if the
            // workers were stopped with the master: judging them now
            // aborted every healthy worker at once. Once per stall: a loop
            // that is slow every time (a stderr that barely drains) is no
            // pause, and what the workers sent is read below.
            log::warn!(
                "The master did not run for {:.1?} (stopped, or blocked writing its log); \
                 heartbeat and boot deadlines exclude that time",
                gap
            );
            for w in &mut self.workers {
                w.last_beat = (w.last_beat + gap).min(now);
                if w.state == State::Booting {
                    w.started = (w.started + gap).min(now);
                }
            }
        }
        self.stalled = stalled;
        // What came while the loop was busy elsewhere (beats, a worker
        // saying it booted) counts before any worker is judged.
        if self
            .workers
            .iter()
            .any(|w| w.beat_overdue(now) || w.boot_overdue(now, self.config.boot_timeout))
        {
            for i in 0..self.workers.len() {
                self.read_worker(i);
            }
        }
        // A worker started since the last early death that has served for
        // EARLY_DEATH ends the run: the next one, maybe hours later, starts
        // a new count (it used to inherit the old run's longest delay).
        // Workers older than the run (serving while their successors fail
        // to boot) say nothing about it.
        if self.crashes > 0
            && self.workers.iter().any(|w| {
                w.state == State::Running
                    && w.started.elapsed() >= EARLY_DEATH
                    && self.last_crash.is_none_or(|at| w.started > at)
            })
        {
            log::info!(
                "Workers serve again after {} early deaths; the back-off starts over",
                self.crashes
            );
            self.crashes = 0;
        }
        if let Some(Stopping::Graceful { kill_at } | Stopping::Quick { kill_at }) = self.stopping
            && now >= kill_at
        {
            for w in &mut self.workers {
                log::warn!("Worker {} did not stop in time; killing it", w.pid);
                w.signal(Signal::SIGKILL);
                w.killed = true;
            }
            // Once per backstop.
            self.stopping = Some(Stopping::Quick {
                kill_at: now + Duration::from_secs(3600),
            });
        }
        for w in &mut self.workers {
            if let Some(at) = w.aborted {
                if !w.killed && now.duration_since(at) >= KILL_GRACE {
                    w.signal(Signal::SIGKILL);
                    w.killed = true;
                }
                continue;
            }
            // A worker told to stop has its graceful timeout, and a little.
            let stop_backstop = w.graceful_exit_timeout + KILL_GRACE;
            if w.state == State::Stopping
                && !w.killed
                && w.stop_sent.is_some_and(|at| now.duration_since(at) > stop_backstop)
            {
                log::warn!("Worker {} did not stop in time; killing it", w.pid);
                w.signal(Signal::SIGKILL);
                w.killed = true;
                continue;
            }
            let overdue = match w.state {
                State::Booting => w.boot_overdue(now, self.config.boot_timeout),
                State::Running => w.beat_overdue(now),
                State::Stopping => false,
            };
            if overdue {
                log::error!(
                    "Worker {} timed out ({}); aborting it",
                    w.pid,
                    if w.state == State::Booting {
                        "boot"
                    } else {
                        "no heartbeat"
                    }
                );
                w.signal(Signal::SIGABRT);
                w.aborted = Some(now);
                w.boot_timed_out = w.state == State::Booting;
                w.state = State::Stopping;
            }
        }
    }
}

/// TTIN and TTOU, counted: each delivery writes one byte (`+` or `-`) to a
/// socket of their own, in order. Through the iterator every other signal
/// goes through, signals that arrive before the loop reads them are
/// merged, and `kill -TTIN` six times in a row added one worker, not six
/// (gunicorn queues them too).
struct Scaling {
    read: UnixStream,
    /// The handlers write here; open for as long as they are registered.
    _write: UnixStream,
    ids: [signal_hook::SigId; 2],
}

impl Scaling {
    fn register() -> io::Result<Scaling> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&write);
        let mut ids = Vec::with_capacity(2);
        for (sig, byte) in [(SIGTTIN, b'+'), (SIGTTOU, b'-')] {
            let handler = move || {
                // SAFETY: send(2) is async-signal-safe; `fd` stays open
                // while the handler is registered (Scaling owns it and
                // unregisters on drop), and MSG_DONTWAIT never blocks: a
                // full socket drops the byte (thousands unread first).
                unsafe {
                    libc::send(
                        fd,
                        (&byte as *const u8).cast(),
                        1,
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    );
                }
            };
            // SAFETY: the handler only calls send(2) (see above).
            ids.push(unsafe { signal_hook::low_level::register(sig, handler) }?);
        }
        Ok(Scaling {
            read,
            _write: write,
            ids: [ids[0], ids[1]],
        })
    }

    /// The scaling signals delivered since the last call, in order: true
    /// for TTIN.
    fn drain(&mut self) -> Vec<bool> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match self.read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend(buf[..n].iter().map(|&b| b == b'+')),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        got
    }
}

impl Drop for Scaling {
    fn drop(&mut self) {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Removes unix socket files the master created.
pub fn cleanup(listeners: &[Listener]) {
    for l in listeners {
        if let Some(p) = &l.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        // A new master serves on the same sockets: their files stay.
        if self.new_master.is_none() {
            cleanup(&self.listeners);
        }
        if let Some(p) = self.pidfile.take() {
            // A new master takes over: it gets the name now, its PIDFILE.2
            // moved over ours, so the pidfile never goes missing (the new
            // master renames it itself only once it notices we are gone,
            // up to a tick later, and `kill $(cat app.pid)` in between
            // found nothing).
            let handed_over = self.new_master.is_some_and(|new| {
                let theirs = upgrade::upgrade_pidfile(p.path());
                matches!(pidfile::read_pid(&theirs), Ok(Some(pid)) if pid == new.as_raw() as u32)
                    && std::fs::rename(&theirs, p.path()).is_ok()
            });
            if !handed_over {
                p.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each TTIN and TTOU delivered counts, in order. Through the signal
    /// iterator, signals delivered before the loop read them were merged
    /// into one (raise() delivers before it returns, as a signal from
    /// another process does while the loop is busy).
    #[test]
    fn every_scaling_signal_counts_in_order() {
        let mut scaling = Scaling::register().unwrap();
        for sig in [SIGTTIN, SIGTTIN, SIGTTOU, SIGTTIN] {
            signal_hook::low_level::raise(sig).unwrap();
        }
        assert_eq!(scaling.drain(), [true, true, false, true]);
        assert!(scaling.drain().is_empty());
    }
}
