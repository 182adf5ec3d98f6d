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
use crate::kafka::Client;
use crate::pipeline::resume::{Resume, decide, gather};
use crate::pipeline::{Halted, kafka_context, subscribed};
use crate::store::Store;

/// Prints where each partition's archive stands.
pub fn run(config: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(config)?;
    let cancel = Cancel::default();
    let store = config.store.open(&cancel)?;
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
    let k = &config.kafka;
    writeln!(
        out,
        "PARTITION\tARCHIVED_TO\tLOG_START\tLOG_END\tLAG\tCOMMITTED\tSTATE"
    )?;
    let (mut total, mut unarchived, mut stopped) = (0i64, 0usize, 0usize);
    let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    for (tp, gathered) in gather(client, store, &k.group_id, &tps) {
        let g = match gathered {
            Ok(g) => g,
            Err(early) => {
                stopped += usize::from(matches!(early, Resume::Halt(_)));
                let state = state(&tp, early);
                writeln!(out, "{tp}\t-\t-\t-\t-\t-\t{state}")?;
                continue;
            }
        };
        let f = &g.facts;
        let archived = f.chain_end.map(|c| c.at.position);
        let (start, end) = (f.log_start, f.log_end);
        // Without an archive, everything still in the log is lag.
        let lag = (end - archived.unwrap_or(start).max(start)).max(0);
        total += lag;
        unarchived += usize::from(archived.is_none());
        let decision = decide(f, k.start, k.on_gap);
        stopped += usize::from(matches!(decision, Resume::Halt(_)));
        writeln!(
            out,
            "{tp}\t{}\t{start}\t{end}\t{lag}\t{}\t{}",
            show(archived),
            show(g.committed),
            state(&tp, decision)
        )?;
    }
    writeln!(
        out,
        "# {} partition(s), total lag {total} record(s), {unarchived} without any archive file, {stopped} that cannot be archived, store {}",
        tps.len(),
        store.url()
    )?;
    Ok(total)
}

/// What `run` would do with a partition now.
fn state(tp: &TopicPartition, decision: Resume) -> String {
    match decision {
        Resume::At { .. } => "ok".into(),
        Resume::Skip { to, reason, .. } => format!("skips to offset {to} ({reason})"),
        Resume::Halt(why) => format!(
            "stopped: {}",
            Halted {
                tp: tp.clone(),
                why
            }
        ),
        Resume::Later(e) => format!("unknown: {e}"),
    }
}
