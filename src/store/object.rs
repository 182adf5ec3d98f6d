//! What a store is: the `Store` trait and what it says about objects
//! (metadata, outcomes of a create-only put, typed failures).
//!
//! A store never decides what to write or when to commit offsets; it only
//! answers whether an object now exists with the given bytes.

use std::io::Read;
use std::path::Path;

use uuid::Uuid;

use crate::format::avro::{Skipped, Summary};
use crate::format::names::ObjectKey;

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
    /// The topic id the object's records were read from (format 2).
    pub topic_id: Option<Uuid>,
    /// Set for an object that makes a skipped range explicit.
    pub skipped: Option<Skipped>,
}

/// A finished spool file ready to be stored.
#[derive(Clone, Debug)]
pub struct Upload<'a> {
    pub key: &'a ObjectKey,
    pub topic_id: Option<Uuid>,
    pub skipped: Option<Skipped>,
    pub path: &'a Path,
    /// Where a store may note an upload session across restarts (GCS
    /// resumable uploads): named by the object, not the build, so that a
    /// rebuilt file finds it.
    pub session_note: &'a Path,
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

/// Store failures; the variant says what the caller can do about it.
/// `what` names the operation and the object or folder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer usefully (network trouble, throttling, 5xx,
    /// a stale network filesystem) for longer than its retry timeout: the
    /// operation may succeed later.
    #[error("{what}: {why}")]
    Unavailable { what: String, why: String },
    /// The stop flag was set while the operation waited or retried.
    #[error("{what}: interrupted by a stop request")]
    Interrupted { what: String },
    /// The store refused: credentials, permissions, a missing bucket, a
    /// setting it does not accept. An operator must fix it.
    #[error("{what}: {why}")]
    Refused { what: String, why: String },
    /// Local I/O failed: the spool file, or a local archive directory (a
    /// full disk, permissions).
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    /// An object at an archive name that is not a readable kafka-store file
    /// (foreign, truncated, or disagreeing with its name); `what` is its URL.
    #[error("{what} is not a kafka-store archive file: {why}")]
    NotArchive { what: String, why: String },
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
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

    /// Before a writer starts: an error unless the store really refuses to
    /// overwrite objects, which `put` relies on. Stores whose create-only
    /// write cannot be ignored need no check.
    fn check_create_only(&self) -> Result<(), StoreError> {
        Ok(())
    }

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
            let info = self.head(&key)?.ok_or_else(|| StoreError::Unavailable {
                what: format!("object {}", self.object_url(&key)),
                why: "vanished while listing".into(),
            })?;
            out.push((first, info));
        }
        Ok(out)
    }

    /// Topics with at least one partition folder, sorted.
    fn topics(&self) -> Result<Vec<String>, StoreError>;

    /// Removes what a crash of a writer may have left beside a partition's
    /// objects (never an object); called when a process takes the
    /// partition. Nothing to do for most stores.
    fn tidy(&self, _topic: &str, _partition: i32) {}

    /// Partitions of a topic that have a folder, sorted.
    fn partitions(&self, topic: &str) -> Result<Vec<i32>, StoreError>;

    /// Reads an object.
    fn open(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>, StoreError>;

    /// Where an object lives, as a URL (for logs and `ls`).
    fn object_url(&self, key: &ObjectKey) -> String {
        format!("{}/{}", self.url().trim_end_matches('/'), key.path())
    }
}
