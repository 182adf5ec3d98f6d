//! `kafka-store verify`: proves an archive (DESIGN.md "Commands"), partition
//! by partition.
//!
//! - The chain: every hole, overlap and history break (a change of topic id
//!   along the chain) is a problem; explicit skipped ranges are notes.
//! - Every object is readable and agrees with its name, with the metadata
//!   the store lists and, when `[mysql]` is configured, with its index row
//!   (a row without an object is a problem too).
//! - Records, with `--deep` or `--against-kafka`: every block decoded (the
//!   reader checks sync markers, block sizes, codec checksums, the record
//!   count and timestamps of the summary), offsets strictly rising inside
//!   `[first, next)`, the size and the store's CRC32C of the whole object.
//! - `--against-kafka`: every archived record equals what Kafka holds at
//!   its offset (read_committed, up to the last stable offset, from the log
//!   start or the archive's first offset), and the records Kafka holds below
//!   the archive end that the archive lacks, outside explicit skipped
//!   ranges, are listed as ranges. Records Kafka no longer has are fine.
//!
//! Results go to stdout: one line (or JSON object) per problem naming the
//! object and its offsets, at most [`SHOWN_PER_CHECK`] per kind and
//! partition, a summary per partition and a total; exit 3 when anything was
//! found. An object that cannot be read is a problem of that object; only a
//! store, Kafka or MySQL that fails ends the run with an error. Memory holds
//! a partition's listing and one fetch response, never a partition's records.
//!
//! Never writes anything: not to the store, not to Kafka (no group, no
//! offsets), not to MySQL.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use super::source::open_store;
use crate::cancel::Cancel;
use crate::cli::{Source, VerifyArgs, usage};
use crate::config::Config;
use crate::exit::Exit;
use crate::format::avro::{AvroError, FileHeader, Reader};
use crate::format::names::{
    ObjectKey, TilingProblem, TopicPartition, history_breaks, tiling_problems,
};
use crate::format::record::OwnedRecord;
use crate::index::{Index, Row};
use crate::kafka::records::{self, Event, RecordsError, TxnFilter};
use crate::kafka::{Client, KafkaError, OffsetSpec, Position};
use crate::pipeline::kafka_context;
use crate::store::{ObjectInfo, Store, StoreError};

/// Problem lines shown per kind of problem and partition; the rest are counted.
const SHOWN_PER_CHECK: usize = 20;

/// How often a long run says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Verifies the archive; exit 3 when any problem was found.
pub fn run(args: &VerifyArgs) -> anyhow::Result<Exit> {
    let cancel = Cancel::default();
    let (store, config) = match &args.source {
        Source::Config(path) => {
            let config = Config::load(path)?;
            let store = config.store.open(&cancel)?;
            (store, Some(config))
        }
        source @ Source::Store(_) => (open_store(source)?, None),
    };
    let mut index = config
        .as_ref()
        .and_then(|c| c.mysql.as_ref())
        .map(|m| Index::open(m, &store.url()))
        .transpose()?;
    let mut kafka = match (&config, args.against_kafka) {
        (Some(config), true) => Some(Kafka::connect(config, cancel)?),
        (None, true) => {
            return Err(
                usage("verify --against-kafka needs --config FILE (for the brokers)").into(),
            );
        }
        (_, false) => None,
    };
    let ctx = Ctx {
        store: store.as_ref(),
        read_records: args.deep || args.against_kafka,
        progress: Progress::new(),
    };
    let mut out = io::stdout().lock();
    let mut report = Report::new(&mut out, args.json);
    let sources = Sources {
        index: index.as_mut(),
        kafka: kafka.as_mut(),
    };
    let totals = verify(
        &ctx,
        sources,
        &mut report,
        args.topic.as_deref(),
        args.partition,
    )?;
    out.flush()?;
    Ok(if totals.problems == 0 {
        Exit::Ok
    } else {
        Exit::Data
    })
}

/// What every partition's check reads.
struct Ctx<'a> {
    store: &'a dyn Store,
    /// Decode every record (`--deep`, `--against-kafka`).
    read_records: bool,
    progress: Progress,
}

/// The optional sources the archive is compared with.
struct Sources<'a> {
    index: Option<&'a mut Index>,
    kafka: Option<&'a mut Kafka>,
}

/// Verifies the selected partitions; returns the totals.
fn verify(
    ctx: &Ctx,
    mut sources: Sources,
    report: &mut Report,
    topic: Option<&str>,
    partition: Option<i32>,
) -> anyhow::Result<Totals> {
    let topics = match topic {
        Some(t) => vec![t.to_string()],
        None => ctx.store.topics()?,
    };
    let mut totals = Totals::default();
    for topic in &topics {
        let partitions = match partition {
            Some(p) => vec![p],
            None => ctx.store.partitions(topic)?,
        };
        for p in partitions {
            let tp = TopicPartition::new(topic, p);
            let facts = verify_partition(ctx, &mut sources, report, &tp)?;
            totals.add(&facts);
            report.partition(&tp, &facts)?;
        }
    }
    report.total(&totals)?;
    Ok(totals)
}

// ---- findings --------------------------------------------------------------

/// The kinds of finding, as they are named in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Check {
    Hole,
    Overlap,
    HistoryBreak,
    /// An object whose next offset is not after its first.
    Chain,
    Unreadable,
    Metadata,
    Records,
    Checksum,
    Index,
    Differs,
    Missing,
    /// Notes: an explicit skipped range.
    Skipped,
    /// Notes: Kafka no longer has the topic.
    Kafka,
}

impl Check {
    fn as_str(self) -> &'static str {
        match self {
            Check::Hole => "hole",
            Check::Overlap => "overlap",
            Check::HistoryBreak => "history break",
            Check::Chain => "chain",
            Check::Unreadable => "unreadable",
            Check::Metadata => "metadata",
            Check::Records => "records",
            Check::Checksum => "checksum",
            Check::Index => "index",
            Check::Differs => "differs from kafka",
            Check::Missing => "missing",
            Check::Skipped => "skipped range",
            Check::Kafka => "kafka",
        }
    }
}

/// Offsets `[from, to)`; `to` is unknown for an unreadable last object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    from: i64,
    to: Option<i64>,
}

impl Span {
    fn range(from: i64, to: i64) -> Span {
        Span { from, to: Some(to) }
    }

    fn at(offset: i64) -> Span {
        Span::range(offset, offset.saturating_add(1))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to {
            Some(to) if to == self.from.saturating_add(1) => write!(f, "offset {}", self.from),
            Some(to) => write!(f, "offsets {}..{to}", self.from),
            None => write!(f, "from offset {}", self.from),
        }
    }
}

/// One problem or note, about one object (or where one is missing).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Finding {
    check: Check,
    /// The object's URL.
    object: String,
    span: Span,
    detail: String,
}

impl Finding {
    fn new(check: Check, object: &str, span: Span, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            object: object.to_string(),
            span,
            detail: detail.into(),
        }
    }

    fn is_problem(&self) -> bool {
        !matches!(self.check, Check::Skipped | Check::Kafka)
    }
}

// ---- output ----------------------------------------------------------------

/// What one partition holds and how many problems it has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Facts {
    objects: usize,
    records: u64,
    bytes: u64,
    /// The chain's first offset and its end.
    first: Option<i64>,
    next: Option<i64>,
    skipped_ranges: usize,
    problems: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Totals {
    partitions: usize,
    failed: usize,
    objects: usize,
    records: u64,
    bytes: u64,
    problems: u64,
}

impl Totals {
    fn add(&mut self, f: &Facts) {
        self.partitions += 1;
        self.failed += usize::from(f.problems > 0);
        self.objects += f.objects;
        self.records += f.records;
        self.bytes += f.bytes;
        self.problems += f.problems;
    }
}

fn verdict(problems: u64) -> &'static str {
    if problems == 0 { "ok" } else { "FAILED" }
}

/// Writes findings and summaries as text lines or JSON lines; counts the
/// current partition's problems and holds back repeated ones.
struct Report<'o> {
    out: &'o mut dyn Write,
    json: bool,
    shown: HashMap<Check, usize>,
    hidden: BTreeMap<Check, u64>,
    problems: u64,
}

impl<'o> Report<'o> {
    fn new(out: &'o mut dyn Write, json: bool) -> Report<'o> {
        Report {
            out,
            json,
            shown: HashMap::new(),
            hidden: BTreeMap::new(),
            problems: 0,
        }
    }

    fn line(&mut self, text: String, value: Value) -> io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut *self.out, &value)?;
            self.out.write_all(b"\n")
        } else {
            writeln!(self.out, "{text}")
        }
    }

    fn finding(&mut self, tp: &TopicPartition, f: Finding) -> io::Result<()> {
        let kind = if f.is_problem() {
            self.problems += 1;
            let shown = self.shown.entry(f.check).or_default();
            if *shown >= SHOWN_PER_CHECK {
                *self.hidden.entry(f.check).or_default() += 1;
                return Ok(());
            }
            *shown += 1;
            "problem"
        } else {
            "note"
        };
        let text = format!(
            "{kind}: {}: {}: {}: {}",
            f.object,
            f.span,
            f.check.as_str(),
            f.detail
        );
        let value = json!({
            "kind": kind,
            "topic": &*tp.topic,
            "partition": tp.partition,
            "object": f.object,
            "first": f.span.from,
            "next": f.span.to,
            "check": f.check.as_str(),
            "message": f.detail,
        });
        self.line(text, value)
    }

    /// Ends a partition: the problems held back, then its summary line.
    fn partition(&mut self, tp: &TopicPartition, f: &Facts) -> io::Result<()> {
        for (check, count) in std::mem::take(&mut self.hidden) {
            let text = format!(
                "problem: {tp}: ... and {count} more {} problem(s) not shown",
                check.as_str()
            );
            let value = json!({
                "kind": "suppressed",
                "topic": &*tp.topic,
                "partition": tp.partition,
                "check": check.as_str(),
                "count": count,
            });
            self.line(text, value)?;
        }
        self.shown.clear();
        let offsets = match (f.first, f.next) {
            (Some(first), Some(next)) => format!("offsets {first}..{next}"),
            _ => "no objects".to_string(),
        };
        let text = format!(
            "partition {tp}: {} object(s), {} record(s), {} bytes, {offsets}, {} skipped range(s), {} problem(s): {}",
            f.objects,
            f.records,
            f.bytes,
            f.skipped_ranges,
            f.problems,
            verdict(f.problems)
        );
        let value = json!({
            "kind": "partition",
            "topic": &*tp.topic,
            "partition": tp.partition,
            "objects": f.objects,
            "records": f.records,
            "bytes": f.bytes,
            "first": f.first,
            "next": f.next,
            "skipped_ranges": f.skipped_ranges,
            "problems": f.problems,
            "verdict": verdict(f.problems),
        });
        self.line(text, value)
    }

    fn total(&mut self, t: &Totals) -> io::Result<()> {
        let text = format!(
            "total: {} partition(s), {} failed, {} object(s), {} record(s), {} bytes, {} problem(s): {}",
            t.partitions,
            t.failed,
            t.objects,
            t.records,
            t.bytes,
            t.problems,
            verdict(t.problems)
        );
        let value = json!({
            "kind": "total",
            "partitions": t.partitions,
            "failed_partitions": t.failed,
            "objects": t.objects,
            "records": t.records,
            "bytes": t.bytes,
            "problems": t.problems,
            "verdict": verdict(t.problems),
        });
        self.line(text, value)
    }

    /// Takes the current partition's problem count.
    fn take_problems(&mut self) -> u64 {
        std::mem::take(&mut self.problems)
    }
}

/// Progress of a long run, logged every [`PROGRESS_EVERY`].
struct Progress {
    started: Instant,
    last: Cell<Instant>,
    objects: Cell<u64>,
    bytes: Cell<u64>,
}

impl Progress {
    fn new() -> Progress {
        let now = Instant::now();
        Progress {
            started: now,
            last: Cell::new(now),
            objects: Cell::new(0),
            bytes: Cell::new(0),
        }
    }

    fn tick(&self, tp: &TopicPartition) {
        let now = Instant::now();
        if now.duration_since(self.last.get()) >= PROGRESS_EVERY {
            self.last.set(now);
            log::info!(
                "verify: {} object(s) and {} bytes checked in {}s, now at {tp}",
                self.objects.get(),
                self.bytes.get(),
                self.started.elapsed().as_secs()
            );
        }
    }
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

// ---- the chain -------------------------------------------------------------

/// One object of a partition's listing.
struct Listed {
    key: ObjectKey,
    /// Its metadata, or why the store cannot give it.
    info: Result<ObjectInfo, String>,
    /// Where it ends: its next offset, or for an object without metadata
    /// the first offset of the object after it (unknown for the last).
    end: Option<i64>,
}

/// The partition's objects with their metadata. One listing with metadata
/// when every object has it; else one look-up per object, so that an
/// object that is not an archive file is a finding, not a failure.
fn listing(store: &dyn Store, tp: &TopicPartition) -> Result<Vec<Listed>, StoreError> {
    let objects: Vec<(i64, Result<ObjectInfo, String>)> =
        match store.list_infos(&tp.topic, tp.partition) {
            Ok(infos) => infos.into_iter().map(|(f, i)| (f, Ok(i))).collect(),
            Err(StoreError::NotArchive { .. }) => store
                .list(&tp.topic, tp.partition)?
                .into_iter()
                .map(|first| match store.head(&ObjectKey::new(tp, first)) {
                    Ok(Some(info)) => Ok((first, Ok(info))),
                    Ok(None) => Ok((first, Err("vanished while listing".to_string()))),
                    Err(StoreError::NotArchive { why, .. }) => Ok((first, Err(why))),
                    Err(e) => Err(e),
                })
                .collect::<Result<_, _>>()?,
            Err(e) => return Err(e),
        };
    let firsts: Vec<i64> = objects.iter().map(|(f, _)| *f).collect();
    Ok(objects
        .into_iter()
        .enumerate()
        .map(|(i, (first, info))| {
            let end = match &info {
                Ok(info) => Some(info.summary.next_offset),
                Err(_) => firsts.get(i + 1).copied(),
            };
            Listed {
                key: ObjectKey::new(tp, first),
                info,
                end,
            }
        })
        .collect())
}

/// What the listing alone shows: holes, overlaps, history breaks, objects
/// that do not advance or cannot be read, skipped ranges.
/// `url` names an object.
fn chain_findings(
    url: &dyn Fn(&ObjectKey) -> String,
    tp: &TopicPartition,
    listed: &[Listed],
) -> Vec<Finding> {
    let url = |first: i64| url(&ObjectKey::new(tp, first));
    let mut findings = Vec::new();
    for l in listed {
        let first = l.key.first;
        let span = Span {
            from: first,
            to: l.end,
        };
        match &l.info {
            Err(why) => findings.push(Finding::new(Check::Unreadable, &url(first), span, why)),
            Ok(info) => {
                let next = info.summary.next_offset;
                if next <= first {
                    findings.push(Finding::new(
                        Check::Chain,
                        &url(first),
                        Span::at(first),
                        format!("its next offset {next} is not after its first offset"),
                    ));
                }
                if let Some(reason) = info.skipped {
                    findings.push(Finding::new(
                        Check::Skipped,
                        &url(first),
                        span,
                        format!("not archived on purpose ({reason})"),
                    ));
                }
            }
        }
    }
    let ranges: Vec<(i64, i64)> = listed
        .iter()
        .filter_map(|l| Some((l.key.first, l.end?)))
        .collect();
    for problem in tiling_problems(&ranges) {
        findings.push(match problem {
            TilingProblem::Gap { from, to } => Finding::new(
                Check::Hole,
                &url(from),
                Span::range(from, to),
                "no object covers these offsets (the chain expects an object at this name)",
            ),
            TilingProblem::Overlap { first, prev_next } => Finding::new(
                Check::Overlap,
                &url(first),
                Span::range(first, prev_next),
                format!("starts before the objects before it end at {prev_next}"),
            ),
        });
    }
    let ids: Vec<(i64, Option<Uuid>)> = listed
        .iter()
        .filter_map(|l| Some((l.key.first, l.info.as_ref().ok()?.topic_id)))
        .collect();
    for (at, before, after) in history_breaks(&ids) {
        let end = listed
            .iter()
            .find(|l| l.key.first == at)
            .and_then(|l| l.end);
        findings.push(Finding::new(
            Check::HistoryBreak,
            &url(at),
            Span { from: at, to: end },
            format!("read from topic id {after}, the objects before it from {before}"),
        ));
    }
    findings.sort_by_key(|f| f.span.from);
    findings
}

// ---- one partition -----------------------------------------------------------

/// Verifies one partition, writing its findings as they are made.
fn verify_partition(
    ctx: &Ctx,
    sources: &mut Sources,
    report: &mut Report,
    tp: &TopicPartition,
) -> anyhow::Result<Facts> {
    let store = ctx.store;
    let listed = listing(store, tp)?;
    for finding in chain_findings(&|key| store.object_url(key), tp, &listed) {
        report.finding(tp, finding)?;
    }
    let readable = || listed.iter().filter_map(|l| l.info.as_ref().ok());
    let first = listed.first().map(|l| l.key.first);
    let end = listed.iter().filter_map(|l| l.end).max();
    let mut feed = match (sources.kafka.as_deref_mut(), first, end) {
        (Some(kafka), Some(first), Some(end)) => {
            let archived_id = readable().filter_map(|i| i.topic_id).next_back();
            match kafka.feed(tp, first, end, archived_id)? {
                Against::Feed(feed) => Some(feed),
                Against::Not(finding) => {
                    let object = listed.last().map(|l| store.object_url(&l.key));
                    report.finding(
                        tp,
                        Finding {
                            object: object.unwrap_or_default(),
                            ..finding
                        },
                    )?;
                    None
                }
            }
        }
        _ => None,
    };
    // The CRC32C of each object, as the store says or as read.
    let mut crcs = Vec::with_capacity(listed.len());
    let mut reached: Option<i64> = None;
    for l in &listed {
        if let Some(feed) = feed.as_mut() {
            let at = reached.unwrap_or(l.key.first);
            let hole = store.object_url(&ObjectKey::new(tp, at));
            feed.missing_below(&hole, l.key.first, report)?;
        }
        let crc = match &l.info {
            Ok(info) => check_object(ctx, &l.key, info, feed.as_mut(), report)?,
            Err(_) => {
                if let (Some(feed), Some(end)) = (feed.as_mut(), l.end) {
                    feed.discard_below(end);
                }
                None
            }
        };
        crcs.push(crc);
        ctx.progress.objects.set(ctx.progress.objects.get() + 1);
        ctx.progress.tick(tp);
        reached = reached.max(l.end);
    }
    if let Some(index) = sources.index.as_deref_mut() {
        check_rows(store, index, tp, &listed, &crcs, report)?;
    }
    Ok(Facts {
        objects: listed.len(),
        records: readable().map(|i| i.summary.record_count).sum(),
        bytes: readable().map(|i| i.size).sum(),
        first,
        next: end,
        skipped_ranges: readable().filter(|i| i.skipped.is_some()).count(),
        problems: report.take_problems(),
    })
}

/// Checks one object against its name and metadata and, when records are
/// read, record by record (and against Kafka with a feed). Returns its
/// CRC32C when known (from the store, or computed from a whole read).
fn check_object(
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

// ---- the index -------------------------------------------------------------

/// Each readable object has a row that agrees with it; each row has an object.
fn check_rows(
    store: &dyn Store,
    index: &mut Index,
    tp: &TopicPartition,
    listed: &[Listed],
    crcs: &[Option<u32>],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut rows: BTreeMap<i64, Row> = index
        .partition_rows(&tp.topic, tp.partition)?
        .into_iter()
        .map(|r| (r.first_offset, r))
        .collect();
    for (l, crc) in listed.iter().zip(crcs) {
        let row = rows.remove(&l.key.first);
        let Ok(info) = &l.info else {
            continue; // already a problem of its own
        };
        let url = store.object_url(&l.key);
        let span = Span::range(l.key.first, info.summary.next_offset);
        let want = Row {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            first_offset: l.key.first,
            next_offset: info.summary.next_offset,
            record_count: info.summary.record_count as i64,
            min_timestamp: info.summary.min_timestamp,
            max_timestamp: info.summary.max_timestamp,
            bytes: info.size as i64,
            crc32c: *crc,
            object_url: url.clone(),
        };
        match row {
            None => report.finding(tp, Finding::new(Check::Index, &url, span, "no index row"))?,
            Some(row) => {
                for m in row_mismatches(&row, &want) {
                    report.finding(tp, Finding::new(Check::Index, &url, span, m))?;
                }
            }
        }
    }
    for row in rows.values() {
        let span = Span::range(row.first_offset, row.next_offset);
        let why = "an index row without an object in the store";
        report.finding(tp, Finding::new(Check::Index, &row.object_url, span, why))?;
    }
    Ok(())
}

/// How an index row disagrees with the row its object makes (a CRC32C only
/// when both know one).
fn row_mismatches(row: &Row, want: &Row) -> Vec<String> {
    let show = |v: Option<i64>| v.map_or("null".to_string(), |v| v.to_string());
    let crc = |c: Option<u32>| c.map_or("null".to_string(), |c| format!("{c:08x}"));
    let mut fields = vec![
        ("topic", row.topic.clone(), want.topic.clone()),
        (
            "partition",
            row.partition.to_string(),
            want.partition.to_string(),
        ),
        (
            "first_offset",
            row.first_offset.to_string(),
            want.first_offset.to_string(),
        ),
        (
            "next_offset",
            row.next_offset.to_string(),
            want.next_offset.to_string(),
        ),
        (
            "record_count",
            row.record_count.to_string(),
            want.record_count.to_string(),
        ),
        (
            "min_timestamp",
            show(row.min_timestamp),
            show(want.min_timestamp),
        ),
        (
            "max_timestamp",
            show(row.max_timestamp),
            show(want.max_timestamp),
        ),
        ("bytes", row.bytes.to_string(), want.bytes.to_string()),
        (
            "object_url",
            row.object_url.clone(),
            want.object_url.clone(),
        ),
    ];
    if row.crc32c.is_some() && want.crc32c.is_some() {
        fields.push(("crc32c", crc(row.crc32c), crc(want.crc32c)));
    }
    fields
        .into_iter()
        .filter(|(_, r, w)| r != w)
        .map(|(what, r, w)| format!("index row says {what} {r}, the object {w}"))
        .collect()
}

// ---- against Kafka -------------------------------------------------------------

/// The Kafka side of `--against-kafka`: one client, read-only.
struct Kafka {
    client: Client,
    brokers: Vec<String>,
    scratch: Vec<u8>,
}

/// Whether a partition's records can be compared with Kafka.
enum Against<'k> {
    Feed(Feed<'k>),
    /// Why not (a finding without its object yet).
    Not(Finding),
}

impl Kafka {
    fn connect(config: &Config, cancel: Cancel) -> anyhow::Result<Kafka> {
        let brokers = config.kafka.client.brokers.clone();
        let client = Client::connect(config.kafka.client.clone(), cancel)
            .map_err(|e| kafka_context(e, &brokers))?;
        Ok(Kafka {
            client,
            brokers,
            scratch: Vec::new(),
        })
    }

    /// The log's start and last stable offset; None when the topic is gone.
    fn extent(&mut self, tp: &TopicPartition) -> anyhow::Result<Option<(i64, i64)>> {
        let tps = [tp.clone()];
        let mut offsets = [0i64; 2];
        for (at, spec) in [OffsetSpec::Earliest, OffsetSpec::Latest]
            .into_iter()
            .enumerate()
        {
            let found = match self.client.list_offsets(&tps, spec) {
                Ok(found) => found,
                Err(KafkaError::UnknownTopic { .. }) => return Ok(None),
                Err(e) => {
                    return Err(kafka_context(e, &self.brokers)
                        .context(format!("cannot list the offsets of {tp}")));
                }
            };
            offsets[at] = found
                .get(tp)
                .copied()
                .ok_or_else(|| anyhow::anyhow!("kafka gave no offsets for {tp}"))?;
        }
        Ok(Some((offsets[0], offsets[1])))
    }

    /// What Kafka holds of the partition from the archive's first offset
    /// (or the log start) to the archive's end (or the last stable offset).
    fn feed(
        &mut self,
        tp: &TopicPartition,
        first: i64,
        end: i64,
        archived_id: Option<Uuid>,
    ) -> anyhow::Result<Against<'_>> {
        let span = Span::range(first, end);
        let Some((log_start, log_end)) = self.extent(tp)? else {
            let why = format!(
                "kafka no longer has topic {:?}: records not compared",
                tp.topic
            );
            return Ok(Against::Not(Finding::new(Check::Kafka, "", span, why)));
        };
        if let (Some(archived), Some(current)) = (archived_id, self.client.topic_id(&tp.topic))
            && archived != current
        {
            let why = format!(
                "kafka's topic now has id {current}, the archive was read from {archived}: records not compared"
            );
            return Ok(Against::Not(Finding::new(
                Check::HistoryBreak,
                "",
                span,
                why,
            )));
        }
        Ok(Against::Feed(Feed {
            tp: tp.clone(),
            position: first.max(log_start),
            end: end.min(log_end),
            buffered: VecDeque::new(),
            kafka: self,
        }))
    }
}

/// Kafka's records of one partition in offset order, one fetch response
/// at a time.
struct Feed<'k> {
    kafka: &'k mut Kafka,
    tp: TopicPartition,
    /// Where the next fetch starts.
    position: i64,
    /// Records at or after this are not compared.
    end: i64,
    buffered: VecDeque<OwnedRecord>,
}

impl Feed<'_> {
    /// The offset of Kafka's next record, fetching when needed.
    fn peek(&mut self) -> anyhow::Result<Option<i64>> {
        while self.buffered.is_empty() && self.position < self.end {
            self.fetch()?;
        }
        Ok(self.buffered.front().map(|r| r.offset))
    }

    /// Compares an archived record with Kafka's at its offset; Kafka's
    /// records before it are missing from the archive.
    fn archived(&mut self, url: &str, r: &OwnedRecord, report: &mut Report) -> anyhow::Result<()> {
        self.missing_below(url, r.offset, report)?;
        if self.peek()? != Some(r.offset) {
            return Ok(()); // gone from Kafka (retention, compaction) or already passed
        }
        let Some(kafka) = self.buffered.pop_front() else {
            return Ok(());
        };
        let fields = differences(r, &kafka);
        if fields.is_empty() {
            return Ok(());
        }
        let why = format!(
            "the archived record's {} differ(s) from kafka's",
            fields.join(", ")
        );
        report.finding(
            &self.tp,
            Finding::new(Check::Differs, url, Span::at(r.offset), why),
        )?;
        Ok(())
    }

    /// Kafka's records before `offset` not compared yet are missing from
    /// the archive: one finding for their range.
    fn missing_below(&mut self, url: &str, offset: i64, report: &mut Report) -> anyhow::Result<()> {
        let mut run = Run::default();
        while let Some(o) = self.peek()?.filter(|o| *o < offset) {
            run.add(o);
            self.buffered.pop_front();
        }
        if let Some((span, count)) = run.span() {
            let why = format!("kafka holds {count} record(s) here that the archive does not have");
            report.finding(&self.tp, Finding::new(Check::Missing, url, span, why))?;
        }
        Ok(())
    }

    /// Drops Kafka's records before `offset` without comparing them (an
    /// explicit skipped range, an object that cannot be read).
    fn discard_below(&mut self, offset: i64) {
        self.buffered.retain(|r| r.offset >= offset);
        if self.buffered.is_empty() {
            self.position = self.position.max(offset);
        }
    }

    /// One fetch at the position (read_committed, like the archiver).
    fn fetch(&mut self) -> anyhow::Result<()> {
        let at = Position {
            offset: self.position,
            last_epoch: None,
        };
        let data = match self.kafka.client.fetch_one(&self.tp, at) {
            Ok(data) => data,
            Err(KafkaError::OffsetOutOfRange { .. }) => return self.out_of_range(),
            Err(e) => {
                return Err(kafka_context(e, &self.kafka.brokers).context(format!(
                    "cannot fetch {} at offset {}",
                    self.tp, self.position
                )));
            }
        };
        let mut filter = TxnFilter::new(data.aborted);
        let (end, buffered) = (self.end, &mut self.buffered);
        let next = records::visit(
            &data.records,
            self.position,
            &mut filter,
            &mut self.kafka.scratch,
            |event| -> Result<(), RecordsError> {
                if let Event::Record { record, .. } = event
                    && record.offset < end
                {
                    buffered.push_back(record.to_owned_record());
                }
                Ok(())
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot decode what kafka holds of {}: {e}", self.tp))?;
        if next > self.position {
            self.position = next;
            Ok(())
        } else if data.last_stable_offset <= self.position {
            self.end = self.position; // the log ends here now
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "kafka answered a fetch of {} at offset {} with no complete record batch",
                self.tp,
                self.position
            ))
        }
    }

    /// The position left the log: retention moved its start past it, or
    /// the log now ends before it.
    fn out_of_range(&mut self) -> anyhow::Result<()> {
        match self.kafka.extent(&self.tp)? {
            Some((start, _)) if start > self.position => {
                self.position = start;
                Ok(())
            }
            Some((_, end)) if end > self.position => Err(anyhow::anyhow!(
                "kafka says offset {} of {} is out of range, inside its log",
                self.position,
                self.tp
            )),
            _ => {
                self.end = self.position;
                Ok(())
            }
        }
    }
}

/// The fields in which an archived record differs from Kafka's.
fn differences(archived: &OwnedRecord, kafka: &OwnedRecord) -> Vec<&'static str> {
    let (a, k) = (archived, kafka);
    [
        ("offset", a.offset == k.offset),
        ("timestamp", a.timestamp == k.timestamp),
        ("timestamp type", a.timestamp_type == k.timestamp_type),
        ("key", a.key == k.key),
        ("value", a.value == k.value),
        ("headers", a.headers == k.headers),
    ]
    .into_iter()
    .filter(|(_, same)| !same)
    .map(|(field, _)| field)
    .collect()
}

/// Kafka's records that the archive lacks, gathered into one range.
#[derive(Default)]
struct Run {
    first: Option<i64>,
    last: i64,
    count: u64,
}

impl Run {
    fn add(&mut self, offset: i64) {
        self.first.get_or_insert(offset);
        self.last = offset;
        self.count += 1;
    }

    /// `[first, last + 1)` and how many records it holds.
    fn span(&self) -> Option<(Span, u64)> {
        Some((Span::range(self.first?, self.last + 1), self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::avro::{Codec, Skipped, Summary};
    use crate::format::record::TimestampType;

    fn record(offset: i64) -> OwnedRecord {
        OwnedRecord {
            offset,
            timestamp: 1_000,
            timestamp_type: TimestampType::Create,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![(b"h".to_vec(), None)],
        }
    }

    #[test]
    fn differences_name_each_differing_field() {
        let base = record(7);
        let table: Vec<(OwnedRecord, Vec<&str>)> = vec![
            (base.clone(), vec![]),
            (
                OwnedRecord {
                    value: Some(b"w".to_vec()),
                    ..base.clone()
                },
                vec!["value"],
            ),
            (
                OwnedRecord {
                    key: None,
                    timestamp: 1_001,
                    ..base.clone()
                },
                vec!["timestamp", "key"],
            ),
            (
                OwnedRecord {
                    timestamp_type: TimestampType::LogAppend,
                    headers: vec![],
                    ..base.clone()
                },
                vec!["timestamp type", "headers"],
            ),
            (
                OwnedRecord {
                    headers: vec![(b"h".to_vec(), Some(vec![]))],
                    ..base.clone()
                },
                vec!["headers"],
            ),
        ];
        for (kafka, want) in table {
            assert_eq!(differences(&base, &kafka), want, "{kafka:?}");
        }
    }

    #[test]
    fn a_run_of_missing_records_is_one_range() {
        type Case = (Vec<i64>, Option<(Span, u64)>);
        let table: Vec<Case> = vec![
            (vec![], None),
            (vec![5], Some((Span::at(5), 1))),
            (vec![5, 6, 7], Some((Span::range(5, 8), 3))),
            // Offsets without records (control batches) inside the run.
            (vec![5, 9, 12], Some((Span::range(5, 13), 3))),
        ];
        for (offsets, want) in table {
            let mut run = Run::default();
            for o in &offsets {
                run.add(*o);
            }
            assert_eq!(run.span(), want, "{offsets:?}");
        }
    }

    #[test]
    fn spans_read_as_offsets() {
        let table = [
            (Span::at(7), "offset 7"),
            (Span::range(100, 200), "offsets 100..200"),
            (Span { from: 9, to: None }, "from offset 9"),
        ];
        for (span, want) in table {
            assert_eq!(span.to_string(), want);
        }
    }

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

    #[test]
    fn an_index_row_must_agree_with_its_object() {
        let want = Row {
            topic: "t".into(),
            partition: 1,
            first_offset: 10,
            next_offset: 20,
            record_count: 10,
            min_timestamp: Some(5),
            max_timestamp: Some(9),
            bytes: 100,
            crc32c: Some(7),
            object_url: "file:///a/t/000001/00000000000000000010.avro".into(),
        };
        let table: Vec<(Row, Vec<&str>)> = vec![
            (want.clone(), vec![]),
            (
                Row {
                    crc32c: None,
                    ..want.clone()
                },
                vec![],
            ),
            (
                Row {
                    next_offset: 25,
                    ..want.clone()
                },
                vec!["index row says next_offset 25, the object 20"],
            ),
            (
                Row {
                    crc32c: Some(8),
                    min_timestamp: None,
                    ..want.clone()
                },
                vec![
                    "index row says min_timestamp null, the object 5",
                    "index row says crc32c 00000008, the object 00000007",
                ],
            ),
            (
                Row {
                    object_url: "file:///b".into(),
                    ..want.clone()
                },
                vec![
                    "index row says object_url file:///b, the object file:///a/t/000001/00000000000000000010.avro",
                ],
            ),
        ];
        for (row, expected) in table {
            assert_eq!(row_mismatches(&row, &want), expected, "{row:?}");
        }
    }

    fn info(next: i64, id: u128, skipped: Option<Skipped>) -> ObjectInfo {
        ObjectInfo {
            summary: Summary {
                next_offset: next,
                record_count: 0,
                min_timestamp: None,
                max_timestamp: None,
                last_epoch: None,
            },
            size: 10,
            crc32c: None,
            md5: None,
            format_version: 2,
            topic_id: Some(Uuid::from_u128(id)),
            skipped,
        }
    }

    #[test]
    fn the_chain_lists_every_hole_overlap_break_and_skipped_range() {
        let tp = TopicPartition::new("t", 0);
        let listed = |objects: Vec<(i64, Result<ObjectInfo, String>)>| -> Vec<Listed> {
            let firsts: Vec<i64> = objects.iter().map(|(f, _)| *f).collect();
            objects
                .into_iter()
                .enumerate()
                .map(|(i, (first, info))| Listed {
                    key: ObjectKey::new(&tp, first),
                    end: match &info {
                        Ok(info) => Some(info.summary.next_offset),
                        Err(_) => firsts.get(i + 1).copied(),
                    },
                    info,
                })
                .collect()
        };
        let brief = |fs: Vec<Finding>| -> Vec<(Check, i64, String, Span)> {
            fs.into_iter()
                .map(|f| {
                    let name = f.object.rsplit('/').next().unwrap_or_default().to_string();
                    (f.check, f.span.from, name, f.span)
                })
                .collect()
        };
        let name = |first: i64| format!("{first:020}.avro");
        type Case = (
            Vec<(i64, Result<ObjectInfo, String>)>,
            Vec<(Check, i64, String, Span)>,
        );
        let table: Vec<Case> = vec![
            (
                vec![(0, Ok(info(5, 1, None))), (5, Ok(info(9, 1, None)))],
                vec![],
            ),
            (
                vec![
                    (0, Ok(info(5, 1, Some(Skipped::StartLatest)))),
                    (7, Ok(info(9, 1, None))),
                    (8, Ok(info(12, 2, None))),
                    (12, Err("bad magic".into())),
                    (20, Ok(info(30, 2, None))),
                    (30, Err("truncated".into())),
                ],
                vec![
                    (Check::Skipped, 0, name(0), Span::range(0, 5)),
                    (Check::Hole, 5, name(5), Span::range(5, 7)),
                    (Check::Overlap, 8, name(8), Span::range(8, 9)),
                    (Check::HistoryBreak, 8, name(8), Span::range(8, 12)),
                    (Check::Unreadable, 12, name(12), Span::range(12, 20)),
                    (Check::Unreadable, 30, name(30), Span { from: 30, to: None }),
                ],
            ),
            (
                vec![(0, Ok(info(0, 1, None)))],
                vec![(Check::Chain, 0, name(0), Span::at(0))],
            ),
        ];
        for (objects, want) in table {
            let url = |key: &ObjectKey| format!("file:///a/{}", key.path());
            let found = brief(chain_findings(&url, &tp, &listed(objects)));
            assert_eq!(found, want);
        }
    }

    #[test]
    fn repeated_problems_are_counted_not_shown() {
        let tp = TopicPartition::new("t", 0);
        let mut out = Vec::new();
        let mut report = Report::new(&mut out, false);
        for o in 0..25 {
            let f = Finding::new(Check::Missing, "file:///a", Span::at(o), "gone");
            report.finding(&tp, f).expect("in memory");
        }
        let note = Finding::new(Check::Skipped, "file:///a", Span::range(0, 5), "skipped");
        report.finding(&tp, note).expect("in memory");
        let facts = Facts {
            problems: report.take_problems(),
            ..Facts::default()
        };
        assert_eq!(facts.problems, 25);
        report.partition(&tp, &facts).expect("in memory");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20 + 1 + 2, "{text}");
        assert_eq!(lines[0], "problem: file:///a: offset 0: missing: gone");
        assert_eq!(
            lines[20],
            "note: file:///a: offsets 0..5: skipped range: skipped"
        );
        assert_eq!(
            lines[21],
            "problem: t/0: ... and 5 more missing problem(s) not shown"
        );
        assert_eq!(
            lines[22],
            "partition t/0: 0 object(s), 0 record(s), 0 bytes, no objects, 0 skipped range(s), 25 problem(s): FAILED"
        );
    }

    #[test]
    fn json_lines_carry_the_same_facts() {
        let tp = TopicPartition::new("t", 3);
        let mut out = Vec::new();
        let mut report = Report::new(&mut out, true);
        let f = Finding::new(Check::Hole, "file:///a/x", Span::range(5, 7), "none");
        report.finding(&tp, f).expect("in memory");
        report
            .total(&Totals {
                partitions: 1,
                failed: 1,
                problems: 1,
                ..Totals::default()
            })
            .expect("in memory");
        let text = String::from_utf8(out).expect("utf-8");
        let values: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(
            values[0],
            json!({"kind": "problem", "topic": "t", "partition": 3, "object": "file:///a/x",
                   "first": 5, "next": 7, "check": "hole", "message": "none"})
        );
        assert_eq!(values[1]["kind"], "total");
        assert_eq!(values[1]["verdict"], "FAILED");
    }
}
