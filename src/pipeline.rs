//! `kafka-store run`: builds every stage, wires the bounded channels, owns
//! start-up and shutdown.
//!
//! ```text
//!  fetcher ──Chunk/Flush──▶ encoder × E ──Closed──▶ uploader × U ──Stored──▶ committer
//!     ▲                                                  │
//!     └────────────────────── Seek ──────────────────────┘
//! ```
//!
//! - one **fetcher** thread owns the fetch positions and its Kafka client;
//! - **encoders** decode batches and write Avro files into the spool (a
//!   partition always goes to the same encoder, so its order is kept);
//! - **uploaders** put finished files into the store, create-only (a
//!   partition always goes to the same uploader, so its files are stored in
//!   order);
//! - one **committer** commits stored positions to the Kafka group.
//!
//! Forward channels are bounded: a slow store slows the fetcher instead of
//! filling memory. The only feedback edge (Seek, when another builder's file
//! wins) is unbounded so that the cycle can never block; it carries at most
//! one message per conflicting file.
//!
//! Invariant: an offset is committed only after the store has every object
//! before it. Shutdown (SIGTERM/SIGINT, or a fatal error) abandons open and
//! queued files (they are rebuilt from Kafka, byte for byte) and lets
//! uploads in progress finish.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::Duration;

use anyhow::Context as _;
use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, bounded, unbounded};

use crate::commit;
use crate::config::Config;
use crate::encoder;
use crate::fetcher;
use crate::interrupt::Interrupt;
use crate::kafka::{Client, ClientConfig, KafkaError, OffsetSpec, PartitionData, TopicPartition};
use crate::partition::{Closed, FileSettings};
use crate::resume::{self, Resume, commit_metadata, store_tag};
use crate::rotation::Rules;
use crate::spool::Spool;
use crate::store;

/// How often blocked threads look at the stop flag.
pub const POLL: Duration = Duration::from_millis(100);
/// Fetched chunks queued per encoder (each at most `partition_fetch_bytes`).
const ENCODER_QUEUE: usize = 4;
/// Finished files queued per uploader (they wait on disk, not in memory).
const UPLOADER_QUEUE: usize = 2;
/// Stored positions queued for the committer (tiny messages).
const COMMITTER_QUEUE: usize = 1024;

/// The stop flag: set by a signal, by a fatal error, or never.
pub struct Stop {
    signalled: Interrupt,
    failed: AtomicBool,
    failure: Mutex<Option<anyhow::Error>>,
}

impl Stop {
    pub fn new(signalled: Interrupt) -> Self {
        Stop {
            signalled,
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    pub fn requested(&self) -> bool {
        self.signalled.is_set() || self.failed.load(Ordering::Relaxed)
    }

    /// Stops the process with an error (the first one is reported).
    pub fn fail(&self, e: anyhow::Error) {
        let mut failure = self.failure.lock().expect("stop lock");
        if failure.is_none() {
            log::error!("{e:#}");
            *failure = Some(e);
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    fn take_failure(&self) -> Option<anyhow::Error> {
        self.failure.lock().expect("stop lock").take()
    }

    /// Sleeps unless stopping; false when the stop came first.
    pub fn sleep(&self, d: Duration) -> bool {
        let end = std::time::Instant::now() + d;
        while !self.requested() {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(POLL));
        }
        false
    }

    /// Sends unless stopping; false when the message was not sent.
    pub fn send<T>(&self, tx: &Sender<T>, mut msg: T) -> bool {
        loop {
            match tx.send_timeout(msg, POLL) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(m)) => {
                    if self.requested() {
                        return false;
                    }
                    msg = m;
                }
                Err(SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }

    /// Receives unless stopping; None when stopping or the channel is closed.
    pub fn recv<T>(&self, rx: &Receiver<T>) -> Option<T> {
        loop {
            if self.requested() {
                return None;
            }
            match rx.recv_timeout(POLL) {
                Ok(m) => return Some(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// Per-partition state shared by the stages.
#[derive(Default)]
pub struct PartitionCtl {
    /// Bumped whenever the partition's position is reset; work tagged with
    /// an older epoch is dropped.
    pub epoch: AtomicU64,
    /// Set when the partition cannot go on; the reason is logged.
    pub halted: Mutex<Option<String>>,
    /// How far the store covers the partition (the last stored `next`).
    pub stored: AtomicI64,
}

/// The partitions this process archives.
#[derive(Default)]
pub struct Registry {
    map: RwLock<HashMap<TopicPartition, Arc<PartitionCtl>>>,
}

impl Registry {
    /// Adds a partition whose archive ends at `stored`.
    pub fn insert(&self, tp: &TopicPartition, stored: i64) -> Arc<PartitionCtl> {
        let ctl = Arc::new(PartitionCtl {
            stored: AtomicI64::new(stored),
            ..PartitionCtl::default()
        });
        self.map
            .write()
            .expect("registry")
            .insert(tp.clone(), ctl.clone());
        ctl
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<PartitionCtl>> {
        self.map.read().expect("registry").get(tp).cloned()
    }

    /// The partition's current epoch (None once it is gone).
    pub fn epoch(&self, tp: &TopicPartition) -> Option<u64> {
        self.get(tp).map(|c| c.epoch.load(Ordering::SeqCst))
    }

    /// Stops archiving a partition; the reason is logged once.
    pub fn halt(&self, tp: &TopicPartition, why: String) {
        if let Some(ctl) = self.get(tp) {
            let mut halted = ctl.halted.lock().expect("halt lock");
            if halted.is_none() {
                log::error!("stopped archiving {tp}: {why}");
                *halted = Some(why);
            }
        }
    }

    pub fn is_halted(&self, tp: &TopicPartition) -> bool {
        self.get(tp)
            .is_some_and(|c| c.halted.lock().expect("halt lock").is_some())
    }

    /// Halted partitions with their reasons.
    pub fn halted(&self) -> Vec<(TopicPartition, String)> {
        let mut out: Vec<_> = self
            .map
            .read()
            .expect("registry")
            .iter()
            .filter_map(|(tp, c)| {
                c.halted
                    .lock()
                    .expect("halt lock")
                    .clone()
                    .map(|w| (tp.clone(), w))
            })
            .collect();
        out.sort();
        out
    }
}

/// What the fetcher tells an encoder.
pub enum ToEncoder {
    /// Start (or restart) a partition at `position`, dropping any open file.
    Assign {
        tp: TopicPartition,
        epoch: u64,
        position: i64,
    },
    /// Fetched batches starting at `data.fetch_offset`.
    Chunk {
        tp: TopicPartition,
        epoch: u64,
        data: PartitionData,
    },
    /// Close the open file at the current position (idle flush); with
    /// `last`, the partition is finished for this run.
    Flush {
        tp: TopicPartition,
        epoch: u64,
        last: bool,
    },
    /// Records before `to` are gone from Kafka (`on_gap = "skip"`): close at
    /// the current position and go on at `to`.
    Jump {
        tp: TopicPartition,
        epoch: u64,
        to: i64,
    },
}

/// Sent back to the fetcher when the store holds a different file than
/// ours: continue the partition at `position` in a new epoch.
pub struct Seek {
    pub tp: TopicPartition,
    pub epoch: u64,
    pub position: i64,
}

/// A position the store now covers, for the committer.
pub struct Stored {
    pub tp: TopicPartition,
    pub next: i64,
    /// The first offset of the object that ends at `next`.
    pub prev: Option<i64>,
}

/// Which of `n` workers handles a partition (stable for the process).
pub fn worker_for(tp: &TopicPartition, n: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tp.topic.hash(&mut h);
    (h.finish() as usize).wrapping_add(tp.partition as usize) % n
}

/// How `run` ended.
pub struct Outcome {
    /// Partitions that stopped, with the reason.
    pub halted: Vec<(TopicPartition, String)>,
}

/// Options of `kafka-store run` beyond the config file.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Archive up to the log end seen at start, close the files there, exit.
    pub until_caught_up: bool,
}

/// A Kafka error for the user: connection trouble points at
/// `kafka.brokers`, a missing topic at `kafka.topics`.
fn kafka_context(e: KafkaError, brokers: &[String]) -> anyhow::Error {
    match e {
        KafkaError::UnknownTopic { topic } => {
            anyhow::anyhow!("kafka topic {topic:?} does not exist (check kafka.topics)")
        }
        e @ (KafkaError::Connect { .. } | KafkaError::Io { .. } | KafkaError::Timeout { .. }) => {
            anyhow::Error::new(e).context(format!(
                "cannot reach kafka brokers {} (check kafka.brokers)",
                brokers.join(",")
            ))
        }
        e => anyhow::Error::new(e),
    }
}

/// Runs the archiver until stopped (or caught up, with `until_caught_up`).
pub fn run(config: &Config, options: RunOptions, interrupt: Interrupt) -> anyhow::Result<Outcome> {
    let store = store::open(&config.store.url, &config.store.gcs, &interrupt)?;
    let spool = Spool::open(&config.store.spool_dir)?;
    let brokers = &config.kafka.client.brokers;
    let client_config = ClientConfig {
        interrupt: interrupt.clone(),
        ..config.kafka.client.clone()
    };
    let mut client =
        Client::connect(client_config.clone()).map_err(|e| kafka_context(e, brokers))?;

    let mut tps = Vec::new();
    for topic in &config.kafka.topics {
        let partitions = client
            .partitions(topic)
            .map_err(|e| kafka_context(e, brokers))?;
        tps.extend(
            partitions
                .into_iter()
                .map(|p| TopicPartition::new(topic, p)),
        );
    }
    let resumed = resume::resume_all(
        &mut client,
        store.as_ref(),
        &config.kafka.group_id,
        &tps,
        config.kafka.start,
        config.kafka.on_gap,
    )?;
    let targets = if options.until_caught_up {
        Some(
            client
                .list_offsets(&tps, OffsetSpec::Latest)
                .map_err(|e| kafka_context(e, brokers))?,
        )
    } else {
        None
    };

    let registry = Registry::default();
    let mut starts = Vec::new();
    for (tp, resume) in resumed {
        match resume {
            Resume::At(at) => {
                registry.insert(&tp, at.position);
                starts.push((tp, at));
            }
            Resume::Halted(why) => {
                registry.insert(&tp, -1);
                registry.halt(&tp, why);
            }
        }
    }
    // Record every start in the group now: a partition that starts fresh
    // (`start = latest`, or an empty archive) resumes there after a restart,
    // and records deleted meanwhile are then reported as a gap instead of
    // being skipped silently. Each position is a chain end, so the store
    // already covers everything before it.
    let tag = store_tag(store.as_ref());
    if !starts.is_empty() {
        let group = &config.kafka.group_id;
        let offsets: Vec<_> = starts
            .iter()
            .map(|(tp, at)| (tp.clone(), at.position, commit_metadata(&tag, at.prev)))
            .collect();
        client
            .commit_offsets(group, &offsets)
            .with_context(|| format!("cannot record start positions in consumer group {group}"))?;
    }
    log::info!(
        "archiving {} partition(s) of {} to {} ({} halted)",
        starts.len(),
        config.kafka.topics.join(","),
        store.url(),
        tps.len() - starts.len()
    );

    let settings = FileSettings {
        codec: config.files.codec,
        block_bytes: config.files.block_bytes,
        rules: Rules::new(
            config.files.max_file_bytes,
            config.files.max_file_records,
            config.files.rotate_interval,
        ),
    };
    let stop = Stop::new(interrupt);
    let encoders = config.pipeline.encoders;
    let uploaders = config.pipeline.uploaders;
    let (enc_tx, enc_rx): (Vec<_>, Vec<_>) = (0..encoders)
        .map(|_| bounded::<ToEncoder>(ENCODER_QUEUE))
        .unzip();
    let (up_tx, up_rx): (Vec<_>, Vec<_>) = (0..uploaders)
        .map(|_| bounded::<Closed>(UPLOADER_QUEUE))
        .unzip();
    let (seek_tx, seek_rx) = unbounded::<Seek>();
    let (stored_tx, stored_rx) = bounded::<Stored>(COMMITTER_QUEUE);
    let committer_client =
        Client::connect(client_config.clone()).map_err(|e| kafka_context(e, brokers))?;

    thread::scope(|s| {
        let (stop, registry, spool, store) = (&stop, &registry, &spool, store.as_ref());
        let mut threads = Vec::new();
        let fetcher = fetcher::Fetcher {
            client,
            config: &config.kafka,
            idle_flush: config.files.idle_flush,
            registry,
            stop,
            encoders: enc_tx,
            seeks: seek_rx,
        };
        let starts = starts
            .iter()
            .map(|(tp, at)| (tp.clone(), at.position))
            .collect();
        let targets = targets.clone();
        threads.push(spawn(s, "fetcher", stop, move || {
            fetcher.run(starts, targets)
        }));
        for (i, rx) in enc_rx.into_iter().enumerate() {
            let up_tx = up_tx.clone();
            threads.push(spawn(s, &format!("encoder-{i}"), stop, move || {
                encoder::run(rx, up_tx, spool, &settings, registry, stop)
            }));
        }
        drop(up_tx);
        for (i, rx) in up_rx.into_iter().enumerate() {
            let (seek_tx, stored_tx) = (seek_tx.clone(), stored_tx.clone());
            threads.push(spawn(s, &format!("uploader-{i}"), stop, move || {
                commit::upload_loop(rx, store, registry, stop, seek_tx, stored_tx)
            }));
        }
        drop((seek_tx, stored_tx));
        let group = config.kafka.group_id.as_str();
        let interval = config.kafka.commit_interval;
        let tag = tag.as_str();
        threads.push(spawn(s, "committer", stop, move || {
            commit::commit_loop(stored_rx, committer_client, group, tag, interval)
        }));
        // Joined here, so a panic (already turned into a failure by the
        // thread's guard) does not propagate out of the scope.
        for t in threads.into_iter().flatten() {
            let _ = t.join();
        }
    });

    if let Some(e) = stop.take_failure() {
        return Err(e);
    }
    Ok(Outcome {
        halted: registry.halted(),
    })
}

/// Spawns a named pipeline thread; a panic or an error stops the whole
/// pipeline with that failure. None if the thread could not start.
fn spawn<'scope, 'env>(
    s: &'scope thread::Scope<'scope, 'env>,
    name: &str,
    stop: &'env Stop,
    f: impl FnOnce() -> anyhow::Result<()> + Send + 'scope,
) -> Option<thread::ScopedJoinHandle<'scope, ()>> {
    let thread_name = name.to_string();
    let spawned = thread::Builder::new()
        .name(thread_name.clone())
        .spawn_scoped(s, move || {
            struct PanicGuard<'a>(&'a Stop, String);
            impl Drop for PanicGuard<'_> {
                fn drop(&mut self) {
                    if thread::panicking() {
                        self.0.fail(anyhow::anyhow!(
                            "internal error: thread {} panicked",
                            self.1
                        ));
                    }
                }
            }
            let _guard = PanicGuard(stop, thread_name.clone());
            if let Err(e) = f() {
                stop.fail(e);
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            stop.fail(anyhow::Error::new(e).context(format!("cannot start thread {name}")));
            None
        }
    }
}
