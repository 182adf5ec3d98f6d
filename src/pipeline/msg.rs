//! Every message that crosses a channel of the pipeline, one enum or struct
//! per channel:
//!
//! ```text
//!  group ──Assignment──▶ fetcher ──ToEncoder──▶ encoder ──Closed──▶ uploader ──Stored──▶ committer
//!                           ▲  └───────────────── Stored (a start) ──────────────────────────▲
//!                           └──────────────── Seek ◀──── uploader
//! ```
//!
//! Plain data: no behaviour beyond what a message is.

use std::collections::BTreeSet;
use std::time::Instant;

use uuid::Uuid;

use super::resume::ChainPos;
use super::spool::SpoolFile;
use crate::format::avro::{Skipped, Summary};
use crate::format::names::{ObjectKey, TopicPartition};
use crate::index::Row;
use crate::kafka::PartitionData;

/// The partitions the group gave this process in a generation (group →
/// fetcher).
pub struct Assignment {
    pub partitions: BTreeSet<TopicPartition>,
}

/// What the fetcher tells an encoder about one of its partitions. Every
/// message but `Revoke` carries the partition's epoch; an encoder drops
/// messages of an older epoch.
pub enum ToEncoder {
    /// Start (or restart) a partition at `position`, dropping any open
    /// file; its files record `topic_id`.
    Assign {
        tp: TopicPartition,
        topic_id: Option<Uuid>,
        epoch: u64,
        position: i64,
    },
    /// Fetched batches starting at `data.fetch_offset`.
    Chunk {
        tp: TopicPartition,
        epoch: u64,
        data: PartitionData,
    },
    /// Close the open file at the current position: the partition has been
    /// idle at the log end for `files.idle_flush`.
    Flush { tp: TopicPartition, epoch: u64 },
    /// Close the open file at the current position: the partition is done
    /// for this run (the end of `--until-caught-up`, or it halted).
    Finish { tp: TopicPartition, epoch: u64 },
    /// Offsets up to `to` are skipped on purpose (`start = "latest"`, or
    /// records deleted before they were archived with `on_gap = "skip"`):
    /// close at the current position, commit the skipped range as a file
    /// of its own, and go on at `to`.
    Jump {
        tp: TopicPartition,
        epoch: u64,
        to: i64,
        reason: Skipped,
    },
    /// The partition moved to another process: drop its open file.
    Revoke { tp: TopicPartition },
}

/// A finished file in the spool, written whole, ready for the store
/// (encoder → uploader; the uploader fsyncs it first). Dropping it removes
/// the spool file.
#[derive(Debug)]
pub struct Closed {
    pub key: ObjectKey,
    pub topic_id: Option<Uuid>,
    /// Set for a file that makes a skipped range explicit.
    pub skipped: Option<Skipped>,
    /// The assignment epoch it was built in (stale epochs are dropped).
    pub epoch: u64,
    pub file: SpoolFile,
    pub summary: Summary,
    pub size: u64,
    pub crc32c: u32,
    /// When its first byte was written (for the log line).
    pub opened: Instant,
}

/// Sent back to the fetcher when the store holds a different file than
/// ours (uploader → fetcher): continue the partition at `position` in the
/// new `epoch`, after a batch of leader epoch `last_epoch` (what the
/// adopted chain records: the next fetch names it, and the broker checks
/// that the log continues it).
pub struct Seek {
    pub tp: TopicPartition,
    pub epoch: u64,
    pub position: i64,
    pub last_epoch: Option<i32>,
}

/// A position the store now covers (fetcher or uploader → committer).
pub enum Stored {
    /// The partition starts at `at` in this process (recorded in the group;
    /// see `resume`).
    Start { tp: TopicPartition, at: ChainPos },
    /// This process stored the object `row` describes.
    Object { tp: TopicPartition, row: Row },
    /// Another builder's objects were adopted: the chain now ends at `at`.
    Adopted { tp: TopicPartition, at: ChainPos },
}
