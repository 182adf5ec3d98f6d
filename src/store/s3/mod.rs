//! `s3://BUCKET/PREFIX`: the archive in Amazon S3 or an S3-compatible store
//! (MinIO, Ceph RGW, SeaweedFS), over the REST API with blocking `ureq`
//! (rustls) and SigV4 signatures of our own (`sign`, on `ring`).
//!
//! An object is `{prefix}/{topic}/{partition:06}/{first:020}.avro` with the
//! metadata `x-amz-meta-next-offset`, `-record-count`, `-min-timestamp`,
//! `-max-timestamp`, `-format-version`, `-topic-id`, `-last-epoch`,
//! `-skipped` and `-crc32c`. Puts are create-only (`If-None-Match: *`),
//! multipart above `s3.part_bytes`, resumable across restarts (`upload`);
//! before writing, `run` checks that the store does refuse to overwrite
//! (`probe`).
//! Transient failures (throttling, 5xx, broken connections) are retried by
//! one loop with jittered back-off up to `s3.retry_timeout` (`api`); other
//! answers are final and reported in one line naming the bucket, the
//! object and the access key id (`creds`).
//!
//! Never logs or reports a secret key or a session token.

mod api;
mod creds;
mod probe;
mod sign;
mod upload;

use std::io::Read;

use crate::format::names::{self, ObjectKey};
use crate::store::http::child_folders;
use crate::store::object::{ObjectInfo, PutOutcome, Store, StoreError, Upload};

pub use api::{MIN_PART_BYTES, S3Options, S3Store};

impl Store for S3Store {
    fn url(&self) -> String {
        S3Store::url(self)
    }

    fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError> {
        self.head_object(&self.object_name(key))
    }

    fn put(&self, upload: &Upload) -> Result<PutOutcome, StoreError> {
        upload::put(self, upload)
    }

    fn check_create_only(&self) -> Result<(), StoreError> {
        if !self.require_create_only {
            log::warn!(
                "{}: not checked whether the store refuses to overwrite objects (s3.require_create_only = false): two writers of one partition could replace each other's files",
                self.url()
            );
            return Ok(());
        }
        probe::check_create_only(self)
    }

    fn list(&self, topic: &str, partition: i32) -> Result<Vec<i64>, StoreError> {
        self.partition_objects(topic, partition)
    }

    fn topics(&self) -> Result<Vec<String>, StoreError> {
        let folder = self.folder("");
        Ok(child_folders(
            &folder,
            &self.list_all(&folder, Some("/"))?.1,
        ))
    }

    fn partitions(&self, topic: &str) -> Result<Vec<i32>, StoreError> {
        let folder = self.folder(&format!("{topic}/"));
        let mut out: Vec<i32> = child_folders(&folder, &self.list_all(&folder, Some("/"))?.1)
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
        format!("s3://{}/{}", self.bucket, self.object_name(key))
    }
}
