//! Log output. Two destinations, each stderr or a file: the error log
//! (everything logged through `log`, one prefixed line per record) and the
//! access log (one line per request, in the `--access-log-format`).
//!
//! Every line is handed to the kernel in one `write(2)` on an `O_APPEND`
//! descriptor, so the master and all workers can share a file without
//! interleaving. USR1 reopens the files (after logrotate moved them).

pub mod access;

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

/// Where a log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    File(PathBuf),
}

/// `-` for stderr, else the path (what `--print-config` writes).
impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Stderr => f.write_str("-"),
            Destination::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An open destination that can be reopened while other threads write.
pub struct Sink {
    dest: Destination,
    fd: RwLock<Option<Arc<OwnedFd>>>,
    /// Workers that dropped root to this (uid, gid) must be able to reopen
    /// the file after logrotate: files we create are handed to them.
    owner: Option<(u32, u32)>,
}

fn open_file(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open log file {}: {e}", path.display())))?;
    Ok(OwnedFd::from(f))
}

/// Whether the log files can be opened, for `--daemon` to say so on the
/// terminal before it detaches: afterwards the reason would go nowhere.
pub fn check_files(dests: &[&Destination]) -> io::Result<()> {
    for d in dests {
        if let Destination::File(p) = d {
            open_file(p)?;
        }
    }
    Ok(())
}

/// Gives the file to `owner` when we run as root (gunicorn does the same
/// for its log files).
fn hand_over(fd: &OwnedFd, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner
        && nix::unistd::Uid::effective().is_root()
    {
        let _ = nix::unistd::fchown(fd, Some(uid.into()), Some(gid.into()));
    }
}

impl Sink {
    pub fn open(dest: Destination) -> io::Result<Sink> {
        Sink::open_for(dest, None)
    }

    /// Opens `dest`, owned by `owner` (the workers' user and group).
    pub fn open_for(dest: Destination, owner: Option<(u32, u32)>) -> io::Result<Sink> {
        let fd = match &dest {
            Destination::Stderr => None,
            Destination::File(p) => {
                let fd = open_file(p)?;
                hand_over(&fd, owner);
                Some(Arc::new(fd))
            }
        };
        Ok(Sink {
            dest,
            fd: RwLock::new(fd),
            owner,
        })
    }

    /// Writes `line` (which ends in a newline) with one write(2) when it can.
    pub fn write_line(&self, line: &[u8]) {
        let fd = self.fd.read().unwrap_or_else(|p| p.into_inner()).clone();
        let raw = fd.as_ref().map_or(libc::STDERR_FILENO, |f| f.as_raw_fd());
        let mut rest = line;
        while !rest.is_empty() {
            // SAFETY: writes from a valid slice to an fd that stays open while
            // `fd` (an Arc) is held, or to stderr.
            let n = unsafe { libc::write(raw, rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return; // nowhere left to report a failing log
            }
            rest = &rest[n as usize..];
        }
    }

    /// Opens the file again (the old one may have been moved away).
    pub fn reopen(&self) -> io::Result<()> {
        if let Destination::File(p) = &self.dest {
            let fd = open_file(p)?;
            hand_over(&fd, self.owner);
            *self.fd.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(fd));
        }
        Ok(())
    }
}

static ERROR_LOG: OnceLock<Sink> = OnceLock::new();
static ACCESS_LOG: OnceLock<Sink> = OnceLock::new();

/// `log`'s writer: hands each formatted record to the error log's sink.
struct ErrorLogWriter {
    buf: Vec<u8>,
}

impl Write for ErrorLogWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.ends_with(b"\n") {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            match ERROR_LOG.get() {
                Some(sink) => sink.write_line(&self.buf),
                None => io::stderr().write_all(&self.buf)?,
            }
            self.buf.clear();
        }
        Ok(())
    }
}

/// Sets up `log` for the process, at the info level until [`set_level`]
/// applies `--log-level`, writing to stderr until [`open`] names the files.
/// `ZIBAI_LOG` (a filter in env_logger's syntax) overrides the level, for
/// debugging.
pub fn init() {
    let mut builder = env_logger::Builder::new();
    match std::env::var("ZIBAI_LOG") {
        Ok(spec) => {
            builder.parse_filters(&spec);
        }
        Err(_) => {
            builder.filter_level(log::LevelFilter::Trace);
        }
    }
    builder
        .format(|buf, record| {
            let ts = buf.timestamp_millis();
            writeln!(
                buf,
                "[{ts}] [{}] [{}] {}",
                std::process::id(),
                record.level(),
                record.args()
            )
        })
        .target(env_logger::Target::Pipe(Box::new(ErrorLogWriter { buf: Vec::new() })))
        .init();
    if std::env::var_os("ZIBAI_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Applies `--log-level` (unless `ZIBAI_LOG` is set).
pub fn set_level(level: log::LevelFilter) {
    if std::env::var_os("ZIBAI_LOG").is_none() {
        log::set_max_level(level);
    }
}

/// Opens the error and access logs (until then both go to stderr), owned
/// by `owner`, the user workers run as, if any.
pub fn open(error_log: Destination, access_log: Destination, owner: Option<(u32, u32)>) -> io::Result<()> {
    let _ = ERROR_LOG.set(Sink::open_for(error_log, owner)?);
    let _ = ACCESS_LOG.set(Sink::open_for(access_log, owner)?);
    Ok(())
}

/// Text for the error log as the app wrote it (`wsgi.errors`), unprefixed.
pub fn error_raw(text: &[u8]) {
    match ERROR_LOG.get() {
        Some(sink) => sink.write_line(text),
        None => {
            let _ = io::stderr().write_all(text);
        }
    }
}

/// One access log line (without its newline).
pub fn access(line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    match ACCESS_LOG.get() {
        Some(sink) => sink.write_line(&buf),
        None => {
            let _ = io::stderr().write_all(&buf);
        }
    }
}

/// USR1: reopens both log files; a failure is logged and the old file kept.
pub fn reopen() {
    for sink in [ERROR_LOG.get(), ACCESS_LOG.get()].into_iter().flatten() {
        if let Err(e) = sink.reopen() {
            log::error!("{e}");
        }
    }
    if CAPTURE.load(std::sync::atomic::Ordering::Relaxed) {
        redirect_std();
    }
}

/// `--capture-output` is on: stdout and stderr follow the error log file.
static CAPTURE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--capture-output`: this process's stdout and stderr (the app's print(),
/// a logging.StreamHandler, a C library's messages) become the error log
/// file, again after each reopen (logrotate), as gunicorn's option does.
/// Nothing to do when the error log is stderr.
pub fn capture_output() {
    if !matches!(ERROR_LOG.get().map(|s| &s.dest), Some(Destination::File(_))) {
        return;
    }
    // A log that goes to stderr (the access log by default) keeps the
    // real stderr: it is not the app's output, and must not follow it into
    // the error log file.
    if let Some(sink) = ACCESS_LOG.get()
        && matches!(sink.dest, Destination::Stderr)
    {
        use std::os::fd::AsFd;
        match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => *sink.fd.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(fd)),
            Err(e) => log::error!("--capture-output: cannot keep stderr for the access log: {e}"),
        }
    }
    CAPTURE.store(true, std::sync::atomic::Ordering::Relaxed);
    redirect_std();
}

fn redirect_std() {
    let Some(sink) = ERROR_LOG.get() else { return };
    let fd = sink.fd.read().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(fd) = fd {
        for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
            // SAFETY: dup2 onto the standard descriptors from an fd the Arc
            // keeps open; the duplicate is ours and never closed by Rust.
            if unsafe { libc::dup2(fd.as_raw_fd(), target) } == -1 {
                log::error!("--capture-output: dup2: {}", io::Error::last_os_error());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zibai-log-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn lines_append_and_reopen_follows_a_moved_file() {
        let dir = tmp("reopen");
        let path = dir.join("access.log");
        let sink = Sink::open(Destination::File(path.clone())).unwrap();
        sink.write_line(b"one\n");
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        sink.write_line(b"two\n");
        sink.reopen().unwrap();
        sink.write_line(b"three\n");
        assert_eq!(std::fs::read_to_string(dir.join("access.log.1")).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_writers_never_interleave_lines() {
        let dir = tmp("interleave");
        let path = dir.join("a.log");
        let sink = Arc::new(Sink::open(Destination::File(path.clone())).unwrap());
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut line = vec![b'a' + t; 3000];
                    line.push(b'\n');
                    for _ in 0..200 {
                        sink.write_line(&line);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 800);
        for l in text.lines() {
            assert_eq!(l.len(), 3000);
            assert!(l.bytes().all(|b| b == l.as_bytes()[0]), "interleaved line");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unopenable_file_is_named() {
        let e = Sink::open(Destination::File("/nonexistent-zibai/x.log".into()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent-zibai/x.log"), "{e}");
    }
}
