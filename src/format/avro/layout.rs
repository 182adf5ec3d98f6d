//! The byte layout shared by the writer and the reader: the schema, the
//! header metadata keys, the codecs, the summary, the sync marker and the
//! fixed-width summary fields (see the module doc of `format::avro`).

use std::io;

use md5::{Digest, Md5};

/// The Avro schema of every archive file, byte for byte.
pub const SCHEMA: &str = r#"{"type":"record","name":"KafkaRecord","namespace":"kafka_store","fields":[{"name":"offset","type":"long"},{"name":"timestamp","type":"long"},{"name":"timestamp_type","type":{"type":"enum","name":"TimestampType","symbols":["create","log_append"]}},{"name":"key","type":["null","bytes"]},{"name":"value","type":["null","bytes"]},{"name":"headers","type":{"type":"array","items":{"type":"record","name":"Header","fields":[{"name":"key","type":"string"},{"name":"value","type":["null","bytes"]}]}}}]}"#;

/// Version of the archive layout, in `kafka_store.format_version`.
pub const FORMAT_VERSION: u32 = 1;

/// Largest block the reader accepts, compressed or decompressed.
pub const MAX_BLOCK_BYTES: usize = 256 << 20;

pub(super) const MAGIC: [u8; 4] = *b"Obj\x01";
pub(super) const SUMMARY_WIDTH: usize = 20;
/// Bounds on header metadata, so that garbage cannot ask for huge allocations.
pub(super) const MAX_META_ENTRIES: u64 = 1024;
pub(super) const MAX_META_BYTES: usize = 1 << 20;
/// The smallest encoded record: six one-byte fields.
pub(super) const MIN_RECORD_BYTES: usize = 6;

pub(super) const KEY_SCHEMA: &str = "avro.schema";
pub(super) const KEY_CODEC: &str = "avro.codec";
pub(super) const KEY_TOPIC: &str = "kafka.topic";
pub(super) const KEY_PARTITION: &str = "kafka.partition";
pub(super) const KEY_FIRST_OFFSET: &str = "kafka.first_offset";
pub(super) const KEY_NEXT_OFFSET: &str = "kafka.next_offset";
pub(super) const KEY_RECORD_COUNT: &str = "kafka.record_count";
pub(super) const KEY_MIN_TIMESTAMP: &str = "kafka.min_timestamp";
pub(super) const KEY_MAX_TIMESTAMP: &str = "kafka.max_timestamp";
pub(super) const KEY_FORMAT_VERSION: &str = "kafka_store.format_version";

/// The block compression of a file.
///
/// The level is not stored in the file: a [`FileHeader`] read back reports
/// `Deflate { level: 0 }` / `Zstandard { level: 0 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Null,
    /// zlib-style level, 0..=9.
    Deflate {
        level: u32,
    },
    Snappy,
    /// zstd level, within `zstd::compression_level_range()`.
    Zstandard {
        level: i32,
    },
}

impl Codec {
    /// The name in `avro.codec`.
    pub fn avro_name(self) -> &'static str {
        match self {
            Codec::Null => "null",
            Codec::Deflate { .. } => "deflate",
            Codec::Snappy => "snappy",
            Codec::Zstandard { .. } => "zstandard",
        }
    }

    pub(super) fn from_avro_name(name: &[u8]) -> Option<Codec> {
        Some(match name {
            b"null" => Codec::Null,
            b"deflate" => Codec::Deflate { level: 0 },
            b"snappy" => Codec::Snappy,
            b"zstandard" => Codec::Zstandard { level: 0 },
            _ => return None,
        })
    }
}

/// What a new file is: its place in the archive and how it is written.
#[derive(Clone, Copy, Debug)]
pub struct FileSpec<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub first_offset: i64,
    pub codec: Codec,
    /// A block is closed once its encoded (uncompressed) records reach this.
    pub block_bytes: usize,
}

/// What a finished file covers; also what stores put in object metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub next_offset: i64,
    pub record_count: u64,
    pub min_timestamp: Option<i64>,
    pub max_timestamp: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AvroError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("record at offset {offset} has a header key that is not valid utf-8")]
    InvalidHeaderKey { offset: i64 },
    #[error("corrupt archive file at byte {position}: {what}")]
    Corrupt { what: String, position: u64 },
    #[error("not a kafka-store archive file: {why}")]
    NotArchiveFile { why: String },
    #[error("unfinished archive file: the header summary at byte {position} was never written")]
    Unfinished { position: u64 },
    #[error("avro writer unusable after an earlier error; discard the file")]
    Poisoned,
}

pub(super) fn corrupt(what: impl Into<String>, position: u64) -> AvroError {
    AvroError::Corrupt {
        what: what.into(),
        position,
    }
}

pub(super) fn not_archive(why: impl Into<String>) -> AvroError {
    AvroError::NotArchiveFile { why: why.into() }
}

/// The sync marker of a file: MD5 of `kafka-store/v1\0{topic}\0{partition}\0{first_offset}`.
pub fn sync_marker(topic: &str, partition: i32, first_offset: i64) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(b"kafka-store/v1\0");
    md5.update(topic.as_bytes());
    md5.update(b"\0");
    md5.update(partition.to_string().as_bytes());
    md5.update(b"\0");
    md5.update(first_offset.to_string().as_bytes());
    md5.finalize().into()
}

/// The fixed-width spellings of the summary fields (20 characters).
pub(super) fn fmt_count(v: u64) -> String {
    format!("{v:020}")
}
pub(super) fn fmt_offset(v: i64) -> String {
    format!("{v:020}")
}
pub(super) fn fmt_timestamp(v: i64) -> String {
    format!("{v:+020}")
}
