//! The strict reader: checks everything the layout promises while it reads
//! records back (see the module doc of `format::avro`).

use std::io::{self, Read};

use zstd::stream::raw::{InBuffer, Operation, OutBuffer};

use uuid::Uuid;

use super::layout::{
    AvroError, Codec, FORMAT_VERSION, KEY_CODEC, KEY_FIRST_OFFSET, KEY_FORMAT_VERSION,
    KEY_LAST_EPOCH, KEY_MAX_TIMESTAMP, KEY_MIN_TIMESTAMP, KEY_NEXT_OFFSET, KEY_PARTITION,
    KEY_RECORD_COUNT, KEY_SCHEMA, KEY_SKIPPED, KEY_TOPIC, KEY_TOPIC_ID, MAGIC, MAX_BLOCK_BYTES,
    MAX_META_BYTES, MAX_META_ENTRIES, MIN_RECORD_BYTES, SCHEMA, SCHEMA_V1, Skipped, Summary,
    corrupt, fmt_count, fmt_epoch, fmt_offset, fmt_timestamp, not_archive, sync_marker,
};
use crate::format::record::{OwnedRecord, TimestampType};

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
    /// The topic's id in Kafka, when the file records it.
    pub topic_id: Option<Uuid>,
    /// Set for a file that makes a skipped range explicit.
    pub skipped: Option<Skipped>,
    /// 1 or 2 (see [`FORMAT_VERSION`]).
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
    let schema_version = match get(KEY_SCHEMA) {
        Some(m) if m.value == SCHEMA.as_bytes() => 2,
        Some(m) if m.value == SCHEMA_V1.as_bytes() => 1,
        Some(_) => return Err(not_archive("schema is not the kafka-store record schema")),
        None => return Err(not_archive("no avro.schema")),
    };
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
        Some(m) if m.value == b"1" && schema_version == 1 => 1,
        Some(m) if m.value == b"2" && schema_version == 2 => 2,
        Some(m) => {
            return Err(not_archive(format!(
                "format version {:?} with a format-{schema_version} schema, this build reads 1 and {FORMAT_VERSION}",
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

    let (last_epoch, topic_id, skipped) = if format_version == 1 {
        (None, None, None)
    } else {
        let epoch: i32 = canonical(field(KEY_LAST_EPOCH)?, |v: &i32| fmt_epoch(Some(*v)))?;
        let topic_id = get(KEY_TOPIC_ID)
            .map(|m| {
                std::str::from_utf8(&m.value)
                    .ok()
                    .and_then(|s| {
                        Uuid::try_parse(s)
                            .ok()
                            .filter(|u| u.hyphenated().to_string() == s)
                    })
                    .ok_or_else(|| corrupt("bad kafka.topic_id", m.position))
            })
            .transpose()?;
        let skipped = get(KEY_SKIPPED)
            .map(|m| {
                std::str::from_utf8(&m.value)
                    .ok()
                    .and_then(Skipped::parse)
                    .ok_or_else(|| corrupt("bad kafka.skipped", m.position))
            })
            .transpose()?;
        if skipped.is_some() && record_count > 0 {
            return Err(corrupt(
                "a skipped range holds records",
                count_meta.position,
            ));
        }
        ((epoch >= 0).then_some(epoch), topic_id, skipped)
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
            last_epoch,
        },
        topic_id,
        skipped,
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
pub(super) struct BlockCursor<'a> {
    pub(super) buf: &'a [u8],
    pub(super) at: usize,
}

impl<'a> BlockCursor<'a> {
    pub(super) fn long(&mut self) -> Result<i64, &'static str> {
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

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
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

    /// One record; `raw_keys`: the format-2 header layout.
    pub(super) fn record(&mut self, raw_keys: bool) -> Result<OwnedRecord, &'static str> {
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
                let key = self.bytes()?;
                std::str::from_utf8(key).map_err(|_| "header key is not utf-8")?;
                let value = self.nullable()?;
                let raw = if raw_keys { self.nullable()? } else { None };
                headers.push((raw.unwrap_or_else(|| key.to_vec()), value));
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
        let record = cur.record(self.header.format_version >= 2).map_err(|e| {
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
