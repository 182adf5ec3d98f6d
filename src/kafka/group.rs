//! Consumer-group requests: find the group coordinator, commit offsets,
//! read committed offsets.
//!
//! Offsets are hints for the archive (the store is the ledger); this module
//! only moves them to and from Kafka and never decides what to commit.

use std::collections::HashMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::client::Client;
use super::connection::Connection;
use super::error::KafkaError;
use crate::format::names::TopicPartition;

const FIND_COORDINATOR: VersionRange = VersionRange { min: 1, max: 6 };
const OFFSET_COMMIT: VersionRange = VersionRange { min: 2, max: 9 };
const OFFSET_FETCH: VersionRange = VersionRange { min: 1, max: 9 };

/// A member's identity in one generation of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub generation: i32,
    pub member_id: String,
    /// Static membership (`group.instance.id`), if configured.
    pub instance_id: Option<String>,
}

/// An offset committed to a group, with the metadata string stored beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub metadata: String,
}

fn broker_error(what: String, code: i16) -> Option<KafkaError> {
    ResponseError::try_from_code(code).map(|code| KafkaError::Broker { what, code })
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Client {
    /// The address of `group`'s coordinator, looked up (and retried) now.
    pub fn group_coordinator(&mut self, group: &str) -> Result<String, KafkaError> {
        self.coordinators.remove(group);
        self.retrying(|c| c.coordinator(group))
    }

    /// The group coordinator's address (cached until it fails).
    fn coordinator(&mut self, group: &str) -> Result<String, KafkaError> {
        if let Some(addr) = self.coordinators.get(group) {
            return Ok(addr.clone());
        }
        let (node, addr) = self.find_coordinator(group)?;
        self.set_broker(node, addr.clone());
        self.coordinators.insert(group.to_string(), addr.clone());
        Ok(addr)
    }

    /// FindCoordinator at any broker; v4+ asks with a list of keys.
    fn find_coordinator(&mut self, group: &str) -> Result<(i32, String), KafkaError> {
        let what = || format!("find coordinator of group {group}");
        let mut last_err = None;
        for addr in self.candidate_brokers() {
            let result = self.with_conn(&addr, |conn| {
                let version = conn.version_for::<FindCoordinatorRequest>(FIND_COORDINATOR)?;
                let request = if version >= 4 {
                    FindCoordinatorRequest::default().with_coordinator_keys(vec![str_bytes(group)])
                } else {
                    FindCoordinatorRequest::default().with_key(str_bytes(group))
                };
                let response = conn.send(&request, version)?;
                let (code, node, host, port) = if version >= 4 {
                    let c = response
                        .coordinators
                        .first()
                        .ok_or_else(|| KafkaError::Protocol {
                            broker: conn.broker().to_string(),
                            what: "FindCoordinator answer without coordinators".into(),
                        })?;
                    (c.error_code, c.node_id.0, c.host.to_string(), c.port)
                } else {
                    let r = &response;
                    (r.error_code, r.node_id.0, r.host.to_string(), r.port)
                };
                match broker_error(what(), code) {
                    Some(e) => Err(e),
                    None => Ok((node, format!("{host}:{port}"))),
                }
            });
            match result {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| KafkaError::Broker {
            what: what(),
            code: ResponseError::CoordinatorNotAvailable,
        }))
    }

    /// Runs `f` on a connection to the group's coordinator, retrying
    /// retriable failures (and finding the coordinator again) until
    /// `retry_timeout`.
    pub(super) fn at_coordinator<T>(
        &mut self,
        group: &str,
        mut f: impl FnMut(&mut Connection) -> Result<T, KafkaError>,
    ) -> Result<T, KafkaError> {
        self.retrying(|c| {
            let addr = c.coordinator(group)?;
            let result = c.with_conn(&addr, &mut f);
            if result.as_ref().is_err_and(|e| e.is_retriable()) {
                c.coordinators.remove(group);
            }
            result
        })
    }

    /// Commits `offsets` for `group`, each with its metadata string: as a
    /// member of `generation` (the broker refuses stale generations), or as
    /// a standalone consumer when None. Retried until `retry_timeout`.
    pub fn commit_offsets(
        &mut self,
        group: &str,
        generation: Option<&Generation>,
        offsets: &[(TopicPartition, i64, String)],
    ) -> Result<(), KafkaError> {
        self.at_coordinator(group, |conn| {
            let version = conn.version_for::<OffsetCommitRequest>(OFFSET_COMMIT)?;
            let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
            for (tp, offset, metadata) in offsets {
                let p = OffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(*offset)
                    .with_committed_metadata(Some(str_bytes(metadata)));
                match topics.iter_mut().find(|t| t.name.0.as_str() == &*tp.topic) {
                    Some(t) => t.partitions.push(p),
                    None => topics.push(
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(str_bytes(&tp.topic)))
                            .with_partitions(vec![p]),
                    ),
                }
            }
            let mut request = OffsetCommitRequest::default()
                .with_group_id(GroupId(str_bytes(group)))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(topics);
            if let Some(g) = generation {
                request.generation_id_or_member_epoch = g.generation;
                request.member_id = str_bytes(&g.member_id);
                if version >= 7 {
                    request.group_instance_id = g.instance_id.as_deref().map(str_bytes);
                }
            }
            let response = conn.send(&request, version)?;
            for t in &response.topics {
                for p in &t.partitions {
                    let what = format!(
                        "offset commit of {}/{} for group {group}",
                        t.name.0.as_str(),
                        p.partition_index
                    );
                    if let Some(e) = broker_error(what, p.error_code) {
                        return Err(e);
                    }
                }
            }
            Ok(())
        })
    }

    /// The offsets `group` has committed for `tps` (absent: none committed).
    pub fn committed_offsets(
        &mut self,
        group: &str,
        tps: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Committed>, KafkaError> {
        self.at_coordinator(group, |conn| {
            let version = conn.version_for::<OffsetFetchRequest>(OFFSET_FETCH)?;
            let mut by_topic: Vec<(&str, Vec<i32>)> = Vec::new();
            for tp in tps {
                match by_topic.iter_mut().find(|(t, _)| *t == &*tp.topic) {
                    Some((_, ps)) => ps.push(tp.partition),
                    None => by_topic.push((&tp.topic, vec![tp.partition])),
                }
            }
            let request = if version >= 8 {
                OffsetFetchRequest::default()
                    .with_groups(vec![
                        OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(str_bytes(group)))
                            .with_topics(Some(
                                by_topic
                                    .iter()
                                    .map(|(t, ps)| {
                                        OffsetFetchRequestTopics::default()
                                            .with_name(TopicName(str_bytes(t)))
                                            .with_partition_indexes(ps.clone())
                                    })
                                    .collect(),
                            )),
                    ])
                    .with_require_stable(true)
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(str_bytes(group)))
                    .with_topics(Some(
                        by_topic
                            .iter()
                            .map(|(t, ps)| {
                                OffsetFetchRequestTopic::default()
                                    .with_name(TopicName(str_bytes(t)))
                                    .with_partition_indexes(ps.clone())
                            })
                            .collect(),
                    ))
                    .with_require_stable(version >= 7)
            };
            let response = conn.send(&request, version)?;
            let what = || format!("offset fetch for group {group}");
            let mut out = HashMap::new();
            let mut take = |topic: &str,
                            partition: i32,
                            offset: i64,
                            metadata: Option<&StrBytes>,
                            code: i16| {
                if let Some(e) = broker_error(format!("{} of {topic}/{partition}", what()), code) {
                    return Err(e);
                }
                if offset >= 0 {
                    out.insert(
                        TopicPartition::new(topic, partition),
                        Committed {
                            offset,
                            metadata: metadata.map(|m| m.to_string()).unwrap_or_default(),
                        },
                    );
                }
                Ok(())
            };
            if version >= 8 {
                for g in &response.groups {
                    if let Some(e) = broker_error(what(), g.error_code) {
                        return Err(e);
                    }
                    for t in &g.topics {
                        for p in &t.partitions {
                            take(
                                t.name.0.as_str(),
                                p.partition_index,
                                p.committed_offset,
                                p.metadata.as_ref(),
                                p.error_code,
                            )?;
                        }
                    }
                }
            } else {
                if let Some(e) = broker_error(what(), response.error_code) {
                    return Err(e);
                }
                for t in &response.topics {
                    for p in &t.partitions {
                        take(
                            t.name.0.as_str(),
                            p.partition_index,
                            p.committed_offset,
                            p.metadata.as_ref(),
                            p.error_code,
                        )?;
                    }
                }
            }
            Ok(out)
        })
    }
}
