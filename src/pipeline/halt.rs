//! Why a partition stopped being archived: the data problems that stop one
//! partition and leave the others running (exit code 3 at the end of the
//! run). Each reason carries its offsets; the message names the partition,
//! the offsets and what to do.
//!
//! Plain data: deciding to halt is the caller's, recording it the registry's.

use std::fmt;

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
    /// A record batch that does not decode (CRC, codec, framing).
    Corrupt(RecordsError),
    /// A record the archive format cannot hold.
    Unarchivable { offset: i64, why: String },
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
            Halt::Corrupt(e) => write!(
                f,
                "corrupt record batch in {tp} at offset {}: {}",
                e.offset, e.reason
            ),
            Halt::Unarchivable { offset, why } => {
                write!(f, "cannot archive {tp} offset {offset}: {why}")
            }
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
