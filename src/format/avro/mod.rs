//! The container format of archive files: an Avro 1.11 object container file
//! holding one Kafka record per Avro record, with a deterministic writer and a
//! strict reader.
//!
//! Owns the byte layout of an archive file and nothing else. It never does
//! I/O beyond the [`Spooled`] file or the `Read` it is handed (no opening of
//! files, no fsync, no retries), and knows nothing of stores, spools, naming
//! or Kafka connections. The reader reads varints byte by byte: pass it a
//! buffered reader.
//!
//! # Layout
//!
//! - Magic `Obj\x01`, then the file metadata map as **one** map block, in
//!   this order: `avro.schema` ([`SCHEMA`]), `avro.codec`, `kafka.topic`,
//!   `kafka.partition` (decimal), `kafka.first_offset` (decimal),
//!   `kafka.topic_id` (hyphenated UUID, when Kafka has one),
//!   `kafka.next_offset`, `kafka.record_count`, `kafka.min_timestamp`,
//!   `kafka.max_timestamp`, `kafka.last_epoch`, `kafka.skipped` (only in a
//!   file that stands for a range Kafka no longer holds: `start-latest` or
//!   `retention`), `kafka_store.format_version` ([`FORMAT_VERSION`]); then
//!   the 16-byte sync marker.
//! - The summary values are only known when the file is finished, so they
//!   are **fixed width** and [`Writer::finish`] patches them in place:
//!   `next_offset` and `record_count` as `{:020}`, the timestamps as
//!   `{:+020}` (sign and 19 digits), `last_epoch` (the leader epoch of the
//!   last batch the file covers) as `{:+011}`, `-0000000001` when unknown.
//!   With zero records both timestamps are `-1` and read back as `None`.
//!   Until `finish` they hold zeros (timestamps `+0000000000000000000`),
//!   which the reader reports as [`AvroError::Unfinished`]. A finished file
//!   is therefore self-describing: a local store reads `next_offset` and the
//!   rest of the [`Summary`] from the header alone ([`read_header`]).
//! - Format 1 files (written by earlier releases: no `raw_key` in the schema, no
//!   topic id, last epoch or skip reason) are still read.
//! - The sync marker is [`sync_marker`]`(topic, partition, first_offset)`, not
//!   random, and the reader checks it is.
//! - Data blocks: record count, compressed size, data, sync marker. A block is
//!   closed after the record that brings its encoded (uncompressed) size to
//!   `block_bytes` or more, and at `finish`; no empty block is ever written.
//!   `deflate` is raw RFC 1951 (libdeflate), `zstandard` one frame per block,
//!   `snappy` raw snappy followed by the big-endian CRC32 (IEEE) of the
//!   uncompressed data.
//! - While a block is open its encoded records lie in the file, after the
//!   last finished block (see `writer`): an open file costs a few counters
//!   in memory.
//!
//! # Determinism
//!
//! The same records appended to a writer with the same [`FileSpec`] give the
//! same bytes: the header is fixed apart from the patched summary, block
//! boundaries depend only on encoded sizes, and each block is compressed
//! whole, from its encoded records alone, by a compressor that keeps no
//! state from one block to the next (libdeflate, zstd's bulk API, snappy).
//!
//! # Reading
//!
//! The reader checks the magic, that the schema is exactly [`SCHEMA`], the
//! codec, the format version, the header sync marker against its derivation,
//! every block's sync marker, counts and sizes (blocks above
//! [`MAX_BLOCK_BYTES`], compressed or not, are rejected), snappy CRCs, that
//! each block's data holds exactly its records, and at the end of the file
//! that the record count and timestamps match the header summary. Offsets are
//! not checked: their meaning belongs to the caller. Error positions are byte
//! positions from the start of what the reader was given; an error inside a
//! block's data names the block's position.

mod layout;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use layout::{
    AvroError, Codec, FORMAT_VERSION, FileSpec, MAX_BLOCK_BYTES, SCHEMA, SCHEMA_V1, Skipped,
    Summary, escape_key, sync_marker,
};
pub use reader::{FileHeader, Reader, read_header};
pub use writer::{Finished, Spooled, Workbench, Writer};
