//! Role dispatch. Today: single-process mode, where the worker runs in the
//! main process on the listeners the master code bound.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use zibai::config::Cli;
use zibai::master::listeners;
use zibai::worker::{self, WorkerError};

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

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging();
    let config = cli.into_config(|k| std::env::var(k).ok())?;
    let listeners = listeners::bind_all(
        &config.listen,
        config.backlog,
        config.dualstack_ipv6,
        config.unix_socket_perms,
    )?;
    match worker::run(config, listeners, false) {
        Ok(code) => Ok(ExitCode::from(code as u8)),
        // gunicorn's APP_LOAD_ERROR: the app itself could not be loaded.
        Err(WorkerError::Load(e)) => {
            log::error!("{e}");
            Ok(ExitCode::from(4))
        }
        Err(e) => Err(e).context("worker failed"),
    }
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
