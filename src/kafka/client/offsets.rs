//! ListOffsets: the earliest, latest (last stable) or first-at-a-timestamp
//! offset of each partition, asked of its leader; retried as a whole until
//! `retry_timeout` (`list_offsets`) or one attempt with an outcome per
//! partition (`list_offsets_once`).
//!
//! It asks and reports: it never moves a position or fetches data, and it
//! routes through the metadata cache rather than keeping leaders of its own.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::base::{Client, READ_COMMITTED};
use crate::format::names::TopicPartition;
use crate::kafka::error::KafkaError;

// The versions this client implements (and sets the fields of) correctly.
const LIST_OFFSETS: VersionRange = VersionRange { min: 2, max: 10 };

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

impl Client {
    /// ListOffsets for each partition at its leader (retried until
    /// `retry_timeout`). `Latest` is the last stable offset.
    pub fn list_offsets(
        &mut self,
        tps: &[TopicPartition],
        spec: OffsetSpec,
    ) -> Result<HashMap<TopicPartition, i64>, KafkaError> {
        self.until_answered(tps, |c, todo| c.list_offsets_once(todo, spec))
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
            let answered = response.map(|response| {
                let mut answered = HashMap::new();
                for t in &response.topics {
                    for p in &t.partitions {
                        let tp = TopicPartition::new(t.name.0.as_str(), p.partition_index);
                        let what = || format!("list offsets of {tp}");
                        let result = KafkaError::check(p.error_code, what).map(|()| p.offset);
                        answered.insert(tp, result);
                    }
                }
                answered
            });
            self.settle(parts, answered, "list offsets", &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::OffsetSpec;

    #[test]
    fn offset_specs_go_on_the_wire_as_kafka_spells_them() {
        let cases = [
            (OffsetSpec::Earliest, -2),
            (OffsetSpec::Latest, -1),
            (OffsetSpec::Timestamp(0), 0),
            (OffsetSpec::Timestamp(1_700_000_000_000), 1_700_000_000_000),
        ];
        for (spec, want) in cases {
            assert_eq!(spec.wire(), want, "{spec:?}");
        }
    }
}
