//! Accept balancing between workers: a table in shared memory (a memfd the
//! master creates and every worker maps) where each worker publishes how
//! many connections it holds and whether it can take more.
//!
//! The kernel does not balance for us. All workers wait on the same
//! listening socket (EPOLLEXCLUSIVE), and the one that is awake accepts
//! everything queued: when a client (a proxy's pool, wrk) opens many
//! keep-alive connections at once, most of them land on one worker and stay
//! there while the other idles. Measured on this 2-core machine, 2 workers,
//! 40 connections opened back to back: 31/9, 36/4, 38/2, 37/3, 37/3, 40/0.
//!
//! So a worker that holds more than its share stops accepting for a while
//! ("parks": its listeners leave its epoll set), as nginx's accept_disabled
//! does with a local measure; here the share is measured against the other
//! workers. The rules, and why they cannot stop accepting altogether:
//! - a worker accepts at least one connection per wake-up (the kernel woke
//!   it, not another, for that one), then more only while it holds fewer
//!   than the least loaded other worker plus a slack;
//! - only workers that can take a connection soon count as others: they
//!   accept (not booting, not stopping), their heartbeat is fresh (not
//!   stopped, not hung), and they have an app thread free, or their last
//!   one became busy or one finished a request in the last [`STUCK_MS`] (a
//!   worker whose threads all sit in long requests does not count);
//! - a worker parks only if the least loaded other is accepting, or after
//!   waking it (a futex in its slot) when that one is parked too;
//! - a parked worker takes its listeners back when it is within its share
//!   again, or when no other worker is accepting: at once when one of its
//!   connections closes or another worker wakes it, and at the latest every
//!   [`PARKED_RECHECK`].
//!
//! Every field is an atomic: other processes write the table concurrently,
//! and a dead worker can leave any value in its slot (the master clears the
//! slot when it reaps it; until then its stale heartbeat excludes it).

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Environment variable through which a worker learns the table's fd.
pub const BALANCE_ENV: &str = "ZIBAI_WORKER_BALANCE";

/// Workers beyond this many (TTIN) accept without taking part.
const SLOTS: usize = 256;
/// A worker whose heartbeat is older than this is not counted.
const STALE_MS: u64 = 1000;
/// Nor is one whose app threads are all busy and none has finished a
/// request for this long (long requests; quick ones free a thread soon).
const STUCK_MS: u64 = 50;
/// How often a parked worker looks whether it should accept again, when
/// nothing tells it sooner.
pub const PARKED_RECHECK: Duration = Duration::from_millis(5);

/// Slot states.
const OFF: u32 = 0;
const ACCEPTING: u32 = 1;
const PARKED: u32 = 2;
/// Parked, and woken by another worker that parks in turn: counted as
/// accepting, so that the other does not take its listeners back before
/// this one has (on 2 busy cores that took milliseconds, during which the
/// other accepted everything).
const WOKEN: u32 = 3;

#[repr(C, align(64))]
struct Slot {
    /// The worker's pid; 0: free.
    pid: AtomicU32,
    state: AtomicU32,
    /// Open connections.
    conns: AtomicU32,
    /// App threads serving a request now, and how many it has.
    in_app: AtomicU32,
    threads: AtomicU32,
    /// Bumped (and futex-woken) by a worker that wants this one to accept.
    wake: AtomicU32,
    /// CLOCK_MONOTONIC milliseconds, written by the worker's timer thread.
    heartbeat_ms: AtomicU64,
    /// When the last app thread became busy, or a request last ended while
    /// every app thread was busy.
    progress_ms: AtomicU64,
}

#[repr(C)]
struct Shm {
    /// One past the highest slot ever claimed: readers scan no further.
    high: AtomicU32,
    slots: [Slot; SLOTS],
}

/// The shared table, mapped for the life of the process.
#[derive(Clone, Copy)]
pub struct Table {
    shm: &'static Shm,
}

fn map(fd: BorrowedFd<'_>) -> io::Result<&'static Shm> {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap};
    let len = NonZeroUsize::new(std::mem::size_of::<Shm>()).expect("the table has a size");
    // SAFETY: a fresh shared mapping of a memfd at least `len` long (the
    // caller checked or set its size); nothing else in this process maps
    // it at that address.
    let ptr = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd,
            0,
        )
    }?;
    // SAFETY: page-aligned (mmap), `len` bytes, never unmapped (the
    // reference is 'static), and every byte belongs to an atomic integer,
    // for which any bit pattern (zeroed memory, another process's writes)
    // is a valid value.
    Ok(unsafe { &*ptr.as_ptr().cast::<Shm>() })
}

fn now_ms() -> u64 {
    // CLOCK_MONOTONIC is one clock for every process on the machine.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// How many more connections than the least loaded other worker a worker
/// may hold: a few, or an eighth more.
fn slack(min: u32) -> u32 {
    2 + min / 8
}

impl Table {
    /// The master's side: a new zeroed table and the fd workers inherit
    /// (close-on-exec here; spawning clears that in the child).
    pub fn create() -> io::Result<(Table, OwnedFd)> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let fd = memfd_create(c"zibai-balance", MFdFlags::MFD_CLOEXEC)?;
        nix::unistd::ftruncate(&fd, std::mem::size_of::<Shm>() as i64)?;
        let shm = map(fd.as_fd())?;
        Ok((Table { shm }, fd))
    }

    /// The worker's side: maps the table its master made.
    pub fn open(fd: BorrowedFd<'_>) -> io::Result<Table> {
        let size = nix::sys::stat::fstat(fd)?.st_size;
        if (size as usize) < std::mem::size_of::<Shm>() {
            return Err(io::Error::other(format!("the balance table is {size} bytes")));
        }
        Ok(Table { shm: map(fd)? })
    }

    fn slots(&self) -> &'static [Slot] {
        let high = (self.shm.high.load(Ordering::Acquire) as usize).min(SLOTS);
        &self.shm.slots[..high]
    }

    /// The master's side: `pid` exited; its slot is free.
    pub fn forget(&self, pid: u32) {
        for slot in self.slots() {
            if slot.pid.load(Ordering::Acquire) == pid {
                slot.state.store(OFF, Ordering::SeqCst);
                slot.conns.store(0, Ordering::Relaxed);
                slot.in_app.store(0, Ordering::Relaxed);
                slot.pid.store(0, Ordering::Release);
            }
        }
    }

    /// The worker's side: takes a free slot. `None` when all are taken
    /// (the worker then accepts without taking part).
    pub fn join(&self, pid: u32, threads: usize) -> Option<Member> {
        let i = self.shm.slots.iter().position(|s| {
            s.pid
                .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        let slot = &self.shm.slots[i];
        slot.state.store(OFF, Ordering::SeqCst);
        slot.conns.store(0, Ordering::Relaxed);
        slot.in_app.store(0, Ordering::Relaxed);
        slot.threads
            .store(threads.min(u32::MAX as usize) as u32, Ordering::Relaxed);
        slot.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        slot.progress_ms.store(0, Ordering::Relaxed);
        self.shm.high.fetch_max(i as u32 + 1, Ordering::AcqRel);
        Some(Member { table: *self, me: i })
    }
}

/// A worker's place in the table.
pub struct Member {
    table: Table,
    me: usize,
}

/// What a worker about to park must do first.
pub enum Park {
    /// Not park: it is within its share, or nobody else can accept.
    No,
    /// Park; the least loaded other worker accepts.
    Yes,
    /// Park, after waking the least loaded other worker (it is parked).
    WakeFirst,
}

impl Member {
    fn slot(&self) -> &'static Slot {
        &self.table.shm.slots[self.me]
    }

    /// The counter the worker's connection registry keeps up to date.
    pub fn conns(&self) -> &'static AtomicU32 {
        &self.slot().conns
    }

    pub fn set_accepting(&self) {
        self.slot().state.store(ACCEPTING, Ordering::SeqCst);
    }

    pub fn set_parked(&self) {
        self.slot().state.store(PARKED, Ordering::SeqCst);
    }

    /// No longer accepting (stopping).
    pub fn set_off(&self) {
        self.slot().state.store(OFF, Ordering::SeqCst);
    }

    pub fn enter_app(&self) {
        let slot = self.slot();
        if slot.in_app.fetch_add(1, Ordering::Relaxed) + 1 >= slot.threads.load(Ordering::Relaxed) {
            slot.progress_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    pub fn leave_app(&self) {
        let slot = self.slot();
        if slot.in_app.fetch_sub(1, Ordering::Relaxed) >= slot.threads.load(Ordering::Relaxed) {
            slot.progress_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    pub fn heartbeat(&self) {
        self.slot().heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The other workers that could take a connection now.
    fn others(&self) -> impl Iterator<Item = &'static Slot> + '_ {
        let now = now_ms();
        let me = self.slot();
        self.table.slots().iter().filter(move |s| {
            !std::ptr::eq(*s, me)
                && s.pid.load(Ordering::Acquire) != 0
                && s.state.load(Ordering::SeqCst) != OFF
                && now.saturating_sub(s.heartbeat_ms.load(Ordering::Relaxed)) <= STALE_MS
                && (s.in_app.load(Ordering::Relaxed) < s.threads.load(Ordering::Relaxed)
                    || now.saturating_sub(s.progress_ms.load(Ordering::Relaxed)) <= STUCK_MS)
        })
    }

    /// The least loaded other worker that could take a connection.
    fn least_loaded_other(&self) -> Option<&'static Slot> {
        self.others().min_by_key(|s| s.conns.load(Ordering::Relaxed))
    }

    fn within_share(&self, least: &Slot) -> bool {
        let min = least.conns.load(Ordering::Relaxed);
        self.slot().conns.load(Ordering::Relaxed) < min.saturating_add(slack(min))
    }

    /// After an accept: whether this worker should stop accepting now.
    pub fn should_park(&self) -> Park {
        match self.least_loaded_other() {
            Some(least) if !self.within_share(least) => {
                if least.state.load(Ordering::SeqCst) == PARKED {
                    Park::WakeFirst
                } else {
                    Park::Yes
                }
            }
            _ => Park::No,
        }
    }

    /// Wakes the least loaded other worker (see [`Park::WakeFirst`]).
    pub fn wake_least_loaded(&self) {
        if let Some(least) = self.least_loaded_other() {
            let _ = least
                .state
                .compare_exchange(PARKED, WOKEN, Ordering::SeqCst, Ordering::SeqCst);
            least.wake.fetch_add(1, Ordering::SeqCst);
            futex_wake(&least.wake);
        }
    }

    /// A parked worker: whether to take its listeners back.
    pub fn should_unpark(&self) -> bool {
        if self.slot().state.load(Ordering::SeqCst) == WOKEN {
            return true;
        }
        let accepting_other = self
            .others()
            .any(|s| matches!(s.state.load(Ordering::SeqCst), ACCEPTING | WOKEN));
        !accepting_other || self.least_loaded_other().is_none_or(|least| self.within_share(least))
    }

    /// The value to pass to [`Member::wait`] (read it before deciding
    /// whether to wait, so that a wake in between is not lost).
    pub fn wake_seq(&self) -> u32 {
        self.slot().wake.load(Ordering::SeqCst)
    }

    /// Ends a [`Member::wait`] under way in this worker.
    pub fn wake_self(&self) {
        self.slot().wake.fetch_add(1, Ordering::SeqCst);
        futex_wake(&self.slot().wake);
    }

    /// Waits until another worker wakes this one (after `seq`) or `timeout`.
    pub fn wait(&self, seq: u32, timeout: Duration) {
        futex_wait(&self.slot().wake, seq, timeout);
    }

    /// Leaves the table (at exit).
    pub fn leave(&self) {
        self.set_off();
        self.slot().pid.store(0, Ordering::Release);
    }
}

// Shared (not FUTEX_PRIVATE) futexes: the word lives in memory mapped by
// several processes. No crate offers that: atomic-wait and the like use
// private futexes, which only wake threads of one process.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word` (valid for
    // the call) and the timespec on our stack; it only sleeps.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address of the aligned u32 as a key.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(table: &Table, pid: u32, threads: usize) -> Member {
        let m = table.join(pid, threads).expect("a free slot");
        m.set_accepting();
        m
    }

    fn hold(m: &Member, conns: u32) {
        m.conns().store(conns, Ordering::Relaxed);
    }

    /// As if none of `m`'s requests had finished for longer than STUCK_MS.
    fn stuck(m: &Member) {
        m.slot()
            .progress_ms
            .store(now_ms().saturating_sub(STUCK_MS + 10), Ordering::Relaxed);
    }

    #[test]
    fn a_worker_parks_past_its_share_and_only_then() {
        let (table, _fd) = Table::create().unwrap();
        let (a, b) = (member(&table, 101, 4), member(&table, 102, 4));
        hold(&b, 0);
        hold(&a, 1);
        assert!(matches!(a.should_park(), Park::No));
        hold(&a, 2);
        assert!(matches!(a.should_park(), Park::Yes));
        // With 80 connections the other may hold 80 + 12.
        hold(&b, 80);
        hold(&a, 91);
        assert!(matches!(a.should_park(), Park::No));
        hold(&a, 92);
        assert!(matches!(a.should_park(), Park::Yes));
    }

    #[test]
    fn alone_or_next_to_workers_that_cannot_accept_a_worker_never_parks() {
        let (table, _fd) = Table::create().unwrap();
        let a = member(&table, 101, 4);
        hold(&a, 1000);
        assert!(matches!(a.should_park(), Park::No));
        // Booting (not accepting yet).
        let b = table.join(102, 4).unwrap();
        assert!(matches!(a.should_park(), Park::No));
        // Every app thread busy, just now: still counted (quick requests
        // free a thread soon) ...
        b.set_accepting();
        for _ in 0..4 {
            b.enter_app();
        }
        assert!(matches!(a.should_park(), Park::Yes));
        // ... not once none has finished for STUCK_MS (long requests) ...
        stuck(&b);
        assert!(matches!(a.should_park(), Park::No));
        // ... and again when one finishes.
        b.leave_app();
        b.enter_app();
        assert!(matches!(a.should_park(), Park::Yes));
        stuck(&b);
        b.leave_app();
        assert!(matches!(a.should_park(), Park::Yes));
        // Hung: no heartbeat for longer than STALE_MS.
        b.slot()
            .heartbeat_ms
            .store(now_ms().saturating_sub(STALE_MS + 100), Ordering::Relaxed);
        assert!(matches!(a.should_park(), Park::No));
        b.heartbeat();
        // Gone: the master forgot its pid.
        table.forget(102);
        assert!(matches!(a.should_park(), Park::No));
    }

    #[test]
    fn a_parked_least_loaded_worker_is_woken_first_and_takes_over() {
        let (table, _fd) = Table::create().unwrap();
        let (a, b) = (member(&table, 101, 4), member(&table, 102, 4));
        hold(&a, 2);
        b.set_parked();
        hold(&b, 4);
        // b is parked and past its share: it stays parked while a accepts.
        assert!(!b.should_unpark());
        hold(&a, 6);
        assert!(matches!(a.should_park(), Park::WakeFirst));
        let seq = b.wake_seq();
        a.wake_least_loaded();
        assert_ne!(b.wake_seq(), seq);
        // Woken, b counts as accepting: a parks and stays parked (it is
        // past its share) while b has not taken its listeners back yet.
        a.set_parked();
        assert!(!a.should_unpark());
        // The wake is not lost: waiting on the old value returns at once.
        let t = std::time::Instant::now();
        b.wait(seq, Duration::from_secs(10));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(b.should_unpark());
        // Both parked: each takes its listeners back (nobody else accepts).
        b.set_parked();
        hold(&b, 100);
        assert!(b.should_unpark());
        assert!(a.should_unpark());
    }

    #[test]
    fn slots_are_reused_and_run_out_gracefully() {
        let (table, _fd) = Table::create().unwrap();
        let members: Vec<Member> = (1..=SLOTS as u32).map(|pid| member(&table, pid, 1)).collect();
        assert!(table.join(9999, 1).is_none());
        members[7].leave();
        assert_eq!(table.join(9999, 1).map(|m| m.me), Some(7));
        table.forget(3);
        assert_eq!(table.join(9998, 1).map(|m| m.me), Some(2));
    }
}
