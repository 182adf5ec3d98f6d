//! Which GCS failures are worth another attempt, and how long to wait.
//!
//! One pure function decides (408, 429, 5xx and transport failures retry;
//! other 4xx are final), and a back-off with full jitter paces attempts
//! within a deadline. No I/O here besides reading the clock for the seed.

use std::time::Duration;

/// What went wrong with one HTTP exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with this status.
    Status(u16),
    /// The exchange did not complete.
    Transport(Transport),
}

/// Transport failures, as far as they matter for retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A phase timed out (connect, send, receive).
    Timeout,
    /// Refused, reset or closed mid-exchange.
    Connection,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake or certificate check failed (a configuration problem).
    Tls,
    /// Anything else (malformed response, proxy refusing, ...).
    Other,
}

/// Should the exchange be tried again?
pub fn retriable(f: Failure) -> bool {
    match f {
        Failure::Status(s) => s == 408 || s == 429 || (500..=599).contains(&s),
        Failure::Transport(Transport::Tls) => false,
        Failure::Transport(_) => true,
    }
}

/// Exponential back-off with full jitter: the n-th wait is uniform in
/// `[0, min(max, base · 2ⁿ)]` (so many clients do not retry in step).
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    state: u64,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        Backoff::with_seed(base, max, seed)
    }

    pub fn with_seed(base: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
            state: seed | 1,
        }
    }

    /// The cap of the next wait (before jitter).
    fn cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.cap();
        self.attempt += 1;
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let fraction = (r >> 11) as f64 / (1u64 << 53) as f64;
        cap.mul_f64(fraction)
    }

    /// Start over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_and_transport_failures_are_classified() {
        let table = [
            (Failure::Status(408), true),
            (Failure::Status(429), true),
            (Failure::Status(500), true),
            (Failure::Status(502), true),
            (Failure::Status(503), true),
            (Failure::Status(504), true),
            (Failure::Status(400), false),
            (Failure::Status(401), false),
            (Failure::Status(403), false),
            (Failure::Status(404), false),
            (Failure::Status(409), false),
            (Failure::Status(410), false),
            (Failure::Status(412), false),
            (Failure::Transport(Transport::Timeout), true),
            (Failure::Transport(Transport::Connection), true),
            (Failure::Transport(Transport::Dns), true),
            (Failure::Transport(Transport::Other), true),
            (Failure::Transport(Transport::Tls), false),
        ];
        for (f, want) in table {
            assert_eq!(retriable(f), want, "{f:?}");
        }
    }

    #[test]
    fn waits_grow_to_the_cap_with_jitter_below_it() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut b = Backoff::with_seed(base, max, 7);
        let mut caps = Vec::new();
        for _ in 0..8 {
            caps.push(b.cap());
            let d = b.next_delay();
            assert!(d <= *caps.last().unwrap());
        }
        assert_eq!(caps[0], base);
        assert_eq!(caps[1], base * 2);
        assert_eq!(caps[4], Duration::from_millis(1600));
        assert_eq!(caps[5], max);
        assert_eq!(caps[7], max);
        b.reset();
        assert_eq!(b.cap(), base);
        // Jitter spreads the waits.
        let waits: Vec<_> = (0..20)
            .map(|_| Backoff::with_seed(max, max, rand_seed()).next_delay())
            .collect();
        assert!(waits.iter().any(|w| *w != waits[0]));
    }

    fn rand_seed() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(1);
        N.fetch_add(0x9E37_79B9, Ordering::Relaxed)
    }
}
