//! The master's pidfile, with gunicorn's behaviour.
//!
//! `pidfile` owns one file holding the master's pid as `PID\n`: refusing to
//! start when the file names another live zibai, replacing a stale one, moving
//! it at the end of a binary upgrade (the new master writes `PIDFILE.2`, then
//! `PIDFILE.2` -> `PIDFILE` once the old master is gone; gunicorn renames the
//! old master's to `PIDFILE.oldbin` instead), and removing it only while it
//! still names us.
//! Every write is atomic (a temp file in the same directory, fsynced, renamed
//! over the target), so a reader never sees an empty or half-written file.
//! It never removes the file on drop: the caller decides when the master is
//! done (a master handing over to a new binary must leave it in place).
//!
//! Checking and then writing is not one atomic step: two masters started at
//! the same instant can both pass the check. gunicorn has the same window; a
//! lock would outlive neither a crash nor the rename dance of an upgrade.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::sys::signal;
use nix::unistd::Pid;

/// What `comm` (and the file name in `argv[0]`) of a zibai process is.
const PROCESS_NAME: &str = "zibai";
/// Mode of the pidfile, whatever the umask: anyone may read who to signal.
const MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    #[error("pidfile {} names running process {pid} ({name}); refusing to start", path.display())]
    Running { path: PathBuf, pid: u32, name: String },
    #[error(
        "cannot move pidfile {} to {}: it names running process {pid} ({name})",
        from.display(),
        to.display()
    )]
    TargetRunning {
        from: PathBuf,
        to: PathBuf,
        pid: u32,
        name: String,
    },
    // Not a `source`: the message already says it, and chained reports would
    // say it twice.
    #[error("cannot read pidfile {}: {cause}", path.display())]
    Read { path: PathBuf, cause: io::Error },
    #[error("cannot write pidfile {}: {cause}", path.display())]
    Write { path: PathBuf, cause: io::Error },
    #[error("cannot move pidfile {} to {}: {cause}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        cause: io::Error,
    },
    #[error("pidfile {} does not name a file", path.display())]
    NotAFile { path: PathBuf },
}

/// A pidfile we wrote, naming `pid`.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    pid: u32,
}

impl Pidfile {
    /// Writes `pid` to `path`, refusing if `path` names a live process whose
    /// `/proc/PID/comm` or `argv[0]` is zibai. A stale file (dead pid,
    /// unparsable content, or a live pid that is not zibai) is replaced and
    /// the reason returned, for the caller to log. A file already naming
    /// `pid` is rewritten silently.
    pub fn create(path: &Path, pid: u32) -> Result<(Pidfile, Option<String>), PidfileError> {
        Self::create_with(path, pid, process_is_zibai)
    }

    /// [`create`](Self::create) with the "is it zibai" check injected, so
    /// tests can make a live process count as one.
    fn create_with(
        path: &Path,
        pid: u32,
        is_zibai: impl Fn(u32) -> bool,
    ) -> Result<(Pidfile, Option<String>), PidfileError> {
        let note = match check(path, pid, &is_zibai)? {
            Existing::Free(note) => note,
            Existing::Running { pid: other, name } => {
                return Err(PidfileError::Running {
                    path: path.to_owned(),
                    pid: other,
                    name,
                });
            }
        };
        write_atomic(path, pid)?;
        Ok((
            Pidfile {
                path: path.to_owned(),
                pid,
            },
            note,
        ))
    }

    /// Moves our pidfile to `new_path` (`PIDFILE.2` -> `PIDFILE` when a new
    /// master takes over), replacing whatever stale file is there with one
    /// `rename`. Refuses if `new_path` names another live zibai. If our file
    /// no longer names us (someone removed or replaced it), it is left alone
    /// and a fresh one is written at `new_path`.
    pub fn rename_to(&mut self, new_path: &Path) -> Result<(), PidfileError> {
        self.rename_to_with(new_path, process_is_zibai)
    }

    fn rename_to_with(&mut self, new_path: &Path, is_zibai: impl Fn(u32) -> bool) -> Result<(), PidfileError> {
        if new_path == self.path {
            return Ok(());
        }
        if let Existing::Running { pid, name } = check(new_path, self.pid, &is_zibai)? {
            return Err(PidfileError::TargetRunning {
                from: self.path.clone(),
                to: new_path.to_owned(),
                pid,
                name,
            });
        }
        if self.still_ours() {
            fs::rename(&self.path, new_path).map_err(|cause| PidfileError::Rename {
                from: self.path.clone(),
                to: new_path.to_owned(),
                cause,
            })?;
            sync_dir(new_path);
            if parent_dir(&self.path) != parent_dir(new_path) {
                sync_dir(&self.path);
            }
        } else {
            write_atomic(new_path, self.pid)?;
        }
        self.path = new_path.to_owned();
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Removes the file if it still names our pid (after an upgrade another
    /// master may own it). Never fails loudly: returns whether it removed it.
    pub fn remove(self) -> bool {
        self.still_ours() && fs::remove_file(&self.path).is_ok()
    }

    fn still_ours(&self) -> bool {
        matches!(read_pid(&self.path), Ok(Some(p)) if p == self.pid)
    }
}

/// Removes the pidfile at `path` if it names `pid`: the same as
/// [`Pidfile::remove`] for a process that inherited the file across exec.
pub fn remove_if_ours(path: &Path, pid: u32) -> bool {
    Pidfile {
        path: path.to_owned(),
        pid,
    }
    .remove()
}

/// Reads a pidfile: `Ok(Some(pid))` if it holds a usable pid (a decimal
/// number, surrounding whitespace allowed, from 1 to `i32::MAX`), `Ok(None)`
/// if it holds anything else, and an error (`NotFound` when it is missing) if
/// it cannot be read. 0 and larger numbers are refused because `kill` would
/// take them for process groups.
pub fn read_pid(path: &Path) -> io::Result<Option<u32>> {
    let mut content = Vec::new();
    // The longest valid content is a few bytes; reading at most a page keeps
    // a pidfile pointed at something huge (or endless) from filling memory.
    io::Read::read_to_end(&mut io::Read::take(File::open(path)?, 4096), &mut content)?;
    Ok(parse_pid(&content))
}

fn parse_pid(content: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(content).ok()?.trim();
    // `parse` accepts a leading '+'; a pidfile has digits only.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pid: u32 = text.parse().ok()?;
    (pid >= 1 && i32::try_from(pid).is_ok()).then_some(pid)
}

/// Whether `pid` is alive: `kill(pid, 0)` succeeds or fails with EPERM (it
/// exists but is not ours to signal). Only ESRCH means dead; any other error
/// counts as alive, so doubt never clobbers a running master's pidfile.
/// 0 and pids beyond `i32::MAX` are never alive: `kill` would read them as
/// process groups.
pub fn is_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw == 0 {
        return false;
    }
    !matches!(signal::kill(Pid::from_raw(raw), None), Err(Errno::ESRCH))
}

/// Whether process `pid` is a zibai: its `/proc/PID/comm`, or the file name
/// of its `argv[0]`, is `zibai` (or a title starting `zibai:`, should a
/// process rename itself). A process we cannot inspect (gone, or hidden by
/// `hidepid`; or no `/proc` at all) is not one.
fn process_is_zibai(pid: u32) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if fs::read(proc_dir.join("comm")).is_ok_and(|comm| is_zibai_name(&comm)) {
        return true;
    }
    let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let name = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    is_zibai_name(name)
}

fn is_zibai_name(name: &[u8]) -> bool {
    let name = name.strip_suffix(b"\n").unwrap_or(name);
    match name.strip_prefix(PROCESS_NAME.as_bytes()) {
        Some(rest) => rest.is_empty() || rest.starts_with(b":"),
        None => false,
    }
}

/// `/proc/PID/comm` for messages; "unknown" if it cannot be read.
fn process_name(pid: u32) -> String {
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) if !comm.trim().is_empty() => comm.trim().to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// What is at a path we are about to write our pidfile to.
enum Existing {
    /// Nothing, a file naming us, or a stale file (with why it is stale).
    Free(Option<String>),
    /// Another live zibai.
    Running { pid: u32, name: String },
}

fn check(path: &Path, ours: u32, is_zibai: &impl Fn(u32) -> bool) -> Result<Existing, PidfileError> {
    let shown = path.display();
    let other = match read_pid(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Free(None)),
        Err(cause) => {
            return Err(PidfileError::Read {
                path: path.to_owned(),
                cause,
            });
        }
        Ok(None) => {
            return Ok(Existing::Free(Some(format!(
                "replacing pidfile {shown}: it does not hold a pid"
            ))));
        }
        Ok(Some(p)) if p == ours => return Ok(Existing::Free(None)),
        Ok(Some(p)) => p,
    };
    if !is_alive(other) {
        return Ok(Existing::Free(Some(format!(
            "replacing stale pidfile {shown}: process {other} is not running"
        ))));
    }
    let name = process_name(other);
    if is_zibai(other) {
        return Ok(Existing::Running { pid: other, name });
    }
    Ok(Existing::Free(Some(format!(
        "replacing stale pidfile {shown}: process {other} ({name}) is not zibai"
    ))))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename in `path`'s directory durable. Best effort: the pidfile is
/// already in place for every reader, and some filesystems refuse to fsync a
/// directory.
fn sync_dir(path: &Path) {
    if let Ok(dir) = File::open(parent_dir(path)) {
        let _ = dir.sync_all();
    }
}

/// Distinguishes temp files of threads (tests) in one process.
static TEMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Writes `PID\n` to `path` atomically: a new temp file in the same directory
/// (so the rename cannot cross filesystems), fsynced, then renamed over
/// `path`. The temp file is removed again if any step fails.
fn write_atomic(path: &Path, pid: u32) -> Result<(), PidfileError> {
    let write_err = |cause| PidfileError::Write {
        path: path.to_owned(),
        cause,
    };
    let Some(name) = path.file_name() else {
        return Err(PidfileError::NotAFile { path: path.to_owned() });
    };
    let dir = parent_dir(path);
    let (tmp, mut file) = loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
        let tmp = dir.join(tmp_name);
        // create_new is O_CREAT|O_EXCL: never follows a planted symlink, never
        // shares a file with anyone. std adds O_CLOEXEC, so no worker we
        // spawn inherits it.
        match OpenOptions::new().write(true).create_new(true).mode(MODE).open(&tmp) {
            Ok(file) => break (tmp, file),
            // Left by a crashed process that had our pid; try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(cause) => return Err(write_err(cause)),
        }
    };
    let written = (|| {
        // The umask may have narrowed the mode at creation.
        file.set_permissions(fs::Permissions::from_mode(MODE))?;
        file.write_all(format!("{pid}\n").as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(cause) = written {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(cause));
    }
    sync_dir(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;
    use std::process::Command;

    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn own_pid() -> u32 {
        std::process::id()
    }

    /// A pid that is not ours; whether it is alive does not matter.
    const OTHER: u32 = 4_000_000;

    #[test]
    fn create_writes_pid_and_newline() {
        let dir = TempDir::new("pidfile");
        let path = dir.join("zibai.pid");
        let (pf, note) = Pidfile::create(&path, 1234).unwrap();
        assert_eq!(note, None);
        assert_eq!(pf.path(), path);
        assert_eq!(pf.pid(), 1234);
        assert_eq!(fs::read_to_string(&path).unwrap(), "1234\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(dir.names(), ["zibai.pid"]);
    }

    #[test]
    fn create_in_the_current_directory_form() {
        // A bare file name has an empty parent; the temp file must go to ".".
        assert_eq!(parent_dir(Path::new("zibai.pid")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/run/zibai.pid")), Path::new("/run"));
    }

    #[test]
    fn create_refuses_a_live_zibai() {
        let dir = TempDir::new("pidfile");
        let path = dir.join("zibai.pid");
        fs::write(&path, format!("{}\n", own_pid())).unwrap();
        let err = Pidfile::create_with(&path, OTHER, |p| p == own_pid()).unwrap_err();
        match &err {
            PidfileError::Running { path: p, pid, .. } => {
                assert_eq!(p, &path);
                assert_eq!(*pid, own_pid());
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("names running process {}", own_pid())), "{msg}");
        assert!(msg.ends_with("refusing to start"), "{msg}");
        // Untouched, and no temp file was made.
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{}\n", own_pid()));
        assert_eq!(dir.names(), ["zibai.pid"]);
    }

    #[test]
    fn create_replaces_a_live_process_that_is_not_zibai() {
        let dir = TempDir::new("pidfile");
        let path = dir.join("zibai.pid");
        fs::write(&path, format!("{}\n", own_pid())).unwrap();
        // The real check: this test binary is `zibai-<hash>`, not zibai.
        let (_pf, note) = Pidfile::create(&path, OTHER).unwrap();
        let note = note.unwrap();
        assert!(note.contains(&format!("process {} (", own_pid())), "{note}");
        assert!(note.ends_with("is not zibai"), "{note}");
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{OTHER}\n"));
        assert_eq!(dir.names(), ["zibai.pid"]);
    }

    #[test]
    fn create_replaces_a_dead_pid() {
        let dir = TempDir::new("pidfile");
        let path = dir.join("zibai.pid");
        let dead = dead_pid();
        fs::write(&path, format!("{dead}\n")).unwrap();
        // Even if it had been a zibai: dead is dead.
        let (_pf, note) = Pidfile::create_with(&path, 77, |_| true).unwrap();
        let note = note.unwrap();
        assert!(note.contains(&format!("process {dead} is not running")), "{note}");
        assert!(note.contains(&path.display().to_string()), "{note}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "77\n");
        assert_eq!(dir.names(), ["zibai.pid"]);
    }

    #[test]
    fn create_replaces_garbage() {
        for garbage in [
            "",
            "\n",
            "hello\n",
            "0\n",
            "-5\n",
            "+5\n",
            "12 34\n",
            "99999999999\n",
            "2147483648\n",
        ] {
            let dir = TempDir::new("pidfile");
            let path = dir.join("zibai.pid");
            fs::write(&path, garbage).unwrap();
            let (_pf, note) = Pidfile::create_with(&path, 42, |_| true).unwrap();
            let note = note.unwrap_or_else(|| panic!("{garbage:?}"));
            assert!(note.contains("does not hold a pid"), "{garbage:?}: {note}");
            assert_eq!(fs::read_to_string(&path).unwrap(), "42\n", "{garbage:?}");
            assert_eq!(dir.names(), ["zibai.pid"]);
        }
    }

    #[test]
    fn create_over_our_own_pid_is_silent() {
        let dir = TempDir::new("pidfile");
        let path = dir.join("zibai.pid");
        fs::write(&path, format!("{}\n", own_pid())).unwrap();
        let (_pf, note) = Pidfile::create_with(&path, own_pid(), |_| true).unwrap();
        assert_eq!(note, None);
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{}\n", own_pid()));
    }

    #[test]
    fn create_fails_on_unreadable_path_without_leaving_temp_files() {
        let dir = TempDir::new("pidfile");
        // A directory where the pidfile should be: reading it fails.
        let path = dir.join("zibai.pid");
        fs::create_dir(&path).unwrap();
        let err = Pidfile::create(&path, 1).unwrap_err();
        assert!(matches!(err, PidfileError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(dir.names(), ["zibai.pid"]);

        let missing_dir = dir.join("nope").join("zibai.pid");
        let err = Pidfile::create(&missing_dir, 1).unwrap_err();
        assert!(matches!(err, PidfileError::Write { .. }), "{err:?}");
        assert!(err.to_string().contains(&missing_dir.display().to_string()));
    }

    #[test]
    fn failed_write_removes_its_temp_file() {
        let dir = TempDir::new("pidfile");
        // Renaming a file over a non-empty directory fails after the temp
        // file has been written and fsynced.
        let path = dir.join("zibai.pid");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), "").unwrap();
        let err = write_atomic(&path, 5).unwrap_err();
        assert!(matches!(err, PidfileError::Write { .. }), "{err:?}");
        assert_eq!(dir.names(), ["zibai.pid"]);
    }

    #[test]
    fn no_fd_is_left_open_on_the_pidfile() {
        let dir = TempDir::new("pidfile");
        let path = dir.join("zibai.pid");
        let (pf, _) = Pidfile::create(&path, 9).unwrap();
        let mut pf = pf;
        pf.rename_to(&dir.join("zibai.pid.oldbin")).unwrap();
        // Other tests' fds point into their own directories.
        for entry in fs::read_dir("/proc/self/fd").unwrap() {
            if let Ok(target) = fs::read_link(entry.unwrap().path()) {
                assert!(!target.starts_with(dir.path()), "{} still open", target.display());
            }
        }
    }

    #[test]
    fn remove_only_removes_our_own_file() {
        let dir = TempDir::new("pidfile");
        let path = dir.join("zibai.pid");

        let (pf, _) = Pidfile::create(&path, 1234).unwrap();
        assert!(pf.remove());
        assert!(!path.exists());

        let (pf, _) = Pidfile::create(&path, 1234).unwrap();
        // A new master took the file over.
        fs::write(&path, "5678\n").unwrap();
        assert!(!pf.remove());
        assert_eq!(fs::read_to_string(&path).unwrap(), "5678\n");

        let (pf, _) = Pidfile::create_with(&path, 1234, |_| false).unwrap();
        fs::remove_file(&path).unwrap();
        assert!(!pf.remove());
        assert_eq!(dir.names(), Vec::<String>::new());
    }

    #[test]
    fn rename_to_moves_the_file() {
        let dir = TempDir::new("pidfile");
        let two = dir.join("zibai.pid.2");
        let main = dir.join("zibai.pid");
        let (mut pf, _) = Pidfile::create(&two, 4321).unwrap();
        // The old master's stale file is replaced.
        fs::write(&main, format!("{}\n", dead_pid())).unwrap();
        pf.rename_to(&main).unwrap();
        assert_eq!(pf.path(), main);
        assert_eq!(fs::read_to_string(&main).unwrap(), "4321\n");
        assert_eq!(dir.names(), ["zibai.pid"]);
        // To itself: nothing to do.
        pf.rename_to(&main).unwrap();
        assert_eq!(fs::read_to_string(&main).unwrap(), "4321\n");
        assert!(pf.remove());
        assert_eq!(dir.names(), Vec::<String>::new());
    }

    #[test]
    fn rename_to_refuses_a_target_naming_a_live_zibai() {
        let dir = TempDir::new("pidfile");
        let from = dir.join("zibai.pid");
        let to = dir.join("zibai.pid.oldbin");
        let (mut pf, _) = Pidfile::create(&from, OTHER).unwrap();
        fs::write(&to, format!("{}\n", own_pid())).unwrap();
        let err = pf.rename_to_with(&to, |p| p == own_pid()).unwrap_err();
        assert!(
            matches!(err, PidfileError::TargetRunning { pid, .. } if pid == own_pid()),
            "{err:?}"
        );
        assert_eq!(pf.path(), from);
        assert_eq!(fs::read_to_string(&from).unwrap(), format!("{OTHER}\n"));
        assert_eq!(fs::read_to_string(&to).unwrap(), format!("{}\n", own_pid()));
        assert_eq!(dir.names(), ["zibai.pid", "zibai.pid.oldbin"]);
    }

    #[test]
    fn rename_to_writes_afresh_when_our_file_was_taken_over() {
        let dir = TempDir::new("pidfile");
        let from = dir.join("zibai.pid");
        let to = dir.join("zibai.pid.oldbin");
        let (mut pf, _) = Pidfile::create(&from, 1111).unwrap();
        fs::write(&from, "2222\n").unwrap();
        pf.rename_to_with(&to, |_| false).unwrap();
        assert_eq!(fs::read_to_string(&from).unwrap(), "2222\n");
        assert_eq!(fs::read_to_string(&to).unwrap(), "1111\n");
        assert_eq!(dir.names(), ["zibai.pid", "zibai.pid.oldbin"]);
    }

    #[test]
    fn read_pid_cases() {
        let dir = TempDir::new("pidfile");
        let path = dir.join("p");
        assert_eq!(read_pid(&path).unwrap_err().kind(), io::ErrorKind::NotFound);
        for (content, want) in [
            ("123\n", Some(123)),
            ("123", Some(123)),
            (" 123 \n", Some(123)),
            ("2147483647\n", Some(i32::MAX as u32)),
            ("2147483648\n", None),
            ("0\n", None),
            ("+1\n", None),
            ("-1\n", None),
            ("1 2\n", None),
            ("abc\n", None),
            ("", None),
        ] {
            fs::write(&path, content).unwrap();
            assert_eq!(read_pid(&path).unwrap(), want, "{content:?}");
        }
        fs::write(&path, [0xff, b'1']).unwrap();
        assert_eq!(read_pid(&path).unwrap(), None);
        // A huge file is read only as far as a page, then refused.
        fs::write(&path, "1".repeat(1 << 20)).unwrap();
        assert_eq!(read_pid(&path).unwrap(), None);
    }

    #[test]
    fn is_alive_cases() {
        assert!(is_alive(own_pid()));
        // init exists in every pid namespace; usually not ours to signal (EPERM).
        assert!(is_alive(1));
        assert!(!is_alive(dead_pid()));
        assert!(!is_alive(0));
        assert!(!is_alive(u32::MAX));
        assert!(!is_alive(i32::MAX as u32 + 1));
    }

    #[test]
    fn zibai_names() {
        assert!(is_zibai_name(b"zibai"));
        assert!(is_zibai_name(b"zibai\n"));
        assert!(is_zibai_name(b"zibai: worker"));
        assert!(!is_zibai_name(b"zibai-0123abcd"));
        assert!(!is_zibai_name(b"zibaix"));
        assert!(!is_zibai_name(b"gunicorn"));
        assert!(!is_zibai_name(b""));
        // This test binary is `zibai-<hash>`; a dead process is nothing.
        assert!(!process_is_zibai(own_pid()));
        assert!(!process_is_zibai(dead_pid()));
    }
}
