//! `--watchfiles "*.py;.env"` (Zibai's option): replace the workers when a
//! matching file under the current directory changes. Bursts of events (an
//! editor's save, a `git checkout`) are coalesced into one reload.
//!
//! Each directory gets a watch of its own, so that directories which hold
//! no source of the app (virtual environments, version control, caches;
//! see [`skipped_dir`]) cost no inotify watches: a project with a `.venv`
//! of a few thousand directories used to exhaust a small
//! `fs.inotify.max_user_watches` and refuse to start. Directories created
//! later are watched as they appear.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::event::ModifyKind;
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("invalid pattern {pattern:?} in --watchfiles: {cause}")]
    Pattern { pattern: String, cause: globset::Error },
    #[error("--watchfiles: no pattern given")]
    Empty,
    #[error("cannot watch {path}: {cause}")]
    Watch { path: String, cause: notify::Error },
    #[error(
        "--watchfiles: cannot watch {path}: the inotify watch limit was reached after {watched} directories \
         (raise the sysctl fs.inotify.max_user_watches, or start from a smaller directory)"
    )]
    Limit { path: String, watched: usize },
}

/// Events closer together than this make one reload.
const COALESCE: Duration = Duration::from_millis(300);

/// Directories never watched (by name): version control, bytecode and tool
/// caches, editors' settings, JavaScript packages, and the usual name of a
/// virtual environment (Python's watchfiles ignores the same by default).
const SKIPPED: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".venv",
    "node_modules",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".idea",
];

/// A directory holding no source of the app: one of [`SKIPPED`], or a
/// virtual environment (`pyvenv.cfg`) or conda environment (`conda-meta/`)
/// under whatever name. Packages installed there change through pip, not
/// by editing.
fn skipped_dir(dir: &Path) -> bool {
    dir.file_name().is_some_and(skipped_name) || dir.join("pyvenv.cfg").is_file() || dir.join("conda-meta").is_dir()
}

fn skipped_name(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| SKIPPED.contains(&n))
}

/// The `;`-separated globs. A glob matches a path relative to the watched
/// directory, or the file's name alone (so `*.py` covers subdirectories).
#[derive(Debug)]
pub struct Patterns {
    set: GlobSet,
    root: PathBuf,
}

impl Patterns {
    pub fn parse(root: &Path, spec: &str) -> Result<Patterns, WatchError> {
        let mut builder = GlobSetBuilder::new();
        let mut any = false;
        for pattern in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let glob = Glob::new(pattern).map_err(|cause| WatchError::Pattern {
                pattern: pattern.to_string(),
                cause,
            })?;
            builder.add(glob);
            any = true;
        }
        if !any {
            return Err(WatchError::Empty);
        }
        let set = builder.build().map_err(|cause| WatchError::Pattern {
            pattern: spec.to_string(),
            cause,
        })?;
        Ok(Patterns {
            set,
            root: root.to_path_buf(),
        })
    }

    pub fn matches(&self, path: &Path) -> bool {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        // Bytecode caches and VCS metadata change as a side effect of
        // running; none of the skipped directories is watched anyway.
        if rel.components().any(|c| skipped_name(c.as_os_str())) {
            return false;
        }
        // Editors' lock, swap and backup files are not the source (Python's
        // watchfiles ignores the same): Emacs makes `.#web.py` as soon as a
        // buffer is modified, before anything is saved.
        if rel.file_name().and_then(|n| n.to_str()).is_some_and(editor_file) {
            return false;
        }
        self.set.is_match(rel) || rel.file_name().is_some_and(|n| self.set.is_match(n))
    }
}

/// Emacs locks (`.#x`), backups (`x~`), vim swap files (`.x.swp`, `.swo`,
/// `.swx`) and JetBrains' safe-write temporaries (`x___jb_tmp___`).
fn editor_file(name: &str) -> bool {
    let b = name.as_bytes();
    name.starts_with(".#")
        || name.ends_with('~')
        || (b.len() > 4 && b[b.len() - 4..b.len() - 1].eq_ignore_ascii_case(b".sw"))
        || (name.contains("___jb_") && name.ends_with("___"))
}

/// What the watcher's callback passes on to the watching thread.
enum Seen {
    Event(Event),
    /// The kernel's queue overflowed: changes were lost.
    Lost,
}

/// Watches `root` and the directories under it; on a matching change, logs
/// it and raises SIGHUP in this process, so the master reloads exactly as
/// on `kill -HUP`. The watching goes on in a thread of its own for the
/// rest of the process's life.
pub fn start(root: &Path, spec: &str) -> Result<(), WatchError> {
    let patterns = Patterns::parse(root, spec)?;
    let (tx, rx) = std::sync::mpsc::channel::<Seen>();
    let watch_error = |cause| WatchError::Watch {
        path: root.display().to_string(),
        cause,
    };
    // The callback runs on notify's own thread, which must not be asked to
    // add watches from there: everything else happens on ours.
    let watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
        // Reads are not changes: importing the app opens every module, and
        // counting that would reload forever.
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        Ok(event) if event.need_rescan() => {
            let _ = tx.send(Seen::Lost);
        }
        Ok(event) => {
            let _ = tx.send(Seen::Event(event));
        }
        Err(e) => log::warn!("file watcher: {e}"),
    })
    .map_err(watch_error)?;
    let mut tree = Tree {
        watcher,
        patterns,
        watched: 0,
        warned: false,
    };
    tree.add(root).map_err(|e| match e {
        AddError::Limit(path) => WatchError::Limit {
            path: path.display().to_string(),
            watched: tree.watched,
        },
        AddError::Watch(cause) => watch_error(cause),
    })?;
    let watched = tree.watched;
    std::thread::Builder::new()
        .name("zibai-watch".into())
        .spawn(move || tree.run(&rx))
        .map_err(|cause| watch_error(notify::Error::io(cause)))?;
    log::info!("Watching {} for changes to {spec}", root.display());
    log::debug!("--watchfiles: {watched} directories watched");
    Ok(())
}

enum AddError {
    /// The inotify watch limit, reached at this directory.
    Limit(PathBuf),
    /// The top directory itself cannot be watched.
    Watch(notify::Error),
}

struct Tree {
    watcher: RecommendedWatcher,
    patterns: Patterns,
    /// Directories watched so far (for the limit's message).
    watched: usize,
    /// The limit was reported while running: once is enough.
    warned: bool,
}

impl Tree {
    /// Watches `top` and every directory under it that is not skipped;
    /// returns the matching files found there (in a directory that just
    /// appeared, they may have been written before its watch was added).
    fn add(&mut self, top: &Path) -> Result<Vec<PathBuf>, AddError> {
        let mut found = Vec::new();
        walk(top, &self.patterns, &mut found, |dir| {
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched += 1;
                    Ok(true)
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => Err(AddError::Limit(dir.into())),
                Err(e) if dir == top => Err(AddError::Watch(e)),
                // Gone already, or not ours to read: nothing to watch there.
                Err(e) => {
                    log::debug!("--watchfiles: not watching {}: {e}", dir.display());
                    Ok(false)
                }
            }
        })?;
        Ok(found)
    }

    /// A directory became a virtual environment (`python -m venv NAME`
    /// wrote its `pyvenv.cfg`): its watches go.
    fn remove(&mut self, top: &Path) {
        let mut ignored = Vec::new();
        let _ = walk(top, &self.patterns, &mut ignored, |dir| {
            if self.watcher.unwatch(dir).is_ok() {
                self.watched = self.watched.saturating_sub(1);
            }
            Ok::<bool, ()>(true)
        });
    }

    /// Turns one event into the changed files it reports, watching the
    /// directories it says were created (or moved in).
    fn changes(&mut self, seen: Seen, changed: &mut Vec<PathBuf>) {
        let event = match seen {
            Seen::Event(event) => event,
            Seen::Lost => {
                // Any of the lost changes may be ours: reload rather than
                // miss one.
                log::warn!("file watcher: events were lost (queue overflow); reloading to be safe");
                changed.push(PathBuf::from("(lost events)"));
                return;
            }
        };
        let appeared = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        for path in event.paths {
            if appeared && path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                if !skipped_dir(&path) {
                    match self.add(&path) {
                        Ok(found) => changed.extend(found),
                        Err(AddError::Limit(at)) if !self.warned => {
                            self.warned = true;
                            log::warn!(
                                "--watchfiles: the inotify watch limit was reached at {} after {} directories; \
                                 changes there are not seen (raise the sysctl fs.inotify.max_user_watches)",
                                at.display(),
                                self.watched
                            );
                        }
                        Err(_) => {}
                    }
                }
                continue;
            }
            if appeared && path.file_name() == Some(OsStr::new("pyvenv.cfg")) {
                if let Some(dir) = path.parent().filter(|d| *d != self.patterns.root) {
                    self.remove(dir);
                }
                continue;
            }
            if self.patterns.matches(&path) {
                changed.push(path);
            }
        }
    }

    /// One reload per burst: after a change, waits for `COALESCE` without
    /// another. Events that change no watched file do not extend the wait
    /// (a log file written every second in the directory would otherwise
    /// hold a reload back for ever).
    fn run(mut self, rx: &Receiver<Seen>) {
        let mut changed = Vec::new();
        let mut quiet_at = Instant::now();
        loop {
            let seen = if changed.is_empty() {
                match rx.recv() {
                    Ok(seen) => seen,
                    Err(_) => return,
                }
            } else {
                match rx.recv_timeout(quiet_at.saturating_duration_since(Instant::now())) {
                    Ok(seen) => seen,
                    Err(RecvTimeoutError::Timeout) => {
                        reload(&changed);
                        changed.clear();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            let before = changed.len();
            self.changes(seen, &mut changed);
            if changed.len() > before {
                quiet_at = Instant::now() + COALESCE;
            }
        }
    }
}

/// Visits `top` and the directories under it, depth first, skipping
/// [`skipped_dir`]s and never following symbolic links. `visit` is called
/// for a directory before it is read (so a watch it adds sees the files
/// written while it is read); `Ok(false)` leaves the directory out,
/// `Err` stops the walk. Files that `patterns` match go to `found`.
fn walk<E>(
    top: &Path,
    patterns: &Patterns,
    found: &mut Vec<PathBuf>,
    mut visit: impl FnMut(&Path) -> Result<bool, E>,
) -> Result<(), E> {
    let mut stack = vec![top.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if !visit(&dir)? {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() && !skipped_dir(&path) => stack.push(path),
                Ok(t) if !t.is_dir() && patterns.matches(&path) => found.push(path),
                _ => {}
            }
        }
    }
    Ok(())
}

fn reload(changed: &[PathBuf]) {
    log::info!(
        "Watched files changed ({}{}); reloading",
        changed[0].display(),
        match changed.len() {
            1 => String::new(),
            n => format!(" and {} more events", n - 1),
        }
    );
    let _ = signal_hook::low_level::raise(libc::SIGHUP);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_anywhere_and_paths_from_the_root() {
        let root = Path::new("/srv/app");
        let p = Patterns::parse(root, "*.py;.env; conf/*.toml").unwrap();
        assert!(p.matches(Path::new("/srv/app/web.py")));
        assert!(p.matches(Path::new("/srv/app/pkg/sub/models.py")));
        assert!(p.matches(Path::new("/srv/app/.env")));
        assert!(p.matches(Path::new("/srv/app/conf/site.toml")));
        assert!(!p.matches(Path::new("/srv/app/README.md")));
        assert!(!p.matches(Path::new("/srv/app/pkg/__pycache__/models.cpython-311.pyc")));
        assert!(!p.matches(Path::new("/srv/app/pkg/__pycache__/x.py")));
        assert!(!p.matches(Path::new("/srv/app/.git/hooks/x.py")));
        // Editors' lock, swap, backup and safe-write files (an Emacs lock
        // reloaded the app before anything was saved).
        for name in [".#web.py", "web.py~", ".web.py.swp", "web.py___jb_tmp___"] {
            assert!(!p.matches(&Path::new("/srv/app").join(name)), "{name}");
        }
    }

    /// The directories the walk visits and the files it finds, relative
    /// to `root`, sorted.
    fn walked(root: &Path, patterns: &Patterns) -> (Vec<String>, Vec<String>) {
        let rel = |p: &Path| p.strip_prefix(root).unwrap().display().to_string();
        let (mut dirs, mut found) = (Vec::new(), Vec::new());
        walk(root, patterns, &mut found, |dir| {
            dirs.push(rel(dir));
            Ok::<bool, ()>(true)
        })
        .unwrap();
        let mut found: Vec<String> = found.iter().map(|p| rel(p)).collect();
        dirs.sort();
        found.sort();
        (dirs, found)
    }

    /// Virtual environments, caches and version control take no watch (a
    /// big `.venv` used to exhaust fs.inotify.max_user_watches), under
    /// whatever name a virtual environment has.
    #[test]
    fn the_walk_leaves_out_environments_caches_and_links() {
        let tmp = crate::testdir::TempDir::new("watch");
        let root = tmp.path();
        for dir in [
            "pkg/sub",
            "pkg/__pycache__",
            ".venv/lib/python3.11/site-packages/flask",
            "env2/lib/python3.11/site-packages",
            "conda/conda-meta",
            "conda/lib",
            "node_modules/x",
            ".git/objects",
            ".mypy_cache/3.11",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in [
            "app.py",
            "pkg/sub/models.py",
            "pkg/__pycache__/models.py",
            "pkg/README.md",
            ".venv/lib/python3.11/site-packages/flask/app.py",
            "env2/pyvenv.cfg",
            "env2/lib/python3.11/site-packages/six.py",
            "conda/lib/x.py",
            "node_modules/x/setup.py",
        ] {
            std::fs::write(root.join(file), "").unwrap();
        }
        std::os::unix::fs::symlink(root.join("pkg"), root.join("pkg/sub/loop")).unwrap();
        let patterns = Patterns::parse(root, "*.py").unwrap();
        let (dirs, found) = walked(root, &patterns);
        assert_eq!(dirs, ["", "pkg", "pkg/sub"]);
        assert_eq!(found, ["app.py", "pkg/sub/models.py"]);
    }

    #[test]
    fn bad_patterns_are_named() {
        let e = Patterns::parse(Path::new("/"), "*.py;[").unwrap_err().to_string();
        assert!(e.contains("--watchfiles") && e.contains('['), "{e}");
        assert!(matches!(Patterns::parse(Path::new("/"), " ; "), Err(WatchError::Empty)));
    }
}
