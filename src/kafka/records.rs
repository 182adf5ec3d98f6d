//! Kafka record batches (message format v2): split a fetched record set into
//! batches, verify each batch's CRC32C, decompress it (gzip, snappy, lz4,
//! zstd), and walk its records; drop aborted transactional records the way
//! Kafka's own consumer does in `read_committed` mode.
//!
//! Pure decoding over byte slices: no I/O, no retries. It never skips a byte
//! silently: a batch that fails its CRC or does not decode is an error naming
//! its base offset; only the truncated batch a broker may leave at the end of
//! a fetch response is left alone (it is fetched again next time).

use std::collections::HashSet;
use std::io::Read;

use super::lz4;
use crate::format::record::{Header, Record, TimestampType};

/// Bytes before a v2 batch's records: base offset (8), batch length (4),
/// leader epoch (4), magic (1), crc (4), attributes (2), last offset delta
/// (4), base timestamp (8), max timestamp (8), producer id (8), producer
/// epoch (2), base sequence (4), record count (4).
pub const BATCH_HEADER_LEN: usize = 61;
/// Base offset and batch length, which the batch length does not count.
const LOG_OVERHEAD: usize = 12;
/// The CRC covers everything from the attributes to the end of the batch.
const CRC_START: usize = 21;
/// A decompressed batch larger than this is treated as corrupt: it bounds the
/// memory one batch can take (Kafka's own limit on a batch is ~1 MiB by default).
pub const MAX_DECOMPRESSED_BATCH: usize = 256 << 20;

/// A batch that cannot be decoded, with the base offset of the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("batch at offset {offset}: {reason}")]
pub struct RecordsError {
    pub offset: i64,
    pub reason: String,
}

fn corrupt(offset: i64, reason: impl Into<String>) -> RecordsError {
    RecordsError {
        offset,
        reason: reason.into(),
    }
}

/// Compression codec of a batch (attributes bits 0–2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// The fixed fields of a v2 record batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    pub fn compression(&self) -> Result<Compression, RecordsError> {
        match self.attributes & 0x07 {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            n => Err(corrupt(
                self.base_offset,
                format!("unknown compression codec {n}"),
            )),
        }
    }
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & 0x08 != 0 {
            TimestampType::LogAppend
        } else {
            TimestampType::Create
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    /// The offset after this batch: where the next fetch continues.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
}

/// One complete, CRC-checked batch borrowed from a fetch response.
#[derive(Clone, Debug)]
pub struct Batch<'a> {
    pub header: BatchHeader,
    /// The (possibly compressed) records section.
    body: &'a [u8],
}

/// Iterates over the complete batches of a record set. A truncated batch at
/// the end ends the iteration without an error; [`Batches::rest`] tells how
/// many bytes were left.
pub struct Batches<'a> {
    data: &'a [u8],
    pos: usize,
    failed: bool,
}

/// The complete batches of `data`, in order.
pub fn batches(data: &[u8]) -> Batches<'_> {
    Batches {
        data,
        pos: 0,
        failed: false,
    }
}

impl<'a> Batches<'a> {
    /// Bytes not consumed: a partial batch cut off by the fetch size limit.
    pub fn rest(&self) -> usize {
        self.data.len() - self.pos
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The header and total length of the batch at the start of `rest`, from
/// its fixed fields (CRC not checked); None when the batch is cut short.
/// The one parse of a batch header: the decoder and the fetcher's scan
/// both use it.
fn frame(rest: &[u8]) -> Result<Option<(BatchHeader, usize)>, RecordsError> {
    if rest.len() < LOG_OVERHEAD {
        return Ok(None);
    }
    let base_offset = be_i64(rest, 0);
    let batch_length = be_i32(rest, 8);
    if batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        // A v0/v1 message is shorter than a v2 header; tell which it is if we can.
        if rest.len() > 16 && rest[16] != 2 {
            return Err(corrupt(
                base_offset,
                format!("message format v{} is not supported (only v2)", rest[16]),
            ));
        }
        return Err(corrupt(
            base_offset,
            format!("invalid batch length {batch_length}"),
        ));
    }
    let total = LOG_OVERHEAD + batch_length as usize;
    if rest.len() < total {
        return Ok(None);
    }
    let raw = &rest[..total];
    let magic = raw[16] as i8;
    if magic != 2 {
        return Err(corrupt(
            base_offset,
            format!("message format v{magic} is not supported (only v2)"),
        ));
    }
    let header = BatchHeader {
        base_offset,
        batch_length,
        partition_leader_epoch: be_i32(raw, 12),
        magic,
        crc: be_i32(raw, 17) as u32,
        attributes: be_i16(raw, 21),
        last_offset_delta: be_i32(raw, 23),
        base_timestamp: be_i64(raw, 27),
        max_timestamp: be_i64(raw, 35),
        producer_id: be_i64(raw, 43),
        producer_epoch: be_i16(raw, 51),
        base_sequence: be_i32(raw, 53),
        record_count: be_i32(raw, 57),
    };
    let sane = header.last_offset_delta >= 0
        && header.record_count >= 0
        && header.base_offset >= 0
        && header
            .base_offset
            .checked_add(i64::from(header.last_offset_delta) + 1)
            .is_some();
    if !sane {
        return Err(corrupt(
            base_offset,
            format!(
                "invalid base offset {}, last offset delta {} or record count {}",
                header.base_offset, header.last_offset_delta, header.record_count
            ),
        ));
    }
    Ok(Some((header, total)))
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<Batch<'a>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = &self.data[self.pos..];
        let (header, total) = match frame(rest) {
            Ok(Some(framed)) => framed,
            Ok(None) => return None,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let raw = &rest[..total];
        let actual = crc32c::crc32c(&raw[CRC_START..]);
        if actual != header.crc {
            self.failed = true;
            return Some(Err(corrupt(
                header.base_offset,
                format!(
                    "crc32c mismatch (batch says {:08x}, bytes give {actual:08x})",
                    header.crc
                ),
            )));
        }
        self.pos += total;
        Some(Ok(Batch {
            header,
            body: &raw[BATCH_HEADER_LEN..],
        }))
    }
}

/// What the complete batches of a fetched record set cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// The offset after the last complete batch (at least the position).
    pub next: i64,
    /// Bytes those batches take.
    pub used: usize,
    /// The leader epoch of the last complete batch.
    pub last_epoch: Option<i32>,
}

/// The extent of the complete batches of `data` from `position`, from
/// batch headers only (no CRC check: the decoder does that). A batch whose
/// header is invalid is an error; the decoder reports it in full.
pub fn complete_extent(data: &[u8], position: i64) -> Result<Extent, RecordsError> {
    let mut extent = Extent {
        next: position,
        used: 0,
        last_epoch: None,
    };
    while let Some((header, total)) = frame(&data[extent.used..])? {
        extent.next = extent.next.max(header.next_offset());
        extent.used += total;
        extent.last_epoch = Some(header.partition_leader_epoch);
    }
    Ok(extent)
}

/// What a control batch says (its single record's key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    /// Other control records (e.g. KRaft or future markers): skipped.
    Other(i16),
}

impl<'a> Batch<'a> {
    /// The records section, decompressed into `scratch` when compressed.
    fn records_bytes<'s>(&'s self, scratch: &'s mut Vec<u8>) -> Result<&'s [u8], RecordsError> {
        let offset = self.header.base_offset;
        let limit = MAX_DECOMPRESSED_BATCH as u64 + 1;
        let read = |r: &mut dyn Read, scratch: &mut Vec<u8>| {
            scratch.clear();
            r.take(limit)
                .read_to_end(scratch)
                .map_err(|e| corrupt(offset, format!("cannot decompress: {e}")))
        };
        let len = match self.header.compression()? {
            Compression::None => return Ok(self.body),
            Compression::Gzip => read(&mut flate2::read::MultiGzDecoder::new(self.body), scratch)?,
            // Into the front of `scratch`, reusing its bytes unzeroed.
            Compression::Lz4 => lz4::decompress(self.body, scratch, MAX_DECOMPRESSED_BATCH)
                .map_err(|e| corrupt(offset, format!("cannot decompress: {e}")))?,
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(self.body)
                    .map_err(|e| corrupt(offset, format!("cannot start zstd: {e}")))?;
                read(&mut d, scratch)?
            }
            Compression::Snappy => {
                scratch.clear();
                snappy_decompress(self.body, scratch, offset)?;
                scratch.len()
            }
        };
        if len > MAX_DECOMPRESSED_BATCH {
            return Err(corrupt(
                offset,
                format!("decompresses to more than {MAX_DECOMPRESSED_BATCH} bytes"),
            ));
        }
        Ok(&scratch[..len])
    }

    /// Walks the batch's records (decompressing into `scratch` if needed).
    pub fn records<'s>(&'s self, scratch: &'s mut Vec<u8>) -> Result<RecordIter<'s>, RecordsError> {
        let data = self.records_bytes(scratch)?;
        Ok(RecordIter {
            header: &self.header,
            data,
            pos: 0,
            left: self.header.record_count,
        })
    }

    /// For a control batch: the marker type, from its first record's key.
    pub fn control_type(&self, scratch: &mut Vec<u8>) -> Result<ControlType, RecordsError> {
        let offset = self.header.base_offset;
        let mut records = self.records(scratch)?;
        let record = records
            .next()
            .ok_or_else(|| corrupt(offset, "control batch without a record"))??;
        let key = record
            .key
            .filter(|k| k.len() >= 4)
            .ok_or_else(|| corrupt(offset, "control record without a valid key"))?;
        Ok(match be_i16(key, 2) {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            n => ControlType::Other(n),
        })
    }
}

/// Kafka's Java producer frames snappy data the way xerial's
/// `SnappyOutputStream` does; librdkafka and others send raw snappy.
fn snappy_decompress(body: &[u8], out: &mut Vec<u8>, offset: i64) -> Result<(), RecordsError> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER: usize = 16;
    let mut decoder = snap::raw::Decoder::new();
    let mut one = |chunk: &[u8], out: &mut Vec<u8>| -> Result<(), RecordsError> {
        let len = snap::raw::decompress_len(chunk)
            .map_err(|e| corrupt(offset, format!("cannot decompress snappy: {e}")))?;
        if out.len() + len > MAX_DECOMPRESSED_BATCH {
            return Err(corrupt(
                offset,
                format!("decompresses to more than {MAX_DECOMPRESSED_BATCH} bytes"),
            ));
        }
        let start = out.len();
        out.resize(start + len, 0);
        decoder
            .decompress(chunk, &mut out[start..])
            .map_err(|e| corrupt(offset, format!("cannot decompress snappy: {e}")))?;
        Ok(())
    };
    if body.len() >= XERIAL_HEADER && body.starts_with(XERIAL_MAGIC) {
        let mut pos = XERIAL_HEADER;
        while pos < body.len() {
            if body.len() - pos < 4 {
                return Err(corrupt(offset, "truncated xerial snappy block length"));
            }
            let len = u32::from_be_bytes(body[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            pos += 4;
            if body.len() - pos < len {
                return Err(corrupt(offset, "truncated xerial snappy block"));
            }
            one(&body[pos..pos + len], out)?;
            pos += len;
        }
        Ok(())
    } else {
        one(body, out)
    }
}

/// The records of one batch, in order, checked against the batch header.
pub struct RecordIter<'s> {
    header: &'s BatchHeader,
    data: &'s [u8],
    pos: usize,
    left: i32,
}

impl<'s> RecordIter<'s> {
    fn err(&self, reason: impl Into<String>) -> RecordsError {
        corrupt(self.header.base_offset, reason)
    }

    fn varlong(&mut self) -> Result<i64, RecordsError> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.data.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn varint(&mut self) -> Result<i32, RecordsError> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| self.err(format!("varint {v} out of range")))
    }

    fn bytes(&mut self, len: usize) -> Result<&'s [u8], RecordsError> {
        if self.data.len() - self.pos < len {
            return Err(self.err("record field runs past the batch"));
        }
        let out = &self.data[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// A length-prefixed field; -1 means null.
    fn nullable(&mut self) -> Result<Option<&'s [u8]>, RecordsError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(self.err(format!("invalid field length {n}"))),
            n => self.bytes(n as usize).map(Some),
        }
    }

    fn record(&mut self) -> Result<Record<'s>, RecordsError> {
        let length = self.varint()?;
        if length < 0 || self.data.len() - self.pos < length as usize {
            return Err(self.err(format!("invalid record length {length}")));
        }
        let end = self.pos + length as usize;
        let _attributes = self.bytes(1)?;
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varint()?;
        if offset_delta < 0 || offset_delta > self.header.last_offset_delta {
            return Err(self.err(format!(
                "record offset delta {offset_delta} outside the batch (last delta {})",
                self.header.last_offset_delta
            )));
        }
        let key = self.nullable()?;
        let value = self.nullable()?;
        let count = self.varint()?;
        if count < 0 {
            return Err(self.err(format!("invalid header count {count}")));
        }
        let mut headers = Vec::with_capacity((count as usize).min(64));
        for _ in 0..count {
            let key = self
                .nullable()?
                .ok_or_else(|| self.err("record header with a null key"))?;
            let value = self.nullable()?;
            headers.push(Header { key, value });
        }
        if self.pos != end {
            return Err(self.err(format!(
                "record at delta {offset_delta} has {} bytes beyond its fields",
                end as i64 - self.pos as i64
            )));
        }
        let timestamp_type = self.header.timestamp_type();
        let timestamp = match timestamp_type {
            // Kafka rewrites only the batch's max timestamp for LogAppendTime.
            TimestampType::LogAppend => self.header.max_timestamp,
            TimestampType::Create => self.header.base_timestamp.wrapping_add(timestamp_delta),
        };
        Ok(Record {
            offset: self.header.base_offset + i64::from(offset_delta),
            timestamp,
            timestamp_type,
            key,
            value,
            headers,
        })
    }
}

impl<'s> Iterator for RecordIter<'s> {
    type Item = Result<Record<'s>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            if self.pos != self.data.len() {
                self.pos = self.data.len();
                return Some(Err(self.err("bytes left after the last record")));
            }
            return None;
        }
        self.left -= 1;
        match self.record() {
            Ok(r) => Some(Ok(r)),
            Err(e) => {
                self.left = 0;
                self.pos = self.data.len();
                Some(Err(e))
            }
        }
    }
}

/// An aborted transaction as listed in a `read_committed` fetch response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// Drops the batches of aborted transactions, following Kafka's consumer:
/// a producer joins the aborted set when the walk reaches the first offset of
/// one of its aborted transactions, and leaves it at its ABORT marker.
pub struct TxnFilter {
    /// Sorted by first offset, descending, so the next one pops off the end.
    pending: Vec<AbortedTxn>,
    aborted: HashSet<i64>,
}

impl TxnFilter {
    pub fn new(mut aborted: Vec<AbortedTxn>) -> Self {
        aborted.sort_by_key(|t| std::cmp::Reverse(t.first_offset));
        TxnFilter {
            pending: aborted,
            aborted: HashSet::new(),
        }
    }

    /// Whether the batch's records must be left out of the archive.
    pub fn skip(&mut self, batch: &Batch, scratch: &mut Vec<u8>) -> Result<bool, RecordsError> {
        let h = &batch.header;
        if h.producer_id >= 0 {
            while let Some(t) = self.pending.last() {
                if t.first_offset > h.last_offset() {
                    break;
                }
                self.aborted.insert(t.producer_id);
                self.pending.pop();
            }
            if h.is_control() {
                // The cleaner may keep a control batch with no record left.
                if h.record_count > 0 && batch.control_type(scratch)? == ControlType::Abort {
                    self.aborted.remove(&h.producer_id);
                }
                return Ok(true);
            }
            if h.is_transactional() && self.aborted.contains(&h.producer_id) {
                return Ok(true);
            }
        }
        Ok(h.is_control())
    }
}

/// Which producer wrote a record, and the record's sequence number
/// (idempotent producers; -1 for both when the batch has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub sequence: i32,
}

impl BatchHeader {
    /// The origin of the record at `offset` of this batch: sequence numbers
    /// count records from the batch's base sequence, wrapping at i32::MAX.
    pub fn origin(&self, offset: i64) -> Origin {
        let sequence = if self.base_sequence < 0 {
            -1
        } else {
            let delta = offset - self.base_offset;
            ((i64::from(self.base_sequence) + delta) % (i64::from(i32::MAX) + 1)) as i32
        };
        Origin {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            sequence,
        }
    }
}

/// What [`visit`] reports while walking a record set. `epoch` is the
/// partition leader epoch of the batch the event comes from.
pub enum Event<'a> {
    /// A record at or after the start position.
    Record {
        record: Record<'a>,
        epoch: i32,
        origin: Origin,
    },
    /// Offsets up to `next` (exclusive) are covered but hold no record for
    /// the archive: a control batch, an aborted transaction, an empty batch.
    Skipped { next: i64, epoch: i32 },
}

/// Walks the complete batches of `data` from `position`: records before
/// `position` (a batch may start earlier) are not reported; aborted
/// transactional batches and control batches become [`Event::Skipped`].
/// Returns the position after the last complete batch (or `position` when
/// there is none).
pub fn visit<E: From<RecordsError>>(
    data: &[u8],
    position: i64,
    filter: &mut TxnFilter,
    scratch: &mut Vec<u8>,
    mut f: impl FnMut(Event<'_>) -> Result<(), E>,
) -> Result<i64, E> {
    let mut position = position;
    for batch in batches(data) {
        let batch = batch?;
        // The filter sees every batch, even one before the position, so
        // that its view of open transactions stays right.
        let skip = filter.skip(&batch, scratch)?;
        if batch.header.last_offset() < position {
            continue;
        }
        if skip || batch.header.record_count == 0 {
            position = batch.header.next_offset();
            f(Event::Skipped {
                next: position,
                epoch: batch.header.partition_leader_epoch,
            })?;
            continue;
        }
        for record in batch.records(scratch)? {
            let record = record?;
            if record.offset >= position {
                position = record.offset + 1;
                let origin = batch.header.origin(record.offset);
                f(Event::Record {
                    record,
                    epoch: batch.header.partition_leader_epoch,
                    origin,
                })?;
            }
        }
        // Compaction keeps a batch's last offset even when it removed the
        // records at its end: those offsets are covered too.
        let next = batch.header.next_offset();
        if next > position {
            position = next;
            f(Event::Skipped {
                next,
                epoch: batch.header.partition_leader_epoch,
            })?;
        }
    }
    Ok(position)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    fn zigzag(buf: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                buf.push(b);
                return;
            }
            buf.push(b | 0x80);
        }
    }

    fn nullable(buf: &mut Vec<u8>, v: Option<&[u8]>) {
        match v {
            None => zigzag(buf, -1),
            Some(b) => {
                zigzag(buf, b.len() as i64);
                buf.extend_from_slice(b);
            }
        }
    }

    /// A test record: offset delta, timestamp delta, key, value, headers.
    pub struct TestRecord<'a> {
        pub delta: i32,
        pub ts_delta: i64,
        pub key: Option<&'a [u8]>,
        pub value: Option<&'a [u8]>,
        pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
    }

    pub fn rec<'a>(delta: i32, value: &'a [u8]) -> TestRecord<'a> {
        TestRecord {
            delta,
            ts_delta: i64::from(delta) * 10,
            key: Some(b"k"),
            value: Some(value),
            headers: vec![],
        }
    }

    /// Encodes a v2 batch the way a producer would (test-only encoder).
    pub fn encode_batch(
        base_offset: i64,
        attributes: i16,
        producer_id: i64,
        last_offset_delta: i32,
        records: &[TestRecord],
    ) -> Vec<u8> {
        let mut body = Vec::new();
        for r in records {
            let mut rec = vec![0u8];
            zigzag(&mut rec, r.ts_delta);
            zigzag(&mut rec, i64::from(r.delta));
            nullable(&mut rec, r.key);
            nullable(&mut rec, r.value);
            zigzag(&mut rec, r.headers.len() as i64);
            for (k, v) in &r.headers {
                nullable(&mut rec, Some(k));
                nullable(&mut rec, *v);
            }
            zigzag(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
        let body = match attributes & 7 {
            0 => body,
            1 => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(&body).unwrap();
                e.finish().unwrap()
            }
            2 => snap::raw::Encoder::new().compress_vec(&body).unwrap(),
            3 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(&body).unwrap();
                e.finish().unwrap()
            }
            4 => zstd::bulk::compress(&body, 3).unwrap(),
            _ => unreachable!(),
        };
        let mut after_crc = Vec::new();
        after_crc.extend_from_slice(&attributes.to_be_bytes());
        after_crc.extend_from_slice(&last_offset_delta.to_be_bytes());
        after_crc.extend_from_slice(&1_000i64.to_be_bytes());
        after_crc.extend_from_slice(&5_000i64.to_be_bytes());
        after_crc.extend_from_slice(&producer_id.to_be_bytes());
        after_crc.extend_from_slice(&0i16.to_be_bytes());
        after_crc.extend_from_slice(&0i32.to_be_bytes());
        after_crc.extend_from_slice(&(records.len() as i32).to_be_bytes());
        after_crc.extend_from_slice(&body);
        let mut out = Vec::new();
        out.extend_from_slice(&base_offset.to_be_bytes());
        out.extend_from_slice(&((after_crc.len() + 9) as i32).to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.push(2);
        out.extend_from_slice(&crc32c::crc32c(&after_crc).to_be_bytes());
        out.extend_from_slice(&after_crc);
        out
    }

    /// A control batch holding one marker (0 = abort, 1 = commit).
    pub fn control_batch(offset: i64, producer_id: i64, marker: i16) -> Vec<u8> {
        let key = [0u8, 0, 0, marker as u8];
        let value = [0u8, 0, 0, 0, 0, 0];
        encode_batch(
            offset,
            0x30,
            producer_id,
            0,
            &[TestRecord {
                delta: 0,
                ts_delta: 0,
                key: Some(&key),
                value: Some(&value),
                headers: vec![],
            }],
        )
    }

    fn collect(data: &[u8], position: i64, aborted: Vec<AbortedTxn>) -> (Vec<i64>, Vec<i64>, i64) {
        let mut records = Vec::new();
        let mut skipped = Vec::new();
        let next = visit::<RecordsError>(
            data,
            position,
            &mut TxnFilter::new(aborted),
            &mut Vec::new(),
            |e| {
                match e {
                    Event::Record { record, .. } => records.push(record.offset),
                    Event::Skipped { next, .. } => skipped.push(next),
                }
                Ok(())
            },
        )
        .unwrap();
        (records, skipped, next)
    }

    #[test]
    fn every_codec_decodes_to_the_same_records() {
        let headers = vec![(&b"h1"[..], Some(&b"v1"[..])), (&b"h1"[..], None)];
        for codec in 0..=4 {
            let records = [
                TestRecord {
                    delta: 0,
                    ts_delta: 0,
                    key: None,
                    value: Some(b"first"),
                    headers: headers.clone(),
                },
                TestRecord {
                    delta: 1,
                    ts_delta: -7,
                    key: Some(b""),
                    value: None,
                    headers: vec![],
                },
            ];
            let data = encode_batch(40, codec, -1, 1, &records);
            let batch = batches(&data).next().unwrap().unwrap();
            let mut scratch = Vec::new();
            let got: Vec<_> = batch
                .records(&mut scratch)
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(got.len(), 2, "codec {codec}");
            assert_eq!(got[0].offset, 40);
            assert_eq!(got[0].timestamp, 1_000);
            assert_eq!(got[0].key, None);
            assert_eq!(got[0].value, Some(&b"first"[..]));
            assert_eq!(got[0].headers.len(), 2);
            assert_eq!(got[0].headers[1].value, None);
            assert_eq!(got[1].offset, 41);
            assert_eq!(got[1].timestamp, 993);
            assert_eq!(got[1].key, Some(&b""[..]));
            assert_eq!(got[1].value, None);
        }
    }

    #[test]
    fn xerial_framed_snappy_decodes() {
        let payload = b"hello hello hello hello".repeat(50);
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for chunk in payload.chunks(300) {
            let c = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            framed.extend_from_slice(&(c.len() as u32).to_be_bytes());
            framed.extend_from_slice(&c);
        }
        let mut out = Vec::new();
        snappy_decompress(&framed, &mut out, 0).unwrap();
        assert_eq!(out, payload);
        framed.truncate(framed.len() - 3);
        assert!(snappy_decompress(&framed, &mut Vec::new(), 0).is_err());
    }

    #[test]
    fn log_append_time_uses_the_batch_max_timestamp() {
        let data = encode_batch(0, 0x08, -1, 1, &[rec(0, b"a"), rec(1, b"b")]);
        let batch = batches(&data).next().unwrap().unwrap();
        for r in batch.records(&mut Vec::new()).unwrap() {
            let r = r.unwrap();
            assert_eq!(r.timestamp_type, TimestampType::LogAppend);
            assert_eq!(r.timestamp, 5_000);
        }
    }

    #[test]
    fn a_truncated_last_batch_is_left_for_the_next_fetch() {
        let mut data = encode_batch(0, 0, -1, 1, &[rec(0, b"a"), rec(1, b"b")]);
        let second = encode_batch(2, 0, -1, 0, &[rec(0, b"c")]);
        data.extend_from_slice(&second[..second.len() - 5]);
        let mut it = batches(&data);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().is_none());
        assert_eq!(it.rest(), second.len() - 5);
        let (records, _, next) = collect(&data, 0, vec![]);
        assert_eq!(records, vec![0, 1]);
        assert_eq!(next, 2);
    }

    #[test]
    fn the_extent_of_complete_batches_is_read_from_headers() {
        let mut data = encode_batch(10, 0, -1, 1, &[rec(0, b"a"), rec(1, b"b")]);
        let first = data.len();
        let second = encode_batch(12, 0, -1, 0, &[rec(0, b"c")]);
        data.extend_from_slice(&second[..second.len() - 1]);
        let extent = |d: &[u8], p| {
            let e = complete_extent(d, p).unwrap();
            (e.next, e.used, e.last_epoch)
        };
        assert_eq!(extent(&data, 10), (12, first, Some(0)));
        assert_eq!(extent(&data, 11), (12, first, Some(0)));
        assert_eq!(extent(&data[..5], 10), (10, 0, None));
        data[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert_eq!(complete_extent(&data, 10).unwrap_err().offset, 10);
    }

    #[test]
    fn a_crc_mismatch_names_the_batch_offset() {
        let mut data = encode_batch(77, 0, -1, 0, &[rec(0, b"a")]);
        let last = data.len() - 1;
        data[last] ^= 0xff;
        let err = batches(&data).next().unwrap().unwrap_err();
        assert_eq!(err.offset, 77);
        assert!(err.reason.contains("crc32c mismatch"), "{err}");
    }

    #[test]
    fn old_message_formats_are_refused_by_name() {
        let mut data = encode_batch(5, 0, -1, 0, &[rec(0, b"a")]);
        data[16] = 1;
        let err = batches(&data).next().unwrap().unwrap_err();
        assert!(err.reason.contains("message format v1"), "{err}");
    }

    #[test]
    fn records_before_the_position_are_not_reported() {
        let data = encode_batch(
            10,
            1,
            -1,
            3,
            &[rec(0, b"a"), rec(1, b"b"), rec(2, b"c"), rec(3, b"d")],
        );
        let (records, _, next) = collect(&data, 12, vec![]);
        assert_eq!(records, vec![12, 13]);
        assert_eq!(next, 14);
    }

    #[test]
    fn aborted_transactions_and_markers_are_skipped_with_their_offsets() {
        let mut data = Vec::new();
        // producer 7 commits [0, 1] + marker 2; producer 8 aborts [3, 4] + marker 5;
        // non-transactional record 6; producer 8 again commits [7] + marker 8.
        data.extend(encode_batch(0, 0x10, 7, 1, &[rec(0, b"a"), rec(1, b"b")]));
        data.extend(control_batch(2, 7, 1));
        data.extend(encode_batch(3, 0x10, 8, 1, &[rec(0, b"x"), rec(1, b"y")]));
        data.extend(control_batch(5, 8, 0));
        data.extend(encode_batch(6, 0, -1, 0, &[rec(0, b"plain")]));
        data.extend(encode_batch(7, 0x10, 8, 0, &[rec(0, b"c")]));
        data.extend(control_batch(8, 8, 1));
        let aborted = vec![AbortedTxn {
            producer_id: 8,
            first_offset: 3,
        }];
        let (records, skipped, next) = collect(&data, 0, aborted);
        assert_eq!(records, vec![0, 1, 6, 7]);
        assert_eq!(skipped, vec![3, 5, 6, 9]);
        assert_eq!(next, 9);
    }

    #[test]
    fn offsets_compacted_away_at_a_batch_end_are_covered() {
        // Records at deltas 0 and 2 of a batch whose last offset delta is 5.
        let data = encode_batch(10, 0, -1, 5, &[rec(0, b"a"), rec(2, b"b")]);
        let (records, skipped, next) = collect(&data, 10, vec![]);
        assert_eq!(records, vec![10, 12]);
        assert_eq!(skipped, vec![16]);
        assert_eq!(next, 16);
    }

    #[test]
    fn an_empty_control_batch_is_skipped_not_an_error() {
        let mut data = encode_batch(0, 0x30, 9, 0, &[]);
        data.extend(encode_batch(1, 0, -1, 0, &[rec(0, b"x")]));
        let (records, skipped, next) = collect(&data, 0, vec![]);
        assert_eq!(records, vec![1]);
        assert_eq!(skipped, vec![1]);
        assert_eq!(next, 2);
    }

    #[test]
    fn absurd_offsets_are_errors_not_overflows() {
        let mut data = encode_batch(i64::MAX - 1, 0, -1, 0, &[rec(0, b"a")]);
        data[23..27].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&data[CRC_START..]);
        data[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(batches(&data).next().unwrap().is_err());
        assert!(complete_extent(&data, 0).is_err());
    }

    #[test]
    fn a_record_running_past_its_batch_is_an_error() {
        let mut data = encode_batch(0, 0, -1, 0, &[rec(0, b"abc")]);
        // Corrupt the record length varint (first body byte) and fix the CRC.
        data[BATCH_HEADER_LEN] = 0x7e;
        let crc = crc32c::crc32c(&data[CRC_START..]);
        data[17..21].copy_from_slice(&crc.to_be_bytes());
        let batch = batches(&data).next().unwrap().unwrap();
        let err = batch
            .records(&mut Vec::new())
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert!(err.reason.contains("invalid record length"), "{err}");
    }
}
