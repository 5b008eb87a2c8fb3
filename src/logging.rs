//! Log output: one line per record, written whole, with time, pid and level.

use std::io::Write;

/// Sets up `log` for the process; verbosity from `ZIBAI_LOG` (default info).
pub fn init() {
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
