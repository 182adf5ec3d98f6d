//! The deterministic writer: streams records into blocks, compresses each
//! block, and patches the header summary in place at `finish`.

use std::io::{self, Seek, SeekFrom, Write};

use flate2::write::DeflateEncoder;
use zstd::stream::raw::{InBuffer, Operation, OutBuffer};

use super::layout::{
    AvroError, Codec, EPOCH_WIDTH, FORMAT_VERSION, FileSpec, KEY_CODEC, KEY_FIRST_OFFSET,
    KEY_FORMAT_VERSION, KEY_LAST_EPOCH, KEY_MAX_TIMESTAMP, KEY_MIN_TIMESTAMP, KEY_NEXT_OFFSET,
    KEY_PARTITION, KEY_RECORD_COUNT, KEY_SCHEMA, KEY_SKIPPED, KEY_TOPIC, KEY_TOPIC_ID, MAGIC,
    SCHEMA, SUMMARY_WIDTH, Summary, escape_key, fmt_count, fmt_epoch, fmt_offset, fmt_timestamp,
    sync_marker,
};
use crate::format::record::{Record, TimestampType};

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
/// After any error from [`append`](Writer::append) or from I/O, the file is
/// unusable: later calls return [`AvroError::Poisoned`].
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
    pub fn append(&mut self, record: &Record<'_>) -> Result<usize, AvroError> {
        if self.poisoned {
            return Err(AvroError::Poisoned);
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
    /// `last_epoch` is the leader epoch of the last batch the file covers.
    pub fn finish(
        mut self,
        next_offset: i64,
        last_epoch: Option<i32>,
    ) -> Result<Finished<W>, AvroError> {
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
            last_epoch,
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
