//! kafka-store: archives Kafka topics to object storage, every record exactly
//! once, in Avro container files named by their first offset.
//!
//! The layers, every import pointing down (`tests/layout.rs` keeps it so):
//! `commands` (one per subcommand) → `pipeline` (the threads of `run`) →
//! `config` (the validated file) → the leaves `kafka`, `store`, `index` (one
//! outside system each, taking their own options) → `format` (pure: records,
//! names, the Avro container, rotation, timestamps). `cancel` is the side of
//! the one stop flag the leaves watch; `exit` maps errors to exit codes.

#![forbid(unsafe_code)]

pub mod cancel;
pub mod cli;
pub mod commands;
pub mod exit;
pub mod format;
pub mod kafka;
pub mod logging;

mod config;
mod index;
mod metrics;
mod pipeline;
mod redact;
mod store;
