//! Store URLs (`file://DIR`, `gs://BUCKET/PREFIX`, `s3://BUCKET/PREFIX`):
//! parsed with the reason a URL names no store, and shown back the same
//! way everywhere (logs, index rows, metadata).
//!
//! Pure: never touches a store or the file system.

use std::fmt;
use std::path::PathBuf;

/// A store location, as `store.url` (or `--store`) names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file://DIR`: a local or mounted directory.
    File(PathBuf),
    /// `gs://BUCKET/PREFIX`: Google Cloud Storage; the prefix may be empty.
    Gcs { bucket: String, prefix: String },
    /// `s3://BUCKET/PREFIX`: S3 or an S3-compatible store; the prefix may be empty.
    S3 { bucket: String, prefix: String },
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
        for (scheme, valid) in [
            ("gs://", gcs_bucket_ok as fn(&str) -> bool),
            ("s3://", s3_bucket_ok),
        ] {
            let Some(rest) = url.strip_prefix(scheme) else {
                continue;
            };
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !valid(bucket) {
                return Err(bad(format!(
                    "has {bucket:?}, which is not a valid bucket name (lowercase letters, digits, '-', '.'{})",
                    if scheme == "gs://" { ", '_'" } else { "" }
                )));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
                return Err(bad("has a prefix that is not a plain path".into()));
            }
            let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
            return Ok(if scheme == "gs://" {
                StoreUrl::Gcs { bucket, prefix }
            } else {
                StoreUrl::S3 { bucket, prefix }
            });
        }
        Err(bad(
            "is not a store url (expected file:///path/to/dir, gs://bucket/prefix or s3://bucket/prefix)".into(),
        ))
    }
}

/// GCS bucket names: 3 to 222 of lowercase letters, digits, `-_.`.
fn gcs_bucket_ok(bucket: &str) -> bool {
    (3..=222).contains(&bucket.len())
        && bucket.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
}

/// S3 bucket names: 3 to 63 of lowercase letters, digits, `-.`, starting
/// and ending with a letter or digit.
fn s3_bucket_ok(bucket: &str) -> bool {
    let b = bucket.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !bucket.contains("..")
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::File(p) => write!(f, "file://{}", p.display()),
            StoreUrl::Gcs { bucket, prefix } if prefix.is_empty() => write!(f, "gs://{bucket}"),
            StoreUrl::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
            StoreUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
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
        for (url, bucket, prefix, shown) in [
            (
                "s3://my-bucket/archive/kafka/",
                "my-bucket",
                "archive/kafka",
                "s3://my-bucket/archive/kafka",
            ),
            ("s3://my.bucket", "my.bucket", "", "s3://my.bucket"),
            ("s3://b-1/", "b-1", "", "s3://b-1"),
        ] {
            let parsed = StoreUrl::parse(url).unwrap();
            assert_eq!(
                parsed,
                StoreUrl::S3 {
                    bucket: bucket.into(),
                    prefix: prefix.into()
                },
                "{url}"
            );
            assert_eq!(parsed.to_string(), shown);
        }
        let bare = StoreUrl::parse("gs://my-bucket").unwrap();
        assert_eq!(bare.to_string(), "gs://my-bucket");
        for (bad, why) in [
            ("gs://x", "not a valid bucket name"),
            ("gs://Bad_Bucket/a", "not a valid bucket name"),
            ("gs://bucket/../up", "not a plain path"),
            ("file://", "names no directory"),
            ("s4://b", "is not a store url"),
            ("s3://ab", "not a valid bucket name"),
            ("s3://under_score", "not a valid bucket name"),
            ("s3://ends-with-", "not a valid bucket name"),
            ("s3://a..b", "not a valid bucket name"),
            ("s3://bucket/a//b", "not a plain path"),
        ] {
            let e = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
