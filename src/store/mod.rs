//! The archive stores: where finished archive files become objects.
//!
//! - `object`: the `Store` trait, object metadata, put outcomes, errors.
//! - `file`: `file://DIR`, a local or mounted directory.
//! - `gcs`: `gs://BUCKET/PREFIX`, Google Cloud Storage.
//! - `http`: what HTTP stores share (agent, retry policy, back-off).
//!
//! A leaf: each store takes its own options and the stop flag; none knows
//! about Kafka, the spool or the configuration file.

use std::fmt;
use std::path::PathBuf;

use crate::cancel::Cancel;

pub mod file;
pub mod gcs;
pub mod http;
mod object;

pub use object::{ObjectInfo, PutOutcome, Store, StoreError, Upload};

/// A store location, as `store.url` (or `--store`) names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file://DIR`: a local or mounted directory.
    File(PathBuf),
    /// `gs://BUCKET/PREFIX`: Google Cloud Storage; the prefix may be empty.
    Gcs { bucket: String, prefix: String },
}

/// A URL that names no store, with why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("store url {url:?} {why}")]
pub struct BadStoreUrl {
    pub url: String,
    pub why: String,
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<Self, BadStoreUrl> {
        let bad = |why: String| BadStoreUrl {
            url: url.to_string(),
            why,
        };
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad("names no directory".into()));
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=222).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
                })
                && bucket.as_bytes()[0].is_ascii_alphanumeric();
            if !bucket_ok {
                return Err(bad(format!(
                    "has {bucket:?}, which is not a valid bucket name (lowercase letters, digits, '-', '_', '.')"
                )));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
                return Err(bad("has a prefix that is not a plain path".into()));
            }
            return Ok(StoreUrl::Gcs {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        Err(bad(
            "is not a store url (expected file:///path/to/dir or gs://bucket/prefix)".into(),
        ))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::File(p) => write!(f, "file://{}", p.display()),
            StoreUrl::Gcs { bucket, prefix } if prefix.is_empty() => write!(f, "gs://{bucket}"),
            StoreUrl::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
        }
    }
}

/// Opens the store a URL names, checking that it can be used. `cancel`
/// ends the store's waits and retries early.
pub fn open(
    url: &StoreUrl,
    gcs: &gcs::GcsOptions,
    cancel: &Cancel,
) -> Result<Box<dyn Store>, StoreError> {
    match url {
        StoreUrl::File(dir) => Ok(Box::new(file::FileStore::open(dir)?)),
        StoreUrl::Gcs { bucket, prefix } => Ok(Box::new(gcs::GcsStore::open(
            bucket,
            prefix,
            gcs,
            cancel.clone(),
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_or_say_why_not() {
        assert_eq!(
            StoreUrl::parse("gs://my-bucket/archive/kafka/").unwrap(),
            StoreUrl::Gcs {
                bucket: "my-bucket".into(),
                prefix: "archive/kafka".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("file:///var/a").unwrap(),
            StoreUrl::File("/var/a".into())
        );
        let bare = StoreUrl::parse("gs://my-bucket").unwrap();
        assert_eq!(bare.to_string(), "gs://my-bucket");
        for (bad, why) in [
            ("gs://x", "not a valid bucket name"),
            ("gs://Bad_Bucket/a", "not a valid bucket name"),
            ("gs://bucket/../up", "not a plain path"),
            ("file://", "names no directory"),
            ("s4://b", "is not a store url"),
        ] {
            let e = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
