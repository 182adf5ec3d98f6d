//! kafka-store: archives Kafka topics to object storage, every record exactly
//! once, in Avro container files named by their first offset.
//!
//! The pipeline, in the order data flows: `config` → `kafka` (client) →
//! `fetcher` → `encoder` / `partition` (with `rotation`, `avro`) → `spool` →
//! `store` → `commit` (store put, then Kafka offsets). `resume` finds where
//! each partition starts; `pipeline` wires the threads; `ls` and `cat` read
//! the archive.

pub mod assignor;
pub mod avro;
pub mod cat;
pub mod cli;
pub mod commit;
pub mod config;
pub mod encoder;
pub mod fetcher;
pub mod index;
pub mod interrupt;
pub mod kafka;
pub mod locate;
pub mod logging;
pub mod ls;
pub mod membership;
pub mod naming;
pub mod partition;
pub mod pipeline;
pub mod record;
pub mod resume;
pub mod rotation;
pub mod spool;
pub mod status;
pub mod store;
pub mod timestamp;
