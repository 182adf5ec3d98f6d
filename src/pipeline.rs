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

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, bounded, unbounded};

use crate::commit;
use crate::config::Config;
use crate::encoder;
use crate::fetcher;
use crate::index::{IndexError, Keeper, Row};
use crate::interrupt::{Interrupt, sleep_unless};
use crate::kafka::{Client, ClientConfig, Generation, KafkaError, PartitionData, TopicPartition};
use crate::membership::{Member, subscribed};
use crate::partition::{Closed, FileSettings};
use crate::resume::store_tag;
use crate::rotation::Rules;
use crate::spool::Spool;
use crate::store::{self, Store};

/// How often blocked threads look at the stop flag.
pub const POLL: Duration = Duration::from_millis(100);
/// Fetched chunks queued per encoder (each at most `partition_fetch_bytes`).
const ENCODER_QUEUE: usize = 4;
/// Finished files queued per uploader (they wait on disk, not in memory).
const UPLOADER_QUEUE: usize = 2;
/// How long the committer retries one commit.
const COMMIT_PATIENCE: Duration = Duration::from_secs(10);
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
        sleep_unless(d, || self.requested())
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

/// The partitions this process archives now.
#[derive(Default)]
pub struct Registry {
    map: RwLock<HashMap<TopicPartition, Arc<PartitionCtl>>>,
    /// Epochs are unique across partitions and assignments, so work from a
    /// partition's earlier ownership can never pass for current.
    epochs: AtomicU64,
}

impl Registry {
    /// A fresh epoch number.
    pub fn new_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Adds a partition whose archive ends at `stored`, in a fresh epoch.
    pub fn insert(&self, tp: &TopicPartition, stored: i64) -> Arc<PartitionCtl> {
        let ctl = Arc::new(PartitionCtl {
            epoch: AtomicU64::new(self.new_epoch()),
            stored: AtomicI64::new(stored),
            ..PartitionCtl::default()
        });
        self.map
            .write()
            .expect("registry")
            .insert(tp.clone(), ctl.clone());
        ctl
    }

    /// Moves `tp` to a fresh epoch (its queued work is dropped) if `ctl` is
    /// still its control, i.e. it was not revoked or assigned again since
    /// `ctl` was taken; None otherwise.
    pub fn bump(&self, tp: &TopicPartition, ctl: &Arc<PartitionCtl>) -> Option<u64> {
        let map = self.map.write().expect("registry");
        let current = map.get(tp).is_some_and(|c| Arc::ptr_eq(c, ctl));
        current.then(|| {
            let epoch = self.new_epoch();
            ctl.epoch.store(epoch, Ordering::SeqCst);
            epoch
        })
    }

    /// Forgets a partition (revoked): its queued work is dropped.
    pub fn remove(&self, tp: &TopicPartition) {
        self.map.write().expect("registry").remove(tp);
    }

    /// Whether this process archives `tp` now.
    pub fn owns(&self, tp: &TopicPartition) -> bool {
        self.map.read().expect("registry").contains_key(tp)
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

/// The partitions the group gave this process in a generation.
pub struct Assignment {
    pub partitions: BTreeSet<TopicPartition>,
}

/// The current group generation and what it assigned to this process,
/// shared by the group thread (writer) and the committer (reader): commits
/// name the generation and cover only its partitions.
#[derive(Default)]
pub struct GroupState {
    current: Mutex<Option<(Generation, BTreeSet<TopicPartition>)>>,
}

impl GroupState {
    pub fn get(&self) -> Option<(Generation, BTreeSet<TopicPartition>)> {
        self.current.lock().expect("group state").clone()
    }

    pub fn set(&self, g: Option<(Generation, BTreeSet<TopicPartition>)>) {
        *self.current.lock().expect("group state") = g;
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
    /// The partition moved to another process: drop its open file.
    Revoke { tp: TopicPartition },
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
    /// The index row of the object ending at `next`, when this process
    /// stored it (None for a start position or an adopted chain).
    pub row: Option<Row>,
    /// `next` is where the partition starts in this process.
    pub start: bool,
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
    /// A one-shot run outside the group: archive every partition up to the
    /// log end seen at start, close the files there, exit.
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
    let Started {
        store,
        spool,
        client,
        committer_client,
        member_client,
        keeper,
        tag,
        standalone,
    } = match start(config, options, &interrupt) {
        Ok(started) => started,
        // Asked to stop before start-up finished: a clean stop.
        Err(e) if interrupt.is_set() => {
            log::info!("stopped during start-up ({e:#})");
            return Ok(Outcome { halted: Vec::new() });
        }
        Err(e) => return Err(e),
    };
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
    let (assign_tx, assign_rx) = unbounded::<Assignment>();
    let registry = Registry::default();
    let membership = GroupState::default();
    let drained = AtomicBool::new(false);

    thread::scope(|s| {
        let (stop, registry, spool, store) = (&stop, &registry, &spool, store.as_ref());
        let (membership, drained) = (&membership, &drained);
        let mut threads = Vec::new();
        let in_group = standalone.is_none();
        if let Some(all) = standalone {
            // A one-shot run archives every partition itself.
            let _ = assign_tx.send(Assignment { partitions: all });
        } else {
            let member = Member {
                client: member_client,
                config: &config.kafka,
                stop,
                state: membership,
                assignments: assign_tx,
                drained,
            };
            threads.push(spawn(s, "group", stop, move || member.run()));
        }
        let fetcher = fetcher::Fetcher {
            config: &config.kafka,
            store,
            idle_flush: config.files.idle_flush,
            until_caught_up: options.until_caught_up,
            registry,
            stop,
            encoders: enc_tx,
            seeks: seek_rx,
            stored: stored_tx.clone(),
        };
        threads.push(spawn(s, "fetcher", stop, move || {
            fetcher.run(client, assign_rx)
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
        let committer = commit::Committer {
            group: &config.kafka.group_id,
            store_tag: &tag,
            interval: config.kafka.commit_interval,
            registry,
            membership: in_group.then_some(membership),
            store,
            keeper,
            committed: HashMap::new(),
        };
        threads.push(spawn(s, "committer", stop, move || {
            let result = commit::commit_loop(stored_rx, committer_client, committer);
            // The group may be left now: nothing more will be committed.
            drained.store(true, Ordering::SeqCst);
            result
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

/// What start-up opened and checked: the store, the spool, the Kafka
/// clients and the index.
struct Started {
    store: Box<dyn Store>,
    spool: Spool,
    client: Client,
    committer_client: Client,
    member_client: Client,
    keeper: Option<Keeper>,
    tag: String,
    /// `--until-caught-up`: every subscribed partition, archived outside the group.
    standalone: Option<BTreeSet<TopicPartition>>,
}

/// Opens and checks everything `run` needs before any thread starts.
fn start(config: &Config, options: RunOptions, interrupt: &Interrupt) -> anyhow::Result<Started> {
    let store = store::open(&config.store.url, &config.store.gcs, interrupt)?;
    let spool = Spool::open(&config.store.spool_dir)?;
    let brokers = &config.kafka.client.brokers;
    let client_config = ClientConfig {
        interrupt: interrupt.clone(),
        ..config.kafka.client.clone()
    };
    let mut client =
        Client::connect(client_config.clone()).map_err(|e| kafka_context(e, brokers))?;

    // Named topics must exist; regex subscriptions may match later.
    for topic in &config.kafka.topics {
        client
            .partitions(topic)
            .map_err(|e| kafka_context(e, brokers))?;
    }
    let tag = store_tag(store.as_ref());
    // A MySQL index that is misconfigured stops the start; one that is only
    // unreachable does not (rows are back-filled when it answers).
    let keeper = match &config.mysql {
        None => None,
        Some(m) => Some(Keeper::open(m).map_err(IndexError::into_anyhow)?),
    };
    log::info!(
        "archiving {}{} to {} as a member of group {}",
        config.kafka.topics.join(","),
        config
            .kafka
            .topic_regex
            .as_ref()
            .map_or(String::new(), |r| format!(
                " and topics matching {}",
                r.as_str()
            )),
        store.url(),
        config.kafka.group_id
    );

    // The committer's last commit should get through a stop request, but
    // not hold the stop up for long.
    let committer_client = Client::connect(ClientConfig {
        interrupt: Interrupt::default(),
        retry_timeout: config.kafka.client.retry_timeout.min(COMMIT_PATIENCE),
        ..config.kafka.client.clone()
    })
    .map_err(|e| kafka_context(e, brokers))?;
    // The group thread must heartbeat within the session timeout, so its
    // other requests give up well before.
    let member_client = Client::connect(ClientConfig {
        retry_timeout: client_config
            .retry_timeout
            .min(config.kafka.group.session_timeout / 3),
        ..client_config.clone()
    })
    .map_err(|e| kafka_context(e, brokers))?;
    // `--until-caught-up` is a one-shot run outside the group: it archives
    // every subscribed partition (safe beside running members: the
    // create-only commit decides) and commits as a standalone consumer.
    let standalone = if options.until_caught_up {
        let layout =
            subscribed(&mut client, &config.kafka).map_err(|e| kafka_context(e, brokers))?;
        Some(
            layout
                .iter()
                .flat_map(|(t, n)| (0..*n).map(|p| TopicPartition::new(t, p)))
                .collect::<BTreeSet<_>>(),
        )
    } else {
        None
    };
    Ok(Started {
        store,
        spool,
        client,
        committer_client,
        member_client,
        keeper,
        tag,
        standalone,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_moves_only_for_the_assignment_that_took_it() {
        let registry = Registry::default();
        let tp = TopicPartition::new("t", 0);
        let first = registry.insert(&tp, 10);
        let bumped = registry.bump(&tp, &first).unwrap();
        assert_eq!(registry.epoch(&tp), Some(bumped));

        // Revoked and assigned again while an upload of the first ran.
        registry.remove(&tp);
        assert_eq!(registry.bump(&tp, &first), None);
        let again = registry.insert(&tp, 20);
        let current = registry.epoch(&tp);
        assert_eq!(registry.bump(&tp, &first), None);
        assert_eq!(registry.epoch(&tp), current);
        assert!(registry.bump(&tp, &again).is_some());
    }
}
