//! Reads where an earlier restore into a target partition stopped: the mark
//! of the last record in the partition (read committed, so a record is
//! there only once every in-sync replica has it), and which producer wrote
//! it with which sequence number, so that the next run goes on as that
//! producer. A partition that looks empty is asked whether its leader
//! holds a first batch beyond the high watermark, and waited for.
//!
//! Reads Kafka only; never produces.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::plan::{MARK_HEADER, Mark};
use crate::cancel::Cancel;
use crate::format::names::TopicPartition;
use crate::kafka::records::{Event, Origin, RecordsError, TxnFilter, visit};
use crate::kafka::{Client, KafkaError, OffsetSpec, Position};

/// What the end of a target partition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// No record (an empty log, or only transaction markers).
    Empty,
    /// The last record came from a restore, written by `origin`.
    Restored { mark: Mark, origin: Origin },
    /// The last record, at this offset, carries no mark: restore did not write it.
    Foreign { offset: i64 },
}

/// How often a partition that may hold a batch beyond its high watermark
/// is read again.
const HELD_POLL: Duration = Duration::from_millis(500);
/// How long at least such a partition is waited for (or `retry_timeout`,
/// if longer): a leader commits or drops what it holds within
/// `replica.lag.time.max.ms`, 30 s by default.
const HELD_PATIENCE: Duration = Duration::from_secs(60);

/// The tail of each partition of `tps`.
///
/// A partition empty up to its high watermark whose leader keeps the state
/// of a producer may hold a batch beyond it: appended, not yet on every
/// in-sync replica (a restore killed while its first batch was in flight).
/// Such a partition is read again until that batch is committed (the next
/// run then goes on as its producer, and the broker recognises the batch
/// instead of taking it twice) or dropped (the producer state goes with
/// it). Restore's producer is idempotent, not transactional: the state of
/// transactional producers (aborted or open transactions, which read
/// committed does not show) is not waited for. After [`HELD_PATIENCE`] a
/// leader has done one or the other, and the state is taken for records
/// deleted earlier.
pub fn read(
    client: &mut Client,
    tps: &[TopicPartition],
    cancel: &Cancel,
) -> anyhow::Result<Vec<Tail>> {
    let mut tails = read_once(client, tps)?;
    // Indexes into `tps` of the partitions that may hold such a batch.
    let mut held: Vec<usize> = (0..tps.len())
        .filter(|&i| tails[i] == Tail::Empty)
        .collect();
    let patience = client.config.retry_timeout.max(HELD_PATIENCE);
    let deadline = Instant::now() + patience;
    let mut said = false;
    while !held.is_empty() {
        let asked: Vec<TopicPartition> = held.iter().map(|&i| tps[i].clone()).collect();
        let producers = match client.active_producers(&asked) {
            Ok(p) => p,
            Err(e @ KafkaError::Unsupported { .. }) => {
                log::warn!(
                    "cannot tell whether {} holds a batch beyond its high watermark (one a killed restore left in flight would be written twice): {e}",
                    names(&asked)
                );
                break;
            }
            Err(e) => {
                return Err(e).context(format!("cannot read the producers of {}", names(&asked)));
            }
        };
        let ids = |i: usize| -> Vec<i64> {
            let all = producers.get(&tps[i]).map_or(&[][..], Vec::as_slice);
            all.iter()
                .filter(|p| !p.transactional)
                .map(|p| p.id)
                .collect()
        };
        held.retain(|&i| !ids(i).is_empty());
        let (late, first) = (Instant::now() >= deadline, !said);
        for &i in &held {
            if late {
                log::warn!(
                    "{} is still empty up to its high watermark; the state its leader keeps of producer(s) {:?} is taken for records deleted earlier",
                    tps[i],
                    ids(i)
                );
            } else if first {
                log::info!(
                    "{} is empty up to its high watermark, but its leader keeps the state of producer(s) {:?}: waiting up to {}s for what it holds beyond to be committed or dropped",
                    tps[i],
                    ids(i),
                    patience.as_secs()
                );
            }
        }
        if late || held.is_empty() {
            break;
        }
        said = true;
        if !cancel.sleep(HELD_POLL) {
            return Err(KafkaError::Interrupted.into());
        }
        let asked: Vec<TopicPartition> = held.iter().map(|&i| tps[i].clone()).collect();
        for (&i, tail) in held.iter().zip(read_once(client, &asked)?) {
            if tail != Tail::Empty {
                log::info!(
                    "{}: what its leader held beyond the high watermark is committed",
                    tps[i]
                );
                tails[i] = tail;
            }
        }
        held.retain(|&i| tails[i] == Tail::Empty);
    }
    Ok(tails)
}

fn names(tps: &[TopicPartition]) -> String {
    tps.iter()
        .map(|tp| tp.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tail of each partition of `tps`, as the high watermarks stand.
fn read_once(client: &mut Client, tps: &[TopicPartition]) -> anyhow::Result<Vec<Tail>> {
    let starts = client.list_offsets(tps, OffsetSpec::Earliest)?;
    let ends = client.list_offsets(tps, OffsetSpec::Latest)?;
    tps.iter()
        .map(|tp| {
            last(client, tp, starts[tp], ends[tp])
                .with_context(|| format!("cannot read the end of {tp}"))
        })
        .collect()
}

/// The last record of `[start, end)`, read backwards in growing steps: the
/// last offsets are usually a record, but may be transaction markers.
fn last(client: &mut Client, tp: &TopicPartition, start: i64, end: i64) -> anyhow::Result<Tail> {
    let mut back = 1i64;
    loop {
        let from = end.saturating_sub(back).max(start);
        if from >= end {
            return Ok(Tail::Empty);
        }
        if let Some(tail) = last_in(client, tp, from, end)? {
            return Ok(tail);
        }
        if from == start {
            return Ok(Tail::Empty);
        }
        back = back.saturating_mul(64);
    }
}

/// The last record in `[from, end)`, if there is one.
fn last_in(
    client: &mut Client,
    tp: &TopicPartition,
    from: i64,
    end: i64,
) -> Result<Option<Tail>, KafkaError> {
    let mut found = None;
    let mut position = from;
    let mut scratch = Vec::new();
    while position < end {
        let at = Position {
            offset: position,
            last_epoch: None,
        };
        let data = client.fetch_one(tp, at)?;
        let mut filter = TxnFilter::new(data.aborted.clone());
        let next = visit::<RecordsError>(&data.records, position, &mut filter, &mut scratch, |e| {
            if let Event::Record { record, origin, .. } = e
                && record.offset < end
            {
                let mark = record
                    .headers
                    .iter()
                    .rev()
                    .find(|h| h.key == MARK_HEADER.as_bytes())
                    .and_then(|h| h.value.and_then(Mark::parse));
                found = Some(match mark {
                    Some(mark) => Tail::Restored { mark, origin },
                    None => Tail::Foreign {
                        offset: record.offset,
                    },
                });
            }
            Ok(())
        })
        .map_err(|e| KafkaError::CorruptBatch {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            offset: e.offset,
            reason: e.reason,
        })?;
        if next == position {
            // Nothing complete below the end: the log ends in a gap the
            // fetch skipped (compaction) or data is not readable yet.
            if data.records.is_empty() {
                break;
            }
            return Err(KafkaError::Protocol {
                broker: format!("leader of {tp}"),
                what: format!("a fetch at offset {position} returned no complete batch"),
            });
        }
        position = next;
    }
    Ok(found)
}
