//! DescribeProducers (KIP-664): the producers whose state a partition's
//! leader keeps. The leader keeps it from the moment it appends a batch,
//! before the batch is committed, so it is how a reader can tell that a
//! partition that looks empty up to its high watermark holds a batch beyond.
//!
//! Asks, retries retriable failures up to `retry_timeout`, and never
//! decides what the producers it names mean.

use std::collections::HashMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{DescribeProducersRequest, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::client::Client;
use super::error::KafkaError;
use crate::format::names::TopicPartition;

/// Version 0 is the only one (Kafka 2.8 and later).
const DESCRIBE_PRODUCERS: VersionRange = VersionRange { min: 0, max: 0 };

/// One producer whose state a leader keeps for a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ActiveProducer {
    pub id: i64,
    /// It wrote in a transaction (one is open, or a marker ended one).
    pub transactional: bool,
}

impl Client {
    /// The producers whose state the leader of each partition of `tps`
    /// keeps (by id), retried until `retry_timeout`.
    pub fn active_producers(
        &mut self,
        tps: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Vec<ActiveProducer>>, KafkaError> {
        self.until_answered(tps, |c, todo| c.active_producers_once(todo))
    }

    fn active_producers_once(
        &mut self,
        tps: &[TopicPartition],
    ) -> Vec<(TopicPartition, Result<Vec<ActiveProducer>, KafkaError>)> {
        let (by_leader, failed) = self.route(tps, "describe producers");
        let mut out: Vec<_> = failed.into_iter().map(|(tp, e)| (tp, Err(e))).collect();
        for (leader, parts) in by_leader {
            let Some(addr) = self.broker_addr(leader).cloned() else {
                // Every partition asked gets an outcome: none is taken for
                // one without producers.
                out.extend(parts.into_iter().map(|(tp, _)| {
                    let e = KafkaError::Broker {
                        what: format!("describe producers of {tp}"),
                        code: ResponseError::LeaderNotAvailable,
                    };
                    (tp, Err(e))
                }));
                continue;
            };
            let response = self.with_conn(&addr, |conn| {
                let version = conn.version_for::<DescribeProducersRequest>(DESCRIBE_PRODUCERS)?;
                let mut topics: Vec<TopicRequest> = Vec::new();
                for (tp, _) in &parts {
                    match topics.iter_mut().find(|t| t.name.0.as_str() == &*tp.topic) {
                        Some(t) => t.partition_indexes.push(tp.partition),
                        None => topics.push(
                            TopicRequest::default()
                                .with_name(TopicName(StrBytes::from_string(tp.topic.to_string())))
                                .with_partition_indexes(vec![tp.partition]),
                        ),
                    }
                }
                conn.send(
                    &DescribeProducersRequest::default().with_topics(topics),
                    version,
                )
            });
            let answered = response.map(|response| {
                let mut answered = HashMap::new();
                for t in &response.topics {
                    for p in &t.partitions {
                        let tp = TopicPartition::new(t.name.0.as_str(), p.partition_index);
                        let what = || format!("describe producers of {tp}");
                        let result = KafkaError::check(p.error_code, what).map(|()| {
                            let mut producers: Vec<ActiveProducer> = p
                                .active_producers
                                .iter()
                                .map(|s| ActiveProducer {
                                    id: s.producer_id.0,
                                    transactional: s.coordinator_epoch >= 0
                                        || s.current_txn_start_offset >= 0,
                                })
                                .collect();
                            producers.sort_unstable();
                            producers
                        });
                        answered.insert(tp, result);
                    }
                }
                answered
            });
            self.settle(parts, answered, "describe producers", &mut out);
        }
        out
    }
}
