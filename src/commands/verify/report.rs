//! What `verify` finds and how it says so: the kinds of finding, the
//! offsets a finding is about, the facts of a partition and the totals,
//! their text or JSON lines on the output (at most [`SHOWN_PER_CHECK`]
//! problems per kind and partition, the rest counted), and the progress a
//! long run logs.
//!
//! Writes only to the output it is given and to the log; never decides
//! what is a problem (the checks do), never reads the store, Kafka or MySQL.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::format::names::TopicPartition;

/// Problem lines shown per kind of problem and partition; the rest are counted.
const SHOWN_PER_CHECK: usize = 20;

/// How often a long run says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The kinds of finding, as they are named in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Check {
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
pub(super) struct Span {
    pub(super) from: i64,
    pub(super) to: Option<i64>,
}

impl Span {
    pub(super) fn range(from: i64, to: i64) -> Span {
        Span { from, to: Some(to) }
    }

    pub(super) fn at(offset: i64) -> Span {
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
pub(super) struct Finding {
    pub(super) check: Check,
    /// The object's URL.
    pub(super) object: String,
    pub(super) span: Span,
    pub(super) detail: String,
}

impl Finding {
    pub(super) fn new(
        check: Check,
        object: &str,
        span: Span,
        detail: impl Into<String>,
    ) -> Finding {
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

/// What one partition holds and how many problems it has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Facts {
    pub(super) objects: usize,
    pub(super) records: u64,
    pub(super) bytes: u64,
    /// The chain's first offset and its end.
    pub(super) first: Option<i64>,
    pub(super) next: Option<i64>,
    pub(super) skipped_ranges: usize,
    pub(super) problems: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Totals {
    partitions: usize,
    failed: usize,
    objects: usize,
    records: u64,
    bytes: u64,
    pub(super) problems: u64,
}

impl Totals {
    pub(super) fn add(&mut self, f: &Facts) {
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
pub(super) struct Report<'o> {
    out: &'o mut dyn Write,
    json: bool,
    shown: HashMap<Check, usize>,
    hidden: BTreeMap<Check, u64>,
    problems: u64,
}

impl<'o> Report<'o> {
    pub(super) fn new(out: &'o mut dyn Write, json: bool) -> Report<'o> {
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

    pub(super) fn finding(&mut self, tp: &TopicPartition, f: Finding) -> io::Result<()> {
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
    pub(super) fn partition(&mut self, tp: &TopicPartition, f: &Facts) -> io::Result<()> {
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

    pub(super) fn total(&mut self, t: &Totals) -> io::Result<()> {
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
    pub(super) fn take_problems(&mut self) -> u64 {
        std::mem::take(&mut self.problems)
    }
}

/// Progress of a long run, logged every [`PROGRESS_EVERY`].
pub(super) struct Progress {
    started: Instant,
    last: Cell<Instant>,
    pub(super) objects: Cell<u64>,
    pub(super) bytes: Cell<u64>,
}

impl Progress {
    pub(super) fn new() -> Progress {
        let now = Instant::now();
        Progress {
            started: now,
            last: Cell::new(now),
            objects: Cell::new(0),
            bytes: Cell::new(0),
        }
    }

    pub(super) fn tick(&self, tp: &TopicPartition) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
