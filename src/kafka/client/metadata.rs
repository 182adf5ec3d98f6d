//! The metadata cache: Metadata requests and what their answers leave in
//! the cache (brokers, topic ids, partition leaders and their epochs), the
//! topic questions callers ask (`partitions`, `topic_names`, `subscribed`,
//! `topic_id`), and leader routing, which groups partitions by the broker
//! that leads them for the data requests.
//!
//! It only reads metadata: it never sends a data request or decides what to
//! do about a partition it cannot route (that comes back as its failure).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use uuid::Uuid;

use super::base::{Client, PartitionMeta, TopicMeta};
use crate::format::names::TopicPartition;
use crate::kafka::error::KafkaError;

// The versions this client implements (and sets the fields of) correctly.
const METADATA: VersionRange = VersionRange { min: 4, max: 12 };

/// Topic → partition count.
pub type Layout = BTreeMap<String, i32>;

/// Partitions with the leader epoch the metadata knows, by leader.
pub(crate) type ByLeader = BTreeMap<i32, Vec<(TopicPartition, i32)>>;

impl Client {
    /// Reads metadata for `topics` (all topics when `None` is wanted, see
    /// [`Client::topic_names`]) and updates the cache. Missing topics are
    /// removed from the cache; the response is returned for inspection.
    pub(super) fn refresh(&mut self, topics: &[Arc<str>]) -> Result<MetadataResponse, KafkaError> {
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
        // An answer about some of the cached topics leaves the others as
        // stale as they were.
        let asked: HashSet<&Arc<str>> = topics.iter().collect();
        let whole = self.topics.keys().all(|t| asked.contains(t));
        self.absorb(&response, whole);
        Ok(response)
    }

    /// Takes in an answer; `whole`: it was about every cached topic.
    fn absorb(&mut self, response: &MetadataResponse, whole: bool) {
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
        self.metadata_stale = stale || (self.metadata_stale && !whole);
        // Only a whole refresh makes the next one wait a back-off: a topic
        // left stale is asked about on the next route.
        if whole {
            self.last_refresh = Some(Instant::now());
        }
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

    /// The partitions of `tps` grouped by leader with the leader epoch the
    /// metadata knows, after refreshing what the cache does not know; those
    /// without a usable leader (or topic) come back as failures.
    pub(crate) fn route(
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };

    use super::*;
    use crate::cancel::Cancel;
    use crate::kafka::client::ClientConfig;

    fn client() -> Client {
        let config = ClientConfig::for_tests(vec!["bootstrap:9092".into()], Duration::from_secs(1));
        Client::unconnected(config, Cancel::default())
    }

    /// A partition's error code, leader and leader epoch.
    type Partition = (i16, i32, i32);

    fn response(topic_error: i16, id: Uuid, partition: Partition) -> MetadataResponse {
        let (error_code, leader, leader_epoch) = partition;
        MetadataResponse::default()
            .with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(leader.max(0)))
                    .with_host(StrBytes::from_static_str("b"))
                    .with_port(9092),
            ])
            .with_topics(vec![
                MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                    .with_error_code(topic_error)
                    .with_topic_id(id)
                    .with_partitions(vec![
                        MetadataResponsePartition::default()
                            .with_partition_index(0)
                            .with_error_code(error_code)
                            .with_leader_id(BrokerId(leader))
                            .with_leader_epoch(leader_epoch),
                    ]),
            ])
    }

    #[test]
    fn an_answer_updates_forgets_or_keeps_what_the_cache_knows() {
        let known = Uuid::from_u128(1);
        let fresh = Uuid::from_u128(2);
        // (topic error, topic id, (partition error, leader, epoch)) →
        // (leader and epoch, topic id, stale afterwards).
        type Want = (Option<(i32, i32)>, Option<Uuid>, bool);
        let cases: [(i16, Uuid, Partition, Want); 7] = [
            (0, fresh, (0, 1, 5), (Some((1, 5)), Some(fresh), false)),
            // No topic ids (an old broker).
            (0, Uuid::nil(), (0, 1, 5), (Some((1, 5)), None, false)),
            // LEADER_NOT_AVAILABLE without a leader: none to route to.
            (0, fresh, (5, -1, 5), (None, Some(fresh), false)),
            // REPLICA_NOT_AVAILABLE names a leader: it is kept.
            (0, fresh, (9, 2, 5), (Some((2, 5)), Some(fresh), false)),
            // UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID: forgotten.
            (3, fresh, (0, 1, 5), (None, None, false)),
            (100, fresh, (0, 1, 5), (None, None, false)),
            // LEADER_NOT_AVAILABLE for the topic: kept, asked again.
            (5, fresh, (0, 1, 5), (Some((7, 1)), Some(known), true)),
        ];
        let tp = TopicPartition::new("t", 0);
        for (topic_error, id, partition, want) in cases {
            let mut c = client();
            c.absorb(&response(0, known, (0, 7, 1)), true);
            c.absorb(&response(topic_error, id, partition), true);
            let got = (c.leader_of(&tp), c.topic_id("t"), c.metadata_stale);
            assert_eq!(got, want, "topic error {topic_error}, {partition:?}");
            assert_eq!(c.broker_addr(partition.1.max(0)).unwrap(), "b:9092");
            assert!(c.last_refresh.is_some());
        }
    }

    #[test]
    fn an_answer_about_some_topics_leaves_the_others_stale() {
        // (stale before, answer about every cached topic) → stale after.
        let cases = [
            (true, true, false),
            (true, false, true),
            (false, false, false),
            (false, true, false),
        ];
        for (before, whole, after) in cases {
            let mut c = client();
            c.metadata_stale = before;
            c.absorb(&response(0, Uuid::from_u128(1), (0, 1, 5)), whole);
            assert_eq!(c.metadata_stale, after, "stale {before}, whole {whole}");
            assert_eq!(c.last_refresh.is_some(), whole, "whole {whole}");
        }
    }
}
