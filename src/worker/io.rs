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
    while !slices.is_empty() {
        match writev(fd, slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                IoSlice::advance_slices(&mut slices, n);
                deadline = Instant::now() + timeout;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_ready(fd, PollFlags::POLLOUT, deadline)?,
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
    while len > 0 {
        let count = len.min(1 << 30) as usize;
        match nix::sys::sendfile::sendfile(sock, file, Some(&mut offset), count) {
            Ok(0) => break, // the file is shorter than promised
            Ok(n) => {
                len -= n as u64;
                sent += n as u64;
                deadline = Instant::now() + timeout;
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_ready(sock, PollFlags::POLLOUT, deadline)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
}
