//! `kafka-store status`: how far the archive of every subscribed partition
//! reaches, against the log's extent (the lag an operator alarms on), and
//! what the group has committed.
//!
//! Reads Kafka and the store only; changes nothing.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;

use crate::cancel::Cancel;
use crate::config::Config;
use crate::exit::Exit;
use crate::format::names::TopicPartition;
use crate::kafka::{Client, OffsetSpec};
use crate::pipeline::resume::{locate, parse_metadata, store_tag};
use crate::pipeline::{kafka_context, subscribed};
use crate::store::{self, Store};

/// Prints where each partition's archive stands.
pub fn run(config: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(config)?;
    let cancel = Cancel::default();
    let store = store::open(&config.store.url, &config.store.gcs, &cancel)?;
    let brokers = &config.kafka.client.brokers;
    let mut client = Client::connect(config.kafka.client.clone(), cancel)
        .map_err(|e| kafka_context(e, brokers))?;
    let mut out = std::io::stdout().lock();
    status(&config, &mut client, store.as_ref(), &mut out)?;
    out.flush()?;
    Ok(Exit::Ok)
}

/// Prints one line per partition and a total; returns the total lag.
fn status(
    config: &Config,
    client: &mut Client,
    store: &dyn Store,
    out: &mut dyn Write,
) -> anyhow::Result<i64> {
    let layout = subscribed(client, &config.kafka).context("cannot read topic metadata")?;
    let tps: Vec<TopicPartition> = layout
        .iter()
        .flat_map(|(t, n)| (0..*n).map(|p| TopicPartition::new(t, p)))
        .collect();
    let group = &config.kafka.group_id;
    let committed = client
        .committed_offsets(group, &tps)
        .with_context(|| format!("cannot read committed offsets of group {group}"))?;
    let earliest = client
        .list_offsets(&tps, OffsetSpec::Earliest)
        .context("cannot read log start offsets")?;
    let latest = client
        .list_offsets(&tps, OffsetSpec::Latest)
        .context("cannot read log end offsets")?;
    let tag = store_tag(store);
    writeln!(
        out,
        "PARTITION\tARCHIVED_TO\tLOG_START\tLOG_END\tLAG\tCOMMITTED"
    )?;
    let (mut total, mut unarchived) = (0i64, 0usize);
    for tp in &tps {
        let hint = committed
            .get(tp)
            .and_then(|c| parse_metadata(&c.metadata, &tag).map(|prev| (c.offset, prev)));
        let archived = locate(store, tp, hint)?.map(|c| c.position);
        let (start, end) = (earliest[tp], latest[tp]);
        // Without an archive, everything still in the log is lag.
        let lag = (end - archived.unwrap_or(start).max(start)).max(0);
        total += lag;
        unarchived += usize::from(archived.is_none());
        let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        writeln!(
            out,
            "{tp}\t{}\t{start}\t{end}\t{lag}\t{}",
            show(archived),
            show(committed.get(tp).map(|c| c.offset))
        )?;
    }
    writeln!(
        out,
        "# {} partition(s), total lag {total} record(s), {unarchived} without any archive file, store {}",
        tps.len(),
        store.url()
    )?;
    Ok(total)
}
