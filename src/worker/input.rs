//! `wsgi.input`: the request body, streamed from the socket as the app reads
//! it, never buffered whole unless the app asks for all of it.
//!
//! The connection's read buffer moves into the [`BodyReader`] for the
//! request and back out afterwards, with whatever pipelined bytes followed
//! the body.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::{PyIOError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::io::{read_blocking, read_some, write_all};
use super::registry::ConnSocket;
use crate::proto::chunked::ChunkedDecoder;
use crate::proto::request::BodyKind;

const READ_CHUNK: usize = 64 * 1024;

/// `Expect: 100-continue`, shared by the body reader, which answers it when
/// the app first reads the body, and the response, whose head makes it moot:
/// a 100 after the final response's head would land inside its body.
///
/// A lock, not an atomic: the app may read the body on one thread while
/// another starts the response, and the 100 must be on the wire before the
/// head is. The lock is held while the 100 is written, so a head made
/// meanwhile waits for it. The write is 25 bytes and goes through at once
/// unless a pipelined response before this request still fills the
/// socket; then the head waits with it, up to the write timeout, with the
/// GIL released (only an app that reads the body on one thread and answers
/// on another gets there).
#[derive(Clone)]
pub struct ExpectContinue(Arc<Mutex<Continue>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Continue {
    Pending,
    Sent,
    Moot,
}

impl ExpectContinue {
    pub fn new() -> Self {
        ExpectContinue(Arc::new(Mutex::new(Continue::Pending)))
    }

    fn lock(&self) -> MutexGuard<'_, Continue> {
        // A flag behind it: a poisoned lock holds nothing broken.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The app reads the body: sends the 100 with `send` if it is still
    /// owed (once), before any head can go out.
    fn answer(&self, send: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut state = self.lock();
        if *state != Continue::Pending {
            return Ok(());
        }
        *state = Continue::Sent;
        send()
    }

    /// The final response's head goes out: no 100 any more. Returns
    /// whether the 100 was still owed (the client may be holding its body
    /// back). Waits for a 100 being written now, detached: that write
    /// waits for a slow client, and the worker's other threads must not
    /// wait with it.
    pub fn moot(&self, py: Python<'_>) -> bool {
        // (Each wait is detached; the lock is taken attached, so another
        // holder may come in between, and then it is waited for again.)
        let mut state = loop {
            match self.0.try_lock() {
                Ok(state) => break state,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => py.detach(|| drop(self.lock())),
            }
        };
        let owed = *state == Continue::Pending;
        if owed {
            *state = Continue::Moot;
        }
        owed
    }

    /// The whole body came without a 100: none is owed any more. Called
    /// by the reader, the only writer of a 100, so it never waits for one.
    fn arrived(&self) {
        let mut state = self.lock();
        if *state == Continue::Pending {
            *state = Continue::Moot;
        }
    }

    fn sent(&self) -> bool {
        *self.lock() == Continue::Sent
    }
}

enum Framing {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

pub struct BodyReader {
    sock: Arc<ConnSocket>,
    /// Raw bytes from the socket; `pos` is where the unconsumed part starts.
    buf: Vec<u8>,
    pos: usize,
    framing: Framing,
    done: bool,
    /// Decoded bytes of a chunked body not yet handed to the app.
    decoded: Vec<u8>,
    dpos: usize,
    /// `Expect: 100-continue`, while the body is still to come.
    expect: Option<ExpectContinue>,
    /// The body could not be read: the request failed on the client's side.
    failure: Option<BodyError>,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("client disconnected before sending the whole body")]
    Truncated,
    #[error("malformed chunked body: {0}")]
    Chunked(#[from] crate::proto::chunked::ChunkedError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl BodyError {
    /// What the client should be answered, if anything: a bad or oversized
    /// body is the client's error (400/413), a stalled one times out (408),
    /// a vanished one gets nothing.
    pub fn status(&self) -> Option<(u16, &'static str)> {
        match self {
            BodyError::Chunked(e) => Some((e.status(), e.reason())),
            BodyError::Io(e) if e.kind() == io::ErrorKind::TimedOut => Some((408, "Request Timeout")),
            BodyError::Truncated | BodyError::Io(_) => None,
        }
    }
}

impl BodyReader {
    pub fn new(
        sock: Arc<ConnSocket>,
        buf: Vec<u8>,
        kind: BodyKind,
        expect: Option<ExpectContinue>,
        timeout: Duration,
        max_body: u64,
    ) -> Self {
        let (framing, done) = match kind {
            BodyKind::Empty => (Framing::Length(0), true),
            BodyKind::Length(0) => (Framing::Length(0), true),
            BodyKind::Length(n) => (Framing::Length(n), false),
            BodyKind::Chunked => (Framing::Chunked(Box::new(ChunkedDecoder::new(max_body))), false),
        };
        BodyReader {
            sock,
            buf,
            pos: 0,
            framing,
            done,
            decoded: Vec::new(),
            dpos: 0,
            expect: expect.filter(|_| !done),
            failure: None,
            timeout,
        }
    }

    /// The whole body is here (a client that sent it without waiting for
    /// its 100): no 100 is owed any more.
    fn body_complete(&mut self) {
        self.done = true;
        if let Some(e) = &self.expect {
            e.arrived();
        }
    }

    pub fn is_done(&self) -> bool {
        self.done && self.dpos == self.decoded.len()
    }

    /// Gives the connection its buffer back: the bytes after the body.
    pub fn into_buffer(mut self) -> Vec<u8> {
        self.buf.drain(..self.pos);
        self.buf
    }

    /// Before a read: a buffer whose bytes are all consumed starts over.
    fn compact(&mut self) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    fn read_socket(&mut self) -> Result<(), BodyError> {
        if let Some(expect) = &self.expect {
            expect.answer(|| {
                let mut msg = [io::IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n")];
                write_all(self.sock.fd_borrow(), &mut msg, self.timeout)
            })?;
        }
        self.compact();
        match read_blocking(self.sock.fd_borrow(), &mut self.buf, READ_CHUNK, self.timeout) {
            Ok(0) => Err(BodyError::Truncated),
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Hands out up to `max` body bytes that are already here, decoding as
    /// needed; an empty slice means "read the socket" (or the body is done).
    fn available(&mut self, max: usize) -> Result<&[u8], BodyError> {
        if self.done && self.dpos == self.decoded.len() {
            return Ok(&[]);
        }
        match &mut self.framing {
            Framing::Length(remaining) => {
                let n = (self.buf.len() - self.pos)
                    .min(max)
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                let start = self.pos;
                self.pos += n;
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.body_complete();
                }
                Ok(&self.buf[start..start + n])
            }
            Framing::Chunked(dec) => {
                if self.dpos == self.decoded.len() {
                    self.decoded.clear();
                    self.dpos = 0;
                    while !dec.is_done() {
                        let d = dec.decode(&self.buf[self.pos..])?;
                        self.decoded
                            .extend_from_slice(&self.buf[self.pos + d.data.start..self.pos + d.data.end]);
                        self.pos += d.consumed;
                        if d.consumed == 0 {
                            break;
                        }
                    }
                    if dec.is_done() {
                        self.body_complete();
                    }
                }
                let n = (self.decoded.len() - self.dpos).min(max);
                let start = self.dpos;
                self.dpos += n;
                Ok(&self.decoded[start..start + n])
            }
        }
    }

    /// Appends up to `max` bytes of body to `out`, or less as `until`
    /// says; reads the socket as needed. A failure is
    /// remembered: the server, not the app, decides how the request ends.
    pub fn read_into(&mut self, out: &mut Vec<u8>, max: usize, until: Until) -> Result<(), String> {
        if let Some(f) = &self.failure {
            return Err(f.to_string());
        }
        self.read_inner(out, max, until).map_err(|e| {
            let msg = e.to_string();
            self.failure = Some(e);
            msg
        })
    }

    /// Why the body could not be read, if it could not.
    pub fn failure(&self) -> Option<&BodyError> {
        self.failure.as_ref()
    }

    fn read_inner(&mut self, out: &mut Vec<u8>, max: usize, until: Until) -> Result<(), BodyError> {
        while out.len() < max {
            let want = max - out.len();
            let chunk = self.available(want)?;
            if chunk.is_empty() {
                if self.is_done() {
                    return Ok(());
                }
                self.read_socket()?;
                continue;
            }
            if let Until::Byte(stop) = until
                && let Some(i) = chunk.iter().position(|&c| c == stop)
            {
                let rest = chunk.len() - i - 1;
                out.extend_from_slice(&chunk[..=i]);
                self.unread(rest);
                return Ok(());
            }
            out.extend_from_slice(chunk);
            if until == Until::Some {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Puts back the last `n` bytes `available` handed out.
    fn unread(&mut self, n: usize) {
        match &mut self.framing {
            Framing::Length(remaining) => {
                self.pos -= n;
                *remaining += n as u64;
                if n > 0 {
                    self.done = false;
                }
            }
            Framing::Chunked(_) => self.dpos -= n,
        }
    }

    /// Whether what is left of the body can be discarded to keep the
    /// connection: not when reading it failed, nor when the client waits
    /// for a 100 Continue it never got (it may send the body after our
    /// final response, or not: the connection cannot be reused).
    pub fn discardable(&self) -> bool {
        self.failure.is_none() && self.expect.as_ref().is_none_or(|e| e.sent())
    }

    /// Discards what is left of the body without waiting: what is here,
    /// then what the socket has. `Ok(true)` once the body ended (the bytes
    /// after it are the next request's: [`BodyReader::into_buffer`]),
    /// `Ok(false)` when the socket has nothing more for now. The body's
    /// size is bounded as when the app reads it (its Content-Length was
    /// checked, the chunked decoder has the limit).
    pub fn discard_now(&mut self) -> Result<bool, BodyError> {
        loop {
            if !self.available(READ_CHUNK)?.is_empty() {
                continue;
            }
            if self.is_done() {
                return Ok(true);
            }
            self.compact();
            match read_some(self.sock.fd_borrow(), &mut self.buf, READ_CHUNK) {
                Ok(0) => return Err(BodyError::Truncated),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The Python object. After the request it is emptied: an app that kept it
/// reads EOF instead of another request's bytes.
#[pyclass(module = "zibai", name = "Input")]
pub struct Input {
    pub reader: Option<BodyReader>,
}

fn to_pyerr(e: String) -> PyErr {
    PyIOError::new_err(e)
}

/// Where a read of the body may stop short of its size.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Only at the size or the body's end (`read`).
    Full,
    /// After this byte (`readline`).
    Byte(u8),
    /// Once some bytes are in, from what is buffered or one read of the
    /// socket (`read1`).
    Some,
}

fn size_arg(size: Option<isize>) -> usize {
    match size {
        Some(n) if n >= 0 => n as usize,
        _ => usize::MAX,
    }
}

impl Input {
    fn read_with<'py>(&mut self, py: Python<'py>, max: usize, until: Until) -> PyResult<Bound<'py, PyBytes>> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(PyBytes::new(py, b""));
        };
        let mut out = Vec::new();
        if max != usize::MAX {
            out.reserve(max.min(READ_CHUNK));
        }
        py.detach(|| reader.read_into(&mut out, max, until)).map_err(to_pyerr)?;
        Ok(PyBytes::new(py, &out))
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.read_with(py, size_arg(size), Until::Full)
    }

    /// As io's: what is buffered, or what one read brings, without
    /// waiting for more (streaming parsers rely on it).
    #[pyo3(signature = (size=None))]
    fn read1<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.read_with(py, size_arg(size).min(READ_CHUNK), Until::Some)
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.read_with(py, size_arg(size), Until::Byte(b'\n'))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&mut self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        // As io's: a hint of 0 or less is no hint.
        let hint = match hint {
            Some(n) if n > 0 => n as usize,
            _ => usize::MAX,
        };
        let lines = PyList::empty(py);
        let mut total = 0usize;
        loop {
            let line = self.read_with(py, usize::MAX, Until::Byte(b'\n'))?;
            let n = line.as_bytes().len();
            if n == 0 {
                break;
            }
            lines.append(line)?;
            total += n;
            if total >= hint {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.read_with(py, usize::MAX, Until::Byte(b'\n'))?;
        Ok(if line.as_bytes().is_empty() { None } else { Some(line) })
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&self) {}

    fn seek(&self, _offset: isize, _whence: Option<i32>) -> PyResult<()> {
        Err(PyValueError::new_err("wsgi.input is not seekable"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A reader thread in the middle of writing the 100 (holding the lock)
    /// until `release` is sent to.
    fn writing_a_100(expect: &ExpectContinue) -> (std::thread::JoinHandle<io::Result<()>>, mpsc::Sender<()>) {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let reader = {
            let expect = expect.clone();
            std::thread::spawn(move || {
                expect.answer(|| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(())
                })
            })
        };
        started.recv_timeout(Duration::from_secs(5)).unwrap();
        (reader, release)
    }

    /// Regression: the 100 Continue was written after its state changed,
    /// so a response head made by another thread in between went out
    /// first, and the 100 landed inside the response. A head now waits for
    /// a 100 being written.
    #[test]
    fn a_head_waits_for_a_100_being_written() {
        let expect = ExpectContinue::new();
        let (reader, release) = writing_a_100(&expect);
        let (mooted_tx, mooted) = mpsc::channel();
        let head = {
            let expect = expect.clone();
            std::thread::spawn(move || {
                Python::initialize();
                let owed = Python::attach(|py| expect.moot(py));
                mooted_tx.send(owed).unwrap();
            })
        };
        assert_eq!(
            mooted.recv_timeout(Duration::from_millis(200)),
            Err(mpsc::RecvTimeoutError::Timeout),
            "the head went ahead of the 100 being written"
        );
        release.send(()).unwrap();
        assert!(
            !mooted.recv_timeout(Duration::from_secs(5)).unwrap(),
            "the 100 went out"
        );
        reader.join().unwrap().unwrap();
        head.join().unwrap();
        assert!(expect.sent());
    }

    /// Regression: a head made while another thread wrote the 100 waited
    /// for that write holding the GIL, and a slow client's write lasts up
    /// to the write timeout: every other thread of the worker waited too.
    #[test]
    fn a_head_waits_for_the_100_without_the_gil() {
        Python::initialize();
        let expect = ExpectContinue::new();
        let (reader, release) = writing_a_100(&expect);
        let (waiting_tx, waiting) = mpsc::channel();
        let head = {
            let expect = expect.clone();
            std::thread::spawn(move || {
                Python::attach(|py| {
                    // Attached from here until moot lets the GIL go.
                    waiting_tx.send(()).unwrap();
                    expect.moot(py)
                })
            })
        };
        waiting.recv_timeout(Duration::from_secs(5)).unwrap();
        let (attached_tx, attached) = mpsc::channel();
        let other = std::thread::spawn(move || Python::attach(|_| attached_tx.send(()).unwrap()));
        let got_the_gil = attached.recv_timeout(Duration::from_secs(5));
        release.send(()).unwrap();
        got_the_gil.expect("another thread got the GIL while the head waited");
        reader.join().unwrap().unwrap();
        assert!(!head.join().unwrap());
        other.join().unwrap();
    }

    #[test]
    fn a_100_is_sent_once_and_never_after_the_head() {
        let expect = ExpectContinue::new();
        let sent = std::cell::Cell::new(0);
        let send = || {
            sent.set(sent.get() + 1);
            Ok(())
        };
        expect.answer(send).unwrap();
        expect.answer(send).unwrap();
        assert_eq!(sent.get(), 1);
        let expect = ExpectContinue::new();
        Python::initialize();
        assert!(Python::attach(|py| expect.moot(py)), "owed");
        assert!(!Python::attach(|py| expect.moot(py)), "moot already");
        expect.answer(send).unwrap();
        assert_eq!(sent.get(), 1, "a 100 after the head");
    }
}
