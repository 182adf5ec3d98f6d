//! The broker-facing half of the Kafka client: bootstrap, the metadata cache
//! (brokers, topics, partition leaders), one connection per broker, and the
//! data requests ListOffsets and Fetch routed to each partition's leader.
//!
//! A `Client` belongs to one thread. It retries retriable failures of
//! one-shot requests (metadata, list offsets) up to `retry_timeout`, but a
//! fetch reports per-partition outcomes and leaves pacing to the caller; it
//! never hides OFFSET_OUT_OF_RANGE or a corrupt batch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes, VersionRange};
use uuid::Uuid;

use super::connection::{Connection, ConnectionConfig};
use super::error::{Action, KafkaError};
use super::records::AbortedTxn;
use crate::cancel::Cancel;
use crate::format::names::TopicPartition;

/// Everything the client needs to know; built from the `[kafka]` config.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub connection: ConnectionConfig,
    /// How long one operation retries retriable failures before giving up.
    pub retry_timeout: Duration,
    /// First back-off between retries; doubles up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// How long a broker may hold a fetch when it has no new data.
    pub fetch_max_wait: Duration,
    /// Upper bound of one fetch response (all partitions).
    pub fetch_max_bytes: i32,
    /// Upper bound of one partition's data in a fetch response.
    pub partition_fetch_bytes: i32,
}

// The versions this client implements (and sets the fields of) correctly.
const METADATA: VersionRange = VersionRange { min: 4, max: 12 };
const LIST_OFFSETS: VersionRange = VersionRange { min: 2, max: 10 };
const FETCH: VersionRange = VersionRange { min: 4, max: 17 };
/// `read_committed`: only committed transactional data, up to the LSO.
const READ_COMMITTED: i8 = 1;

/// Which offset ListOffsets asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The last stable offset (`read_committed` end of the log).
    Latest,
    /// The first offset whose timestamp is at or after this one (ms).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ts) => ts,
        }
    }
}

/// Topic → partition count.
pub type Layout = BTreeMap<String, i32>;

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

/// Partitions with the leader epoch the metadata knows, by leader.
pub(super) type ByLeader = BTreeMap<i32, Vec<(TopicPartition, i32)>>;

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

#[derive(Clone, Debug)]
struct PartitionMeta {
    leader: i32,
    leader_epoch: i32,
}

#[derive(Clone, Debug)]
struct TopicMeta {
    id: Uuid,
    partitions: BTreeMap<i32, PartitionMeta>,
}

/// A synchronous Kafka client for one thread.
pub struct Client {
    pub(super) config: ClientConfig,
    /// The stop flag: retry loops and reads in flight give up when it is set.
    cancel: Cancel,
    /// Node id → `host:port`, from the last metadata response.
    brokers: HashMap<i32, String>,
    /// Open connections by `host:port`.
    conns: HashMap<String, Connection>,
    topics: HashMap<Arc<str>, TopicMeta>,
    metadata_stale: bool,
    last_refresh: Option<Instant>,
    /// Rotates partition order between fetches so no partition starves.
    fetch_round: usize,
    /// Group id → coordinator `host:port`.
    pub(super) coordinators: HashMap<String, String>,
}

impl Client {
    /// Connects to the first reachable bootstrap broker and reads the
    /// cluster's brokers; retries until `retry_timeout`.
    pub fn connect(config: ClientConfig, cancel: Cancel) -> Result<Self, KafkaError> {
        let mut client = Client {
            config,
            cancel,
            brokers: HashMap::new(),
            conns: HashMap::new(),
            topics: HashMap::new(),
            metadata_stale: true,
            last_refresh: None,
            fetch_round: 0,
            coordinators: HashMap::new(),
        };
        client.retrying(|c| c.refresh(&[]).map(drop))?;
        Ok(client)
    }

    /// Runs `op` until it succeeds, fails for good, or `retry_timeout` passes;
    /// refreshes metadata between attempts when the error calls for it.
    pub(super) fn retrying<T>(
        &mut self,
        mut op: impl FnMut(&mut Self) -> Result<T, KafkaError>,
    ) -> Result<T, KafkaError> {
        let deadline = Instant::now() + self.config.retry_timeout;
        let mut backoff = self.config.retry_backoff;
        loop {
            match op(self) {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                    log::debug!("retrying in {backoff:?}: {e}");
                    self.note_failure(&e);
                    if !self.cancel.sleep(backoff) {
                        return Err(KafkaError::Interrupted);
                    }
                    backoff = (backoff * 2).min(self.config.retry_backoff_max);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Records what a failure means for cached state.
    pub(super) fn note_failure(&mut self, e: &KafkaError) {
        match e.action() {
            Action::RefreshMetadata => self.metadata_stale = true,
            Action::RefreshCoordinator => self.coordinators.clear(),
            Action::Retry | Action::Fatal => {}
        }
    }

    /// Runs `f` on the connection to `addr`, opening it if needed; a
    /// connection that failed is dropped so the next call reconnects.
    pub(super) fn with_conn<T>(
        &mut self,
        addr: &str,
        f: impl FnOnce(&mut Connection) -> Result<T, KafkaError>,
    ) -> Result<T, KafkaError> {
        if !self.conns.contains_key(addr) {
            let conn = Connection::open(addr, &self.config.connection, &self.cancel)?;
            self.conns.insert(addr.to_string(), conn);
        }
        let conn = self.conns.get_mut(addr).expect("inserted above");
        let result = f(conn);
        if let Err(
            KafkaError::Io { .. }
            | KafkaError::Timeout { .. }
            | KafkaError::Protocol { .. }
            | KafkaError::Interrupted
            | KafkaError::ResponseTooLarge { .. }
            | KafkaError::Connect { .. },
        ) = &result
        {
            self.conns.remove(addr);
        }
        result
    }

    /// Addresses to try for a request any broker can answer: open
    /// connections first, then known brokers, then the bootstrap list.
    pub(super) fn candidate_brokers(&self) -> Vec<String> {
        let mut out: Vec<String> = self.conns.keys().cloned().collect();
        let mut known: Vec<&String> = self.brokers.values().collect();
        known.sort();
        for addr in known.into_iter().chain(self.config.brokers.iter()) {
            if !out.contains(addr) {
                out.push(addr.clone());
            }
        }
        out
    }

    /// Sends a request to whichever broker answers first.
    pub(super) fn send_any<R: Request>(
        &mut self,
        request: &R,
        ours: VersionRange,
    ) -> Result<R::Response, KafkaError> {
        let mut last = None;
        for addr in self.candidate_brokers() {
            let result = self.with_conn(&addr, |conn| {
                let version = conn.version_for::<R>(ours)?;
                conn.send(request, version)
            });
            match result {
                Ok(r) => return Ok(r),
                Err(e) if e.is_retriable() => {
                    log::debug!("broker {addr}: {e}");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| KafkaError::Connect {
            broker: "(none)".into(),
            source: Arc::new(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no brokers configured",
            )),
        }))
    }

    /// Address of a broker by node id.
    pub(super) fn broker_addr(&self, id: i32) -> Option<&String> {
        self.brokers.get(&id)
    }

    pub(super) fn set_broker(&mut self, id: i32, addr: String) {
        self.brokers.insert(id, addr);
    }

    /// Reads metadata for `topics` (all topics when `None` is wanted, see
    /// [`Client::topic_names`]) and updates the cache. Missing topics are
    /// removed from the cache; the response is returned for inspection.
    fn refresh(&mut self, topics: &[Arc<str>]) -> Result<MetadataResponse, KafkaError> {
        let request = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let response = self.send_any(&request, METADATA)?;
        self.absorb(&response);
        Ok(response)
    }

    fn absorb(&mut self, response: &MetadataResponse) {
        let mut stale = false;
        for b in &response.brokers {
            self.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        for t in &response.topics {
            let Some(name) = &t.name else { continue };
            let name: Arc<str> = Arc::from(name.0.as_str());
            match t.error_code {
                0 => {}
                // The topic is gone (or never was).
                3 | 100 => {
                    self.topics.remove(&name);
                    continue;
                }
                // Being created or electing leaders: keep what is known, ask again.
                _ => {
                    stale = true;
                    continue;
                }
            }
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let leader = if p.error_code == 0 || p.leader_id.0 >= 0 {
                        p.leader_id.0
                    } else {
                        -1
                    };
                    (
                        p.partition_index,
                        PartitionMeta {
                            leader,
                            leader_epoch: p.leader_epoch,
                        },
                    )
                })
                .collect();
            self.topics.insert(
                name,
                TopicMeta {
                    id: t.topic_id,
                    partitions,
                },
            );
        }
        self.metadata_stale = stale;
        self.last_refresh = Some(Instant::now());
    }

    /// Refreshes stale metadata for the topics in use, at most once per
    /// back-off period; failures leave it stale for the next call.
    fn refresh_if_stale(&mut self) {
        let due = self
            .last_refresh
            .is_none_or(|t| t.elapsed() >= self.config.retry_backoff);
        if self.metadata_stale && due {
            let topics: Vec<Arc<str>> = self.topics.keys().cloned().collect();
            if let Err(e) = self.refresh(&topics) {
                log::debug!("metadata refresh failed: {e}");
                self.last_refresh = Some(Instant::now());
            }
        }
    }

    /// The partition ids of `topic`, from fresh metadata.
    pub fn partitions(&mut self, topic: &str) -> Result<Vec<i32>, KafkaError> {
        let name: Arc<str> = Arc::from(topic);
        self.retrying(|c| {
            let response = c.refresh(std::slice::from_ref(&name))?;
            let t = response
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic));
            match t.map(|t| t.error_code) {
                None | Some(3) => Err(KafkaError::UnknownTopic {
                    topic: topic.to_string(),
                }),
                Some(0) => {
                    let mut ids: Vec<i32> = t
                        .unwrap()
                        .partitions
                        .iter()
                        .map(|p| p.partition_index)
                        .collect();
                    ids.sort_unstable();
                    Ok(ids)
                }
                Some(code) => Err(KafkaError::Broker {
                    what: format!("metadata of topic {topic}"),
                    code: ResponseError::try_from_code(code)
                        .unwrap_or(ResponseError::UnknownServerError),
                }),
            }
        })
    }

    /// Every topic name in the cluster (internal topics excluded).
    pub fn topic_names(&mut self) -> Result<Vec<String>, KafkaError> {
        self.retrying(|c| {
            let response = c.send_any(
                &MetadataRequest::default()
                    .with_topics(None)
                    .with_allow_auto_topic_creation(false),
                METADATA,
            )?;
            let mut names: Vec<String> = response
                .topics
                .iter()
                .filter(|t| t.error_code == 0 && !t.is_internal)
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect();
            names.sort();
            Ok(names)
        })
    }

    /// The topics named in `topics` or matching `regex` that exist now,
    /// with their partition counts.
    pub fn subscribed(
        &mut self,
        topics: &[String],
        regex: Option<&regex_lite::Regex>,
    ) -> Result<Layout, KafkaError> {
        let mut names: std::collections::BTreeSet<String> = topics.iter().cloned().collect();
        if let Some(re) = regex {
            names.extend(self.topic_names()?.into_iter().filter(|t| re.is_match(t)));
        }
        let mut layout = Layout::new();
        for topic in names {
            match self.partitions(&topic) {
                Ok(p) => {
                    layout.insert(topic, p.len() as i32);
                }
                Err(KafkaError::UnknownTopic { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(layout)
    }

    fn leader_of(&self, tp: &TopicPartition) -> Option<(i32, i32)> {
        let p = self.topics.get(&tp.topic)?.partitions.get(&tp.partition)?;
        (p.leader >= 0).then_some((p.leader, p.leader_epoch))
    }

    /// Reads fresh metadata for `topics` (one attempt): their ids and
    /// leaders as the cluster has them now.
    pub fn refresh_metadata(&mut self, topics: &[Arc<str>]) -> Result<(), KafkaError> {
        self.refresh(topics).map(drop)
    }

    /// Refreshes metadata for the topics of `tps` the cache does not know;
    /// returns those that still do not exist.
    fn refresh_unknown(&mut self, tps: &[TopicPartition]) -> Result<Vec<Arc<str>>, KafkaError> {
        let mut missing: Vec<Arc<str>> = tps
            .iter()
            .filter(|tp| !self.topics.contains_key(&tp.topic))
            .map(|tp| tp.topic.clone())
            .collect();
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            self.refresh(&missing)?;
            missing.retain(|t| !self.topics.contains_key(t));
        }
        Ok(missing)
    }

    /// ListOffsets for each partition at its leader (retried until
    /// `retry_timeout`). `Latest` is the last stable offset.
    pub fn list_offsets(
        &mut self,
        tps: &[TopicPartition],
        spec: OffsetSpec,
    ) -> Result<HashMap<TopicPartition, i64>, KafkaError> {
        let mut done = HashMap::new();
        self.retrying(|c| {
            let todo: Vec<TopicPartition> = tps
                .iter()
                .filter(|tp| !done.contains_key(*tp))
                .cloned()
                .collect();
            let mut failure = None;
            for (tp, result) in c.list_offsets_once(&todo, spec) {
                match result {
                    Ok(offset) => {
                        done.insert(tp, offset);
                    }
                    // An unknown topic is final; report it before anything else.
                    Err(e @ KafkaError::UnknownTopic { .. }) => return Err(e),
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            failure.map_or(Ok(()), Err)
        })?;
        Ok(done)
    }

    /// ListOffsets for each partition, one attempt: each partition gets its
    /// own outcome, so that one without a leader (or of a topic that is
    /// gone) does not hold up the others.
    pub fn list_offsets_once(
        &mut self,
        tps: &[TopicPartition],
        spec: OffsetSpec,
    ) -> Vec<(TopicPartition, Result<i64, KafkaError>)> {
        let mut out = Vec::with_capacity(tps.len());
        let (by_leader, failed) = self.route(tps, "list offsets");
        out.extend(failed.into_iter().map(|(tp, e)| (tp, Err(e))));
        for (leader, parts) in by_leader {
            let addr = self.brokers[&leader].clone();
            let timeout = self.config.connection.request_timeout.as_millis() as i32;
            let response = self.with_conn(&addr, |conn| {
                let version = conn.version_for::<ListOffsetsRequest>(LIST_OFFSETS)?;
                let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
                for (tp, epoch) in &parts {
                    topics.entry(&tp.topic).or_default().push(
                        ListOffsetsPartition::default()
                            .with_partition_index(tp.partition)
                            .with_current_leader_epoch(if version >= 4 { *epoch } else { -1 })
                            .with_timestamp(spec.wire()),
                    );
                }
                let request = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_isolation_level(READ_COMMITTED)
                    .with_timeout_ms(if version >= 10 { timeout } else { 0 })
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(name, partitions)| {
                                ListOffsetsTopic::default()
                                    .with_name(TopicName(StrBytes::from_string(name.to_string())))
                                    .with_partitions(partitions)
                            })
                            .collect(),
                    );
                conn.send(&request, version)
            });
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    self.note_failure(&e);
                    out.extend(parts.into_iter().map(|(tp, _)| (tp, Err(e.clone()))));
                    continue;
                }
            };
            let mut answered = HashMap::new();
            for t in &response.topics {
                for p in &t.partitions {
                    let tp = TopicPartition::new(t.name.0.as_str(), p.partition_index);
                    let result = match ResponseError::try_from_code(p.error_code) {
                        None => Ok(p.offset),
                        Some(code) => Err(KafkaError::Broker {
                            what: format!("list offsets of {tp}"),
                            code,
                        }),
                    };
                    answered.insert(tp, result);
                }
            }
            for (tp, _) in parts {
                // A partition left out of the answer is asked again.
                let result = answered.remove(&tp).unwrap_or_else(|| {
                    Err(KafkaError::Broker {
                        what: format!("list offsets of {tp}"),
                        code: ResponseError::NotLeaderOrFollower,
                    })
                });
                if let Err(e) = &result {
                    self.note_failure(e);
                }
                out.push((tp, result));
            }
        }
        out
    }

    /// The partitions of `tps` grouped by leader with the leader epoch the
    /// metadata knows, after refreshing what the cache does not know; those
    /// without a usable leader (or topic) come back as failures.
    pub(super) fn route(
        &mut self,
        tps: &[TopicPartition],
        what: &str,
    ) -> (ByLeader, Vec<(TopicPartition, KafkaError)>) {
        let mut failed = Vec::new();
        let unknown = match self.refresh_unknown(tps) {
            Ok(unknown) => unknown,
            Err(e) => {
                self.note_failure(&e);
                let failed = tps.iter().map(|tp| (tp.clone(), e.clone())).collect();
                return (BTreeMap::new(), failed);
            }
        };
        self.refresh_if_stale();
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i32)>> = BTreeMap::new();
        for tp in tps {
            if unknown.contains(&tp.topic) {
                let topic = tp.topic.to_string();
                failed.push((tp.clone(), KafkaError::UnknownTopic { topic }));
                continue;
            }
            match self.leader_of(tp) {
                Some((leader, epoch)) if self.brokers.contains_key(&leader) => {
                    by_leader
                        .entry(leader)
                        .or_default()
                        .push((tp.clone(), epoch));
                }
                _ => {
                    self.metadata_stale = true;
                    let code = ResponseError::LeaderNotAvailable;
                    let what = format!("{what} of {tp}");
                    failed.push((tp.clone(), KafkaError::Broker { what, code }));
                }
            }
        }
        (by_leader, failed)
    }

    /// The topic's id as the metadata cache knows it (None for a topic not
    /// looked up yet, or a broker without topic ids).
    pub fn topic_id(&self, topic: &str) -> Option<Uuid> {
        self.topics
            .get(topic)
            .map(|t| t.id)
            .filter(|id| !id.is_nil())
    }

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
            // A partition the broker left out of its answer is retried.
            for w in parts {
                if !answered.contains(&w.tp) {
                    out.push((
                        w.tp.clone(),
                        Err(KafkaError::Broker {
                            what: format!("fetch of {}", w.tp),
                            code: ResponseError::NotLeaderOrFollower,
                        }),
                    ));
                }
            }
            Ok(out)
        })
    }
}
