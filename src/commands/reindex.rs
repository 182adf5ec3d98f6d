//! `kafka-store reindex`: rebuilds the MySQL index table from the store,
//! the ledger. Reads the store, writes only rows.

use std::io::Write;
use std::path::Path;

use crate::cancel::Cancel;
use crate::cli::usage;
use crate::config::Config;
use crate::exit::Exit;
use crate::format::names::ObjectKey;
use crate::index::Index;
use crate::pipeline::row_of;
use crate::store::Store;

/// Rebuilds the rows of every archived partition.
pub fn run(config: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(config)?;
    let Some(mysql) = &config.mysql else {
        return Err(usage("reindex: the config has no [mysql] section").into());
    };
    let store = config.store.open(&Cancel::default())?;
    let mut index = Index::open(mysql, &store.url())?;
    let mut out = std::io::stdout().lock();
    let (written, deleted) = reindex(&mut index, store.as_ref(), &mut out)?;
    writeln!(
        out,
        "# {written} row(s) written or checked, {deleted} row(s) without an object deleted"
    )?;
    Ok(Exit::Ok)
}

/// `kafka-store reindex`: rebuilds the rows of every partition in the store
/// from the objects' metadata (rows without an object are deleted).
/// Returns (rows written or checked, rows deleted).
fn reindex(
    index: &mut Index,
    store: &dyn Store,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<(usize, usize)> {
    let (mut written, mut deleted) = (0, 0);
    for topic in store.topics()? {
        for partition in store.partitions(&topic)? {
            let infos = store.list_infos(&topic, partition)?;
            for (first, info) in &infos {
                let key = ObjectKey {
                    topic: topic.as_str().into(),
                    partition,
                    first: *first,
                };
                index.upsert(&row_of(&key, info, store.object_url(&key)))?;
                written += 1;
            }
            for row in index.partition_rows(&topic, partition)? {
                if !infos.iter().any(|(first, _)| *first == row.first_offset) {
                    index.delete(&topic, partition, row.first_offset)?;
                    deleted += 1;
                }
            }
            writeln!(
                out,
                "{topic}/{partition}: {} object(s) indexed",
                infos.len()
            )?;
        }
    }
    Ok((written, deleted))
}
