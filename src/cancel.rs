//! The side of the one stop flag that waits watch. `pipeline::stop` owns the
//! flag and sets it (a signal, a fatal error, a panicking thread); the Kafka
//! client and the stores receive a `Cancel` and look at it in every wait and
//! retry loop, so that a stop is honoured within a fraction of a second even
//! while a service is failing. The MySQL index has no loop of its own: the
//! committer retries it between its own checks of the flag, and one MySQL
//! call is bounded by `mysql.connect_timeout` and `mysql.request_timeout`.
//!
//! Only a flag and a sliced sleep: it decides nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a sleep looks at the flag.
const SLICE: Duration = Duration::from_millis(50);

/// How far a stop has gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    /// SIGTERM/SIGINT: new work stops; what finishes the run (the last
    /// offset commit) may still complete.
    Drain,
    /// A fatal error or a panic: every loop gives up now.
    Abort,
}

#[derive(Debug, Default)]
struct Flag {
    /// Set by a signal handler (signal-hook stores `true` here).
    drain: Arc<AtomicBool>,
    abort: AtomicBool,
}

/// A view of the stop flag; clones share the flag.
#[derive(Clone, Debug)]
pub struct Cancel {
    flag: Arc<Flag>,
    /// The level at which this view reports the flag as set.
    from: Level,
}

impl Default for Cancel {
    /// A flag nobody has set yet, seen at every level.
    fn default() -> Self {
        Cancel {
            flag: Arc::default(),
            from: Level::Drain,
        }
    }
}

impl Cancel {
    /// True once the stop has reached this view's level.
    pub fn is_set(&self) -> bool {
        self.flag.abort.load(Ordering::Relaxed)
            || (self.from == Level::Drain && self.flag.drain.load(Ordering::Relaxed))
    }

    /// The same flag, seen only when the stop is an abort: for the work that
    /// finishes a drain (the committer's last commit).
    pub fn aborts_only(&self) -> Cancel {
        Cancel {
            flag: self.flag.clone(),
            from: Level::Abort,
        }
    }

    /// The atomic a signal handler sets to start a drain.
    pub fn drain_flag(&self) -> Arc<AtomicBool> {
        self.flag.drain.clone()
    }

    /// Starts a drain.
    pub fn drain(&self) {
        self.flag.drain.store(true, Ordering::Relaxed);
    }

    /// Aborts: every view reports the flag as set.
    pub fn abort(&self) {
        self.flag.abort.store(true, Ordering::Relaxed);
    }

    /// Sleeps for `d` in short slices; false if the flag was set meanwhile.
    pub fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.is_set() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(SLICE));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleep_ends_early_when_the_flag_is_set() {
        let c = Cancel::default();
        assert!(c.sleep(Duration::from_millis(10)));
        let d = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            d.drain_flag().store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        assert!(!c.sleep(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }

    #[test]
    fn a_drain_is_seen_by_drain_views_and_an_abort_by_all() {
        let c = Cancel::default();
        let last_commit = c.aborts_only();
        c.drain();
        assert!(c.is_set());
        assert!(!last_commit.is_set());
        c.abort();
        assert!(last_commit.is_set());
        assert!(last_commit.aborts_only().is_set());
    }
}
