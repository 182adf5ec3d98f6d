//! `[metrics]`: the optional Prometheus `/metrics` responder (without the
//! section nothing listens).

use std::net::SocketAddr;

use serde::Deserialize;

use super::value::{ConfigError, invalid};
use crate::metrics::MAX_PARTITION_LABELS;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where `/metrics` is served (port 0: any free port, logged).
    pub listen: SocketAddr,
    /// Partitions with series of their own; the others count in the totals only.
    pub max_partition_labels: usize,
}

/// `[metrics]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    listen: String,
    max_partition_labels: Option<usize>,
}

/// Validates `[metrics]`.
pub fn validate(m: RawMetrics) -> Result<MetricsConfig, ConfigError> {
    let listen = m.listen.parse().map_err(|_| {
        invalid(
            "metrics.listen",
            format!(
                "{:?} must be an IP address and port, e.g. \"127.0.0.1:9100\"",
                m.listen
            ),
        )
    })?;
    Ok(MetricsConfig {
        listen,
        max_partition_labels: m.max_partition_labels.unwrap_or(MAX_PARTITION_LABELS),
    })
}
