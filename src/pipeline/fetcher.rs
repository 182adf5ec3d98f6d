//! The fetcher thread: owns every partition's fetch position, fetches in
//! rounds from the partition leaders, and hands complete batches to the
//! partition's encoder. It also decides the clock-driven events: the idle
//! flush and, with `--until-caught-up`, the end of the run.
//!
//! It never decodes records (encoders do) and never commits anything.
//! Retriable errors back off per partition and are retried forever (the
//! archive is safe while Kafka is away); OFFSET_OUT_OF_RANGE is resolved
//! against the log's extent by `resume::decide`, as at start: a gap
//! (`on_gap`) or a replaced log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use super::halt::Halt;
use super::msg::{Assignment, Seek, Stored, ToEncoder};
use super::registry::{Registry, worker_for};
use super::resume::{self, ChainPos, Facts, Resume};
use super::stop::{POLL, Stop};
use crate::config::KafkaConfig;
use crate::format::names::TopicPartition;
use crate::kafka::records::complete_extent;
use crate::kafka::{Client, KafkaError, OffsetSpec, PartitionData};
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
    epoch: u64,
    encoder: usize,
    phase: Phase,
    /// The next back-off after a failure; doubles up to `retry_backoff_max`.
    backoff: Duration,
    /// `--until-caught-up`: where this run ends.
    target: Option<i64>,
}

/// The partitions assigned to this process and where each stands.
#[derive(Default)]
struct Partitions {
    /// Being fetched.
    states: BTreeMap<TopicPartition, State>,
    /// Assigned (fetched, waiting to start, or halted).
    owned: BTreeSet<TopicPartition>,
    /// Assigned, not started yet (their resume position is looked up).
    pending: BTreeSet<TopicPartition>,
    /// When to try starting the pending ones again after a failure.
    pending_at: Option<Instant>,
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
            if !parts.pending.is_empty() && parts.pending_at.is_none_or(|at| at <= Instant::now()) {
                self.start(&mut client, &mut parts);
            }
            let states = &mut parts.states;
            self.apply_seeks(states);
            states.retain(|tp, _| !self.registry.is_halted(tp));
            let now = Instant::now();
            let mut wanted = Vec::new();
            let mut next_retry = now + POLL;
            for (tp, st) in states.iter() {
                match st.phase {
                    Phase::Finished { .. } | Phase::Parked => {}
                    Phase::Failing { retry_at, .. } if retry_at > now => {
                        next_retry = next_retry.min(retry_at);
                    }
                    _ => wanted.push((tp.clone(), st.position)),
                }
            }
            if wanted.is_empty() {
                if self.finished(&parts) {
                    break;
                }
                self.stop.sleep(next_retry.saturating_duration_since(now));
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
    /// once every partition's final file is stored. A member of the group
    /// keeps running even when its partitions stopped with errors (leaving
    /// would hand them to the next member, to stop there too).
    fn finished(&self, parts: &Partitions) -> bool {
        if !self.until_caught_up || !parts.assigned || !parts.pending.is_empty() {
            return false;
        }
        parts
            .states
            .iter()
            .all(|(tp, st)| match (st.phase, self.registry.get(tp)) {
                (Phase::Finished { at }, Some(ctl)) => ctl.stored.load(Ordering::SeqCst) >= at,
                _ => false,
            })
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
                parts.pending.insert(tp);
            }
        }
        parts.pending_at = None;
    }

    /// Starts the pending partitions where their archives end (step 1 of
    /// the commit protocol); on failure they are tried again later.
    fn start(&self, client: &mut Client, parts: &mut Partitions) {
        let tps: Vec<TopicPartition> = parts.pending.iter().cloned().collect();
        let k = self.config;
        let resumed = resume::resume_all(client, self.store, &k.group_id, &tps, k.start, k.on_gap)
            .and_then(|r| {
                let targets = if self.until_caught_up {
                    Some(client.list_offsets(&tps, OffsetSpec::Latest)?)
                } else {
                    None
                };
                Ok((r, targets))
            });
        let (resumed, targets) = match resumed {
            Ok(r) => r,
            Err(e) => {
                log::warn!(
                    "cannot start {} partition(s) yet, retrying: {e:#}",
                    tps.len()
                );
                parts.pending_at = Some(Instant::now() + self.config.client.retry_backoff_max);
                return;
            }
        };
        for (tp, resume) in resumed {
            let at = match resume {
                Resume::At(at) => at,
                Resume::Skip { from, at } => {
                    log_skip(&tp, from, at.position);
                    at
                }
                Resume::Halt(why) => {
                    parts.pending.remove(&tp);
                    self.registry.refuse(&tp, why);
                    continue;
                }
                Resume::Later(e) => {
                    log::warn!("cannot start {tp} yet, retrying: {e}");
                    parts.pending_at = Some(Instant::now() + self.config.client.retry_backoff_max);
                    continue;
                }
            };
            parts.pending.remove(&tp);
            let ctl = self.registry.insert(&tp, at.position);
            let epoch = ctl.epoch.load(Ordering::SeqCst);
            let encoder = worker_for(&tp, self.encoders.len());
            let position = at.position;
            self.send(
                encoder,
                ToEncoder::Assign {
                    tp: tp.clone(),
                    epoch,
                    position,
                },
            );
            // Record the start in the group: see resume.rs.
            let _ = self.stored.send(Stored::Start { tp: tp.clone(), at });
            let target = targets
                .as_ref()
                .map(|t| t.get(&tp).copied().unwrap_or(position));
            log::debug!("{tp}: archiving from offset {position}");
            parts.states.insert(
                tp,
                State {
                    position,
                    epoch,
                    encoder,
                    phase: Phase::FRESH,
                    backoff: self.config.client.retry_backoff,
                    target,
                },
            );
        }
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
            st.epoch = seek.epoch;
            st.phase = Phase::FRESH;
            let msg = ToEncoder::Assign {
                tp: seek.tp.clone(),
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
        let end = data.last_stable_offset;
        match complete_extent(&data.records, st.position) {
            Ok((next, used)) if next > st.position => {
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
        // A topic missing from metadata may be a passing state; after
        // retry_timeout it is taken as deleted.
        let missing = matches!(e, KafkaError::UnknownTopic { .. });
        if !e.is_retriable() && !missing {
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
            .list_offsets(&tps, OffsetSpec::Earliest)
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
            chain_end: Some(ChainPos {
                position: offset,
                prev: None,
            }),
        };
        let k = self.config;
        match resume::decide(&facts, k.start, k.on_gap) {
            // In range again (the log moved meanwhile): fetch again.
            Resume::At(_) | Resume::Later(_) => self.later(st),
            Resume::Skip { from, at } => {
                log_skip(tp, from, at.position);
                st.position = at.position;
                let msg = ToEncoder::Jump {
                    tp: tp.clone(),
                    epoch: st.epoch,
                    to: at.position,
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
