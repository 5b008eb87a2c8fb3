//! `--watchfiles "*.py;.env"` (Zibai's option): replace the workers when a
//! matching file under the current directory changes. Bursts of events (an
//! editor's save, a `git checkout`) are coalesced into one reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("invalid pattern {pattern:?} in --watchfiles: {cause}")]
    Pattern { pattern: String, cause: globset::Error },
    #[error("--watchfiles: no pattern given")]
    Empty,
    #[error("cannot watch {path}: {cause}")]
    Watch { path: String, cause: notify::Error },
}

/// Events closer together than this make one reload.
const COALESCE: Duration = Duration::from_millis(300);

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
        // Bytecode caches and VCS metadata change as a side effect of running.
        if rel
            .components()
            .any(|c| matches!(c.as_os_str().to_str(), Some("__pycache__" | ".git")))
        {
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

/// Watches `root` recursively; on a matching change, logs it and raises
/// SIGHUP in this process, so the master reloads exactly as on `kill -HUP`.
/// Keep the returned watcher alive for as long as watching should go on.
pub fn start(root: &Path, spec: &str) -> Result<RecommendedWatcher, WatchError> {
    let patterns = Patterns::parse(root, spec)?;
    let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
        // Reads are not changes: importing the app opens every module, and
        // counting that would reload forever.
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        // The kernel's queue overflowed: changes were lost, any of them
        // may be ours. Reload rather than miss one.
        Ok(event) if event.need_rescan() => {
            log::warn!("file watcher: events were lost (queue overflow); reloading to be safe");
            let _ = tx.send(PathBuf::from("(lost events)"));
        }
        Ok(event) => {
            for path in event.paths.into_iter().filter(|p| patterns.matches(p)) {
                let _ = tx.send(path);
            }
        }
        Err(e) => log::warn!("file watcher: {e}"),
    })
    .map_err(|cause| WatchError::Watch {
        path: root.display().to_string(),
        cause,
    })?;
    watcher
        .watch(root, RecursiveMode::Recursive)
        .map_err(|cause| WatchError::Watch {
            path: root.display().to_string(),
            cause,
        })?;
    std::thread::Builder::new()
        .name("zibai-watch".into())
        .spawn(move || coalesce(&rx))
        .map_err(|cause| WatchError::Watch {
            path: root.display().to_string(),
            cause: notify::Error::io(cause),
        })?;
    log::info!("Watching {} for changes to {spec}", root.display());
    Ok(watcher)
}

/// One reload per burst: after a change, waits for `COALESCE` of quiet.
fn coalesce(rx: &std::sync::mpsc::Receiver<PathBuf>) {
    while let Ok(first) = rx.recv() {
        let mut count = 1;
        while rx.recv_timeout(COALESCE).is_ok() {
            count += 1;
        }
        log::info!(
            "Watched files changed ({}{}); reloading",
            first.display(),
            if count > 1 {
                format!(" and {} more events", count - 1)
            } else {
                String::new()
            }
        );
        let _ = signal_hook::low_level::raise(libc::SIGHUP);
    }
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

    #[test]
    fn bad_patterns_are_named() {
        let e = Patterns::parse(Path::new("/"), "*.py;[").unwrap_err().to_string();
        assert!(e.contains("--watchfiles") && e.contains('['), "{e}");
        assert!(matches!(Patterns::parse(Path::new("/"), " ; "), Err(WatchError::Empty)));
    }
}
