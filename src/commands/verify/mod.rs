//! `kafka-store verify`: proves an archive (DESIGN.md "Commands"), partition
//! by partition.
//!
//! - The chain: every hole, overlap and history break (a change of topic id
//!   along the chain) is a problem; explicit skipped ranges are notes.
//! - Every object is readable and agrees with its name, with the metadata
//!   the store lists and, when `[mysql]` is configured, with its index row
//!   (a row without an object is a problem too).
//! - Records, with `--deep` or `--against-kafka`: every block decoded (the
//!   reader checks sync markers, block sizes, codec checksums, the record
//!   count and timestamps of the summary), offsets strictly rising inside
//!   `[first, next)`, the size and the store's CRC32C of the whole object.
//! - `--against-kafka`: every archived record equals what Kafka holds at
//!   its offset (read_committed, up to the last stable offset, from the log
//!   start or the archive's first offset), and the records Kafka holds below
//!   the archive end that the archive lacks, outside explicit skipped
//!   ranges, are listed as ranges. Records Kafka no longer has are fine.
//!
//! Results go to stdout: one line (or JSON object) per problem naming the
//! object and its offsets, at most [`report::SHOWN_PER_CHECK`] per kind and
//! partition, a summary per partition and a total; exit 3 when anything was
//! found. An object that cannot be read is a problem of that object; only a
//! store, Kafka or MySQL that fails ends the run with an error. Memory holds
//! a partition's listing and one fetch response, never a partition's records.
//!
//! Never writes anything: not to the store, not to Kafka (no group, no
//! offsets), not to MySQL.
//!
//! The parts, each below this driver: `chain` tiles a partition's listing,
//! `object` reads and checks one object, `rows` compares the MySQL index
//! with the objects, `kafka` compares the records with Kafka's, and
//! `report` words the findings and counts them.

mod chain;
mod kafka;
mod object;
mod report;
mod rows;

use std::io::{self, Write};

use self::chain::{chain_findings, listing};
use self::kafka::{Against, Kafka};
use self::object::{Ctx, check_object};
use self::report::{Facts, Finding, Progress, Report, Totals};
use self::rows::check_rows;
use super::source::{archived_partitions, open_store};
use crate::cancel::Cancel;
use crate::cli::{Source, VerifyArgs, usage};
use crate::config::Config;
use crate::exit::Exit;
use crate::format::names::{ObjectKey, TopicPartition};
use crate::index::Index;

/// Verifies the archive; exit 3 when any problem was found.
pub fn run(args: &VerifyArgs) -> anyhow::Result<Exit> {
    let cancel = Cancel::default();
    let (store, config) = match &args.source {
        Source::Config(path) => {
            let config = Config::load(path)?;
            let store = config.store.open(&cancel)?;
            (store, Some(config))
        }
        source @ Source::Store(_) => (open_store(source)?, None),
    };
    let mut index = config
        .as_ref()
        .and_then(|c| c.mysql.as_ref())
        .map(|m| Index::open(m, &store.url()))
        .transpose()?;
    let mut kafka = match (&config, args.against_kafka) {
        (Some(config), true) => Some(Kafka::connect(config, cancel)?),
        (None, true) => {
            return Err(
                usage("verify --against-kafka needs --config FILE (for the brokers)").into(),
            );
        }
        (_, false) => None,
    };
    let ctx = Ctx {
        store: store.as_ref(),
        read_records: args.deep || args.against_kafka,
        progress: Progress::new(),
    };
    let mut out = io::stdout().lock();
    let mut report = Report::new(&mut out, args.json);
    let sources = Sources {
        index: index.as_mut(),
        kafka: kafka.as_mut(),
    };
    let totals = verify(
        &ctx,
        sources,
        &mut report,
        args.topic.as_deref(),
        args.partition,
    )?;
    out.flush()?;
    Ok(if totals.problems == 0 {
        Exit::Ok
    } else {
        Exit::Data
    })
}

/// The optional sources the archive is compared with.
struct Sources<'a> {
    index: Option<&'a mut Index>,
    kafka: Option<&'a mut Kafka>,
}

/// Verifies the selected partitions; returns the totals.
fn verify(
    ctx: &Ctx,
    mut sources: Sources,
    report: &mut Report,
    topic: Option<&str>,
    partition: Option<i32>,
) -> anyhow::Result<Totals> {
    // A selection the archive does not hold is a mistake, not an empty
    // archive that verifies.
    let selected: Vec<(String, Vec<i32>)> = match topic {
        Some(t) => vec![(t.to_string(), archived_partitions(ctx.store, t, partition)?)],
        None => {
            let mut all = Vec::new();
            for t in ctx.store.topics()? {
                let ps: Vec<i32> = ctx
                    .store
                    .partitions(&t)?
                    .into_iter()
                    .filter(|p| partition.is_none_or(|want| *p == want))
                    .collect();
                if !ps.is_empty() {
                    all.push((t, ps));
                }
            }
            if let (Some(p), true) = (partition, all.is_empty()) {
                return Err(usage(format!(
                    "--partition: {} holds no archive of a partition {p}",
                    ctx.store.url()
                ))
                .into());
            }
            all
        }
    };
    let mut totals = Totals::default();
    for (topic, partitions) in &selected {
        for &p in partitions {
            let tp = TopicPartition::new(topic, p);
            let facts = verify_partition(ctx, &mut sources, report, &tp)?;
            totals.add(&facts);
            report.partition(&tp, &facts)?;
        }
    }
    report.total(&totals)?;
    Ok(totals)
}

/// Verifies one partition, writing its findings as they are made.
fn verify_partition(
    ctx: &Ctx,
    sources: &mut Sources,
    report: &mut Report,
    tp: &TopicPartition,
) -> anyhow::Result<Facts> {
    let store = ctx.store;
    let listed = listing(store, tp)?;
    for finding in chain_findings(&|key| store.object_url(key), tp, &listed) {
        report.finding(tp, finding)?;
    }
    let readable = || listed.iter().filter_map(|l| l.info.as_ref().ok());
    let first = listed.first().map(|l| l.key.first);
    let end = listed.iter().filter_map(|l| l.end).max();
    let mut feed = match (sources.kafka.as_deref_mut(), first, end) {
        (Some(kafka), Some(first), Some(end)) => {
            let archived_id = readable().filter_map(|i| i.topic_id).next_back();
            match kafka.feed(tp, first, end, archived_id)? {
                Against::Feed(feed) => Some(feed),
                Against::Not(finding) => {
                    let object = listed.last().map(|l| store.object_url(&l.key));
                    report.finding(
                        tp,
                        Finding {
                            object: object.unwrap_or_default(),
                            ..finding
                        },
                    )?;
                    None
                }
            }
        }
        _ => None,
    };
    // The CRC32C of each object, as the store says or as read.
    let mut crcs = Vec::with_capacity(listed.len());
    let mut reached: Option<i64> = None;
    for l in &listed {
        if let Some(feed) = feed.as_mut() {
            let at = reached.unwrap_or(l.key.first);
            let hole = store.object_url(&ObjectKey::new(tp, at));
            feed.missing_below(&hole, l.key.first, report)?;
        }
        let crc = match &l.info {
            Ok(info) => check_object(ctx, &l.key, info, feed.as_mut(), report)?,
            Err(_) => {
                if let (Some(feed), Some(end)) = (feed.as_mut(), l.end) {
                    feed.discard_below(end);
                }
                None
            }
        };
        crcs.push(crc);
        ctx.progress.objects.set(ctx.progress.objects.get() + 1);
        ctx.progress.tick(tp);
        reached = reached.max(l.end);
    }
    if let Some(index) = sources.index.as_deref_mut() {
        check_rows(store, index, tp, &listed, &crcs, report)?;
    }
    Ok(Facts {
        objects: listed.len(),
        records: readable().map(|i| i.summary.record_count).sum(),
        bytes: readable().map(|i| i.size).sum(),
        first,
        next: end,
        skipped_ranges: readable().filter(|i| i.skipped.is_some()).count(),
        problems: report.take_problems(),
    })
}
