//! `kafka-store ls`: the archive's files with their offset ranges, record
//! counts, sizes and time spans, and the first gap or overlap of each
//! partition's chain. Reads the store only.

use std::io::Write;

use super::source::open_store;
use crate::cli::LsArgs;
use crate::exit::Exit;
use crate::format::names::{ObjectKey, check_tiling};
use crate::format::timestamp::format_millis;
use crate::store::Store;

/// Lists the archive; exit 3 when some partition's files do not tile.
pub fn run(args: &LsArgs) -> anyhow::Result<Exit> {
    let store = open_store(&args.source)?;
    let mut out = std::io::stdout().lock();
    let tiles = ls(
        store.as_ref(),
        args.topic.as_deref(),
        args.partition,
        &mut out,
    )?;
    out.flush()?;
    Ok(if tiles { Exit::Ok } else { Exit::Data })
}

/// Prints the listing; returns false if some partition's files do not tile.
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
    let mut all_tile = true;
    writeln!(
        out,
        "OBJECT\tFIRST\tNEXT\tRECORDS\tBYTES\tMIN_TIMESTAMP\tMAX_TIMESTAMP"
    )?;
    for topic in &topics {
        let partitions = match partition {
            Some(p) => vec![p],
            None => store.partitions(topic)?,
        };
        for p in partitions {
            let mut ranges = Vec::new();
            let (mut records, mut bytes) = (0u64, 0u64);
            // One listing with metadata (GCS), not a HEAD per object.
            for (first, info) in store.list_infos(topic, p)? {
                let key = ObjectKey {
                    topic: topic.as_str().into(),
                    partition: p,
                    first,
                };
                let s = &info.summary;
                let ts = |t: Option<i64>| t.map_or("-".to_string(), format_millis);
                writeln!(
                    out,
                    "{}\t{first}\t{}\t{}\t{}\t{}\t{}",
                    store.object_url(&key),
                    s.next_offset,
                    s.record_count,
                    info.size,
                    ts(s.min_timestamp),
                    ts(s.max_timestamp)
                )?;
                ranges.push((first, s.next_offset));
                records += s.record_count;
                bytes += info.size;
            }
            let verdict = match check_tiling(&ranges) {
                None => "no gaps".to_string(),
                Some(problem) => {
                    all_tile = false;
                    format!("FIRST PROBLEM: {problem}")
                }
            };
            match (ranges.first(), ranges.last()) {
                (Some((first, _)), Some((_, next))) => writeln!(
                    out,
                    "# {topic}/{p}: {} file(s), offsets {first}..{next}, {records} records, {bytes} bytes, {verdict}",
                    ranges.len()
                )?,
                _ => writeln!(out, "# {topic}/{p}: no files")?,
            }
        }
    }
    Ok(all_tile)
}
