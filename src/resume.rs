//! Where archiving of a partition (re)starts: step 1 of the commit protocol.
//!
//! The group's committed offset is only a hint (trusted when kafka-store
//! wrote it); the chain of objects in the store decides: follow it from the
//! hint, or from the last object of the partition's folder, to the first
//! missing name. With no archive at all, `kafka.start` decides. A position
//! below the log start is data lost upstream (`kafka.on_gap`); a position
//! beyond the log end means the log was replaced.
//!
//! Reads Kafka and the store; never writes either.

use std::collections::HashMap;

use anyhow::Context as _;

use crate::config::{OnGap, Start};
use crate::kafka::{Client, OffsetSpec, TopicPartition};
use crate::naming::{self, ObjectKey};
use crate::store::{Store, StoreError};

/// Metadata stored with every offset kafka-store commits; an offset without
/// it (e.g. reset by an operator tool) is not trusted as a chain link.
pub const COMMIT_METADATA: &str = "kafka-store/1";

/// Where a partition starts, or why it cannot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Archive from this offset (the next object's name).
    At(i64),
    /// This partition cannot be archived until an operator acts.
    Halted(String),
}

/// The log's extent for one partition, and what the store and group say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub log_start: i64,
    /// Last stable offset: the end of what `read_committed` can read.
    pub log_end: i64,
    /// The end of the chain in the store, if the partition has any object.
    pub chain_end: Option<i64>,
}

/// The decision, as a pure function of the facts (unit-tested below).
pub fn decide(tp: &TopicPartition, facts: &Facts, start: Start, on_gap: OnGap) -> Resume {
    let position = match facts.chain_end {
        Some(p) => p,
        None => match start {
            Start::Earliest => facts.log_start,
            Start::Latest => facts.log_end,
            Start::Error => {
                return Resume::Halted(format!(
                    "{tp} has no archive and no committed offset, and kafka.start = \"error\""
                ));
            }
        },
    };
    if position < facts.log_start {
        let lost = format!(
            "records {position}..{} of {tp} were deleted from kafka before they were archived",
            facts.log_start
        );
        return match on_gap {
            OnGap::Stop => Resume::Halted(format!(
                "{lost}; set kafka.on_gap = \"skip\" to archive on from offset {}",
                facts.log_start
            )),
            OnGap::Skip => {
                log::error!("{lost}; skipping them (kafka.on_gap = \"skip\")");
                Resume::At(facts.log_start)
            }
        };
    }
    if position > facts.log_end {
        return Resume::Halted(format!(
            "the archive of {tp} ends at offset {position} but the kafka log ends at {}: was the topic deleted and re-created? archive it with a new store prefix",
            facts.log_end
        ));
    }
    Resume::At(position)
}

/// Follows the chain of `tp` in the store from `from`.
pub fn chain_end(store: &dyn Store, tp: &TopicPartition, from: i64) -> Result<i64, anyhow::Error> {
    let end = naming::follow_chain::<anyhow::Error>(from, |first| {
        let info = store.head(&ObjectKey::new(tp, first))?;
        Ok(info.map(|i| i.summary.next_offset))
    })
    .with_context(|| format!("cannot follow the archive chain of {tp} from offset {from}"))?;
    Ok(end.position)
}

/// Finds the start of every partition: one OffsetFetch, two ListOffsets,
/// and the chain in the store.
pub fn resume_all(
    client: &mut Client,
    store: &dyn Store,
    group: &str,
    tps: &[TopicPartition],
    start: Start,
    on_gap: OnGap,
) -> anyhow::Result<Vec<(TopicPartition, Resume)>> {
    let committed = client
        .committed_offsets(group, tps)
        .with_context(|| format!("cannot read committed offsets of group {group}"))?;
    let earliest = client
        .list_offsets(tps, OffsetSpec::Earliest)
        .context("cannot read log start offsets")?;
    let latest = client
        .list_offsets(tps, OffsetSpec::Latest)
        .context("cannot read log end offsets")?;
    let mut out = Vec::with_capacity(tps.len());
    for tp in tps {
        let hint = committed
            .get(tp)
            .filter(|c| c.metadata == COMMIT_METADATA)
            .map(|c| c.offset);
        let from = match hint {
            Some(h) => Some(h),
            None => last_object(store, tp)?,
        };
        let chain_end = match from {
            Some(f) => Some(chain_end(store, tp, f)?),
            None => None,
        };
        let facts = Facts {
            log_start: offset_of(&earliest, tp)?,
            log_end: offset_of(&latest, tp)?,
            chain_end,
        };
        let decision = decide(tp, &facts, start, on_gap);
        log::debug!("{tp}: hint {hint:?}, {facts:?} -> {decision:?}");
        out.push((tp.clone(), decision));
    }
    Ok(out)
}

fn last_object(store: &dyn Store, tp: &TopicPartition) -> Result<Option<i64>, StoreError> {
    Ok(store.list(&tp.topic, tp.partition)?.last().copied())
}

fn offset_of(map: &HashMap<TopicPartition, i64>, tp: &TopicPartition) -> anyhow::Result<i64> {
    map.get(tp)
        .copied()
        .with_context(|| format!("kafka returned no offset for {tp}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(facts: (i64, i64, Option<i64>), start: Start, on_gap: OnGap, want: &str) {
        let tp = TopicPartition::new("t", 0);
        let facts = Facts {
            log_start: facts.0,
            log_end: facts.1,
            chain_end: facts.2,
        };
        let got = match decide(&tp, &facts, start, on_gap) {
            Resume::At(p) => format!("at {p}"),
            Resume::Halted(why) => format!("halted: {why}"),
        };
        assert!(
            got.starts_with(want),
            "{facts:?} {start:?} {on_gap:?}: {got}"
        );
    }

    #[test]
    fn the_chain_wins_over_the_start_policy() {
        check((0, 100, Some(40)), Start::Latest, OnGap::Stop, "at 40");
        check((0, 100, Some(100)), Start::Error, OnGap::Stop, "at 100");
    }

    #[test]
    fn an_empty_archive_starts_as_configured() {
        check((5, 100, None), Start::Earliest, OnGap::Stop, "at 5");
        check((5, 100, None), Start::Latest, OnGap::Stop, "at 100");
        check(
            (5, 100, None),
            Start::Error,
            OnGap::Stop,
            "halted: t/0 has no archive",
        );
    }

    #[test]
    fn records_deleted_before_archiving_stop_or_skip_loudly() {
        check(
            (50, 100, Some(40)),
            Start::Earliest,
            OnGap::Stop,
            "halted: records 40..50 of t/0 were deleted",
        );
        check((50, 100, Some(40)), Start::Earliest, OnGap::Skip, "at 50");
    }

    #[test]
    fn an_archive_beyond_the_log_is_refused() {
        check(
            (0, 10, Some(40)),
            Start::Earliest,
            OnGap::Skip,
            "halted: the archive of t/0 ends at offset 40",
        );
    }
}
