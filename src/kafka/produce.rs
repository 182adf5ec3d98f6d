//! Idempotent produce: InitProducerId gives a producer id and epoch, every
//! batch carries the next sequence number of its partition, and a batch
//! whose answer was lost is sent again with the same bytes, which the broker
//! appends at most once (it keeps the last sequences of each producer).
//!
//! A leaf like fetch: it sends what it is given, in order, and waits for
//! every batch to be acknowledged by all in-sync replicas (`acks=all`)
//! before the next call; it never decides what to produce. Retriable
//! failures are retried up to `retry_timeout`; a refusal (a batch too
//! large, a timestamp out of range, a fenced producer) is final and named.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProducerId, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::batch::{BatchBuilder, Identity};
use super::client::Client;
use super::error::{Action, KafkaError, classify};
use super::records::{Compression, Origin};
use crate::format::names::TopicPartition;

// The versions this client implements (topics by name: Produce v13 names
// them by id).
const PRODUCE: VersionRange = VersionRange { min: 3, max: 12 };
const INIT_PRODUCER_ID: VersionRange = VersionRange { min: 0, max: 4 };
/// Wait for every in-sync replica.
const ACKS_ALL: i16 = -1;

/// A producer id and epoch, and the next sequence number per partition.
/// A partition may go on as the producer that wrote its last record (see
/// [`Producer::continue_after`]).
#[derive(Debug)]
pub struct Producer {
    id: i64,
    epoch: i16,
    next: HashMap<TopicPartition, i32>,
    continued: HashMap<TopicPartition, (i64, i16)>,
}

/// A batch ready to send, its sequence numbers taken.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub tp: TopicPartition,
    pub bytes: Bytes,
    pub records: usize,
}

/// What a produce answer means for one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Produced {
    /// Appended now, or earlier (the broker recognised the sequence).
    Written,
    /// Not appended; send the same batch again after this.
    Again(Action),
    /// Refused; sending it again cannot help.
    Refused,
}

/// Classifies a produce answer for one partition (Kafka's `Sender` and
/// `Errors.java` are the reference).
pub fn classify_produce(code: Option<ResponseError>) -> Produced {
    use ResponseError as E;
    match code {
        None | Some(E::DuplicateSequenceNumber) => Produced::Written,
        // Refusals of the data or of this producer: a retry sends the same.
        Some(
            E::MessageTooLarge
            | E::RecordListTooLarge
            | E::InvalidTimestamp
            | E::InvalidRecord
            | E::CorruptMessage
            | E::OutOfOrderSequenceNumber
            | E::UnknownProducerId
            | E::InvalidProducerEpoch
            | E::ProducerFenced
            | E::InvalidRequiredAcks
            | E::TopicAuthorizationFailed
            | E::ClusterAuthorizationFailed
            | E::TransactionalIdAuthorizationFailed
            | E::PolicyViolation,
        ) => Produced::Refused,
        Some(code) => match classify(code) {
            Action::Fatal => Produced::Refused,
            action => Produced::Again(action),
        },
    }
}

/// What the operator can do about a refusal, when there is something.
fn hint(code: ResponseError) -> &'static str {
    match code {
        ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge => {
            " (the target topic's max.message.bytes is below this batch; raise it)"
        }
        ResponseError::InvalidTimestamp => {
            " (the target topic's message.timestamp.before.max.ms or after.max.ms refuses these timestamps; raise it)"
        }
        ResponseError::TopicAuthorizationFailed => " (grant WRITE on the target topic)",
        ResponseError::OutOfOrderSequenceNumber => {
            " (the partition holds a batch of the earlier run that was not visible yet, its followers still copying it; run the same command again in a few seconds)"
        }
        _ => "",
    }
}

/// The sequence number after `sequence` (they wrap at i32::MAX).
fn after(sequence: i32, records: usize) -> i32 {
    ((i64::from(sequence) + records as i64) % (i64::from(i32::MAX) + 1)) as i32
}

impl Producer {
    /// Writes to `tp` as the producer that wrote the record of `origin`,
    /// with the sequence numbers after it. The broker keeps that
    /// producer's last batches: one it appended but nobody saw acknowledged
    /// (a run killed while its followers copied it) is recognised when
    /// sent again with the same records (written once), and refused as
    /// out of order when cut differently, instead of being written twice.
    /// Returns false (and changes nothing) for an origin without a
    /// producer id or sequence.
    pub fn continue_after(&mut self, tp: &TopicPartition, origin: Origin) -> bool {
        if origin.producer_id < 0 || origin.producer_epoch < 0 || origin.sequence < 0 {
            return false;
        }
        self.continued
            .insert(tp.clone(), (origin.producer_id, origin.producer_epoch));
        self.next.insert(tp.clone(), after(origin.sequence, 1));
        true
    }

    /// Seals `builder`'s records into a batch for `tp`, taking the next
    /// sequence numbers of the partition.
    pub fn seal(
        &mut self,
        tp: &TopicPartition,
        builder: &mut BatchBuilder,
        compression: Compression,
    ) -> Sealed {
        let records = builder.len();
        let (producer_id, producer_epoch) = self
            .continued
            .get(tp)
            .copied()
            .unwrap_or((self.id, self.epoch));
        let next = self.next.entry(tp.clone()).or_insert(0);
        let who = Identity {
            producer_id,
            producer_epoch,
            base_sequence: *next,
        };
        *next = after(*next, records);
        Sealed {
            tp: tp.clone(),
            bytes: Bytes::from(builder.seal(who, compression)),
            records,
        }
    }

    /// The producer id, for logs.
    pub fn id(&self) -> i64 {
        self.id
    }
}

impl Client {
    /// A new idempotent producer id from any broker (retried).
    pub fn init_producer(&mut self) -> Result<Producer, KafkaError> {
        let timeout = self.config.connection.request_timeout.as_millis() as i32;
        let response = self.retrying(|c| {
            let request = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(timeout)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            let r = c.send_any(&request, INIT_PRODUCER_ID)?;
            match ResponseError::try_from_code(r.error_code) {
                None => Ok(r),
                Some(code) => Err(KafkaError::Broker {
                    what: "init producer id".into(),
                    code,
                }),
            }
        })?;
        Ok(Producer {
            id: response.producer_id.0,
            epoch: response.producer_epoch,
            next: HashMap::new(),
            continued: HashMap::new(),
        })
    }

    /// Sends the batches (at most one per partition) to their leaders and
    /// returns when every one is written; a batch whose answer is lost or
    /// retriable is sent again, unchanged, until `retry_timeout`.
    pub fn produce(&mut self, batches: &[Sealed]) -> Result<(), KafkaError> {
        let mut written = vec![false; batches.len()];
        self.retrying(|c| {
            let pending: Vec<usize> = (0..batches.len()).filter(|i| !written[*i]).collect();
            let tps: Vec<TopicPartition> = pending.iter().map(|i| batches[*i].tp.clone()).collect();
            let (by_leader, failed) = c.route(&tps, "produce");
            let mut again = failed.into_iter().next().map(|(_, e)| e);
            for (leader, parts) in by_leader {
                let addr = c
                    .broker_addr(leader)
                    .cloned()
                    .expect("route only returns known leaders");
                let mine: Vec<usize> = pending
                    .iter()
                    .copied()
                    .filter(|i| parts.iter().any(|(tp, _)| *tp == batches[*i].tp))
                    .collect();
                match c.produce_to(&addr, batches, &mine) {
                    Ok(answers) => {
                        for (i, code) in answers {
                            let b = &batches[i];
                            match classify_produce(code) {
                                Produced::Written => written[i] = true,
                                Produced::Again(_) => {
                                    let e = KafkaError::Broker {
                                        what: format!("produce to {}", b.tp),
                                        code: code.expect("an error code"),
                                    };
                                    c.note_failure(&e);
                                    again = again.or(Some(e));
                                }
                                Produced::Refused => {
                                    let code = code.expect("an error code");
                                    return Err(KafkaError::Refused {
                                        what: format!(
                                            "a batch of {} record(s), {} bytes, for {}",
                                            b.records,
                                            b.bytes.len(),
                                            b.tp
                                        ),
                                        code,
                                        hint: hint(code),
                                    });
                                }
                            }
                        }
                    }
                    Err(e) if e.is_retriable() => {
                        c.note_failure(&e);
                        again = again.or(Some(e));
                    }
                    Err(e) => return Err(e),
                }
            }
            again.map_or(Ok(()), Err)
        })
    }

    /// One Produce request to `addr` with the batches `which`; each gets
    /// the broker's error code (None when written). A batch left out of
    /// the answer is reported as not led there.
    fn produce_to(
        &mut self,
        addr: &str,
        batches: &[Sealed],
        which: &[usize],
    ) -> Result<Vec<(usize, Option<ResponseError>)>, KafkaError> {
        let ack_wait = (self.config.connection.request_timeout * 3 / 4).as_millis() as i32;
        let response = self.with_conn(addr, |conn| {
            let version = conn.version_for::<ProduceRequest>(PRODUCE)?;
            let mut topics: Vec<TopicProduceData> = Vec::new();
            for &i in which {
                let b = &batches[i];
                let data = PartitionProduceData::default()
                    .with_index(b.tp.partition)
                    .with_records(Some(b.bytes.clone()));
                match topics
                    .iter_mut()
                    .find(|t| t.name.0.as_str() == &*b.tp.topic)
                {
                    Some(t) => t.partition_data.push(data),
                    None => topics.push(
                        TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_string(b.tp.topic.to_string())))
                            .with_partition_data(vec![data]),
                    ),
                }
            }
            let request = ProduceRequest::default()
                .with_acks(ACKS_ALL)
                .with_timeout_ms(ack_wait)
                .with_topic_data(topics);
            conn.send(&request, version)
        })?;
        let mut codes: HashMap<TopicPartition, Option<ResponseError>> = HashMap::new();
        for t in &response.responses {
            for p in &t.partition_responses {
                let tp = TopicPartition::new(t.name.0.as_str(), p.index);
                codes.insert(tp, ResponseError::try_from_code(p.error_code));
            }
        }
        Ok(which
            .iter()
            .map(|&i| {
                let code = codes
                    .remove(&batches[i].tp)
                    .unwrap_or(Some(ResponseError::NotLeaderOrFollower));
                (i, code)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_answers_are_classified() {
        use ResponseError as E;
        let table = [
            (None, Produced::Written),
            (Some(E::DuplicateSequenceNumber), Produced::Written),
            (
                Some(E::NotLeaderOrFollower),
                Produced::Again(Action::RefreshMetadata),
            ),
            (
                Some(E::UnknownTopicOrPartition),
                Produced::Again(Action::RefreshMetadata),
            ),
            (Some(E::NotEnoughReplicas), Produced::Again(Action::Retry)),
            (
                Some(E::NotEnoughReplicasAfterAppend),
                Produced::Again(Action::Retry),
            ),
            (Some(E::RequestTimedOut), Produced::Again(Action::Retry)),
            (Some(E::MessageTooLarge), Produced::Refused),
            (Some(E::RecordListTooLarge), Produced::Refused),
            (Some(E::InvalidTimestamp), Produced::Refused),
            (Some(E::CorruptMessage), Produced::Refused),
            (Some(E::OutOfOrderSequenceNumber), Produced::Refused),
            (Some(E::UnknownProducerId), Produced::Refused),
            (Some(E::ProducerFenced), Produced::Refused),
            (Some(E::TopicAuthorizationFailed), Produced::Refused),
            (Some(E::UnsupportedVersion), Produced::Refused),
        ];
        for (code, want) in table {
            assert_eq!(classify_produce(code), want, "{code:?}");
        }
    }

    #[test]
    fn sequences_follow_record_counts_per_partition_and_wrap() {
        let mut p = Producer {
            id: 5,
            epoch: 0,
            next: HashMap::new(),
            continued: HashMap::new(),
        };
        let a = TopicPartition::new("t", 0);
        let b = TopicPartition::new("t", 1);
        let rec = crate::format::record::Record {
            offset: 0,
            timestamp: 0,
            timestamp_type: crate::format::record::TimestampType::Create,
            key: None,
            value: None,
            headers: vec![],
        };
        let seq = |p: &mut Producer, tp: &TopicPartition, n: usize| {
            let mut builder = BatchBuilder::default();
            for _ in 0..n {
                builder.add(&rec, &[]);
            }
            let sealed = p.seal(tp, &mut builder, Compression::None);
            let batch = super::super::records::batches(&sealed.bytes)
                .next()
                .unwrap()
                .unwrap();
            (batch.header.producer_id, batch.header.base_sequence)
        };
        assert_eq!(seq(&mut p, &a, 3).1, 0);
        assert_eq!(seq(&mut p, &a, 2).1, 3);
        assert_eq!(seq(&mut p, &b, 1).1, 0);
        assert_eq!(seq(&mut p, &a, 1).1, 5);
        p.next.insert(a.clone(), i32::MAX - 1);
        assert_eq!(seq(&mut p, &a, 3).1, i32::MAX - 1);
        assert_eq!(seq(&mut p, &a, 1).1, 1);
        // Going on as an earlier producer of a partition.
        let c = TopicPartition::new("t", 2);
        let earlier = Origin {
            producer_id: 9,
            producer_epoch: 3,
            sequence: 41,
        };
        assert!(p.continue_after(&c, earlier));
        assert_eq!(seq(&mut p, &c, 2), (9, 42));
        assert_eq!(seq(&mut p, &c, 1).1, 44);
        let none = Origin {
            producer_id: -1,
            producer_epoch: -1,
            sequence: -1,
        };
        assert!(!p.continue_after(&b, none));
        assert_eq!(seq(&mut p, &b, 1).1, 1);
    }
}
