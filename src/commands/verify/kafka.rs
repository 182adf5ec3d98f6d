//! `--against-kafka`: the Kafka side of a verify. One read-only client, a
//! partition's records from Kafka in offset order (read_committed, up to
//! the last stable offset, from the log start or the archive's first
//! offset), each archived record compared with Kafka's at its offset, and
//! the records Kafka holds that the archive lacks gathered into ranges.
//! Records Kafka no longer has are fine.
//!
//! Never writes to Kafka: no group, no offsets, no produce. Holds one fetch
//! response of a partition, never its records.

use std::collections::VecDeque;

use uuid::Uuid;

use super::report::{Check, Finding, Report, Span};
use crate::cancel::Cancel;
use crate::config::Config;
use crate::format::names::TopicPartition;
use crate::format::record::OwnedRecord;
use crate::kafka::records::{self, Event, RecordsError, TxnFilter};
use crate::kafka::{Client, KafkaError, OffsetSpec, Position};
use crate::pipeline::kafka_context;

/// The Kafka side of `--against-kafka`: one client, read-only.
pub(super) struct Kafka {
    client: Client,
    brokers: Vec<String>,
    scratch: Vec<u8>,
}

/// Whether a partition's records can be compared with Kafka.
pub(super) enum Against<'k> {
    Feed(Feed<'k>),
    /// Why not (a finding without its object yet).
    Not(Finding),
}

impl Kafka {
    pub(super) fn connect(config: &Config, cancel: Cancel) -> anyhow::Result<Kafka> {
        let brokers = config.kafka.client.brokers.clone();
        let client = Client::connect(config.kafka.client.clone(), cancel)
            .map_err(|e| kafka_context(e, &brokers))?;
        Ok(Kafka {
            client,
            brokers,
            scratch: Vec::new(),
        })
    }

    /// The log's start and last stable offset; None when the topic is gone.
    fn extent(&mut self, tp: &TopicPartition) -> anyhow::Result<Option<(i64, i64)>> {
        let tps = [tp.clone()];
        let mut offsets = [0i64; 2];
        for (at, spec) in [OffsetSpec::Earliest, OffsetSpec::Latest]
            .into_iter()
            .enumerate()
        {
            let found = match self.client.list_offsets(&tps, spec) {
                Ok(found) => found,
                Err(KafkaError::UnknownTopic { .. }) => return Ok(None),
                Err(e) => {
                    return Err(kafka_context(e, &self.brokers)
                        .context(format!("cannot list the offsets of {tp}")));
                }
            };
            offsets[at] = found
                .get(tp)
                .copied()
                .ok_or_else(|| anyhow::anyhow!("kafka gave no offsets for {tp}"))?;
        }
        Ok(Some((offsets[0], offsets[1])))
    }

    /// What Kafka holds of the partition from the archive's first offset
    /// (or the log start) to the archive's end (or the last stable offset).
    pub(super) fn feed(
        &mut self,
        tp: &TopicPartition,
        first: i64,
        end: i64,
        archived_id: Option<Uuid>,
    ) -> anyhow::Result<Against<'_>> {
        let span = Span::range(first, end);
        let Some((log_start, log_end)) = self.extent(tp)? else {
            let why = format!(
                "kafka no longer has topic {:?}: records not compared",
                tp.topic
            );
            return Ok(Against::Not(Finding::new(Check::Kafka, "", span, why)));
        };
        if let (Some(archived), Some(current)) = (archived_id, self.client.topic_id(&tp.topic))
            && archived != current
        {
            let why = format!(
                "kafka's topic now has id {current}, the archive was read from {archived}: records not compared"
            );
            return Ok(Against::Not(Finding::new(
                Check::HistoryBreak,
                "",
                span,
                why,
            )));
        }
        Ok(Against::Feed(Feed {
            tp: tp.clone(),
            position: first.max(log_start),
            end: end.min(log_end),
            buffered: VecDeque::new(),
            kafka: self,
        }))
    }
}

/// Kafka's records of one partition in offset order, one fetch response
/// at a time.
pub(super) struct Feed<'k> {
    kafka: &'k mut Kafka,
    tp: TopicPartition,
    /// Where the next fetch starts.
    position: i64,
    /// Records at or after this are not compared.
    end: i64,
    buffered: VecDeque<OwnedRecord>,
}

impl Feed<'_> {
    /// The offset of Kafka's next record, fetching when needed.
    fn peek(&mut self) -> anyhow::Result<Option<i64>> {
        while self.buffered.is_empty() && self.position < self.end {
            self.fetch()?;
        }
        Ok(self.buffered.front().map(|r| r.offset))
    }

    /// Compares an archived record with Kafka's at its offset; Kafka's
    /// records before it are missing from the archive.
    pub(super) fn archived(
        &mut self,
        url: &str,
        r: &OwnedRecord,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        self.missing_below(url, r.offset, report)?;
        if self.peek()? != Some(r.offset) {
            return Ok(()); // gone from Kafka (retention, compaction) or already passed
        }
        let Some(kafka) = self.buffered.pop_front() else {
            return Ok(());
        };
        let fields = differences(r, &kafka);
        if fields.is_empty() {
            return Ok(());
        }
        let why = format!(
            "the archived record's {} differ(s) from kafka's",
            fields.join(", ")
        );
        report.finding(
            &self.tp,
            Finding::new(Check::Differs, url, Span::at(r.offset), why),
        )?;
        Ok(())
    }

    /// Kafka's records before `offset` not compared yet are missing from
    /// the archive: one finding for their range.
    pub(super) fn missing_below(
        &mut self,
        url: &str,
        offset: i64,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let mut run = Run::default();
        while let Some(o) = self.peek()?.filter(|o| *o < offset) {
            run.add(o);
            self.buffered.pop_front();
        }
        if let Some((span, count)) = run.span() {
            let why = format!("kafka holds {count} record(s) here that the archive does not have");
            report.finding(&self.tp, Finding::new(Check::Missing, url, span, why))?;
        }
        Ok(())
    }

    /// Drops Kafka's records before `offset` without comparing them (an
    /// explicit skipped range, an object that cannot be read).
    pub(super) fn discard_below(&mut self, offset: i64) {
        self.buffered.retain(|r| r.offset >= offset);
        if self.buffered.is_empty() {
            self.position = self.position.max(offset);
        }
    }

    /// One fetch at the position (read_committed, like the archiver).
    fn fetch(&mut self) -> anyhow::Result<()> {
        let at = Position {
            offset: self.position,
            last_epoch: None,
        };
        let data = match self.kafka.client.fetch_one(&self.tp, at) {
            Ok(data) => data,
            Err(KafkaError::OffsetOutOfRange { .. }) => return self.out_of_range(),
            Err(e) => {
                return Err(kafka_context(e, &self.kafka.brokers).context(format!(
                    "cannot fetch {} at offset {}",
                    self.tp, self.position
                )));
            }
        };
        let mut filter = TxnFilter::new(data.aborted);
        let (end, buffered) = (self.end, &mut self.buffered);
        let next = records::visit(
            &data.records,
            self.position,
            &mut filter,
            &mut self.kafka.scratch,
            |event| -> Result<(), RecordsError> {
                if let Event::Record { record, .. } = event
                    && record.offset < end
                {
                    buffered.push_back(record.to_owned_record());
                }
                Ok(())
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot decode what kafka holds of {}: {e}", self.tp))?;
        if next > self.position {
            self.position = next;
            Ok(())
        } else if data.last_stable_offset <= self.position {
            self.end = self.position; // the log ends here now
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "kafka answered a fetch of {} at offset {} with no complete record batch",
                self.tp,
                self.position
            ))
        }
    }

    /// The position left the log: retention moved its start past it, or
    /// the log now ends before it.
    fn out_of_range(&mut self) -> anyhow::Result<()> {
        match self.kafka.extent(&self.tp)? {
            Some((start, _)) if start > self.position => {
                self.position = start;
                Ok(())
            }
            Some((_, end)) if end > self.position => Err(anyhow::anyhow!(
                "kafka says offset {} of {} is out of range, inside its log",
                self.position,
                self.tp
            )),
            _ => {
                self.end = self.position;
                Ok(())
            }
        }
    }
}

/// The fields in which an archived record differs from Kafka's.
fn differences(archived: &OwnedRecord, kafka: &OwnedRecord) -> Vec<&'static str> {
    let (a, k) = (archived, kafka);
    [
        ("offset", a.offset == k.offset),
        ("timestamp", a.timestamp == k.timestamp),
        ("timestamp type", a.timestamp_type == k.timestamp_type),
        ("key", a.key == k.key),
        ("value", a.value == k.value),
        ("headers", a.headers == k.headers),
    ]
    .into_iter()
    .filter(|(_, same)| !same)
    .map(|(field, _)| field)
    .collect()
}

/// Kafka's records that the archive lacks, gathered into one range.
#[derive(Default)]
struct Run {
    first: Option<i64>,
    last: i64,
    count: u64,
}

impl Run {
    fn add(&mut self, offset: i64) {
        self.first.get_or_insert(offset);
        self.last = offset;
        self.count += 1;
    }

    /// `[first, last + 1)` and how many records it holds.
    fn span(&self) -> Option<(Span, u64)> {
        Some((Span::range(self.first?, self.last + 1), self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::TimestampType;

    fn record(offset: i64) -> OwnedRecord {
        OwnedRecord {
            offset,
            timestamp: 1_000,
            timestamp_type: TimestampType::Create,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![(b"h".to_vec(), None)],
        }
    }

    #[test]
    fn differences_name_each_differing_field() {
        let base = record(7);
        let table: Vec<(OwnedRecord, Vec<&str>)> = vec![
            (base.clone(), vec![]),
            (
                OwnedRecord {
                    value: Some(b"w".to_vec()),
                    ..base.clone()
                },
                vec!["value"],
            ),
            (
                OwnedRecord {
                    key: None,
                    timestamp: 1_001,
                    ..base.clone()
                },
                vec!["timestamp", "key"],
            ),
            (
                OwnedRecord {
                    timestamp_type: TimestampType::LogAppend,
                    headers: vec![],
                    ..base.clone()
                },
                vec!["timestamp type", "headers"],
            ),
            (
                OwnedRecord {
                    headers: vec![(b"h".to_vec(), Some(vec![]))],
                    ..base.clone()
                },
                vec!["headers"],
            ),
        ];
        for (kafka, want) in table {
            assert_eq!(differences(&base, &kafka), want, "{kafka:?}");
        }
    }

    #[test]
    fn a_run_of_missing_records_is_one_range() {
        type Case = (Vec<i64>, Option<(Span, u64)>);
        let table: Vec<Case> = vec![
            (vec![], None),
            (vec![5], Some((Span::at(5), 1))),
            (vec![5, 6, 7], Some((Span::range(5, 8), 3))),
            // Offsets without records (control batches) inside the run.
            (vec![5, 9, 12], Some((Span::range(5, 13), 3))),
        ];
        for (offsets, want) in table {
            let mut run = Run::default();
            for o in &offsets {
                run.add(*o);
            }
            assert_eq!(run.span(), want, "{offsets:?}");
        }
    }
}
