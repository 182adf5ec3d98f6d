//! `kafka-store restore`: replays archived records of a topic into a topic
//! (of the config's cluster or `--brokers`), partition p to partition p,
//! keeping keys, values, headers and timestamps (as CreateTime), exactly
//! once whatever crashes.
//!
//! Exactly once: every restored record carries a `kafka-store.source`
//! header naming its source offset (`plan`); at start the last record of
//! each target partition says where the previous run stopped (`tail`), and
//! the restore goes on after it, as the producer that wrote that record
//! (its id, epoch and next sequence number), so that a batch the dead run
//! left unacknowledged in the leader's log is recognised by the broker
//! instead of written twice. Within a run the idempotent producer keeps a
//! resent batch from being written twice, and batches of a partition are
//! produced one at a time, in order (`replay`). No local state is kept, so
//! none can be lost.
//!
//! Checks everything it can before producing anything: the archive has the
//! topic, the target exists with enough partitions, and the target holds
//! nothing but what an earlier restore of the same partition wrote. Never
//! writes to the store.

mod plan;
mod replay;
mod tail;

use self::plan::{Selection, start_offset};
use self::replay::{Done, Job, Plan, replay, walk};
use self::tail::Tail;
use crate::cli::{RestoreArgs, usage};
use crate::commands::signals::stop_on_signals;
use crate::commands::source::archived_partitions;
use crate::config::Config;
use crate::exit::Exit;
use crate::format::names::TopicPartition;
use crate::kafka::records::Compression;
use crate::kafka::{Client, KafkaError};
use crate::store::Store;

/// Restores the selected records.
pub fn run(args: &RestoreArgs) -> anyhow::Result<Exit> {
    let config = Config::load(&args.config)?;
    let compression = compression(args.compression.as_deref())?;
    let cancel = stop_on_signals()?;
    let store = config.store.open(&cancel)?;
    let partitions = archived_partitions(store.as_ref(), &args.topic, args.partition)?;
    let mut kafka = config.kafka.client.clone();
    if let Some(brokers) = &args.brokers {
        kafka.brokers = brokers.clone();
    }
    let brokers = kafka.brokers.join(",");
    // A drain lets the batch in flight finish; only an abort cuts it.
    let mut client = Client::connect(kafka, cancel.aborts_only()).map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "cannot reach the target kafka brokers {brokers} (check --brokers or kafka.brokers)"
        ))
    })?;
    check_target(&mut client, args, &partitions, &brokers)?;
    let selection = Selection::new(args.from, args.until);
    let targets: Vec<TopicPartition> = partitions
        .iter()
        .map(|p| TopicPartition::new(&args.to_topic, *p))
        .collect();
    let tails = match tail::read(&mut client, &targets, &cancel) {
        // Stopped while waiting for a batch in flight: nothing produced.
        Err(_) if cancel.is_set() => {
            log::warn!(
                "stopped by a signal before anything was produced; run the same command again to go on"
            );
            return Ok(Exit::Ok);
        }
        tails => tails?,
    };
    let mut jobs = Vec::new();
    let mut origins = Vec::new();
    for ((p, target), tail) in partitions.iter().zip(targets).zip(tails) {
        let source = TopicPartition::new(&args.topic, *p);
        if let Tail::Restored { origin, .. } = &tail {
            origins.push((target.clone(), *origin));
        }
        let restored_to = resumed(&source, &target, tail)?;
        let start = start_offset(&selection, restored_to);
        match restored_to {
            Some(last) => log::info!("{source} -> {target}: resuming after source offset {last}"),
            None => log::info!("{source} -> {target}: starting at source offset {start}"),
        }
        jobs.push(Job {
            source,
            target,
            start,
        });
    }
    if args.dry_run {
        return dry_run(store.as_ref(), &jobs, &selection, &cancel);
    }
    let mut producer = client.init_producer()?;
    for (target, origin) in origins {
        if producer.continue_after(&target, origin) {
            log::info!(
                "{target}: going on as producer {} (epoch {}) after sequence {}",
                origin.producer_id,
                origin.producer_epoch,
                origin.sequence
            );
        }
    }
    log::info!(
        "restoring {} into {} on {brokers} as idempotent producer {}",
        args.topic,
        args.to_topic,
        producer.id()
    );
    let plan = Plan {
        jobs: &jobs,
        selection: &selection,
        compression,
        rate: args.rate,
    };
    let (totals, complete) = replay(store.as_ref(), &mut client, producer, &plan, &cancel)?;
    for job in &jobs {
        let done = totals.get(&job.target).copied().unwrap_or_default();
        println!("{}", summary(job, &done, "restored"));
    }
    if !complete {
        log::warn!("stopped by a signal; run the same command again to go on");
    }
    Ok(Exit::Ok)
}

/// The `--compression` codec (lz4 by default: cheap to write and read).
fn compression(name: Option<&str>) -> anyhow::Result<Compression> {
    Ok(match name.unwrap_or("lz4") {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => {
            return Err(usage(format!(
                "--compression: {other:?} is not one of none, gzip, snappy, lz4, zstd"
            ))
            .into());
        }
    })
}

/// The target topic must exist with a partition for each source partition.
fn check_target(
    client: &mut Client,
    args: &RestoreArgs,
    partitions: &[i32],
    brokers: &str,
) -> anyhow::Result<()> {
    let needed = partitions.iter().max().map_or(0, |p| p + 1);
    let have = match client.partitions(&args.to_topic) {
        Ok(p) => p.len() as i32,
        Err(KafkaError::UnknownTopic { .. }) => {
            return Err(usage(format!(
                "--to-topic: topic {:?} does not exist on {brokers}; create it with at least {needed} partition(s)",
                args.to_topic
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if have < needed {
        return Err(usage(format!(
            "--to-topic: topic {:?} has {have} partition(s) but the archive of {} has partition {} (partition p goes to partition p); give it at least {needed} partitions, or restore fewer with --partition",
            args.to_topic,
            args.topic,
            needed - 1
        ))
        .into());
    }
    Ok(())
}

/// The last source offset already restored into `target`, refusing a
/// target that holds records this restore did not write.
fn resumed(
    source: &TopicPartition,
    target: &TopicPartition,
    tail: Tail,
) -> anyhow::Result<Option<i64>> {
    match tail {
        Tail::Empty => Ok(None),
        Tail::Restored { mark: m, .. }
            if *m.topic == *source.topic && m.partition == source.partition =>
        {
            Ok(Some(m.offset))
        }
        Tail::Restored { mark: m, .. } => Err(usage(format!(
            "--to-topic: {target} holds records restored from {}/{}, not from {source}; restore into another topic",
            m.topic, m.partition
        ))
        .into()),
        Tail::Foreign { offset } => Err(usage(format!(
            "--to-topic: {target} holds records restore did not write (the last, at offset {offset}, has no {} header); restore into an empty topic",
            plan::MARK_HEADER
        ))
        .into()),
    }
}

/// Says what a restore would produce, producing nothing.
fn dry_run(
    store: &dyn Store,
    jobs: &[Job],
    selection: &Selection,
    cancel: &crate::cancel::Cancel,
) -> anyhow::Result<Exit> {
    for job in jobs {
        let mut done = Done::default();
        walk(store, job, selection, cancel, |r| {
            done.records += 1;
            done.first.get_or_insert(r.offset);
            done.last = Some(r.offset);
            Ok(())
        })?;
        println!("{}", summary(job, &done, "would restore"));
    }
    Ok(Exit::Ok)
}

/// One line per partition: what it received.
fn summary(job: &Job, done: &Done, verb: &str) -> String {
    let range = match (done.first, done.last) {
        (Some(a), Some(b)) => format!(" (source offsets {a}..={b})"),
        _ => String::new(),
    };
    format!(
        "{} -> {}: {verb} {} record(s){range}",
        job.source, job.target, done.records
    )
}
