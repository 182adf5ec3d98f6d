//! A fetched access token and when it is due for refresh: the cap on the
//! lifetime a server claims, and the refresh margin (five minutes, or a
//! quarter of the lifetime if that is smaller).
//!
//! Never shows the token's value: `Token` has no `Debug`, and nothing here
//! logs or formats it. Knows nothing of where tokens come from.

use std::time::{Duration, Instant};

/// A token is refreshed when less than this remains (or a quarter of its
/// lifetime, if that is smaller).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Longest lifetime we believe a server about (keeps `Instant` arithmetic safe).
pub(super) const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A cached access token.
pub(super) struct Token {
    pub(super) value: String,
    expires_at: Instant,
    /// Refresh when less than this remains.
    margin: Duration,
}

impl Token {
    pub(super) fn new(value: String, fetched_at: Instant, lifetime: Duration) -> Token {
        let lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
        Token {
            value,
            expires_at: fetched_at + lifetime,
            margin: refresh_margin(lifetime),
        }
    }

    pub(super) fn is_fresh_at(&self, now: Instant) -> bool {
        self.expires_at.saturating_duration_since(now) > self.margin
    }
}

/// Five minutes, or a quarter of the lifetime if that is smaller.
fn refresh_margin(lifetime: Duration) -> Duration {
    MAX_REFRESH_MARGIN.min(lifetime / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_margin_is_five_minutes_or_a_quarter_of_the_lifetime() {
        let secs = Duration::from_secs;
        assert_eq!(refresh_margin(secs(3600)), secs(300));
        assert_eq!(refresh_margin(secs(1200)), secs(300));
        assert_eq!(refresh_margin(secs(600)), secs(150));
        assert_eq!(refresh_margin(secs(10)), Duration::from_millis(2500));
        assert_eq!(refresh_margin(secs(0)), secs(0));
        // A token without lifetime is never served from the cache.
        let now = Instant::now();
        assert!(!Token::new("t".into(), now, secs(0)).is_fresh_at(now));
        // Absurd lifetimes are capped instead of overflowing.
        let token = Token::new("t".into(), now, secs(u64::MAX / 2));
        assert!(token.is_fresh_at(now + secs(23 * 3600)));
        assert!(!token.is_fresh_at(now + secs(24 * 3600)));
    }
}
