//! The broker-facing half of the Kafka client: bootstrap, the metadata cache
//! (brokers, topics, partition leaders), one connection per broker, and the
//! data requests ListOffsets and Fetch routed to each partition's leader.
//!
//! A `Client` belongs to one thread. It retries retriable failures of
//! one-shot requests (metadata, list offsets) up to `retry_timeout`, but a
//! fetch reports per-partition outcomes and leaves pacing to the caller; it
//! never hides OFFSET_OUT_OF_RANGE or a corrupt batch.
//!
//! - `base`: `Client` and `ClientConfig`, the connections, the retry loop.
//! - `metadata`: the metadata cache, topic lookups, leader routing.
//! - `offsets`: ListOffsets.
//! - `fetch`: Fetch, and the response-too-large fallback.
//!
//! Here: bootstrap (`connect`) and the parts' public names.

mod base;
mod fetch;
mod metadata;
mod offsets;

use super::error::KafkaError;
use crate::cancel::Cancel;

pub use self::base::{Client, ClientConfig, Throttling};
pub use self::fetch::{EpochEnd, PartitionData, Position};
pub use self::metadata::Layout;
pub use self::offsets::OffsetSpec;

impl Client {
    /// Connects to the first reachable bootstrap broker and reads the
    /// cluster's brokers; retries until `retry_timeout`.
    pub fn connect(config: ClientConfig, cancel: Cancel) -> Result<Self, KafkaError> {
        let mut client = Client::unconnected(config, cancel);
        client.retrying(|c| c.refresh(&[]).map(drop))?;
        Ok(client)
    }
}
