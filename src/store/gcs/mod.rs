//! `gs://BUCKET/PREFIX`: the archive in Google Cloud Storage, over the JSON
//! API with blocking `ureq` (rustls).
//!
//! An object is `{prefix}/{topic}/{partition:06}/{first:020}.avro` with the
//! custom metadata `next-offset`, `record-count`, `min-timestamp`,
//! `max-timestamp`, `format-version`, and GCS's own CRC32C and MD5. Puts are
//! resumable uploads created with `ifGenerationMatch=0`, so an existing
//! object is never replaced (`upload`). Transient failures (408, 429, 5xx,
//! broken connections) are retried with jittered back-off up to
//! `gcs.retry_timeout` (`api`, with the policy of `store::http`); other
//! answers are final and reported in one line naming the bucket, the object
//! and the identity used (`auth`).
//!
//! Never logs a credential, a token or a signed assertion.

mod api;
mod auth;
mod upload;

use std::io::Read;

use crate::format::names::{self, ObjectKey};
use crate::store::http::child_folders;
use crate::store::object::{ObjectInfo, PutOutcome, Store, StoreError, Upload};

pub use api::{GcsOptions, GcsStore};

impl Store for GcsStore {
    fn url(&self) -> String {
        GcsStore::url(self)
    }

    fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError> {
        self.get_resource(&self.object_name(key))?
            .map(|o| self.info(&o))
            .transpose()
    }

    fn put(&self, upload: &Upload) -> Result<PutOutcome, StoreError> {
        upload::put(self, upload)
    }

    fn list(&self, topic: &str, partition: i32) -> Result<Vec<i64>, StoreError> {
        Ok(self
            .partition_objects(topic, partition)?
            .into_iter()
            .map(|(f, _)| f)
            .collect())
    }

    fn list_infos(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<(i64, ObjectInfo)>, StoreError> {
        self.partition_objects(topic, partition)?
            .into_iter()
            .map(|(first, o)| Ok((first, self.info(&o)?)))
            .collect()
    }

    fn topics(&self) -> Result<Vec<String>, StoreError> {
        let folder = self.folder("");
        Ok(child_folders(
            &folder,
            &self.list_all(&folder, Some("/"))?.prefixes,
        ))
    }

    fn partitions(&self, topic: &str) -> Result<Vec<i32>, StoreError> {
        let folder = self.folder(&format!("{topic}/"));
        let mut out: Vec<i32> =
            child_folders(&folder, &self.list_all(&folder, Some("/"))?.prefixes)
                .iter()
                .filter_map(|name| names::parse_partition_dir(name))
                .collect();
        out.sort_unstable();
        Ok(out)
    }

    fn open(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>, StoreError> {
        Ok(Box::new(self.download(key)?.into_reader()))
    }

    fn object_url(&self, key: &ObjectKey) -> String {
        format!("gs://{}/{}", self.bucket, self.object_name(key))
    }
}
