//! Role dispatch: a worker started by a master, the master itself (`-p N`),
//! or single-process mode, where the worker runs in the main process on the
//! listeners the master code bound.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use zibai::config::{Cli, Config};
use zibai::master::listeners::{self, Listener};
use zibai::master::notify::Announcer;
use zibai::master::pidfile::Pidfile;
use zibai::master::supervise::{APP_LOAD_ERROR, WORKER_BOOT_ERROR};
use zibai::master::{self, daemon, spawn};
use zibai::worker::{self, Role, WorkerError, control::Control};

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("ZIBAI_LOG", "info"))
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
        .init();
}

fn config(cli: Cli) -> anyhow::Result<Config> {
    Ok(cli.into_config(|k| std::env::var(k).ok())?)
}

/// Exit code of a worker that returned an error (gunicorn's codes, which
/// make the master stop instead of respawning).
fn worker_exit(result: Result<i32, WorkerError>) -> ExitCode {
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

fn run_worker(cli: Cli, inherited: std::io::Result<spawn::Inherited>) -> anyhow::Result<ExitCode> {
    let inherited = inherited.context("bad worker environment")?;
    // `ps` and `top` show "zibai: worker" rather than "exe" (we exec
    // /proc/self/exe); PR_SET_NAME sets the process name from the main thread.
    // SAFETY: prctl with a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"zibai: worker".as_ptr()) };
    let config = config(cli)?;
    let listeners = inherited
        .listeners
        .iter()
        .map(|&fd| listeners::adopt(fd))
        .collect::<Result<Vec<_>, _>>()?;
    let control = Control {
        sock: UnixStream::from(inherited.control),
        max_requests: inherited.max_requests,
    };
    Ok(worker_exit(worker::run(config, listeners, Role::Worker(control))))
}

/// Sockets handed over by systemd (socket activation), if any are ours.
fn systemd_listeners() -> anyhow::Result<Option<Vec<Listener>>> {
    let fds: Vec<i32> = sd_notify::listen_fds().context("LISTEN_FDS")?.collect();
    // SAFETY: main runs this before any other thread exists.
    unsafe {
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if fds.is_empty() {
        return Ok(None);
    }
    let listeners = fds
        .into_iter()
        .map(listeners::adopt)
        .collect::<Result<Vec<_>, _>>()
        .context("a socket passed by systemd (LISTEN_FDS)")?;
    log::info!(
        "Using {} sockets passed by systemd (--listen is ignored)",
        listeners.len()
    );
    Ok(Some(listeners))
}

fn run() -> anyhow::Result<ExitCode> {
    // Parse first: `--help` and `--version` need no logger.
    let cli = Cli::parse();
    init_logging();
    if let Some(inherited) = spawn::inherited() {
        return run_worker(cli, inherited);
    }
    let config = config(cli)?;
    let upgrade = master::upgrade::inherited();
    let listeners = match (&upgrade, systemd_listeners()?) {
        (Some((fds, _)), _) => fds
            .iter()
            .map(|&fd| listeners::adopt(fd))
            .collect::<Result<Vec<_>, _>>()
            .context("a socket handed over by the old master")?,
        (None, Some(l)) => l,
        (None, None) => listeners::bind_all(
            &config.listen,
            config.backlog,
            config.dualstack_ipv6,
            config.unix_socket_perms,
        )?,
    };
    // Bound first, so a port in use is reported on the terminal; the
    // pidfile is tried first too (the daemon's own pid is written after).
    if config.daemon
        && let (Some(path), None) = (&config.pidfile, &upgrade)
    {
        Pidfile::create(path, std::process::id())?.0.remove();
    }
    let ready_pipe = if config.daemon { Some(daemon::detach()?) } else { None };
    let pidfile = match &config.pidfile {
        Some(path) => {
            // A new master writes PIDFILE.2 while the old one still runs.
            let path = match upgrade {
                Some(_) => master::upgrade::upgrade_pidfile(path),
                None => path.clone(),
            };
            let (pidfile, note) = Pidfile::create(&path, std::process::id())?;
            if let Some(note) = note {
                log::warn!("{note}");
            }
            Some(pidfile)
        }
        None => None,
    };
    let announcer = Announcer::new(ready_pipe);
    if config.subprocess == 0 {
        let code = worker_exit(worker::run(config, listeners, Role::Single(announcer)));
        if let Some(p) = pidfile {
            p.remove();
        }
        return Ok(code);
    }
    let mut master = master::Master::new(config, listeners, announcer, pidfile)?;
    if let Some((_, old)) = upgrade {
        log::info!("Started by master {old} (binary upgrade)");
        master = master.upgraded_from(old);
    }
    let code = master.run()?;
    Ok(ExitCode::from(code as u8))
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zibai: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
