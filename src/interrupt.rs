//! The shutdown request: set by SIGTERM/SIGINT, read by every loop that
//! waits or retries, so that a stop is honoured within about a second even
//! while Kafka or the store is failing. Only a flag; it decides nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Sleeps for `d` in short slices; false if interrupted meanwhile.
    pub fn sleep(&self, d: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + d;
        loop {
            if self.is_set() {
                return false;
            }
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_sleep_ends_early_when_interrupted() {
        let i = Interrupt::default();
        assert!(i.sleep(Duration::from_millis(10)));
        let j = i.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            j.set();
        });
        let started = Instant::now();
        assert!(!i.sleep(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }
}
