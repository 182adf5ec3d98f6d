//! One partition's file under construction: its position, the open Avro
//! file in the spool, and where rotation cuts it; and the [`Desk`] that the
//! partitions of one encoder thread share.
//!
//! Applies the pure rotation rule record by record and closes a file at an
//! idle flush, a gap or the end of a run. A closed file is written whole
//! before it is handed on (the uploader fsyncs it). An open file holds
//! counters only: its bytes are in the spool (or staged by the desk), its
//! compressor is the desk's. Never talks to Kafka or the store, and never
//! reads the clock to decide a cut.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::msg::Closed;
use super::spool::{Spool, SpoolFile};
use super::staging::{self, FileId, Staging};
use uuid::Uuid;

use crate::config::FilesConfig;
use crate::format::avro::{self, AvroError, FileSpec, Skipped, Workbench};
use crate::format::names::{ObjectKey, TopicPartition};
use crate::format::record::Record;
use crate::format::rotation::Fill;

/// Why a partition's file cannot go on: the spool failed (disk full,
/// permissions), and the process stops. Every record Kafka holds can be
/// archived, so nothing about the data stops a file here.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {cause}", path.display())]
pub struct WriteError {
    what: &'static str,
    path: PathBuf,
    cause: io::Error,
}

/// What the Avro writer reports is an I/O failure of the spool file (or
/// the writer unusable after one).
fn avro_io(e: AvroError) -> io::Error {
    match e {
        AvroError::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// What the partitions of one encoder thread share: the spool, the file
/// settings, one compressor with its block buffers, and the descriptors and
/// staged bytes of the files being written.
pub struct Desk<'a> {
    pub spool: &'a Spool,
    pub files: &'a FilesConfig,
    bench: Workbench,
    staging: Staging,
}

impl<'a> Desk<'a> {
    pub fn new(spool: &'a Spool, files: &'a FilesConfig) -> io::Result<Desk<'a>> {
        Ok(Desk {
            spool,
            files,
            bench: Workbench::new(files.codec)?,
            staging: Staging::new(staging::DESCRIPTORS, staging::budget(files.block_bytes)),
        })
    }
}

struct OpenFile {
    writer: avro::Writer,
    /// The spool file in the desk's staging.
    id: FileId,
    skipped: Option<Skipped>,
    file: SpoolFile,
    fill: Fill,
    last_offset: i64,
    /// The leader epoch of the batch of `last_offset`.
    last_epoch: Option<i32>,
    opened: Instant,
}

/// The state of one partition in an encoder thread.
pub struct PartitionWriter {
    tp: TopicPartition,
    /// The topic's id in Kafka, recorded in every file.
    topic_id: Option<Uuid>,
    /// The assignment epoch (not Kafka's leader epoch).
    epoch: u64,
    /// First offset of the file being built (the next object's name).
    start: i64,
    /// Next offset to cover: after the last record or skipped batch seen.
    position: i64,
    /// The leader epoch of the last batch covered.
    leader_epoch: Option<i32>,
    /// A file that is not finished is rebuilt from Kafka by whoever
    /// archives the partition next: [`PartitionWriter::abandon`] (or a drop)
    /// deletes its spool file.
    open: Option<OpenFile>,
}

impl PartitionWriter {
    pub fn new(tp: TopicPartition, topic_id: Option<Uuid>, epoch: u64, position: i64) -> Self {
        PartitionWriter {
            tp,
            topic_id,
            epoch,
            start: position,
            position,
            leader_epoch: None,
            open: None,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn position(&self) -> i64 {
        self.position
    }

    /// When the file being built was opened (None: none is open).
    pub fn opened(&self) -> Option<Instant> {
        self.open.as_ref().map(|o| o.opened)
    }

    /// Appends a record of a batch of leader epoch `leader_epoch`, closing
    /// files where the rotation rule says.
    pub fn record(
        &mut self,
        record: &Record,
        leader_epoch: i32,
        desk: &mut Desk,
        closed: &mut Vec<Closed>,
    ) -> Result<(), WriteError> {
        if record.offset < self.position {
            return Ok(());
        }
        if let Some(open) = &self.open
            && desk.files.rules.close_before(&open.fill, record.timestamp)
        {
            // The file ends after its last record, before what was skipped
            // since (a control batch, perhaps of a later leader epoch).
            let (next, last_epoch) = (open.last_offset + 1, open.last_epoch);
            closed.push(self.close(next, last_epoch, desk)?);
        }
        if self.open.is_none() {
            self.open = Some(self.create(desk, None)?);
        }
        let open = self.open.as_mut().expect("opened above");
        let path = open.file.path();
        let appended = open.writer.append(
            record,
            &mut desk.bench,
            &mut desk.staging.file(open.id, path),
        );
        let size = match appended {
            Ok(size) => size,
            Err(e) => {
                let e = write_error("cannot write spool file", path, avro_io(e));
                self.abandon(desk);
                return Err(e);
            }
        };
        open.fill.add(size as u64, record.timestamp);
        open.last_offset = record.offset;
        open.last_epoch = Some(leader_epoch);
        self.position = record.offset + 1;
        self.leader_epoch = Some(leader_epoch);
        if desk.files.rules.close_after(&open.fill) {
            closed.push(self.close(record.offset + 1, self.leader_epoch, desk)?);
        }
        Ok(())
    }

    /// Offsets up to `next` are covered without records for the archive
    /// (a control batch, an aborted transaction, compacted offsets).
    pub fn skipped(&mut self, next: i64, leader_epoch: i32) {
        if next > self.position {
            self.position = next;
            self.leader_epoch = Some(leader_epoch);
        }
    }

    /// Closes the file at the current position (idle flush, end of a run),
    /// even with no records in it, if it covers any offset.
    pub fn flush(&mut self, desk: &mut Desk) -> Result<Option<Closed>, WriteError> {
        if self.position <= self.start {
            return Ok(None);
        }
        if self.open.is_none() {
            self.open = Some(self.create(desk, None)?);
        }
        self.close(self.position, self.leader_epoch, desk).map(Some)
    }

    /// Closes what is open at the current position, then makes the range
    /// up to `to` an explicit skipped range (a file without records with
    /// `kafka.skipped = reason`) and continues at `to`.
    pub fn jump(
        &mut self,
        to: i64,
        reason: Skipped,
        desk: &mut Desk,
        closed: &mut Vec<Closed>,
    ) -> Result<(), WriteError> {
        closed.extend(self.flush(desk)?);
        if to <= self.position {
            return Ok(());
        }
        self.open = Some(self.create(desk, Some(reason))?);
        self.leader_epoch = None;
        self.position = to;
        closed.push(self.close(to, self.leader_epoch, desk)?);
        Ok(())
    }

    /// Gives up the open file, if any: its spool file is deleted and the
    /// desk forgets it.
    pub fn abandon(&mut self, desk: &mut Desk) {
        if let Some(open) = self.open.take() {
            desk.staging.forget(open.id);
        }
    }

    fn create(&self, desk: &mut Desk, skipped: Option<Skipped>) -> Result<OpenFile, WriteError> {
        let key = ObjectKey::new(&self.tp, self.start);
        let (file, out) = desk.spool.create(&key, self.epoch).map_err(|source| {
            write_error(
                "cannot create spool file for",
                Path::new(&key.path()),
                source,
            )
        })?;
        let id = desk.staging.adopt(out);
        let spec = FileSpec {
            topic: &self.tp.topic,
            partition: self.tp.partition,
            first_offset: self.start,
            topic_id: self.topic_id,
            skipped,
            codec: desk.files.codec,
            block_bytes: desk.files.block_bytes,
        };
        match avro::Writer::new(&spec, &mut desk.staging.file(id, file.path())) {
            Ok(writer) => Ok(OpenFile {
                writer,
                id,
                skipped,
                file,
                fill: Fill::default(),
                last_offset: self.start - 1,
                last_epoch: self.leader_epoch,
                opened: Instant::now(),
            }),
            Err(source) => {
                desk.staging.forget(id);
                Err(write_error("cannot write spool file", file.path(), source))
            }
        }
    }

    /// Finishes the open file with `next` as its end, `leader_epoch` the
    /// epoch of the last batch before it.
    fn close(
        &mut self,
        next: i64,
        leader_epoch: Option<i32>,
        desk: &mut Desk,
    ) -> Result<Closed, WriteError> {
        let open = self.open.take().expect("close needs an open file");
        let path = open.file.path();
        let finished = open
            .writer
            .finish(
                next,
                leader_epoch,
                &mut desk.bench,
                &mut desk.staging.file(open.id, path),
            )
            .map_err(avro_io)
            .and_then(|finished| desk.staging.finish(open.id).map(|()| finished));
        let finished = match finished {
            Ok(finished) => finished,
            Err(source) => {
                desk.staging.forget(open.id);
                return Err(write_error("cannot finish spool file", path, source));
            }
        };
        let key = ObjectKey::new(&self.tp, self.start);
        self.start = next;
        Ok(Closed {
            key,
            topic_id: self.topic_id,
            skipped: open.skipped,
            epoch: self.epoch,
            file: open.file,
            summary: finished.summary,
            size: finished.file_bytes,
            crc32c: finished.crc32c,
            opened: open.opened,
        })
    }
}

fn write_error(what: &'static str, path: &Path, cause: io::Error) -> WriteError {
    WriteError {
        what,
        path: path.to_path_buf(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
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
        let mut desk = Desk::new(&spool, &f).unwrap();
        let mut w = PartitionWriter::new(TopicPartition::new("t", 0), None, 1, 10);
        let mut closed = Vec::new();
        for o in 10..17 {
            w.record(&record(o, b"v"), 0, &mut desk, &mut closed)
                .unwrap();
        }
        // A record before the position (a batch fetched again) is ignored.
        w.record(&record(12, b"again"), 0, &mut desk, &mut closed)
            .unwrap();
        // A control batch covers 17..19 without records.
        w.skipped(19, 0);
        closed.extend(w.flush(&mut desk).unwrap());
        assert_eq!(
            read_back(&closed),
            vec![
                (10, 13, vec![10, 11, 12]),
                (13, 16, vec![13, 14, 15]),
                (16, 19, vec![16]),
            ]
        );
        assert_eq!(w.flush(&mut desk).unwrap().map(|c| c.key), None);
        assert_eq!(w.position(), 19);
    }

    #[test]
    fn a_range_without_records_is_still_a_file_and_a_jump_starts_a_new_chain_link() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let f = files(0);
        let mut desk = Desk::new(&spool, &f).unwrap();
        let mut w = PartitionWriter::new(TopicPartition::new("t", 0), None, 1, 0);
        let mut closed = Vec::new();
        w.skipped(5, 0);
        w.jump(50, Skipped::Retention, &mut desk, &mut closed)
            .unwrap();
        w.record(&record(50, b"x"), 0, &mut desk, &mut closed)
            .unwrap();
        closed.extend(w.flush(&mut desk).unwrap());
        assert_eq!(
            read_back(&closed),
            vec![(0, 5, vec![]), (5, 50, vec![]), (50, 51, vec![50])]
        );
        let skipped: Vec<_> = closed.iter().map(|c| c.skipped).collect();
        assert_eq!(skipped, vec![None, Some(Skipped::Retention), None]);
        let header = avro::read_header(&mut File::open(closed[1].file.path()).unwrap()).unwrap();
        assert_eq!(header.skipped, Some(Skipped::Retention));
    }

    #[test]
    fn abandoning_the_writer_or_dropping_a_closed_file_leaves_no_spool_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let f = files(2);
        let mut desk = Desk::new(&spool, &f).unwrap();
        let mut w = PartitionWriter::new(TopicPartition::new("t", 0), None, 1, 0);
        let mut closed = Vec::new();
        for o in 0..3 {
            w.record(&record(o, b"v"), 0, &mut desk, &mut closed)
                .unwrap();
        }
        assert_eq!((closed.len(), spool_files(dir.path())), (1, 2));
        w.abandon(&mut desk);
        assert_eq!(spool_files(dir.path()), 1, "the open file is abandoned");
        drop(closed);
        assert_eq!(spool_files(dir.path()), 0);
    }

    #[test]
    fn every_record_is_archived_and_files_record_their_history() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let f = files(0);
        let mut desk = Desk::new(&spool, &f).unwrap();
        let id = Uuid::from_u128(42);
        let mut w = PartitionWriter::new(TopicPartition::new("t", 4), Some(id), 1, 0);
        let mut closed = Vec::new();
        w.record(&record(0, b"v"), 3, &mut desk, &mut closed)
            .unwrap();
        let mut raw = record(1, b"v");
        raw.headers = vec![Header {
            key: b"\xff",
            value: None,
        }];
        w.record(&raw, 4, &mut desk, &mut closed).unwrap();
        // A control batch of a later epoch ends the file.
        w.skipped(3, 5);
        closed.extend(w.flush(&mut desk).unwrap());
        assert_eq!(read_back(&closed), vec![(0, 3, vec![0, 1])]);
        let header = avro::read_header(&mut File::open(closed[0].file.path()).unwrap()).unwrap();
        assert_eq!(header.topic_id, Some(id));
        assert_eq!(header.summary.last_epoch, Some(5));
        assert_eq!(closed[0].topic_id, Some(id));
    }

    #[test]
    fn a_file_cut_by_time_ends_in_the_epoch_of_its_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut f = files(0);
        f.rules = Rules::new(1 << 30, 0, Duration::from_secs(1));
        let mut desk = Desk::new(&spool, &f).unwrap();
        let mut w = PartitionWriter::new(TopicPartition::new("t", 0), None, 1, 0);
        let mut closed = Vec::new();
        w.record(&record(0, b"v"), 3, &mut desk, &mut closed)
            .unwrap();
        // A control batch of epoch 4, then a record a second later: the
        // file closes after offset 0, before the control batch.
        w.skipped(2, 4);
        let mut late = record(2, b"v");
        late.timestamp += 1000;
        w.record(&late, 4, &mut desk, &mut closed).unwrap();
        closed.extend(w.flush(&mut desk).unwrap());
        assert_eq!(read_back(&closed), vec![(0, 1, vec![0]), (1, 3, vec![2])]);
        let epochs: Vec<Option<i32>> = closed.iter().map(|c| c.summary.last_epoch).collect();
        assert_eq!(epochs, vec![Some(3), Some(4)]);
    }

    /// Partitions interleaved on one desk, more than its staging budget
    /// and descriptors hold, make the files each makes alone.
    #[test]
    fn many_partitions_on_one_desk_make_the_files_each_makes_alone() {
        let big = vec![7u8; 300 << 10];
        let f = FilesConfig {
            codec: Codec::Zstandard { level: 1 },
            ..files(3)
        };
        let build = |partitions: std::ops::Range<i32>, per_partition: bool| {
            let dir = tempfile::tempdir().unwrap();
            let spool = Spool::open(dir.path()).unwrap();
            let mut desk = Desk::new(&spool, &f).unwrap();
            let mut writers: Vec<_> = partitions
                .map(|p| PartitionWriter::new(TopicPartition::new("t", p), None, 1, 0))
                .collect();
            let mut files = Vec::new();
            let mut closed = Vec::new();
            let mut keep = |closed: &mut Vec<Closed>| {
                for c in closed.drain(..) {
                    files.push((c.key.clone(), std::fs::read(c.file.path()).unwrap()));
                }
            };
            let rounds: Vec<(usize, i64)> = if per_partition {
                (0..writers.len())
                    .flat_map(|w| (0..4).map(move |o| (w, o)))
                    .collect()
            } else {
                (0..4)
                    .flat_map(|o| (0..writers.len()).map(move |w| (w, o)))
                    .collect()
            };
            for (w, o) in rounds {
                let value: &[u8] = if o % 2 == 0 { &big } else { b"small" };
                writers[w]
                    .record(&record(o, value), 0, &mut desk, &mut closed)
                    .unwrap();
                keep(&mut closed);
            }
            for w in &mut writers {
                closed.extend(w.flush(&mut desk).unwrap());
                keep(&mut closed);
            }
            files.sort_by(|a, b| a.0.cmp(&b.0));
            files
        };
        let interleaved = build(0..40, false);
        assert_eq!(interleaved.len(), 80);
        assert_eq!(interleaved, build(0..40, true));
    }

    #[test]
    fn a_spool_that_cannot_be_written_is_a_spool_error() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        // The topic folder is a file: nothing can be created in it.
        std::fs::write(dir.path().join("t"), b"not a folder").unwrap();
        let f = files(0);
        let mut desk = Desk::new(&spool, &f).unwrap();
        let mut w = PartitionWriter::new(TopicPartition::new("t", 0), None, 1, 0);
        let e = w
            .record(&record(0, b"v"), 0, &mut desk, &mut Vec::new())
            .unwrap_err();
        assert!(
            e.to_string().contains("t/000000/00000000000000000000.avro"),
            "{e}"
        );
    }
}
