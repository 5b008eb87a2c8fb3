//! The harness: runs the real `zibai` binary and talks raw HTTP/1.1 to it.
//!
//! A server is started in its own process group, on a socket the test bound
//! itself (`127.0.0.1:0`, handed over as `fd://N`), with `tests/apps` as its
//! current directory and a private temporary directory (`$ZIBAI_TEST_TMP`)
//! the apps write their markers into. Readiness is the `Serving with` log
//! line. Dropping the server kills the whole group; when the test is failing
//! the command line, the exit status and everything the server printed are
//! shown.
//!
//! Every wait has a deadline: sockets get read and write timeouts, and the
//! waits for log lines, exits and closed connections are bounded loops.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_zibai");

/// How long a server may take to print `Serving with`.
const STARTUP: Duration = Duration::from_secs(20);
/// Socket read and write timeouts of the test clients.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("apps")
}

/// A unique, empty directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("zibai-it-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process-wide unique number, for abstract socket names and ids.
pub fn unique() -> usize {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// Where a client connects.
#[derive(Clone, Debug)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Abstract(Vec<u8>),
}

/// Output of a child, filled by a reader thread.
#[derive(Default)]
struct Captured {
    data: Mutex<(Vec<u8>, bool)>,
    changed: Condvar,
}

impl Captured {
    fn spawn_reader(mut r: impl Read + Send + 'static) -> Arc<Captured> {
        let c = Arc::new(Captured::default());
        let c2 = c.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = r.read(&mut buf).unwrap_or(0);
                let mut d = c2.data.lock().unwrap();
                if n == 0 {
                    d.1 = true;
                    c2.changed.notify_all();
                    return;
                }
                d.0.extend_from_slice(&buf[..n]);
                c2.changed.notify_all();
            }
        });
        c
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data.lock().unwrap().0).into_owned()
    }

    /// Waits until `pred(text)` holds; false at the deadline or at EOF
    /// without it.
    fn wait(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut d = self.data.lock().unwrap();
        loop {
            if pred(&String::from_utf8_lossy(&d.0)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if d.1 || left.is_zero() {
                return false;
            }
            d = self.changed.wait_timeout(d, left).unwrap().0;
        }
    }

    fn wait_eof(&self, timeout: Duration) {
        self.wait(timeout, |_| false);
    }
}

enum Listen {
    /// A pre-bound `127.0.0.1:0` handed over as `fd://N`, with extra values
    /// after it in the same `-l`.
    Fd { extra: Vec<String> },
    /// The test gives its own `-l` options; clients connect to `target` if
    /// known, else to the first `Listening on` address in the log.
    Args(Option<Target>),
}

pub struct Builder {
    app: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    env_clear: bool,
    listen: Listen,
    tmp: TempDir,
}

impl Builder {
    pub fn args<S: Into<String>>(mut self, a: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.envs.push((k.to_string(), v.into()));
        self
    }

    /// Starts the server with no inherited environment at all.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Values that follow `fd://N` in the same `-l`.
    pub fn extra_listen(mut self, values: &[&str]) -> Self {
        self.listen = Listen::Fd {
            extra: values.iter().map(|s| s.to_string()).collect(),
        };
        self
    }

    /// Listen where `args` (`-l ...`) say; connect to `target`, or to what the
    /// log says when `None`.
    pub fn listen_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>, target: Option<Target>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self.listen = Listen::Args(target);
        self
    }

    fn command(&self, listener: Option<&TcpListener>) -> (Command, String) {
        let mut cmd = Command::new(BIN);
        if self.env_clear {
            cmd.env_clear();
        }
        cmd.arg(&self.app);
        let mut shown = vec![BIN.to_string(), self.app.clone()];
        if let Listen::Fd { extra } = &self.listen {
            let fd = listener.expect("an fd listener").as_raw_fd();
            let mut l = vec!["-l".to_string(), format!("fd://{fd}")];
            l.extend(extra.iter().cloned());
            cmd.args(&l);
            shown.extend(l);
            // SAFETY: the closure runs in the forked child before exec and
            // only calls fcntl, which is async-signal-safe; clearing
            // close-on-exec there affects the child's copy of the fd alone.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.args(&self.args);
        shown.extend(self.args.iter().cloned());
        cmd.current_dir(apps_dir())
            .env_remove("SCRIPT_NAME")
            .env_remove("VIRTUAL_ENV")
            .env_remove("ZIBAI_LOG")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env("ZIBAI_TEST_TMP", self.tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (k, v) in &self.envs {
            cmd.env(k, v);
            shown.insert(0, format!("{k}={v}"));
        }
        (cmd, shown.join(" "))
    }

    fn spawn(self) -> Server {
        let listener = match self.listen {
            Listen::Fd { .. } => Some(TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")),
            Listen::Args(_) => None,
        };
        let (mut cmd, cmdline) = self.command(listener.as_ref());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}"));
        let stderr = Captured::spawn_reader(child.stderr.take().unwrap());
        let stdout = Captured::spawn_reader(child.stdout.take().unwrap());
        let target = match (&listener, &self.listen) {
            (Some(l), _) => Some(Target::Tcp(l.local_addr().unwrap())),
            (None, Listen::Args(t)) => t.clone(),
            (None, _) => None,
        };
        // The server has its own copy; ours would keep the socket alive (and
        // connections queueing on it) after the server is gone.
        drop(listener);
        Server {
            pid: child.id() as i32,
            child,
            cmdline,
            stderr,
            stdout,
            target,
            status: None,
            tmp: self.tmp,
        }
    }

    /// Starts the server and waits until it is serving.
    /// Starts the server without waiting for it to serve (for servers
    /// that are not expected to: stuck or crashing apps).
    pub fn start_without_waiting(self) -> Server {
        self.spawn()
    }

    pub fn start(self) -> Server {
        self.try_start()
            .unwrap_or_else(|e| panic!("the server exited instead of serving: {e}"))
    }

    /// Like [`start`](Self::start), but a server that exits before serving
    /// is an `Err` with its exit status and stderr.
    pub fn try_start(self) -> Result<Server, String> {
        let mut s = self.spawn();
        let ready = s.stderr.wait(STARTUP, |t| t.contains("Serving with"));
        if !ready {
            match s.wait_exit_opt(Duration::from_secs(2)) {
                Some(st) => {
                    s.stderr.wait_eof(Duration::from_secs(2));
                    return Err(format!("{}; stderr:\n{}", describe_status(&st), s.stderr()));
                }
                None => panic!("the server did not start within {STARTUP:?}"),
            }
        }
        if s.target.is_none() {
            let log = s.stderr();
            let addr = log
                .lines()
                .find_map(|l| l.split("Listening on http://").nth(1))
                .unwrap_or_else(|| panic!("no `Listening on http://` line in:\n{log}"));
            s.target = Some(Target::Tcp(addr.trim().parse().expect("a socket address")));
        }
        Ok(s)
    }

    /// Runs a server that is expected to exit by itself (bad options, an
    /// app that cannot load) and returns how it ended.
    pub fn run_to_exit(self, timeout: Duration) -> Finished {
        let mut s = self.spawn();
        let started = Instant::now();
        let status = s.wait_exit(timeout);
        s.stderr.wait_eof(Duration::from_secs(2));
        s.stdout.wait_eof(Duration::from_secs(2));
        Finished {
            status,
            elapsed: started.elapsed(),
            stderr: s.stderr(),
            stdout: s.stdout.text(),
        }
    }
}

/// How a server that exited by itself ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stderr: String,
    pub stdout: String,
}

/// Asserts that a server run to its exit failed, with `code` if given,
/// and that its stderr names every needle.
pub fn assert_failed(f: &Finished, code: Option<i32>, needles: &[&str]) {
    assert!(
        !f.status.success(),
        "expected a failure, got {}; stderr:\n{}\nstdout:\n{}",
        describe_status(&f.status),
        f.stderr,
        f.stdout
    );
    if let Some(code) = code {
        assert_eq!(
            f.status.code(),
            Some(code),
            "{}; stderr:\n{}",
            describe_status(&f.status),
            f.stderr
        );
    }
    for n in needles {
        assert!(f.stderr.contains(n), "{n:?} not in stderr:\n{}", f.stderr);
    }
    assert!(!f.stderr.contains("panicked"), "the server panicked:\n{}", f.stderr);
}

pub struct Server {
    child: Child,
    pid: i32,
    cmdline: String,
    stderr: Arc<Captured>,
    stdout: Arc<Captured>,
    target: Option<Target>,
    status: Option<ExitStatus>,
    tmp: TempDir,
}

impl Server {
    /// A server for `app` on a pre-bound 127.0.0.1 socket, with `args`.
    pub fn start(app: &str, args: &[&str]) -> Server {
        Server::builder(app).args(args.iter().copied()).start()
    }

    pub fn builder(app: &str) -> Builder {
        Builder {
            app: app.to_string(),
            args: Vec::new(),
            envs: Vec::new(),
            env_clear: false,
            listen: Listen::Fd { extra: Vec::new() },
            tmp: TempDir::new("srv"),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn target(&self) -> &Target {
        self.target.as_ref().expect("the server's address")
    }

    /// The TCP address; panics for unix listeners.
    pub fn addr(&self) -> SocketAddr {
        match self.target() {
            Target::Tcp(a) => *a,
            t => panic!("not a TCP server: {t:?}"),
        }
    }

    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits until stderr contains `needle`; false at the deadline.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.stderr.wait(timeout, |t| t.contains(needle))
    }

    /// How many times `needle` occurs in stderr so far.
    pub fn log_count(&self, needle: &str) -> usize {
        self.stderr().matches(needle).count()
    }

    /// Waits until `needle` occurs in stderr more than `before` times.
    pub fn expect_log_count_above(&self, needle: &str, before: usize, timeout: Duration) {
        assert!(
            self.stderr.wait(timeout, |t| t.matches(needle).count() > before),
            "no new {needle:?} in the server's stderr within {timeout:?}"
        );
    }

    /// Like [`wait_for_log`](Self::wait_for_log), but panics with a clear
    /// message when the line does not come.
    pub fn expect_log(&self, needle: &str, timeout: Duration) {
        assert!(
            self.wait_for_log(needle, timeout),
            "{needle:?} not in the server's stderr within {timeout:?}"
        );
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with our own child's pid; the child is not reaped
        // before `status` is set, so the pid cannot have been reused.
        let r = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(r, 0, "kill({}, {sig}): {}", self.pid, io::Error::last_os_error());
    }

    fn wait_exit_opt(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("waitpid") {
                self.status = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the server to exit; panics at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.wait_exit_opt(timeout)
            .unwrap_or_else(|| panic!("the server did not exit within {timeout:?}"))
    }

    /// A new connection with read and write timeouts.
    pub fn connect(&self) -> Client {
        Client::connect(self.target())
    }

    /// One request on a new connection; the response is read completely.
    pub fn request(&self, raw: &[u8]) -> Response {
        self.connect().request(raw)
    }

    /// `GET path` on a new connection, closed after.
    pub fn get(&self, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())
    }

    /// Polls `GET path` until its body equals `want`; false at the deadline.
    pub fn poll_until(&self, path: &str, want: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.get(path).text() == want {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.status.is_none() {
            // SAFETY: kill(2) on the process group we created for the child;
            // the child is not reaped yet, so the group id cannot have been
            // reused. (Once it is reaped we never signal the group again.)
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            self.status = self.child.wait().ok();
        }
        if std::thread::panicking() {
            self.stderr.wait_eof(Duration::from_secs(2));
            self.stdout.wait_eof(Duration::from_secs(1));
            eprintln!(
                "\n--- zibai command: {}\n--- exit status: {:?}\n--- stderr:\n{}\n--- stdout:\n{}\n--- end of server output",
                self.cmdline,
                self.status,
                self.stderr.text(),
                self.stdout.text()
            );
        }
    }
}

pub fn describe_status(s: &ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => format!("{s:?}"),
    }
}

// ---------------------------------------------------------------------------
// The client.

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream {
    fn set_read_timeout(&self, t: Duration) {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(t)).unwrap(),
            Stream::Unix(s) => s.set_read_timeout(Some(t)).unwrap(),
        }
    }

    fn set_write_timeout(&self, t: Duration) {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(Some(t)).unwrap(),
            Stream::Unix(s) => s.set_write_timeout(Some(t)).unwrap(),
        }
    }
}

/// A parsed response.
#[derive(Clone, Debug)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended as its framing said (false: the connection closed early).
    pub complete: bool,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }

    /// `key=value` lines (see echo_app.py) as a lookup table.
    pub fn kv(&self) -> Kv {
        Kv::parse(&self.text())
    }
}

/// The `key=value` lines the test apps answer with.
#[derive(Debug)]
pub struct Kv(pub Vec<(String, String)>);

impl Kv {
    pub fn parse(s: &str) -> Kv {
        Kv(s.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    /// The value of `k`; panics naming the key and showing everything.
    pub fn at(&self, k: &str) -> &str {
        self.get(k).unwrap_or_else(|| panic!("no {k:?} in {:#?}", self.0))
    }

    pub fn all(&self, k: &str) -> Vec<&str> {
        self.0.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect()
    }
}

/// How reading a connection to its end went.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The server closed (FIN) after sending these bytes.
    Eof(Vec<u8>),
    /// The server reset the connection after sending these bytes.
    Reset(Vec<u8>),
    /// Still open at the deadline, after these bytes.
    Open(Vec<u8>),
}

impl Ending {
    pub fn closed(&self) -> bool {
        !matches!(self, Ending::Open(_))
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Ending::Eof(b) | Ending::Reset(b) | Ending::Open(b) => b,
        }
    }

    /// How it ended, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Ending::Eof(_) => "FIN",
            Ending::Reset(_) => "reset",
            Ending::Open(_) => "still open",
        }
    }
}

pub struct Client {
    stream: Stream,
    /// The read timeout to restore after a bounded wait changed it.
    read_timeout: Duration,
    /// Received and not yet parsed.
    buf: Vec<u8>,
    eof: bool,
    /// Bytes received on this connection so far.
    received: u64,
}

fn io_err(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Client {
    pub fn connect(target: &Target) -> Client {
        let stream = match target {
            Target::Tcp(a) => {
                Stream::Tcp(TcpStream::connect_timeout(a, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {a}: {e}")))
            }
            Target::Unix(p) => {
                Stream::Unix(UnixStream::connect(p).unwrap_or_else(|e| panic!("connect {}: {e}", p.display())))
            }
            Target::Abstract(name) => {
                let a = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
                Stream::Unix(UnixStream::connect_addr(&a).unwrap_or_else(|e| panic!("connect to @{name:?}: {e}")))
            }
        };
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: Stream) -> Client {
        stream.set_read_timeout(IO_TIMEOUT);
        stream.set_write_timeout(IO_TIMEOUT);
        Client {
            stream,
            read_timeout: IO_TIMEOUT,
            buf: Vec::new(),
            eof: false,
            received: 0,
        }
    }

    /// Like [`connect`](Self::connect) to a TCP address, but a failure is an
    /// `Err` instead of a panic.
    pub fn try_connect_tcp(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        let mut c = Client::from_stream(Stream::Tcp(s));
        c.set_read_timeout(timeout);
        c.stream.set_write_timeout(timeout);
        Ok(c)
    }

    /// How many bytes the server sent on this connection so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Tcp(s) => s,
            Stream::Unix(_) => panic!("not a TCP connection"),
        }
    }

    pub fn set_read_timeout(&mut self, t: Duration) {
        self.read_timeout = t;
        self.stream.set_read_timeout(t);
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("sending {} bytes: {e}", bytes.len()));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads more into the buffer; false at EOF.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let mut tmp = [0u8; 65536];
        let n = self.stream.read(&mut tmp)?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.buf.extend_from_slice(&tmp[..n]);
        self.received += n as u64;
        Ok(true)
    }

    /// Reads until `buf` holds a CRLF-terminated line; returns it without
    /// the CRLF.
    fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if !self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-line",
                ));
            }
        }
    }

    fn header_block(&mut self) -> io::Result<Vec<(String, String)>> {
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                return Ok(headers);
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| io_err(format!("bad header line {line:?}")))?;
            headers.push((n.to_string(), v.trim().to_string()));
        }
    }

    /// Reads `n` body bytes; false if the connection closed first (what
    /// arrived is in `out`).
    fn exact(&mut self, n: usize, out: &mut Vec<u8>) -> io::Result<bool> {
        while self.buf.len() < n {
            if !self.fill()? {
                out.append(&mut self.buf);
                return Ok(false);
            }
        }
        out.extend(self.buf.drain(..n));
        Ok(true)
    }

    /// Reads one response, 1xx included. `head` is whether it answers a
    /// HEAD request (no body whatever the headers say).
    pub fn read_response(&mut self, head: bool) -> io::Result<Response> {
        let status_line = self.line()?;
        let status_line = String::from_utf8_lossy(&status_line).into_owned();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io_err(format!("bad status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or("").to_string();
        if !version.starts_with("HTTP/1.") {
            return Err(io_err(format!("bad status line {status_line:?}")));
        }
        let headers = self.header_block()?;
        let mut r = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            complete: true,
            trailers: Vec::new(),
        };
        if head || status < 200 || status == 204 || status == 304 {
            return Ok(r);
        }
        if r.is_chunked() {
            let mut body = Vec::new();
            loop {
                let line = match self.line() {
                    Ok(l) => l,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        r.complete = false;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let line = String::from_utf8_lossy(&line).into_owned();
                let size = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16).map_err(|_| {
                    let shown: String = line.chars().take(80).collect();
                    io_err(format!("bad chunk size line of {} bytes: {shown:?}...", line.len()))
                })?;
                if size == 0 {
                    match self.header_block() {
                        Ok(t) => r.trailers = t,
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => r.complete = false,
                        Err(e) => return Err(e),
                    }
                    break;
                }
                if !self.exact(size, &mut body)? {
                    r.complete = false;
                    break;
                }
                let mut crlf = Vec::new();
                if !self.exact(2, &mut crlf)? {
                    r.complete = false;
                    break;
                }
                if crlf != b"\r\n" {
                    return Err(io_err("chunk not followed by CRLF"));
                }
            }
            r.body = body;
        } else if let Some(cl) = r.header("content-length") {
            let n: usize = cl.parse().map_err(|_| io_err(format!("bad Content-Length {cl:?}")))?;
            let mut body = Vec::with_capacity(n);
            r.complete = self.exact(n, &mut body)?;
            r.body = body;
        } else {
            // Close-delimited.
            while self.fill()? {}
            r.body = std::mem::take(&mut self.buf);
        }
        Ok(r)
    }

    /// The next final response (1xx skipped); panics if there is none or if
    /// its body is incomplete.
    pub fn response_for(&mut self, head: bool) -> Response {
        loop {
            let r = self
                .read_response(head)
                .unwrap_or_else(|e| panic!("reading a response: {e}"));
            if r.status >= 200 {
                assert!(r.complete, "incomplete response body: {r:?}");
                return r;
            }
        }
    }

    pub fn response(&mut self) -> Response {
        self.response_for(false)
    }

    /// Sends `raw` and reads the response to it (HEAD detected from `raw`).
    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.response_for(raw.starts_with(b"HEAD "))
    }

    /// `GET path` on this connection, kept alive.
    pub fn get(&mut self, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
    }

    /// Reads until the server closes the connection or `timeout` passes.
    pub fn read_to_end(&mut self, timeout: Duration) -> Ending {
        let end = self.read_to_end_inner(timeout);
        self.stream.set_read_timeout(self.read_timeout);
        end
    }

    fn read_to_end_inner(&mut self, timeout: Duration) -> Ending {
        let deadline = Instant::now() + timeout;
        let mut got = std::mem::take(&mut self.buf);
        if self.eof {
            return Ending::Eof(got);
        }
        let mut tmp = [0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ending::Open(got);
            }
            self.stream.set_read_timeout(left.max(Duration::from_millis(1)));
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.eof = true;
                    return Ending::Eof(got);
                }
                Ok(n) => {
                    self.received += n as u64;
                    got.extend_from_slice(&tmp[..n]);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Ending::Open(got);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ending::Reset(got);
                }
                Err(e) => panic!("reading to the end: {e}"),
            }
        }
    }

    /// Asserts the server closes the connection within `timeout` without
    /// sending anything more.
    pub fn expect_closed(&mut self, timeout: Duration) {
        match self.read_to_end(timeout) {
            Ending::Eof(b) | Ending::Reset(b) if b.is_empty() => {}
            other => panic!(
                "expected the server to close the connection with nothing more within {timeout:?}, got {:?} \
                 with {:?}",
                other.kind(),
                String::from_utf8_lossy(other.bytes())
            ),
        }
    }
}

/// The 10 MiB body `big.py` serves and the upload tests send: 160 blocks of
/// 64 KiB, block `k` being `k` as a big-endian u32 followed by the bytes
/// 4..=255 and then 0..=255 repeated.
pub const BIG_LEN: usize = 160 * 65536;
/// sha256 of [`big_body`], computed with Python's hashlib.
pub const BIG_SHA256: &str = "de5d427ff977f9d15fae00ebd376d07fd110787f1d2ede59f5c9d12dd267771c";

pub fn big_body() -> Vec<u8> {
    let mut base = Vec::with_capacity(65536);
    for _ in 0..256 {
        base.extend(0..=255u8);
    }
    let mut out = Vec::with_capacity(BIG_LEN);
    for k in 0..160u32 {
        out.extend_from_slice(&k.to_be_bytes());
        out.extend_from_slice(&base[4..]);
    }
    out
}

/// The body of big.py's `/mixed?n=N` (`small`: `&small=1`): block i is its
/// number and a colon, repeated to the size `sizes[i % sizes.len()]`.
pub fn mixed_body(n: usize, small: bool) -> Vec<u8> {
    const MIXED_SIZES: &[usize] = &[1, 1000, 70000, 7, 65536, 300, 4096, 150000, 20, 2000];
    const SMALL_SIZES: &[usize] = &[1, 1000, 7, 300, 4096, 20, 2000];
    let sizes = if small { SMALL_SIZES } else { MIXED_SIZES };
    let mut out = Vec::new();
    for i in 0..n {
        let size = sizes[i % sizes.len()];
        let tag = format!("{i}:");
        out.extend(tag.bytes().cycle().take(size));
    }
    out
}

/// Asserts two large bodies are equal, reporting where they differ instead
/// of printing megabytes.
pub fn assert_same_body(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: got {} bytes, want {}; first difference at {:?}",
        got.len(),
        want.len(),
        first.or(Some(got.len().min(want.len())))
    );
}

// ---------------------------------------------------------------------------
// Processes: the prefork master's workers, seen through /proc.

/// What `/proc/PID/stat` says about a process.
#[derive(Clone, Debug)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    /// `R`, `S`, `T`, `Z`...
    pub state: char,
    pub comm: String,
}

impl ProcInfo {
    /// A zombie (or dead) process no longer runs anything.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// `/proc/PID/stat`, or `None` once the process is gone.
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        pgrp,
        state,
        comm,
    })
}

/// True once `pid` has exited: no such process, or a zombie nobody reaped yet.
pub fn proc_gone(pid: i32) -> bool {
    proc_info(pid).is_none_or(|p| p.is_dead())
}

/// The live (not zombie) children of `ppid`, by pid.
pub fn children(ppid: i32) -> Vec<ProcInfo> {
    let mut out: Vec<ProcInfo> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_info)
        .filter(|p| p.ppid == ppid && !p.is_dead())
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

/// What `/proc/PID/fd/*` point at, by fd number (empty once it is gone).
pub fn fd_targets(pid: i32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out: Vec<(i32, String)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect();
    out.sort();
    out
}

/// Polls `cond` every 10 ms until it holds; false at the deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The comm name of a prefork worker process.
pub const WORKER_COMM: &str = "zibai: worker";

impl Server {
    /// The master's live worker processes, by pid.
    pub fn workers(&self) -> Vec<i32> {
        children(self.pid)
            .into_iter()
            .filter(|p| p.comm == WORKER_COMM)
            .map(|p| p.pid)
            .collect()
    }

    /// Whether the master logged that worker `pid` booted.
    pub fn booted(&self, pid: i32) -> bool {
        self.stderr().contains(&format!("Worker {pid} booted"))
    }

    /// Waits until the master has exactly `n` live workers, all booted, and
    /// returns their pids; panics at the deadline saying what it saw.
    pub fn wait_workers(&self, n: usize, timeout: Duration) -> Vec<i32> {
        let mut seen = Vec::new();
        let ok = wait_until(timeout, || {
            seen = self.workers();
            seen.len() == n && seen.iter().all(|&p| self.booted(p))
        });
        assert!(
            ok,
            "wanted {n} booted workers within {timeout:?}; the master's children: {:?}",
            children(self.pid)
        );
        seen
    }

    /// The stderr lines the process `pid` wrote (`[ts] [PID] [LEVEL] msg`).
    pub fn log_lines_of(&self, pid: i32) -> Vec<String> {
        let tag = format!("] [{pid}] [");
        self.stderr()
            .lines()
            .filter(|l| l.contains(&tag))
            .map(str::to_string)
            .collect()
    }
}

// ---------------------------------------------------------------------------
// A client load: threads sending requests until told to stop.

/// How a load thread uses connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// One request per connection (`Connection: close`).
    Fresh,
    /// Requests one after the other on a kept-alive connection; a new one
    /// once the server closes it after a complete response.
    KeepAlive,
}

#[derive(Default)]
struct LoadShared {
    ok: AtomicUsize,
    /// Keep-alive races retried on a new connection (see [`Load`]).
    retried: AtomicUsize,
    failed: AtomicUsize,
    /// The first failures, with what went wrong.
    failures: Mutex<Vec<String>>,
    /// Successful responses by the `pid=N` their body named.
    by_pid: Mutex<std::collections::BTreeMap<i32, usize>>,
}

/// Threads sending `GET path` to a TCP server until stopped, counting
/// successes (a complete 200 response) and failures (a refused or reset
/// connection, a request without a complete response, another status).
///
/// One exception, the race every HTTP client retries on: a request sent on
/// a *reused* keep-alive connection that the server closed before sending a
/// single byte of a response (it was idle when the server closed it) is
/// counted as `retried`, and the thread goes on with a new connection.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    shared: Arc<LoadShared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What a [`Load`] did.
#[derive(Debug)]
pub struct LoadReport {
    pub ok: usize,
    pub retried: usize,
    pub failed: usize,
    pub failures: Vec<String>,
    pub by_pid: std::collections::BTreeMap<i32, usize>,
}

/// How long a load request may take before it counts as failed.
const LOAD_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one request per thread per this, to keep the load modest.
const LOAD_PACE: Duration = Duration::from_millis(4);
const LOAD_KEPT_FAILURES: usize = 20;

impl Load {
    /// One thread per entry of `modes`.
    pub fn start(addr: SocketAddr, path: &str, modes: &[LoadMode]) -> Load {
        Load::start_paced(addr, path, modes, LOAD_PACE)
    }

    /// Like [`start`](Self::start), each thread sending at most one request
    /// per `pace`.
    pub fn start_paced(addr: SocketAddr, path: &str, modes: &[LoadMode], pace: Duration) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shared = Arc::new(LoadShared::default());
        let threads = modes
            .iter()
            .enumerate()
            .map(|(i, &mode)| {
                let (stop, shared, path) = (stop.clone(), shared.clone(), path.to_string());
                std::thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn(move || load_thread(addr, &path, mode, pace, &stop, &shared))
                    .unwrap()
            })
            .collect();
        Load { stop, shared, threads }
    }

    pub fn ok(&self) -> usize {
        self.shared.ok.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> usize {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests succeeded in all; false at the deadline.
    pub fn wait_ok(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.ok() >= n)
    }

    /// Stops the threads (each finishes its request) and reports.
    pub fn stop(mut self) -> LoadReport {
        self.join();
        LoadReport {
            ok: self.ok(),
            retried: self.shared.retried.load(Ordering::SeqCst),
            failed: self.failed(),
            failures: self.shared.failures.lock().unwrap().clone(),
            by_pid: self.shared.by_pid.lock().unwrap().clone(),
        }
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.join();
    }
}

fn load_thread(
    addr: SocketAddr,
    path: &str,
    mode: LoadMode,
    pace: Duration,
    stop: &std::sync::atomic::AtomicBool,
    shared: &LoadShared,
) {
    let req = match mode {
        LoadMode::Fresh => format!("GET {path} HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n"),
        LoadMode::KeepAlive => format!("GET {path} HTTP/1.1\r\nHost: load\r\n\r\n"),
    };
    let fail = |what: String| {
        let n = shared.failed.fetch_add(1, Ordering::SeqCst);
        if n < LOAD_KEPT_FAILURES {
            shared.failures.lock().unwrap().push(what);
        }
    };
    let mut kept: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        n += 1;
        let (mut c, reused) = match kept.take() {
            Some(c) => (c, true),
            None => match Client::try_connect_tcp(addr, LOAD_IO_TIMEOUT) {
                Ok(c) => (c, false),
                Err(e) => {
                    fail(format!("{mode:?} request {n}: connect: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let before = c.received();
        let got = c.try_send(req.as_bytes()).and_then(|()| {
            loop {
                let r = c.read_response(false)?;
                if r.status >= 200 {
                    break Ok(r);
                }
            }
        });
        match got {
            Ok(r) if r.status == 200 && r.complete => {
                shared.ok.fetch_add(1, Ordering::SeqCst);
                if let Some(pid) = r.text().strip_prefix("pid=").and_then(|p| p.trim().parse().ok()) {
                    *shared.by_pid.lock().unwrap().entry(pid).or_default() += 1;
                }
                let closing = r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                if mode == LoadMode::KeepAlive && !closing {
                    kept = Some(c);
                }
            }
            Ok(r) => fail(format!(
                "{mode:?} request {n} (reused connection: {reused}): status {} complete {} body {:?}",
                r.status,
                r.complete,
                r.text()
            )),
            Err(_) if reused && c.received() == before => {
                shared.retried.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => fail(format!(
                "{mode:?} request {n} (reused connection: {reused}): {e} after {} response bytes",
                c.received() - before
            )),
        }
        // Pacing, not synchronisation: keeps the load modest on small machines.
        if let Some(left) = pace.checked_sub(started.elapsed()) {
            std::thread::sleep(left);
        }
    }
}
