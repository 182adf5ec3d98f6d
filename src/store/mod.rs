//! The archive stores: where finished archive files become objects.
//!
//! - `object`: the `Store` trait, object metadata, put outcomes, errors.
//! - `file`: `file://DIR`, a local or mounted directory.
//! - `gcs`: `gs://BUCKET/PREFIX`, Google Cloud Storage.
//! - `s3`: `s3://BUCKET/PREFIX`, Amazon S3 and S3-compatible stores.
//! - `http`: what HTTP stores share (agent, retry policy, back-off).
//! - `url`: store URLs, parsed and shown.
//!
//! A leaf: each store takes its own options and the stop flag; none knows
//! about Kafka, the spool or the configuration file.

use crate::cancel::Cancel;

pub mod file;
pub mod gcs;
pub mod http;
mod object;
pub mod s3;
mod url;

pub use object::{ObjectInfo, PutOutcome, Store, StoreError, Upload};
pub use url::StoreUrl;

/// Opens the store a URL names, checking that it can be used. `cancel`
/// ends the store's waits and retries early.
pub fn open(
    url: &StoreUrl,
    gcs: &gcs::GcsOptions,
    s3: &s3::S3Options,
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
        StoreUrl::S3 { bucket, prefix } => Ok(Box::new(s3::S3Store::open(
            bucket,
            prefix,
            s3,
            cancel.clone(),
        )?)),
    }
}
