//! The shutdown request: set by SIGTERM/SIGINT, read by every loop that
//! waits or retries, so that a stop is honoured within about a second even
//! while Kafka or the store is failing. Only a flag; it decides nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a sleep looks at its stop condition.
const SLICE: Duration = Duration::from_millis(50);

/// Sleeps for `d` in short slices until `stop()` says so; false if it did.
pub fn sleep_unless(d: Duration, stop: impl Fn() -> bool) -> bool {
    let end = Instant::now() + d;
    while !stop() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(SLICE));
    }
    false
}

/// A shared "stop was asked for" flag; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// The flag behind it, for a signal handler to set.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sleeps for `d`; false if interrupted meanwhile.
    pub fn sleep(&self, d: Duration) -> bool {
        sleep_unless(d, || self.is_set())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleep_ends_early_when_interrupted() {
        let i = Interrupt::default();
        assert!(i.sleep(Duration::from_millis(10)));
        let j = i.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            j.flag().store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        assert!(!i.sleep(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }
}
