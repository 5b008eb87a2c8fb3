//! Socket I/O on non-blocking fds: reads that never wait, and the two ways a
//! response is written (wait with a deadline, or hand the unsent tail back
//! to be parked on the connection). Never touches Python: callers detach
//! first.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Linux's IOV_MAX: writev refuses more slices than this.
const IOV_MAX: usize = 1024;

/// Reads once into the spare capacity of `buf` (growing it by at least
/// `chunk`). `Ok(0)` is end of stream; `WouldBlock` means nothing is there.
pub fn read_some(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, chunk: usize) -> io::Result<usize> {
    if buf.capacity() - buf.len() < chunk / 2 {
        buf.reserve(chunk);
    }
    let spare = buf.spare_capacity_mut();
    loop {
        // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by
        // `buf`; read(2) writes at most that many bytes into it.
        let n = unsafe { libc::read(fd_raw(fd), spare.as_mut_ptr().cast(), spare.len()) };
        if n >= 0 {
            // SAFETY: read(2) initialised exactly `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn fd_raw(fd: BorrowedFd<'_>) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

/// Waits until `fd` is ready for `flags` or `deadline` passes.
pub fn wait_ready(fd: BorrowedFd<'_>, flags: PollFlags, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "client too slow"));
        }
        let ms = PollTimeout::try_from(left.as_millis().clamp(1, i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, flags)];
        match poll(&mut fds, ms) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Bytes the kernel holds for `fd` that the peer has not taken yet
/// (SIOCOUTQ: unsent and unacknowledged); 0 if it cannot tell.
pub fn unacked(fd: BorrowedFd<'_>) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through a valid pointer; the fd is
    // borrowed, so open for the call.
    let rc = unsafe { libc::ioctl(fd_raw(fd), libc::TIOCOUTQ, &mut n) };
    if rc == 0 { n.max(0) as usize } else { 0 }
}

/// What the client must take from a full socket within the write timeout
/// for the wait to go on.
pub const MIN_PROGRESS: usize = 4096;

/// The write timeout's measure of progress while a socket stays full.
/// Writable is only signalled once a good part of the send buffer is free
/// again (half of what it holds, and the kernel grows it to megabytes), so
/// a client reading steadily at tens of kB/s never let a write through
/// within the timeout and was cut off mid-download. What it took from the
/// socket counts as well: at least [`MIN_PROGRESS`] bytes since the last
/// progress give the wait another timeout.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    queued: usize,
}

impl Progress {
    /// Notes what `fd` holds now, as the wait for it begins.
    pub fn sample(fd: BorrowedFd<'_>) -> Progress {
        Progress { queued: unacked(fd) }
    }

    /// At the deadline: whether the client took at least [`MIN_PROGRESS`]
    /// (or all) of what the socket held; if so, counts from here.
    pub fn advanced(&mut self, fd: BorrowedFd<'_>) -> bool {
        let now = unacked(fd);
        if took_enough(self.queued, now) {
            self.queued = now;
            return true;
        }
        false
    }
}

/// Whether a socket that held `before` bytes and holds `now` has seen its
/// client take enough to count as progress: [`MIN_PROGRESS`], or all.
pub fn took_enough(before: usize, now: usize) -> bool {
    let taken = before.saturating_sub(now);
    taken >= MIN_PROGRESS || (taken > 0 && now == 0)
}

/// Waits until `fd` takes more, for `timeout` since the last progress
/// (`deadline`): a write it accepted, or what the client took meanwhile
/// (see [`Progress`]). `progress` is sampled on the first wait since the
/// last write.
fn wait_to_write(
    fd: BorrowedFd<'_>,
    deadline: &mut Instant,
    progress: &mut Option<Progress>,
    timeout: Duration,
) -> io::Result<()> {
    let p = progress.get_or_insert_with(|| Progress::sample(fd));
    loop {
        match wait_ready(fd, PollFlags::POLLOUT, *deadline) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut && p.advanced(fd) => {
                *deadline = Instant::now() + timeout;
            }
            other => return other,
        }
    }
}

/// Reads at least one byte, waiting at most `timeout` for it.
pub fn read_blocking(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, chunk: usize, timeout: Duration) -> io::Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        match read_some(fd, buf, chunk) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_ready(fd, PollFlags::POLLIN, deadline)?,
            other => return other,
        }
    }
}

fn writev(fd: BorrowedFd<'_>, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let n = slices.len().min(IOV_MAX);
    loop {
        match nix::sys::uio::writev(fd.as_fd(), &slices[..n]) {
            Ok(w) => return Ok(w),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn skip_empty(slices: &mut &mut [IoSlice<'_>]) {
    IoSlice::advance_slices(slices, 0);
}

/// Writes every slice, waiting for the socket with a deadline of `timeout`
/// since the last progress.
pub fn write_all(fd: BorrowedFd<'_>, mut slices: &mut [IoSlice<'_>], timeout: Duration) -> io::Result<()> {
    skip_empty(&mut slices);
    let mut deadline = Instant::now() + timeout;
    let mut progress = None;
    while !slices.is_empty() {
        match writev(fd, slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                IoSlice::advance_slices(&mut slices, n);
                deadline = Instant::now() + timeout;
                progress = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_to_write(fd, &mut deadline, &mut progress, timeout)?
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes what the socket takes now without waiting, advancing `slices`
/// past it; `Ok(true)` when everything went. Cheap enough to call with the
/// GIL held: a caller detaches only for what is left (a slow client).
pub fn write_now(fd: BorrowedFd<'_>, slices: &mut &mut [IoSlice<'_>]) -> io::Result<bool> {
    skip_empty(slices);
    while !slices.is_empty() {
        match writev(fd, slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(slices, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes what the socket takes now; returns the unsent rest (copied) so
/// the caller can park it on the connection instead of holding a thread.
pub fn write_or_park(fd: BorrowedFd<'_>, mut slices: &mut [IoSlice<'_>]) -> io::Result<Option<Vec<u8>>> {
    if write_now(fd, &mut slices)? {
        return Ok(None);
    }
    let rest: usize = slices.iter().map(|s| s.len()).sum();
    let mut tail = Vec::with_capacity(rest);
    for s in slices.iter() {
        tail.extend_from_slice(s);
    }
    Ok(Some(tail))
}

/// Sends what the socket takes now from `out[*pos..]`; `Ok(true)` when all is sent.
pub fn flush_parked(fd: BorrowedFd<'_>, out: &[u8], pos: &mut usize) -> io::Result<bool> {
    while *pos < out.len() {
        match writev(fd, &[IoSlice::new(&out[*pos..])]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Sends `len` bytes of `file` from `offset` with sendfile(2), waiting for
/// the socket with a deadline of `timeout` since the last progress.
pub fn sendfile_all(
    sock: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    mut offset: i64,
    mut len: u64,
    timeout: Duration,
) -> io::Result<u64> {
    let mut sent = 0;
    let mut deadline = Instant::now() + timeout;
    let mut progress = None;
    while len > 0 {
        let count = len.min(1 << 30) as usize;
        match nix::sys::sendfile::sendfile(sock, file, Some(&mut offset), count) {
            Ok(0) => break, // the file is shorter than promised
            Ok(n) => {
                len -= n as u64;
                sent += n as u64;
                deadline = Instant::now() + timeout;
                progress = None;
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_to_write(sock, &mut deadline, &mut progress, timeout)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nix::sys::socket::{setsockopt, sockopt};
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    /// A loopback TCP connection whose sending end has a fixed 64 KiB send
    /// buffer (the kernel doubles it) and whose receiving end a small
    /// receive buffer, so that what is written waits in the sender's queue.
    pub(crate) fn small_pair() -> (TcpStream, TcpStream) {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, connect, socket};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = l.local_addr().unwrap() else {
            unreachable!("bound to an IPv4 address")
        };
        // The receive buffer before connecting: the window is agreed then.
        let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
        connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(addr)).unwrap();
        let b = TcpStream::from(fd);
        let (a, _) = l.accept().unwrap();
        setsockopt(&a, sockopt::SndBuf, &65536).unwrap();
        a.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// A client that takes 4 KiB every 50 ms (80 kB/s) until the end.
    fn slow_reader(mut b: TcpStream) -> std::thread::JoinHandle<usize> {
        std::thread::spawn(move || {
            let mut total = 0;
            let mut buf = [0u8; 4096];
            loop {
                std::thread::sleep(Duration::from_millis(50));
                match b.read(&mut buf) {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        })
    }

    /// Regression (found by review): the write timeout counted only writes
    /// the socket accepted, and TCP signals writable only once the free
    /// part of the send buffer is half what it holds, so a client reading
    /// steadily but slowly was cut off mid-response. With the buffer grown
    /// to 4 MB, a 45 kB/s reader frees that in 45 s: downloads were cut at
    /// the 30 s default. Here: 128 KiB of buffer, an 80 kB/s reader, a
    /// 300 ms timeout.
    #[test]
    fn a_slow_but_steady_reader_is_not_timed_out() {
        let (a, b) = small_pair();
        let reader = slow_reader(b);
        let data = vec![7u8; 256 * 1024];
        let started = Instant::now();
        let r = write_all(a.as_fd(), &mut [IoSlice::new(&data)], Duration::from_millis(300));
        assert!(r.is_ok(), "{r:?} after {:?}", started.elapsed());
        drop(a);
        assert_eq!(reader.join().unwrap(), data.len());
    }

    /// One that stops reading is still cut at the timeout.
    #[test]
    fn a_reader_that_stopped_is_timed_out() {
        let (a, b) = small_pair();
        let data = vec![7u8; 256 * 1024];
        let started = Instant::now();
        let r = write_all(a.as_fd(), &mut [IoSlice::new(&data)], Duration::from_millis(300));
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(b);
    }

    #[test]
    fn progress_counts_what_the_peer_took() {
        let (a, mut b) = small_pair();
        let data = vec![7u8; 256 * 1024];
        let mut slices = [IoSlice::new(&data)];
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        assert!(!write_now(a.as_fd(), &mut rest).unwrap(), "the buffer filled up");
        let mut p = Progress::sample(a.as_fd());
        assert!(!p.advanced(a.as_fd()), "nothing taken yet");
        let mut buf = vec![0u8; 4 * MIN_PROGRESS];
        b.read_exact(&mut buf).unwrap();
        // The acknowledgement follows the read: wait for it (bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !p.advanced(a.as_fd()) {
            assert!(Instant::now() < deadline, "the read was never acknowledged");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!p.advanced(a.as_fd()), "counted from the last progress");
    }
}
