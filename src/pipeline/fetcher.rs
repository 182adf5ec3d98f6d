//! The fetcher thread: owns every partition's fetch position, fetches in
//! rounds from the partition leaders, and hands complete batches to the
//! partition's encoder. It also decides the clock-driven events: the idle
//! flush and, with `--until-caught-up`, the end of the run.
//!
//! It never decodes records (encoders do) and never commits anything.
//! Retriable errors back off per partition and are retried forever (the
//! archive is safe while Kafka is away); OFFSET_OUT_OF_RANGE is resolved
//! against the log's extent by `resume::decide`, as at start: a gap
//! (`on_gap`) or a replaced log. Every fetch names the leader epoch of the
//! last batch fetched, so the broker tells when its log no longer holds
//! that history (KIP-320); a fetch from a topic with another id than the
//! archive's stops the partition too.
//!
//! A partition that cannot start (no leader, topic gone, store trouble) is
//! retried on its own while the others go on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use uuid::Uuid;

use super::halt::Halt;
use super::msg::{Assignment, Seek, Stored, ToEncoder};
use super::registry::{Registry, worker_for};
use super::resume::{self, ChainEnd, ChainPos, Facts, NotYet, Resume};
use super::stop::{POLL, Stop};
use crate::config::KafkaConfig;
use crate::format::avro::Skipped;
use crate::format::names::TopicPartition;
use crate::kafka::records::complete_extent;
use crate::kafka::{Client, KafkaError, OffsetSpec, PartitionData, Position};
use crate::store::Store;

/// Everything the fetcher thread owns but the Kafka client and its
/// assignments, so that fetch results can be handed on while the client is
/// still busy with the next broker.
pub struct Fetcher<'a> {
    pub config: &'a KafkaConfig,
    pub store: &'a dyn Store,
    pub idle_flush: Duration,
    /// `--until-caught-up`: finish each partition at the log end seen when
    /// it was assigned, and stop when all are stored.
    pub until_caught_up: bool,
    pub registry: &'a Registry,
    pub stop: &'a Stop,
    pub encoders: Vec<Sender<ToEncoder>>,
    pub seeks: Receiver<Seek>,
    /// Start positions go to the committer like stored ones.
    pub stored: Sender<Stored>,
}

/// Where a partition being fetched stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Fetching. `caught_up_since`: since when it has been at the end of
    /// its log; `flushed_at`: where the last idle flush closed a file (no
    /// second flush at the same place).
    Fetching {
        caught_up_since: Option<Instant>,
        flushed_at: Option<i64>,
    },
    /// Backing off after failures that began at `since`.
    Failing {
        retry_at: Instant,
        since: Instant,
        /// When the last warning was logged.
        warned: Option<Instant>,
    },
    /// `--until-caught-up`: the final file ends at `at`; waiting for the
    /// store to have it.
    Finished { at: i64 },
    /// A chunk failed the header scan; the encoder reports it in full and
    /// halts the partition.
    Parked,
}

impl Phase {
    const FRESH: Phase = Phase::Fetching {
        caught_up_since: None,
        flushed_at: None,
    };
}

struct State {
    position: i64,
    /// The leader epoch of the last batch before `position`, when known.
    last_epoch: Option<i32>,
    /// The topic id the archive is read from.
    topic_id: Option<Uuid>,
    epoch: u64,
    encoder: usize,
    phase: Phase,
    /// The next back-off after a failure; doubles up to `retry_backoff_max`.
    backoff: Duration,
    /// `--until-caught-up`: where this run ends.
    target: Option<i64>,
    /// Not fetched before this instant: its leader throttles this client by
    /// a quota. Not a failure: the phase (and when the partition caught up,
    /// for the idle flush) stays what it was.
    held_until: Option<Instant>,
}

/// An assigned partition that has not started yet.
#[derive(Clone, Debug, Default)]
struct Waiting {
    /// Not before this instant (after a failure).
    retry_at: Option<Instant>,
    /// Since when its start has been failing, and why it failed last.
    failing: Option<(Instant, String)>,
    /// When that was last logged as a warning.
    warned: Option<Instant>,
}

/// The partitions assigned to this process and where each stands.
#[derive(Default)]
struct Partitions {
    /// Being fetched.
    states: BTreeMap<TopicPartition, State>,
    /// Assigned (fetched, waiting to start, or halted).
    owned: BTreeSet<TopicPartition>,
    /// Assigned, not started yet (their resume position is looked up).
    pending: BTreeMap<TopicPartition, Waiting>,
    /// Whether the group has assigned anything yet (even nothing).
    assigned: bool,
}

impl Fetcher<'_> {
    pub fn run(self, mut client: Client, assignments: Receiver<Assignment>) -> anyhow::Result<()> {
        let mut parts = Partitions::default();
        while !self.stop.requested() {
            if let Some(a) = assignments.try_iter().last() {
                self.reassign(&mut parts, a);
            }
            self.start(&mut client, &mut parts);
            let states = &mut parts.states;
            self.apply_seeks(states);
            states.retain(|tp, _| !self.registry.is_halted(tp));
            let now = Instant::now();
            let mut wanted = Vec::new();
            let mut next_retry = now + POLL;
            for (tp, st) in states.iter() {
                if let Some(until) = st.held_until.filter(|t| *t > now) {
                    next_retry = next_retry.min(until);
                    continue;
                }
                match st.phase {
                    Phase::Finished { .. } | Phase::Parked => {}
                    Phase::Failing { retry_at, .. } if retry_at > now => {
                        next_retry = next_retry.min(retry_at);
                    }
                    _ => wanted.push((
                        tp.clone(),
                        Position {
                            offset: st.position,
                            last_epoch: st.last_epoch,
                        },
                    )),
                }
            }
            if wanted.is_empty() {
                if self.finished(&mut parts) {
                    break;
                }
                // At most a poll: the loop looks at the stop flag.
                self.registry
                    .wait_stored(next_retry.saturating_duration_since(now));
                continue;
            }
            // Each partition's data is handed on as soon as its broker
            // answered, so one response is held at a time.
            let mut failures = Vec::new();
            let mut stopping = false;
            client.fetch(&wanted, |tp, result| {
                let Some(st) = states.get_mut(&tp) else {
                    return;
                };
                match result {
                    Ok(data) => stopping |= !self.fetched(&tp, st, data),
                    Err(e) => failures.push((tp, e)),
                }
            });
            if stopping {
                return Ok(());
            }
            for (tp, e) in failures {
                if let Some(st) = states.get_mut(&tp) {
                    self.failed(&mut client, &tp, st, e);
                }
            }
        }
        Ok(())
    }

    fn send(&self, encoder: usize, msg: ToEncoder) -> bool {
        self.stop.send(&self.encoders[encoder], msg)
    }

    /// Whether the fetcher's work is over: only with `--until-caught-up`,
    /// once every partition's final file is stored and the partitions that
    /// could not start have kept failing for `retry_timeout` (they are
    /// given up then, and named at the exit). A member of the group keeps
    /// running even when its partitions stopped with errors (leaving would
    /// hand them to the next member, to stop there too).
    fn finished(&self, parts: &mut Partitions) -> bool {
        if !self.until_caught_up || !parts.assigned {
            return false;
        }
        let all_stored =
            parts
                .states
                .iter()
                .all(|(tp, st)| match (st.phase, self.registry.get(tp)) {
                    (Phase::Finished { at }, Some(ctl)) => ctl.stored.load(Ordering::SeqCst) >= at,
                    _ => false,
                });
        if !all_stored {
            return false;
        }
        let patience = self.config.client.retry_timeout;
        let hopeless = |w: &Waiting| {
            w.failing
                .as_ref()
                .is_some_and(|(since, _)| since.elapsed() >= patience)
        };
        if !parts.pending.values().all(hopeless) {
            return false;
        }
        for (tp, w) in std::mem::take(&mut parts.pending) {
            let why = w.failing.map(|(_, why)| why).unwrap_or_default();
            self.registry.give_up(&tp, why);
        }
        true
    }

    /// A new assignment: stop what moved away, queue what arrived.
    fn reassign(&self, parts: &mut Partitions, a: Assignment) {
        parts.assigned = true;
        let revoked: Vec<TopicPartition> = parts.owned.difference(&a.partitions).cloned().collect();
        for tp in revoked {
            if let Some(st) = parts.states.remove(&tp) {
                self.send(st.encoder, ToEncoder::Revoke { tp: tp.clone() });
            }
            parts.pending.remove(&tp);
            self.registry.remove(&tp);
            parts.owned.remove(&tp);
        }
        for tp in a.partitions {
            if parts.owned.insert(tp.clone()) {
                parts.pending.insert(tp, Waiting::default());
            }
        }
    }

    /// Starts the pending partitions that are due where their archives end
    /// (step 1 of the commit protocol); each that cannot start yet is tried
    /// again on its own.
    fn start(&self, client: &mut Client, parts: &mut Partitions) {
        let now = Instant::now();
        let tps: Vec<TopicPartition> = parts
            .pending
            .iter()
            .filter(|(_, w)| w.retry_at.is_none_or(|at| at <= now))
            .map(|(tp, _)| tp.clone())
            .collect();
        if tps.is_empty() {
            return;
        }
        // Fresh metadata: the topic ids to check the archive against.
        let mut topics: Vec<std::sync::Arc<str>> = tps.iter().map(|tp| tp.topic.clone()).collect();
        topics.dedup();
        if let Err(e) = client.refresh_metadata(&topics) {
            for tp in &tps {
                self.not_yet(parts, tp, NotYet::Kafka(e.clone()));
            }
            return;
        }
        let k = self.config;
        let resumed = resume::resume_all(client, self.store, &k.group_id, &tps, k.start, k.on_gap);
        let mut targets: BTreeMap<TopicPartition, Result<i64, KafkaError>> = if self.until_caught_up
        {
            client
                .list_offsets_once(&tps, OffsetSpec::Latest)
                .into_iter()
                .collect()
        } else {
            BTreeMap::new()
        };
        for (tp, resume) in resumed {
            let (at, last_epoch, skip) = match resume {
                Resume::At { at, last_epoch } => (at, last_epoch, None),
                Resume::Skip { at, to, reason } => {
                    match reason {
                        Skipped::Retention if at.position > 0 => log_skip(&tp, at.position, to),
                        Skipped::Retention => log::info!(
                            "{tp}: no archive; offsets 0..{to} are gone from kafka: a skipped range"
                        ),
                        Skipped::StartLatest => log::info!(
                            "{tp}: no archive and kafka.start = \"latest\": offsets 0..{to} are a skipped range"
                        ),
                    }
                    (at, None, Some((to, reason)))
                }
                Resume::Halt(why) => {
                    parts.pending.remove(&tp);
                    self.registry.refuse(&tp, why);
                    continue;
                }
                Resume::Later(e) => {
                    self.not_yet(parts, &tp, e);
                    continue;
                }
            };
            let target = match targets.remove(&tp) {
                None => None,
                Some(Ok(end)) => Some(end),
                Some(Err(e)) => {
                    self.not_yet(parts, &tp, NotYet::Kafka(e));
                    continue;
                }
            };
            parts.pending.remove(&tp);
            let topic_id = client.topic_id(&tp.topic);
            self.begin(parts, tp, topic_id, at, last_epoch, skip, target);
        }
    }

    /// A partition could not start now: try again after a back-off, saying
    /// why at the first failure and then every `retry_timeout`.
    fn not_yet(&self, parts: &mut Partitions, tp: &TopicPartition, why: NotYet) {
        let Some(w) = parts.pending.get_mut(tp) else {
            return;
        };
        let now = Instant::now();
        let why = why.to_string();
        let patience = self.config.client.retry_timeout;
        if w.warned.is_none_or(|at| now.duration_since(at) >= patience) {
            log::warn!("cannot start {tp} yet, retrying: {why}");
            w.warned = Some(now);
        } else {
            log::debug!("cannot start {tp} yet, retrying: {why}");
        }
        let since = w.failing.as_ref().map_or(now, |(since, _)| *since);
        w.failing = Some((since, why));
        w.retry_at = Some(now + self.config.client.retry_backoff_max);
    }

    /// Starts fetching a partition whose archive ends at `at` (after the
    /// skipped range `skip`, if any).
    #[allow(clippy::too_many_arguments)]
    fn begin(
        &self,
        parts: &mut Partitions,
        tp: TopicPartition,
        topic_id: Option<Uuid>,
        at: ChainPos,
        last_epoch: Option<i32>,
        skip: Option<(i64, Skipped)>,
        target: Option<i64>,
    ) {
        self.store.tidy(&tp.topic, tp.partition);
        let ctl = self.registry.insert(&tp, at.position);
        let epoch = ctl.epoch.load(Ordering::SeqCst);
        let encoder = worker_for(&tp, self.encoders.len());
        self.send(
            encoder,
            ToEncoder::Assign {
                tp: tp.clone(),
                topic_id,
                epoch,
                position: at.position,
            },
        );
        let mut position = at.position;
        if let Some((to, reason)) = skip {
            self.send(
                encoder,
                ToEncoder::Jump {
                    tp: tp.clone(),
                    epoch,
                    to,
                    reason,
                },
            );
            position = to;
        }
        // Record the start in the group: see resume.rs.
        let _ = self.stored.send(Stored::Start { tp: tp.clone(), at });
        log::debug!("{tp}: archiving from offset {position}");
        parts.states.insert(
            tp,
            State {
                position,
                last_epoch,
                topic_id,
                epoch,
                encoder,
                phase: Phase::FRESH,
                backoff: self.config.client.retry_backoff,
                target: target.map(|t| t.max(position)),
                held_until: None,
            },
        );
    }

    /// Another builder's file won: continue where the chain now ends.
    fn apply_seeks(&self, states: &mut BTreeMap<TopicPartition, State>) {
        while let Ok(seek) = self.seeks.try_recv() {
            let Some(st) = states.get_mut(&seek.tp) else {
                continue;
            };
            log::info!(
                "{} continues at offset {} (epoch {})",
                seek.tp,
                seek.position,
                seek.epoch
            );
            st.position = seek.position;
            // Not the epoch this process fetched last: the adopted chain
            // may end in a later one, and the broker would take the older
            // epoch's end before `position` for a truncation.
            st.last_epoch = seek.last_epoch;
            st.epoch = seek.epoch;
            st.phase = Phase::FRESH;
            let msg = ToEncoder::Assign {
                tp: seek.tp.clone(),
                topic_id: st.topic_id,
                epoch: seek.epoch,
                position: seek.position,
            };
            self.send(st.encoder, msg);
        }
    }

    /// Handles one partition's data; false when the pipeline is stopping.
    fn fetched(&self, tp: &TopicPartition, st: &mut State, data: PartitionData) -> bool {
        st.backoff = self.config.client.retry_backoff;
        let (mut caught_up_since, flushed_at) = match st.phase {
            Phase::Fetching {
                caught_up_since,
                flushed_at,
            } => (caught_up_since, flushed_at),
            _ => (None, None),
        };
        st.phase = Phase::Fetching {
            caught_up_since,
            flushed_at,
        };
        if data.fetch_offset != st.position {
            return true;
        }
        // One history per chain: the same topic, the same leader epochs.
        match (st.topic_id, data.topic_id) {
            (Some(archived), Some(current)) if archived != current => {
                self.halt(tp, st, Halt::TopicReplaced { archived, current });
                return true;
            }
            (None, Some(current)) => st.topic_id = Some(current),
            _ => {}
        }
        if let Some(diverging) = data.diverging {
            let why = Halt::Diverged {
                epoch: st.last_epoch.unwrap_or(diverging.epoch),
                ends_at: Some(diverging.end_offset),
                archive_end: st.position,
            };
            self.halt(tp, st, why);
            return true;
        }
        let end = data.last_stable_offset;
        self.registry.metrics.log_end(tp, end);
        match complete_extent(&data.records, st.position) {
            Ok(extent) if extent.next > st.position => {
                let (next, used) = (extent.next, extent.used);
                st.last_epoch = extent.last_epoch.or(st.last_epoch);
                // A copy of this partition's bytes frees the whole response
                // as soon as every partition's chunk is copied.
                let chunk = PartitionData {
                    records: Bytes::copy_from_slice(&data.records[..used]),
                    ..data
                };
                let msg = ToEncoder::Chunk {
                    tp: tp.clone(),
                    epoch: st.epoch,
                    data: chunk,
                };
                if !self.send(st.encoder, msg) {
                    return false;
                }
                st.position = next;
                caught_up_since = None;
            }
            Ok(_) => {}
            Err(_) => {
                // Let the encoder decode it and report the corruption in full.
                let msg = ToEncoder::Chunk {
                    tp: tp.clone(),
                    epoch: st.epoch,
                    data,
                };
                if !self.send(st.encoder, msg) {
                    return false;
                }
                st.phase = Phase::Parked;
                return true;
            }
        }
        let now = Instant::now();
        if st.position >= end {
            caught_up_since.get_or_insert(now);
        }
        st.phase = Phase::Fetching {
            caught_up_since,
            flushed_at,
        };
        if let Some(target) = st.target
            && st.position >= target
        {
            st.phase = Phase::Finished { at: st.position };
            let msg = ToEncoder::Finish {
                tp: tp.clone(),
                epoch: st.epoch,
            };
            return self.send(st.encoder, msg);
        }
        let idle = caught_up_since.is_some_and(|t| now.duration_since(t) >= self.idle_flush);
        if idle && flushed_at != Some(st.position) {
            st.phase = Phase::Fetching {
                caught_up_since,
                flushed_at: Some(st.position),
            };
            let msg = ToEncoder::Flush {
                tp: tp.clone(),
                epoch: st.epoch,
            };
            return self.send(st.encoder, msg);
        }
        true
    }

    fn failed(&self, client: &mut Client, tp: &TopicPartition, st: &mut State, e: KafkaError) {
        if let KafkaError::OffsetOutOfRange { offset, .. } = e {
            return self.out_of_range(client, tp, st, offset);
        }
        if matches!(e, KafkaError::Interrupted) {
            return; // stopping
        }
        if let KafkaError::Throttled { wait, .. } = e {
            st.held_until = Some(Instant::now() + wait);
            return;
        }
        // A topic missing from metadata may be a passing state; after
        // retry_timeout it is taken as deleted.
        let missing = matches!(e, KafkaError::UnknownTopic { .. });
        // An exception in the broker's read path (a tiered-storage fetch
        // that failed, a full remote-read queue): Kafka's own consumer
        // fetches again, and so does this one, warning after retry_timeout.
        if !e.is_retriable() && !missing && !e.is_broker_exception() {
            self.halt(tp, st, Halt::Kafka(e));
            return;
        }
        let now = Instant::now();
        let (since, warned) = match st.phase {
            Phase::Failing { since, warned, .. } => (since, warned),
            _ => (now, None),
        };
        let patience = self.config.client.retry_timeout;
        let failing_for = now.duration_since(since);
        if missing && failing_for >= patience {
            self.halt(tp, st, Halt::TopicGone);
            return;
        }
        let warn =
            failing_for >= patience && warned.is_none_or(|w| now.duration_since(w) >= patience);
        if warn {
            log::warn!(
                "cannot fetch {tp} at offset {} for {}s, still trying: {e}",
                st.position,
                failing_for.as_secs()
            );
        } else {
            log::debug!(
                "fetch of {tp} at offset {} failed, retrying: {e}",
                st.position
            );
        }
        st.phase = Phase::Failing {
            retry_at: now + st.backoff,
            since,
            warned: if warn { Some(now) } else { warned },
        };
        st.backoff = (st.backoff * 2).min(self.config.client.retry_backoff_max);
    }

    /// Stops fetching a partition; what was fetched before is still
    /// archived (the open file closes at the current position).
    fn halt(&self, tp: &TopicPartition, st: &State, why: Halt) {
        let msg = ToEncoder::Finish {
            tp: tp.clone(),
            epoch: st.epoch,
        };
        self.send(st.encoder, msg);
        self.registry.halt(tp, why);
    }

    /// Backs off once without counting it as a failure.
    fn later(&self, st: &mut State) {
        let now = Instant::now();
        st.phase = Phase::Failing {
            retry_at: now + st.backoff,
            since: now,
            warned: None,
        };
    }

    /// The position left the log: decided against the log's extent like a
    /// start (`resume::decide`): records deleted by retention (a gap), or a
    /// log that no longer reaches the archive.
    fn out_of_range(&self, client: &mut Client, tp: &TopicPartition, st: &mut State, offset: i64) {
        let tps = [tp.clone()];
        let extent = client
            .refresh_metadata(std::slice::from_ref(&tp.topic))
            .and_then(|()| client.list_offsets(&tps, OffsetSpec::Earliest))
            .and_then(|e| Ok((e, client.list_offsets(&tps, OffsetSpec::Latest)?)));
        let (log_start, log_end) = match extent {
            Ok((e, l)) => (e[tp], l[tp]),
            Err(e) => {
                log::warn!(
                    "{tp}: offset {offset} is out of range and the log extent is unknown: {e}"
                );
                return self.later(st);
            }
        };
        let facts = Facts {
            log_start,
            log_end,
            topic_id: client.topic_id(&tp.topic),
            chain_end: Some(ChainEnd {
                at: ChainPos {
                    position: offset,
                    prev: None,
                },
                topic_id: st.topic_id,
                last_epoch: None,
            }),
            epoch_end: None,
        };
        let k = self.config;
        match resume::decide(&facts, k.start, k.on_gap) {
            // In range again (the log moved meanwhile): fetch again.
            Resume::At { .. } | Resume::Later(_) => self.later(st),
            Resume::Skip { at, to, reason } => {
                log_skip(tp, at.position, to);
                st.position = to;
                st.last_epoch = None;
                let msg = ToEncoder::Jump {
                    tp: tp.clone(),
                    epoch: st.epoch,
                    to,
                    reason,
                };
                self.send(st.encoder, msg);
            }
            Resume::Halt(why) => self.halt(tp, st, why),
        }
    }
}

/// Records lost upstream are never skipped quietly.
fn log_skip(tp: &TopicPartition, from: i64, to: i64) {
    log::error!(
        "records {from}..{to} of {tp} were deleted from kafka before they were archived; skipping them (kafka.on_gap = \"skip\")"
    );
}
