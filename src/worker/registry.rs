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
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
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
}

pub struct ConnSocket {
    pub fd: OwnedFd,
    /// Milliseconds since the registry's epoch; 0 means no deadline.
    deadline: AtomicU64,
    state: AtomicU8,
}

impl ConnSocket {
    pub fn new(fd: OwnedFd) -> Self {
        ConnSocket {
            fd,
            deadline: AtomicU64::new(0),
            state: AtomicU8::new(ConnState::New as u8),
        }
    }

    pub fn fd_borrow(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn set_state(&self, s: ConnState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> ConnState {
        match self.state.load(Ordering::Relaxed) {
            0 => ConnState::New,
            1 => ConnState::Idle,
            2 => ConnState::Reading,
            4 => ConnState::Body,
            5 => ConnState::TimedOut,
            6 => ConnState::Linger,
            _ => ConnState::Busy,
        }
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

    /// A stalled body's timeout: `Body` becomes `TimedOut` and input is
    /// shut, which wakes the owner with an end of input while it can still
    /// write its 408. False if the connection has moved on.
    fn time_out_body(&self) -> bool {
        let (from, to) = (ConnState::Body as u8, ConnState::TimedOut as u8);
        if self
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // SAFETY: the fd is owned by self and open for as long as self lives.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RD) };
        true
    }
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

    /// Sets `sock`'s deadline `after` from now.
    pub fn set_deadline(&self, sock: &ConnSocket, after: Duration) {
        let ms = (self.since_epoch() + after).as_millis() as u64;
        sock.deadline.store(ms.max(1), Ordering::Relaxed);
    }

    pub fn clear_deadline(&self, sock: &ConnSocket) {
        sock.deadline.store(0, Ordering::Relaxed);
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
        let mut n = 0;
        for sock in s.items.iter().flatten() {
            let d = sock.deadline.load(Ordering::Relaxed);
            if d != 0 && d <= now {
                sock.deadline.store(0, Ordering::Relaxed);
                // Bytes waiting unread mean the client sent in time and only
                // our threads were all busy. Between requests, that request
                // is owed an answer (once a thread reads it, the head
                // deadline starts from there). A body's deadline counts from
                // its last progress, which the owner will see and renew it
                // for. A head (or a body being dropped) gets another second:
                // the owner reads what came, and a head still incomplete then
                // is cut at that deadline, as a slow client's should be.
                // (Cutting it at once lost requests that had arrived whole,
                // which a thread then ran with no one left to answer.)
                let state = sock.state();
                if matches!(
                    state,
                    ConnState::New | ConnState::Idle | ConnState::Body | ConnState::Reading
                ) && sock.pending_bytes() > 0
                {
                    if state == ConnState::Reading {
                        let again = now + AGAIN.as_millis() as u64;
                        sock.deadline.store(again, Ordering::Relaxed);
                    }
                    continue;
                }
                if !sock.time_out_body() {
                    sock.shutdown();
                }
                n += 1;
            }
        }
        n
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
        let latest = (self.since_epoch() + grace).as_millis() as u64;
        for sock in s.items.iter().flatten() {
            match sock.state() {
                ConnState::Busy | ConnState::Reading | ConnState::Body | ConnState::TimedOut | ConnState::Linger => {}
                ConnState::New | ConnState::Idle => {
                    let d = sock.deadline.load(Ordering::Relaxed);
                    if d == 0 || d > latest {
                        sock.deadline.store(latest.max(1), Ordering::Relaxed);
                    }
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
            .filter(|sock| !matches!(sock.state(), ConnState::New | ConnState::Idle))
            .count()
    }

    /// Quick stop or graceful timeout: closes everything.
    pub fn close_all(&self) {
        let s = self.lock();
        for sock in s.items.iter().flatten() {
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
