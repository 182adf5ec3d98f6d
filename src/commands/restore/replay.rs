//! The two threads of a restore: a reader that streams the selected
//! records of each partition out of the store's objects, in offset order,
//! and seals them into batches (marked, sequenced, compressed); and the
//! caller's thread, which produces each batch and waits until every
//! in-sync replica has it before the next. They are joined by a bounded
//! channel, so memory holds a few batches and one object block.
//!
//! Never writes to the store; never produces a record out of order or
//! twice in one run (a resent batch keeps its sequence numbers).

use std::collections::BTreeMap;
use std::io::BufReader;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::bounded;

use super::plan::{MARK_HEADER, Mark, Selection};
use crate::cancel::Cancel;
use crate::format::avro::Reader;
use crate::format::names::{ObjectKey, TopicPartition};
use crate::format::record::{Header, OwnedRecord};
use crate::kafka::records::Compression;
use crate::kafka::{BatchBuilder, Client, Producer, Sealed};
use crate::store::Store;

/// A batch closes once its records take this many bytes (encoded), which
/// keeps it below Kafka's default `max.message.bytes` (1 MiB) whatever the
/// codec; a larger record goes alone.
const BATCH_BYTES: usize = 512 << 10;
/// Under `--rate`, batches are smaller, so that the rate holds over a
/// twentieth of a second rather than one large batch.
const PACED_BATCHES_PER_SECOND: u64 = 20;
const MIN_BATCH_BYTES: u64 = 16 << 10;
/// Batches read ahead of the producer.
const AHEAD: usize = 4;
/// How often a progress line is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One partition to restore: `source` into `target` from offset `start`.
#[derive(Clone, Debug)]
pub struct Job {
    pub source: TopicPartition,
    pub target: TopicPartition,
    pub start: i64,
}

/// What was restored into a partition (or, dry, would be).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Done {
    pub records: u64,
    pub bytes: u64,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

impl Done {
    fn add(&mut self, offset: i64, bytes: usize) {
        self.records += 1;
        self.bytes += bytes as u64;
        self.first.get_or_insert(offset);
        self.last = Some(offset);
    }
}

/// Size of a record's key, value and headers.
fn record_bytes(r: &OwnedRecord) -> usize {
    let h: usize = r
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len) + h
}

/// Calls `f` with every selected record of `job`'s source partition at or
/// after its start, in offset order, reading one object at a time. Warns of
/// holes in the chain inside the selection: what is not archived cannot be
/// restored. Returns false when stopped early by `cancel`.
pub fn walk(
    store: &dyn Store,
    job: &Job,
    selection: &Selection,
    cancel: &Cancel,
    mut f: impl FnMut(&OwnedRecord) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let tp = &job.source;
    let mut expected: Option<i64> = None;
    for (first, info) in store.list_infos(&tp.topic, tp.partition)? {
        if selection.done_at(first.max(job.start)) {
            break;
        }
        let next = info.summary.next_offset;
        if let Some(at) = expected
            && first > at
            && first > job.start
        {
            log::warn!(
                "the archive of {tp} has a hole at offsets {at}..{first}: those records cannot be restored"
            );
        }
        expected = Some(next);
        if !selection.may_hold(job.start, first, &info.summary) {
            continue;
        }
        let key = ObjectKey::new(tp, first);
        let url = store.object_url(&key);
        let object = store.open(&key)?;
        let mut reader = Reader::new(BufReader::with_capacity(1 << 18, object))
            .with_context(|| format!("cannot read {url}"))?;
        while let Some(r) = reader
            .next_record()
            .with_context(|| format!("cannot read {url}"))?
        {
            if cancel.is_set() {
                return Ok(false);
            }
            if selection.done_at(r.offset) {
                return Ok(true);
            }
            if r.offset >= job.start && selection.selects(r.offset, r.timestamp) {
                f(&r)?;
            }
        }
    }
    Ok(true)
}

/// What the reader hands the producer.
enum Chunk {
    Batch {
        sealed: Sealed,
        /// The source offset of its last record.
        last: i64,
        done: Done,
    },
    /// Every selected record of the partition has been handed on.
    End(TopicPartition),
}

/// Bytes per second, or no limit.
struct Pace {
    rate: Option<u64>,
    since: Instant,
    sent: u64,
}

impl Pace {
    /// Waits until `bytes` more stay within the rate; false when stopped.
    fn admit(&mut self, bytes: u64, cancel: &Cancel) -> bool {
        let Some(rate) = self.rate else { return true };
        self.sent += bytes;
        let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
        let elapsed = self.since.elapsed();
        due <= elapsed || cancel.sleep(due - elapsed)
    }
}

/// What a restore replays, and how.
pub struct Plan<'a> {
    pub jobs: &'a [Job],
    pub selection: &'a Selection,
    pub compression: Compression,
    /// Record bytes per second, or no limit.
    pub rate: Option<u64>,
}

/// Restores the jobs in order; returns what each partition received, and
/// whether the restore ran to its end (false: stopped by a signal).
pub fn replay(
    store: &dyn Store,
    client: &mut Client,
    mut producer: Producer,
    plan: &Plan,
    cancel: &Cancel,
) -> anyhow::Result<(BTreeMap<TopicPartition, Done>, bool)> {
    let Plan {
        jobs,
        selection,
        compression,
        rate,
    } = *plan;
    let batch_bytes = rate.map_or(BATCH_BYTES, |r| {
        (r / PACED_BATCHES_PER_SECOND).clamp(MIN_BATCH_BYTES, BATCH_BYTES as u64) as usize
    });
    let (tx, rx) = bounded::<Chunk>(AHEAD);
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("restore-reader".into())
            .spawn_scoped(scope, move || -> anyhow::Result<bool> {
                // A reader that fails or panics stops the producer's
                // retries at once, not after `retry_timeout`.
                let mut guard = AbortOnFailure {
                    cancel,
                    failed: true,
                };
                let read = (|| -> anyhow::Result<bool> {
                    for job in jobs {
                        let mut builder = BatchBuilder::default();
                        let mut done = Done::default();
                        let mut seal = |builder: &mut BatchBuilder, done: &mut Done| {
                            let sealed = producer.seal(&job.target, builder, compression);
                            let last = done.last.expect("a batch has records");
                            let chunk = Chunk::Batch {
                                sealed,
                                last,
                                done: std::mem::take(done),
                            };
                            tx.send(chunk).is_ok()
                        };
                        let complete = walk(store, job, selection, cancel, |r| {
                            let mark = Mark {
                                topic: job.source.topic.to_string(),
                                partition: job.source.partition,
                                offset: r.offset,
                            }
                            .value();
                            let extra = [Header {
                                key: MARK_HEADER.as_bytes(),
                                value: Some(mark.as_bytes()),
                            }];
                            let size = record_bytes(r);
                            if !builder.is_empty() && builder.encoded_bytes() + size > batch_bytes {
                                anyhow::ensure!(
                                    seal(&mut builder, &mut done),
                                    "the producer stopped"
                                );
                            }
                            builder.add(&r.as_record(), &extra);
                            done.add(r.offset, size);
                            Ok(())
                        })?;
                        if !complete {
                            return Ok(false);
                        }
                        if !builder.is_empty() && !seal(&mut builder, &mut done) {
                            return Ok(false);
                        }
                        if tx.send(Chunk::End(job.target.clone())).is_err() {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                })();
                guard.failed = read.is_err();
                read
            })
            .context("cannot start the restore reader thread")?;
        let produced = produce_all(client, &rx, rate, cancel);
        if produced.is_err() {
            // A failed producer stops the reader's store retries too.
            cancel.abort();
        }
        // Whatever ended the producer ends the reader too.
        drop(rx);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the restore reader thread panicked")));
        let (totals, stopped_early) = produced?;
        let complete = read? && !stopped_early;
        Ok((totals, complete))
    })
}

/// Aborts the stop flag when dropped while `failed`, which it is until the
/// thread owning it says otherwise: so a panic aborts too.
struct AbortOnFailure<'a> {
    cancel: &'a Cancel,
    failed: bool,
}

impl Drop for AbortOnFailure<'_> {
    fn drop(&mut self) {
        if self.failed {
            self.cancel.abort();
        }
    }
}

/// Produces every chunk as it comes, logging progress; returns the totals
/// and whether a stop request ended it early.
fn produce_all(
    client: &mut Client,
    rx: &crossbeam_channel::Receiver<Chunk>,
    rate: Option<u64>,
    cancel: &Cancel,
) -> anyhow::Result<(BTreeMap<TopicPartition, Done>, bool)> {
    let mut totals: BTreeMap<TopicPartition, Done> = BTreeMap::new();
    let mut pace = Pace {
        rate,
        since: Instant::now(),
        sent: 0,
    };
    let started = Instant::now();
    let mut last_log = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let (mut logged_records, mut logged_bytes) = (0u64, 0u64);
    loop {
        let chunk = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(chunk) => chunk,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if !cancel.is_set() => continue,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Ok((totals, true)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Ok((totals, cancel.is_set()));
            }
        };
        match chunk {
            Chunk::Batch { sealed, last, done } => {
                if cancel.is_set() || !pace.admit(done.bytes, cancel) {
                    return Ok((totals, true));
                }
                client
                    .produce(std::slice::from_ref(&sealed))
                    .with_context(|| {
                        format!(
                            "cannot produce to {} (source offsets up to {last})",
                            sealed.tp
                        )
                    })?;
                let total = totals.entry(sealed.tp.clone()).or_default();
                total.records += done.records;
                total.bytes += done.bytes;
                total.first = total.first.or(done.first);
                total.last = Some(last);
                records += done.records;
                bytes += done.bytes;
            }
            Chunk::End(tp) => {
                let total = totals.entry(tp.clone()).or_default();
                log::info!("{tp}: restored {} record(s)", total.records);
            }
        }
        if last_log.elapsed() >= PROGRESS_EVERY {
            let secs = last_log.elapsed().as_secs_f64();
            let at: Vec<String> = totals
                .iter()
                .rev()
                .take(4)
                .filter_map(|(tp, d)| d.last.map(|l| format!("{tp} after source offset {l}")))
                .collect();
            log::info!(
                "restore: {records} record(s), {:.1} MB in {:.0} s; {:.0} records/s, {:.1} MB/s; {}",
                bytes as f64 / 1e6,
                started.elapsed().as_secs_f64(),
                (records - logged_records) as f64 / secs,
                (bytes - logged_bytes) as f64 / 1e6 / secs,
                at.join(", ")
            );
            (logged_records, logged_bytes) = (records, bytes);
            last_log = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_fails_or_panics_aborts_and_one_that_ends_well_does_not() {
        let cancel = Cancel::default();
        {
            let mut guard = AbortOnFailure {
                cancel: &cancel,
                failed: true,
            };
            guard.failed = false;
        }
        assert!(!cancel.is_set(), "a thread that ended well aborted");
        {
            let _failed = AbortOnFailure {
                cancel: &cancel.aborts_only(),
                failed: true,
            };
        }
        assert!(
            cancel.aborts_only().is_set(),
            "a failed thread did not abort"
        );

        let other = Cancel::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = AbortOnFailure {
                cancel: &other,
                failed: true,
            };
            panic!("the reader panics");
        }));
        assert!(panicked.is_err());
        assert!(other.is_set(), "a panicking thread did not abort");
    }
}
