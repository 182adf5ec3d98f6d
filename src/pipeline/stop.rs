//! The one stop flag of a run. A signal starts a drain (the handler sets
//! the flag that `Cancel::drain_flag` hands out); a fatal error or a
//! panicking thread aborts, and the first such error is kept for the exit.
//! Every thread of the pipeline and every retry loop of the Kafka client,
//! the stores and the index watch this one flag (through `Cancel` views).
//!
//! Owns only the flag, the failure and the stop-aware channel helpers; it
//! decides nothing about the data.

use std::sync::Mutex;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use crate::cancel::Cancel;

/// How often a blocked send or receive looks at the flag.
pub const POLL: Duration = Duration::from_millis(100);

/// The stop flag and the error that set it, if any.
pub struct Stop {
    cancel: Cancel,
    failure: Mutex<Option<anyhow::Error>>,
}

impl Stop {
    /// A stop over `cancel`, whose drain flag the signal handlers set.
    pub fn new(cancel: Cancel) -> Self {
        Stop {
            cancel,
            failure: Mutex::new(None),
        }
    }

    /// The flag as the loops of a stage watch it: set by a drain or an abort.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// Whether the run is stopping (drain or abort).
    pub fn requested(&self) -> bool {
        self.cancel.is_set()
    }

    /// Whether the run is aborting (a fatal error or a panic).
    pub fn aborted(&self) -> bool {
        self.cancel.aborts_only().is_set()
    }

    /// Stops the run with an error; the first one is the run's outcome.
    pub fn fail(&self, e: anyhow::Error) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            log::error!("{e:#}");
            *failure = Some(e);
        }
        self.cancel.abort();
    }

    /// The error that stopped the run, if one did.
    pub fn take_failure(&self) -> Option<anyhow::Error> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Sleeps unless stopping; false when the stop came first.
    pub fn sleep(&self, d: Duration) -> bool {
        self.cancel.sleep(d)
    }

    /// Sends unless stopping; false when the message was not sent.
    pub fn send<T>(&self, tx: &Sender<T>, mut msg: T) -> bool {
        loop {
            match tx.send_timeout(msg, POLL) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(m)) => {
                    if self.requested() {
                        return false;
                    }
                    msg = m;
                }
                Err(SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }

    /// Receives unless stopping; None when stopping or the channel is closed.
    pub fn recv<T>(&self, rx: &Receiver<T>) -> Option<T> {
        loop {
            if self.requested() {
                return None;
            }
            match rx.recv_timeout(POLL) {
                Ok(m) => return Some(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_aborts_every_view_of_the_flag_and_the_first_is_kept() {
        let cancel = Cancel::default();
        let last_commit = cancel.aborts_only();
        let stop = Stop::new(cancel.clone());
        assert!(!stop.requested());
        stop.fail(anyhow::anyhow!("first"));
        stop.fail(anyhow::anyhow!("second"));
        assert!(cancel.is_set() && last_commit.is_set() && stop.aborted());
        assert_eq!(stop.take_failure().unwrap().to_string(), "first");
    }

    #[test]
    fn a_drain_stops_the_stages_but_not_the_last_commit() {
        let cancel = Cancel::default();
        let stop = Stop::new(cancel.clone());
        cancel.drain();
        assert!(stop.requested());
        assert!(!stop.aborted());
        assert!(!stop.cancel().aborts_only().is_set());
        let (tx, rx) = crossbeam_channel::bounded::<u8>(0);
        assert!(!stop.send(&tx, 1), "a full channel does not hold a stop up");
        assert_eq!(stop.recv(&rx), None);
    }
}
