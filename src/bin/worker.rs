//! `zibai-worker`: the only binary that embeds Python. `zibai` starts it,
//! either as a worker under its master (with a control socket) or in its
//! own place for single-process mode. Keeping Python out of the `zibai`
//! binary keeps the master small: it does not even map libpython.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use anyhow::Context;
use pyo3::prelude::*;

use zibai::config::{CHECK_APP_ENV, Config, RESOLVED_ENV};
use zibai::master::listeners;
use zibai::master::notify::Announcer;
use zibai::master::spawn::{self, SingleStart, Start};
use zibai::master::supervise::{APP_LOAD_ERROR, WORKER_BOOT_ERROR};
use zibai::worker::{self, Role, WorkerError, control::Control, python};

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

/// Asks the kernel again for SIGTERM when the master dies: the master set
/// it before exec, and switching user or group (--user, --group) clears it,
/// which left a worker still importing the app (it reads its control
/// socket, whose end would also tell, only once booted) running after a
/// master killed with SIGKILL, holding the listening sockets.
fn die_with(master: nix::unistd::Pid) -> anyhow::Result<()> {
    // SAFETY: prctl with an integer signal number; no pointers.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } == -1 {
        return Err(std::io::Error::last_os_error()).context("PR_SET_PDEATHSIG");
    }
    // It may have died before the request took effect.
    if nix::unistd::getppid() != master {
        anyhow::bail!("the master exited while this worker started");
    }
    Ok(())
}

fn run(config: Config, start: Start, parent: nix::unistd::Pid) -> anyhow::Result<ExitCode> {
    match start {
        Start::Worker(inherited) => {
            set_name(c"zibai: worker");
            die_with(parent)?;
            let listeners = inherited
                .listeners
                .iter()
                .map(|&fd| listeners::adopt(fd))
                .collect::<Result<Vec<_>, _>>()?;
            let control = Control {
                sock: UnixStream::from(inherited.control),
                max_requests: inherited.max_requests,
                balance: inherited.balance,
                heartbeat: worker::control::heartbeat_for(config.timeout),
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

/// Logs to their files (opened while still privileged), then the user.
fn prepare(config: &Config) -> anyhow::Result<()> {
    zibai::logging::set_level(config.log_level);
    zibai::logging::open(
        config.error_log.clone(),
        config.access_log_file.clone(),
        config.worker_owner(),
    )?;
    if config.capture_output {
        zibai::logging::capture_output();
    }
    worker::privileges::drop_to(config.user.as_ref(), config.group.as_ref())?;
    Ok(())
}

/// `zibai --check-config`: loads the app and hooks as a worker would, then
/// exits 0, or 4 with the reason on stderr.
fn check_app(config: &Config) -> ExitCode {
    // As the workers will: importing as root instead made what the app
    // creates at import (a log file, a cache) root's, which the workers
    // then could not open, and hid files they cannot read.
    if let Some(mask) = config.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let (uid, gid) = (nix::unistd::Uid::effective(), nix::unistd::Gid::effective());
    let elsewhere = config.user.as_ref().is_some_and(|u| u.uid != uid.as_raw())
        || config.group.as_ref().is_some_and(|g| g.gid != gid.as_raw());
    if elsewhere && !uid.is_root() {
        // Checking a production file as someone else: the import is still
        // worth checking, as the one running it.
        eprintln!("zibai: note: not root, so the app is imported as uid {uid} rather than as --user/--group");
    } else if let Err(e) = worker::privileges::drop_to(config.user.as_ref(), config.group.as_ref()) {
        eprintln!("{e}");
        return ExitCode::from(WORKER_BOOT_ERROR as u8);
    }
    let loaded = python::initialize(config).and_then(|()| Python::attach(|py| python::load_all(py, config).map(drop)));
    match loaded {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(APP_LOAD_ERROR as u8)
        }
    }
}

fn main() -> ExitCode {
    // The master's resolved configuration, read and removed before any
    // thread exists (the app must not see it). `zibai` always passes it.
    let resolved = std::env::var(RESOLVED_ENV).ok();
    // The master, for a worker (read before anything else can take time).
    let parent = nix::unistd::getppid();
    let check = std::env::var_os(CHECK_APP_ENV).is_some();
    // SAFETY: no other thread exists yet, so nothing reads the environment
    // concurrently.
    unsafe {
        std::env::remove_var(RESOLVED_ENV);
        std::env::remove_var(CHECK_APP_ENV);
    }
    zibai::logging::init();
    let result = match resolved.as_deref().map(Config::from_resolved) {
        None => Err(anyhow::anyhow!("zibai-worker is started by zibai; run `zibai --help`")),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(config)) if check => return check_app(&config),
        Some(Ok(config)) => prepare(&config).map(|()| config),
    };
    let result = match result {
        Err(e) => Err(e),
        Ok(config) => match spawn::start() {
            None => Err(anyhow::anyhow!("zibai-worker is started by zibai; run `zibai --help`")),
            Some(start) => start
                .context("bad worker environment")
                .and_then(|s| run(config, s, parent)),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zibai: error: {e:#}");
            ExitCode::from(WORKER_BOOT_ERROR as u8)
        }
    }
}
