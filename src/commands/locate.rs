//! `kafka-store locate`: the archive file holding an offset, or the first
//! archived record at or after a time, for one partition. Uses the MySQL
//! index when configured, otherwise the store (listing and object metadata).
//!
//! Reads only.

use std::io::Write;

use crate::cancel::Cancel;
use crate::cli::{LocateArgs, Target};
use crate::config::Config;
use crate::exit::Exit;
use crate::format::avro::Reader;
use crate::format::names::{ObjectKey, TopicPartition};
use crate::format::record::OwnedRecord;
use crate::format::timestamp::format_millis;
use crate::index::{Index, Row};
use crate::store::Store;

/// Prints where the target is; exit 4 when nothing archived holds it.
pub fn run(args: &LocateArgs) -> anyhow::Result<Exit> {
    let config = Config::load(&args.config)?;
    let store = config.store.open(&Cancel::default())?;
    let store_url = store.url();
    let mut index = match config.mysql.as_ref().map(|m| Index::open(m, &store_url)) {
        None => None,
        Some(Ok(index)) => Some(index),
        Some(Err(e)) if e.is_unavailable() => {
            log::warn!("{e}; locating through the store instead");
            None
        }
        Some(Err(e)) => return Err(e.into()),
    };
    let tp = TopicPartition::new(&args.topic, args.partition);
    let Some(found) = locate(store.as_ref(), index.as_mut(), &tp, args.target)? else {
        eprintln!("kafka-store: nothing of {tp} is archived there");
        return Ok(Exit::NotFound);
    };
    let mut out = std::io::stdout().lock();
    match found.record {
        None => writeln!(
            out,
            "{}\tfirst {}\tnext {}",
            found.object_url, found.key.first, found.next
        )?,
        Some(r) => writeln!(
            out,
            "{}\toffset {}\ttimestamp {} ({})",
            found.object_url,
            r.offset,
            r.timestamp,
            format_millis(r.timestamp)
        )?,
    }
    Ok(Exit::Ok)
}

/// Where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Found {
    key: ObjectKey,
    object_url: String,
    next: i64,
    /// For a time: the first record at or after it.
    record: Option<OwnedRecord>,
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
            .since_time(&tp.topic, tp.partition, t)?
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
fn locate(
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
