//! `kafka-store locate`: the archive file holding an offset, or the first
//! archived record at or after a time, for one partition. Uses the MySQL
//! index when configured, otherwise the store (listing and object metadata).
//!
//! Reads only.

use crate::avro::Reader;
use crate::index::{Index, Row};
use crate::kafka::TopicPartition;
use crate::naming::ObjectKey;
use crate::record::OwnedRecord;
use crate::store::Store;

/// What to look for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Offset(i64),
    /// Milliseconds since the epoch.
    Time(i64),
}

/// Where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub key: ObjectKey,
    pub object_url: String,
    pub next: i64,
    /// For a time: the first record at or after it.
    pub record: Option<OwnedRecord>,
}

/// Candidate files (first offset, next offset), in offset order.
fn candidates(
    store: &dyn Store,
    index: Option<&mut Index>,
    tp: &TopicPartition,
    target: Target,
) -> anyhow::Result<Vec<(i64, i64)>> {
    let span = |r: Row| (r.first_offset, r.next_offset);
    Ok(match (index, target) {
        (Some(index), Target::Offset(o)) => index
            .at_offset(&tp.topic, tp.partition, o)?
            .map(span)
            .into_iter()
            .collect(),
        (Some(index), Target::Time(t)) => index
            .from_time(&tp.topic, tp.partition, t)?
            .into_iter()
            .map(span)
            .collect(),
        (None, Target::Offset(o)) => {
            let firsts = store.list(&tp.topic, tp.partition)?;
            let i = firsts.partition_point(|f| *f <= o);
            match i.checked_sub(1).map(|i| firsts[i]) {
                None => Vec::new(),
                Some(first) => {
                    let info = store.head(&ObjectKey::new(tp, first))?;
                    info.filter(|i| o < i.summary.next_offset)
                        .map(|i| (first, i.summary.next_offset))
                        .into_iter()
                        .collect()
                }
            }
        }
        (None, Target::Time(t)) => store
            .list_infos(&tp.topic, tp.partition)?
            .into_iter()
            .filter(|(_, i)| i.summary.max_timestamp.is_some_and(|m| m >= t))
            .map(|(first, i)| (first, i.summary.next_offset))
            .collect(),
    })
}

/// Finds the target in the partition's archive: through the index when
/// there is one, then (rows lag while MySQL is away) through the store.
pub fn locate(
    store: &dyn Store,
    index: Option<&mut Index>,
    tp: &TopicPartition,
    target: Target,
) -> anyhow::Result<Option<Found>> {
    if let Some(index) = index
        && let Some(found) = search(store, Some(index), tp, target)?
    {
        return Ok(Some(found));
    }
    search(store, None, tp, target)
}

fn search(
    store: &dyn Store,
    index: Option<&mut Index>,
    tp: &TopicPartition,
    target: Target,
) -> anyhow::Result<Option<Found>> {
    for (first, next) in candidates(store, index, tp, target)? {
        let key = ObjectKey::new(tp, first);
        let object_url = store.object_url(&key);
        let Target::Time(t) = target else {
            return Ok(Some(Found {
                key,
                object_url,
                next,
                record: None,
            }));
        };
        // The first file whose newest record reaches `t` holds the first
        // record at or after it (in offset order).
        let mut reader = Reader::new(store.open(&key)?)?;
        while let Some(record) = reader.next_record()? {
            if record.timestamp >= t {
                return Ok(Some(Found {
                    key,
                    object_url,
                    next,
                    record: Some(record),
                }));
            }
        }
    }
    Ok(None)
}
