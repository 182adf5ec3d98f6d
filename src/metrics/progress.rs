//! The progress line: once a minute, one info line with what the run did
//! since the last one (records/s, bytes/s), the total lag, the open files
//! and the halted partitions, whether or not `/metrics` is served.
//!
//! The line is one pure function of two readings; the loop only sleeps and
//! logs. Never touches the pipeline beyond reading its totals.

use std::time::{Duration, Instant};

use super::series::{Metrics, Totals};
use crate::cancel::Cancel;

/// How often the line is logged.
pub const EVERY: Duration = Duration::from_secs(60);

/// Logs the progress line every `EVERY` until `cancel` is set.
pub fn log_progress(metrics: &Metrics, cancel: &Cancel) {
    let mut last = (Instant::now(), metrics.totals());
    while cancel.sleep(EVERY) {
        let now = (Instant::now(), metrics.totals());
        log::info!("{}", line(&last.1, &now.1, now.0 - last.0));
        last = now;
    }
}

/// `progress: R records/s, B/s, lag L records in P partitions, F open files
/// (oldest Ns)[, H halted partitions]`.
pub fn line(before: &Totals, now: &Totals, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    let oldest = now
        .oldest_open
        .map_or(String::new(), |d| format!(" (oldest {}s)", d.as_secs()));
    let halted = match now.halted {
        0 => String::new(),
        1 => ", 1 halted partition".into(),
        n => format!(", {n} halted partitions"),
    };
    format!(
        "progress: {:.0} records/s, {}/s, lag {} records in {} partitions, {} open files{oldest}{halted}",
        rate(before.records, now.records),
        human_bytes(rate(before.bytes, now.bytes)),
        now.lag_records,
        now.partitions,
        now.open_files,
    )
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`, `3.2 GiB`.
fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024.0 {
        return format!("{b:.0} B");
    }
    let mut v = b / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_rates_lag_open_files_and_halts() {
        let before = Totals {
            records: 1000,
            bytes: 1 << 20,
            ..Totals::default()
        };
        let now = Totals {
            records: 7000,
            bytes: 61 << 20,
            lag_records: 42,
            partitions: 3,
            open_files: 2,
            oldest_open: Some(Duration::from_secs(17)),
            ..before
        };
        let table = [
            (
                now,
                "progress: 100 records/s, 1.0 MiB/s, lag 42 records in 3 partitions, 2 open files (oldest 17s)",
            ),
            (
                Totals { halted: 1, ..now },
                "progress: 100 records/s, 1.0 MiB/s, lag 42 records in 3 partitions, 2 open files (oldest 17s), 1 halted partition",
            ),
            (
                Totals {
                    halted: 2,
                    open_files: 0,
                    oldest_open: None,
                    ..before
                },
                "progress: 0 records/s, 0 B/s, lag 0 records in 0 partitions, 0 open files, 2 halted partitions",
            ),
        ];
        for (now, want) in table {
            assert_eq!(line(&before, &now, Duration::from_secs(60)), want);
        }
    }

    #[test]
    fn byte_rates_are_human() {
        let table = [
            (0.0, "0 B"),
            (1023.0, "1023 B"),
            (1536.0, "1.5 KiB"),
            (5.0 * 1048576.0, "5.0 MiB"),
            (3.21 * 1073741824.0, "3.2 GiB"),
        ];
        for (b, want) in table {
            assert_eq!(human_bytes(b), want);
        }
    }
}
