//! Where archiving of a partition (re)starts: step 1 of the commit protocol.
//!
//! The group's committed offset is only a hint (trusted when kafka-store
//! wrote it); the chain of objects in the store decides: follow it from the
//! hint, or from the last object of the partition's folder, to the first
//! missing name. With no archive at all, `kafka.start` decides. A position
//! below the log start is data lost upstream (`kafka.on_gap`); a position
//! beyond the log end means the log was replaced.
//!
//! The decision is one pure function (`decide`), used both at start and
//! when a fetch finds its position out of range. Reads Kafka and the
//! store; never writes either.

use std::collections::HashMap;

use anyhow::Context as _;

use super::halt::Halt;
use crate::config::{OnGap, Start};
use crate::format::names::{self, ObjectKey, TopicPartition};
use crate::kafka::{Client, OffsetSpec};
use crate::store::{Store, StoreError};

/// Every offset kafka-store commits carries metadata naming the store and
/// the object that ends at the offset: `kafka-store/1 store=<tag> prev=<first>`
/// (or `... start` for a position where the chain begins). An offset
/// without it (reset by an operator tool), or written for another store, is
/// not trusted as a chain link.
const METADATA_VERSION: &str = "kafka-store/1";

/// A short, stable tag of the store's URL.
pub fn store_tag(store: &dyn Store) -> String {
    format!("{:08x}", crc32c::crc32c(store.url().as_bytes()))
}

/// The metadata committed with a position (see [`METADATA_VERSION`]).
pub fn commit_metadata(tag: &str, prev: Option<i64>) -> String {
    match prev {
        Some(first) => format!("{METADATA_VERSION} store={tag} prev={first}"),
        None => format!("{METADATA_VERSION} store={tag} start"),
    }
}

/// The `prev` of metadata kafka-store wrote for this store: `Some(None)` for
/// a chain start, `None` when the metadata is not ours.
pub fn parse_metadata(metadata: &str, tag: &str) -> Option<Option<i64>> {
    let rest = metadata
        .strip_prefix(METADATA_VERSION)?
        .strip_prefix(" store=")?;
    let (t, link) = rest.split_once(' ')?;
    if t != tag {
        return None;
    }
    match link {
        "start" => Some(None),
        other => other.strip_prefix("prev=")?.parse().ok().map(Some),
    }
}

/// Where a chain ends: the next object's name, and the first offset of the
/// object that ends there (None at the start of a chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainPos {
    pub position: i64,
    pub prev: Option<i64>,
}

/// Where a partition goes on, or why it cannot.
#[derive(Debug)]
pub enum Resume {
    /// Archive from `position` (the next object's name); `prev` as in [`ChainPos`].
    At(ChainPos),
    /// Records `[from, at.position)` were deleted before they were archived
    /// and `kafka.on_gap = "skip"`: say so loudly, then archive from `at`.
    Skip { from: i64, at: ChainPos },
    /// This partition cannot be archived until an operator acts.
    Halt(Halt),
    /// Its position could not be found now (store trouble): try again.
    Later(StoreError),
}

/// The log's extent for one partition, and what the store and group say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub log_start: i64,
    /// Last stable offset: the end of what `read_committed` can read.
    pub log_end: i64,
    /// The end of the chain in the store, if the partition has any object
    /// (or a recorded start).
    pub chain_end: Option<ChainPos>,
}

/// The decision, as a pure function of the facts (unit-tested below).
pub fn decide(facts: &Facts, start: Start, on_gap: OnGap) -> Resume {
    let fresh = |position| ChainPos {
        position,
        prev: None,
    };
    let here = match facts.chain_end {
        Some(p) => p,
        None => match start {
            Start::Earliest => fresh(facts.log_start),
            Start::Latest => fresh(facts.log_end),
            Start::Error => return Resume::Halt(Halt::NoArchive),
        },
    };
    let position = here.position;
    if position < facts.log_start {
        return match on_gap {
            OnGap::Stop => Resume::Halt(Halt::Gap {
                from: position,
                to: facts.log_start,
            }),
            OnGap::Skip => Resume::Skip {
                from: position,
                at: fresh(facts.log_start),
            },
        };
    }
    if position > facts.log_end {
        return Resume::Halt(Halt::BeyondLog {
            archive_end: position,
            log_end: facts.log_end,
        });
    }
    Resume::At(here)
}

/// Why following a chain stopped short.
enum Chain {
    Store(StoreError),
    Broken(names::BrokenChain),
}

impl From<StoreError> for Chain {
    fn from(e: StoreError) -> Self {
        Chain::Store(e)
    }
}

impl From<names::BrokenChain> for Chain {
    fn from(b: names::BrokenChain) -> Self {
        Chain::Broken(b)
    }
}

/// Follows the chain of `tp` in the store from `from`; `prev` is the
/// object known to end at `from`, if any.
pub fn follow(
    store: &dyn Store,
    tp: &TopicPartition,
    from: i64,
    prev: Option<i64>,
) -> Result<ChainPos, StoreError> {
    let mut lookup = |first| {
        let info = store.head(&ObjectKey::new(tp, first))?;
        Ok(info.map(|i| i.summary.next_offset))
    };
    let end = match names::follow_chain::<Chain>(from, &mut lookup) {
        Ok(end) => end,
        Err(Chain::Store(e)) => return Err(e),
        Err(Chain::Broken(b)) => {
            return Err(StoreError::NotArchive {
                what: store.object_url(&ObjectKey::new(tp, b.first)),
                why: b.to_string(),
            });
        }
    };
    Ok(ChainPos {
        position: end.position,
        prev: end.last.or(prev),
    })
}

/// The end of the archive of `tp`, found from the last object of its
/// folder (the store is the ledger); None for an empty archive.
fn from_listing(store: &dyn Store, tp: &TopicPartition) -> Result<Option<ChainPos>, StoreError> {
    match store.list(&tp.topic, tp.partition)?.last() {
        Some(&last) => follow(store, tp, last, None).map(Some),
        None => Ok(None),
    }
}

/// The end of the archive of `tp`, starting from the group's committed
/// offset when it is a verified link of this store's chain.
pub fn locate(
    store: &dyn Store,
    tp: &TopicPartition,
    hint: Option<(i64, Option<i64>)>,
) -> Result<Option<ChainPos>, StoreError> {
    let Some((offset, prev)) = hint else {
        return from_listing(store, tp);
    };
    let trusted = match prev {
        // The object before must exist and end exactly here.
        Some(first) => store
            .head(&ObjectKey::new(tp, first))?
            .is_some_and(|i| i.summary.next_offset == offset),
        // A recorded start: the chain begins there, or nothing is stored yet.
        None => {
            store.head(&ObjectKey::new(tp, offset))?.is_some()
                || store.list(&tp.topic, tp.partition)?.is_empty()
        }
    };
    if !trusted {
        log::warn!(
            "{tp}: the committed offset {offset} is not a link of the archive's chain (another store, or a restored archive?); following the chain from its last object"
        );
        return from_listing(store, tp);
    }
    follow(store, tp, offset, prev).map(Some)
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
    let tag = store_tag(store);
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
            .and_then(|c| parse_metadata(&c.metadata, &tag).map(|prev| (c.offset, prev)));
        let log_start = offset_of(&earliest, tp)?;
        let chain_end = locate(store, tp, hint).and_then(|end| {
            // Before declaring a gap, make sure no later part of the chain
            // exists (a crash after an earlier skip leaves one past the hint).
            if hint.is_some() && end.is_some_and(|c| c.position < log_start) {
                return from_listing(store, tp);
            }
            Ok(end)
        });
        // One partition's store trouble does not hold up the others.
        let chain_end = match chain_end {
            Ok(end) => end,
            Err(e) => {
                out.push((tp.clone(), Resume::Later(e)));
                continue;
            }
        };
        let facts = Facts {
            log_start,
            log_end: offset_of(&latest, tp)?,
            chain_end,
        };
        let decision = decide(&facts, start, on_gap);
        log::debug!("{tp}: hint {hint:?}, {facts:?} -> {decision:?}");
        out.push((tp.clone(), decision));
    }
    Ok(out)
}

fn offset_of(map: &HashMap<TopicPartition, i64>, tp: &TopicPartition) -> anyhow::Result<i64> {
    map.get(tp)
        .copied()
        .with_context(|| format!("kafka returned no offset for {tp}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pipeline::halt::Halted;

    fn check(facts: (i64, i64, Option<i64>), start: Start, on_gap: OnGap, want: &str) {
        let tp = TopicPartition::new("t", 0);
        let facts = Facts {
            log_start: facts.0,
            log_end: facts.1,
            chain_end: facts.2.map(|position| ChainPos {
                position,
                prev: Some(0),
            }),
        };
        let got = match decide(&facts, start, on_gap) {
            Resume::At(p) => format!("at {}", p.position),
            Resume::Skip { from, at } => format!("skip {from}..{}", at.position),
            Resume::Halt(why) => format!("halted: {}", Halted { tp, why }),
            Resume::Later(e) => format!("later: {e}"),
        };
        assert!(
            got.starts_with(want),
            "{facts:?} {start:?} {on_gap:?}: {got}"
        );
    }

    #[test]
    fn commit_metadata_names_the_store_and_the_link() {
        assert_eq!(
            commit_metadata("0badcafe", Some(40)),
            "kafka-store/1 store=0badcafe prev=40"
        );
        assert_eq!(
            parse_metadata("kafka-store/1 store=0badcafe prev=40", "0badcafe"),
            Some(Some(40))
        );
        assert_eq!(
            parse_metadata(&commit_metadata("0badcafe", None), "0badcafe"),
            Some(None)
        );
        for untrusted in [
            "",
            "kafka-store/1",
            "kafka-store/1 store=other prev=40",
            "kafka-store/2 store=0badcafe prev=1",
            "kafka-store/1 store=0badcafe prev=x",
        ] {
            assert_eq!(parse_metadata(untrusted, "0badcafe"), None, "{untrusted}");
        }
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
        check(
            (50, 100, Some(40)),
            Start::Earliest,
            OnGap::Skip,
            "skip 40..50",
        );
        check((50, 100, None), Start::Earliest, OnGap::Stop, "at 50");
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
