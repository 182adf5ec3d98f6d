//! Consumer-group membership requests (the classic protocol): JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, and the consumer protocol's
//! subscription and assignment encodings that ride inside them.
//!
//! One request each, sent to the group coordinator; coordinator moves and
//! transient failures are retried, but group-state answers
//! (REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION,
//! FENCED_INSTANCE_ID, ...) are returned for the caller to act on. Owns no
//! thread and no timer: the caller runs the join/heartbeat loop.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes, VersionRange};

use super::client::Client;
use super::error::{Action, KafkaError, classify};
use super::group::Generation;
use crate::format::names::TopicPartition;

const JOIN_GROUP: VersionRange = VersionRange { min: 4, max: 9 };
const SYNC_GROUP: VersionRange = VersionRange { min: 3, max: 5 };
const HEARTBEAT: VersionRange = VersionRange { min: 3, max: 4 };
const LEAVE_GROUP: VersionRange = VersionRange { min: 3, max: 5 };
/// The consumer protocol versions written (readers accept older ones).
const SUBSCRIPTION_VERSION: i16 = 2;
const ASSIGNMENT_VERSION: i16 = 1;
/// The protocol type of consumer groups (so Kafka's tools can show ours).
pub const PROTOCOL_TYPE: &str = "consumer";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Inside an `at_coordinator` call: an answer saying the coordinator moved
/// (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE) is an error there, so the
/// coordinator is looked up again and the request retried, as Kafka's own
/// consumer does. Every other code is the caller's to read.
fn coordinator_moved(what: impl FnOnce() -> String, code: i16) -> Result<(), KafkaError> {
    match ResponseError::try_from_code(code) {
        Some(code) if classify(code) == Action::RefreshCoordinator => {
            Err(KafkaError::Broker { what: what(), code })
        }
        _ => Ok(()),
    }
}

/// What a member tells the group when it joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// Partitions it owned in `generation` (the sticky assignor keeps them).
    pub owned: Vec<TopicPartition>,
    pub generation: i32,
}

/// The JoinGroup answer: this member's identity in the new generation and,
/// for the leader, every member's subscription.
#[derive(Clone, Debug)]
pub struct Joined {
    pub generation: Generation,
    pub leader: String,
    /// The protocol (assignor) the group chose.
    pub protocol: String,
    /// (member id, instance id, subscription) for the leader; empty otherwise.
    pub members: Vec<(String, Option<String>, Subscription)>,
}

impl Joined {
    pub fn is_leader(&self) -> bool {
        self.leader == self.generation.member_id
    }
}

/// Timeouts and identity of a member.
#[derive(Clone, Debug)]
pub struct JoinConfig {
    pub group: String,
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
}

/// Encodes a subscription (version prefix, then the struct).
pub fn encode_subscription(sub: &Subscription) -> Bytes {
    let mut owned: Vec<OwnedPartitions> = Vec::new();
    for tp in &sub.owned {
        match owned.iter_mut().find(|t| t.topic.0.as_str() == &*tp.topic) {
            Some(t) => t.partitions.push(tp.partition),
            None => owned.push(
                OwnedPartitions::default()
                    .with_topic(TopicName(s(&tp.topic)))
                    .with_partitions(vec![tp.partition]),
            ),
        }
    }
    let msg = ConsumerProtocolSubscription::default()
        .with_topics(sub.topics.iter().map(|t| s(t)).collect())
        .with_owned_partitions(owned)
        .with_generation_id(sub.generation);
    let mut buf = BytesMut::new();
    buf.put_i16(SUBSCRIPTION_VERSION);
    msg.encode(&mut buf, SUBSCRIPTION_VERSION)
        .expect("a subscription always encodes");
    buf.freeze()
}

/// Decodes a subscription written by any consumer (versions 0–3).
pub fn decode_subscription(mut b: Bytes) -> Result<Subscription, String> {
    if b.remaining() < 2 {
        return Err("subscription too short".into());
    }
    let version = b.get_i16().clamp(0, 3);
    let msg = ConsumerProtocolSubscription::decode(&mut b, version).map_err(|e| e.to_string())?;
    Ok(Subscription {
        topics: msg.topics.iter().map(|t| t.to_string()).collect(),
        owned: msg
            .owned_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| TopicPartition::new(t.topic.0.as_str(), *p))
            })
            .collect(),
        generation: if version >= 2 { msg.generation_id } else { -1 },
    })
}

/// Encodes one member's assignment.
pub fn encode_assignment(parts: &[TopicPartition]) -> Bytes {
    let mut topics: Vec<AssignedPartitions> = Vec::new();
    for tp in parts {
        match topics.iter_mut().find(|t| t.topic.0.as_str() == &*tp.topic) {
            Some(t) => t.partitions.push(tp.partition),
            None => topics.push(
                AssignedPartitions::default()
                    .with_topic(TopicName(s(&tp.topic)))
                    .with_partitions(vec![tp.partition]),
            ),
        }
    }
    let msg = ConsumerProtocolAssignment::default().with_assigned_partitions(topics);
    let mut buf = BytesMut::new();
    buf.put_i16(ASSIGNMENT_VERSION);
    msg.encode(&mut buf, ASSIGNMENT_VERSION)
        .expect("an assignment always encodes");
    buf.freeze()
}

/// Decodes an assignment (an empty one is no partitions).
pub fn decode_assignment(mut b: Bytes) -> Result<Vec<TopicPartition>, String> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    if b.remaining() < 2 {
        return Err("assignment too short".into());
    }
    let version = b.get_i16().clamp(0, 3);
    let msg = ConsumerProtocolAssignment::decode(&mut b, version).map_err(|e| e.to_string())?;
    let mut out: Vec<TopicPartition> = msg
        .assigned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(t.topic.0.as_str(), *p))
        })
        .collect();
    out.sort();
    Ok(out)
}

impl Client {
    /// JoinGroup: waits (up to the rebalance timeout) until every member
    /// has joined. A first join without a member id gets one assigned
    /// (MEMBER_ID_REQUIRED) and joins again with it.
    pub fn join_group(
        &mut self,
        config: &JoinConfig,
        member_id: &str,
        protocols: &[(&str, Bytes)],
    ) -> Result<Joined, KafkaError> {
        let mut member_id = member_id.to_string();
        let wait = config.rebalance_timeout + Duration::from_secs(5);
        loop {
            let group = config.group.clone();
            let answer = self.at_coordinator(&config.group, |conn| {
                let version = conn.version_for::<JoinGroupRequest>(JOIN_GROUP)?;
                let mut request = JoinGroupRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_session_timeout_ms(config.session_timeout.as_millis() as i32)
                    .with_rebalance_timeout_ms(config.rebalance_timeout.as_millis() as i32)
                    .with_member_id(s(&member_id))
                    .with_protocol_type(s(PROTOCOL_TYPE))
                    .with_protocols(
                        protocols
                            .iter()
                            .map(|(name, meta)| {
                                JoinGroupRequestProtocol::default()
                                    .with_name(s(name))
                                    .with_metadata(meta.clone())
                            })
                            .collect(),
                    );
                if version >= 5 {
                    request.group_instance_id = config.instance_id.as_deref().map(s);
                }
                let answer = conn.send_waiting(&request, version, wait)?;
                coordinator_moved(|| format!("join of group {group}"), answer.error_code)?;
                Ok(answer)
            })?;
            let code = ResponseError::try_from_code(answer.error_code);
            if code == Some(ResponseError::MemberIdRequired) && member_id.is_empty() {
                member_id = answer.member_id.to_string();
                continue;
            }
            KafkaError::check(answer.error_code, || {
                format!("join of group {}", config.group)
            })?;
            let mut members = Vec::new();
            for m in answer.members {
                let sub = decode_subscription(m.metadata).map_err(|e| KafkaError::Protocol {
                    broker: "group coordinator".into(),
                    what: format!(
                        "undecodable subscription of member {}: {e}",
                        m.member_id.as_str()
                    ),
                })?;
                members.push((
                    m.member_id.to_string(),
                    m.group_instance_id.map(|i| i.to_string()),
                    sub,
                ));
            }
            return Ok(Joined {
                generation: Generation {
                    generation: answer.generation_id,
                    member_id: answer.member_id.to_string(),
                    instance_id: config.instance_id.clone(),
                },
                leader: answer.leader.to_string(),
                protocol: answer
                    .protocol_name
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                members,
            });
        }
    }

    /// SyncGroup: the leader sends every member's assignment; everyone gets
    /// their own back.
    pub fn sync_group(
        &mut self,
        config: &JoinConfig,
        generation: &Generation,
        protocol: &str,
        assignments: &[(String, Vec<TopicPartition>)],
    ) -> Result<Vec<TopicPartition>, KafkaError> {
        let wait = config.rebalance_timeout + Duration::from_secs(5);
        let answer = self.at_coordinator(&config.group, |conn| {
            let version = conn.version_for::<SyncGroupRequest>(SYNC_GROUP)?;
            let mut request = SyncGroupRequest::default()
                .with_group_id(GroupId(s(&config.group)))
                .with_generation_id(generation.generation)
                .with_member_id(s(&generation.member_id))
                .with_group_instance_id(generation.instance_id.as_deref().map(s))
                .with_assignments(
                    assignments
                        .iter()
                        .map(|(member, parts)| {
                            SyncGroupRequestAssignment::default()
                                .with_member_id(s(member))
                                .with_assignment(encode_assignment(parts))
                        })
                        .collect(),
                );
            if version >= 5 {
                request.protocol_type = Some(s(PROTOCOL_TYPE));
                request.protocol_name = Some(s(protocol));
            }
            let answer = conn.send_waiting(&request, version, wait)?;
            coordinator_moved(
                || format!("sync of group {}", config.group),
                answer.error_code,
            )?;
            Ok(answer)
        })?;
        KafkaError::check(answer.error_code, || {
            format!("sync of group {}", config.group)
        })?;
        decode_assignment(answer.assignment).map_err(|e| KafkaError::Protocol {
            broker: "group coordinator".into(),
            what: format!("undecodable assignment: {e}"),
        })
    }

    /// Heartbeat: keeps the membership alive; REBALANCE_IN_PROGRESS says
    /// it is time to join again.
    pub fn heartbeat(&mut self, group: &str, generation: &Generation) -> Result<(), KafkaError> {
        let answer = self.at_coordinator(group, |conn| {
            let version = conn.version_for::<HeartbeatRequest>(HEARTBEAT)?;
            let request = HeartbeatRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id(generation.generation)
                .with_member_id(s(&generation.member_id))
                .with_group_instance_id(generation.instance_id.as_deref().map(s));
            let answer = conn.send(&request, version)?;
            coordinator_moved(|| format!("heartbeat in group {group}"), answer.error_code)?;
            Ok(answer)
        })?;
        KafkaError::check(answer.error_code, || format!("heartbeat in group {group}"))
    }

    /// LeaveGroup: the member's partitions move to others at once instead
    /// of after the session timeout.
    pub fn leave_group(&mut self, group: &str, generation: &Generation) -> Result<(), KafkaError> {
        let answer = self.at_coordinator(group, |conn| {
            let version = conn.version_for::<LeaveGroupRequest>(LEAVE_GROUP)?;
            let request = LeaveGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_members(vec![
                    MemberIdentity::default()
                        .with_member_id(s(&generation.member_id))
                        .with_group_instance_id(generation.instance_id.as_deref().map(s))
                        .with_reason(if version >= 5 {
                            Some(s("kafka-store is stopping"))
                        } else {
                            None
                        }),
                ]);
            let answer = conn.send(&request, version)?;
            coordinator_moved(|| format!("leave of group {group}"), answer.error_code)?;
            Ok(answer)
        })?;
        KafkaError::check(answer.error_code, || format!("leave of group {group}"))?;
        for m in &answer.members {
            KafkaError::check(m.error_code, || format!("leave of group {group}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsResponse, BrokerId, FindCoordinatorResponse, HeartbeatResponse,
        MetadataResponse, RequestHeader, ResponseHeader,
    };

    use super::*;

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let sub = Subscription {
            topics: vec!["a".into(), "b".into()],
            owned: vec![
                TopicPartition::new("a", 1),
                TopicPartition::new("a", 3),
                TopicPartition::new("b", 0),
            ],
            generation: 7,
        };
        assert_eq!(decode_subscription(encode_subscription(&sub)).unwrap(), sub);
        let parts = vec![
            TopicPartition::new("a", 0),
            TopicPartition::new("b", 2),
            TopicPartition::new("b", 5),
        ];
        assert_eq!(decode_assignment(encode_assignment(&parts)).unwrap(), parts);
        assert_eq!(decode_assignment(Bytes::new()).unwrap(), vec![]);
        assert!(decode_subscription(Bytes::from_static(&[0])).is_err());
    }

    /// A one-node broker that answers ApiVersions, Metadata and
    /// FindCoordinator with itself, and refuses the first `refusals`
    /// heartbeats with NOT_COORDINATOR; counts requests by API key.
    fn coordinator_that_moves(refusals: usize) -> (String, Arc<Mutex<HashMap<ApiKey, usize>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let seen = Arc::clone(&counts);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (mut stream, seen) = (stream.unwrap(), Arc::clone(&seen));
                std::thread::spawn(move || {
                    let mut len = [0u8; 4];
                    while stream.read_exact(&mut len).is_ok() {
                        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
                        stream.read_exact(&mut body).unwrap();
                        let key = ApiKey::try_from(i16::from_be_bytes([body[0], body[1]])).unwrap();
                        let version = i16::from_be_bytes([body[2], body[3]]);
                        let header = RequestHeader::decode(
                            &mut Bytes::from(body),
                            key.request_header_version(version),
                        )
                        .unwrap();
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            let n = seen.entry(key).or_insert(0);
                            *n += 1;
                            *n
                        };
                        let mut out = BytesMut::new();
                        ResponseHeader::default()
                            .with_correlation_id(header.correlation_id)
                            .encode(&mut out, key.response_header_version(version))
                            .unwrap();
                        let me = |node: i32| (BrokerId(node), s("127.0.0.1"), i32::from(port));
                        match key {
                            ApiKey::ApiVersions => {
                                let api = |k: ApiKey, max: i16| {
                                    ApiVersion::default()
                                        .with_api_key(k as i16)
                                        .with_max_version(max)
                                };
                                ApiVersionsResponse::default()
                                    .with_api_keys(vec![
                                        api(ApiKey::ApiVersions, 3),
                                        api(ApiKey::Metadata, 12),
                                        api(ApiKey::FindCoordinator, 4),
                                        api(ApiKey::Heartbeat, 4),
                                    ])
                                    .encode(&mut out, version)
                            }
                            ApiKey::Metadata => {
                                let (id, host, port) = me(1);
                                MetadataResponse::default()
                                    .with_brokers(vec![
                                        MetadataResponseBroker::default()
                                            .with_node_id(id)
                                            .with_host(host)
                                            .with_port(port),
                                    ])
                                    .encode(&mut out, version)
                            }
                            ApiKey::FindCoordinator => {
                                let (id, host, port) = me(1);
                                FindCoordinatorResponse::default()
                                    .with_coordinators(vec![
                                        Coordinator::default()
                                            .with_key(s("g"))
                                            .with_node_id(id)
                                            .with_host(host)
                                            .with_port(port),
                                    ])
                                    .encode(&mut out, version)
                            }
                            ApiKey::Heartbeat => HeartbeatResponse::default()
                                .with_error_code(if n <= refusals {
                                    ResponseError::NotCoordinator.code()
                                } else {
                                    0
                                })
                                .encode(&mut out, version),
                            other => panic!("unexpected {other:?}"),
                        }
                        .unwrap();
                        stream.write_all(&(out.len() as i32).to_be_bytes()).unwrap();
                        stream.write_all(&out).unwrap();
                    }
                });
            }
        });
        (format!("127.0.0.1:{port}"), counts)
    }

    #[test]
    fn a_coordinator_that_moved_is_looked_up_again() {
        let (addr, counts) = coordinator_that_moves(1);
        let quick = Duration::from_secs(2);
        let mut client = Client::connect(
            crate::kafka::client::ClientConfig::for_tests(vec![addr], quick),
            crate::cancel::Cancel::default(),
        )
        .unwrap();
        let generation = Generation {
            generation: 1,
            member_id: "m".into(),
            instance_id: None,
        };
        client.heartbeat("g", &generation).unwrap();
        let counts = counts.lock().unwrap();
        assert_eq!(counts[&ApiKey::Heartbeat], 2);
        assert_eq!(counts[&ApiKey::FindCoordinator], 2, "{counts:?}");
    }

    #[test]
    fn a_version_0_subscription_from_another_client_decodes() {
        let msg = ConsumerProtocolSubscription::default().with_topics(vec![s("t")]);
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        msg.encode(&mut buf, 0).unwrap();
        let sub = decode_subscription(buf.freeze()).unwrap();
        assert_eq!(sub.topics, vec!["t".to_string()]);
        assert_eq!(sub.generation, -1);
    }
}
