//! One partition's file under construction: its position, the open Avro
//! file in the spool, and where rotation cuts it.
//!
//! Applies the pure rotation rule record by record and closes a file at an
//! idle flush, a gap or the end of a run. A closed file is fsynced before it
//! is handed on. Never talks to Kafka or the store, and never reads the clock
//! to decide a cut.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

use super::msg::Closed;
use super::spool::{Spool, SpoolFile};
use crate::config::FilesConfig;
use crate::format::avro::{self, AvroError, FileSpec};
use crate::format::names::{ObjectKey, TopicPartition};
use crate::format::record::Record;
use crate::format::rotation::Fill;

/// Why a partition's file cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The spool failed (disk full, permissions): the process stops.
    #[error("{what} {}: {source}", path.display())]
    Spool {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A record the archive cannot hold: this partition stops, others go on.
    #[error("cannot archive {tp} offset {offset}: {source}")]
    Record {
        tp: TopicPartition,
        offset: i64,
        #[source]
        source: AvroError,
    },
}

struct OpenFile {
    writer: avro::Writer<File>,
    file: SpoolFile,
    fill: Fill,
    last_offset: i64,
    opened: Instant,
}

/// The state of one partition in an encoder thread.
pub struct PartitionWriter {
    tp: TopicPartition,
    epoch: u64,
    /// First offset of the file being built (the next object's name).
    start: i64,
    /// Next offset to cover: after the last record or skipped batch seen.
    position: i64,
    /// Dropping it deletes the spool file: a file that is not finished is
    /// rebuilt from Kafka by whoever archives the partition next.
    open: Option<OpenFile>,
}

impl PartitionWriter {
    pub fn new(tp: TopicPartition, epoch: u64, position: i64) -> Self {
        PartitionWriter {
            tp,
            epoch,
            start: position,
            position,
            open: None,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn position(&self) -> i64 {
        self.position
    }

    /// Appends a record, closing files where the rotation rule says.
    pub fn record(
        &mut self,
        record: &Record,
        spool: &Spool,
        files: &FilesConfig,
        closed: &mut Vec<Closed>,
    ) -> Result<(), WriteError> {
        if record.offset < self.position {
            return Ok(());
        }
        if let Some(open) = &self.open
            && files.rules.close_before(&open.fill, record.timestamp)
        {
            let next = open.last_offset + 1;
            closed.push(self.close(next)?);
        }
        if self.open.is_none() {
            self.open = Some(self.create(spool, files)?);
        }
        let open = self.open.as_mut().expect("opened above");
        let size = open.writer.append(record).map_err(|e| match e {
            AvroError::Io(source) => WriteError::Spool {
                what: "cannot write spool file",
                path: open.file.path().to_path_buf(),
                source,
            },
            source => WriteError::Record {
                tp: self.tp.clone(),
                offset: record.offset,
                source,
            },
        })?;
        open.fill.add(size as u64, record.timestamp);
        open.last_offset = record.offset;
        self.position = record.offset + 1;
        if files.rules.close_after(&open.fill) {
            closed.push(self.close(record.offset + 1)?);
        }
        Ok(())
    }

    /// Offsets up to `next` are covered without records for the archive.
    pub fn skipped(&mut self, next: i64) {
        self.position = self.position.max(next);
    }

    /// Closes the file at the current position (idle flush, end of a run),
    /// even with no records in it, if it covers any offset.
    pub fn flush(
        &mut self,
        spool: &Spool,
        files: &FilesConfig,
    ) -> Result<Option<Closed>, WriteError> {
        if self.position <= self.start {
            return Ok(None);
        }
        if self.open.is_none() {
            self.open = Some(self.create(spool, files)?);
        }
        self.close(self.position).map(Some)
    }

    /// Closes what is open at the current position, then continues at
    /// `to`: records `[position, to)` are gone from the log (retention).
    pub fn jump(
        &mut self,
        to: i64,
        spool: &Spool,
        files: &FilesConfig,
    ) -> Result<Option<Closed>, WriteError> {
        let closed = self.flush(spool, files)?;
        self.start = to;
        self.position = to;
        Ok(closed)
    }

    fn create(&self, spool: &Spool, files: &FilesConfig) -> Result<OpenFile, WriteError> {
        let key = ObjectKey::new(&self.tp, self.start);
        let (file, out) = spool
            .create(&key, self.epoch)
            .map_err(|source| WriteError::Spool {
                what: "cannot create spool file for",
                path: key.path().into(),
                source,
            })?;
        let spec = FileSpec {
            topic: &self.tp.topic,
            partition: self.tp.partition,
            first_offset: self.start,
            codec: files.codec,
            block_bytes: files.block_bytes,
        };
        let writer = avro::Writer::new(out, &spec).map_err(|source| WriteError::Spool {
            what: "cannot write spool file",
            path: file.path().to_path_buf(),
            source,
        })?;
        Ok(OpenFile {
            writer,
            file,
            fill: Fill::default(),
            last_offset: self.start - 1,
            opened: Instant::now(),
        })
    }

    /// Finishes the open file with `next` as its end and fsyncs it.
    fn close(&mut self, next: i64) -> Result<Closed, WriteError> {
        let open = self.open.take().expect("close needs an open file");
        let failed = |source| WriteError::Spool {
            what: "cannot finish spool file",
            path: open.file.path().to_path_buf(),
            source,
        };
        let finished = open.writer.finish(next).map_err(|e| match e {
            AvroError::Io(source) => failed(source),
            other => failed(io::Error::other(other)),
        })?;
        finished.out.sync_all().map_err(failed)?;
        let key = ObjectKey::new(&self.tp, self.start);
        self.start = next;
        Ok(Closed {
            key,
            epoch: self.epoch,
            file: open.file,
            summary: finished.summary,
            size: finished.file_bytes,
            crc32c: finished.crc32c,
            opened: open.opened,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::format::avro::{Codec, Reader};
    use crate::format::record::{Header, TimestampType};
    use crate::format::rotation::Rules;

    fn files(max_records: u64) -> FilesConfig {
        FilesConfig {
            codec: Codec::Deflate { level: 1 },
            block_bytes: 1024,
            rules: Rules::new(1 << 30, max_records, Duration::from_secs(3600)),
            idle_flush: Duration::from_secs(600),
        }
    }

    fn record(offset: i64, value: &[u8]) -> Record<'_> {
        Record {
            offset,
            timestamp: 1_700_000_000_000 + offset,
            timestamp_type: TimestampType::Create,
            key: None,
            value: Some(value),
            headers: vec![],
        }
    }

    /// What the closed files hold: (first, next, offsets read back).
    fn read_back(closed: &[Closed]) -> Vec<(i64, i64, Vec<i64>)> {
        closed
            .iter()
            .map(|c| {
                let mut r = Reader::new(File::open(c.file.path()).unwrap()).unwrap();
                let mut offsets = Vec::new();
                while let Some(rec) = r.next_record().unwrap() {
                    offsets.push(rec.offset);
                }
                assert_eq!(r.header().summary, c.summary);
                (c.key.first, c.summary.next_offset, offsets)
            })
            .collect()
    }

    fn spool_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("t"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn files_are_cut_by_the_rule_and_tile_the_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let f = files(3);
        let mut w = PartitionWriter::new(TopicPartition::new("t", 0), 1, 10);
        let mut closed = Vec::new();
        for o in 10..17 {
            w.record(&record(o, b"v"), &spool, &f, &mut closed).unwrap();
        }
        // A record before the position (a batch fetched again) is ignored.
        w.record(&record(12, b"again"), &spool, &f, &mut closed)
            .unwrap();
        // A control batch covers 17..19 without records.
        w.skipped(19);
        closed.extend(w.flush(&spool, &f).unwrap());
        assert_eq!(
            read_back(&closed),
            vec![
                (10, 13, vec![10, 11, 12]),
                (13, 16, vec![13, 14, 15]),
                (16, 19, vec![16]),
            ]
        );
        assert_eq!(w.flush(&spool, &f).unwrap().map(|c| c.key), None);
        assert_eq!(w.position(), 19);
    }

    #[test]
    fn a_range_without_records_is_still_a_file_and_a_jump_starts_a_new_chain_link() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let f = files(0);
        let mut w = PartitionWriter::new(TopicPartition::new("t", 0), 1, 0);
        let mut closed = Vec::new();
        w.skipped(5);
        closed.extend(w.jump(50, &spool, &f).unwrap());
        w.record(&record(50, b"x"), &spool, &f, &mut closed)
            .unwrap();
        closed.extend(w.flush(&spool, &f).unwrap());
        assert_eq!(read_back(&closed), vec![(0, 5, vec![]), (50, 51, vec![50])]);
    }

    #[test]
    fn dropping_the_writer_or_a_closed_file_leaves_no_spool_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let f = files(2);
        let mut w = PartitionWriter::new(TopicPartition::new("t", 0), 1, 0);
        let mut closed = Vec::new();
        for o in 0..3 {
            w.record(&record(o, b"v"), &spool, &f, &mut closed).unwrap();
        }
        assert_eq!((closed.len(), spool_files(dir.path())), (1, 2));
        drop(w);
        assert_eq!(spool_files(dir.path()), 1, "the open file is abandoned");
        drop(closed);
        assert_eq!(spool_files(dir.path()), 0);
    }

    #[test]
    fn a_record_the_archive_cannot_hold_names_its_offset_and_the_file_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let f = files(0);
        let mut w = PartitionWriter::new(TopicPartition::new("t", 4), 1, 0);
        let mut closed = Vec::new();
        w.record(&record(0, b"v"), &spool, &f, &mut closed).unwrap();
        let mut bad = record(1, b"v");
        bad.headers = vec![Header {
            key: b"\xff",
            value: None,
        }];
        let e = w.record(&bad, &spool, &f, &mut closed).unwrap_err();
        assert!(matches!(e, WriteError::Record { offset: 1, .. }), "{e}");
        assert!(
            e.to_string().starts_with("cannot archive t/4 offset 1"),
            "{e}"
        );
        closed.extend(w.flush(&spool, &f).unwrap());
        assert_eq!(read_back(&closed), vec![(0, 1, vec![0])]);
    }

    #[test]
    fn a_spool_that_cannot_be_written_is_a_spool_error() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        // The topic folder is a file: nothing can be created in it.
        std::fs::write(dir.path().join("t"), b"not a folder").unwrap();
        let mut w = PartitionWriter::new(TopicPartition::new("t", 0), 1, 0);
        let e = w
            .record(&record(0, b"v"), &spool, &files(0), &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, WriteError::Spool { .. }), "{e}");
        assert!(
            e.to_string().contains("t/000000/00000000000000000000.avro"),
            "{e}"
        );
    }
}
