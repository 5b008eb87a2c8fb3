//! Every open connection of the worker, so that one timer can enforce the
//! deadlines of connections no thread is looking at, and a graceful stop can
//! close the idle ones and wait for the busy ones.
//!
//! A connection is owned by whichever thread epoll handed it to; the
//! registry only holds an `Arc` of its socket. Expiring a deadline is a
//! `shutdown(2)`, which wakes the owner (or the next thread epoll picks)
//! through the socket itself: the registry never frees or closes anything a
//! thread may be using, and because it holds the `OwnedFd` alive, a shutdown
//! can never hit a reused descriptor.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How much longer a head gets when its bytes wait unread at its deadline
/// (see [`Registry::expire`]).
const AGAIN: Duration = Duration::from_secs(1);

/// What a connection is doing, as far as a graceful stop cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    /// Accepted, nothing read yet: its client is about to send a request.
    New = 0,
    /// Between two requests on a persistent connection.
    Idle = 1,
    /// A request head is arriving.
    Reading = 2,
    /// A request is being served (or its response flushed): let it finish.
    Busy = 3,
    /// A whole head waits for its small body, which is read before the app
    /// is called: the request is owed an answer if the body stalls.
    Body = 4,
    /// `Body` past its deadline: input is shut, and the owner answers 408
    /// when it sees the end (see [`Registry::expire`]).
    TimedOut = 5,
    /// Answered and closing: what the client still sends is read and
    /// dropped until it is done, or the deadline.
    Linger = 6,
    /// Shut down by a deadline or a stop. Final: the owner's transitions no
    /// longer apply, and [`Registry::begin_serving`] refuses it, so no
    /// request starts on a connection that is already cut.
    Expired = 7,
}

impl ConnState {
    fn from_bits(b: u64) -> Self {
        match b {
            0 => ConnState::New,
            1 => ConnState::Idle,
            2 => ConnState::Reading,
            3 => ConnState::Busy,
            4 => ConnState::Body,
            5 => ConnState::TimedOut,
            6 => ConnState::Linger,
            _ => ConnState::Expired,
        }
    }
}

/// A connection's state and deadline in one word, so that the timer and a
/// stop decide on the pair the owner last set and apply their verdict only
/// if it still holds (a compare-and-swap): with two separate atomics, a
/// deadline that expired as the owner started serving cut the request it
/// was serving, and one the timer cleared as the owner set the next was
/// lost, leaving a slow head without a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Word(u64);

/// Bits of the word that hold the deadline; the state is above them.
const DEADLINE_BITS: u32 = 56;
const DEADLINE_MASK: u64 = (1 << DEADLINE_BITS) - 1;

impl Word {
    /// `deadline` is in milliseconds since the registry's epoch; 0 means
    /// none.
    fn new(state: ConnState, deadline: u64) -> Self {
        Word((state as u64) << DEADLINE_BITS | deadline.min(DEADLINE_MASK))
    }

    fn state(self) -> ConnState {
        ConnState::from_bits(self.0 >> DEADLINE_BITS)
    }

    fn deadline(self) -> u64 {
        self.0 & DEADLINE_MASK
    }
}

pub struct ConnSocket {
    pub fd: OwnedFd,
    word: AtomicU64,
    /// A parked response tail's wait: what the socket held when it was last
    /// seen taking bytes (high half) and the write timeout in milliseconds
    /// (low half), for [`Registry::expire`] to tell a slow reader from a
    /// stalled one (see `io::Progress`).
    write_wait: AtomicU64,
}

impl ConnSocket {
    pub fn new(fd: OwnedFd) -> Self {
        ConnSocket {
            fd,
            word: AtomicU64::new(Word::new(ConnState::New, 0).0),
            write_wait: AtomicU64::new(0),
        }
    }

    pub fn fd_borrow(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn word(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// The owner's change: `f` maps the current word to the next. Not
    /// applied to an expired connection; false then.
    fn update(&self, f: impl Fn(Word) -> Word) -> bool {
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let w = Word(w);
                (w.state() != ConnState::Expired).then(|| f(w).0)
            })
            .is_ok()
    }

    /// Sets the state, keeping the deadline.
    pub fn set_state(&self, s: ConnState) {
        self.update(|w| Word::new(s, w.deadline()));
    }

    pub fn state(&self) -> ConnState {
        self.word().state()
    }

    /// Bytes the client sent that nobody has read yet.
    pub fn pending_bytes(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through a valid pointer; the fd is
        // open for as long as self lives.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::FIONREAD, &mut n) };
        if rc == 0 { n.max(0) as usize } else { 0 }
    }

    pub fn shutdown(&self) {
        // SAFETY: the fd is owned by self and open for as long as self lives.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }

    /// Ends the sending side: the client gets its FIN after what is
    /// queued, and a write waiting on the socket fails.
    pub fn shutdown_output(&self) -> std::io::Result<()> {
        nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Write).map_err(std::io::Error::from)
    }

    fn shutdown_input(&self) {
        // SAFETY: the fd is owned by self and open for as long as self lives.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RD) };
    }

    fn note_write_wait(&self, queued: usize, patience: Duration) {
        self.write_wait.store(write_wait(queued, patience), Ordering::Relaxed);
    }

    /// A parked tail past its deadline: the write timeout again if the
    /// client took at least `io::MIN_PROGRESS` bytes since it was last
    /// seen taking some. The new baseline replaces only the one this read:
    /// an owner that parked the tail again meanwhile set a fresher one.
    fn write_progress(&self) -> Option<Duration> {
        let seen = self.write_wait.load(Ordering::Relaxed);
        self.advance_write_wait(seen, || super::io::unacked(self.fd.as_fd()))
    }

    /// [`write_progress`](Self::write_progress) from the word `seen`, with
    /// `unacked` telling what the socket holds now.
    fn advance_write_wait(&self, seen: u64, unacked: impl FnOnce() -> usize) -> Option<Duration> {
        let (queued, ms) = ((seen >> 32) as usize, seen & u64::from(u32::MAX));
        if ms == 0 {
            return None;
        }
        let now = unacked();
        if super::io::took_enough(queued, now) {
            let next = write_wait(now, Duration::from_millis(ms));
            let _ = self
                .write_wait
                .compare_exchange(seen, next, Ordering::Relaxed, Ordering::Relaxed);
            return Some(Duration::from_millis(ms));
        }
        None
    }

    /// Replaces `seen` by `next` if the owner has not changed the word since.
    fn decide(&self, seen: Word, next: Word) -> Result<(), Word> {
        self.word
            .compare_exchange(seen.0, next.0, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(Word)
    }
}

/// `ConnSocket::write_wait`'s word: what the socket held (high half) and
/// the write timeout in milliseconds (low half).
fn write_wait(queued: usize, patience: Duration) -> u64 {
    let queued = queued.min(u32::MAX as usize) as u64;
    let ms = patience.as_millis().min(u32::MAX as u128) as u64;
    queued << 32 | ms
}

/// What the timer does to a connection whose deadline has passed.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The word becomes this, and nothing else happens.
    Spare(Word),
    /// A stalled small body: `TimedOut`, and input is shut, which wakes the
    /// owner with an end of input while it can still write its 408.
    TimeOutBody,
    /// `Expired`, and the socket is shut down.
    Cut,
}

/// The timer's verdict on a connection seen as `w` at `now`, or `None` if
/// its deadline has not passed. `pending` tells whether the client sent
/// bytes nobody has read yet, and `write_progress` whether the client of a
/// parked response tail took some of it since it was last asked, and then
/// the write timeout to give it again (each asked only when it matters).
fn verdict(
    w: Word,
    now: u64,
    pending: impl FnOnce() -> bool,
    write_progress: impl FnOnce() -> Option<Duration>,
) -> Option<Verdict> {
    let (state, deadline) = (w.state(), w.deadline());
    if deadline == 0 || deadline > now || state == ConnState::Expired {
        return None;
    }
    // Bytes waiting unread mean the client sent in time and only our
    // threads were all busy. Between requests, that request is owed an
    // answer (once a thread reads it, the head deadline starts from there).
    // A body's deadline counts from its last progress, which the owner will
    // see and renew it for. A head (or a body being dropped) gets another
    // second: the owner reads what came, and a head still incomplete then is
    // cut at that deadline, as a slow client's should be. (Cutting it at
    // once lost requests that had arrived whole, which a thread then ran
    // with no one left to answer.)
    let spared = matches!(
        state,
        ConnState::New | ConnState::Idle | ConnState::Body | ConnState::Reading
    );
    if spared && pending() {
        let again = if state == ConnState::Reading {
            now + AGAIN.as_millis() as u64
        } else {
            0
        };
        return Some(Verdict::Spare(Word::new(state, again)));
    }
    // Only a parked response tail is busy with a deadline: one whose client
    // is reading, only slowly, waits on.
    if state == ConnState::Busy
        && let Some(patience) = write_progress()
    {
        let again = now + patience.as_millis() as u64;
        return Some(Verdict::Spare(Word::new(state, again)));
    }
    Some(if state == ConnState::Body {
        Verdict::TimeOutBody
    } else {
        Verdict::Cut
    })
}

#[derive(Default)]
struct Slab {
    items: Vec<Option<Arc<ConnSocket>>>,
    free: Vec<usize>,
    count: usize,
}

pub struct Registry {
    slab: Mutex<Slab>,
    emptied: Condvar,
    /// When the registry was made, by [`super::coarse_monotonic`]: deadlines
    /// are set twice a request, and a tick's precision is plenty for them.
    epoch: Duration,
    /// Where the count is published for the other workers (see
    /// `master::balance`).
    published: Option<&'static AtomicU32>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            slab: Mutex::new(Slab::default()),
            emptied: Condvar::new(),
            epoch: super::coarse_monotonic(),
            published: None,
        }
    }

    /// A registry that keeps `counter` equal to its number of connections.
    pub fn publishing(counter: Option<&'static AtomicU32>) -> Self {
        Registry {
            published: counter,
            ..Registry::new()
        }
    }

    fn publish(&self, count: usize) {
        if let Some(c) = self.published {
            c.store(count.min(u32::MAX as usize) as u32, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slab> {
        // A panic while holding this lock leaves the slab consistent (every
        // mutation is a single assignment), so poisoning is ignored.
        self.slab.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, sock: Arc<ConnSocket>) -> usize {
        let mut s = self.lock();
        s.count += 1;
        self.publish(s.count);
        match s.free.pop() {
            Some(i) => {
                s.items[i] = Some(sock);
                i
            }
            None => {
                s.items.push(Some(sock));
                s.items.len() - 1
            }
        }
    }

    pub fn remove(&self, slot: usize) {
        let mut s = self.lock();
        if s.items.get_mut(slot).and_then(Option::take).is_some() {
            s.free.push(slot);
            s.count -= 1;
            self.publish(s.count);
            if s.count == 0 {
                self.emptied.notify_all();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn deadline_after(&self, after: Duration) -> u64 {
        ((self.since_epoch() + after).as_millis() as u64).max(1)
    }

    /// Sets `sock`'s deadline `after` from now, keeping its state.
    pub fn set_deadline(&self, sock: &ConnSocket, after: Duration) {
        let d = self.deadline_after(after);
        sock.update(|w| Word::new(w.state(), d));
    }

    /// A response tail parked on `sock` until the client takes more: the
    /// deadline is the write timeout `after` from now, and again from each
    /// time the client is seen to have taken some (see `io::Progress`).
    pub fn set_write_deadline(&self, sock: &ConnSocket, after: Duration) {
        sock.note_write_wait(super::io::unacked(sock.fd.as_fd()), after);
        self.set_deadline(sock, after);
    }

    /// Sets `sock`'s state, and its deadline `after` from now.
    pub fn enter(&self, sock: &ConnSocket, state: ConnState, after: Duration) {
        let d = self.deadline_after(after);
        sock.update(|_| Word::new(state, d));
    }

    /// The owner is about to run the app on `sock`: `Busy`, no deadline.
    /// False if a deadline or a stop has cut it: then nobody could read
    /// the answer, and the owner closes it instead.
    pub fn begin_serving(&self, sock: &ConnSocket) -> bool {
        sock.update(|_| Word::new(ConnState::Busy, 0))
    }

    fn since_epoch(&self) -> Duration {
        super::coarse_monotonic().saturating_sub(self.epoch)
    }

    /// Shuts down every connection whose deadline has passed; returns how many.
    pub fn expire(&self) -> usize {
        self.expire_at(self.since_epoch())
    }

    /// `expire` as if `since_epoch` had passed since the registry was made.
    fn expire_at(&self, since_epoch: Duration) -> usize {
        let now = since_epoch.as_millis() as u64;
        let s = self.lock();
        s.items.iter().flatten().filter(|sock| expire_one(sock, now)).count()
    }

    /// Graceful stop: a connection with nothing to answer (new, or idle
    /// between two requests) has `grace` to send a request, which is
    /// answered with `Connection: close`; at its deadline it is closed if
    /// still quiet. A request that has arrived, even unread, is answered.
    ///
    /// Closing an idle keep-alive connection at once would race its
    /// client's next request: one sent as the stop begins finds the
    /// connection closed with no answer (most clients do not retry a POST).
    /// A busy client sends again within the grace and gets its answer; only
    /// one quiet for the whole grace is closed, as the keep-alive timeout
    /// would have.
    pub fn close_idle(&self, grace: Duration) {
        let s = self.lock();
        let latest = self.deadline_after(grace);
        for sock in s.items.iter().flatten() {
            let mut w = sock.word();
            loop {
                let quiet = matches!(w.state(), ConnState::New | ConnState::Idle);
                if !quiet || (w.deadline() != 0 && w.deadline() <= latest) {
                    break;
                }
                match sock.decide(w, Word::new(w.state(), latest)) {
                    Ok(()) => break,
                    Err(now) => w = now,
                }
            }
        }
    }

    /// Connections a request is arriving on or being served on.
    pub fn busy(&self) -> usize {
        let s = self.lock();
        s.items
            .iter()
            .flatten()
            .filter(|sock| !matches!(sock.state(), ConnState::New | ConnState::Idle | ConnState::Expired))
            .count()
    }

    /// Quick stop or graceful timeout: closes everything, and no request
    /// starts on it after this.
    pub fn close_all(&self) {
        let s = self.lock();
        for sock in s.items.iter().flatten() {
            sock.word.store(Word::new(ConnState::Expired, 0).0, Ordering::Release);
            sock.shutdown();
        }
    }

    /// Waits until no connection is left, or `timeout`; true if none is left.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while s.count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.emptied.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }
}

/// The timer's pass over one connection at `now`: true if it was cut (or
/// its stalled body timed out).
fn expire_one(sock: &ConnSocket, now: u64) -> bool {
    let mut w = sock.word();
    loop {
        let Some(v) = verdict(w, now, || sock.pending_bytes() > 0, || sock.write_progress()) else {
            return false;
        };
        let next = match v {
            Verdict::Spare(next) => next,
            Verdict::TimeOutBody => Word::new(ConnState::TimedOut, 0),
            Verdict::Cut => Word::new(ConnState::Expired, 0),
        };
        // The owner may have moved on since `w` was read (started serving,
        // set the next deadline): then the verdict is made again on what
        // it set.
        if let Err(seen) = sock.decide(w, next) {
            w = seen;
            continue;
        }
        match v {
            Verdict::Spare(_) => return false,
            Verdict::TimeOutBody => sock.shutdown_input(),
            Verdict::Cut => sock.shutdown(),
        }
        return true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn sock() -> (Arc<ConnSocket>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Arc::new(ConnSocket::new(OwnedFd::from(a))), b)
    }

    #[test]
    fn expired_deadline_shuts_the_socket_down() {
        let r = Registry::new();
        let (s, mut peer) = sock();
        let slot = r.insert(s.clone());
        r.set_deadline(&s, Duration::from_secs(10));
        assert_eq!(r.expire(), 0, "not yet");
        assert_eq!(r.expire_at(Duration::from_secs(3600)), 1);
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut peer, &mut buf).unwrap(), 0, "peer sees EOF");
        assert_eq!(r.expire_at(Duration::from_secs(7200)), 0, "a deadline fires once");
        r.remove(slot);
        assert!(r.is_empty());
    }

    /// A stalled small body: its request is owed a 408, so the timer shuts
    /// only the input (the owner wakes to an end of input and can still
    /// write), and marks the connection for the owner to tell.
    #[test]
    fn an_expired_body_wait_keeps_the_socket_writable() {
        let r = Registry::new();
        let (s, mut peer) = sock();
        r.insert(s.clone());
        s.set_state(ConnState::Body);
        r.set_deadline(&s, Duration::from_secs(10));
        assert_eq!(r.expire_at(Duration::from_secs(3600)), 1);
        assert_eq!(s.state(), ConnState::TimedOut);
        let mut buf = [0u8; 8];
        let mut own = UnixStream::from(s.fd.try_clone().unwrap());
        assert_eq!(std::io::Read::read(&mut own, &mut buf).unwrap(), 0, "input is shut");
        std::io::Write::write_all(&mut own, b"408").unwrap();
        assert_eq!(
            std::io::Read::read(&mut peer, &mut buf).unwrap(),
            3,
            "the peer can still be answered"
        );
        assert_eq!(r.busy(), 1, "a graceful stop waits for the answer");

        // A body whose next bytes have arrived, unread because every thread
        // was busy, made progress in time: not cut off.
        let (s, mut peer) = sock();
        r.insert(s.clone());
        s.set_state(ConnState::Body);
        std::io::Write::write_all(&mut peer, b"rest of the body").unwrap();
        r.set_deadline(&s, Duration::from_secs(10));
        assert_eq!(r.expire_at(Duration::from_secs(3600)), 0);
        assert_eq!(s.state(), ConnState::Body);
    }

    /// Regression (found by master::graceful_stop_answers_a_request_waiting_on_an_accepted_connection):
    /// a graceful stop shut down connections whose request had arrived but
    /// was not read yet, so the app ran and the client got nothing.
    #[test]
    fn close_idle_spares_connections_with_a_request_waiting() {
        let r = Registry::new();
        let (waiting, mut waiting_peer) = sock();
        waiting.set_state(ConnState::Idle);
        std::io::Write::write_all(&mut waiting_peer, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let (fresh, fresh_peer) = sock();
        r.insert(waiting);
        r.insert(fresh.clone());
        r.close_idle(Duration::from_secs(1));
        waiting_peer.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let e = std::io::Read::read(&mut waiting_peer, &mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "still open");
        // A new connection is not closed at once, but gets a deadline.
        fresh_peer.set_nonblocking(true).unwrap();
        let e = std::io::Read::read(&mut &fresh_peer, &mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(
            r.expire_at(Duration::from_secs(2)),
            1,
            "the new connection's grace ran out"
        );
        let e = std::io::Read::read(&mut waiting_peer, &mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "the request is still owed");
    }

    /// A request that arrived in time but found every thread busy is not
    /// cut off by the deadline it beat.
    #[test]
    fn expire_spares_a_request_waiting_unread() {
        let r = Registry::new();
        let (s, mut peer) = sock();
        r.insert(s.clone());
        r.set_deadline(&s, Duration::from_secs(10));
        std::io::Write::write_all(&mut peer, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.expire_at(Duration::from_secs(3600)), 0);
        peer.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let e = std::io::Read::read(&mut peer, &mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "still open");
    }

    /// An idle keep-alive connection is not closed as the stop begins: its
    /// client may be sending its next request right now. It gets the grace,
    /// like a new one; a busy one gets no deadline at all.
    #[test]
    fn close_idle_gives_idle_connections_the_grace_and_spares_busy_ones() {
        let r = Registry::new();
        let (idle, idle_peer) = sock();
        idle.set_state(ConnState::Idle);
        let (busy, busy_peer) = sock();
        busy.set_state(ConnState::Busy);
        r.insert(idle);
        let b = r.insert(busy);
        r.close_idle(Duration::from_secs(1));
        let mut buf = [0u8; 1];
        idle_peer.set_nonblocking(true).unwrap();
        let e = std::io::Read::read(&mut &idle_peer, &mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "closed before its grace");
        assert_eq!(r.expire_at(Duration::from_millis(500)), 0);
        assert_eq!(r.expire_at(Duration::from_secs(2)), 1, "the idle one's grace ran out");
        assert_eq!(std::io::Read::read(&mut &idle_peer, &mut buf).unwrap(), 0);
        busy_peer.set_nonblocking(true).unwrap();
        let e = std::io::Read::read(&mut &busy_peer, &mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        assert!(!r.wait_empty(Duration::from_millis(1)));
        r.remove(b);
        assert_eq!(r.len(), 1);
    }

    /// The timer's verdict is applied only to the word it was made on: a
    /// deadline that passed as the owner started serving does not cut the
    /// request now being served.
    #[test]
    fn a_verdict_on_a_word_the_owner_has_changed_is_not_applied() {
        let r = Registry::new();
        let (s, _peer) = sock();
        r.insert(s.clone());
        r.enter(&s, ConnState::Reading, Duration::ZERO);
        let now = r.since_epoch().as_millis() as u64 + 1;
        let seen = s.word();
        assert_eq!(verdict(seen, now, || false, || None), Some(Verdict::Cut));
        assert!(r.begin_serving(&s), "the owner got there first");
        assert!(s.decide(seen, Word::new(ConnState::Expired, 0)).is_err());
        assert!(!expire_one(&s, now), "made again on what the owner set");
        assert_eq!(s.state(), ConnState::Busy);
        assert_no_eof(&s);
    }

    /// The owner's next deadline is not lost to a verdict on its previous
    /// one (the timer used to clear the deadline after the owner had set a
    /// new one, which left a slow head with none).
    #[test]
    fn a_deadline_the_owner_sets_as_the_timer_runs_is_kept() {
        let r = Registry::new();
        let (s, _peer) = sock();
        r.insert(s.clone());
        r.enter(&s, ConnState::Idle, Duration::ZERO);
        let now = r.since_epoch().as_millis() as u64 + 1;
        let seen = s.word();
        r.enter(&s, ConnState::Reading, Duration::from_secs(10));
        assert!(s.decide(seen, Word::new(ConnState::Idle, 0)).is_err());
        assert!(!expire_one(&s, now));
        assert!(s.word().deadline() > now, "the head's deadline stands");
        assert_eq!(r.expire_at(Duration::from_secs(3600)), 1, "and is enforced");
    }

    /// Once cut, a connection stays cut: the owner's transitions do not
    /// revive it, and no request starts on it.
    #[test]
    fn an_expired_connection_is_not_served() {
        let r = Registry::new();
        let (s, _peer) = sock();
        r.insert(s.clone());
        r.enter(&s, ConnState::Reading, Duration::from_secs(1));
        assert_eq!(r.expire_at(Duration::from_secs(3600)), 1);
        r.enter(&s, ConnState::Reading, Duration::from_secs(10));
        assert_eq!(s.state(), ConnState::Expired);
        assert!(!r.begin_serving(&s));
        assert_eq!(r.busy(), 0, "nothing to wait for");

        let (s, _peer) = sock();
        r.insert(s.clone());
        r.close_all();
        assert!(!r.begin_serving(&s), "nor after a quick stop");
    }

    /// The race itself, run for real: an owner starting requests whose
    /// head deadline has just passed, and the timer expiring as fast as it
    /// can. Whenever the owner is told it may serve, the socket must still
    /// be open. (With state and deadline in two atomics this failed within
    /// a few thousand rounds on a 2-core machine.)
    #[test]
    fn the_timer_never_cuts_a_request_being_served() {
        let r = Arc::new(Registry::new());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let timer = {
            let (r, stop) = (r.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    r.expire_at(Duration::from_secs(3600));
                }
            })
        };
        let started = Instant::now();
        let (mut served, mut cut) = (0, 0);
        while served + cut < 20_000 && started.elapsed() < Duration::from_secs(5) {
            let (s, _peer) = sock();
            let slot = r.insert(s.clone());
            r.enter(&s, ConnState::Reading, Duration::ZERO);
            if r.begin_serving(&s) {
                assert_no_eof(&s);
                served += 1;
            } else {
                cut += 1;
            }
            r.remove(slot);
        }
        stop.store(true, Ordering::Relaxed);
        timer.join().unwrap();
        assert!(served + cut > 0);
    }

    /// A parked response tail whose client reads, only slowly, waits on
    /// past its write deadline; one whose client stopped is cut.
    #[test]
    fn a_parked_tail_waits_for_a_slow_reader_and_not_for_a_stalled_one() {
        use std::io::{IoSlice, Read};
        let r = Registry::new();
        let (a, mut b) = crate::worker::io::tests::small_pair();
        let s = Arc::new(ConnSocket::new(OwnedFd::from(a)));
        r.insert(s.clone());
        let data = vec![7u8; 256 * 1024];
        let mut slices = [IoSlice::new(&data)];
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        assert!(!crate::worker::io::write_now(s.fd_borrow(), &mut rest).unwrap());
        assert!(r.begin_serving(&s));
        r.set_write_deadline(&s, Duration::from_secs(1));
        // The client takes 16 KiB; its acknowledgement follows within a
        // moment (waited for, bounded).
        let held = crate::worker::io::unacked(s.fd_borrow());
        let mut buf = vec![0u8; 16 * 1024];
        b.read_exact(&mut buf).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while crate::worker::io::unacked(s.fd_borrow()) + crate::worker::io::MIN_PROGRESS > held {
            assert!(Instant::now() < deadline, "the read was never acknowledged");
            std::thread::sleep(Duration::from_millis(1));
        }
        let later = Duration::from_secs(3600);
        assert!(
            !expire_one(&s, later.as_millis() as u64),
            "a reading client's tail was cut"
        );
        assert_eq!(s.state(), ConnState::Busy);
        assert!(s.word().deadline() > later.as_millis() as u64, "another write timeout");
        // Nothing more taken: cut at the next deadline.
        assert_eq!(r.expire_at(later * 2), 1);
        assert_eq!(s.state(), ConnState::Expired);
    }

    /// Regression (found by review): the timer stored the progress
    /// baseline it computed even when the owner had parked the tail again
    /// meanwhile with a fresher one, so a later deadline compared against a
    /// stale baseline and cut a client that was reading.
    #[test]
    fn a_progress_baseline_the_owner_refreshed_is_kept() {
        let (s, _peer) = sock();
        s.note_write_wait(100_000, Duration::from_secs(1));
        let seen = s.write_wait.load(Ordering::Relaxed);
        // The owner wrote more and parked again: the socket holds 90,000.
        s.note_write_wait(90_000, Duration::from_secs(1));
        // The timer, on what it read before: 20,000 taken since then.
        assert_eq!(s.advance_write_wait(seen, || 80_000), Some(Duration::from_secs(1)));
        assert_eq!(
            s.write_wait.load(Ordering::Relaxed),
            write_wait(90_000, Duration::from_secs(1)),
            "the owner's baseline was overwritten"
        );
    }

    fn assert_no_eof(s: &ConnSocket) {
        let mut own = UnixStream::from(s.fd.try_clone().unwrap());
        own.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let e = std::io::Read::read(&mut own, &mut buf).expect_err("the socket was shut down");
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    }

    #[test]
    fn slots_are_reused() {
        let r = Registry::new();
        let (a, _pa) = sock();
        let (b, _pb) = sock();
        let i = r.insert(a);
        r.remove(i);
        assert_eq!(r.insert(b), i);
    }

    #[test]
    fn the_published_count_follows_inserts_and_removes() {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let r = Registry::publishing(Some(&COUNT));
        let (a, _pa) = sock();
        let (b, _pb) = sock();
        let i = r.insert(a);
        let j = r.insert(b);
        assert_eq!(COUNT.load(Ordering::Relaxed), 2);
        r.remove(i);
        r.remove(i);
        assert_eq!(COUNT.load(Ordering::Relaxed), 1);
        r.remove(j);
        assert_eq!(COUNT.load(Ordering::Relaxed), 0);
    }
}
