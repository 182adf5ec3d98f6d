//! One object, read and checked: that it opens and is an archive file, that
//! its header agrees with its name and with the metadata the store lists,
//! and, when records are read (`--deep`, `--against-kafka`), every block
//! decoded (the reader checks sync markers, block sizes, codec checksums,
//! the record count and timestamps of the summary), offsets strictly rising
//! inside `[first, next)`, the size and the store's CRC32C of the whole
//! object, and each record handed to Kafka's feed to compare.
//!
//! An object that cannot be read is a finding of that object; only a store
//! that fails is an error. Holds one block of the object at a time, never
//! its records; never writes to the store.

use std::cell::Cell;
use std::io::{self, BufReader, Read};

use super::kafka::Feed;
use super::report::{Check, Finding, Progress, Report, Span};
use crate::format::avro::{AvroError, FileHeader, Reader};
use crate::format::names::ObjectKey;
use crate::store::{ObjectInfo, Store, StoreError};

/// What every partition's check reads.
pub(super) struct Ctx<'a> {
    pub(super) store: &'a dyn Store,
    /// Decode every record (`--deep`, `--against-kafka`).
    pub(super) read_records: bool,
    pub(super) progress: Progress,
}

/// Counts and checksums the bytes read through it.
struct Checksummed<'p, R> {
    inner: R,
    crc32c: u32,
    len: u64,
    total: &'p Cell<u64>,
}

impl<R: Read> Read for Checksummed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc32c = crc32c::crc32c_append(self.crc32c, &buf[..n]);
        self.len += n as u64;
        self.total.set(self.total.get() + n as u64);
        Ok(n)
    }
}

/// Checks one object against its name and metadata and, when records are
/// read, record by record (and against Kafka with a feed). Returns its
/// CRC32C when known (from the store, or computed from a whole read).
pub(super) fn check_object(
    ctx: &Ctx,
    key: &ObjectKey,
    info: &ObjectInfo,
    mut feed: Option<&mut Feed>,
    report: &mut Report,
) -> anyhow::Result<Option<u32>> {
    let tp = key.tp();
    let url = ctx.store.object_url(key);
    let (first, next) = (key.first, info.summary.next_offset);
    let whole = Span::range(first, next);
    let unreadable = |report: &mut Report, feed: Option<&mut Feed>, span, why: String| {
        if let Some(feed) = feed {
            feed.discard_below(next);
        }
        report.finding(&tp, Finding::new(Check::Unreadable, &url, span, why))
    };
    let input = match ctx.store.open(key) {
        Ok(input) => input,
        Err(StoreError::NotArchive { why, .. }) => {
            unreadable(report, feed, whole, why)?;
            return Ok(info.crc32c);
        }
        Err(e) => return Err(e.into()),
    };
    let mut src = Checksummed {
        inner: input,
        crc32c: 0,
        len: 0,
        total: &ctx.progress.bytes,
    };
    let mut reader = match Reader::new(BufReader::new(&mut src)) {
        Ok(reader) => reader,
        Err(AvroError::Io(e)) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {url}")));
        }
        Err(e) => {
            unreadable(report, feed, whole, e.to_string())?;
            return Ok(info.crc32c);
        }
    };
    for mismatch in header_mismatches(key, reader.header(), info) {
        report.finding(&tp, Finding::new(Check::Metadata, &url, whole, mismatch))?;
    }
    if !ctx.read_records {
        return Ok(info.crc32c);
    }
    let mut last: Option<i64> = None;
    loop {
        let record = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(AvroError::Io(e)) => {
                return Err(anyhow::Error::new(e).context(format!("cannot read {url}")));
            }
            Err(e) => {
                let from = last.map_or(first, |o| o + 1);
                let span = Span::range(from, next.max(from + 1));
                unreadable(report, feed, span, e.to_string())?;
                return Ok(info.crc32c);
            }
        };
        let o = record.offset;
        if let Some(prev) = last.filter(|prev| o <= *prev) {
            let why = format!("not after the offset {prev} of the record before it");
            report.finding(&tp, Finding::new(Check::Records, &url, Span::at(o), why))?;
        }
        if o < first || o >= next {
            let why = format!("outside the object's offsets {first}..{next}");
            report.finding(&tp, Finding::new(Check::Records, &url, Span::at(o), why))?;
        }
        if let Some(feed) = feed.as_deref_mut() {
            feed.archived(&url, &record, report)?;
        }
        last = Some(o);
        ctx.progress.tick(&tp);
    }
    drop(reader);
    match feed {
        // Kafka may still hold what was skipped on purpose.
        Some(feed) if info.skipped.is_some() => feed.discard_below(next),
        Some(feed) => feed.missing_below(&url, next, report)?,
        None => {}
    }
    if let Some(want) = info.crc32c.filter(|want| *want != src.crc32c) {
        let why = format!(
            "the object's bytes have crc32c {:08x}, the store says {want:08x}",
            src.crc32c
        );
        report.finding(&tp, Finding::new(Check::Checksum, &url, whole, why))?;
    }
    if src.len != info.size {
        let why = format!(
            "the object holds {} bytes, the store says {}",
            src.len, info.size
        );
        report.finding(&tp, Finding::new(Check::Checksum, &url, whole, why))?;
    }
    Ok(Some(src.crc32c))
}

/// How an object's header disagrees with its name and its metadata.
fn header_mismatches(key: &ObjectKey, h: &FileHeader, info: &ObjectInfo) -> Vec<String> {
    let mut out = Vec::new();
    if *h.topic != *key.topic || h.partition != key.partition || h.first_offset != key.first {
        out.push(format!(
            "its header names {}/{} offset {}, not its name's {}/{} offset {}",
            h.topic, h.partition, h.first_offset, key.topic, key.partition, key.first
        ));
    }
    let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    let (a, b) = (&h.summary, &info.summary);
    let fields = [
        (
            "next offset",
            a.next_offset.to_string(),
            b.next_offset.to_string(),
        ),
        (
            "record count",
            a.record_count.to_string(),
            b.record_count.to_string(),
        ),
        (
            "min timestamp",
            show(a.min_timestamp.map(|t| t.to_string())),
            show(b.min_timestamp.map(|t| t.to_string())),
        ),
        (
            "max timestamp",
            show(a.max_timestamp.map(|t| t.to_string())),
            show(b.max_timestamp.map(|t| t.to_string())),
        ),
        (
            "last epoch",
            show(a.last_epoch.map(|e| e.to_string())),
            show(b.last_epoch.map(|e| e.to_string())),
        ),
        (
            "topic id",
            show(h.topic_id.map(|u| u.to_string())),
            show(info.topic_id.map(|u| u.to_string())),
        ),
        (
            "skipped",
            show(h.skipped.map(|s| s.to_string())),
            show(info.skipped.map(|s| s.to_string())),
        ),
        (
            "format version",
            h.format_version.to_string(),
            info.format_version.to_string(),
        ),
    ];
    for (what, header, store) in fields {
        if header != store {
            out.push(format!(
                "{what}: the header says {header}, the store's metadata {store}"
            ));
        }
    }
    if let Some(reason) = h.skipped.filter(|_| a.record_count > 0) {
        out.push(format!(
            "a skipped range ({reason}) that holds {} record(s)",
            a.record_count
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::format::avro::{Codec, Skipped, Summary};
    use crate::format::names::TopicPartition;

    fn header_and_info() -> (ObjectKey, FileHeader, ObjectInfo) {
        let key = ObjectKey::new(&TopicPartition::new("t", 2), 100);
        let summary = Summary {
            next_offset: 200,
            record_count: 90,
            min_timestamp: Some(5),
            max_timestamp: Some(9),
            last_epoch: Some(3),
        };
        let id = Some(Uuid::from_u128(1));
        let header = FileHeader {
            topic: "t".into(),
            partition: 2,
            first_offset: 100,
            codec: Codec::Null,
            sync: [0; 16],
            summary,
            topic_id: id,
            skipped: None,
            format_version: 2,
            header_bytes: 400,
        };
        let info = ObjectInfo {
            summary,
            size: 1_000,
            crc32c: None,
            md5: None,
            format_version: 2,
            topic_id: id,
            skipped: None,
        };
        (key, header, info)
    }

    #[test]
    fn a_header_must_agree_with_its_name_and_metadata() {
        type Change = fn(&mut ObjectKey, &mut FileHeader, &mut ObjectInfo);
        let table: Vec<(Change, Vec<&str>)> = vec![
            (|_, _, _| {}, vec![]),
            (
                |_, h, _| h.partition = 3,
                vec!["its header names t/3 offset 100, not its name's t/2 offset 100"],
            ),
            (
                |k, _, _| k.first = 0,
                vec!["its header names t/2 offset 100, not its name's t/2 offset 0"],
            ),
            (
                |_, _, i| i.summary.next_offset = 250,
                vec!["next offset: the header says 200, the store's metadata 250"],
            ),
            (
                |_, _, i| {
                    i.summary.record_count = 1;
                    i.summary.max_timestamp = None;
                },
                vec![
                    "record count: the header says 90, the store's metadata 1",
                    "max timestamp: the header says 9, the store's metadata none",
                ],
            ),
            (
                |_, _, i| i.topic_id = Some(Uuid::from_u128(2)),
                vec![
                    "topic id: the header says 00000000-0000-0000-0000-000000000001, the store's metadata 00000000-0000-0000-0000-000000000002",
                ],
            ),
            (
                |_, h, i| {
                    h.skipped = Some(Skipped::Retention);
                    i.skipped = Some(Skipped::Retention);
                },
                vec!["a skipped range (retention) that holds 90 record(s)"],
            ),
            (
                |_, _, i| i.format_version = 1,
                vec!["format version: the header says 2, the store's metadata 1"],
            ),
        ];
        for (change, want) in table {
            let (mut key, mut header, mut info) = header_and_info();
            change(&mut key, &mut header, &mut info);
            assert_eq!(header_mismatches(&key, &header, &info), want);
        }
    }
}
