//! A small synchronous Kafka client over `std::net::TcpStream`, speaking the
//! modern protocol through the `kafka-protocol` codec: ApiVersions,
//! Metadata, ListOffsets, Fetch (record batches v2, all codecs),
//! FindCoordinator, OffsetCommit/OffsetFetch, and consumer-group membership.
//!
//! - `connection`: one broker connection, framing, version negotiation.
//! - `client`: bootstrap, metadata cache, leader routing, ListOffsets, Fetch.
//! - `group`: coordinator lookup and group offsets.
//! - `membership`: JoinGroup/SyncGroup/Heartbeat/LeaveGroup and the consumer
//!   protocol's subscription and assignment encodings.
//! - `records`: record-batch decoding and transaction filtering.
//! - `error`: typed errors and the retry classification.
//!
//! It owns no threads and keeps no state beyond one `Client`'s caches; it
//! never decides what to archive or commit.

use std::fmt;
use std::sync::Arc;

mod client;
mod connection;
mod error;
mod group;
mod membership;
pub mod records;

pub use client::{Client, ClientConfig, OffsetSpec, PartitionData};
pub use connection::ConnectionConfig;
pub use error::{Action, KafkaError};
pub use group::{Committed, Generation};
pub use membership::{JoinConfig, Joined, Subscription, encode_subscription};

/// A topic and one of its partitions; cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        TopicPartition {
            topic: Arc::from(topic),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}
