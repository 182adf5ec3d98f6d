//! `kafka-store run`: builds every stage, wires the bounded channels, owns
//! start-up and shutdown. One file per thread; the vocabulary they share is
//! in `msg` (every channel message), `stop` (the one stop flag), `registry`
//! (per-partition state), `halt`, `resume` and `spool`.
//!
//! ```text
//!  group ──Assignment──▶ fetcher ──ToEncoder──▶ encoder × E ──Closed──▶ uploader × U ──Stored──▶ committer
//!                          ▲                                               │
//!                          └──────────────────── Seek ─────────────────────┘
//! ```
//!
//! - the **group** thread (`group`) keeps this process a member of the
//!   consumer group and hands each new assignment to the fetcher;
//! - one **fetcher** thread owns the fetch positions and its Kafka client;
//! - **encoders** decode batches and write Avro files into the spool (a
//!   partition always goes to the same encoder, so its order is kept);
//! - **uploaders** put finished files into the store, create-only (a
//!   partition always goes to the same uploader, so its files are stored in
//!   order);
//! - one **committer** writes index rows and commits stored positions to
//!   the Kafka group.
//!
//! Forward channels are bounded: a slow store slows the fetcher instead of
//! filling memory. The only feedback edge (Seek, when another builder's file
//! wins) is unbounded so that the cycle can never block; it carries at most
//! one message per conflicting file.
//!
//! Invariant: an offset is committed only after the store has every object
//! before it. Shutdown (SIGTERM/SIGINT: a drain; a fatal error or a panic:
//! an abort) abandons open and queued files (they are rebuilt from Kafka,
//! byte for byte); a drain lets the last commit through.

mod committer;
mod encoder;
mod fetcher;
mod group;
mod halt;
mod msg;
mod partition;
mod registry;
pub mod resume;
mod rows;
mod spool;
mod staging;
mod stop;
mod uploader;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded};

use self::committer::Committer;
use self::encoder::Encoder;
use self::fetcher::Fetcher;
use self::group::Member;
use self::msg::{Assignment, Closed, Seek, Stored, ToEncoder};
use self::registry::{GroupState, Registry};
use self::rows::Keeper;
use self::spool::Spool;
use self::stop::Stop;
use crate::cancel::Cancel;
use crate::config::{Config, KafkaConfig};
use crate::format::names::TopicPartition;
use crate::kafka::{Client, ClientConfig, KafkaError};
use crate::metrics::Metrics;
use crate::store::Store;

pub use self::group::subscribed;
pub use self::halt::Halted;
pub use self::rows::row_of;
pub use self::spool::spool_bytes;

/// Fetched chunks queued per encoder (each at most `partition_fetch_bytes`).
const ENCODER_QUEUE: usize = 4;
/// Finished files queued per uploader (they wait on disk, not in memory).
const UPLOADER_QUEUE: usize = 2;
/// How long the committer retries one commit.
const COMMIT_PATIENCE: Duration = Duration::from_secs(10);
/// Stored positions queued for the committer (tiny messages).
const COMMITTER_QUEUE: usize = 1024;

/// How `run` ended.
pub struct Outcome {
    /// Partitions that stopped or could not start, with the reason.
    pub halted: Vec<Halted>,
    /// Partitions a one-shot run gave up starting, with the last failure.
    pub given_up: Vec<(TopicPartition, String)>,
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
pub fn kafka_context(e: KafkaError, brokers: &[String]) -> anyhow::Error {
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
/// `cancel` is the stop flag; its drain flag is what signals set. The
/// stages report to `metrics`.
pub fn run(
    config: &Config,
    options: RunOptions,
    cancel: Cancel,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Outcome> {
    let stop = Stop::new(cancel);
    let Started {
        store,
        spool,
        client,
        committer_client,
        member_client,
        keeper,
        tag,
        standalone,
    } = match start(config, options, &stop) {
        Ok(started) => started,
        // Asked to stop before start-up finished: a clean stop.
        Err(e) if stop.requested() => {
            log::info!("stopped during start-up ({e:#})");
            return Ok(Outcome {
                halted: Vec::new(),
                given_up: Vec::new(),
            });
        }
        Err(e) => return Err(e),
    };
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
    let registry = Registry::new(metrics);
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
        let fetcher = Fetcher {
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
            let encoder = Encoder {
                spool,
                files: &config.files,
                registry,
                stop,
            };
            let up_tx = up_tx.clone();
            threads.push(spawn(s, &format!("encoder-{i}"), stop, move || {
                encoder.run(rx, up_tx)
            }));
        }
        drop(up_tx);
        for (i, rx) in up_rx.into_iter().enumerate() {
            let uploader = uploader::Uploader {
                store,
                spool,
                registry,
                stop,
                seeks: seek_tx.clone(),
                stored: stored_tx.clone(),
            };
            threads.push(spawn(s, &format!("uploader-{i}"), stop, move || {
                uploader.run(rx)
            }));
        }
        drop((seek_tx, stored_tx));
        let committer = Committer {
            client: committer_client,
            group: &config.kafka.group_id,
            store_tag: &tag,
            interval: config.kafka.commit_interval,
            registry,
            membership: in_group.then_some(membership),
            store,
            stop,
            keeper,
            committed: HashMap::new(),
        };
        threads.push(spawn(s, "committer", stop, move || {
            let result = committer.run(stored_rx);
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
        given_up: registry.given_up(),
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

/// A Kafka client for one thread, its failure phrased for the user.
fn connect(config: ClientConfig, cancel: Cancel, kafka: &KafkaConfig) -> anyhow::Result<Client> {
    Client::connect(config, cancel).map_err(|e| kafka_context(e, &kafka.client.brokers))
}

/// Opens and checks everything `run` needs before any thread starts.
fn start(config: &Config, options: RunOptions, stop: &Stop) -> anyhow::Result<Started> {
    let cancel = stop.cancel();
    let store = config.store.open(cancel)?;
    store.check_create_only()?;
    let spool = Spool::open(&config.store.spool_dir)?;
    let k = &config.kafka;
    let mut client = connect(k.client.clone(), cancel.clone(), k)?;

    // Named topics must exist; regex subscriptions may match later.
    for topic in &k.topics {
        client
            .partitions(topic)
            .map_err(|e| kafka_context(e, &k.client.brokers))?;
    }
    let tag = resume::store_tag(store.as_ref());
    // A MySQL index that is misconfigured stops the start; one that is only
    // unreachable does not (rows are back-filled when it answers).
    let keeper = config
        .mysql
        .as_ref()
        .map(|m| Keeper::open(m, &store.url()))
        .transpose()?;
    log::info!(
        "archiving {}{} to {} as a member of group {}",
        k.topics.join(","),
        k.topic_regex.as_ref().map_or(String::new(), |r| format!(
            " and topics matching {}",
            r.as_str()
        )),
        store.url(),
        k.group_id
    );

    // The committer's last commit gets through a drain (not an abort), but
    // does not hold the stop up for long.
    let committer_client = connect(
        ClientConfig {
            retry_timeout: k.client.retry_timeout.min(COMMIT_PATIENCE),
            ..k.client.clone()
        },
        cancel.aborts_only(),
        k,
    )?;
    // The group thread must heartbeat within the session timeout, so its
    // other requests give up well before.
    let member_client = connect(
        ClientConfig {
            retry_timeout: k.client.retry_timeout.min(k.group.session_timeout / 3),
            ..k.client.clone()
        },
        cancel.clone(),
        k,
    )?;
    // `--until-caught-up` is a one-shot run outside the group: it archives
    // every subscribed partition (safe beside running members: the
    // create-only commit decides) and commits as a standalone consumer.
    let standalone = if options.until_caught_up {
        let layout = subscribed(&mut client, k).map_err(|e| kafka_context(e, &k.client.brokers))?;
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
