//! Where archiving of a partition (re)starts: step 1 of the commit protocol.
//!
//! The group's committed offset is only a hint (trusted when kafka-store
//! wrote it); the chain of objects in the store decides: follow it from the
//! hint, or from the last object of the partition's folder, to the first
//! missing name. With no archive at all, `kafka.start` decides, and every
//! chain begins at offset 0: a start past it is an explicit skipped range,
//! so two builders that read different offsets still meet at one name.
//!
//! Then the log must continue the archived history (one history per chain):
//! the topic id the last object records must be the topic's id now, and its
//! last leader epoch must not end, in the leader's log, before the archive
//! does (KIP-320). A position below the log start is data lost upstream
//! (`kafka.on_gap`); beyond the log end, the log was replaced.
//!
//! The decision is one pure function (`decide`), used both at start and
//! when a fetch finds its position out of range. Reads Kafka and the
//! store; never writes either.

use std::collections::HashMap;
use std::fmt;

use uuid::Uuid;

use super::halt::Halt;
use crate::config::{OnGap, Start};
use crate::format::avro::Skipped;
use crate::format::names::{self, ObjectKey, TopicPartition};
use crate::kafka::{Client, EpochEnd, KafkaError, OffsetSpec};
use crate::store::{ObjectInfo, Store, StoreError};

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

/// The end of a partition's chain, with what its last object says about
/// the history it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainEnd {
    pub at: ChainPos,
    /// The topic id the last object records.
    pub topic_id: Option<Uuid>,
    /// The leader epoch of the last batch the chain covers: that of the
    /// last object that records one (a skipped range records none).
    pub last_epoch: Option<i32>,
}

/// Why a partition cannot start yet; it is tried again on its own.
#[derive(Debug)]
pub enum NotYet {
    Kafka(KafkaError),
    Store(StoreError),
}

impl fmt::Display for NotYet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotYet::Kafka(e) => write!(f, "{e}"),
            NotYet::Store(e) => write!(f, "{e}"),
        }
    }
}

/// Where a partition goes on, or why it cannot.
#[derive(Debug)]
pub enum Resume {
    /// Archive from `at.position` (the next object's name); `last_epoch`
    /// is the leader epoch of the last archived batch, for the broker to
    /// check the history against.
    At {
        at: ChainPos,
        last_epoch: Option<i32>,
    },
    /// Offsets `[at.position, to)` are skipped on purpose (`reason`): commit
    /// them as a skipped range, then archive from `to`.
    Skip {
        at: ChainPos,
        to: i64,
        reason: Skipped,
    },
    /// This partition cannot be archived until an operator acts.
    Halt(Halt),
    /// Its position could not be found now: try again.
    Later(NotYet),
}

/// What Kafka and the store say about one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub log_start: i64,
    /// Last stable offset: the end of what `read_committed` can read.
    pub log_end: i64,
    /// The topic's id now, when the broker has ids.
    pub topic_id: Option<Uuid>,
    /// The end of the chain in the store, if the partition has any object
    /// (or a recorded start).
    pub chain_end: Option<ChainEnd>,
    /// Where the chain's last epoch ends in the leader's log, when it was
    /// asked: `Some(None)` when the leader knows neither it nor an earlier one.
    pub epoch_end: Option<Option<EpochEnd>>,
}

/// The decision, as a pure function of the facts (unit-tested below).
pub fn decide(facts: &Facts, start: Start, on_gap: OnGap) -> Resume {
    let Some(end) = facts.chain_end else {
        let fresh = ChainPos {
            position: 0,
            prev: None,
        };
        let skip = |to: i64, reason| match to {
            0 => Resume::At {
                at: fresh,
                last_epoch: None,
            },
            to => Resume::Skip {
                at: fresh,
                to,
                reason,
            },
        };
        return match start {
            // What retention took before the archive began is a skipped
            // range too: every chain starts at offset 0.
            Start::Earliest => skip(facts.log_start, Skipped::Retention),
            Start::Latest => skip(facts.log_end, Skipped::StartLatest),
            Start::Error => Resume::Halt(Halt::NoArchive),
        };
    };
    let position = end.at.position;
    if let (Some(archived), Some(current)) = (end.topic_id, facts.topic_id)
        && archived != current
    {
        return Resume::Halt(Halt::TopicReplaced { archived, current });
    }
    if let (Some(epoch), Some(ends)) = (end.last_epoch, facts.epoch_end) {
        let ends_at = ends.map(|e| e.end_offset);
        if ends_at.is_none_or(|at| at < position) {
            return Resume::Halt(Halt::Diverged {
                epoch,
                ends_at,
                archive_end: position,
            });
        }
    }
    if position > facts.log_end {
        return Resume::Halt(Halt::BeyondLog {
            archive_end: position,
            log_end: facts.log_end,
        });
    }
    if position < facts.log_start {
        return match on_gap {
            OnGap::Stop => Resume::Halt(Halt::Gap {
                from: position,
                to: facts.log_start,
            }),
            OnGap::Skip => Resume::Skip {
                at: end.at,
                to: facts.log_start,
                reason: Skipped::Retention,
            },
        };
    }
    Resume::At {
        at: end.at,
        last_epoch: end.last_epoch,
    }
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
/// object known to end at `from`, if any (`prev_info` what it says).
fn follow_from(
    store: &dyn Store,
    tp: &TopicPartition,
    from: i64,
    prev: Option<(i64, Option<ObjectInfo>)>,
) -> Result<ChainEnd, StoreError> {
    let prev_first = prev.as_ref().map(|(f, _)| *f);
    let mut last: Option<(i64, ObjectInfo)> = prev.and_then(|(f, i)| i.map(|i| (f, i)));
    let mut epoch = last.as_ref().and_then(|(_, i)| i.summary.last_epoch);
    let mut lookup = |first| {
        let info = store.head(&ObjectKey::new(tp, first))?;
        let next = info.as_ref().map(|i| i.summary.next_offset);
        if let Some(info) = info {
            epoch = info.summary.last_epoch.or(epoch);
            last = Some((first, info));
        }
        Ok(next)
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
    Ok(ChainEnd {
        at: ChainPos {
            position: end.position,
            prev: end.last.or(prev_first),
        },
        topic_id: last.as_ref().and_then(|(_, i)| i.topic_id),
        last_epoch: epoch,
    })
}

/// Follows the chain of `tp` in the store from the object `first` that
/// `info` describes (another builder's, at a name this process wanted).
pub fn follow(
    store: &dyn Store,
    tp: &TopicPartition,
    first: i64,
    info: &ObjectInfo,
) -> Result<ChainEnd, StoreError> {
    follow_from(
        store,
        tp,
        info.summary.next_offset,
        Some((first, Some(info.clone()))),
    )
}

/// The end of the archive of `tp`, found from the last object of its
/// folder (the store is the ledger); None for an empty archive.
fn from_listing(store: &dyn Store, tp: &TopicPartition) -> Result<Option<ChainEnd>, StoreError> {
    match store.list(&tp.topic, tp.partition)?.last() {
        Some(&last) => follow_from(store, tp, last, None).map(Some),
        None => Ok(None),
    }
}

/// The end of the archive of `tp`, starting from the group's committed
/// offset when it is a verified link of this store's chain.
pub fn locate(
    store: &dyn Store,
    tp: &TopicPartition,
    hint: Option<(i64, Option<i64>)>,
) -> Result<Option<ChainEnd>, StoreError> {
    let Some((offset, prev)) = hint else {
        return from_listing(store, tp);
    };
    let trusted = match prev {
        // The object before must exist and end exactly here.
        Some(first) => store
            .head(&ObjectKey::new(tp, first))?
            .filter(|i| i.summary.next_offset == offset)
            .map(|i| Some((first, Some(i)))),
        // A recorded start: the chain begins there, or nothing is stored yet.
        None => (store.head(&ObjectKey::new(tp, offset))?.is_some()
            || store.list(&tp.topic, tp.partition)?.is_empty())
        .then_some(None),
    };
    let Some(prev) = trusted else {
        log::warn!(
            "{tp}: the committed offset {offset} is not a link of the archive's chain (another store, or a restored archive?); following the chain from its last object"
        );
        return from_listing(store, tp);
    };
    let recorded_start = prev.is_none();
    let end = follow_from(store, tp, offset, prev)?;
    // A recorded start with nothing stored yet: no archive.
    if recorded_start && end.at.position == offset && end.at.prev.is_none() {
        return Ok(None);
    }
    Ok(Some(end))
}

/// What is known of one partition before the decision.
#[derive(Clone, Debug)]
pub struct Gathered {
    pub facts: Facts,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
}

/// Finds where every partition starts: what [`gather`] finds, decided.
pub fn resume_all(
    client: &mut Client,
    store: &dyn Store,
    group: &str,
    tps: &[TopicPartition],
    start: Start,
    on_gap: OnGap,
) -> Vec<(TopicPartition, Resume)> {
    gather(client, store, group, tps)
        .into_iter()
        .map(|(tp, g)| {
            let decision = match g {
                Ok(g) => {
                    let d = decide(&g.facts, start, on_gap);
                    log::debug!("{tp}: {:?} -> {d:?}", g.facts);
                    d
                }
                Err(early) => early,
            };
            (tp, decision)
        })
        .collect()
}

/// Chain lookups in the store at once: with thousands of partitions, start
/// takes seconds, not one lookup after another.
const LOOKUPS: usize = 16;

/// `f` of every item, on at most `workers` threads; results in item order.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let work = || {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else {
                    return mine;
                };
                mine.push((i, f(item)));
            }
        };
        let threads: Vec<_> = (1..workers.clamp(1, items.len().max(1)))
            .map(|_| s.spawn(work))
            .collect();
        let mut all = work();
        for t in threads {
            all.extend(t.join().expect("a chain lookup panicked"));
        }
        all
    });
    done.sort_unstable_by_key(|&(i, _)| i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// The facts of every partition: one OffsetFetch, two ListOffsets, the
/// chain in the store, and OffsetsForLeaderEpoch for the chains that
/// record an epoch. Each partition gets its own outcome; a partition whose
/// facts cannot be gathered gets its decision at once (`Later`, or a halt
/// for an object that is not ours).
pub fn gather(
    client: &mut Client,
    store: &dyn Store,
    group: &str,
    tps: &[TopicPartition],
) -> Vec<(TopicPartition, Result<Gathered, Resume>)> {
    let tag = store_tag(store);
    let committed = match client.committed_offsets(group, tps) {
        Ok(c) => c,
        Err(e) => {
            return tps
                .iter()
                .map(|tp| (tp.clone(), Err(Resume::Later(NotYet::Kafka(e.clone())))))
                .collect();
        }
    };
    let mut out = Vec::with_capacity(tps.len());
    let later = |e| Err(Resume::Later(e));
    let offsets = |client: &mut Client, spec| -> HashMap<TopicPartition, Result<i64, KafkaError>> {
        client.list_offsets_once(tps, spec).into_iter().collect()
    };
    let mut earliest = offsets(client, OffsetSpec::Earliest);
    let mut latest = offsets(client, OffsetSpec::Latest);
    // What Kafka says of each partition, then the chains, looked up at once.
    let mut known = Vec::with_capacity(tps.len());
    for tp in tps {
        match (earliest.remove(tp), latest.remove(tp)) {
            (Some(Ok(s)), Some(Ok(e))) => known.push((tp, s, e)),
            (Some(Err(e)), _) | (_, Some(Err(e))) => {
                out.push((tp.clone(), later(NotYet::Kafka(e))))
            }
            _ => {}
        }
    }
    let chain_ends = in_parallel(&known, LOOKUPS, |&(tp, log_start, _)| {
        let hint = committed
            .get(tp)
            .and_then(|c| parse_metadata(&c.metadata, &tag).map(|prev| (c.offset, prev)));
        locate(store, tp, hint).and_then(|end| {
            // Before declaring a gap, make sure no later part of the chain
            // exists (a crash after an earlier skip leaves one past the hint).
            if hint.is_some() && end.is_some_and(|c| c.at.position < log_start) {
                return from_listing(store, tp);
            }
            Ok(end)
        })
    });
    let mut found: Vec<(TopicPartition, Gathered)> = Vec::new();
    for ((tp, log_start, log_end), chain_end) in known.into_iter().zip(chain_ends) {
        let chain_end = match chain_end {
            Ok(end) => end,
            // One partition's store trouble does not hold up the others;
            // an object that is not ours stops its partition.
            Err(StoreError::NotArchive { what, why }) => {
                let halt = Halt::BadObject { object: what, why };
                out.push((tp.clone(), Err(Resume::Halt(halt))));
                continue;
            }
            Err(e) => {
                out.push((tp.clone(), later(NotYet::Store(e))));
                continue;
            }
        };
        let facts = Facts {
            log_start,
            log_end,
            topic_id: client.topic_id(&tp.topic),
            chain_end,
            epoch_end: None,
        };
        let committed = committed.get(tp).map(|c| c.offset);
        found.push((tp.clone(), Gathered { facts, committed }));
    }
    let wanted: Vec<(TopicPartition, i32)> = found
        .iter()
        .filter_map(|(tp, g)| Some((tp.clone(), g.facts.chain_end?.last_epoch?)))
        .collect();
    let mut epoch_ends: HashMap<TopicPartition, Result<Option<EpochEnd>, KafkaError>> =
        if wanted.is_empty() {
            HashMap::new()
        } else {
            client.epoch_ends(&wanted).into_iter().collect()
        };
    for (tp, mut g) in found {
        match epoch_ends.remove(&tp) {
            None => {}
            Some(Ok(end)) => g.facts.epoch_end = Some(end),
            Some(Err(e)) => {
                out.push((tp, later(NotYet::Kafka(e))));
                continue;
            }
        }
        out.push((tp, Ok(g)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_lookups_keep_item_order_and_use_bounded_threads() {
        let items: Vec<u32> = (0..500).collect();
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        let out = in_parallel(&items, 4, |&i| {
            threads.lock().unwrap().insert(std::thread::current().id());
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(threads.lock().unwrap().len() <= 4);
        assert!(in_parallel(&[] as &[u32], 4, |&i| i).is_empty());
    }

    use crate::pipeline::halt::Halted;

    const OLD: Uuid = Uuid::from_u128(0x1111);
    const NEW: Uuid = Uuid::from_u128(0x2222);

    /// The decision for a log `[start, end)` and a chain ending at `chain`
    /// (with `last_epoch` ending at `epoch_end` in the leader's log).
    struct Case {
        log: (i64, i64),
        chain: Option<i64>,
        ids: (Option<Uuid>, Option<Uuid>),
        last_epoch: Option<i32>,
        epoch_end: Option<Option<i64>>,
    }

    const PLAIN: Case = Case {
        log: (0, 100),
        chain: None,
        ids: (Some(OLD), Some(OLD)),
        last_epoch: None,
        epoch_end: None,
    };

    fn check(case: Case, start: Start, on_gap: OnGap, want: &str) {
        let tp = TopicPartition::new("t", 0);
        let facts = Facts {
            log_start: case.log.0,
            log_end: case.log.1,
            topic_id: case.ids.1,
            chain_end: case.chain.map(|position| ChainEnd {
                at: ChainPos {
                    position,
                    prev: Some(0),
                },
                topic_id: case.ids.0,
                last_epoch: case.last_epoch,
            }),
            epoch_end: case.epoch_end.map(|e| {
                e.map(|end_offset| EpochEnd {
                    epoch: case.last_epoch.unwrap_or(0),
                    end_offset,
                })
            }),
        };
        let got = match decide(&facts, start, on_gap) {
            Resume::At { at, .. } => format!("at {}", at.position),
            Resume::Skip { at, to, reason } => format!("skip {}..{to} {reason}", at.position),
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
        let at = |chain| Case {
            chain: Some(chain),
            ..PLAIN
        };
        check(at(40), Start::Latest, OnGap::Stop, "at 40");
        check(at(100), Start::Error, OnGap::Stop, "at 100");
    }

    #[test]
    fn an_empty_archive_starts_at_offset_0_and_skips_explicitly() {
        let log = |log| Case { log, ..PLAIN };
        check(log((0, 100)), Start::Earliest, OnGap::Stop, "at 0");
        check(
            log((5, 100)),
            Start::Earliest,
            OnGap::Stop,
            "skip 0..5 retention",
        );
        check(
            log((5, 100)),
            Start::Latest,
            OnGap::Stop,
            "skip 0..100 start-latest",
        );
        check(log((0, 0)), Start::Latest, OnGap::Stop, "at 0");
        check(
            log((5, 100)),
            Start::Error,
            OnGap::Stop,
            "halted: t/0 has no archive",
        );
    }

    #[test]
    fn records_deleted_before_archiving_stop_or_are_skipped_explicitly() {
        let gap = Case {
            log: (50, 100),
            chain: Some(40),
            ..PLAIN
        };
        check(
            gap,
            Start::Earliest,
            OnGap::Stop,
            "halted: records 40..50 of t/0 were deleted",
        );
        let gap = Case {
            log: (50, 100),
            chain: Some(40),
            ..PLAIN
        };
        check(gap, Start::Earliest, OnGap::Skip, "skip 40..50 retention");
    }

    #[test]
    fn an_archive_beyond_the_log_is_refused() {
        let beyond = Case {
            log: (0, 10),
            chain: Some(40),
            ..PLAIN
        };
        check(
            beyond,
            Start::Earliest,
            OnGap::Skip,
            "halted: the archive of t/0 ends at offset 40",
        );
    }

    #[test]
    fn a_log_of_another_history_is_refused() {
        // The topic was deleted and created again: its id changed.
        let recreated = Case {
            log: (0, 2500),
            chain: Some(1000),
            ids: (Some(OLD), Some(NEW)),
            ..PLAIN
        };
        check(
            recreated,
            Start::Earliest,
            OnGap::Skip,
            "halted: the archive of t/0 was read from topic id 00000000-0000-0000-0000-000000001111",
        );
        // Unclean leader election: epoch 3 ends at 100 in the new leader's
        // log, the archive holds up to 200.
        let diverged = |epoch_end| Case {
            log: (0, 250),
            chain: Some(200),
            last_epoch: Some(3),
            epoch_end: Some(epoch_end),
            ..PLAIN
        };
        check(
            diverged(Some(100)),
            Start::Earliest,
            OnGap::Skip,
            "halted: the kafka log of t/0 does not continue the archive: leader epoch 3 ends at offset 100",
        );
        check(
            diverged(None),
            Start::Earliest,
            OnGap::Skip,
            "halted: the kafka log of t/0 does not continue the archive: the leader does not know leader epoch 3",
        );
        check(diverged(Some(200)), Start::Earliest, OnGap::Stop, "at 200");
        check(diverged(Some(250)), Start::Earliest, OnGap::Stop, "at 200");
        // Files from before topic ids and epochs were recorded still resume.
        let old = Case {
            chain: Some(40),
            ids: (None, Some(NEW)),
            ..PLAIN
        };
        check(old, Start::Earliest, OnGap::Stop, "at 40");
    }
}
