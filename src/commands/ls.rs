//! `kafka-store ls`: the archive's files with their offset ranges, record
//! counts, sizes and time spans, its skipped ranges (explicit, with their
//! reason), and the first problem of each partition's chain: a hole, an
//! overlap, or a history break (objects read from different topic ids).
//! Reads the store only.

use std::io::Write;

use super::source::open_store;
use crate::cli::LsArgs;
use crate::exit::Exit;
use crate::format::names::{ObjectKey, check_tiling, history_break};
use crate::format::timestamp::format_millis;
use crate::store::Store;

/// Lists the archive; exit 3 when some partition's files do not tile or
/// change history.
pub fn run(args: &LsArgs) -> anyhow::Result<Exit> {
    let store = open_store(&args.source)?;
    let mut out = std::io::stdout().lock();
    let good = ls(
        store.as_ref(),
        args.topic.as_deref(),
        args.partition,
        &mut out,
    )?;
    out.flush()?;
    Ok(if good { Exit::Ok } else { Exit::Data })
}

/// Prints the listing; returns false if some partition's files do not
/// tile or change history along the chain.
fn ls(
    store: &dyn Store,
    topic: Option<&str>,
    partition: Option<i32>,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let topics = match topic {
        Some(t) => vec![t.to_string()],
        None => store.topics()?,
    };
    let mut all_good = true;
    writeln!(
        out,
        "OBJECT\tFIRST\tNEXT\tRECORDS\tBYTES\tMIN_TIMESTAMP\tMAX_TIMESTAMP\tNOTE"
    )?;
    for topic in &topics {
        let partitions = match partition {
            Some(p) => vec![p],
            None => store.partitions(topic)?,
        };
        for p in partitions {
            let mut ranges = Vec::new();
            let mut ids = Vec::new();
            let (mut records, mut bytes) = (0u64, 0u64);
            let (mut skips, mut skipped) = (0usize, 0i64);
            // One listing with metadata (GCS), not a HEAD per object.
            for (first, info) in store.list_infos(topic, p)? {
                let key = ObjectKey {
                    topic: topic.as_str().into(),
                    partition: p,
                    first,
                };
                let s = &info.summary;
                let ts = |t: Option<i64>| t.map_or("-".to_string(), format_millis);
                let note = match info.skipped {
                    Some(reason) => {
                        skips += 1;
                        skipped += s.next_offset - first;
                        format!("skipped ({reason})")
                    }
                    None => String::new(),
                };
                writeln!(
                    out,
                    "{}\t{first}\t{}\t{}\t{}\t{}\t{}\t{note}",
                    store.object_url(&key),
                    s.next_offset,
                    s.record_count,
                    info.size,
                    ts(s.min_timestamp),
                    ts(s.max_timestamp)
                )?;
                ranges.push((first, s.next_offset));
                ids.push((first, info.topic_id));
                records += s.record_count;
                bytes += info.size;
            }
            let problem = match (check_tiling(&ranges), history_break(&ids)) {
                (Some(problem), _) => Some(problem.to_string()),
                (None, Some((at, before, after))) => Some(format!(
                    "history break: the object at offset {at} was read from topic id {after}, the objects before it from {before}"
                )),
                (None, None) => None,
            };
            let verdict = match problem {
                None => "no gaps".to_string(),
                Some(problem) => {
                    all_good = false;
                    format!("FIRST PROBLEM: {problem}")
                }
            };
            let skips = match skips {
                0 => String::new(),
                n => format!(", {n} skipped range(s) of {skipped} offset(s)"),
            };
            let id = ids
                .iter()
                .rev()
                .find_map(|(_, id)| *id)
                .map_or(String::new(), |id| format!(", topic id {id}"));
            match (ranges.first(), ranges.last()) {
                (Some((first, _)), Some((_, next))) => writeln!(
                    out,
                    "# {topic}/{p}: {} file(s), offsets {first}..{next}, {records} records, {bytes} bytes{skips}{id}, {verdict}",
                    ranges.len()
                )?,
                _ => writeln!(out, "# {topic}/{p}: no files")?,
            }
        }
    }
    Ok(all_good)
}
