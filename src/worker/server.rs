//! Connection I/O: `max_workers` identical threads share one epoll set in
//! which every socket is registered one-shot, so a ready connection belongs
//! to exactly one thread until that thread re-arms it. A thread reads what
//! is there without blocking; an incomplete head goes back to epoll, so slow
//! or idle clients never hold a thread. Only a complete head (and a small
//! body that has fully arrived) is handed to the app, on the same thread —
//! no hand-offs. The GIL is released around every wait (epoll, a slow
//! client's socket); the non-blocking calls between two requests run
//! attached, which saves a GIL hand-off per request (see `thread_main`).
//! Quick responses are written in small batches before the thread waits
//! (see `flush_batch`).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::date_now;
use super::input::{BodyReader, ExpectContinue, Input};
use super::io::{flush_parked, read_some, write_or_park};
use super::registry::{ConnSocket, ConnState, Registry};
use super::response::{Framed, ParkSpot, Parked, Response, ResponseSetup, StartResponse};
use super::strings::Strings;
use super::wsgi::{AppCall, ConnInfo, Forwarded, Peer, Statics};
use crate::config::Config;
use crate::logging::access::{AccessLog, Record};
use crate::master::balance::{Member, Park};
use crate::master::listeners::{Listener, Local};
use crate::proto::forwarded::{client_from_x_forwarded_for, scheme_from_headers};
use crate::proto::proxy::ProxyHeader;
use crate::proto::request::{BodyKind, HeadIndex, Request, RequestError, Version, parse_request};
use crate::proto::response::simple_response;

/// Bodies up to this size are waited for before the app is called, so a
/// slow uploader of a small form does not hold an app thread.
const PREREAD_BODY: u64 = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// epoll tokens at or below this are listeners (index + 1); above, a `Conn` pointer.
const MAX_LISTENER_TOKEN: u64 = 4096;
const ACCEPT_BATCH: usize = 64;

pub struct Shared {
    pub config: Config,
    pub epoll: Epoll,
    pub listeners: Vec<Listener>,
    pub registry: Registry,
    pub app: Py<PyAny>,
    pub statics: Statics,
    /// `None` with `--no-access-log`.
    pub access_log: Option<AccessLog>,
    /// What each app thread is doing, for the thread that waits next.
    pub activity: Activity,
    /// Accept balancing with the other workers; `None` in single-process
    /// mode (or when the table was full).
    pub balance: Option<Balance>,
}

/// This worker's side of accept balancing (see `master::balance`).
pub struct Balance {
    member: Member,
    /// Whether the listeners are out of the epoll set. The lock orders
    /// parking, unparking and the stop.
    parked: Mutex<bool>,
    /// `parked`, read without the lock on every closed connection.
    parked_hint: AtomicBool,
}

impl Balance {
    pub fn new(member: Member) -> Balance {
        Balance {
            member,
            parked: Mutex::new(false),
            parked_hint: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        // A flag behind it: a poisoned lock holds nothing broken.
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn member(&self) -> &Member {
        &self.member
    }

    pub fn is_parked(&self) -> bool {
        self.parked_hint.load(Ordering::Relaxed)
    }
}

/// What each app thread is doing: detached, attached in the loop between
/// requests (or holding a request it is about to attach for), or serving a
/// request since a given time. [`Pool`] reads it to decide whether an idle
/// thread should wait for requests at all: while another thread holds the
/// GIL and is getting through requests, that thread takes the ready ones
/// itself, and a second thread taking one would only make it hand the GIL
/// over.
pub struct Activity {
    /// Per thread: [`DETACHED`], [`IN_LOOP`], or the start of the request it
    /// serves in nanoseconds since `epoch`, plus [`SERVING_BASE`].
    threads: Vec<AtomicU64>,
    /// Per thread: the events it took from epoll beyond the one it serves.
    stashes: Vec<Stash>,
    /// Per thread: quick responses whose writes wait for the next ones (see
    /// [`flush_batch`]), and those another thread wrote because this one
    /// was stuck in the app meanwhile, left for it to drop with the GIL.
    batches: Vec<Batch>,
    /// Per thread: the last piece of the response it is finishing while
    /// the app still runs (see [`Parked`]).
    parked: Vec<Parked>,
    epoch: Instant,
    /// While set, the timer thread looks for stuck stashes and batches
    /// every [`NET_STEP`] (see [`Activity::guard`]).
    net: AtomicBool,
    /// Wakes the timer thread when there is no balance table to do it.
    pub bell: Bell,
}

/// Wakes a thread sleeping in [`Bell::wait`].
#[derive(Default)]
pub struct Bell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Bell {
    fn ring(&self) {
        *self.rung.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_one();
    }

    /// Sleeps for `timeout` or until rung.
    pub fn wait(&self, timeout: Duration) {
        let rung = self.rung.lock().unwrap_or_else(|p| p.into_inner());
        let (mut rung, _) = self
            .cv
            .wait_timeout_while(rung, timeout, |r| !*r)
            .unwrap_or_else(|p| p.into_inner());
        *rung = false;
    }
}

/// A thread's deferred responses. The thread itself adds to and flushes
/// `waiting`; a thread that finds it stuck in the app writes them instead
/// (the watcher, the listener, or the timer thread when neither exists),
/// so that responses already made never wait for the next request's app
/// call (a 2 s one held six finished responses for 2 s), and leaves what
/// holds Python objects in `written` for the owner to drop.
#[derive(Default)]
struct Batch {
    waiting: Mutex<Vec<Served>>,
    /// `waiting.len()`, read without the lock.
    len: std::sync::atomic::AtomicUsize,
    written: Mutex<Vec<Option<Framed>>>,
}

impl Batch {
    fn waiting(&self) -> MutexGuard<'_, Vec<Served>> {
        // Responses only: a poisoned lock holds nothing broken.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn written(&self) -> MutexGuard<'_, Vec<Option<Framed>>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }
}

const DETACHED: u64 = 0;
const IN_LOOP: u64 = 1;
const SERVING_BASE: u64 = 2;

/// A request served for less than this is presumed to be running Python
/// (holding the GIL) rather than waiting (a database, a sleep, a slow
/// client), so the thread serving it will soon take the next one.
const PRESUMED_RUNNING: Duration = Duration::from_micros(200);
/// How often the watching thread looks whether the busy threads still are.
pub const WATCH_STEP: Duration = Duration::from_millis(1);
/// How often the timer thread looks while the net is armed. Under load
/// the net is armed nearly all the time (a thread's batch is rarely empty
/// when it calls the app), so each look is a wake-up per step: at 1 ms,
/// Flask at 2 processes took twice the voluntary context switches and
/// 10-25% fewer requests per second (5 ms: as before the net).
pub const NET_STEP: Duration = Duration::from_millis(5);

impl Activity {
    pub fn new(threads: usize) -> Activity {
        Activity {
            threads: (0..threads).map(|_| AtomicU64::new(DETACHED)).collect(),
            stashes: (0..threads).map(|_| Stash::default()).collect(),
            batches: (0..threads).map(|_| Batch::default()).collect(),
            parked: (0..threads).map(|_| Parked::default()).collect(),
            epoch: Instant::now(),
            net: AtomicBool::new(false),
            bell: Bell::default(),
        }
    }

    /// Called by a thread about to run the app: if deferred responses or
    /// stashed events are waiting (its own or another's) and no thread
    /// watches, the timer thread must look every [`NET_STEP`] until
    /// nothing waits, so that a long request does not hold them for the
    /// timer's whole 100 ms step. A look costs the timer a wake-up; arming
    /// costs one wake of the timer per quiet-to-busy change.
    fn guard(&self, shared: &Shared) {
        // Pairs with the fence in `disarm_net`: either this thread sees the
        // net disarmed, or the timer sees what waits.
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.net.load(Ordering::Relaxed) && !self.net.swap(true, Ordering::Relaxed) {
            match &shared.balance {
                Some(b) => b.member.wake_self(),
                None => self.bell.ring(),
            }
        }
    }

    /// Called by a thread about to run the app's Python while it holds
    /// something another thread may have to take over: stashed events,
    /// deferred responses, a parked last piece (see [`Parked`]). A
    /// watcher (woken if it sleeps untimed) or, without one, the timer's
    /// net does it if the Python takes long.
    fn look_while_stuck(&self, shared: &Shared) {
        // Pairs with the fence a watcher passes on its way to listening:
        // either this thread sees it gone (and arms the net), or the
        // listener sees what this thread holds.
        std::sync::atomic::fence(Ordering::SeqCst);
        if POOL.watched.load(Ordering::Relaxed) {
            POOL.wake_untimed_watcher();
        } else {
            self.guard(shared);
        }
    }

    /// [`Activity::look_while_stuck`] for a parked last piece, which every
    /// response with a `close()` makes (Flask's, Django's). With a single
    /// app thread there is nobody else to serve meanwhile anyway, and the
    /// net would keep the timer looking every [`NET_STEP`] while requests
    /// come less than 100 ms apart (Flask, `-w 1`, a request every 50 ms:
    /// 8.7 voluntary context switches per request against 1.5); the
    /// timer's regular look writes a stuck piece within 100 ms.
    fn cover_parked(&self, shared: &Shared) {
        if self.threads.len() > 1 {
            self.look_while_stuck(shared);
        }
    }

    /// Whether the timer thread should look every [`WATCH_STEP`].
    pub fn net_armed(&self) -> bool {
        self.net.load(Ordering::Relaxed)
    }

    /// The timer thread's look while the net is armed: writes what stuck
    /// threads hold; returns whether anything was waiting.
    pub fn net_look(&self, shared: &Shared) -> bool {
        if !self.anything_stashed() {
            return false;
        }
        self.release_stuck_stashes(shared, usize::MAX);
        true
    }

    /// The timer thread found nothing waiting for a while.
    pub fn disarm_net(&self) {
        self.net.store(false, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.anything_stashed() {
            self.net.store(true, Ordering::Relaxed);
        }
    }

    fn set(&self, me: usize, state: u64) {
        self.threads[me].store(state, Ordering::Relaxed);
    }

    fn serving(&self, me: usize, started: Instant) {
        let since = started.saturating_duration_since(self.epoch).as_nanos() as u64;
        self.set(me, SERVING_BASE + since);
    }

    /// Whether another thread is attached and getting through requests.
    fn busy_other_than(&self, me: usize) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        (0..self.threads.len()).any(|i| i != me && self.busy(i, now))
    }

    fn busy(&self, i: usize, now: u64) -> bool {
        let s = self.threads[i].load(Ordering::Relaxed);
        s == IN_LOOP || (s >= SERVING_BASE && now.saturating_sub(s - SERVING_BASE) < PRESUMED_RUNNING.as_nanos() as u64)
    }

    /// Whether a thread holds events or deferred responses that another
    /// thread may have to take over.
    fn anything_stashed(&self) -> bool {
        (0..self.threads.len()).any(|i| self.holds_anything(i))
    }

    /// Whether thread `i` holds events, deferred responses or a parked
    /// last piece.
    fn holds_anything(&self, i: usize) -> bool {
        self.stashes[i].len.load(Ordering::Relaxed) > 0
            || self.batches[i].len.load(Ordering::Relaxed) > 0
            || self.parked[i].waiting()
    }

    /// Puts back into epoll the events stashed by threads that are stuck in
    /// the app (serving one request for longer than [`PRESUMED_RUNNING`]),
    /// for the listener to take, and writes their deferred responses and
    /// parked last pieces.
    pub fn release_stuck_stashes(&self, shared: &Shared, me: usize) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        for (i, stash) in self.stashes.iter().enumerate() {
            if i != me && stash.len.load(Ordering::Relaxed) > 0 && !self.busy(i, now) {
                hand_back(shared, stash.take_all());
            }
        }
        for (i, batch) in self.batches.iter().enumerate() {
            if i != me && batch.len.load(Ordering::Relaxed) > 0 && !self.busy(i, now) {
                let taken = {
                    let mut waiting = batch.waiting();
                    batch.len.store(0, Ordering::Relaxed);
                    std::mem::take(&mut *waiting)
                };
                let written: Vec<Option<Framed>> = taken.into_iter().map(|s| write_served(shared, s)).collect();
                batch.written().extend(written);
            }
        }
        for (i, parked) in self.parked.iter().enumerate() {
            if i != me
                && parked.waiting()
                && !self.busy(i, now)
                && let Some(made) = parked.write_for_owner()
            {
                self.batches[i].written().push(Some(made));
            }
        }
    }
}

/// Events one thread took from epoll in one wait beyond the first, served
/// by that thread next. Taking several per wait saves a system call per
/// request under load (bjoern takes up to 16). A thread stuck in the app
/// must not keep them: the watching thread puts them back into epoll (see
/// [`Activity::release_stuck_stashes`]), and a thread that gives the GIL up
/// puts its own back first.
#[derive(Default)]
struct Stash {
    tokens: Mutex<std::collections::VecDeque<u64>>,
    /// `tokens.len()`, read without the lock.
    len: std::sync::atomic::AtomicUsize,
}

/// Events taken from epoll per wait.
const EVENT_BATCH: usize = 8;

impl Stash {
    fn lock(&self) -> MutexGuard<'_, std::collections::VecDeque<u64>> {
        // Tokens only: a poisoned lock holds nothing broken.
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pop(&self) -> Option<u64> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut q = self.lock();
        let token = q.pop_front();
        self.len.store(q.len(), Ordering::Relaxed);
        token
    }

    fn push(&self, events: &[EpollEvent]) {
        if events.is_empty() {
            return;
        }
        let mut q = self.lock();
        q.extend(events.iter().map(EpollEvent::data));
        self.len.store(q.len(), Ordering::Relaxed);
    }

    /// Keeps a connection that is not in epoll (just accepted) for this
    /// thread to read next; [`hand_back`] registers it if it comes to that.
    fn push_conn(&self, conn: Box<Conn>) {
        let mut q = self.lock();
        q.push_back(Box::into_raw(conn) as u64);
        self.len.store(q.len(), Ordering::Relaxed);
    }

    fn take_all(&self) -> std::collections::VecDeque<u64> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return Default::default();
        }
        let mut q = self.lock();
        self.len.store(0, Ordering::Relaxed);
        std::mem::take(&mut *q)
    }
}

struct Conn {
    sock: Arc<ConnSocket>,
    slot: usize,
    listener: usize,
    peer: Peer,
    /// Bytes read and not yet consumed by a request.
    buf: Vec<u8>,
    /// `buf` holds the start of a head (or a small body) that needs more bytes.
    incomplete: bool,
    /// How many bytes `buf` must hold for the request to be complete, when
    /// known (a head with a small body): the next read asks for all of it.
    want: usize,
    /// How far an incomplete head was looked at (see [`worth_parsing`]).
    head_scan: HeadScan,
    /// A response tail waiting for the socket to drain.
    out: Vec<u8>,
    out_pos: usize,
    close_after_out: bool,
    /// `--proxy-protocol` and a trusted peer: a PROXY header comes first.
    proxy_pending: bool,
    /// The head `drive` parsed, for `serve` (the buffer does not change in
    /// between).
    head: HeadIndex,
    /// In the epoll set yet (a new connection is read once before it is).
    registered: bool,
    /// The rest of a request body the app left unread, discarded as it
    /// arrives after the response went out (no app thread waits for it);
    /// the next request follows it.
    discard: Option<Box<BodyReader>>,
    /// The client may still be sending when the server closes (a body it
    /// did not read, a refused request): close with a linger.
    unread_input: bool,
    /// A thread of the app's own still reads the body (it kept
    /// `wsgi.input` past the request): what the client sends is its to
    /// read, not the server's to drop.
    input_elsewhere: bool,
    /// Closing: no more writes; what arrives is read and dropped until
    /// the client closes too, or [`LINGER`] passes.
    linger: bool,
}

/// How long a closing connection reads and drops what its client still
/// sends (see [`close_after_response`]).
const LINGER: Duration = Duration::from_secs(5);
/// What one wake-up of a lingering connection reads at most.
const LINGER_READ: usize = 256 * 1024;

impl Shared {
    pub fn register_listeners(&self) -> io::Result<()> {
        for (i, l) in self.listeners.iter().enumerate() {
            // Level-triggered and exclusive: with several workers on one
            // socket, a connection wakes one of them, not all (no herd).
            let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, i as u64 + 1);
            self.epoll.add(l.fd.as_fd(), ev)?;
        }
        if let Some(b) = &self.balance {
            b.member.set_accepting();
        }
        Ok(())
    }

    /// After an accept: stops accepting if this worker holds more than its
    /// share of connections (see `master::balance`). Returns whether it
    /// does not accept now.
    fn park_if_past_share(&self) -> bool {
        let Some(b) = &self.balance else { return false };
        if self.stopping() {
            // The stop takes what is queued (see `stop_accepting`).
            return false;
        }
        let wake_first = match b.member.should_park() {
            Park::No => return false,
            Park::Yes => false,
            Park::WakeFirst => true,
        };
        let mut parked = b.lock();
        if *parked {
            return true;
        }
        if self.stopping() {
            return false;
        }
        if wake_first {
            b.member.wake_least_loaded();
        }
        for l in &self.listeners {
            let _ = self.epoll.delete(l.fd.as_fd());
        }
        *parked = true;
        b.parked_hint.store(true, Ordering::Relaxed);
        b.member.set_parked();
        // The timer thread looks again every PARKED_RECHECK from now on.
        b.member.wake_self();
        true
    }

    /// A parked worker takes its listeners back when it is within its
    /// share again or nobody else accepts, or with `force`. Cheap when not
    /// parked.
    pub fn unpark_if_due(&self, force: bool) {
        let Some(b) = &self.balance else { return };
        if !b.is_parked() || !(force || b.member.should_unpark()) {
            return;
        }
        let mut parked = b.lock();
        if !*parked || self.stopping() {
            return;
        }
        if let Err(e) = self.register_listeners() {
            log::error!("cannot accept again: {e}");
        }
        if force {
            log::debug!("connections wait in the listen queue and no other worker takes them: accepting again");
        }
        *parked = false;
        b.parked_hint.store(false, Ordering::Relaxed);
    }

    /// Graceful stop, step one: no new connections.
    pub fn stop_accepting(&self) {
        super::STOPPING.store(true, Ordering::SeqCst);
        if let Some(b) = &self.balance {
            // Under the lock: no unpark re-adds the listeners after this.
            let _parked = b.lock();
            b.member.set_off();
        }
        // An app thread that began to accept before the store above
        // finishes (and registers what it took) before the worker looks
        // for the last connections; one that begins after it takes nothing.
        while ACCEPTING.load(Ordering::SeqCst) > 0 {
            std::thread::yield_now();
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let _ = self.epoll.delete(l.fd.as_fd());
            // On Linux, shutting down a listening socket makes it refuse
            // what is queued instead of leaving those clients hanging. Only
            // for a socket nobody else uses: other workers, a new master
            // or systemd may share an inherited one.
            if l.bound_here {
                // SAFETY: the fd is open; shutdown does not close it.
                unsafe { libc::shutdown(l.fd.as_raw_fd(), libc::SHUT_RD) };
            } else {
                // A shared socket is EPOLLEXCLUSIVE: the kernel may have woken
                // this worker alone for connections now queued, and will not
                // wake another for them. Take them before going (they are
                // served with `Connection: close`); later ones wake the
                // workers still registered.
                if let Some(conn) = accept(self, i, None) {
                    arm(self, conn, EpollFlags::EPOLLIN);
                }
            }
        }
    }

    /// The timer thread's look at a parked worker, every
    /// `PARKED_RECHECK`: it takes its listeners back if it should, or if
    /// connections waited in a listen queue at this look and the last (the
    /// worker that should take them is slow to, or was never woken for
    /// them: the kernel wakes one worker per connection, and may have woken
    /// this one before it parked). `queued` carries the last look's answer.
    pub fn recheck_parked(&self, queued: &mut bool) {
        let parked = self.balance.as_ref().is_some_and(Balance::is_parked);
        let now = parked && self.anything_queued();
        self.unpark_if_due(now && *queued);
        *queued = now;
    }

    fn anything_queued(&self) -> bool {
        let mut fds: Vec<PollFd<'_>> = self
            .listeners
            .iter()
            .map(|l| PollFd::new(l.fd.as_fd(), PollFlags::POLLIN))
            .collect();
        poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
    }

    fn stopping(&self) -> bool {
        super::STOPPING.load(Ordering::Relaxed)
    }
}

/// What a request leaves for the next I/O phase: the connection and the
/// last piece of its response.
struct Served {
    conn: Box<Conn>,
    last: Option<Framed>,
    close: bool,
    /// How long serving it took, app included.
    took: Duration,
    /// When it was done: the serving thread's clock reading until it
    /// waits again (a reading costs 26 ns, and a request here about 10 us).
    finished: Instant,
}

impl Served {
    /// Whether its last write may wait for the next request's: only a
    /// quick response on a connection that stays open with nothing
    /// pipelined behind it (which would be served next, on this thread)
    /// nor a body to discard.
    fn deferrable(&self) -> bool {
        !self.close
            && self.conn.buf.is_empty()
            && self.conn.discard.is_none()
            && self.took < DEFER_IF_UNDER
            && !self.last.as_ref().is_some_and(Framed::streams)
    }
}

/// Quick responses are written in batches of up to this many ...
const WRITE_BATCH: usize = 16;
/// ... held for at most this long ...
const WRITE_BATCH_WINDOW: Duration = Duration::from_micros(500);
/// ... and only while each request takes less than this to serve, so an
/// app that waits (a database, a sleep) never holds a finished response.
const DEFER_IF_UNDER: Duration = Duration::from_micros(200);

/// How long a thread keeps the GIL for ready requests while another waits.
const GIL_SLICE: Duration = Duration::from_millis(1);

/// Which idle thread waits for the next request. At most one thread, the
/// listener, waits in epoll; a thread that finds nothing more to serve
/// becomes the listener itself if there is none (under load that is the
/// thread that just served, so one thread alternates between epoll and the
/// app, as a single-threaded server would, and the others sleep). Of the
/// other idle threads one watches: every [`WATCH_STEP`] it looks whether
/// the listener's place is free while no thread is getting through
/// requests (they all wait in the app: a sleep, a database), and takes it,
/// handing the watch to a benched thread. The rest sleep on the bench.
///
/// One listener keeps ready requests in the kernel's queue, where the
/// thread holding the GIL takes them in order, instead of in threads that
/// wait for the GIL. CPython's GIL is not fair: a thread that releases it
/// and asks again at once usually gets it back before a waiter wakes, and
/// each such re-acquisition cancels the waiter's forced-switch request.
/// Measured with two threads under wrk, a thread holding a ready request
/// waited up to 1.6 s for the GIL. So the thread holding the GIL gives it
/// up after a slice when the listener holds a request (`ready`), and does
/// not take it back before the listener has attached.
struct Pool {
    state: Mutex<PoolState>,
    /// The watching thread sleeps here.
    watch: Condvar,
    /// The benched threads sleep here, and threads waiting for `ready` to clear.
    bench: Condvar,
    /// The listener holds a request and waits for the GIL.
    ready: AtomicBool,
    /// `PoolState::watching`, read without the lock: a thread stashes
    /// events only while a watcher can put them back.
    watched: AtomicBool,
    /// Set by the watcher before it decides to sleep without a timeout,
    /// read without the lock by a thread about to call the app with
    /// something stashed (see [`Pool::wake_untimed_watcher`]).
    may_sleep_untimed: AtomicBool,
}

struct PoolState {
    listening: bool,
    watching: bool,
    /// The watcher sleeps without a timeout (the listener is in epoll and
    /// nobody is busy): the listener wakes it when it leaves.
    watch_untimed: bool,
    benched: usize,
    /// Threads waiting for the listener to attach before they do.
    yielded: usize,
}

static POOL: Pool = Pool {
    state: Mutex::new(PoolState {
        listening: false,
        watching: false,
        watch_untimed: false,
        benched: 0,
        yielded: 0,
    }),
    watch: Condvar::new(),
    bench: Condvar::new(),
    ready: AtomicBool::new(false),
    watched: AtomicBool::new(false),
    may_sleep_untimed: AtomicBool::new(false),
};

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Only flags and counts behind it: a poisoned lock holds nothing broken.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Detached: waits until this thread is the listener, then for a
    /// request (see [`Pool`]).
    fn wait_for_request(&self, shared: &Shared, me: usize) -> Option<Box<Conn>> {
        let free = |st: &PoolState| !st.listening && !shared.activity.busy_other_than(me);
        let mut st = self.lock();
        loop {
            if free(&st) {
                st.listening = true;
                drop(st);
                // While another thread's stash is not empty, the listener
                // also does the watcher's job (there may be no watcher).
                // Pairs with the fence in `look_while_stuck`: a thread that
                // saw this one still watching left it to look.
                std::sync::atomic::fence(Ordering::SeqCst);
                let found = loop {
                    let timeout = if shared.activity.anything_stashed() {
                        shared.activity.release_stuck_stashes(shared, me);
                        EpollTimeout::from(WATCH_STEP.as_millis() as u16)
                    } else {
                        EpollTimeout::NONE
                    };
                    match next_request(shared, me, None, timeout) {
                        None if timeout != EpollTimeout::NONE => continue,
                        found => break found,
                    }
                };
                // Busy from here on, for the watcher's sake.
                shared.activity.set(me, IN_LOOP);
                self.ready.store(true, Ordering::Relaxed);
                let mut st = self.lock();
                st.listening = false;
                if st.watch_untimed {
                    self.watch.notify_one();
                }
                return found;
            }
            if !st.watching {
                st.watching = true;
                self.watched.store(true, Ordering::Relaxed);
                loop {
                    let quiet = st.listening && !shared.activity.busy_other_than(me);
                    if quiet {
                        // Pairs with the fence in `wake_untimed_watcher`:
                        // either this thread sees the stash, or the thread
                        // that stashed sees this flag and wakes it.
                        self.may_sleep_untimed.store(true, Ordering::Relaxed);
                        std::sync::atomic::fence(Ordering::SeqCst);
                    }
                    st.watch_untimed = quiet && !shared.activity.anything_stashed();
                    st = if st.watch_untimed {
                        self.watch.wait(st).unwrap_or_else(|p| p.into_inner())
                    } else {
                        match self.watch.wait_timeout(st, WATCH_STEP) {
                            Ok((g, _)) => g,
                            Err(p) => p.into_inner().0,
                        }
                    };
                    st.watch_untimed = false;
                    self.may_sleep_untimed.store(false, Ordering::Relaxed);
                    shared.activity.release_stuck_stashes(shared, me);
                    if free(&st) {
                        break;
                    }
                }
                st.watching = false;
                self.watched.store(false, Ordering::Relaxed);
                if st.benched > 0 {
                    self.bench.notify_one();
                }
                continue;
            }
            st.benched += 1;
            st = self.bench.wait(st).unwrap_or_else(|p| p.into_inner());
            st.benched -= 1;
        }
    }

    /// Called by a thread about to run the app with events stashed while a
    /// watcher is there: a watcher asleep without a timeout (it saw the
    /// listener in epoll, nobody busy and nothing stashed) is woken, so
    /// that it puts them back if the app call is long. Otherwise they
    /// waited for the listener's next event or the timer's 100 ms look.
    fn wake_untimed_watcher(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.may_sleep_untimed.load(Ordering::Relaxed) {
            let st = self.lock();
            if st.watch_untimed {
                self.watch.notify_one();
            }
        }
    }

    /// Called once the listener has attached with its request.
    fn attached(&self) {
        self.ready.store(false, Ordering::Relaxed);
        let st = self.lock();
        if st.yielded > 0 {
            self.bench.notify_all();
        }
    }

    /// Detached, after giving the GIL up to the listener: waits until it
    /// has attached, so that this thread does not take the GIL back first.
    fn wait_listener_attached(&self) {
        let mut st = self.lock();
        while self.ready.load(Ordering::Relaxed) {
            st.yielded += 1;
            st = match self.bench.wait_timeout(st, WATCH_STEP) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
            st.yielded -= 1;
        }
    }
}

/// The life of one app thread: attached to Python once, detached only to
/// wait. After a request, the thread finishes the response and looks for
/// the next ready request with non-blocking calls while still attached:
/// under load there usually is one, and keeping the GIL then saves a
/// hand-off. It gives the GIL up when nothing is ready, or after a slice if
/// the listener holds a request (see [`Pool`]).
///
/// Measured on examples/hello.py, wrk -t1 -c32, this 2-core machine (req/s,
/// p99): one detach per syscall, 10 threads: 53k; one detach per request:
/// 59k, 87 ms; plus the attached fast path: 80k, 87 ms (GIL starvation);
/// plus one thread at a time in epoll: 82k, 1.2 ms.
///
/// An idle thread waits for requests only while no other thread is getting
/// through them (see [`Activity`]); without that, under load it took a
/// ready request at once and the serving thread handed the GIL over every
/// slice, about 900 times a second (Flask, 10 threads: 15.1k/13.4k req/s,
/// p99 3.8/4.5 ms before; 18.7k/18.3k, 3.1 ms after).
///
/// The thread that runs out of work becomes the listener itself, rather
/// than queueing behind the other idle threads: before, every dry spell
/// passed the work to the next thread in a first-come first-served queue,
/// so all ten threads took turns (hello at 2 processes, 4 s: 42k and 70k
/// voluntary context switches per worker, every thread alike; after, 4k
/// over at most 4 threads when one worker has the connections). Alternating
/// runs, hello at 2 processes: 78k-83k req/s before, 83k-98k after; at 1
/// process unchanged (about 100k).
pub fn thread_main(shared: &Shared, me: usize) {
    Python::attach(|py| {
        shared.activity.set(me, IN_LOOP);
        let mut served: Option<Served> = None;
        let batch = &shared.activity.batches[me];
        let mut batch_since = Instant::now();
        let mut attached_since = Instant::now();
        let mut cache = ThreadCache::default();
        let mut flushing = Vec::new();
        loop {
            let mut carried = None;
            let now = served.as_ref().map_or_else(Instant::now, |s| s.finished);
            // What another thread wrote for this one: released with the GIL,
            // and after the lock (a bytes subclass's __del__ may let the GIL
            // go, and the watcher may wait for this lock holding the pool's).
            let written = std::mem::take(&mut *batch.written());
            drop(written);
            if let Some(s) = served.take() {
                let s = if s.deferrable() {
                    let mut waiting = batch.waiting();
                    if waiting.len() < WRITE_BATCH {
                        if waiting.is_empty() {
                            batch_since = now;
                        }
                        waiting.push(s);
                        batch.len.store(waiting.len(), Ordering::Relaxed);
                        None
                    } else {
                        Some(s)
                    }
                } else {
                    Some(s)
                };
                if let Some(mut s) = s {
                    carried = finish_response(shared, s.conn, s.last.as_mut(), s.close);
                    // The response's bytes objects are released with the GIL held.
                    drop(s.last);
                }
            }
            let pending = batch.len.load(Ordering::Relaxed);
            if pending == WRITE_BATCH
                || (pending > 0 && now.saturating_duration_since(batch_since) >= WRITE_BATCH_WINDOW)
            {
                flush_batch(shared, batch, &mut flushing);
            }
            // A thread holding a request and waiting for the GIL gets it
            // once this one has had it for a slice, rather than after the
            // interpreter's 5 ms switch interval (and then only by force).
            let mut conn = None;
            let mut woke = None;
            if now.saturating_duration_since(attached_since) < GIL_SLICE || !POOL.ready.load(Ordering::Relaxed) {
                conn = next_request(shared, me, carried.take(), EpollTimeout::ZERO);
            }
            if conn.is_none() {
                // Nothing more to serve now, or the slice is over: what is
                // finished goes out before this thread waits, and what it
                // took from epoll goes back.
                flush_batch(shared, batch, &mut flushing);
                hand_back(shared, shared.activity.stashes[me].take_all());
                let listened;
                (conn, listened) = py.detach(|| {
                    shared.activity.set(me, DETACHED);
                    if let Some(conn) = carried {
                        // The slice is over: the listener attaches first.
                        POOL.wait_listener_attached();
                        if let Some(ready) = drive(shared, conn) {
                            shared.activity.set(me, IN_LOOP);
                            return (Some(ready), false);
                        }
                    }
                    (POOL.wait_for_request(shared, me), true)
                });
                if listened {
                    POOL.attached();
                }
                shared.activity.set(me, IN_LOOP);
                attached_since = Instant::now();
                woke = Some(attached_since);
            }
            let Some(conn) = conn else { continue };
            // A watcher puts back what this thread holds if the call is long
            // (once woken, if it sleeps untimed); without one, the timer's
            // net covers every thread's.
            if shared.activity.holds_anything(me) {
                shared.activity.look_while_stuck(shared);
            } else if !POOL.watched.load(Ordering::Relaxed) && shared.activity.anything_stashed() {
                shared.activity.guard(shared);
            }
            let (slot, sock) = (conn.slot, conn.sock.clone());
            let started = woke.unwrap_or_else(Instant::now);
            shared.activity.serving(me, started);
            if let Some(b) = &shared.balance {
                b.member.enter_app();
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve(py, shared, me, conn, started, &mut cache)
            }));
            if let Some(b) = &shared.balance {
                b.member.leave_app();
            }
            shared.activity.set(me, IN_LOOP);
            served = match result {
                Ok(s) => s,
                Err(_) => {
                    // A bug of ours; the thread and the other connections live on.
                    log::error!("internal error while serving a request; connection closed");
                    // Nor does another thread write its parked last piece.
                    drop(shared.activity.parked[me].take());
                    let _ = shared.epoll.delete(sock.fd.as_fd());
                    shared.registry.remove(slot);
                    None
                }
            };
        }
    })
}

/// Writes a batch of finished responses, each on a connection that goes
/// back to epoll afterwards. Writing them back to back, rather than one per
/// request with the next app call in between, lets a client (or proxy)
/// woken by the first find the next ones already there. Written one at a
/// time, wrk slept after nearly every response, and waking it cost 18% of
/// the server's time inside writev (perf, Flask hello, one app thread, this
/// 2-core machine); batched, the same run went from 12.1k to 18.2k req/s.
///
/// The owning thread flushes its batch with the GIL held, and releases the
/// responses' bytes objects at once, outside the batch's lock (see
/// [`thread_main`]). `spare` is an empty Vec swapped in for the batch, so
/// that neither allocates again.
fn flush_batch(shared: &Shared, batch: &Batch, spare: &mut Vec<Served>) {
    if batch.len.load(Ordering::Relaxed) == 0 {
        return;
    }
    {
        let mut waiting = batch.waiting();
        batch.len.store(0, Ordering::Relaxed);
        std::mem::swap(&mut *waiting, spare);
    }
    for s in spare.drain(..) {
        drop(write_served(shared, s));
    }
}

/// Writes one deferred response; returns what holds its bytes objects, to
/// be dropped with the GIL held. Needs no GIL itself.
fn write_served(shared: &Shared, mut s: Served) -> Option<Framed> {
    let carried = finish_response(shared, s.conn, s.last.as_mut(), s.close);
    debug_assert!(
        carried.is_none(),
        "a deferred response had a pipelined request behind it"
    );
    if let Some(conn) = carried {
        arm(shared, conn, EpollFlags::EPOLLIN);
    }
    s.last
}

/// Drives `current`, then what this thread stashed, then whatever epoll
/// reports, until a connection holds a complete request. Every call in here
/// is non-blocking except the epoll wait itself, which waits up to
/// `timeout` (and when that passes with nothing ready, returns `None`).
fn next_request(
    shared: &Shared,
    me: usize,
    mut current: Option<Box<Conn>>,
    timeout: EpollTimeout,
) -> Option<Box<Conn>> {
    let stash = &shared.activity.stashes[me];
    let mut events = [EpollEvent::empty(); EVENT_BATCH];
    loop {
        if let Some(conn) = current.take()
            && let Some(ready) = drive(shared, conn)
        {
            return Some(ready);
        }
        let token = match stash.pop() {
            Some(token) => token,
            None => {
                let batch = if POOL.watched.load(Ordering::Relaxed) {
                    EVENT_BATCH
                } else {
                    1
                };
                let n = match shared.epoll.wait(&mut events[..batch], timeout) {
                    Ok(0) if timeout != EpollTimeout::NONE => return None,
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Ok(n) => n,
                    Err(e) => {
                        log::error!("epoll_wait failed: {e}");
                        return None;
                    }
                };
                stash.push(&events[1..n]);
                events[0].data()
            }
        };
        if token == 0 {
            continue;
        } else if token <= MAX_LISTENER_TOKEN {
            current = accept_unless_stopping(shared, token as usize - 1, stash);
        } else {
            // SAFETY: a conn token just taken from epoll or this thread's stash.
            current = Some(unsafe { conn_of(token) });
        }
    }
}

/// The connection an epoll event carries.
///
/// # Safety
/// `token` is the data of an event epoll reported (or a stash kept), above
/// [`MAX_LISTENER_TOKEN`], and not turned into a `Box` before: conn tokens
/// are pointers from `Box::into_raw` in `arm` or `accept`, and the
/// registration is one-shot, so each event hands the Box to one owner until
/// it is re-armed.
unsafe fn conn_of(token: u64) -> Box<Conn> {
    // SAFETY: see the function's contract.
    unsafe { Box::from_raw(token as *mut Conn) }
}

/// Puts stashed events back into epoll. A connection is re-armed as it
/// was (its socket is still ready, so epoll reports it again at once); a
/// listener is level-triggered and reported again without that.
fn hand_back(shared: &Shared, tokens: std::collections::VecDeque<u64>) {
    for token in tokens {
        if token > MAX_LISTENER_TOKEN {
            // SAFETY: a conn token taken out of a stash, owned by no one else.
            let conn = unsafe { conn_of(token) };
            let flags = if conn.out_pos < conn.out.len() {
                EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            arm(shared, conn, flags);
        }
    }
}

/// Writes the last of a response; returns the connection if it has more to do now.
fn finish_response(shared: &Shared, mut conn: Box<Conn>, last: Option<&mut Framed>, close: bool) -> Option<Box<Conn>> {
    if let Some(last) = last {
        match last.write_or_park(conn.sock.fd_borrow()) {
            Ok(None) => {}
            Ok(Some(tail)) => {
                conn.out = tail;
                conn.out_pos = 0;
                conn.close_after_out = close;
                wait_writable(shared, conn);
                return None;
            }
            Err(_) => {
                close_conn(shared, conn);
                return None;
            }
        }
    }
    // `close` is what the response's head said. One that went out saying
    // keep-alive as the stop began is kept to its word: the connection
    // goes idle, and the stop gives it a grace to send its next request
    // (see `Registry::close_idle`), rather than closing under a request
    // its client may be sending now.
    if close {
        close_after_response(shared, conn);
        return None;
    }
    if between_requests(shared, &conn) == ConnState::Idle {
        spare_buffer(std::mem::take(&mut conn.buf));
        arm(shared, conn, EpollFlags::EPOLLIN);
        return None;
    }
    // What is left of an unread body (read and dropped by `drive`), or
    // the next request, pipelined: already (partly) here.
    Some(conn)
}

/// A response is out and the connection stays: what it waits for now.
/// `Idle` with the keep-alive timeout if nothing came after the request;
/// `Reading` if the rest of its body is to be dropped (`drive` sets the
/// body's deadline) or the next head is (partly) here, with the head's.
fn between_requests(shared: &Shared, conn: &Conn) -> ConnState {
    let timeouts = &shared.config.timeouts;
    let registry = &shared.registry;
    if conn.discard.is_some() {
        conn.sock.set_state(ConnState::Reading);
        ConnState::Reading
    } else if conn.buf.is_empty() {
        registry.enter(&conn.sock, ConnState::Idle, timeouts.keep_alive);
        ConnState::Idle
    } else {
        registry.enter(&conn.sock, ConnState::Reading, timeouts.header);
        ConnState::Reading
    }
}

/// App threads inside [`accept_unless_stopping`].
static ACCEPTING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An app thread's accept, for a listener event it took from epoll (maybe
/// before the stop began, or from its stash): nothing once the worker
/// stops. What is queued then is the stopping thread's to take (see
/// [`Shared::stop_accepting`]); a connection accepted after the worker
/// counted its last ones would be closed unanswered at exit.
fn accept_unless_stopping(shared: &Shared, idx: usize, stash: &Stash) -> Option<Box<Conn>> {
    ACCEPTING.fetch_add(1, Ordering::SeqCst);
    let conn = if super::STOPPING.load(Ordering::SeqCst) {
        None
    } else {
        accept(shared, idx, Some(stash))
    };
    ACCEPTING.fetch_sub(1, Ordering::SeqCst);
    conn
}

/// Accepts what is queued on listener `idx` (up to a batch). Returns the
/// last new connection unregistered, for the caller to read at once: a
/// client usually sends its request with the connection, and reading it
/// now saves it a trip to the back of the epoll queue. The others go to
/// the calling app thread's `stash`, unregistered too, when a watcher can
/// hand them back (see [`Stash`]), else into epoll: registering a connection
/// that is read at once anyway cost an epoll_ctl per request under
/// `Connection: close`.
fn accept(shared: &Shared, idx: usize, stash: Option<&Stash>) -> Option<Box<Conn>> {
    let listener = &shared.listeners[idx];
    let mut newest: Option<Box<Conn>> = None;
    for n in 0..ACCEPT_BATCH {
        // The kernel woke this worker for the first one; the others may be
        // left for a worker that holds fewer connections.
        if n > 0 && shared.park_if_past_share() {
            break;
        }
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: storage/len describe a writable sockaddr_storage; accept4
        // returns a new fd that we immediately own.
        let fd = unsafe {
            libc::accept4(
                listener.fd.as_raw_fd(),
                storage.as_mut_ptr().cast(),
                &mut len,
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::EINTR | libc::ECONNABORTED) => continue,
                Some(libc::EMFILE | libc::ENFILE) => {
                    log::warn!(
                        "cannot accept on {}: {e}; raise the open files limit",
                        listener.display()
                    );
                    // Back off instead of spinning on a listener we cannot drain.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    break;
                }
                Some(libc::ENOBUFS | libc::ENOMEM) => {
                    log::warn!("cannot accept on {}: {e}", listener.display());
                    break;
                }
                _ => {
                    if !shared.stopping() {
                        // A broken listener stays broken; watching it would
                        // only spin this thread.
                        log::error!(
                            "accept on {} failed: {e}; no longer accepting on it",
                            listener.display()
                        );
                        let _ = shared.epoll.delete(listener.fd.as_fd());
                    }
                    break;
                }
            }
        }
        // SAFETY: accept4 returned a new open fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: accept4 filled `len` bytes of the storage.
        let peer = peer_of(unsafe { storage.assume_init_ref() });
        if matches!(listener.local, Local::Tcp(_)) {
            let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::TcpNoDelay, &true);
        }
        let proxy_pending = shared.config.proxy_protocol && trusted(shared, &peer);
        let sock = Arc::new(ConnSocket::new(fd));
        let slot = shared.registry.insert(sock.clone());
        shared.registry.set_deadline(&sock, shared.config.timeouts.header);
        let conn = Box::new(Conn {
            sock,
            slot,
            listener: idx,
            peer,
            buf: Vec::new(),
            incomplete: false,
            want: 0,
            head_scan: HeadScan::default(),
            out: Vec::new(),
            out_pos: 0,
            close_after_out: false,
            proxy_pending,
            registered: false,
            discard: None,
            unread_input: false,
            input_elsewhere: false,
            linger: false,
            head: HeadIndex::default(),
        });
        if let Some(older) = newest.replace(conn) {
            match stash {
                Some(stash) if POOL.watched.load(Ordering::Relaxed) => stash.push_conn(older),
                _ => arm(shared, older, EpollFlags::EPOLLIN),
            }
        }
    }
    newest
}

fn peer_of(ss: &libc::sockaddr_storage) -> Peer {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Peer::from_socket_addr((ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Peer::from_socket_addr((ip, u16::from_be(sin6.sin6_port)).into())
        }
        _ => Peer {
            addr: String::new(),
            port: String::new(),
            ip: None,
        },
    }
}

/// Whether `peer` may tell us about the client (X-Forwarded-*, PROXY).
/// Unix socket peers are local processes the socket's permissions let in:
/// the usual nginx in front.
fn trusted(shared: &Shared, peer: &Peer) -> bool {
    peer.ip.is_none_or(|ip| shared.config.forwarded_allow_ips.contains(ip))
}

fn close_conn(shared: &Shared, mut conn: Box<Conn>) {
    if conn.registered {
        let _ = shared.epoll.delete(conn.sock.fd.as_fd());
    }
    spare_buffer(std::mem::take(&mut conn.buf));
    shared.registry.remove(conn.slot);
    if Arc::strong_count(&conn.sock) > 1 {
        // Something else still holds the socket: a write() on a thread of
        // the app's own that outlived its request (waiting for the client,
        // up to the write timeout), a stream the flusher has not dropped
        // yet, or the serving thread's own handle while it serves. The
        // response ends now all the same: such a write fails at once, and
        // the client gets its FIN. Only the sending side: a wsgi.input read
        // on the app's thread goes on, and a client still sending its body
        // gets no reset for it (one could destroy the response unread).
        let _ = conn.sock.shutdown_output();
    }
    drop(conn);
    shared.unpark_if_due(false);
}

/// Closes a connection after its last response. If its client may still be
/// sending, closing at once would make the kernel answer the unread bytes
/// with a reset, and a reset can destroy the response in the client's
/// buffer before the client reads it (an upload refused with 413, a 500
/// before the body was read: the client sees "connection reset"). So the
/// server stops writing (the client gets FIN after the response) and reads
/// and drops what comes, in `drive`, until the client closes or [`LINGER`]
/// passes; no app thread waits for it. nginx's lingering close.
fn close_after_response(shared: &Shared, mut conn: Box<Conn>) {
    // Pipelined requests after one that ends the connection count too
    // (read already, or waiting in the socket): closing on them resets.
    let client_sent_more = conn.unread_input || !conn.buf.is_empty() || conn.sock.pending_bytes() > 0;
    // Lingering reads and drops what comes: not while an app's thread
    // reads the body (it would lose what the server dropped).
    if !client_sent_more || conn.input_elsewhere {
        close_conn(shared, conn);
        return;
    }
    if conn.sock.shutdown_output().is_err() {
        close_conn(shared, conn);
        return;
    }
    conn.linger = true;
    conn.discard = None;
    conn.buf = Vec::new();
    // A stop waits for it (it counts as busy), for a second at most: the
    // answer was sent, and a client still sending after that is not
    // reading it. (A stop used to skip the linger, and the kernel answered
    // the rest of an upload with a reset, which a client reports instead
    // of the answer.)
    let linger = if shared.stopping() { super::STOP_GRACE } else { LINGER };
    shared.registry.enter(&conn.sock, ConnState::Linger, linger);
    arm(shared, conn, EpollFlags::EPOLLIN);
}

/// A lingering connection's wake-up: drops what arrived; closes at the
/// client's end (or an error, or the deadline's shutdown).
fn linger(shared: &Shared, mut conn: Box<Conn>) {
    let mut read = 0;
    while read < LINGER_READ {
        conn.buf.clear();
        match read_some(conn.sock.fd_borrow(), &mut conn.buf, READ_CHUNK) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                arm(shared, conn, EpollFlags::EPOLLIN);
                return;
            }
            Err(_) => break,
        }
    }
    if read >= LINGER_READ {
        // More to come: the next wake-up, so one client does not keep
        // this thread.
        arm(shared, conn, EpollFlags::EPOLLIN);
        return;
    }
    close_conn(shared, conn);
}

/// Gives the connection back to epoll; after this the thread must not touch it.
fn arm(shared: &Shared, mut conn: Box<Conn>, flags: EpollFlags) {
    let raw = conn.sock.fd.as_raw_fd();
    let first = !conn.registered;
    conn.registered = true;
    let ptr = Box::into_raw(conn);
    let mut ev = EpollEvent::new(flags | EpollFlags::EPOLLONESHOT, ptr as u64);
    // SAFETY: the fd is open (the registry holds its socket); once the call
    // succeeds another thread may own the Box, so only `raw` is used here.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    let armed = if first {
        shared.epoll.add(fd, ev)
    } else {
        shared.epoll.modify(fd, &mut ev)
    };
    if let Err(e) = armed {
        if first {
            log::error!("cannot watch a new connection: {e}");
        }
        // SAFETY: the call failed, so no event can carry ptr to anyone.
        close_conn(shared, unsafe { Box::from_raw(ptr) });
    }
}

/// Parks a connection whose response tail did not fit in the socket until
/// the client takes more, for at most the write timeout.
fn wait_writable(shared: &Shared, conn: Box<Conn>) {
    shared
        .registry
        .set_write_deadline(&conn.sock, shared.config.timeouts.write);
    arm(shared, conn, EpollFlags::EPOLLOUT);
}

/// Read buffers a thread keeps for the next connection it reads: one with
/// nothing buffered gives its buffer back when it goes idle, so that a
/// keep-alive connection waiting for its next request holds no memory
/// (nginx does the same), and the buffers in use are as many as the
/// requests in flight, not the connections open. Measured with
/// bench/idle_conns.py: 4.7 kB per idle keep-alive connection before (its
/// buffer's page the last request was read into), 0.6 kB after.
const SPARE_BUFFERS: usize = 8;

thread_local! {
    static SPARES: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer to read a connection into: a spare one, or a new (empty) one.
fn take_spare_buffer() -> Vec<u8> {
    SPARES.with(|s| s.borrow_mut().pop()).unwrap_or_default()
}

/// Keeps `buf` for the next connection, unless enough are kept or it grew
/// past what a head needs (a large body read whole).
fn spare_buffer(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > 4 * READ_CHUNK {
        return;
    }
    buf.clear();
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_BUFFERS {
            s.push(buf);
        }
    });
}

/// What a connection's buffer still lacks before its request can be served.
enum Need {
    Nothing,
    Head,
    /// A small body, read before the app is called: the request's length
    /// in all.
    Body(usize),
}

/// What the last parse of an incomplete head saw.
#[derive(Default)]
struct HeadScan {
    /// The buffer's length then (0: not parsed yet).
    parsed_len: usize,
    /// Where its last, unfinished line starts.
    line_start: usize,
    /// A complete request line was among its lines (past leading CRLFs).
    past_request_line: bool,
}

impl HeadScan {
    /// After a parse found `buf` an incomplete head.
    fn note(&mut self, buf: &[u8]) {
        let fresh = buf.get(self.parsed_len..).unwrap_or_default();
        if let Some(i) = fresh.iter().rposition(|&c| c == b'\n') {
            let end = self.parsed_len + i + 1;
            self.past_request_line |= buf[self.line_start.min(end)..end]
                .iter()
                .any(|&c| c != b'\r' && c != b'\n');
            self.line_start = end;
        }
        self.parsed_len = buf.len();
    }
}

/// Whether parsing `buf` (an incomplete head last time) again can answer
/// more than that parse did: when a line has ended, a byte arrived that
/// the parser may refuse at once (a control character; on the request
/// line a space, which ends its method and target), the byte before the
/// new ones was a CR (CRLF, or a bare CR), or the unfinished line or the
/// head has passed its limit. Otherwise it is only more of the same line,
/// and parsing from the start for every read was quadratic. A tab or a
/// space in a header value is no reason (they are its bytes).
fn worth_parsing(buf: &[u8], scan: &HeadScan, limits: &crate::proto::request::Limits) -> bool {
    let p = scan.parsed_len;
    let Some(fresh) = buf.get(p..).filter(|_| p > 0) else {
        return true;
    };
    let past = scan.past_request_line;
    // The parser counts a header line's CRLF, not the request line's.
    let line_limit = if past {
        limits.max_field_size.saturating_sub(2)
    } else {
        limits.max_request_line
    };
    buf[p - 1] == b'\r'
        || fresh
            .iter()
            .any(|&b| (b < 0x20 && !(past && b == b'\t')) || b == 0x7f || (!past && b == b' '))
        || buf.len().saturating_sub(scan.line_start) > line_limit
        || buf.len() > limits.max_head_size
}

/// Parses the head at the start of `buf` with header storage on the stack
/// for the usual limit, so the hot path does not allocate.
fn with_request<R>(
    buf: &[u8],
    limits: &crate::proto::request::Limits,
    f: impl FnOnce(Result<Option<Request<'_, '_>>, RequestError>) -> R,
) -> R {
    const ON_STACK: usize = 128;
    if limits.max_headers <= ON_STACK {
        let mut storage = [httparse::EMPTY_HEADER; ON_STACK];
        f(parse_request(buf, &mut storage[..limits.max_headers], limits))
    } else {
        let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
        f(parse_request(buf, &mut storage, limits))
    }
}

/// The head `drive` recorded in `index`, or (if none) parsed again.
fn with_parsed<R>(
    buf: &[u8],
    index: &HeadIndex,
    limits: &crate::proto::request::Limits,
    f: impl FnOnce(Result<Option<Request<'_, '_>>, RequestError>) -> R,
) -> R {
    const ON_STACK: usize = 32;
    let mut storage = [httparse::EMPTY_HEADER; ON_STACK];
    match index.view(buf, &mut storage) {
        Some(req) => f(Ok(Some(req))),
        None => with_request(buf, limits, f),
    }
}

/// Without the GIL: flushes a parked response, reads, and checks for a
/// complete request. Returns the connection when one is ready to serve;
/// otherwise it has been re-armed or closed.
fn drive(shared: &Shared, mut conn: Box<Conn>) -> Option<Box<Conn>> {
    let limits = &shared.config.limits;
    let timeouts = &shared.config.timeouts;
    loop {
        if conn.linger {
            linger(shared, conn);
            return None;
        }
        if conn.out_pos < conn.out.len() {
            let Conn { sock, out, out_pos, .. } = &mut *conn;
            match flush_parked(sock.fd_borrow(), out, out_pos) {
                Ok(true) => {
                    conn.out = Vec::new();
                    conn.out_pos = 0;
                    if conn.close_after_out {
                        close_after_response(shared, conn);
                        return None;
                    }
                    between_requests(shared, &conn);
                }
                Ok(false) => {
                    wait_writable(shared, conn);
                    return None;
                }
                Err(_) => {
                    close_conn(shared, conn);
                    return None;
                }
            }
        }
        if let Some(body) = conn.discard.as_mut() {
            match body.discard_now() {
                Ok(true) => {
                    let body = conn.discard.take().expect("discarding");
                    conn.buf = body.into_buffer();
                    between_requests(shared, &conn);
                }
                Ok(false) => {
                    // The body's patience again: the read timeout since
                    // its last progress.
                    shared.registry.set_deadline(&conn.sock, timeouts.read);
                    arm(shared, conn, EpollFlags::EPOLLIN);
                    return None;
                }
                Err(_) => {
                    close_conn(shared, conn);
                    return None;
                }
            }
        }
        if conn.buf.is_empty() || conn.incomplete {
            let was_empty = conn.buf.is_empty();
            if conn.buf.capacity() == 0 {
                conn.buf = take_spare_buffer();
            }
            let chunk = READ_CHUNK.max(conn.want.saturating_sub(conn.buf.len()));
            match read_some(conn.sock.fd_borrow(), &mut conn.buf, chunk) {
                Ok(0) => {
                    if conn.sock.state() == ConnState::TimedOut {
                        refuse(&conn, 408, "Request Timeout", &"its body stalled (--read-timeout)");
                    }
                    close_conn(shared, conn);
                    return None;
                }
                Ok(_) => {
                    conn.incomplete = false;
                    if was_empty {
                        // The head deadline runs from the request's first byte.
                        shared.registry.enter(&conn.sock, ConnState::Reading, timeouts.header);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if was_empty {
                        spare_buffer(std::mem::take(&mut conn.buf));
                    }
                    arm(shared, conn, EpollFlags::EPOLLIN);
                    return None;
                }
                Err(_) => {
                    close_conn(shared, conn);
                    return None;
                }
            }
        }
        if conn.proxy_pending {
            match crate::proto::proxy::parse(&conn.buf) {
                Ok(None) => {
                    conn.incomplete = true;
                    continue;
                }
                Ok(Some((header, used))) => {
                    conn.buf.drain(..used);
                    conn.proxy_pending = false;
                    if let ProxyHeader::Proxied { source, .. } = header {
                        conn.peer = Peer::from_socket_addr(source);
                    }
                    if conn.buf.is_empty() {
                        conn.incomplete = true;
                        continue;
                    }
                }
                Err(e) => {
                    refuse(&conn, 400, "Bad Request", &format_args!("PROXY header: {e}"));
                    close_conn(shared, conn);
                    return None;
                }
            }
        }
        // After the PROXY header is taken out.
        let buffered = conn.buf.len();
        // Parse again only when that can change the answer: a head sent a
        // byte at a time was parsed from its start for every byte (a 56 KB
        // head cost 3.9 s of CPU), a small body awaited the same way.
        if conn.want > 0 {
            if buffered < conn.want {
                // The body's patience runs from its last progress.
                shared.registry.set_deadline(&conn.sock, timeouts.read);
                conn.incomplete = true;
                continue;
            }
        } else if !worth_parsing(&conn.buf, &conn.head_scan, limits) {
            conn.head_scan.parsed_len = buffered;
            conn.incomplete = true;
            continue;
        }
        let trusted_peer = trusted(shared, &conn.peer);
        let Conn { buf, head, .. } = &mut *conn;
        let verdict = with_request(buf, limits, |parsed| match parsed {
            // A 2xx to CONNECT turns the connection into a tunnel (RFC 9110
            // 9.3.6), which no WSGI response can be: the client and the
            // server would disagree about every byte after it.
            Ok(Some(req)) if req.method == "CONNECT" => Err((
                501,
                "Not Implemented",
                "CONNECT: a WSGI app cannot open a tunnel".to_string(),
            )),
            // Conflicting scheme headers from a proxy we trust: gunicorn's
            // InvalidSchemeHeaders, a 400.
            Ok(Some(req)) if trusted_peer && scheme_from_headers(req.headers).is_err() => Err((
                400,
                "Bad Request",
                "conflicting X-Forwarded-Proto/-Protocol/-Ssl headers".to_string(),
            )),
            Ok(Some(req)) => Ok(match req.body {
                BodyKind::Length(n)
                    if n <= PREREAD_BODY && !req.expect_continue && ((buffered - req.head_len) as u64) < n =>
                {
                    Need::Body(req.head_len + n as usize)
                }
                _ => {
                    head.record(buf, &req);
                    Need::Nothing
                }
            }),
            Ok(None) => Ok(Need::Head),
            Err(e) => Err((e.status(), e.reason(), e.to_string())),
        });
        match verdict {
            Ok(Need::Nothing) => {
                conn.want = 0;
                conn.head_scan = HeadScan::default();
                return Some(conn);
            }
            Ok(Need::Head) => {
                conn.head_scan.note(&conn.buf);
                conn.incomplete = true;
            }
            Ok(Need::Body(total)) => {
                conn.want = total;
                // Past the head, the client gets the body's patience: the
                // read timeout, counted from its last progress.
                conn.incomplete = true;
                shared.registry.enter(&conn.sock, ConnState::Body, timeouts.read);
            }
            Err((status, reason, why)) => {
                refuse(&conn, status, reason, &why);
                conn.unread_input = true;
                close_after_response(shared, conn);
                return None;
            }
        }
    }
}

/// What `serve` keeps of a parsed head once the buffer is handed on.
struct Head<'py> {
    http11: bool,
    head_len: usize,
    body: BodyKind,
    expect_continue: bool,
    keep_alive: bool,
    is_head: bool,
    /// The request headers the access log format asks for.
    logged_headers: Vec<(String, String)>,
    /// The client as a trusted proxy reported it (REMOTE_ADDR, `%(h)s`).
    client: Option<std::net::IpAddr>,
    environ: PyResult<Bound<'py, PyDict>>,
}

/// What an app thread keeps from one request to the next, touched with
/// the GIL held.
#[derive(Default)]
struct ThreadCache {
    strings: Strings,
    /// The request line, for the access log and error messages.
    line: String,
    /// `wsgi.input`, when nothing but the server held it at the end of the
    /// last request.
    input: Option<Py<Input>>,
    /// `start_response`, likewise, with its response released.
    start_response: Option<Py<StartResponse>>,
}

/// Whether this is the only reference to `obj`.
fn only_ours(obj: &Bound<'_, impl pyo3::PyTypeInfo>) -> bool {
    // SAFETY: `obj` is a live object the caller holds a reference to.
    unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) == 1 }
}

/// With the GIL: runs the app on the complete request at the start of
/// `conn.buf`. Returns what is left to write, or `None` if the connection
/// was closed.
fn serve(
    py: Python<'_>,
    shared: &Shared,
    me: usize,
    mut conn: Box<Conn>,
    started: Instant,
    cache: &mut ThreadCache,
) -> Option<Served> {
    let limits = &shared.config.limits;
    let timeouts = &shared.config.timeouts;
    if !shared.registry.begin_serving(&conn.sock) {
        // A deadline or a stop cut it as the request completed.
        close_conn(shared, conn);
        return None;
    }
    // Only the access log wants the wall clock.
    let wall_start = shared.access_log.as_ref().map(|_| std::time::SystemTime::now());
    let ThreadCache {
        strings,
        line: request_line,
        input: spare_input,
        start_response: spare_start_response,
    } = cache;
    let input = match spare_input.take() {
        Some(input) => input.into_bound(py),
        None => match Bound::new(py, Input { reader: None }) {
            Ok(input) => input,
            Err(_) => {
                close_conn(shared, conn);
                return None;
            }
        },
    };
    let trusted_peer = trusted(shared, &conn.peer);
    let head = std::mem::take(&mut conn.head);
    let parsed = with_parsed(&conn.buf, &head, limits, |parsed| {
        // `drive` only hands over connections holding a complete, valid head.
        let req = parsed.ok().flatten()?;
        let forwarded = if trusted_peer {
            let xff: Vec<&[u8]> = req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
                .map(|h| h.value)
                .collect();
            Forwarded {
                client: client_from_x_forwarded_for(&xff, &shared.config.forwarded_allow_ips),
                scheme: scheme_from_headers(req.headers).ok().flatten(),
            }
        } else {
            Forwarded::default()
        };
        let info = ConnInfo {
            peer: &conn.peer,
            local: &shared.listeners[conn.listener].local,
            forwarded,
        };
        let http11 = req.version == Version::Http11;
        // Not format!(): this runs for every request, and the formatting
        // machinery costs ten times these copies.
        let protocol = if http11 { "HTTP/1.1" } else { "HTTP/1.0" };
        request_line.clear();
        request_line.push_str(req.method);
        request_line.push(' ');
        request_line.push_str(req.target);
        request_line.push(' ');
        request_line.push_str(protocol);
        let environ = shared.statics.environ(
            py,
            &req,
            &info,
            shared.config.url_prefix.as_deref(),
            input.clone().into_any(),
            strings,
        );
        let logged_headers = match &shared.access_log {
            Some(log) => log
                .needs
                .request_headers
                .iter()
                .filter_map(|name| {
                    let h = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name))?;
                    Some((name.clone(), String::from_utf8_lossy(h.value).into_owned()))
                })
                .collect(),
            None => Vec::new(),
        };
        Some(Head {
            http11,
            head_len: req.head_len,
            body: req.body,
            expect_continue: req.expect_continue,
            keep_alive: req.keep_alive && !shared.stopping(),
            is_head: req.method == "HEAD",
            logged_headers,
            client: forwarded.client,
            environ,
        })
    });
    // Its allocation serves the connection's next request.
    conn.head = head;
    conn.head.clear();
    let Some(Head {
        http11,
        head_len,
        body,
        expect_continue,
        keep_alive,
        is_head,
        logged_headers,
        client,
        environ,
    }) = parsed
    else {
        close_conn(shared, conn);
        return None;
    };
    let environ = match environ {
        Ok(e) => e,
        Err(e) => {
            log::error!("cannot build the environ for {request_line}: {e}");
            close_conn(shared, conn);
            return None;
        }
    };
    conn.buf.drain(..head_len);
    let buf = std::mem::take(&mut conn.buf);
    let Ok(mut slot) = input.try_borrow_mut() else {
        close_conn(shared, conn);
        return None;
    };
    let expect = (expect_continue && http11).then(ExpectContinue::new);
    let has_body = !matches!(body, BodyKind::Empty | BodyKind::Length(0));
    slot.reader = Some(BodyReader::new(
        conn.sock.clone(),
        buf,
        body,
        expect.clone(),
        timeouts.read,
        limits.max_body_size,
    ));
    drop(slot);
    let resp = Response::new(ResponseSetup {
        sock: Some(conn.sock.clone()),
        http11,
        head_request: is_head,
        keep_alive,
        write_timeout: timeouts.write,
        date: date_now(),
        keep_headers: shared
            .access_log
            .as_ref()
            .is_some_and(|log| !log.needs.response_headers.is_empty()),
        expect: expect.filter(|_| has_body),
    });
    let sr = match spare_start_response.take() {
        Some(sr) => {
            let sr = sr.into_bound(py);
            // Nothing else holds it (checked when it was put aside).
            sr.borrow_mut().resp = resp;
            sr
        }
        None => match Bound::new(py, StartResponse { resp }) {
            Ok(sr) => sr,
            Err(_) => {
                close_conn(shared, conn);
                return None;
            }
        },
    };
    let logged_environ = shared.access_log.as_ref().map(|_| environ.clone());
    let call = AppCall {
        start_response: &sr,
        input: &input,
        request_line: &|| request_line.clone(),
        spot: ParkSpot {
            parked: &shared.activity.parked[me],
            sock: &conn.sock,
            ensure_look: &|| shared.activity.cover_parked(shared),
            used: std::cell::Cell::new(false),
        },
    };
    let outcome = shared.statics.run_app(py, &shared.app, environ, &call);
    // An app that kept wsgi.input busy on a thread of its own loses it; the
    // connection cannot be reused then.
    let reader = match input.try_borrow_mut() {
        Ok(mut i) => i.reader.take(),
        Err(_) => {
            conn.input_elsewhere = true;
            None
        }
    };
    let mut close = outcome.close || reader.is_none();
    if let Some(reader) = reader {
        if reader.is_done() {
            conn.buf = reader.into_buffer();
        } else if !close && reader.discardable() {
            // Dropped after the response goes out, as it arrives, by
            // whichever thread the connection's events wake: neither the
            // response nor this thread waits for a client's body.
            conn.discard = Some(Box::new(reader));
        } else {
            close = true;
            conn.unread_input = true;
        }
    }
    super::control::request_done();
    let finished = Instant::now();
    if let Some(log) = &shared.access_log {
        let mut parts = request_line.splitn(3, ' ');
        let (method, target, protocol) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let response_headers = sr
            .try_borrow()
            .map(|sr| sr.resp.headers_named(&log.needs.response_headers))
            .unwrap_or_default();
        let environ = log
            .needs
            .environ
            .iter()
            .filter_map(|k| {
                let v = logged_environ.as_ref()?.get_item(k).ok().flatten()?;
                Some((k.clone(), v.str().ok()?.to_string()))
            })
            .collect();
        let remote = client.map(|ip| ip.to_canonical().to_string());
        let record = Record {
            remote: remote.as_deref().unwrap_or(&conn.peer.addr),
            method,
            target,
            protocol,
            status: outcome.code,
            bytes: outcome.body_bytes,
            started: wall_start.unwrap_or_else(std::time::SystemTime::now),
            duration: finished.saturating_duration_since(started),
            pid: std::process::id(),
            request_headers: logged_headers,
            response_headers,
            environ,
        };
        crate::logging::access(&log.line(&record));
    }
    // wsgi.input and start_response serve the next request too, unless
    // something still holds them (an app that kept the environ or the
    // callable): a new object costs about 500 instructions, made and freed.
    drop(logged_environ);
    if only_ours(&input) && input.try_borrow().is_ok_and(|i| i.reader.is_none()) {
        *spare_input = Some(input.unbind());
    }
    // The request is over for start_response even when the app kept it: it
    // lets go of the socket. (Not borrowable only while a thread of the
    // app's own is inside it; that one keeps the socket as long as it lives.)
    if let Ok(mut me) = sr.try_borrow_mut() {
        me.resp.release();
        drop(me);
        if only_ours(&sr) {
            *spare_start_response = Some(sr.unbind());
        }
    }
    Some(Served {
        conn,
        last: outcome.last,
        close,
        took: finished.saturating_duration_since(started),
        finished,
    })
}

/// Answers a request we refuse to parse, then the caller closes.
fn refuse(conn: &Conn, status: u16, reason: &str, why: &dyn std::fmt::Display) {
    // No body for a HEAD request, as far as the start of its line tells.
    let head_request = conn.buf.trim_ascii_start().starts_with(b"HEAD ");
    let msg = simple_response(status, reason, &date_now(), true, head_request);
    // Best effort and never waiting (this may run with the GIL held): a
    // client that cannot take a 150-byte answer is not owed one.
    let _ = write_or_park(conn.sock.fd_borrow(), &mut [io::IoSlice::new(&msg)]);
    log::info!("refused a request from {}: {status} ({why})", conn.peer.addr);
}

#[cfg(test)]
mod tests {
    use super::{HeadScan, worth_parsing};
    use crate::proto::request::Limits;

    /// Feeds `head` one read per `step` bytes; returns how many times it
    /// was parsed, and the length at each parse.
    fn trickle(head: &[u8], step: usize, limits: &Limits) -> Vec<usize> {
        let mut scan = HeadScan::default();
        let mut parsed = Vec::new();
        let mut end = 0;
        while end < head.len() {
            end = (end + step).min(head.len());
            let buf = &head[..end];
            if worth_parsing(buf, &scan, limits) {
                parsed.push(end);
                scan.note(buf);
            } else {
                scan.parsed_len = end;
            }
        }
        parsed
    }

    /// A head trickled a byte at a time is parsed a few times per line,
    /// not once per byte: quadratic before (2.8 s of CPU for a 56 KB head).
    #[test]
    fn an_incomplete_head_is_parsed_again_only_when_it_can_answer_more() {
        let limits = Limits::default();
        let value = "v".repeat(5000);
        let head = format!("GET /a HTTP/1.1\r\nX-A: {value}\r\nX-B: b\tc d\r\n\r\n");
        let parsed = trickle(head.as_bytes(), 1, &limits);
        // The first byte; the request line's two spaces, CR and LF; then
        // per header line its CR and LF (the spaces and tab of a value are
        // no reason), and the last CRLF.
        assert_eq!(parsed.len(), 1 + 4 + 2 + 2 + 2, "{parsed:?}");
    }

    /// What the parser refuses before a line ends is still refused at once:
    /// a byte it cannot accept, or a line past its own limit.
    #[test]
    fn what_the_parser_refuses_early_is_parsed_at_once() {
        let limits = Limits::default();
        // A control byte in the method, in a header value, a bare CR.
        for (head, at) in [
            (&b"GE\x01T / HTTP/1.1\r\n"[..], 3),
            (b"GET / HTTP/1.1\r\nX: ab\x00cd", 22),
            (b"GET / HTTP/1.1\r\nX: ab\rcd", 23),
        ] {
            let parsed = trickle(head, 1, &limits);
            assert!(parsed.contains(&at), "{:?}: {parsed:?}", String::from_utf8_lossy(head));
        }
        // A header line one byte past max_field_size (its CRLF counted):
        // parsed as soon as it is, not at the header timeout.
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ".to_vec();
        let start = head.len() - 8;
        head.extend(std::iter::repeat_n(b'b', 8181));
        let parsed = trickle(&head, 1, &limits);
        assert_eq!(parsed.last(), Some(&(start + 8189)), "{parsed:?}");
        // With a shorter request-line limit (gunicorn's 4094, or 100), a
        // long request line is parsed once past it.
        let short = Limits {
            max_request_line: 100,
            ..Limits::default()
        };
        let line = format!("GET /{} HTTP/1.1", "a".repeat(150));
        let parsed = trickle(line.as_bytes(), 5, &short);
        assert!(parsed.iter().any(|&n| n > 100 && n <= 105), "{parsed:?}");
    }

    #[test]
    fn past_the_head_limit_it_is_parsed_at_once() {
        let limits = Limits {
            max_head_size: 30,
            ..Limits::default()
        };
        let head = b"GET / HTTP/1.1\r\nA: b\r\nC: d\r\nE: fgh";
        let parsed = trickle(head, 1, &limits);
        assert!(parsed.contains(&31), "{parsed:?}");
    }
}
