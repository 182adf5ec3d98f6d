//! A small logger for the `log` facade: one line per event on stderr,
//! `2026-11-25T18:07:23.123Z INFO message`, level from `--log-level` or
//! `KAFKA_STORE_LOG`. Init scripts capture stderr; no files, no rotation.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level && metadata.target().starts_with("kafka_store")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let line = format!(
            "{} {level} {}\n",
            timestamp(SystemTime::now()),
            record.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger; `level` is error|warn|info|debug|trace.
pub fn init(level: &str) -> Result<(), String> {
    let level: LevelFilter = level.parse().map_err(|_| {
        format!("invalid log level {level:?} (use error, warn, info, debug or trace)")
    })?;
    log::set_boxed_logger(Box::new(StderrLogger { level })).map_err(|e| e.to_string())?;
    log::set_max_level(level);
    Ok(())
}

/// RFC 3339 UTC with milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    crate::format::timestamp::format_millis(d.as_millis() as i64)
}
