//! Reads where an earlier restore into a target partition stopped: the mark
//! of the last record in the partition (read committed, so a record is
//! there only once every in-sync replica has it), and which producer wrote
//! it with which sequence number, so that the next run goes on as that
//! producer.
//!
//! Reads Kafka only; never produces.

use anyhow::Context as _;

use super::plan::{MARK_HEADER, Mark};
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

/// The tail of each partition of `tps`.
pub fn read(client: &mut Client, tps: &[TopicPartition]) -> anyhow::Result<Vec<Tail>> {
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
