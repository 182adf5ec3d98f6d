//! OffsetsForLeaderEpoch (KIP-320): where a leader epoch ends in the
//! leader's log, the test that the log still holds the history an archive
//! was read from.
//!
//! One attempt per call, each partition with its own outcome; the caller
//! retries. Never decides what a divergence means.

use std::collections::HashMap;

use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::client::{Client, EpochEnd};
use super::error::KafkaError;
use crate::format::names::TopicPartition;

/// v3 is the first a consumer may send (replica id -1, topic DESCRIBE
/// permission only).
const OFFSET_FOR_LEADER_EPOCH: VersionRange = VersionRange { min: 3, max: 4 };

impl Client {
    /// Where each `(partition, epoch)` ends in its leader's log. An answer
    /// with epoch or end offset -1 means the leader knows neither that
    /// epoch nor an earlier one: it comes back as `None`.
    pub fn epoch_ends(
        &mut self,
        wanted: &[(TopicPartition, i32)],
    ) -> Vec<(TopicPartition, Result<Option<EpochEnd>, KafkaError>)> {
        let asked: HashMap<&TopicPartition, i32> = wanted.iter().map(|(tp, e)| (tp, *e)).collect();
        let tps: Vec<TopicPartition> = wanted.iter().map(|(tp, _)| tp.clone()).collect();
        let (by_leader, failed) = self.route(&tps, "leader epochs");
        let mut out: Vec<_> = failed.into_iter().map(|(tp, e)| (tp, Err(e))).collect();
        for (leader, parts) in by_leader {
            let Some(addr) = self.broker_addr(leader).cloned() else {
                continue;
            };
            let response = self.with_conn(&addr, |conn| {
                let version =
                    conn.version_for::<OffsetForLeaderEpochRequest>(OFFSET_FOR_LEADER_EPOCH)?;
                let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
                for (tp, current) in &parts {
                    let partition = OffsetForLeaderPartition::default()
                        .with_partition(tp.partition)
                        .with_current_leader_epoch(*current)
                        .with_leader_epoch(asked[tp]);
                    match topics.iter_mut().find(|t| t.topic.0.as_str() == &*tp.topic) {
                        Some(t) => t.partitions.push(partition),
                        None => topics.push(
                            OffsetForLeaderTopic::default()
                                .with_topic(TopicName(StrBytes::from_string(tp.topic.to_string())))
                                .with_partitions(vec![partition]),
                        ),
                    }
                }
                let request = OffsetForLeaderEpochRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(topics);
                conn.send(&request, version)
            });
            let answered = response.map(|response| {
                let mut answered = HashMap::new();
                for t in &response.topics {
                    for p in &t.partitions {
                        let tp = TopicPartition::new(t.topic.0.as_str(), p.partition);
                        let what = || {
                            let epoch = asked.get(&tp).copied().unwrap_or(-1);
                            format!("leader epoch {epoch} of {tp}")
                        };
                        let known = p.leader_epoch >= 0 && p.end_offset >= 0;
                        let result = KafkaError::check(p.error_code, what).map(|()| {
                            known.then_some(EpochEnd {
                                epoch: p.leader_epoch,
                                end_offset: p.end_offset,
                            })
                        });
                        answered.insert(tp, result);
                    }
                }
                answered
            });
            self.settle(parts, answered, "leader epochs", &mut out);
        }
        out
    }
}
