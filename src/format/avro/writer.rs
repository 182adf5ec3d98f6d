//! The deterministic writer. An open file is a [`Writer`]: a few counters,
//! no buffer, no compressor and no file handle. The encoded records of the
//! block under construction go straight to the file (a [`Spooled`]); when
//! the block is full they are read back and compressed whole by the
//! [`Workbench`] that the writing thread owns for all its files, and the
//! block replaces them. `finish` patches the header summary in place.
//!
//! So the memory of an open file does not depend on its codec or block
//! size, and a thread writing to many files keeps one compressor.

use std::io;
use std::sync::Arc;

use uuid::Uuid;

use super::layout::{
    AvroError, Codec, EPOCH_WIDTH, FORMAT_VERSION, FileSpec, KEY_CODEC, KEY_FIRST_OFFSET,
    KEY_FORMAT_VERSION, KEY_LAST_EPOCH, KEY_MAX_TIMESTAMP, KEY_MIN_TIMESTAMP, KEY_NEXT_OFFSET,
    KEY_PARTITION, KEY_RECORD_COUNT, KEY_SCHEMA, KEY_SKIPPED, KEY_TOPIC, KEY_TOPIC_ID, MAGIC,
    SCHEMA, SUMMARY_WIDTH, Skipped, Summary, escape_key, fmt_count, fmt_epoch, fmt_offset,
    fmt_timestamp, sync_marker,
};
use crate::format::record::{Record, TimestampType};

/// What `finish` reports.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    pub summary: Summary,
    /// The file's size (header and blocks).
    pub file_bytes: u64,
    /// CRC32C of those bytes, header as patched.
    pub crc32c: u32,
}

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

/// Appends the Avro encoding of `r` to `buf`. A header key that is not
/// UTF-8 goes in escaped as `key` and as it is as `raw_key`.
pub(super) fn encode_record(buf: &mut Vec<u8>, r: &Record<'_>) {
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
            match std::str::from_utf8(h.key) {
                Ok(_) => {
                    put_bytes(buf, h.key);
                    put_nullable(buf, h.value);
                    put_nullable(buf, None);
                }
                Err(_) => {
                    put_bytes(buf, escape_key(h.key).as_bytes());
                    put_nullable(buf, h.value);
                    put_nullable(buf, Some(h.key));
                }
            }
        }
    }
    buf.push(0);
}

/// The header as written, with where the summary values sit in it.
struct HeaderImage {
    bytes: Vec<u8>,
    /// next_offset, record_count, min_timestamp, max_timestamp, last_epoch.
    summary_at: [usize; 5],
}

impl HeaderImage {
    fn new(spec: &FileSpec<'_>, sync: &[u8; 16]) -> HeaderImage {
        let mut b = Vec::with_capacity(1024);
        b.extend_from_slice(&MAGIC);
        let entries = 11 + i64::from(spec.topic_id.is_some()) + i64::from(spec.skipped.is_some());
        put_long(&mut b, entries);
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
        if let Some(id) = spec.topic_id {
            entry(&mut b, KEY_TOPIC_ID, id.hyphenated().to_string().as_bytes());
        }
        let summary_at = [
            entry(&mut b, KEY_NEXT_OFFSET, fmt_offset(0).as_bytes()),
            entry(&mut b, KEY_RECORD_COUNT, fmt_count(0).as_bytes()),
            entry(&mut b, KEY_MIN_TIMESTAMP, fmt_timestamp(0).as_bytes()),
            entry(&mut b, KEY_MAX_TIMESTAMP, fmt_timestamp(0).as_bytes()),
            entry(&mut b, KEY_LAST_EPOCH, fmt_epoch(Some(0)).as_bytes()),
        ];
        if let Some(skipped) = spec.skipped {
            entry(&mut b, KEY_SKIPPED, skipped.as_str().as_bytes());
        }
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
            (fmt_offset(s.next_offset), SUMMARY_WIDTH),
            (fmt_count(s.record_count), SUMMARY_WIDTH),
            (fmt_timestamp(min), SUMMARY_WIDTH),
            (fmt_timestamp(max), SUMMARY_WIDTH),
            (fmt_epoch(s.last_epoch), EPOCH_WIDTH),
        ];
        for (at, (value, width)) in self.summary_at.iter().zip(values) {
            debug_assert_eq!(value.len(), width);
            self.bytes[*at..*at + width].copy_from_slice(value.as_bytes());
        }
    }
}

/// The file being written, at positions from its start. The writer only
/// ever appends at the end, reads back the open block, replaces it with the
/// compressed block, and rewrites the header at `finish`.
pub trait Spooled {
    /// Writes `bytes` at `at`, at most the current end.
    fn write_at(&mut self, at: u64, bytes: &[u8]) -> io::Result<()>;
    /// The `len` bytes at `at` (they must be there): borrowed when they are
    /// held in memory, else read into `buf`.
    fn read_at<'a>(&'a mut self, at: u64, len: usize, buf: &'a mut Vec<u8>)
    -> io::Result<&'a [u8]>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Everything written so far stays as it is until `finish` patches the
    /// header: bytes held back can go to the file now.
    fn settle(&mut self) -> io::Result<()>;
}

/// A whole-block compressor for one codec, reused from block to block.
enum Compressor {
    Null,
    /// Raw deflate (RFC 1951) by libdeflate: whole-buffer only, which fits
    /// Avro blocks, and faster and smaller than zlib at the same level.
    Deflate(Box<libdeflater::Compressor>),
    Snappy(Box<snap::raw::Encoder>),
    /// One zstd frame per block, the context reused.
    Zstandard(Box<zstd::bulk::Compressor<'static>>),
}

impl Compressor {
    fn new(codec: Codec) -> io::Result<Compressor> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        Ok(match codec {
            Codec::Null => Compressor::Null,
            Codec::Deflate { level } => {
                if level > 9 {
                    return Err(invalid(format!("deflate level {level} is not in 0..=9")));
                }
                let level = libdeflater::CompressionLvl::new(level as i32)
                    .map_err(|e| invalid(format!("deflate level {level}: {e:?}")))?;
                Compressor::Deflate(Box::new(libdeflater::Compressor::new(level)))
            }
            Codec::Snappy => Compressor::Snappy(Box::new(snap::raw::Encoder::new())),
            Codec::Zstandard { level } => {
                let range = zstd::compression_level_range();
                if !range.contains(&level) {
                    return Err(invalid(format!(
                        "zstandard level {level} is not in {range:?}"
                    )));
                }
                Compressor::Zstandard(Box::new(zstd::bulk::Compressor::new(level)?))
            }
        })
    }

    /// Puts the block data of `raw` (the encoded records) at the start of
    /// `out` and returns its length. `out` only grows (and is zeroed only
    /// when it grows): its bytes past the length are left as they are.
    fn compress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        fn room(out: &mut Vec<u8>, n: usize) -> &mut [u8] {
            if out.len() < n {
                out.resize(n, 0);
            }
            &mut out[..n]
        }
        Ok(match self {
            Compressor::Null => {
                room(out, raw.len()).copy_from_slice(raw);
                raw.len()
            }
            Compressor::Deflate(c) => {
                let bound = c.deflate_compress_bound(raw.len());
                c.deflate_compress(raw, room(out, bound))
                    .map_err(|e| io::Error::other(format!("deflate: {e:?}")))?
            }
            Compressor::Snappy(enc) => {
                let bound = snap::raw::max_compress_len(raw.len());
                let n = enc
                    .compress(raw, room(out, bound + 4))
                    .map_err(io::Error::other)?;
                out[n..n + 4].copy_from_slice(&crc32fast::hash(raw).to_be_bytes());
                n + 4
            }
            Compressor::Zstandard(c) => {
                let bound = zstd::zstd_safe::compress_bound(raw.len());
                c.compress_to_buffer(raw, room(out, bound))?
            }
        })
    }
}

/// What a writing thread owns for every file it builds: the compressor of
/// the codec and the buffers of one block.
pub struct Workbench {
    codec: Codec,
    compressor: Compressor,
    /// The open block's records, when they must be read back from disk.
    raw: Vec<u8>,
    /// Their compressed form (at its start).
    compressed: Vec<u8>,
    /// The block's count and size.
    block: Vec<u8>,
    /// One record's encoding.
    record: Vec<u8>,
}

/// Buffers larger than this are released after a block (one unusually
/// large record does not keep its memory).
const KEEP: usize = 8 << 20;

impl Workbench {
    pub fn new(codec: Codec) -> io::Result<Workbench> {
        Ok(Workbench {
            codec,
            compressor: Compressor::new(codec)?,
            raw: Vec::new(),
            compressed: Vec::new(),
            block: Vec::new(),
            record: Vec::with_capacity(4096),
        })
    }

    fn shrink(&mut self) {
        for buf in [
            &mut self.raw,
            &mut self.compressed,
            &mut self.block,
            &mut self.record,
        ] {
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
        }
    }
}

/// One archive file under construction. See the module doc of
/// `format::avro` for the layout.
///
/// After any error the file is unusable: later calls return
/// [`AvroError::Poisoned`].
pub struct Writer {
    topic: Arc<str>,
    partition: i32,
    first_offset: i64,
    topic_id: Option<Uuid>,
    skipped: Option<Skipped>,
    codec: Codec,
    block_bytes: usize,
    sync: [u8; 16],
    /// Where the open block's encoded records begin (the end of the last
    /// finished block).
    block_start: u64,
    block_records: u64,
    block_encoded: u64,
    records: u64,
    encoded: u64,
    min_timestamp: Option<i64>,
    max_timestamp: Option<i64>,
    header_len: u64,
    /// CRC32C of the finished blocks (the header is added at `finish`).
    blocks_crc: u32,
    poisoned: bool,
}

impl Writer {
    /// Starts a file and writes its header (with a zeroed summary).
    pub fn new(spec: &FileSpec, out: &mut dyn Spooled) -> io::Result<Writer> {
        let sync = sync_marker(spec.topic, spec.partition, spec.first_offset);
        let header = HeaderImage::new(spec, &sync);
        out.write_at(0, &header.bytes)?;
        let header_len = header.bytes.len() as u64;
        Ok(Writer {
            topic: Arc::from(spec.topic),
            partition: spec.partition,
            first_offset: spec.first_offset,
            topic_id: spec.topic_id,
            skipped: spec.skipped,
            codec: spec.codec,
            block_bytes: spec.block_bytes,
            sync,
            block_start: header_len,
            block_records: 0,
            block_encoded: 0,
            records: 0,
            encoded: 0,
            min_timestamp: None,
            max_timestamp: None,
            header_len,
            blocks_crc: 0,
            poisoned: false,
        })
    }

    fn spec(&self) -> FileSpec<'_> {
        FileSpec {
            topic: &self.topic,
            partition: self.partition,
            first_offset: self.first_offset,
            topic_id: self.topic_id,
            skipped: self.skipped,
            codec: self.codec,
            block_bytes: self.block_bytes,
        }
    }

    /// Appends one record; returns its Avro-encoded (uncompressed) size.
    pub fn append(
        &mut self,
        record: &Record<'_>,
        bench: &mut Workbench,
        out: &mut dyn Spooled,
    ) -> Result<usize, AvroError> {
        if self.poisoned {
            return Err(AvroError::Poisoned);
        }
        debug_assert_eq!(bench.codec.avro_name(), self.codec.avro_name());
        bench.record.clear();
        encode_record(&mut bench.record, record);
        let size = bench.record.len();
        let end = self.block_start + self.block_encoded;
        if let Err(e) = out.write_at(end, &bench.record) {
            self.poisoned = true;
            return Err(e.into());
        }
        self.block_records += 1;
        self.block_encoded += size as u64;
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
        if self.block_encoded >= self.block_bytes as u64 {
            self.close_block(bench, out)?;
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

    fn close_block(
        &mut self,
        bench: &mut Workbench,
        out: &mut dyn Spooled,
    ) -> Result<(), AvroError> {
        let result = self.write_block(bench, out);
        bench.shrink();
        if result.is_err() {
            self.poisoned = true;
        }
        result.map_err(AvroError::from)
    }

    /// Reads the open block's records back, compresses them whole and puts
    /// the block in their place.
    fn write_block(&mut self, bench: &mut Workbench, out: &mut dyn Spooled) -> io::Result<()> {
        let Workbench {
            compressor,
            raw,
            compressed,
            block,
            ..
        } = bench;
        let records = out.read_at(self.block_start, self.block_encoded as usize, raw)?;
        let n = compressor.compress(records, compressed)?;
        block.clear();
        put_long(block, self.block_records as i64);
        put_long(block, n as i64);
        let mut at = self.block_start;
        for part in [&block[..], &compressed[..n], &self.sync[..]] {
            out.write_at(at, part)?;
            self.blocks_crc = crc32c::crc32c_append(self.blocks_crc, part);
            at += part.len() as u64;
        }
        out.truncate(at)?;
        out.settle()?;
        self.block_start = at;
        self.block_records = 0;
        self.block_encoded = 0;
        Ok(())
    }

    /// Closes the last block and patches the header summary in place;
    /// `last_epoch` is the leader epoch of the last batch the file covers.
    /// Does not sync.
    pub fn finish(
        mut self,
        next_offset: i64,
        last_epoch: Option<i32>,
        bench: &mut Workbench,
        out: &mut dyn Spooled,
    ) -> Result<Finished, AvroError> {
        if self.poisoned {
            return Err(AvroError::Poisoned);
        }
        if self.block_records > 0 {
            self.close_block(bench, out)?;
        }
        let summary = Summary {
            next_offset,
            record_count: self.records,
            min_timestamp: self.min_timestamp,
            max_timestamp: self.max_timestamp,
            last_epoch,
        };
        let mut header = HeaderImage::new(&self.spec(), &self.sync);
        debug_assert_eq!(header.bytes.len() as u64, self.header_len);
        header.patch(&summary);
        out.write_at(0, &header.bytes)?;
        let blocks_len = self.block_start - self.header_len;
        let crc32c = crc32c::crc32c_combine(
            crc32c::crc32c(&header.bytes),
            self.blocks_crc,
            blocks_len as usize,
        );
        Ok(Finished {
            summary,
            file_bytes: self.block_start,
            crc32c,
        })
    }
}
