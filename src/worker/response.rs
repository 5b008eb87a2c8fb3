//! `start_response`, `write()` and the framing of what the app returns.
//!
//! The head goes out with the first non-empty body chunk (PEP 3333), in the
//! same `writev` as that chunk. A body the app returns whole (a list) is
//! written straight from the Python `bytes` objects after the app returns;
//! the blocks of a streamed body (a generator, `write()`) go to the worker's
//! flusher thread (see `flusher`), except large ones, which the app thread
//! writes itself.

use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::{PyAssertionError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::flusher::Stream;
use super::input::ExpectContinue;
use super::io::{write_all, write_now, write_or_park};
use super::registry::ConnSocket;
use crate::proto::response::{self as wire, Framing, HeadWriter};

/// What the request wants from the response side.
pub struct ResponseSetup {
    /// `None` once [`Response::release`]d.
    pub sock: Option<Arc<ConnSocket>>,
    pub http11: bool,
    pub head_request: bool,
    pub keep_alive: bool,
    pub write_timeout: Duration,
    pub date: [u8; 29],
    /// The access log wants the response's headers after the head is sent.
    pub keep_headers: bool,
    /// The request's `Expect: 100-continue` (with a body), moot once the
    /// head goes out.
    pub expect: Option<ExpectContinue>,
}

pub struct Response {
    setup: ResponseSetup,
    /// `start_response` was called.
    started: bool,
    code: u16,
    /// The head as far as `start_response` makes it: status line, Server,
    /// Date, then the app's headers as `Name: value\r\n` lines (from
    /// `app_headers`). One buffer, which becomes the head on the wire: no
    /// allocation per header, nor a copy into a second buffer.
    head: Vec<u8>,
    app_headers: usize,
    content_length: Option<u64>,
    head_sent: bool,
    framing: Framing,
    /// Body bytes put on the wire (for Content-Length checks and the access log).
    pub body_sent: u64,
    /// The connection cannot carry another request after this one.
    pub must_close: bool,
    /// A write failed: the client is gone, stop producing.
    pub broken: bool,
    /// Its last piece is framed: what `write()` would add (from the
    /// iterable's close(), say) could only go out of order.
    complete: bool,
    /// The app went past its Content-Length (logged once).
    overrun: bool,
    /// The streamed part of the body, while the flusher may be writing it.
    stream: Option<StreamEnd>,
}

/// Streamed blocks at least this large are written by the app thread
/// itself (after what is queued): copying them for the flusher would cost
/// about what the write does.
const DIRECT_WRITE: usize = 64 * 1024;

/// What an app hears when it calls a kept `start_response` or `write` after
/// the request ended.
const OVER: &str = "the request this start_response belongs to is over";

/// A response's [`Stream`], abandoned (the flusher stops writing it) when
/// dropped before it is finished: the response was cut short.
struct StreamEnd(Arc<Stream>);

impl Drop for StreamEnd {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// Bytes ready for the wire: a head and/or body chunks with their framing,
/// borrowed from the Python objects until written.
pub struct Framed {
    head: Vec<u8>,
    chunks: Vec<PyBackedBytes>,
    /// Body bytes of `chunks` that go out (less than all when truncated).
    body_limit: u64,
    /// Chunked framing: one size line per non-empty chunk.
    size_lines: Vec<([u8; 18], usize)>,
    terminator: bool,
    /// The streamed part of the body, whose unsent bytes go first.
    stream: Option<StreamEnd>,
}

impl Framed {
    /// A response the server wrote itself (errors).
    pub fn raw(bytes: Vec<u8>) -> Framed {
        Framed {
            head: bytes,
            chunks: Vec::new(),
            body_limit: 0,
            size_lines: Vec::new(),
            terminator: false,
            stream: None,
        }
    }

    /// Whether a streamed part of the body is still on its way.
    pub fn streams(&self) -> bool {
        self.stream.is_some()
    }

    /// Ends the streamed part of the body, if any: waits for a write under
    /// way (one non-blocking call) and puts what is unsent first. Call it
    /// before [`Framed::slices`]; an error means the client is gone.
    pub fn settle(&mut self) -> io::Result<()> {
        let Some(end) = self.stream.take() else {
            return Ok(());
        };
        let mut unsent = end.0.finish()?;
        if !unsent.is_empty() {
            unsent.extend_from_slice(&self.head);
            self.head = unsent;
        }
        Ok(())
    }

    /// Writes what `fd` takes now, after [`Framed::settle`] (never
    /// waiting); returns the unsent rest, copied, for the caller to park.
    pub fn write_or_park(&mut self, fd: BorrowedFd<'_>) -> io::Result<Option<Vec<u8>>> {
        self.settle()?;
        self.with_slices(|slices| write_or_park(fd, slices))
    }

    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut out = Vec::with_capacity(self.most_slices());
        self.each_slice(|s| out.push(s));
        out
    }

    /// Calls `f` with the slices to write, gathered on the stack when they
    /// are few (a head and a chunk or two, the usual case): a `Vec` per
    /// response cost an allocation and a free.
    pub fn with_slices<R>(&self, f: impl FnOnce(&mut [IoSlice<'_>]) -> R) -> R {
        const ON_STACK: usize = 8;
        if self.most_slices() > ON_STACK {
            return f(&mut self.slices());
        }
        let mut out = [IoSlice::new(&[]); ON_STACK];
        let mut n = 0;
        self.each_slice(|s| {
            out[n] = s;
            n += 1;
        });
        f(&mut out[..n])
    }

    /// At least as many as [`Framed::each_slice`] gives.
    fn most_slices(&self) -> usize {
        2 + self.chunks.len() * if self.size_lines.is_empty() { 1 } else { 3 }
    }

    fn each_slice<'a>(&'a self, mut out: impl FnMut(IoSlice<'a>)) {
        if !self.head.is_empty() {
            out(IoSlice::new(&self.head));
        }
        if !self.size_lines.is_empty() || self.terminator {
            for (c, (line, len)) in self.chunks.iter().filter(|c| !c.is_empty()).zip(&self.size_lines) {
                out(IoSlice::new(&line[..*len]));
                out(IoSlice::new(c));
                out(IoSlice::new(b"\r\n"));
            }
            if self.terminator {
                out(IoSlice::new(b"0\r\n\r\n"));
            }
        } else {
            let mut left = self.body_limit;
            for c in &self.chunks {
                if left == 0 {
                    break;
                }
                let take = (c.len() as u64).min(left) as usize;
                out(IoSlice::new(&c[..take]));
                left -= take as u64;
            }
        }
    }
}

/// A response's last piece, framed while the app still runs Python: the
/// iterable's `next()` after the body reached its Content-Length (a
/// framework's iterator around a generator runs the code after its last
/// yield there), and the iterable's `close()` (Django sends
/// `request_finished` from it). The piece is written once the GIL is
/// released, after all that, so that the head and a whole body go out in
/// one write with the other quick responses of a batch. If that Python
/// takes long, another thread writes the piece meanwhile (see
/// `Activity::release_stuck_stashes`; with a single app thread, the
/// timer's regular look): PEP 3333 forbids a server to delay a block
/// while the app is busy with something else.
///
/// One per app thread, filled and emptied by it within one request.
#[derive(Default)]
pub struct Parked {
    slot: Mutex<Option<Piece>>,
    /// A piece waits in `slot` that no other thread wrote yet, read
    /// without the lock.
    waiting: AtomicBool,
}

struct Piece {
    sock: Arc<ConnSocket>,
    /// What is still to be written: the piece, or the rest of it another
    /// thread could not write at once (copied), or nothing.
    framed: Framed,
    /// Another thread's write of it failed: the client is gone.
    failed: bool,
}

/// Where an app thread parks its response's last piece ([`Parked`]), and
/// what makes sure another thread looks while it is there.
pub struct ParkSpot<'a> {
    pub parked: &'a Parked,
    /// The request's connection.
    pub sock: &'a Arc<ConnSocket>,
    pub ensure_look: &'a dyn Fn(),
    /// This request parked something: most (a list body) never do, and
    /// skip the slot's lock.
    pub used: std::cell::Cell<bool>,
}

impl ParkSpot<'_> {
    pub fn park(&self, framed: Framed) {
        self.used.set(true);
        self.parked.park(self.sock.clone(), framed);
        (self.ensure_look)();
    }

    /// [`Parked::take`], for the request that parked.
    pub fn take(&self) -> Option<Result<Framed, io::ErrorKind>> {
        if !self.used.replace(false) {
            return None;
        }
        self.parked.take()
    }
}

impl Parked {
    fn lock(&self) -> MutexGuard<'_, Option<Piece>> {
        // A piece is whole between statements: a poisoned lock holds
        // nothing broken.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leaves `framed` here for the owner to take back, or for another
    /// thread to write if the owner is held up first. The caller then
    /// makes sure a thread looks (see `Activity::cover_parked`).
    fn park(&self, sock: Arc<ConnSocket>, framed: Framed) {
        *self.lock() = Some(Piece {
            sock,
            framed,
            failed: false,
        });
        self.waiting.store(true, Ordering::Relaxed);
    }

    /// Whether a piece waits that no other thread has written.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The owner takes its piece back: what is left to write (all of it,
    /// the part another thread could not write at once, or nothing), or
    /// `Err` if another thread's write failed.
    pub fn take(&self) -> Option<Result<Framed, io::ErrorKind>> {
        let piece = self.lock().take();
        self.waiting.store(false, Ordering::Relaxed);
        let piece = piece?;
        Some(if piece.failed {
            Err(io::ErrorKind::BrokenPipe)
        } else {
            Ok(piece.framed)
        })
    }

    /// Another thread, the owner being stuck in the app: writes what the
    /// socket takes now (never waiting) and leaves the rest, copied, for
    /// the owner. Returns the piece as made, which holds the app's bytes
    /// objects, for the owner to drop with the GIL held.
    pub fn write_for_owner(&self) -> Option<Framed> {
        if !self.waiting() {
            return None;
        }
        let mut slot = self.lock();
        let piece = slot.as_mut()?;
        if !self.waiting.swap(false, Ordering::Relaxed) {
            return None;
        }
        let rest = match piece.framed.write_or_park(piece.sock.fd_borrow()) {
            Ok(rest) => Framed::raw(rest.unwrap_or_default()),
            Err(_) => {
                piece.failed = true;
                Framed::raw(Vec::new())
            }
        };
        Some(std::mem::replace(&mut piece.framed, rest))
    }
}

impl Response {
    pub fn new(setup: ResponseSetup) -> Self {
        let must_close = !setup.keep_alive;
        Response {
            setup,
            started: false,
            code: 0,
            head: Vec::new(),
            app_headers: 0,
            content_length: None,
            head_sent: false,
            framing: Framing::Close,
            body_sent: 0,
            must_close,
            broken: false,
            complete: false,
            overrun: false,
            stream: None,
        }
    }

    /// The app's headers among `names` (lower-case), for the access log.
    pub fn headers_named(&self, names: &[String]) -> Vec<(String, String)> {
        let lines: Vec<(&[u8], &[u8])> = self.head[self.app_headers.min(self.head.len())..]
            .split(|&c| c == b'\n')
            .filter_map(|line| {
                let line = line.strip_suffix(b"\r")?;
                let colon = line.iter().position(|&c| c == b':')?;
                Some((&line[..colon], line[colon + 1..].trim_ascii_start()))
            })
            .collect();
        names
            .iter()
            .filter_map(|n| {
                let (_, v) = lines.iter().find(|(h, _)| h.eq_ignore_ascii_case(n.as_bytes()))?;
                Some((n.clone(), String::from_utf8_lossy(v).into_owned()))
            })
            .collect()
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn head_sent(&self) -> bool {
        self.head_sent
    }

    pub fn started(&self) -> bool {
        self.started
    }

    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// The connection, until the request is over: an app that kept
    /// `start_response` or `write` and calls it later gets an error.
    pub fn sock(&self) -> io::Result<&Arc<ConnSocket>> {
        self.setup
            .sock
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, OVER))
    }

    /// Whether the request is over ([`Response::release`]).
    pub fn released(&self) -> bool {
        self.setup.sock.is_none()
    }

    /// Lets go of the connection and of everything this request held, at
    /// the end of every request: the connection must not stay open because
    /// the app kept `start_response` (nor another request's bytes go out
    /// through it), and an object nothing else holds waits for the next
    /// request.
    pub fn release(&mut self) {
        self.setup.sock = None;
        self.setup.expect = None;
        self.stream = None;
        self.head = Vec::new();
    }

    pub fn write_timeout(&self) -> Duration {
        self.setup.write_timeout
    }

    pub fn head_request(&self) -> bool {
        self.setup.head_request
    }

    /// No body goes out: HEAD, 1xx, 204, 304, and 205 (RFC 9110 15.3.6:
    /// no content in a 205, whatever the app gives).
    pub fn no_body(&self) -> bool {
        self.setup.head_request || self.code < 200 || matches!(self.code, 204 | 205 | 304)
    }

    /// Validates and records what the app passed to `start_response`.
    fn start(&mut self, status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let status = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("status must be a str, like '200 OK'"))?;
        // A native string (PEP 3333): latin-1 on the wire, like header values.
        let status = latin1_bytes(status, "status")?;
        let code = wire::parse_status(&status).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut lines = Vec::with_capacity(256);
        let mut app_headers = self.head_start(&mut lines, &status);
        let mut content_length = None;
        let mut own = OwnHeaders::default();
        match headers.cast::<PyList>() {
            // A list, as PEP 3333 asks: read in place, without an iterator.
            Ok(list) => {
                for item in list.iter() {
                    self.add_header(&item, &mut lines, &mut content_length, &mut own)?;
                }
            }
            Err(_) => {
                for item in headers.try_iter()? {
                    self.add_header(&item?, &mut lines, &mut content_length, &mut own)?;
                }
            }
        }
        // The app's Server or Date replaces the server's (PEP 3333: the
        // server adds them only if the app did not; Date at most once,
        // RFC 9110 6.6.1). Werkzeug's send_file sets Date, for one.
        for (given, ours) in [(own.date, &b"Date: "[..]), (own.server, &b"Server: "[..])] {
            if given {
                app_headers -= find_line(&lines[..app_headers], ours).map_or(0, |r| {
                    let n = r.len();
                    lines.drain(r);
                    n
                });
            }
        }
        self.started = true;
        self.code = code;
        self.head = lines;
        self.app_headers = app_headers;
        self.content_length = content_length;
        Ok(())
    }

    /// Checks one `(name, value)` of the app's headers and writes it to
    /// `lines`, except those the server writes itself.
    fn add_header(
        &mut self,
        item: &Bound<'_, PyAny>,
        lines: &mut Vec<u8>,
        content_length: &mut Option<u64>,
        own: &mut OwnHeaders,
    ) -> PyResult<()> {
        let pair = item
            .cast::<PyTuple>()
            .map_err(|_| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err("each header must be a (name, value) tuple"));
        }
        let name = pair.get_item(0)?;
        let value = pair.get_item(1)?;
        let (Ok(name), Ok(value)) = (name.cast::<PyString>(), value.cast::<PyString>()) else {
            return Err(PyTypeError::new_err(format!(
                "header names and values must be str, got {:?}",
                pair.repr().map(|r| r.to_string()).unwrap_or_default()
            )));
        };
        let name = name.to_str()?;
        let value = latin1_bytes(value, "header value")?;
        wire::validate_header(name, &value).map_err(|e| PyValueError::new_err(e.to_string()))?;
        if name.eq_ignore_ascii_case("content-length") {
            let n = wire::parse_content_length(&value).map_err(|e| PyValueError::new_err(e.to_string()))?;
            if content_length.is_some_and(|c| c != n) {
                return Err(PyValueError::new_err("conflicting Content-Length headers"));
            }
            // Written by `head`, which owns the framing headers.
            *content_length = Some(n);
            return Ok(());
        } else if wire::is_hop_by_hop(name) {
            // The server owns the connection's framing. `Connection: close`
            // is still honoured as the app's wish to end the connection.
            if name.eq_ignore_ascii_case("connection")
                && value
                    .split(|&c| c == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                self.must_close = true;
            }
            log::debug!("dropping hop-by-hop response header {name}");
            return Ok(());
        } else if name.eq_ignore_ascii_case("date") {
            own.date = true;
        } else if name.eq_ignore_ascii_case("server") {
            own.server = true;
        }
        HeadWriter { buf: lines }.header(name.as_bytes(), &value);
        Ok(())
    }

    /// Writes the status line and the server's own headers into `buf`;
    /// returns where the app's headers will start.
    fn head_start(&self, buf: &mut Vec<u8>, status: &[u8]) -> usize {
        let mut w = HeadWriter { buf };
        w.status_line(self.setup.http11, status);
        w.header(b"Server", b"zibai");
        w.header(b"Date", &self.setup.date);
        w.buf.len()
    }

    /// Builds the head; `known_total` is the whole body's length when the
    /// app already produced all of it.
    fn head(&mut self, py: Python<'_>, known_total: Option<u64>) -> Vec<u8> {
        let mut buf = if !self.started {
            let mut buf = Vec::with_capacity(256);
            self.head_start(&mut buf, b"500 Internal Server Error");
            buf
        } else if self.setup.keep_headers {
            self.head.clone()
        } else {
            std::mem::take(&mut self.head)
        };
        let http11 = self.setup.http11;
        let mut w = HeadWriter { buf: &mut buf };
        self.framing = if self.no_body() {
            // Never on a 204 (RFC 9110 8.6; Django's CommonMiddleware sets
            // one on every response). A 304's or a HEAD's says what a GET
            // would have had. A 205 is not bodiless by the framing rules:
            // its length, 0, must be said (RFC 9110 15.3.6).
            if self.code == 205 {
                w.content_length(0);
            } else if let Some(n) = self.content_length.filter(|_| self.code != 204) {
                w.content_length(n);
            } else if let (Some(n), true) = (known_total, self.setup.head_request)
                && n > 0
                && self.code != 204
                && self.code != 304
            {
                // What a GET would have had; a 304's body is empty, so its
                // length says nothing of the 200's. Nor does an empty body
                // from the app (Werkzeug returns none for HEAD): no length.
                w.content_length(n);
            }
            Framing::NoBody
        } else if let Some(n) = self.content_length {
            w.content_length(n);
            Framing::Length(n)
        } else if let Some(n) = known_total {
            w.content_length(n);
            self.content_length = Some(n);
            Framing::Length(n)
        } else if http11 {
            w.header(b"Transfer-Encoding", b"chunked");
            Framing::Chunked
        } else {
            self.must_close = true;
            Framing::Close
        };
        // The head goes out while the client still waits for the 100
        // Continue it never got (whether the response is whole or streams):
        // its body may follow or not, so the connection cannot carry
        // another request, and the head says so. No 100 after this.
        let owed = self.setup.expect.as_ref().is_some_and(|e| e.moot(py));
        if super::STOPPING.load(std::sync::atomic::Ordering::Relaxed) || owed {
            self.must_close = true;
        }
        if self.must_close {
            if http11 {
                w.header(b"Connection", b"close");
            }
        } else if !http11 {
            w.header(b"Connection", b"keep-alive");
        }
        w.end();
        self.head_sent = true;
        buf
    }

    /// Frames body `chunks` for the wire (the head first if it has not gone
    /// out) and accounts for them as sent. With `last`, the body is complete:
    /// lengths are known and the chunked terminator is added. The caller
    /// writes the result, now ([`Response::send`]) or after releasing the GIL
    /// for its next wait (the final piece of a response).
    pub fn frame(&mut self, py: Python<'_>, chunks: Vec<PyBackedBytes>, last: bool) -> Framed {
        self.complete |= last;
        let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let head = if self.head_sent {
            Vec::new()
        } else {
            self.head(py, if last { Some(self.body_sent + total) } else { None })
        };
        let mut framed = Framed {
            head,
            chunks,
            body_limit: 0,
            size_lines: Vec::new(),
            terminator: false,
            stream: if last { self.stream.take() } else { None },
        };
        match self.framing {
            Framing::NoBody => {}
            Framing::Close => {
                framed.body_limit = total;
                self.body_sent += total;
            }
            Framing::Length(limit) => {
                let room = limit.saturating_sub(self.body_sent);
                if total > room {
                    self.overrun(limit);
                }
                framed.body_limit = total.min(room);
                self.body_sent += framed.body_limit;
            }
            Framing::Chunked => {
                framed.size_lines = framed
                    .chunks
                    .iter()
                    .filter(|c| !c.is_empty())
                    .map(|c| wire::chunk_size_line(c.len()))
                    .collect();
                framed.terminator = last;
                self.body_sent += total;
            }
        }
        // (More than n cannot happen: every path above sends at most what
        // the Content-Length leaves, sendfile included.)
        if last
            && let Framing::Length(n) = self.framing
            && self.body_sent < n
        {
            log::error!(
                "the app sent {} bytes but promised a Content-Length of {n}; closing the connection",
                self.body_sent
            );
            self.must_close = true;
        }
        framed
    }

    /// Frames a block of a streamed body (a generator's item, `write()`)
    /// and sends it on its way: queued for the flusher, or, when large,
    /// written now after what is queued. A client slower than the app is
    /// waited for, detached, up to the write timeout.
    pub fn send(&mut self, py: Python<'_>, chunks: Vec<PyBackedBytes>) -> io::Result<()> {
        if self.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let framed = self.frame(py, chunks, false);
        let slices = framed.slices();
        let size: usize = slices.iter().map(|s| s.len()).sum();
        if self.stream.is_none() && size < DIRECT_WRITE {
            self.stream = Stream::new(self.sock()?.clone(), self.setup.write_timeout).map(StreamEnd);
        }
        let result = match &self.stream {
            Some(end) if size < DIRECT_WRITE => match end.0.push(&slices) {
                Ok(false) => Ok(()),
                Ok(true) => {
                    drop(slices);
                    self.drain(py)
                }
                Err(e) => Err(e),
            },
            _ => self.write_through(py, slices),
        };
        if result.is_err() {
            self.broken = true;
            self.must_close = true;
        }
        result
    }

    /// Writes `slices` now, after what the stream still holds.
    fn write_through(&self, py: Python<'_>, body: Vec<IoSlice<'_>>) -> io::Result<()> {
        let queued = match &self.stream {
            Some(end) => end.0.take()?,
            None => Vec::new(),
        };
        let mut slices = Vec::with_capacity(1 + body.len());
        slices.push(IoSlice::new(&queued));
        slices.extend(body.iter().map(|s| IoSlice::new(s)));
        let sock = &**self.sock()?;
        let timeout = self.setup.write_timeout;
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        // What the socket takes at once goes out attached: releasing the GIL
        // for a write that cannot block would hand it to another thread and
        // queue this one behind it. Only a slow client is waited for
        // detached.
        let result = match write_now(sock.fd_borrow(), &mut rest) {
            Ok(true) => Ok(()),
            Ok(false) => py.detach(|| write_all(sock.fd_borrow(), rest, timeout)),
            Err(e) => Err(e),
        };
        if let Some(end) = &self.stream {
            end.0.release(result.as_ref().err().map(|e| e.kind()));
        }
        result
    }

    /// Stops the flusher writing this response (nothing more of it goes out).
    pub fn end_stream(&mut self) {
        self.stream = None;
    }

    /// Writes everything the stream holds now, waiting (detached) for a
    /// slow client: for a body that goes on by other means (sendfile), or
    /// when the app has outpaced the client by [`super::flusher::HIGH_WATER`].
    pub fn drain(&mut self, py: Python<'_>) -> io::Result<()> {
        if self.stream.is_none() {
            return Ok(());
        }
        let result = self.write_through(py, Vec::new());
        if result.is_err() {
            self.broken = true;
            self.must_close = true;
        }
        result
    }

    /// The app went past its Content-Length `limit`: the rest is dropped
    /// (logged once per response). What went out is what the head said,
    /// so the connection stays good for the next request, as gunicorn's.
    pub fn overrun(&mut self, limit: u64) {
        if !self.overrun {
            self.overrun = true;
            log::error!("the app sent more than its Content-Length of {limit}; the rest is dropped");
        }
    }

    /// Whether `len` more body bytes reach the Content-Length the app
    /// declared: the body is then complete.
    pub fn completes_length(&self, len: usize) -> bool {
        self.content_length
            .is_some_and(|cl| self.body_sent.saturating_add(len as u64) >= cl)
    }

    /// After sendfile wrote `n` body bytes by itself.
    pub fn note_sent(&mut self, n: u64) {
        self.body_sent += n;
    }

    /// Sends only the head, for a body that follows by other means (sendfile).
    pub fn send_head(&mut self, py: Python<'_>, known_total: Option<u64>) -> io::Result<()> {
        if self.head_sent {
            return Ok(());
        }
        let head = self.head(py, known_total);
        let sock = &**self.sock()?;
        let timeout = self.setup.write_timeout;
        let r = py.detach(|| write_all(sock.fd_borrow(), &mut [IoSlice::new(&head)], timeout));
        if r.is_err() {
            self.broken = true;
            self.must_close = true;
        }
        r
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }
}

/// Latin-1 bytes of a str (`what` names it in the error); anything outside
/// latin-1 is the app's error.
#[inline]
fn latin1_bytes<'a>(s: &'a Bound<'_, PyString>, what: &str) -> PyResult<std::borrow::Cow<'a, [u8]>> {
    let s = s.to_str()?;
    if s.is_ascii() {
        return Ok(s.as_bytes().into());
    }
    latin1_slow(s, what).map(Into::into)
}

#[cold]
fn latin1_slow(s: &str, what: &str) -> PyResult<Vec<u8>> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| PyValueError::new_err(format!("{what} {s:?} is not latin-1"))))
        .collect()
}

/// Which of the headers the server writes itself the app gave too.
#[derive(Default)]
struct OwnHeaders {
    date: bool,
    server: bool,
}

/// Where the line starting with `prefix` is in `head` (a status line and
/// header lines), CRLF included.
fn find_line(head: &[u8], prefix: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut start = head.iter().position(|&c| c == b'\n')? + 1;
    while start < head.len() {
        let end = head[start..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(head.len(), |i| start + i + 1);
        if head[start..end].starts_with(prefix) {
            return Some(start..end);
        }
        start = end;
    }
    None
}

/// The `start_response` callable handed to the app.
#[pyclass(module = "zibai", name = "StartResponse")]
pub struct StartResponse {
    pub resp: Response,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        slf: &Bound<'_, Self>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        {
            let mut me = slf.try_borrow_mut()?;
            if me.resp.released() {
                return Err(PyRuntimeError::new_err(OVER));
            }
            let exc = exc_info.filter(|e| !e.is_none());
            match exc {
                Some(exc) if me.resp.head_sent => {
                    // PEP 3333: too late to change the response; re-raise.
                    let value = exc.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
                None if me.resp.started() => {
                    return Err(PyAssertionError::new_err(
                        "start_response called a second time without exc_info",
                    ));
                }
                _ => {}
            }
            me.resp.start(status, headers)?;
        }
        Ok(slf.getattr(pyo3::intern!(slf.py(), "write"))?.unbind())
    }

    /// The legacy `write()` callable: sends at once, head first.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        if self.resp.released() {
            return Err(PyRuntimeError::new_err(OVER));
        }
        if !self.resp.started() {
            return Err(PyAssertionError::new_err("write() called before start_response"));
        }
        if bytes.as_bytes().is_empty() {
            return Ok(());
        }
        if self.resp.complete {
            return Err(PyRuntimeError::new_err(
                "write() after the response's body was complete (its Content-Length reached, or from the iterable's close())",
            ));
        }
        self.resp
            .send(py, vec![PyBackedBytes::from(bytes.clone())])
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("client went away: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{Shutdown, TcpStream};
    use std::os::fd::OwnedFd;

    use super::*;

    fn parked_on(sock: TcpStream, bytes: Vec<u8>) -> Parked {
        let parked = Parked::default();
        parked.park(Arc::new(ConnSocket::new(OwnedFd::from(sock))), Framed::raw(bytes));
        parked
    }

    fn bytes_of(framed: &Framed) -> Vec<u8> {
        framed.slices().iter().flat_map(|s| s.iter().copied()).collect()
    }

    /// Another thread writes what the socket takes at once, never waiting,
    /// and leaves the rest, in order, for the owner to write.
    #[test]
    fn a_piece_written_for_its_owner_leaves_it_the_rest() {
        let (a, mut b) = crate::worker::io::tests::small_pair();
        let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let parked = parked_on(a, body.clone());
        assert!(parked.waiting());
        let made = parked.write_for_owner().expect("a piece waits");
        assert_eq!(bytes_of(&made), body, "the piece as made, for the owner to drop");
        assert!(!parked.waiting());
        assert!(parked.write_for_owner().is_none(), "written once");
        let rest = bytes_of(&parked.take().expect("parked").expect("written"));
        assert!(
            !rest.is_empty() && rest.len() < body.len(),
            "{} of {}",
            rest.len(),
            body.len()
        );
        // The socket closed with the piece: the client has the first part.
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        got.extend_from_slice(&rest);
        assert!(got == body, "what went out and what is left are the body");
        assert!(parked.take().is_none(), "taken once");
    }

    /// A failed write tells the owner the client is gone.
    #[test]
    fn a_failed_write_for_the_owner_is_reported() {
        let (a, _b) = crate::worker::io::tests::small_pair();
        a.shutdown(Shutdown::Write).unwrap();
        let parked = parked_on(a, b"HTTP/1.1 200 OK\r\n\r\n".to_vec());
        assert!(parked.write_for_owner().is_some());
        assert!(parked.take().expect("parked").is_err());
    }

    /// The owner that takes its piece first writes it itself.
    #[test]
    fn a_piece_taken_back_is_not_written_by_another_thread() {
        let (a, _b) = crate::worker::io::tests::small_pair();
        let parked = parked_on(a, b"whole".to_vec());
        let piece = parked.take().expect("parked").expect("not written");
        assert_eq!(bytes_of(&piece), b"whole");
        assert!(!parked.waiting());
        assert!(parked.write_for_owner().is_none());
    }
}
