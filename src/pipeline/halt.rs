//! Why a partition stopped being archived: the data problems that stop one
//! partition and leave the others running (exit code 3 at the end of the
//! run). Each reason carries its offsets; the message names the partition,
//! the offsets and what to do.
//!
//! Plain data: deciding to halt is the caller's, recording it the registry's.

use std::fmt;

use uuid::Uuid;

use crate::format::names::TopicPartition;
use crate::kafka::KafkaError;
use crate::kafka::records::RecordsError;

/// The reason a partition stopped.
#[derive(Clone, Debug)]
pub enum Halt {
    /// No archive, no committed offset, and `kafka.start = "error"`.
    NoArchive,
    /// Records `[from, to)` were deleted from Kafka before they were
    /// archived, and `kafka.on_gap = "stop"`.
    Gap { from: i64, to: i64 },
    /// The archive ends past the end of the log: the log is not the one
    /// the archive was read from.
    BeyondLog { archive_end: i64, log_end: i64 },
    /// The topic was deleted and created again: its id is not the one the
    /// archive records.
    TopicReplaced { archived: Uuid, current: Uuid },
    /// The leader's log no longer holds the archived history (an unclean
    /// leader election truncated it): `epoch`, the last leader epoch the
    /// archive holds, ends at `ends_at` (None: unknown to the leader) before
    /// the archive's end.
    Diverged {
        epoch: i32,
        ends_at: Option<i64>,
        archive_end: i64,
    },
    /// An object at a name of the chain that is not a kafka-store file of
    /// this partition (foreign, unreadable, truncated).
    BadObject { object: String, why: String },
    /// A record batch that does not decode (CRC, codec, framing).
    Corrupt(RecordsError),
    /// Kafka refused to serve the partition for good.
    Kafka(KafkaError),
    /// The topic stayed missing from the cluster's metadata.
    TopicGone,
}

/// A halted partition and why: one line for the log and the exit.
#[derive(Clone, Debug)]
pub struct Halted {
    pub tp: TopicPartition,
    pub why: Halt,
}

impl fmt::Display for Halted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tp = &self.tp;
        match &self.why {
            Halt::NoArchive => write!(
                f,
                "{tp} has no archive and no committed offset, and kafka.start = \"error\""
            ),
            Halt::Gap { from, to } => write!(
                f,
                "records {from}..{to} of {tp} were deleted from kafka before they were archived; set kafka.on_gap = \"skip\" to archive on from offset {to}"
            ),
            Halt::BeyondLog {
                archive_end,
                log_end,
            } => write!(
                f,
                "the archive of {tp} ends at offset {archive_end} but the kafka log ends at {log_end}: was the topic deleted and re-created? archive it with a new store prefix"
            ),
            Halt::TopicReplaced { archived, current } => write!(
                f,
                "the archive of {tp} was read from topic id {archived} but kafka now has topic id {current}: the topic was deleted and created again; archive the new topic under a new store prefix"
            ),
            Halt::Diverged {
                epoch,
                ends_at: Some(at),
                archive_end,
            } => write!(
                f,
                "the kafka log of {tp} does not continue the archive: leader epoch {epoch} ends at offset {at} in the log but the archive holds it up to offset {archive_end} (an unclean leader election replaced offsets {at}..{archive_end}); nothing of the new history is archived"
            ),
            Halt::Diverged {
                epoch,
                ends_at: None,
                archive_end,
            } => write!(
                f,
                "the kafka log of {tp} does not continue the archive: the leader does not know leader epoch {epoch}, in which the archive ends at offset {archive_end} (an unclean leader election?); nothing of the new history is archived"
            ),
            Halt::BadObject { object, why } => write!(
                f,
                "{object} is in the archive chain of {tp} but is not a kafka-store file of it ({why}); move it away to go on"
            ),
            Halt::Corrupt(e) => write!(
                f,
                "corrupt record batch in {tp} at offset {}: {}",
                e.offset, e.reason
            ),
            Halt::Kafka(e) => write!(f, "{e}"),
            Halt::TopicGone => write!(
                f,
                "kafka topic {:?} does not exist any more (deleted?)",
                tp.topic
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_names_the_partition_and_its_offsets() {
        let tp = TopicPartition::new("t", 3);
        let table = [
            (
                Halt::NoArchive,
                "t/3 has no archive and no committed offset",
            ),
            (
                Halt::Gap { from: 40, to: 50 },
                "records 40..50 of t/3 were deleted from kafka before they were archived; set kafka.on_gap = \"skip\" to archive on from offset 50",
            ),
            (
                Halt::BeyondLog {
                    archive_end: 40,
                    log_end: 10,
                },
                "the archive of t/3 ends at offset 40 but the kafka log ends at 10",
            ),
            (
                Halt::Corrupt(RecordsError {
                    offset: 7,
                    reason: "crc32c mismatch".into(),
                }),
                "corrupt record batch in t/3 at offset 7: crc32c mismatch",
            ),
            (
                Halt::TopicGone,
                "kafka topic \"t\" does not exist any more (deleted?)",
            ),
        ];
        for (why, want) in table {
            let line = Halted {
                tp: tp.clone(),
                why,
            }
            .to_string();
            assert!(line.starts_with(want), "{line}");
            assert!(!line.contains('\n'));
        }
    }
}
