//! `zibai`: the command line and the master. It binds the listeners, then
//! either supervises `zibai-worker` processes (`-p N`) or, in single-process
//! mode, replaces itself with one. This binary never embeds Python (it does
//! not link libpython at all), which keeps the master small.

use std::process::ExitCode;

use anyhow::Context;

use zibai::config::{Action, Args, CHECK_APP_ENV, Config, RESOLVED_ENV};
use zibai::master::listeners::{self, Listener};
use zibai::master::notify::Announcer;
use zibai::master::pidfile::Pidfile;
use zibai::master::{self, daemon, spawn};

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

/// `--check-config`: imports the app and hooks in a `zibai-worker` (this
/// binary has no Python), handing it the resolved configuration.
fn check_config(config: &Config) -> anyhow::Result<ExitCode> {
    let exe = spawn::sibling("zibai-worker")?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.env(RESOLVED_ENV, config.to_toml())
        .env(CHECK_APP_ENV, "1")
        .envs(config.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &config.chdir {
        cmd.current_dir(dir);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run the worker binary {}", exe.display()))?;
    // What the app printed while importing.
    std::io::Write::write_all(&mut std::io::stderr(), &out.stdout)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        eprint!("{stderr}");
        println!("config OK, app {} loaded", config.app);
        return Ok(ExitCode::SUCCESS);
    }
    let why = match out.status.code() {
        Some(code) if code == master::supervise::APP_LOAD_ERROR => "cannot be loaded".to_string(),
        _ => format!("could not be checked ({})", out.status),
    };
    anyhow::bail!("app {} {why}:\n{}", config.app, stderr.trim_end())
}

fn run() -> anyhow::Result<ExitCode> {
    // Parse first: `--help` and `--version` need no logger.
    let args = Args::parse();
    zibai::logging::init();
    let config = args.resolve()?;
    zibai::logging::set_level(config.log_level);
    // The globs are checked here, before anything is bound or detached
    // (and by --check-config), not when the watcher starts.
    if let Some(spec) = &config.watchfiles {
        master::watch::Patterns::parse(std::path::Path::new("/"), spec)?;
    }
    match args.action() {
        Action::PrintConfig => {
            print!("{}", config.to_toml());
            return Ok(ExitCode::SUCCESS);
        }
        Action::CheckConfig => return check_config(&config),
        Action::Serve => {}
    }
    if let Some(mask) = config.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    master::upgrade::remember_start_dir();
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir).with_context(|| format!("--chdir {}", dir.display()))?;
    }
    let upgrade = master::upgrade::inherited();
    let listeners = match (&upgrade, systemd_listeners()?) {
        (Some(inherited), _) => inherited
            .fds
            .iter()
            .map(|&(fd, owned)| {
                listeners::adopt(fd).map(|mut l| {
                    l.file_after_takeover = owned;
                    l
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .context("a socket handed over by the old master")?,
        (None, Some(l)) => l,
        (None, None) => listeners::bind_all(
            &config.listen,
            listeners::BindOptions {
                backlog: config.backlog,
                dualstack: config.dualstack_ipv6,
                perms: config.unix_socket_perms,
                reuse_port: config.reuse_port,
                owner: config.socket_owner(),
            },
        )?,
    };
    // Bound first, so a port in use is reported on the terminal; the
    // pidfile is tried first too (the daemon's own pid is written after).
    if config.daemon
        && let (Some(path), None) = (&config.pidfile, &upgrade)
    {
        Pidfile::create(path, std::process::id())?.0.remove();
    }
    // A new master from USR2 stays the old one's child (which is the
    // daemon already): detached again, it would look to the upgrade like a
    // master that exited at once, on both sides.
    let ready_pipe = if config.daemon && upgrade.is_none() {
        zibai::logging::check_files(&[&config.error_log, &config.access_log_file])?;
        if matches!(config.error_log, zibai::logging::Destination::Stderr) {
            eprintln!("zibai: warning: --daemon without --error-log: the log goes nowhere once detached");
        }
        let error_log = match &config.error_log {
            zibai::logging::Destination::File(p) => Some(p.as_path()),
            zibai::logging::Destination::Stderr => None,
        };
        Some(daemon::detach(error_log)?)
    } else {
        None
    };
    // After detaching: a daemon's stderr is /dev/null, its logs go to files.
    zibai::logging::open(
        config.error_log.clone(),
        config.access_log_file.clone(),
        config.worker_owner(),
    )?;
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
    if config.subprocess == 0 {
        // The worker binary takes this process over (same pid: the pidfile,
        // systemd and the daemon's parent see no difference) and removes the
        // pidfile at exit.
        let err = spawn::exec_single(
            &listeners,
            ready_pipe.as_ref(),
            pidfile.as_ref().map(Pidfile::path),
            &config,
        );
        if let Some(p) = pidfile {
            p.remove();
        }
        return Err(err.into());
    }
    let announcer = Announcer::new(ready_pipe);
    let listen_change = upgrade.as_ref().and_then(|u| u.listen_change(&config.listen));
    let mut master = master::Master::new(config, listeners, announcer, pidfile)?;
    if let Some(inherited) = upgrade {
        log::info!("Started by master {} (binary upgrade)", inherited.from);
        if let Some(warning) = listen_change {
            log::warn!("{warning}");
        }
        master = master.upgraded_from(inherited.from);
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
