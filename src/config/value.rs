//! Values as the file writes them and the error that names what to fix:
//! durations (`"500ms"`, `"1h30m"`), byte counts (`"64MiB"`), and the
//! small checks every section shares. Pure functions.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// A configuration problem, phrased for the user: every message names the
/// key or the line to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {cause}", path.display())]
    Unreadable {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown or missing key.
    #[error("{}{message}", line.map_or(String::new(), |l| format!("line {l}: ")))]
    Syntax {
        line: Option<usize>,
        message: String,
    },
    /// A key has a value kafka-store cannot use.
    #[error("{key}: {why}")]
    Invalid { key: String, why: String },
    /// A problem in a named file.
    #[error("config file {}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<ConfigError>,
    },
}

/// An invalid value of `key`.
pub fn invalid(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        why: why.into(),
    }
}

/// A duration written as `"500ms"`, `"10s"`, `"10m"`, `"1h"`, `"1d"` or a
/// sum such as `"1h30m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

/// A byte count: an integer, or a string such as `"64MiB"`, `"512KiB"`, `"1GiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(Size(n)),
            Either::S(s) => parse_size(&s).map(Size).map_err(de::Error::custom),
        }
    }
}

/// Parses `"500ms"`, `"10s"`, `"1h30m"` …
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (write e.g. \"500ms\", \"10s\", \"5m\", \"1h\")");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86400),
            _ => return Err(bad()),
        };
        total += part;
    }
    Ok(total)
}

/// Parses `"64MiB"`, `"512KiB"`, `"1GiB"`, `"1000"` …
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid size {s:?} (write bytes, or e.g. \"512KiB\", \"64MiB\", \"1GiB\")");
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let mult = match t[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// The value of an optional duration key (or its default), which must not be zero.
pub fn positive(key: &str, v: Option<Dur>, default: &str) -> Result<Duration, ConfigError> {
    nonzero(key, dur(v, default))
}

/// `d`, the value of `key`, unless it is zero.
pub fn nonzero(key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(invalid(key, "must be greater than zero"))
    } else {
        Ok(d)
    }
}

/// The value of an optional duration key, or its default.
pub fn dur(v: Option<Dur>, default: &str) -> Duration {
    v.map_or_else(|| parse_duration(default).expect("valid default"), |d| d.0)
}

/// The value of an optional size key, or its default.
pub fn bytes(v: Option<Size>, default: u64) -> u64 {
    v.map_or(default, |s| s.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("1h30m", Duration::from_secs(5400)),
            ("2d", Duration::from_secs(172_800)),
            ("10s", Duration::from_secs(10)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), want, "{text}");
        }
        for bad in ["", "10", "ms", "1x", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse() {
        for (text, want) in [
            ("64MiB", 64 << 20),
            ("512KiB", 512 << 10),
            ("1000", 1000),
            ("2GB", 2_000_000_000),
        ] {
            assert_eq!(parse_size(text).unwrap(), want, "{text}");
        }
        for bad in ["lots", "", "KiB", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_durations_are_refused_by_key() {
        let e = positive("kafka.retry_timeout", Some(Dur(Duration::ZERO)), "1s").unwrap_err();
        assert_eq!(
            e.to_string(),
            "kafka.retry_timeout: must be greater than zero"
        );
        assert_eq!(positive("k", None, "2s").unwrap(), Duration::from_secs(2));
    }
}
