//! The container format of archive files: an Avro 1.11 object container file
//! holding one Kafka record per Avro record, with a deterministic writer and a
//! strict reader.
//!
//! Owns the byte layout of an archive file and nothing else. It never does
//! I/O beyond the `Write`/`Read` it is handed (no opening of files, no fsync,
//! no retries), and knows nothing of stores, spools, naming or Kafka
//! connections. Pass a buffered writer/reader when blocks are small: the
//! writer issues three `write_all` calls per block, the reader reads varints
//! byte by byte.
//!
//! # Layout
//!
//! - Magic `Obj\x01`, then the file metadata map as **one** map block of ten
//!   entries in this order: `avro.schema` ([`SCHEMA`]), `avro.codec`,
//!   `kafka.topic`, `kafka.partition` (decimal), `kafka.first_offset`
//!   (decimal), `kafka.next_offset`, `kafka.record_count`,
//!   `kafka.min_timestamp`, `kafka.max_timestamp`,
//!   `kafka_store.format_version` (`"1"`); then the 16-byte sync marker.
//! - The four summary values are only known when the file is finished, so
//!   they are **fixed width, 20 ASCII characters**, and [`Writer::finish`]
//!   patches them in place (seek back, rewrite the header, seek to the end):
//!   `next_offset` and `record_count` as `{:020}`, the timestamps as
//!   `{:+020}` (sign and 19 digits). With zero records both timestamps are
//!   `-1` and read back as `None`. Until `finish` they hold zeros (timestamps
//!   `+0000000000000000000`), which the reader reports as
//!   [`AvroError::Unfinished`]. A finished file is therefore self-describing:
//!   a local store reads `next_offset` and the rest of the [`Summary`] from
//!   the header alone ([`read_header`]).
//! - The sync marker is [`sync_marker`]`(topic, partition, first_offset)`, not
//!   random, and the reader checks it is.
//! - Data blocks: record count, compressed size, data, sync marker. A block is
//!   closed after the record that brings its encoded (uncompressed) size to
//!   `block_bytes` or more, and at `finish`; no empty block is ever written.
//!   `deflate` is raw RFC 1951, `zstandard` one frame per block, `snappy` raw
//!   snappy followed by the big-endian CRC32 (IEEE) of the uncompressed data.
//!
//! # Determinism
//!
//! The same records appended to a writer with the same [`FileSpec`] give the
//! same bytes: the header is fixed apart from the patched summary, block
//! boundaries depend only on encoded sizes, and every record reaches the
//! compressor as exactly one write of its encoded bytes into a compressor
//! that is reset at every block.
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

use std::io::{self, Read, Seek, SeekFrom, Write};

use flate2::write::DeflateEncoder;
use md5::{Digest, Md5};
use zstd::stream::raw::{InBuffer, Operation, OutBuffer};

use crate::record::{OwnedRecord, Record, TimestampType};

/// The Avro schema of every archive file, byte for byte.
pub const SCHEMA: &str = r#"{"type":"record","name":"KafkaRecord","namespace":"kafka_store","fields":[{"name":"offset","type":"long"},{"name":"timestamp","type":"long"},{"name":"timestamp_type","type":{"type":"enum","name":"TimestampType","symbols":["create","log_append"]}},{"name":"key","type":["null","bytes"]},{"name":"value","type":["null","bytes"]},{"name":"headers","type":{"type":"array","items":{"type":"record","name":"Header","fields":[{"name":"key","type":"string"},{"name":"value","type":["null","bytes"]}]}}}]}"#;

/// Version of the archive layout, in `kafka_store.format_version`.
pub const FORMAT_VERSION: u32 = 1;

/// Largest block the reader accepts, compressed or decompressed.
pub const MAX_BLOCK_BYTES: usize = 256 << 20;

const MAGIC: [u8; 4] = *b"Obj\x01";
const SUMMARY_WIDTH: usize = 20;
/// Bounds on header metadata, so that garbage cannot ask for huge allocations.
const MAX_META_ENTRIES: u64 = 1024;
const MAX_META_BYTES: usize = 1 << 20;
/// The smallest encoded record: six one-byte fields.
const MIN_RECORD_BYTES: usize = 6;

const KEY_SCHEMA: &str = "avro.schema";
const KEY_CODEC: &str = "avro.codec";
const KEY_TOPIC: &str = "kafka.topic";
const KEY_PARTITION: &str = "kafka.partition";
const KEY_FIRST_OFFSET: &str = "kafka.first_offset";
const KEY_NEXT_OFFSET: &str = "kafka.next_offset";
const KEY_RECORD_COUNT: &str = "kafka.record_count";
const KEY_MIN_TIMESTAMP: &str = "kafka.min_timestamp";
const KEY_MAX_TIMESTAMP: &str = "kafka.max_timestamp";
const KEY_FORMAT_VERSION: &str = "kafka_store.format_version";

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

    fn from_avro_name(name: &[u8]) -> Option<Codec> {
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

/// What finish() reports besides the summary.
#[derive(Debug)]
pub struct Finished<W> {
    /// The writer, positioned at the end of the file, flushed (not synced).
    pub out: W,
    pub summary: Summary,
    /// Bytes written by this file (header and blocks).
    pub file_bytes: u64,
    /// CRC32C of those bytes, header as patched.
    pub crc32c: u32,
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

fn corrupt(what: impl Into<String>, position: u64) -> AvroError {
    AvroError::Corrupt {
        what: what.into(),
        position,
    }
}

fn not_archive(why: impl Into<String>) -> AvroError {
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

// ---------------------------------------------------------------------------
// Avro binary encoding

fn put_long(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

fn put_bytes(buf: &mut Vec<u8>, data: &[u8]) {
    put_long(buf, data.len() as i64);
    buf.extend_from_slice(data);
}

fn put_nullable(buf: &mut Vec<u8>, data: Option<&[u8]>) {
    match data {
        None => buf.push(0),
        Some(data) => {
            buf.push(2); // union index 1, zigzag
            put_bytes(buf, data);
        }
    }
}

/// Appends the Avro encoding of `r` to `buf`. Header keys must already be
/// known to be UTF-8 (the schema says `string`).
fn encode_record(buf: &mut Vec<u8>, r: &Record<'_>) {
    put_long(buf, r.offset);
    put_long(buf, r.timestamp);
    buf.push(match r.timestamp_type {
        TimestampType::Create => 0,
        TimestampType::LogAppend => 2,
    });
    put_nullable(buf, r.key);
    put_nullable(buf, r.value);
    if !r.headers.is_empty() {
        put_long(buf, r.headers.len() as i64);
        for h in &r.headers {
            put_bytes(buf, h.key);
            put_nullable(buf, h.value);
        }
    }
    buf.push(0);
}

fn fmt_count(v: u64) -> String {
    format!("{v:020}")
}
fn fmt_offset(v: i64) -> String {
    format!("{v:020}")
}
fn fmt_timestamp(v: i64) -> String {
    format!("{v:+020}")
}

/// The header as written, with where the four summary values sit in it.
struct HeaderImage {
    bytes: Vec<u8>,
    /// next_offset, record_count, min_timestamp, max_timestamp.
    summary_at: [usize; 4],
}

impl HeaderImage {
    fn new(spec: &FileSpec<'_>, sync: &[u8; 16]) -> HeaderImage {
        let mut b = Vec::with_capacity(1024);
        b.extend_from_slice(&MAGIC);
        put_long(&mut b, 10);
        let entry = |b: &mut Vec<u8>, key: &str, value: &[u8]| {
            put_bytes(b, key.as_bytes());
            put_long(b, value.len() as i64);
            let at = b.len();
            b.extend_from_slice(value);
            at
        };
        entry(&mut b, KEY_SCHEMA, SCHEMA.as_bytes());
        entry(&mut b, KEY_CODEC, spec.codec.avro_name().as_bytes());
        entry(&mut b, KEY_TOPIC, spec.topic.as_bytes());
        entry(&mut b, KEY_PARTITION, spec.partition.to_string().as_bytes());
        entry(
            &mut b,
            KEY_FIRST_OFFSET,
            spec.first_offset.to_string().as_bytes(),
        );
        let summary_at = [
            entry(&mut b, KEY_NEXT_OFFSET, fmt_offset(0).as_bytes()),
            entry(&mut b, KEY_RECORD_COUNT, fmt_count(0).as_bytes()),
            entry(&mut b, KEY_MIN_TIMESTAMP, fmt_timestamp(0).as_bytes()),
            entry(&mut b, KEY_MAX_TIMESTAMP, fmt_timestamp(0).as_bytes()),
        ];
        entry(
            &mut b,
            KEY_FORMAT_VERSION,
            FORMAT_VERSION.to_string().as_bytes(),
        );
        b.push(0);
        b.extend_from_slice(sync);
        HeaderImage {
            bytes: b,
            summary_at,
        }
    }

    fn patch(&mut self, s: &Summary) {
        let (min, max) = match (s.min_timestamp, s.max_timestamp) {
            (Some(min), Some(max)) if s.record_count > 0 => (min, max),
            _ => (-1, -1),
        };
        let values = [
            fmt_offset(s.next_offset),
            fmt_count(s.record_count),
            fmt_timestamp(min),
            fmt_timestamp(max),
        ];
        for (at, value) in self.summary_at.iter().zip(values) {
            debug_assert_eq!(value.len(), SUMMARY_WIDTH);
            self.bytes[*at..*at + SUMMARY_WIDTH].copy_from_slice(value.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------
// Writer

/// The open block's compressor. Each record arrives as one `feed`.
enum Compressor {
    Null {
        buf: Vec<u8>,
    },
    /// Raw deflate streaming into a Vec that is reused from block to block.
    Deflate(DeflateEncoder<Vec<u8>>),
    /// Snappy has no streaming raw format: the block is buffered.
    Snappy {
        buf: Vec<u8>,
        out: Vec<u8>,
        enc: Box<snap::raw::Encoder>,
    },
    /// One zstd frame per block, the context reused.
    Zstandard {
        enc: zstd::stream::raw::Encoder<'static>,
        out: Vec<u8>,
    },
}

impl Compressor {
    fn new(codec: Codec) -> io::Result<Compressor> {
        Ok(match codec {
            Codec::Null => Compressor::Null { buf: Vec::new() },
            Codec::Deflate { level } => {
                if level > 9 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("deflate level {level} is not in 0..=9"),
                    ));
                }
                Compressor::Deflate(DeflateEncoder::new(
                    Vec::new(),
                    flate2::Compression::new(level),
                ))
            }
            Codec::Snappy => Compressor::Snappy {
                buf: Vec::new(),
                out: Vec::new(),
                enc: Box::new(snap::raw::Encoder::new()),
            },
            Codec::Zstandard { level } => {
                let range = zstd::compression_level_range();
                if !range.contains(&level) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("zstandard level {level} is not in {range:?}"),
                    ));
                }
                Compressor::Zstandard {
                    enc: zstd::stream::raw::Encoder::new(level)?,
                    out: Vec::new(),
                }
            }
        })
    }

    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Compressor::Null { buf } | Compressor::Snappy { buf, .. } => {
                buf.extend_from_slice(data);
                Ok(())
            }
            Compressor::Deflate(enc) => enc.write_all(data),
            Compressor::Zstandard { enc, out } => {
                let mut input = InBuffer::around(data);
                while input.pos() < data.len() {
                    out.reserve(zstd::zstd_safe::CCtx::out_size());
                    let len = out.len();
                    let mut output = OutBuffer::around_pos(out, len);
                    enc.run(&mut input, &mut output)?;
                }
                Ok(())
            }
        }
    }

    /// Ends the block; returns its data as it goes into the file.
    fn close(&mut self) -> io::Result<&[u8]> {
        match self {
            Compressor::Null { buf } => Ok(buf),
            Compressor::Deflate(enc) => {
                enc.try_finish()?;
                Ok(enc.get_ref())
            }
            Compressor::Snappy { buf, out, enc } => {
                out.clear();
                out.resize(snap::raw::max_compress_len(buf.len()), 0);
                let n = enc.compress(buf, out).map_err(io::Error::other)?;
                out.truncate(n);
                out.extend_from_slice(&crc32fast::hash(buf).to_be_bytes());
                Ok(out)
            }
            Compressor::Zstandard { enc, out } => {
                loop {
                    out.reserve(zstd::zstd_safe::CCtx::out_size());
                    let len = out.len();
                    let mut output = OutBuffer::around_pos(out, len);
                    if enc.finish(&mut output, false)? == 0 {
                        break;
                    }
                }
                Ok(out)
            }
        }
    }

    /// Empties the buffers (keeping their capacity) and resets the
    /// compressor for the next block.
    fn reset(&mut self) -> io::Result<()> {
        match self {
            Compressor::Null { buf } => buf.clear(),
            Compressor::Deflate(enc) => {
                let mut used = enc.reset(Vec::new())?;
                used.clear();
                *enc.get_mut() = used;
            }
            Compressor::Snappy { buf, out, .. } => {
                buf.clear();
                out.clear();
            }
            Compressor::Zstandard { enc, out } => {
                out.clear();
                enc.reinit()?;
            }
        }
        Ok(())
    }
}

/// The output with a running CRC32C and length of everything after the header.
struct Sink<W> {
    out: W,
    crc: u32,
    len: u64,
}

impl<W: Write> Sink<W> {
    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.len += data.len() as u64;
        Ok(())
    }
}

/// Streams records into one archive file. See the module doc for the layout.
///
/// After any error from [`append`](Writer::append) other than
/// [`AvroError::InvalidHeaderKey`], or from I/O, the file is unusable: later
/// calls return [`AvroError::Poisoned`].
pub struct Writer<W: Write + Seek> {
    sink: Sink<W>,
    /// Stream position of the magic.
    base: u64,
    header: HeaderImage,
    sync: [u8; 16],
    block_bytes: usize,
    compressor: Compressor,
    /// The encoded record being appended.
    scratch: Vec<u8>,
    block_records: u64,
    block_encoded: usize,
    records: u64,
    encoded: u64,
    min_timestamp: Option<i64>,
    max_timestamp: Option<i64>,
    poisoned: bool,
}

impl<W: Write + Seek> Writer<W> {
    /// Starts a file at the current position of `out` and writes its header
    /// (with a zeroed summary) immediately.
    pub fn new(mut out: W, spec: &FileSpec) -> io::Result<Self> {
        let compressor = Compressor::new(spec.codec)?;
        let sync = sync_marker(spec.topic, spec.partition, spec.first_offset);
        let header = HeaderImage::new(spec, &sync);
        let base = out.stream_position()?;
        out.write_all(&header.bytes)?;
        Ok(Writer {
            sink: Sink {
                out,
                crc: 0,
                len: 0,
            },
            base,
            header,
            sync,
            block_bytes: spec.block_bytes,
            compressor,
            scratch: Vec::with_capacity(4096),
            block_records: 0,
            block_encoded: 0,
            records: 0,
            encoded: 0,
            min_timestamp: None,
            max_timestamp: None,
            poisoned: false,
        })
    }

    /// Appends one record; returns its Avro-encoded (uncompressed) size.
    ///
    /// A record with a header key that is not UTF-8 is refused with
    /// [`AvroError::InvalidHeaderKey`] before anything of it is written; the
    /// writer stays usable.
    pub fn append(&mut self, record: &Record<'_>) -> Result<usize, AvroError> {
        if self.poisoned {
            return Err(AvroError::Poisoned);
        }
        if record
            .headers
            .iter()
            .any(|h| std::str::from_utf8(h.key).is_err())
        {
            return Err(AvroError::InvalidHeaderKey {
                offset: record.offset,
            });
        }
        self.scratch.clear();
        encode_record(&mut self.scratch, record);
        let size = self.scratch.len();
        if let Err(e) = self.compressor.feed(&self.scratch) {
            self.poisoned = true;
            return Err(e.into());
        }
        self.block_records += 1;
        self.block_encoded += size;
        self.records += 1;
        self.encoded += size as u64;
        self.min_timestamp = Some(
            self.min_timestamp
                .map_or(record.timestamp, |t| t.min(record.timestamp)),
        );
        self.max_timestamp = Some(
            self.max_timestamp
                .map_or(record.timestamp, |t| t.max(record.timestamp)),
        );
        if self.block_encoded >= self.block_bytes {
            self.close_block()?;
        }
        Ok(size)
    }

    /// Records appended so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Sum of the encoded sizes of the records appended so far.
    pub fn encoded_bytes(&self) -> u64 {
        self.encoded
    }

    fn close_block(&mut self) -> Result<(), AvroError> {
        let result = self.write_block();
        if result.is_err() {
            self.poisoned = true;
        }
        result.map_err(AvroError::from)
    }

    fn write_block(&mut self) -> io::Result<()> {
        let data = self.compressor.close()?;
        // The record is in the compressor: the scratch buffer is free.
        self.scratch.clear();
        put_long(&mut self.scratch, self.block_records as i64);
        put_long(&mut self.scratch, data.len() as i64);
        self.sink.put(&self.scratch)?;
        self.sink.put(data)?;
        self.sink.put(&self.sync)?;
        self.compressor.reset()?;
        self.block_records = 0;
        self.block_encoded = 0;
        Ok(())
    }

    /// Closes the last block, patches the header summary in place, seeks back
    /// to the end and flushes `out`. Does not sync.
    pub fn finish(mut self, next_offset: i64) -> Result<Finished<W>, AvroError> {
        if self.poisoned {
            return Err(AvroError::Poisoned);
        }
        if self.block_records > 0 {
            self.close_block()?;
        }
        let summary = Summary {
            next_offset,
            record_count: self.records,
            min_timestamp: self.min_timestamp,
            max_timestamp: self.max_timestamp,
        };
        self.header.patch(&summary);
        let header = &self.header.bytes;
        let file_bytes = header.len() as u64 + self.sink.len;
        let out = &mut self.sink.out;
        out.seek(SeekFrom::Start(self.base))?;
        out.write_all(header)?;
        out.seek(SeekFrom::Start(self.base + file_bytes))?;
        out.flush()?;
        let crc32c = crc32c::crc32c_combine(
            crc32c::crc32c(header),
            self.sink.crc,
            self.sink.len as usize,
        );
        Ok(Finished {
            out: self.sink.out,
            summary,
            file_bytes,
            crc32c,
        })
    }
}

// ---------------------------------------------------------------------------
// Reader

/// The file metadata of an archive file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    /// Levels are not stored: `Deflate { level: 0 }`, `Zstandard { level: 0 }`.
    pub codec: Codec,
    pub sync: [u8; 16],
    pub summary: Summary,
    pub format_version: u32,
    /// Size of the header: the first block starts here.
    pub header_bytes: u64,
}

/// A reader that counts the bytes it has consumed.
struct Counted<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Counted<R> {
    /// One byte, or `None` at end of input.
    fn byte(&mut self) -> io::Result<Option<u8>> {
        let mut b = [0u8];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.pos += 1;
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), AvroError> {
        let start = self.pos;
        // read_exact leaves the position unknown on a short read; this is an
        // error anyway, reported at the start of the truncated item.
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(corrupt(format!("truncated {what}"), start))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads `len` bytes into `buf`, growing it only as data arrives (a bad
    /// length in a damaged file costs no large allocation).
    fn exact_vec(&mut self, buf: &mut Vec<u8>, len: usize, what: &str) -> Result<(), AvroError> {
        buf.clear();
        buf.reserve(len.min(8 << 20));
        let got = self.inner.by_ref().take(len as u64).read_to_end(buf)?;
        if got < len {
            return Err(corrupt(format!("truncated {what}"), self.pos));
        }
        self.pos += len as u64;
        Ok(())
    }

    /// A zigzag varint long; `Ok(None)` only at end of input before its
    /// first byte.
    fn long_or_end(&mut self, what: &str) -> Result<Option<i64>, AvroError> {
        let start = self.pos;
        let mut z: u64 = 0;
        for i in 0..10 {
            let b = match self.byte()? {
                Some(b) => b,
                None if i == 0 => return Ok(None),
                None => return Err(corrupt(format!("truncated {what}"), start)),
            };
            if i == 9 && b > 1 {
                break;
            }
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(Some(unzigzag(z)));
            }
        }
        Err(corrupt(format!("{what}: varint overflows a long"), start))
    }

    fn long(&mut self, what: &str) -> Result<i64, AvroError> {
        let start = self.pos;
        self.long_or_end(what)?
            .ok_or_else(|| corrupt(format!("truncated {what}"), start))
    }

    /// A length prefix, checked against `max`.
    fn len(&mut self, what: &str, max: usize) -> Result<usize, AvroError> {
        let start = self.pos;
        let n = self.long(what)?;
        if n < 0 || n as u64 > max as u64 {
            return Err(corrupt(format!("{what}: length {n} out of range"), start));
        }
        Ok(n as usize)
    }
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Reads only the header of an archive file, leaving `r` at the first block.
pub fn read_header<R: Read>(r: &mut R) -> Result<FileHeader, AvroError> {
    parse_header(&mut Counted { inner: r, pos: 0 })
}

struct Meta {
    key: String,
    value: Vec<u8>,
    position: u64,
}

fn parse_header<R: Read>(src: &mut Counted<R>) -> Result<FileHeader, AvroError> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match src.byte()? {
            Some(b) => {
                magic[got] = b;
                got += 1;
            }
            None => return Err(not_archive(format!("only {got} bytes, no avro magic"))),
        }
    }
    if magic != MAGIC {
        return Err(not_archive(format!(
            "bad magic {magic:02x?}, not an avro container file"
        )));
    }

    let mut meta: Vec<Meta> = Vec::new();
    loop {
        let at = src.pos;
        let mut count = src.long("metadata block count")?;
        if count == 0 {
            break;
        }
        if count < 0 {
            count = count
                .checked_neg()
                .ok_or_else(|| corrupt("bad metadata block count", at))?;
            src.long("metadata block size")?;
        }
        if meta.len() as u64 + count as u64 > MAX_META_ENTRIES {
            return Err(corrupt("too many metadata entries", at));
        }
        for _ in 0..count {
            let key_at = src.pos;
            let n = src.len("metadata key", MAX_META_BYTES)?;
            let mut key = Vec::new();
            src.exact_vec(&mut key, n, "metadata key")?;
            let key =
                String::from_utf8(key).map_err(|_| corrupt("metadata key is not utf-8", key_at))?;
            if meta.iter().any(|m| m.key == key) {
                return Err(corrupt(format!("duplicate metadata key {key:?}"), key_at));
            }
            let n = src.len("metadata value", MAX_META_BYTES)?;
            let position = src.pos;
            let mut value = Vec::new();
            src.exact_vec(&mut value, n, "metadata value")?;
            meta.push(Meta {
                key,
                value,
                position,
            });
        }
    }
    let sync_at = src.pos;
    let mut sync = [0u8; 16];
    src.exact(&mut sync, "header sync marker")?;
    let header_bytes = src.pos;

    let get = |key: &str| meta.iter().find(|m| m.key == key);
    match get(KEY_SCHEMA) {
        Some(m) if m.value == SCHEMA.as_bytes() => {}
        Some(_) => return Err(not_archive("schema is not the kafka-store record schema")),
        None => return Err(not_archive("no avro.schema")),
    }
    // Avro: an absent codec means null.
    let codec = match get(KEY_CODEC) {
        None => Codec::Null,
        Some(m) => Codec::from_avro_name(&m.value).ok_or_else(|| {
            not_archive(format!(
                "unsupported codec {:?}",
                String::from_utf8_lossy(&m.value)
            ))
        })?,
    };
    let format_version = match get(KEY_FORMAT_VERSION) {
        None => return Err(not_archive("no kafka_store.format_version")),
        Some(m) if m.value == FORMAT_VERSION.to_string().as_bytes() => FORMAT_VERSION,
        Some(m) => {
            return Err(not_archive(format!(
                "format version {:?}, this build reads {FORMAT_VERSION}",
                String::from_utf8_lossy(&m.value)
            )));
        }
    };

    let field = |key: &str| -> Result<&Meta, AvroError> {
        get(key).ok_or_else(|| corrupt(format!("no {key} in the header"), header_bytes))
    };
    // A canonical decimal: what `to_string`/`format!` gives back.
    fn canonical<T: std::str::FromStr>(
        m: &Meta,
        fmt: impl Fn(&T) -> String,
    ) -> Result<T, AvroError> {
        std::str::from_utf8(&m.value)
            .ok()
            .and_then(|s| s.parse::<T>().ok().filter(|v| fmt(v) == s))
            .ok_or_else(|| {
                corrupt(
                    format!("bad {} {:?}", m.key, String::from_utf8_lossy(&m.value)),
                    m.position,
                )
            })
    }

    let topic_meta = field(KEY_TOPIC)?;
    let topic = String::from_utf8(topic_meta.value.clone())
        .map_err(|_| corrupt("kafka.topic is not utf-8", topic_meta.position))?;
    let partition: i32 = canonical(field(KEY_PARTITION)?, |v: &i32| v.to_string())?;
    let first_offset: i64 = canonical(field(KEY_FIRST_OFFSET)?, |v: &i64| v.to_string())?;
    let next_offset: i64 = canonical(field(KEY_NEXT_OFFSET)?, |v: &i64| fmt_offset(*v))?;
    let count_meta = field(KEY_RECORD_COUNT)?;
    let record_count: u64 = canonical(count_meta, |v: &u64| fmt_count(*v))?;
    let min_meta = field(KEY_MIN_TIMESTAMP)?;
    let max_meta = field(KEY_MAX_TIMESTAMP)?;
    let min: i64 = canonical(min_meta, |v: &i64| fmt_timestamp(*v))?;
    let max: i64 = canonical(max_meta, |v: &i64| fmt_timestamp(*v))?;
    let (min_timestamp, max_timestamp) = if record_count == 0 {
        if min == 0 && max == 0 {
            return Err(AvroError::Unfinished {
                position: count_meta.position,
            });
        }
        if min != -1 || max != -1 {
            return Err(corrupt(
                "timestamps of an empty file are not -1",
                min_meta.position,
            ));
        }
        (None, None)
    } else {
        if min > max {
            return Err(corrupt(
                format!("min timestamp {min} above max timestamp {max}"),
                min_meta.position,
            ));
        }
        (Some(min), Some(max))
    };

    if sync != sync_marker(&topic, partition, first_offset) {
        return Err(corrupt(
            "header sync marker does not match topic, partition and first offset",
            sync_at,
        ));
    }

    Ok(FileHeader {
        topic,
        partition,
        first_offset,
        codec,
        sync,
        summary: Summary {
            next_offset,
            record_count,
            min_timestamp,
            max_timestamp,
        },
        format_version,
        header_bytes,
    })
}

/// A per-file decompressor, reused from block to block.
enum Decompressor {
    Null,
    Deflate(flate2::Decompress),
    Snappy(snap::raw::Decoder),
    Zstandard(Box<zstd::stream::raw::Decoder<'static>>),
}

impl Decompressor {
    fn new(codec: Codec) -> io::Result<Decompressor> {
        Ok(match codec {
            Codec::Null => Decompressor::Null,
            Codec::Deflate { .. } => Decompressor::Deflate(flate2::Decompress::new(false)),
            Codec::Snappy => Decompressor::Snappy(snap::raw::Decoder::new()),
            Codec::Zstandard { .. } => {
                Decompressor::Zstandard(Box::new(zstd::stream::raw::Decoder::new()?))
            }
        })
    }

    /// Decompresses one block from `raw` into `out`; `Err` says what is wrong.
    fn run(&mut self, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), String> {
        out.clear();
        match self {
            Decompressor::Null => std::mem::swap(raw, out),
            Decompressor::Deflate(d) => {
                d.reset(false);
                let (in0, out0) = (d.total_in(), d.total_out());
                loop {
                    if out.len() > MAX_BLOCK_BYTES {
                        return Err("decompressed block larger than 256 MiB".into());
                    }
                    out.reserve(64 << 10);
                    let (before_in, before_out) = (d.total_in(), d.total_out());
                    let consumed = (before_in - in0) as usize;
                    let status = d
                        .decompress_vec(&raw[consumed..], out, flate2::FlushDecompress::None)
                        .map_err(|e| format!("bad deflate data: {e}"))?;
                    if status == flate2::Status::StreamEnd {
                        break;
                    }
                    if d.total_in() == before_in && d.total_out() == before_out {
                        return Err("truncated deflate data".into());
                    }
                }
                if (d.total_in() - in0) as usize != raw.len() {
                    return Err("bytes after the end of the deflate data".into());
                }
                debug_assert_eq!((d.total_out() - out0) as usize, out.len());
            }
            Decompressor::Snappy(d) => {
                let Some(data_len) = raw.len().checked_sub(4) else {
                    return Err("snappy block shorter than its crc".into());
                };
                let (data, crc) = raw.split_at(data_len);
                let len =
                    snap::raw::decompress_len(data).map_err(|e| format!("bad snappy data: {e}"))?;
                if len > MAX_BLOCK_BYTES {
                    return Err("decompressed block larger than 256 MiB".into());
                }
                out.resize(len, 0);
                let n = d
                    .decompress(data, out)
                    .map_err(|e| format!("bad snappy data: {e}"))?;
                if n != len {
                    return Err("snappy data shorter than its declared length".into());
                }
                let want = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
                let got = crc32fast::hash(out);
                if got != want {
                    return Err(format!(
                        "snappy crc32 mismatch: block says {want:08x}, data has {got:08x}"
                    ));
                }
            }
            Decompressor::Zstandard(d) => {
                d.reinit().map_err(|e| format!("zstd: {e}"))?;
                let mut input = InBuffer::around(raw);
                loop {
                    if out.len() > MAX_BLOCK_BYTES {
                        return Err("decompressed block larger than 256 MiB".into());
                    }
                    out.reserve(zstd::zstd_safe::DCtx::out_size());
                    let (before_in, before_out) = (input.pos(), out.len());
                    let mut output = OutBuffer::around_pos(out, before_out);
                    let hint = d
                        .run(&mut input, &mut output)
                        .map_err(|e| format!("bad zstandard data: {e}"))?;
                    let produced = output.pos() - before_out;
                    if hint == 0 {
                        break;
                    }
                    if input.pos() == before_in && produced == 0 {
                        return Err("truncated zstandard data".into());
                    }
                }
                if input.pos() != raw.len() {
                    return Err("bytes after the end of the zstandard frame".into());
                }
            }
        }
        if out.len() > MAX_BLOCK_BYTES {
            return Err("decompressed block larger than 256 MiB".into());
        }
        Ok(())
    }
}

/// Decodes Avro values from a decompressed block.
struct BlockCursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> BlockCursor<'a> {
    fn long(&mut self) -> Result<i64, &'static str> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let &b = self.buf.get(self.at).ok_or("data ends inside a long")?;
            self.at += 1;
            if i == 9 && b > 1 {
                break;
            }
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(unzigzag(z));
            }
        }
        Err("varint overflows a long")
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.long()?;
        if n < 0 || n as u64 > (self.buf.len() - self.at) as u64 {
            return Err("bytes or string length out of range");
        }
        let data = &self.buf[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(data)
    }

    fn nullable(&mut self) -> Result<Option<Vec<u8>>, &'static str> {
        match self.long()? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes()?.to_vec())),
            _ => Err("union index out of range"),
        }
    }

    fn record(&mut self) -> Result<OwnedRecord, &'static str> {
        let offset = self.long()?;
        let timestamp = self.long()?;
        let timestamp_type = match self.long()? {
            0 => TimestampType::Create,
            1 => TimestampType::LogAppend,
            _ => return Err("timestamp_type enum index out of range"),
        };
        let key = self.nullable()?;
        let value = self.nullable()?;
        let mut headers = Vec::new();
        loop {
            let mut count = self.long()?;
            if count == 0 {
                break;
            }
            if count < 0 {
                count = count.checked_neg().ok_or("bad array block count")?;
                self.long()?; // block size in bytes
            }
            for _ in 0..count {
                let key =
                    std::str::from_utf8(self.bytes()?).map_err(|_| "header key is not utf-8")?;
                headers.push((key.to_owned(), self.nullable()?));
            }
        }
        Ok(OwnedRecord {
            offset,
            timestamp,
            timestamp_type,
            key,
            value,
            headers,
        })
    }
}

/// Reads the records of an archive file, checking everything it can.
pub struct Reader<R: Read> {
    src: Counted<R>,
    header: FileHeader,
    decompressor: Decompressor,
    raw: Vec<u8>,
    block: Vec<u8>,
    /// Decode position in `block`.
    at: usize,
    /// Records left in the current block, and how many it had.
    left: u64,
    block_count: u64,
    /// File position of the current block.
    block_pos: u64,
    seen: u64,
    min_timestamp: Option<i64>,
    max_timestamp: Option<i64>,
    done: bool,
    /// Set by an error: the stream position is unknown from then on.
    failed: bool,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the header.
    pub fn new(r: R) -> Result<Self, AvroError> {
        let mut src = Counted { inner: r, pos: 0 };
        let header = parse_header(&mut src)?;
        let decompressor = Decompressor::new(header.codec)?;
        Ok(Reader {
            src,
            header,
            decompressor,
            raw: Vec::new(),
            block: Vec::new(),
            at: 0,
            left: 0,
            block_count: 0,
            block_pos: 0,
            seen: 0,
            min_timestamp: None,
            max_timestamp: None,
            done: false,
            failed: false,
        })
    }

    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// The next record, or `None` at the clean end of the file (after which
    /// the totals have been checked against the header summary).
    ///
    /// After an error, every later call fails too.
    pub fn next_record(&mut self) -> Result<Option<OwnedRecord>, AvroError> {
        if self.failed {
            return Err(corrupt("reading stopped at an earlier error", self.src.pos));
        }
        let result = self.read_record();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn read_record(&mut self) -> Result<Option<OwnedRecord>, AvroError> {
        if self.done {
            return Ok(None);
        }
        if self.left == 0 && !self.next_block()? {
            self.done = true;
            self.check_totals()?;
            return Ok(None);
        }
        let index = self.block_count - self.left;
        let mut cur = BlockCursor {
            buf: &self.block,
            at: self.at,
        };
        let record = cur.record().map_err(|e| {
            corrupt(
                format!("record {index} of the block (decoded byte {}): {e}", cur.at),
                self.block_pos,
            )
        })?;
        self.at = cur.at;
        self.left -= 1;
        if self.left == 0 && self.at != self.block.len() {
            return Err(corrupt(
                format!(
                    "{} bytes after the block's {} records",
                    self.block.len() - self.at,
                    self.block_count
                ),
                self.block_pos,
            ));
        }
        self.seen += 1;
        let t = record.timestamp;
        self.min_timestamp = Some(self.min_timestamp.map_or(t, |m| m.min(t)));
        self.max_timestamp = Some(self.max_timestamp.map_or(t, |m| m.max(t)));
        Ok(Some(record))
    }

    /// Reads, checks and decompresses the next block; `false` at end of file.
    fn next_block(&mut self) -> Result<bool, AvroError> {
        let pos = self.src.pos;
        let Some(count) = self.src.long_or_end("block count")? else {
            return Ok(false);
        };
        if count <= 0 {
            return Err(corrupt(format!("block count {count}"), pos));
        }
        let size = self.src.len("block size", MAX_BLOCK_BYTES)?;
        self.src.exact_vec(&mut self.raw, size, "block data")?;
        let sync_at = self.src.pos;
        let mut sync = [0u8; 16];
        self.src.exact(&mut sync, "block sync marker")?;
        if sync != self.header.sync {
            return Err(corrupt(
                "block sync marker does not match the header's",
                sync_at,
            ));
        }
        self.decompressor
            .run(&mut self.raw, &mut self.block)
            .map_err(|what| corrupt(what, pos))?;
        if (count as u64).saturating_mul(MIN_RECORD_BYTES as u64) > self.block.len() as u64 {
            return Err(corrupt(
                format!(
                    "block count {count} too large for {} bytes of data",
                    self.block.len()
                ),
                pos,
            ));
        }
        self.block_pos = pos;
        self.block_count = count as u64;
        self.left = count as u64;
        self.at = 0;
        Ok(true)
    }

    fn check_totals(&self) -> Result<(), AvroError> {
        let s = &self.header.summary;
        if self.seen != s.record_count
            || self.min_timestamp != s.min_timestamp
            || self.max_timestamp != s.max_timestamp
        {
            return Err(corrupt(
                format!(
                    "file holds {} records with timestamps {:?}..{:?}, header says {} with {:?}..{:?}",
                    self.seen,
                    self.min_timestamp,
                    self.max_timestamp,
                    s.record_count,
                    s.min_timestamp,
                    s.max_timestamp
                ),
                self.src.pos,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use apache_avro::types::Value;
    use proptest::prelude::*;

    use super::*;
    use crate::record::Header;

    fn borrow(r: &OwnedRecord) -> Record<'_> {
        Record {
            offset: r.offset,
            timestamp: r.timestamp,
            timestamp_type: r.timestamp_type,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: k.as_bytes(),
                    value: v.as_deref(),
                })
                .collect(),
        }
    }

    fn spec(codec: Codec, first_offset: i64, block_bytes: usize) -> FileSpec<'static> {
        FileSpec {
            topic: "events.v1",
            partition: 3,
            first_offset,
            codec,
            block_bytes,
        }
    }

    fn write(
        spec: &FileSpec,
        records: &[OwnedRecord],
        next_offset: i64,
    ) -> (Vec<u8>, Finished<Cursor<Vec<u8>>>) {
        let mut w = Writer::new(Cursor::new(Vec::new()), spec).unwrap();
        let mut encoded = 0;
        for r in records {
            encoded += w.append(&borrow(r)).unwrap() as u64;
        }
        assert_eq!(w.records(), records.len() as u64);
        assert_eq!(w.encoded_bytes(), encoded);
        let finished = w.finish(next_offset).unwrap();
        let bytes = finished.out.get_ref().clone();
        assert_eq!(finished.out.position(), bytes.len() as u64);
        assert_eq!(finished.file_bytes, bytes.len() as u64);
        assert_eq!(finished.crc32c, crc32c::crc32c(&bytes));
        (bytes, finished)
    }

    fn read_ours(bytes: &[u8]) -> Result<(FileHeader, Vec<OwnedRecord>), AvroError> {
        let mut r = Reader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok((r.header().clone(), out))
    }

    fn nullable(v: &Value) -> Option<Vec<u8>> {
        match v {
            Value::Union(0, inner) if **inner == Value::Null => None,
            Value::Union(1, inner) => match &**inner {
                Value::Bytes(b) => Some(b.clone()),
                other => panic!("not bytes: {other:?}"),
            },
            other => panic!("not a [null, bytes] union: {other:?}"),
        }
    }

    fn from_apache(v: Value) -> OwnedRecord {
        let Value::Record(fields) = v else {
            panic!("not a record: {v:?}")
        };
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "offset",
                "timestamp",
                "timestamp_type",
                "key",
                "value",
                "headers"
            ]
        );
        let long = |v: &Value| match v {
            Value::Long(l) => *l,
            other => panic!("not a long: {other:?}"),
        };
        OwnedRecord {
            offset: long(&fields[0].1),
            timestamp: long(&fields[1].1),
            timestamp_type: match &fields[2].1 {
                Value::Enum(0, s) if s == "create" => TimestampType::Create,
                Value::Enum(1, s) if s == "log_append" => TimestampType::LogAppend,
                other => panic!("bad enum {other:?}"),
            },
            key: nullable(&fields[3].1),
            value: nullable(&fields[4].1),
            headers: match &fields[5].1 {
                Value::Array(items) => items
                    .iter()
                    .map(|item| match item {
                        Value::Record(f)
                            if f.len() == 2 && f[0].0 == "key" && f[1].0 == "value" =>
                        {
                            let Value::String(k) = &f[0].1 else {
                                panic!("header key not a string: {f:?}")
                            };
                            (k.clone(), nullable(&f[1].1))
                        }
                        other => panic!("bad header {other:?}"),
                    })
                    .collect(),
                other => panic!("not an array: {other:?}"),
            },
        }
    }

    /// Reads with apache-avro: user metadata and records.
    fn read_apache(bytes: &[u8]) -> (std::collections::HashMap<String, Vec<u8>>, Vec<OwnedRecord>) {
        let reader = apache_avro::Reader::new(bytes).expect("apache-avro reads the header");
        let schema = apache_avro::Schema::parse_str(SCHEMA).unwrap();
        assert_eq!(
            reader.writer_schema().canonical_form(),
            schema.canonical_form()
        );
        let meta = reader.user_metadata().clone();
        let records = reader
            .map(|v| from_apache(v.expect("apache-avro reads a record")))
            .collect();
        (meta, records)
    }

    fn meta_str(meta: &std::collections::HashMap<String, Vec<u8>>, key: &str) -> String {
        String::from_utf8(meta.get(key).unwrap_or_else(|| panic!("no {key}")).clone()).unwrap()
    }

    fn rec(offset: i64, timestamp: i64, value: &[u8]) -> OwnedRecord {
        OwnedRecord {
            offset,
            timestamp,
            timestamp_type: TimestampType::Create,
            key: Some(format!("k{offset}").into_bytes()),
            value: Some(value.to_vec()),
            headers: vec![("h".into(), Some(b"v".to_vec())), ("n".into(), None)],
        }
    }

    fn some_records(n: i64) -> Vec<OwnedRecord> {
        (0..n)
            .map(|i| {
                rec(
                    100 + i,
                    1_700_000_000_000 + (i * 7919) % 1000,
                    format!(
                        "{{\"n\":{i},\"pad\":\"{}\"}}",
                        "x".repeat((i % 50) as usize)
                    )
                    .as_bytes(),
                )
            })
            .collect()
    }

    const CODECS: [Codec; 4] = [
        Codec::Null,
        Codec::Deflate { level: 6 },
        Codec::Snappy,
        Codec::Zstandard { level: 3 },
    ];

    fn arb_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            Just(None),
            Just(Some(Vec::new())),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Some),
            "\\PC{0,40}".prop_map(|s| Some(s.into_bytes())),
        ]
    }

    fn arb_long() -> impl Strategy<Value = i64> {
        prop_oneof![
            any::<i64>(),
            -3i64..3,
            Just(i64::MIN),
            Just(i64::MAX),
            0i64..1 << 42,
        ]
    }

    fn arb_record() -> impl Strategy<Value = OwnedRecord> {
        (
            arb_long(),
            arb_long(),
            any::<bool>(),
            arb_bytes(),
            arb_bytes(),
            proptest::collection::vec(("\\PC{0,12}", arb_bytes()), 0..4),
        )
            .prop_map(
                |(offset, timestamp, log_append, key, value, headers)| OwnedRecord {
                    offset,
                    timestamp,
                    timestamp_type: if log_append {
                        TimestampType::LogAppend
                    } else {
                        TimestampType::Create
                    },
                    key,
                    value,
                    headers,
                },
            )
    }

    fn arb_codec() -> impl Strategy<Value = Codec> {
        prop_oneof![
            Just(Codec::Null),
            (0u32..=9).prop_map(|level| Codec::Deflate { level }),
            Just(Codec::Snappy),
            (-5i32..=9).prop_map(|level| Codec::Zstandard { level }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn round_trip(
            records in proptest::collection::vec(arb_record(), 0..30),
            codec in arb_codec(),
            block_bytes in 1usize..300,
            topic in "\\PC{0,20}",
            partition in any::<i32>(),
            first_offset in arb_long(),
            next_offset in arb_long(),
        ) {
            let spec = FileSpec { topic: &topic, partition, first_offset, codec, block_bytes };
            let (bytes, finished) = write(&spec, &records, next_offset);
            let want = Summary {
                next_offset,
                record_count: records.len() as u64,
                min_timestamp: records.iter().map(|r| r.timestamp).min(),
                max_timestamp: records.iter().map(|r| r.timestamp).max(),
            };
            prop_assert_eq!(finished.summary, want);

            let (meta, theirs) = read_apache(&bytes);
            prop_assert_eq!(&theirs, &records);
            prop_assert_eq!(meta_str(&meta, "kafka.topic"), topic.clone());
            prop_assert_eq!(meta_str(&meta, "kafka.partition"), partition.to_string());
            prop_assert_eq!(meta_str(&meta, "kafka.first_offset"), first_offset.to_string());
            prop_assert_eq!(meta_str(&meta, "kafka.next_offset"), format!("{next_offset:020}"));
            prop_assert_eq!(meta_str(&meta, "kafka.record_count"), format!("{:020}", records.len()));
            let (min, max) = (want.min_timestamp.unwrap_or(-1), want.max_timestamp.unwrap_or(-1));
            prop_assert_eq!(meta_str(&meta, "kafka.min_timestamp"), format!("{min:+020}"));
            prop_assert_eq!(meta_str(&meta, "kafka.max_timestamp"), format!("{max:+020}"));
            prop_assert_eq!(meta_str(&meta, "kafka_store.format_version"), "1");

            let (header, ours) = read_ours(&bytes).unwrap();
            prop_assert_eq!(&ours, &records);
            prop_assert_eq!(&header.topic, &topic);
            prop_assert_eq!(header.partition, partition);
            prop_assert_eq!(header.first_offset, first_offset);
            prop_assert_eq!(header.codec.avro_name(), codec.avro_name());
            prop_assert_eq!(header.sync, sync_marker(&topic, partition, first_offset));
            prop_assert_eq!(header.summary, want);
            prop_assert_eq!(header.format_version, FORMAT_VERSION);
            prop_assert_eq!(read_header(&mut &bytes[..]).unwrap(), header.clone());
            // The blocks start right after the header and each ends with the sync marker.
            if !records.is_empty() {
                prop_assert_eq!(&bytes[header.header_bytes as usize - 16..header.header_bytes as usize], &header.sync);
                prop_assert_eq!(&bytes[bytes.len() - 16..], &header.sync);
            } else {
                prop_assert_eq!(header.header_bytes, bytes.len() as u64);
            }

            // Determinism: the same input gives the same bytes.
            let (again, _) = write(&spec, &records, next_offset);
            prop_assert_eq!(again, bytes);
        }
    }

    #[test]
    fn deterministic_and_sync_depends_on_first_offset() {
        let records = some_records(500);
        for codec in CODECS {
            let (a, _) = write(&spec(codec, 100, 4096), &records, 600);
            let (b, _) = write(&spec(codec, 100, 4096), &records, 600);
            assert_eq!(a, b, "{codec:?}");
            let (c, _) = write(&spec(codec, 101, 4096), &records, 600);
            assert_ne!(a[a.len() - 16..], c[c.len() - 16..], "{codec:?}");
            assert_eq!(
                Reader::new(&c[..]).unwrap().header().sync,
                sync_marker("events.v1", 3, 101)
            );
            // Several blocks were written, and apache-avro reads them all.
            assert!(
                a.windows(16)
                    .filter(|w| *w == sync_marker("events.v1", 3, 100))
                    .count()
                    > 3
            );
            assert_eq!(read_apache(&a).1, records);
        }
        assert_ne!(
            sync_marker("events.v1", 3, 100),
            sync_marker("events.v1", 3, 101)
        );
        assert_ne!(
            sync_marker("events.v1", 3, 100),
            sync_marker("events.v1", 4, 100)
        );
        assert_ne!(
            sync_marker("events.v1", 3, 100),
            sync_marker("events.v2", 3, 100)
        );
    }

    /// The data of each block, as (record count, bytes).
    fn blocks(bytes: &[u8]) -> Vec<(i64, Vec<u8>)> {
        let mut cur = BlockCursor {
            buf: bytes,
            at: read_header(&mut &bytes[..]).unwrap().header_bytes as usize,
        };
        let mut out = Vec::new();
        while cur.at < bytes.len() {
            let count = cur.long().unwrap();
            out.push((count, cur.bytes().unwrap().to_vec()));
            cur.at += 16;
        }
        out
    }

    /// A block's bytes depend only on its records (compressors are reset, so
    /// no history leaks from one block into the next).
    #[test]
    fn blocks_do_not_depend_on_earlier_blocks() {
        let records = some_records(40);
        for codec in CODECS {
            let (whole, _) = write(&spec(codec, 100, 600), &records, 140);
            let whole = blocks(&whole);
            assert!(whole.len() > 3, "{codec:?}");
            let first = whole[0].0 as usize;
            let (rest, _) = write(&spec(codec, 7, 600), &records[first..], 140);
            assert_eq!(blocks(&rest), whole[1..], "{codec:?}");
        }
    }

    #[test]
    fn block_boundaries() {
        // Each record alone reaches block_bytes: one block per record.
        let records = some_records(5);
        let (bytes, _) = write(&spec(Codec::Null, 100, 1), &records, 105);
        let sync = sync_marker("events.v1", 3, 100);
        assert_eq!(bytes.windows(16).filter(|w| *w == sync).count(), 1 + 5);
        // Everything in one block.
        let (bytes, _) = write(&spec(Codec::Null, 100, 1 << 20), &records, 105);
        assert_eq!(bytes.windows(16).filter(|w| *w == sync).count(), 1 + 1);
    }

    #[test]
    fn empty_file() {
        for codec in CODECS {
            let (bytes, finished) = write(&spec(codec, 42, 1024), &[], 42);
            assert_eq!(
                finished.summary,
                Summary {
                    next_offset: 42,
                    record_count: 0,
                    min_timestamp: None,
                    max_timestamp: None
                }
            );
            let (meta, records) = read_apache(&bytes);
            assert!(records.is_empty());
            assert_eq!(
                meta_str(&meta, "kafka.min_timestamp"),
                "-0000000000000000001"
            );
            assert_eq!(meta_str(&meta, "kafka.next_offset"), "00000000000000000042");
            let (header, records) = read_ours(&bytes).unwrap();
            assert!(records.is_empty());
            assert_eq!(header.summary, finished.summary);
            assert_eq!(header.header_bytes, bytes.len() as u64);
        }
    }

    #[test]
    fn invalid_header_key_is_refused_and_leaves_no_trace() {
        let records = some_records(3);
        let bad = Record {
            offset: 777,
            timestamp: 1,
            timestamp_type: TimestampType::LogAppend,
            key: None,
            value: Some(b"never written"),
            headers: vec![
                Header {
                    key: b"fine",
                    value: None,
                },
                Header {
                    key: b"\xff\xfe",
                    value: Some(b"x"),
                },
            ],
        };
        for codec in CODECS {
            let mut w = Writer::new(Cursor::new(Vec::new()), &spec(codec, 100, 1)).unwrap();
            w.append(&borrow(&records[0])).unwrap();
            let err = w.append(&bad).unwrap_err();
            assert!(
                matches!(err, AvroError::InvalidHeaderKey { offset: 777 }),
                "{err:?}"
            );
            assert!(err.to_string().contains("777"), "{err}");
            assert_eq!(w.records(), 1);
            w.append(&borrow(&records[1])).unwrap();
            w.append(&borrow(&records[2])).unwrap();
            let bytes = w.finish(103).unwrap().out.into_inner();
            let (clean, _) = write(&spec(codec, 100, 1), &records, 103);
            assert_eq!(bytes, clean);
            assert_eq!(read_apache(&bytes).1, records);
        }
    }

    #[test]
    fn summary_fields_are_fixed_width_and_patched() {
        let records = vec![rec(5, -20, b"a"), rec(6, 1_700_000_000_000, b"b")];
        let (bytes, _) = write(&spec(Codec::Deflate { level: 6 }, 5, 1024), &records, 7);
        let find = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
        assert!(find("\x22kafka.next_offset\x2800000000000000000007"));
        assert!(find("\x24kafka.record_count\x2800000000000000000002"));
        assert!(find("\x26kafka.min_timestamp\x28-0000000000000000020"));
        assert!(find("\x26kafka.max_timestamp\x28+0000001700000000000"));
        // Extremes still fit in 20 characters.
        assert_eq!(fmt_offset(i64::MIN).len(), 20);
        assert_eq!(fmt_offset(i64::MAX).len(), 20);
        assert_eq!(fmt_count(u64::MAX).len(), 20);
        assert_eq!(fmt_timestamp(i64::MIN).len(), 20);
        assert_eq!(fmt_timestamp(i64::MAX).len(), 20);
    }

    #[test]
    fn header_at_nonzero_position() {
        let records = some_records(10);
        let mut out = Cursor::new(b"prefix".to_vec());
        out.set_position(6);
        let mut w = Writer::new(out, &spec(Codec::Snappy, 100, 100)).unwrap();
        for r in &records {
            w.append(&borrow(r)).unwrap();
        }
        let f = w.finish(110).unwrap();
        let all = f.out.into_inner();
        assert_eq!(&all[..6], b"prefix");
        assert_eq!(f.file_bytes, all.len() as u64 - 6);
        assert_eq!(f.crc32c, crc32c::crc32c(&all[6..]));
        assert_eq!(read_ours(&all[6..]).unwrap().1, records);
    }

    #[test]
    fn bad_levels_are_refused() {
        let r = Writer::new(
            Cursor::new(Vec::new()),
            &spec(Codec::Deflate { level: 10 }, 0, 1),
        );
        assert_eq!(r.err().unwrap().kind(), io::ErrorKind::InvalidInput);
        let r = Writer::new(
            Cursor::new(Vec::new()),
            &spec(Codec::Zstandard { level: 1000 }, 0, 1),
        );
        assert_eq!(r.err().unwrap().kind(), io::ErrorKind::InvalidInput);
    }

    fn expect_corrupt(bytes: &[u8], needle: &str) -> u64 {
        match read_ours(bytes) {
            Err(AvroError::Corrupt { what, position }) => {
                assert!(what.contains(needle), "{what:?} lacks {needle:?}");
                let msg = AvroError::Corrupt { what, position }.to_string();
                assert!(msg.contains(&position.to_string()), "{msg}");
                position
            }
            other => panic!("expected Corrupt({needle}), got {other:?}"),
        }
    }

    #[test]
    fn reader_rejects_bad_magic_and_foreign_schema() {
        let (bytes, _) = write(&spec(Codec::Null, 100, 64), &some_records(3), 103);
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            read_ours(&bad),
            Err(AvroError::NotArchiveFile { .. })
        ));
        assert!(matches!(
            read_ours(&[]),
            Err(AvroError::NotArchiveFile { .. })
        ));
        assert!(matches!(
            read_ours(b"Obj"),
            Err(AvroError::NotArchiveFile { .. })
        ));

        // Same length, other record name.
        let at = bytes.windows(11).position(|w| w == b"KafkaRecord").unwrap();
        let mut bad = bytes.clone();
        bad[at + 10] = b'X';
        let err = read_ours(&bad).unwrap_err();
        assert!(matches!(err, AvroError::NotArchiveFile { .. }), "{err:?}");
        assert!(err.to_string().contains("schema"), "{err}");

        // A valid Avro file written by someone else.
        let schema = apache_avro::Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#,
        )
        .unwrap();
        let mut w = apache_avro::Writer::new(&schema, Vec::new()).unwrap();
        w.append_value(Value::Record(vec![("a".into(), Value::Long(1))]))
            .unwrap();
        let foreign = w.into_inner().unwrap();
        assert!(matches!(
            read_ours(&foreign),
            Err(AvroError::NotArchiveFile { .. })
        ));
        assert!(matches!(
            read_header(&mut &foreign[..]),
            Err(AvroError::NotArchiveFile { .. })
        ));
    }

    #[test]
    fn reader_rejects_corrupt_sync_markers() {
        for codec in CODECS {
            let (bytes, _) = write(&spec(codec, 100, 256), &some_records(20), 120);
            let header_bytes = read_header(&mut &bytes[..]).unwrap().header_bytes as usize;
            // The last block's marker.
            let mut bad = bytes.clone();
            let n = bad.len();
            bad[n - 3] ^= 0x40;
            assert_eq!(expect_corrupt(&bad, "sync marker"), n as u64 - 16);
            // The header's marker no longer matches its derivation.
            let mut bad = bytes.clone();
            bad[header_bytes - 1] ^= 1;
            assert_eq!(
                expect_corrupt(&bad, "sync marker"),
                header_bytes as u64 - 16
            );
        }
    }

    #[test]
    fn reader_rejects_truncation() {
        for codec in CODECS {
            let (bytes, _) = write(&spec(codec, 100, 256), &some_records(20), 120);
            let header_bytes = read_header(&mut &bytes[..]).unwrap().header_bytes as usize;
            for cut in [
                bytes.len() - 1,
                bytes.len() - 16,
                bytes.len() - 20,
                header_bytes + 1,
                header_bytes + 3,
            ] {
                expect_corrupt(&bytes[..cut], "truncated");
            }
            // Cut exactly at a block boundary: the header summary disagrees.
            expect_corrupt(&bytes[..header_bytes], "header says 20");
            // Cut inside the header.
            assert!(read_ours(&bytes[..header_bytes - 1]).is_err());
            assert!(read_ours(&bytes[..100]).is_err());
        }
    }

    #[test]
    fn reader_rejects_corrupt_block_data() {
        let records = some_records(20);
        // Snappy: a flipped CRC byte.
        let (mut bytes, _) = write(&spec(Codec::Snappy, 100, 1 << 20), &records, 120);
        let n = bytes.len();
        bytes[n - 17] ^= 1;
        expect_corrupt(&bytes, "crc32");
        // Deflate and zstandard: garbage inside the compressed data.
        for codec in [Codec::Deflate { level: 6 }, Codec::Zstandard { level: 3 }] {
            let (bytes, _) = write(&spec(codec, 100, 1 << 20), &records, 120);
            let header_bytes = read_header(&mut &bytes[..]).unwrap().header_bytes as usize;
            let mut bad = bytes.clone();
            for b in &mut bad[header_bytes + 4..header_bytes + 40] {
                *b = 0xff;
            }
            assert!(
                matches!(read_ours(&bad), Err(AvroError::Corrupt { .. })),
                "{codec:?}"
            );
        }
        // Null: a record count larger than the block holds.
        let (bytes, _) = write(&spec(Codec::Null, 100, 1 << 20), &records, 120);
        let header_bytes = read_header(&mut &bytes[..]).unwrap().header_bytes as usize;
        let mut bad = bytes.clone();
        assert_eq!(bad[header_bytes], 40); // zigzag(20)
        bad[header_bytes] = 42;
        expect_corrupt(&bad, "record 20 of the block");
        bad[header_bytes] = 38;
        expect_corrupt(&bad, "bytes after the block's 19 records");
    }

    #[test]
    fn reader_checks_the_summary() {
        let (bytes, _) = write(
            &spec(Codec::Deflate { level: 1 }, 100, 256),
            &some_records(3),
            103,
        );
        let at = bytes
            .windows(20)
            .position(|w| w == b"00000000000000000003")
            .unwrap();
        let mut bad = bytes.clone();
        bad[at + 19] = b'4';
        expect_corrupt(&bad, "header says 4");
        bad[at + 19] = b'x';
        expect_corrupt(&bad, "bad kafka.record_count");
    }

    #[test]
    fn unfinished_file_is_reported() {
        let mut out = Cursor::new(Vec::new());
        let mut w = Writer::new(&mut out, &spec(Codec::Null, 100, 1)).unwrap();
        for r in &some_records(3) {
            w.append(&borrow(r)).unwrap();
        }
        drop(w);
        let bytes = out.into_inner();
        let err = read_ours(&bytes).unwrap_err();
        assert!(matches!(err, AvroError::Unfinished { .. }), "{err:?}");
        assert!(matches!(
            read_header(&mut &bytes[..]),
            Err(AvroError::Unfinished { .. })
        ));
    }

    #[test]
    fn io_errors_poison_the_writer() {
        /// Accepts the header, then fails.
        struct Failing(u64);
        impl Write for Failing {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.0 > 0 {
                    return Err(io::Error::other("disk full"));
                }
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Seek for Failing {
            fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
                Ok(0)
            }
        }
        let mut w = Writer::new(Failing(0), &spec(Codec::Null, 100, 1)).unwrap();
        let records = some_records(2);
        assert!(matches!(
            w.append(&borrow(&records[0])),
            Err(AvroError::Io(_))
        ));
        assert!(matches!(
            w.append(&borrow(&records[1])),
            Err(AvroError::Poisoned)
        ));
        assert!(matches!(w.finish(102), Err(AvroError::Poisoned)));
    }

    /// A Write + Seek that keeps nothing: for throughput.
    struct Discard(u64);
    impl Write for Discard {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Discard {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            if let SeekFrom::Start(p) = to {
                self.0 = p;
            }
            Ok(self.0)
        }
    }

    /// ~1 KiB JSON-like values, deterministic: an event log line with a
    /// fixed set of keys, random ids and numbers, and strings drawn from
    /// small sets (user agents, paths, event names).
    pub(super) fn json_values(n: usize) -> Vec<Vec<u8>> {
        const EVENTS: [&str; 8] = [
            "page_view",
            "click",
            "add_to_cart",
            "checkout",
            "login",
            "logout",
            "search",
            "purchase",
        ];
        const AGENTS: [&str; 4] = [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        ];
        const PATHS: [&str; 6] = [
            "/products/",
            "/cart",
            "/search?q=",
            "/account/orders/",
            "/checkout/step/",
            "/",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        (0..n)
            .map(|i| {
                let mut s = format!(
                    "{{\"event_id\":\"{:016x}{:016x}\",\"seq\":{i},\"event\":\"{}\",\"ts\":\"2024-03-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\"user\":{{\"id\":{},\"session\":\"{:012x}\",\"country\":\"{}\"}},\"http\":{{\"method\":\"GET\",\"status\":{},\"path\":\"{}{}\",\"user_agent\":\"{}\",\"latency_ms\":{}}},\"items\":[",
                    next(),
                    next(),
                    EVENTS[(next() % 8) as usize],
                    1 + next() % 28,
                    next() % 24,
                    next() % 60,
                    next() % 60,
                    next() % 1000,
                    next() % 1_000_000,
                    next() & 0xffff_ffff_ffff,
                    ["US", "DE", "FR", "BR", "JP", "IN"][(next() % 6) as usize],
                    [200, 200, 200, 304, 404, 500][(next() % 6) as usize],
                    PATHS[(next() % 6) as usize],
                    next() % 100_000,
                    AGENTS[(next() % 4) as usize],
                    next() % 2000,
                );
                while s.len() < 1000 {
                    s.push_str(&format!(
                        "{{\"sku\":\"SKU-{:08}\",\"qty\":{},\"price\":{}.{:02}}},",
                        next() % 100_000_000,
                        1 + next() % 5,
                        next() % 500,
                        next() % 100
                    ));
                }
                s.push_str("{}]}");
                s.into_bytes()
            })
            .collect()
    }

    /// `cargo test --release -- --ignored --nocapture throughput`
    #[test]
    #[ignore = "a micro-benchmark of the encoder: run with --release --ignored --nocapture"]
    fn throughput() {
        let values = json_values(4096);
        let records: Vec<OwnedRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| OwnedRecord {
                offset: i as i64,
                timestamp: 1_700_000_000_000 + i as i64,
                timestamp_type: TimestampType::Create,
                key: Some(format!("user_{}", i % 977).into_bytes()),
                value: Some(v.clone()),
                headers: vec![("trace".into(), Some(b"abc123".to_vec()))],
            })
            .collect();
        let borrowed: Vec<Record<'_>> = records.iter().map(borrow).collect();
        for codec in [
            Codec::Null,
            Codec::Deflate { level: 6 },
            Codec::Deflate { level: 1 },
            Codec::Snappy,
            Codec::Zstandard { level: 3 },
            Codec::Zstandard { level: 1 },
        ] {
            let mut best = 0.0f64;
            let mut ratio = 0.0;
            for _ in 0..3 {
                let start = std::time::Instant::now();
                let mut w = Writer::new(Discard(0), &spec(codec, 0, 1 << 20)).unwrap();
                for _ in 0..25 {
                    for r in &borrowed {
                        w.append(r).unwrap();
                    }
                }
                let encoded = w.encoded_bytes();
                let f = w.finish(0).unwrap();
                let secs = start.elapsed().as_secs_f64();
                best = best.max(encoded as f64 / secs / 1e6);
                ratio = encoded as f64 / f.file_bytes as f64;
            }
            println!("{codec:?}: {best:.0} MB/s of encoded input, ratio {ratio:.2}");
        }
        // Baseline: the compressor alone, one call per 1 MiB of the same bytes.
        let mut all = Vec::new();
        for r in &borrowed {
            encode_record(&mut all, r);
        }
        let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut out = Vec::with_capacity(2 << 20);
        let start = std::time::Instant::now();
        for _ in 0..25 {
            for chunk in all.chunks(1 << 20) {
                c.reset();
                out.clear();
                let status = c
                    .compress_vec(chunk, &mut out, flate2::FlushCompress::Finish)
                    .unwrap();
                assert_eq!(status, flate2::Status::StreamEnd);
            }
        }
        let mb = 25.0 * all.len() as f64 / 1e6;
        println!(
            "baseline flate2::Compress level 6, one shot per MiB: {:.0} MB/s",
            mb / start.elapsed().as_secs_f64()
        );
    }
}
