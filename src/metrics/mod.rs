//! Operations: what `kafka-store run` reports about itself. `series` (the
//! counters and gauges the pipeline updates), `text` (the Prometheus text
//! exposition format), `serve` (the one-thread `/metrics` responder),
//! `progress` (the progress line every minute).
//!
//! A leaf beside the stores: it knows partitions by name only and decides
//! nothing about the data; the pipeline only ever writes atomics and
//! short locks here, and no reader can stall it.

mod progress;
mod series;
mod serve;
mod text;

pub use progress::log_progress;
pub use series::{MAX_PARTITION_LABELS, Metrics};
pub use serve::Responder;
