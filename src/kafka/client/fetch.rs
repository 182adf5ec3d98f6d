//! Fetch: one round of Fetch requests, one per leader and one broker at a
//! time, with an outcome for every partition asked (`fetch`), or one
//! partition retried until `retry_timeout` (`fetch_one`); a response larger
//! than `max_response_bytes` is fetched again partition by partition.
//!
//! It hands on raw record batches and never decodes them, never hides
//! OFFSET_OUT_OF_RANGE, a diverging epoch or a corrupt batch, and leaves the
//! pacing of rounds to the caller.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use uuid::Uuid;

use super::base::{Client, READ_COMMITTED};
use crate::format::names::TopicPartition;
use crate::kafka::error::KafkaError;
use crate::kafka::records::AbortedTxn;

// The versions this client implements (and sets the fields of) correctly.
const FETCH: VersionRange = VersionRange { min: 4, max: 17 };

/// What one fetch round says about one partition.
pub type FetchOutcome = (TopicPartition, Result<PartitionData, KafkaError>);

/// Where a fetch of one partition starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub offset: i64,
    /// The leader epoch of the last batch before `offset`, when known: the
    /// broker then checks that its log has the same history (KIP-320).
    pub last_epoch: Option<i32>,
}

/// Where a leader epoch ends in a leader's log: the first offset after it
/// (OffsetsForLeaderEpoch, a fetch's diverging epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEnd {
    /// The largest epoch the leader knows at or below the one asked about.
    pub epoch: i32,
    pub end_offset: i64,
}

/// One partition of a fetch request.
struct Wanted {
    tp: TopicPartition,
    position: Position,
    /// The leader epoch the metadata knows.
    leader_epoch: i32,
}

/// Added to the announced size when a large response is fetched again for
/// one partition (its other batches and the response framing).
const LARGE_RESPONSE_SLACK: usize = 1 << 20;

/// One partition's part of a fetch response.
#[derive(Clone, Debug)]
pub struct PartitionData {
    /// The offset this fetch asked for.
    pub fetch_offset: i64,
    /// The topic id the fetch used (from the metadata, v10+ brokers).
    pub topic_id: Option<Uuid>,
    /// Set when the leader's log does not hold the history that ends at
    /// the fetch position (the last fetched epoch diverged).
    pub diverging: Option<EpochEnd>,
    pub high_watermark: i64,
    /// End of committed data: what `read_committed` may read up to.
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Aborted transactions overlapping the returned records.
    pub aborted: Vec<AbortedTxn>,
    /// Raw record batches; the last one may be truncated.
    pub records: Bytes,
}

impl Client {
    /// One fetch round: a Fetch request to each leader involved, at most
    /// `fetch_max_bytes` each. Every requested partition gets an outcome;
    /// retriable errors (leader moved, broker down) are reported as such and
    /// the cache is refreshed on the next call. Partitions of one broker are
    /// fetched in one request; brokers are asked one after another.
    ///
    /// A response larger than `max_response_bytes` (a batch larger than the
    /// fetch limits: the broker returns a partition's first batch whole) is
    /// fetched again partition by partition, each allowed as much as the
    /// large response announced, so that one large record costs only its
    /// own partition a second request.
    pub fn fetch(
        &mut self,
        positions: &[(TopicPartition, Position)],
        mut sink: impl FnMut(TopicPartition, Result<PartitionData, KafkaError>),
    ) {
        let n = positions.len().max(1);
        self.fetch_round = self.fetch_round.wrapping_add(1);
        let rotated: Vec<TopicPartition> = (0..positions.len())
            .map(|i| positions[(i + self.fetch_round) % n].0.clone())
            .collect();
        let at: HashMap<&TopicPartition, Position> =
            positions.iter().map(|(tp, p)| (tp, *p)).collect();
        let (by_leader, failed) = self.route(&rotated, "fetch");
        for (tp, e) in failed {
            sink(tp, Err(e));
        }
        // One broker at a time, each response handed on before the next
        // request: memory holds one response.
        for (leader, parts) in by_leader {
            let addr = self.brokers[&leader].clone();
            // A broker whose quota still holds this client back is not
            // asked: its partitions wait that long.
            if let Some(e) = self.held_back(&addr) {
                for (tp, _) in parts {
                    sink(tp, Err(e.clone()));
                }
                continue;
            }
            let parts: Vec<Wanted> = parts
                .into_iter()
                .map(|(tp, leader_epoch)| {
                    let position = at[&tp];
                    Wanted {
                        tp,
                        position,
                        leader_epoch,
                    }
                })
                .collect();
            let limit = self.config.connection.max_response_bytes;
            match self.fetch_from(&addr, &parts, limit) {
                Ok(results) => self.hand_on(&addr, results, &mut sink),
                Err(KafkaError::ResponseTooLarge { size, .. }) => {
                    let alone = size
                        .saturating_add(self.config.partition_fetch_bytes as usize)
                        .saturating_add(LARGE_RESPONSE_SLACK)
                        .min(i32::MAX as usize);
                    log::info!(
                        "a fetch response from {addr} announced {size} bytes (more than {limit}): fetching its {} partition(s) one by one, up to {alone} bytes each",
                        parts.len()
                    );
                    for part in parts {
                        let tp = part.tp.clone();
                        // One of these answers may start a quota's wait.
                        if let Some(e) = self.held_back(&addr) {
                            sink(tp, Err(e));
                            continue;
                        }
                        match self.fetch_from(&addr, std::slice::from_ref(&part), alone) {
                            Ok(results) => self.hand_on(&addr, results, &mut sink),
                            Err(e) => {
                                self.note_failure(&e);
                                sink(tp, Err(e));
                            }
                        }
                    }
                }
                Err(e) => {
                    self.note_failure(&e);
                    for part in parts {
                        sink(part.tp, Err(e.clone()));
                    }
                }
            }
        }
    }

    /// One partition's data from `position` (one fetch, retried like the
    /// one-shot requests until `retry_timeout`).
    pub fn fetch_one(
        &mut self,
        tp: &TopicPartition,
        position: Position,
    ) -> Result<PartitionData, KafkaError> {
        let positions = [(tp.clone(), position)];
        self.retrying(|c| {
            let mut outcome = None;
            c.fetch(&positions, |_, r| outcome = Some(r));
            outcome.unwrap_or_else(|| {
                Err(KafkaError::Broker {
                    what: format!("fetch of {tp}"),
                    code: ResponseError::NotLeaderOrFollower,
                })
            })
        })
    }

    /// The outcome of a partition whose leader `addr` still throttles
    /// this client, if it does.
    fn held_back(&self, addr: &str) -> Option<KafkaError> {
        self.throttled(addr).map(|wait| KafkaError::Throttled {
            broker: addr.to_string(),
            wait,
        })
    }

    fn hand_on(
        &mut self,
        addr: &str,
        results: Vec<FetchOutcome>,
        sink: &mut impl FnMut(TopicPartition, Result<PartitionData, KafkaError>),
    ) {
        for (tp, r) in results {
            if let Err(e) = &r {
                self.note_failure(e);
                log::debug!("fetch of {tp} from {addr}: {e}");
            }
            sink(tp, r);
        }
    }

    fn fetch_from(
        &mut self,
        addr: &str,
        parts: &[Wanted],
        max_bytes: usize,
    ) -> Result<Vec<FetchOutcome>, KafkaError> {
        let config = self.config.clone();
        let ids: HashMap<Arc<str>, Uuid> =
            self.topics.iter().map(|(n, t)| (n.clone(), t.id)).collect();
        self.with_conn(addr, |conn| {
            let version = conn.version_for::<FetchRequest>(FETCH)?;
            let by_id = version >= 13;
            // Topics in first-appearance order, partitions in the given order.
            let mut topics: Vec<(Arc<str>, Vec<FetchPartition>)> = Vec::new();
            for w in parts {
                let partition = FetchPartition::default()
                    .with_partition(w.tp.partition)
                    .with_current_leader_epoch(if version >= 9 { w.leader_epoch } else { -1 })
                    .with_fetch_offset(w.position.offset)
                    .with_last_fetched_epoch(match w.position.last_epoch {
                        Some(e) if version >= 12 => e,
                        _ => -1,
                    })
                    .with_partition_max_bytes(config.partition_fetch_bytes);
                match topics.iter_mut().find(|(t, _)| *t == w.tp.topic) {
                    Some((_, ps)) => ps.push(partition),
                    None => topics.push((w.tp.topic.clone(), vec![partition])),
                }
            }
            let mut names_by_id = HashMap::new();
            let request = FetchRequest::default()
                .with_max_wait_ms(config.fetch_max_wait.as_millis() as i32)
                .with_min_bytes(1)
                .with_max_bytes(config.fetch_max_bytes)
                .with_isolation_level(READ_COMMITTED)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(name, partitions)| {
                            let t = FetchTopic::default().with_partitions(partitions);
                            if by_id {
                                let id = ids.get(&name).copied().unwrap_or_default();
                                names_by_id.insert(id, name);
                                t.with_topic_id(id)
                            } else {
                                t.with_topic(TopicName(StrBytes::from_string(name.to_string())))
                            }
                        })
                        .collect(),
                );
            let response = conn.send_up_to(&request, version, max_bytes)?;
            if response.error_code != 0 {
                return Err(KafkaError::Broker {
                    what: format!("fetch from {addr}"),
                    code: ResponseError::try_from_code(response.error_code)
                        .unwrap_or(ResponseError::UnknownServerError),
                });
            }
            // Thousands of partitions in one fetch: look them up by name.
            let wanted: HashMap<&TopicPartition, &Wanted> =
                parts.iter().map(|w| (&w.tp, w)).collect();
            let mut out = Vec::with_capacity(parts.len());
            let mut answered = HashSet::with_capacity(parts.len());
            for t in response.responses {
                let name: Arc<str> = if by_id {
                    match names_by_id.get(&t.topic_id) {
                        Some(n) => n.clone(),
                        None => continue,
                    }
                } else {
                    Arc::from(t.topic.0.as_str())
                };
                let topic_id = ids.get(&name).copied().filter(|id| !id.is_nil());
                for p in t.partitions {
                    let tp = TopicPartition {
                        topic: name.clone(),
                        partition: p.partition_index,
                    };
                    let Some(w) = wanted.get(&tp) else {
                        continue;
                    };
                    if !answered.insert(tp.clone()) {
                        continue;
                    }
                    let fetch_offset = w.position.offset;
                    let diverging = (p.diverging_epoch.epoch >= 0).then_some(EpochEnd {
                        epoch: p.diverging_epoch.epoch,
                        end_offset: p.diverging_epoch.end_offset,
                    });
                    let result = match ResponseError::try_from_code(p.error_code) {
                        None => Ok(PartitionData {
                            fetch_offset,
                            topic_id,
                            diverging,
                            high_watermark: p.high_watermark,
                            last_stable_offset: if p.last_stable_offset >= 0 {
                                p.last_stable_offset
                            } else {
                                p.high_watermark
                            },
                            log_start_offset: p.log_start_offset,
                            aborted: p
                                .aborted_transactions
                                .unwrap_or_default()
                                .into_iter()
                                .map(|a| AbortedTxn {
                                    producer_id: a.producer_id.0,
                                    first_offset: a.first_offset,
                                })
                                .collect(),
                            records: p.records.unwrap_or_default(),
                        }),
                        Some(ResponseError::OffsetOutOfRange) => {
                            Err(KafkaError::OffsetOutOfRange {
                                topic: tp.topic.to_string(),
                                partition: tp.partition,
                                offset: fetch_offset,
                            })
                        }
                        Some(code) => Err(KafkaError::Broker {
                            what: format!("fetch of {tp}"),
                            code,
                        }),
                    };
                    out.push((tp, result));
                }
            }
            // A partition the broker left out of its answer is retried: after
            // the quota's wait when the broker throttles this client (it then
            // answers with no partition at all), else after a metadata
            // refresh.
            let throttle_time_ms = response.throttle_time_ms;
            for w in parts {
                if !answered.contains(&w.tp) {
                    let e = if throttle_time_ms > 0 {
                        KafkaError::Throttled {
                            broker: addr.to_string(),
                            wait: Duration::from_millis(throttle_time_ms as u64),
                        }
                    } else {
                        KafkaError::Broker {
                            what: format!("fetch of {}", w.tp),
                            code: ResponseError::NotLeaderOrFollower,
                        }
                    };
                    out.push((w.tp.clone(), Err(e)));
                }
            }
            Ok(out)
        })
    }
}
