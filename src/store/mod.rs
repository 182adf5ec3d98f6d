//! The store interface: where finished archive files become objects.
//!
//! A store offers create-only puts (an existing object is never
//! overwritten), metadata lookups for chain following, listings and reads.
//! Implementations: `file` (a local or mounted directory), `gcs` (Google
//! Cloud Storage).
//!
//! A store never decides what to write or when to commit offsets; it only
//! answers whether an object now exists with the given bytes.

use std::io::Read;
use std::path::Path;

use crate::avro::Summary;
use crate::config::{GcsConfig, StoreUrl};
use crate::interrupt::Interrupt;
use crate::naming::ObjectKey;

pub mod file;
pub mod gcs;

/// Version of the archive format written into every object's metadata.
pub const FORMAT_VERSION: u32 = crate::avro::FORMAT_VERSION;

/// What a store knows about an object without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub summary: Summary,
    pub size: u64,
    /// CRC32C of the whole object, when the store keeps it (GCS does; a
    /// local store computes it only when it must compare).
    pub crc32c: Option<u32>,
    /// Base64 MD5 of the whole object, when the store keeps it (GCS).
    pub md5: Option<String>,
    pub format_version: u32,
}

/// A finished spool file ready to be stored.
#[derive(Clone, Debug)]
pub struct Upload<'a> {
    pub key: &'a ObjectKey,
    pub path: &'a Path,
    pub summary: Summary,
    pub size: u64,
    pub crc32c: u32,
}

/// What a create-only put found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist; it does now, with our bytes.
    Created,
    /// The object existed with exactly our bytes (a rebuild or a twin).
    Identical,
    /// The object existed with other bytes: another builder cut the file
    /// elsewhere. Its metadata says where the chain goes on.
    Conflict(ObjectInfo),
}

/// Store failures, split by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// May succeed if tried again later (network, throttling, 5xx).
    #[error("{what}: {why}")]
    Retriable { what: String, why: String },
    /// Will not succeed without a fix (permissions, full disk, bad object).
    #[error("{what}: {why}")]
    Fatal { what: String, why: String },
}

impl StoreError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Retriable { .. })
    }
}

/// An archive store.
pub trait Store: Send + Sync {
    /// The store's URL, for messages.
    fn url(&self) -> String;

    /// The object's metadata, or None if it does not exist.
    fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError>;

    /// Creates the object from a local file unless it exists (never overwrites).
    fn put(&self, upload: &Upload) -> Result<PutOutcome, StoreError>;

    /// First offsets of the partition's objects, ascending.
    fn list(&self, topic: &str, partition: i32) -> Result<Vec<i64>, StoreError>;

    /// The partition's objects with their metadata, ascending by first
    /// offset (stores that list metadata with names override this).
    fn list_infos(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<(i64, ObjectInfo)>, StoreError> {
        let mut out = Vec::new();
        for first in self.list(topic, partition)? {
            let key = ObjectKey {
                topic: topic.into(),
                partition,
                first,
            };
            let info = self.head(&key)?.ok_or_else(|| StoreError::Retriable {
                what: format!("object {}", self.object_url(&key)),
                why: "vanished while listing".into(),
            })?;
            out.push((first, info));
        }
        Ok(out)
    }

    /// Topics with at least one partition folder, sorted.
    fn topics(&self) -> Result<Vec<String>, StoreError>;

    /// Partitions of a topic that have a folder, sorted.
    fn partitions(&self, topic: &str) -> Result<Vec<i32>, StoreError>;

    /// Reads an object.
    fn open(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>, StoreError>;

    /// Where an object lives, as a URL (for logs and `ls`).
    fn object_url(&self, key: &ObjectKey) -> String {
        format!("{}/{}", self.url().trim_end_matches('/'), key.path())
    }
}

/// Opens the store a URL names, checking that it can be used.
/// `interrupt` ends a store's retry loops early (SIGTERM/SIGINT).
pub fn open(
    url: &StoreUrl,
    gcs: &GcsConfig,
    interrupt: &Interrupt,
) -> Result<Box<dyn Store>, StoreError> {
    match url {
        StoreUrl::File(dir) => Ok(Box::new(file::FileStore::open(dir)?)),
        StoreUrl::Gcs { bucket, prefix } => Ok(Box::new(gcs::GcsStore::open(
            bucket,
            prefix,
            gcs,
            interrupt.clone(),
        )?)),
    }
}
