//! `--daemon`: detach from the terminal (daemonize: fork, setsid, fork,
//! stdio to /dev/null), with one thing daemonize does not do: the process
//! that ran `zibai --daemon` waits until the daemon is ready, so its exit
//! status says whether the server started.

use std::io::Read;
use std::os::fd::OwnedFd;

use daemonize::{Daemonize, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create the readiness pipe: {0}")]
    Pipe(nix::Error),
    #[error("cannot daemonize: {0}")]
    Detach(String),
}

/// In the daemon, returns the write end of the readiness pipe (give it to
/// [`super::notify::Announcer`]). The original process never returns: it
/// exits 0 once the daemon is ready, 1 if the daemon died first.
/// `error_log` is where the daemon's errors go, named if it dies early.
pub fn detach(error_log: Option<&std::path::Path>) -> Result<OwnedFd, DaemonError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(DaemonError::Pipe)?;
    let cwd = std::env::current_dir().map_err(|e| DaemonError::Detach(e.to_string()))?;
    // Keep the operator's umask: daemonize would otherwise impose 027.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    nix::sys::stat::umask(umask);
    let daemon = Daemonize::new().working_directory(cwd).umask(umask.bits());
    match daemon.execute() {
        Outcome::Parent(Err(e)) => Err(DaemonError::Detach(e.to_string())),
        Outcome::Parent(Ok(_)) => {
            drop(write);
            let mut answer = [0u8; 1];
            let ready = matches!(std::fs::File::from(read).read(&mut answer), Ok(1));
            if !ready {
                match error_log {
                    Some(p) => eprintln!("zibai: the daemon exited before it was ready; see {}", p.display()),
                    None => eprintln!(
                        "zibai: the daemon exited before it was ready (its output goes to /dev/null: \
                         run without --daemon, or with --error-log FILE, to see why)"
                    ),
                }
            }
            std::process::exit(if ready { 0 } else { 1 });
        }
        Outcome::Child(Err(e)) => Err(DaemonError::Detach(e.to_string())),
        Outcome::Child(Ok(_)) => {
            drop(read);
            Ok(write)
        }
    }
}
