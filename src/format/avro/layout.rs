//! The byte layout shared by the writer and the reader: the schema, the
//! header metadata keys, the codecs, the summary, the sync marker and the
//! fixed-width summary fields (see the module doc of `format::avro`).

use std::fmt;
use std::io;

use md5::{Digest, Md5};
use uuid::Uuid;

/// The Avro schema of every archive file written now (format 2), byte for
/// byte. A header's `raw_key` holds its key's bytes when they are not
/// UTF-8 (`key` then holds them escaped, see [`escape_key`]); a reader with
/// the format-1 schema resolves it away.
pub const SCHEMA: &str = r#"{"type":"record","name":"KafkaRecord","namespace":"kafka_store","fields":[{"name":"offset","type":"long"},{"name":"timestamp","type":"long"},{"name":"timestamp_type","type":{"type":"enum","name":"TimestampType","symbols":["create","log_append"]}},{"name":"key","type":["null","bytes"]},{"name":"value","type":["null","bytes"]},{"name":"headers","type":{"type":"array","items":{"type":"record","name":"Header","fields":[{"name":"key","type":"string"},{"name":"value","type":["null","bytes"]},{"name":"raw_key","type":["null","bytes"],"default":null}]}}}]}"#;

/// The schema of format-1 files (read, never written).
pub const SCHEMA_V1: &str = r#"{"type":"record","name":"KafkaRecord","namespace":"kafka_store","fields":[{"name":"offset","type":"long"},{"name":"timestamp","type":"long"},{"name":"timestamp_type","type":{"type":"enum","name":"TimestampType","symbols":["create","log_append"]}},{"name":"key","type":["null","bytes"]},{"name":"value","type":["null","bytes"]},{"name":"headers","type":{"type":"array","items":{"type":"record","name":"Header","fields":[{"name":"key","type":"string"},{"name":"value","type":["null","bytes"]}]}}}]}"#;

/// Version of the archive layout written now, in `kafka_store.format_version`.
/// Format 1 (read still): no `raw_key`, no topic id, last epoch or skip reason.
pub const FORMAT_VERSION: u32 = 2;

/// Largest block the reader accepts, compressed or decompressed.
pub const MAX_BLOCK_BYTES: usize = 256 << 20;

pub(super) const MAGIC: [u8; 4] = *b"Obj\x01";
pub(super) const SUMMARY_WIDTH: usize = 20;
/// Width of `kafka.last_epoch`: a sign and ten digits.
pub(super) const EPOCH_WIDTH: usize = 11;
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
pub(super) const KEY_TOPIC_ID: &str = "kafka.topic_id";
pub(super) const KEY_NEXT_OFFSET: &str = "kafka.next_offset";
pub(super) const KEY_RECORD_COUNT: &str = "kafka.record_count";
pub(super) const KEY_MIN_TIMESTAMP: &str = "kafka.min_timestamp";
pub(super) const KEY_MAX_TIMESTAMP: &str = "kafka.max_timestamp";
pub(super) const KEY_LAST_EPOCH: &str = "kafka.last_epoch";
pub(super) const KEY_SKIPPED: &str = "kafka.skipped";
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

/// Why a file covers offsets without archiving them (`kafka.skipped`): a
/// zero-record file that makes a skip explicit in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skipped {
    /// `kafka.start = "latest"` began an empty archive at the log end.
    StartLatest,
    /// Retention deleted the records before they were archived.
    Retention,
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::StartLatest => "start-latest",
            Skipped::Retention => "retention",
        }
    }

    pub fn parse(s: &str) -> Option<Skipped> {
        match s {
            "start-latest" => Some(Skipped::StartLatest),
            "retention" => Some(Skipped::Retention),
            _ => None,
        }
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a new file is: its place in the archive, the history it comes
/// from, and how it is written.
#[derive(Clone, Copy, Debug)]
pub struct FileSpec<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub first_offset: i64,
    /// The topic's id in Kafka (`kafka.topic_id`), when the broker has ids.
    pub topic_id: Option<Uuid>,
    /// Set for a file that makes a skipped range explicit (no records).
    pub skipped: Option<Skipped>,
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
    /// The leader epoch of the last batch the file covers (`kafka.last_epoch`;
    /// None for a skipped range, and in format-1 files).
    pub last_epoch: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AvroError {
    #[error(transparent)]
    Io(#[from] io::Error),
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
/// `kafka.last_epoch`, 11 characters; `-1` when there is none.
pub(super) fn fmt_epoch(v: Option<i32>) -> String {
    format!("{:+011}", v.unwrap_or(-1))
}

/// A header key as the `key` string of the schema: UTF-8 as it is; any
/// byte of an invalid sequence as `\xNN` (Python's `backslashreplace`), so
/// that a format-1 reader still sees a readable key. The bytes themselves
/// go into `raw_key`.
pub fn escape_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for chunk in key.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_not_utf8_are_escaped_byte_by_byte() {
        for (key, shown) in [
            (&b"trace-id"[..], "trace-id"),
            (b"\xff", "\\xff"),
            (b"a\xc3(b", "a\\xc3(b"),
            ("héllo".as_bytes(), "héllo"),
            (b"", ""),
        ] {
            assert_eq!(escape_key(key), shown, "{key:?}");
        }
    }

    #[test]
    fn skip_reasons_spell_as_the_design_says() {
        for s in [Skipped::StartLatest, Skipped::Retention] {
            assert_eq!(Skipped::parse(s.as_str()), Some(s));
        }
        assert_eq!(Skipped::StartLatest.to_string(), "start-latest");
        assert_eq!(Skipped::parse("gap"), None);
        assert_eq!(fmt_epoch(Some(7)).len(), EPOCH_WIDTH);
        assert_eq!(fmt_epoch(Some(i32::MIN)).len(), EPOCH_WIDTH);
        assert_eq!(fmt_epoch(None), "-0000000001");
    }
}
