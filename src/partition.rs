//! One partition's file under construction: its position, the open Avro
//! file in the spool, and where rotation cuts it.
//!
//! Applies the pure rotation rule record by record and closes a file at an
//! idle flush, a gap or the end of a run. A closed file is fsynced before it
//! is handed on. Never talks to Kafka or the store, and never reads the clock
//! to decide a cut.

use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

use crate::avro::{self, Codec, FileSpec, Summary};
use crate::kafka::TopicPartition;
use crate::naming::ObjectKey;
use crate::record::Record;
use crate::rotation::{Fill, Rules};
use crate::spool::Spool;

/// How files are written; the same for every partition.
#[derive(Clone, Copy, Debug)]
pub struct FileSettings {
    pub codec: Codec,
    pub block_bytes: usize,
    pub rules: Rules,
}

/// A finished file in the spool, ready for the store.
#[derive(Debug)]
pub struct Closed {
    pub key: ObjectKey,
    /// The assignment epoch it was built in (stale epochs are dropped).
    pub epoch: u64,
    pub path: PathBuf,
    pub summary: Summary,
    pub size: u64,
    pub crc32c: u32,
    /// When its first byte was written (for the log line).
    pub opened: Instant,
}

/// Why a partition cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The data cannot be archived as it is (corrupt batch, header key not
    /// UTF-8): this partition stops, others go on.
    #[error("{0}")]
    Data(String),
    /// The spool failed (disk full, permissions): the process stops.
    #[error("{0}")]
    Io(String),
}

struct OpenFile {
    writer: avro::Writer<File>,
    path: PathBuf,
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
        settings: &FileSettings,
        closed: &mut Vec<Closed>,
    ) -> Result<(), WriteError> {
        if record.offset < self.position {
            return Ok(());
        }
        if let Some(open) = &self.open
            && settings.rules.close_before(&open.fill, record.timestamp)
        {
            let next = open.last_offset + 1;
            closed.push(self.close(next)?);
        }
        if self.open.is_none() {
            self.open = Some(self.create(spool, settings)?);
        }
        let open = self.open.as_mut().expect("opened above");
        let size = open.writer.append(record).map_err(|e| match e {
            avro::AvroError::Io(e) => WriteError::Io(format!(
                "cannot write spool file {}: {e}",
                open.path.display()
            )),
            other => WriteError::Data(format!(
                "cannot archive {} offset {}: {other}",
                self.tp, record.offset
            )),
        })?;
        open.fill.add(size as u64, record.timestamp);
        open.last_offset = record.offset;
        self.position = record.offset + 1;
        if settings.rules.close_after(&open.fill) {
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
        settings: &FileSettings,
    ) -> Result<Option<Closed>, WriteError> {
        if self.position <= self.start {
            return Ok(None);
        }
        if self.open.is_none() {
            self.open = Some(self.create(spool, settings)?);
        }
        self.close(self.position).map(Some)
    }

    /// Closes what is open at the current position, then continues at
    /// `to`: records `[position, to)` are gone from the log (retention).
    pub fn jump(
        &mut self,
        to: i64,
        spool: &Spool,
        settings: &FileSettings,
    ) -> Result<Option<Closed>, WriteError> {
        let closed = self.flush(spool, settings)?;
        self.start = to;
        self.position = to;
        Ok(closed)
    }

    /// Deletes the open file (revocation, shutdown, error): it is rebuilt
    /// from Kafka by whoever archives the partition next.
    pub fn abandon(&mut self) {
        if let Some(open) = self.open.take() {
            drop(open.writer);
            Spool::remove(&open.path);
        }
    }

    fn create(&self, spool: &Spool, settings: &FileSettings) -> Result<OpenFile, WriteError> {
        let key = ObjectKey::new(&self.tp, self.start);
        let io =
            |e: std::io::Error| WriteError::Io(format!("cannot create spool file for {key}: {e}"));
        let (path, file) = spool.create(&key, self.epoch).map_err(io)?;
        let spec = FileSpec {
            topic: &self.tp.topic,
            partition: self.tp.partition,
            first_offset: self.start,
            codec: settings.codec,
            block_bytes: settings.block_bytes,
        };
        let writer = avro::Writer::new(file, &spec).map_err(io)?;
        Ok(OpenFile {
            writer,
            path,
            fill: Fill::default(),
            last_offset: self.start - 1,
            opened: Instant::now(),
        })
    }

    /// Finishes the open file with `next` as its end and fsyncs it.
    fn close(&mut self, next: i64) -> Result<Closed, WriteError> {
        let open = self.open.take().expect("close needs an open file");
        let path = open.path.clone();
        let io = |e: &dyn std::fmt::Display| {
            Spool::remove(&path);
            WriteError::Io(format!("cannot finish spool file {}: {e}", path.display()))
        };
        let finished = open.writer.finish(next).map_err(|e| io(&e))?;
        finished.out.sync_all().map_err(|e| io(&e))?;
        let key = ObjectKey::new(&self.tp, self.start);
        self.start = next;
        Ok(Closed {
            key,
            epoch: self.epoch,
            path: open.path,
            summary: finished.summary,
            size: finished.file_bytes,
            crc32c: finished.crc32c,
            opened: open.opened,
        })
    }
}

impl Drop for PartitionWriter {
    fn drop(&mut self) {
        self.abandon();
    }
}
