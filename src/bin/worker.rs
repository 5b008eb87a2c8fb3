//! `zibai-worker`: the only binary that embeds Python. `zibai` starts it,
//! either as a worker under its master (with a control socket) or in its
//! own place for single-process mode. Keeping Python out of the `zibai`
//! binary keeps the master small: it does not even map libpython.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use zibai::config::Cli;
use zibai::master::listeners;
use zibai::master::notify::Announcer;
use zibai::master::spawn::{self, SingleStart, Start};
use zibai::master::supervise::{APP_LOAD_ERROR, WORKER_BOOT_ERROR};
use zibai::worker::{self, Role, WorkerError, control::Control};

/// Exit code of a worker that returned an error (gunicorn's codes, which
/// make the master stop instead of respawning).
fn exit_code(result: Result<i32, WorkerError>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(WorkerError::Load(e)) => {
            log::error!("{e}");
            ExitCode::from(APP_LOAD_ERROR as u8)
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(WORKER_BOOT_ERROR as u8)
        }
    }
}

/// Names the process (`ps`, `top`, and the pidfile's "is it zibai" check).
fn set_name(name: &std::ffi::CStr) {
    // SAFETY: prctl with a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

fn run(cli: Cli, start: Start) -> anyhow::Result<ExitCode> {
    let config = cli.into_config(|k| std::env::var(k).ok())?;
    match start {
        Start::Worker(inherited) => {
            set_name(c"zibai: worker");
            let listeners = inherited
                .listeners
                .iter()
                .map(|&fd| listeners::adopt(fd))
                .collect::<Result<Vec<_>, _>>()?;
            let control = Control {
                sock: UnixStream::from(inherited.control),
                max_requests: inherited.max_requests,
            };
            Ok(exit_code(worker::run(config, listeners, Role::Worker(control))))
        }
        Start::Single(SingleStart {
            listeners: fds,
            ready,
            pidfile,
        }) => {
            set_name(c"zibai");
            let listeners = fds
                .iter()
                .map(|&(fd, owned)| {
                    if owned {
                        listeners::adopt_owned(fd)
                    } else {
                        listeners::adopt(fd)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let code = exit_code(worker::run(config, listeners, Role::Single(Announcer::new(ready))));
            if let Some(path) = pidfile {
                zibai::master::pidfile::remove_if_ours(&path, std::process::id());
            }
            Ok(code)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    zibai::logging::init();
    let result = match spawn::start() {
        None => Err(anyhow::anyhow!("zibai-worker is started by zibai; run `zibai --help`")),
        Some(start) => start.context("bad worker environment").and_then(|s| run(cli, s)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zibai: error: {e:#}");
            ExitCode::from(WORKER_BOOT_ERROR as u8)
        }
    }
}
