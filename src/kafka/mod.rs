//! A small synchronous Kafka client over `std::net::TcpStream`, speaking the
//! modern protocol through the `kafka-protocol` codec: ApiVersions,
//! Metadata, ListOffsets, Fetch (record batches v2, all codecs), Produce
//! (idempotent), FindCoordinator, OffsetCommit/OffsetFetch, and
//! consumer-group membership.
//!
//! - `connection`: one broker connection, framing, version negotiation,
//!   TLS and SASL on every connection.
//! - `pool`: large response buffers, back when their last chunk is dropped.
//! - `tls`: rustls client settings, the handshake, the stream either way.
//! - `sasl`: credentials and the PLAIN and SCRAM tokens; `scram`: SCRAM
//!   itself (RFC 5802/7677) on `ring`.
//! - `client`: bootstrap, metadata cache, leader routing, ListOffsets, Fetch.
//! - `group`: coordinator lookup and group offsets.
//! - `epochs`: OffsetsForLeaderEpoch, where a leader epoch ends (KIP-320).
//! - `membership`: JoinGroup/SyncGroup/Heartbeat/LeaveGroup and the consumer
//!   protocol's subscription and assignment encodings.
//! - `assignor`: the range and sticky assignors the group leader runs.
//! - `records`: record-batch decoding and transaction filtering; `lz4`: the
//!   LZ4 frames of lz4 batches, straight into the caller's buffer.
//! - `batch`: record-batch encoding for Produce.
//! - `produce`: the idempotent producer (InitProducerId, sequences, acks=all).
//! - `producers`: DescribeProducers, the producer state a leader keeps
//!   (KIP-664).
//! - `error`: typed errors and the retry classification.
//!
//! A leaf: it takes its own options (`ClientConfig`) and the stop flag
//! (`Cancel`), owns no threads and keeps no state beyond one `Client`'s
//! caches; it never decides what to archive or commit.

pub(crate) mod assignor;
mod batch;
mod client;
mod connection;
mod epochs;
mod error;
mod group;
mod lz4;
mod membership;
mod pool;
mod produce;
mod producers;
pub mod records;
mod sasl;
mod scram;
mod tls;

// What the tests drive directly is public; the rest is for the crate.
pub use batch::BatchBuilder;
pub use client::{Client, ClientConfig, OffsetSpec, PartitionData, Position, Throttling};
pub use connection::ConnectionConfig;
pub use error::KafkaError;
pub use group::Committed;
pub use produce::{Producer, Sealed};
pub use sasl::Password;

pub(crate) use client::{EpochEnd, Layout};
pub(crate) use connection::Security;
pub(crate) use group::Generation;
pub(crate) use membership::{JoinConfig, Joined, Subscription, encode_subscription};
pub(crate) use sasl::{Mechanism, SaslConfig};
pub(crate) use tls::{PemFile, TlsConfig};
