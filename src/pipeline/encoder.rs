//! An encoder thread: turns fetched chunks of its partitions into Avro
//! files in the spool, and hands finished files to the partition's uploader.
//!
//! Decodes and verifies batches (CRC, codecs, aborted transactions) and
//! applies rotation through `PartitionWriter`. A batch that cannot be
//! archived stops its partition (logged with topic, partition and offset);
//! a spool failure (disk full) stops the process. Never talks to Kafka or
//! the store.

use std::collections::HashMap;

use crossbeam_channel::{Receiver, Sender};

use super::halt::Halt;
use super::msg::{Closed, ToEncoder};
use super::partition::{PartitionWriter, WriteError};
use super::registry::{Registry, worker_for};
use super::spool::Spool;
use super::stop::Stop;
use crate::config::FilesConfig;
use crate::format::names::TopicPartition;
use crate::kafka::PartitionData;
use crate::kafka::records::{self, Event, RecordsError, TxnFilter};

/// Decompression buffers larger than this are released after use.
const SCRATCH_KEEP: usize = 8 << 20;

/// What can go wrong while a chunk is written.
enum ChunkError {
    Records(RecordsError),
    Write(WriteError),
}

impl From<RecordsError> for ChunkError {
    fn from(e: RecordsError) -> Self {
        ChunkError::Records(e)
    }
}

impl From<WriteError> for ChunkError {
    fn from(e: WriteError) -> Self {
        ChunkError::Write(e)
    }
}

/// Everything an encoder thread uses besides its channels.
pub struct Encoder<'a> {
    pub spool: &'a Spool,
    pub files: &'a FilesConfig,
    pub registry: &'a Registry,
    pub stop: &'a Stop,
}

impl Encoder<'_> {
    pub fn run(
        self,
        rx: Receiver<ToEncoder>,
        uploaders: Vec<Sender<Closed>>,
    ) -> anyhow::Result<()> {
        let mut writers: HashMap<TopicPartition, PartitionWriter> = HashMap::new();
        let mut scratch = Vec::new();
        let mut closed = Vec::new();
        while let Some(msg) = self.stop.recv(&rx) {
            let (tp, result) = match msg {
                ToEncoder::Revoke { tp } => {
                    // Dropping the writer deletes its open file.
                    writers.remove(&tp);
                    continue;
                }
                ToEncoder::Assign {
                    tp,
                    epoch,
                    position,
                } => {
                    writers.insert(tp.clone(), PartitionWriter::new(tp, epoch, position));
                    continue;
                }
                ToEncoder::Chunk { tp, epoch, data } => {
                    let Some(w) = self.current(&mut writers, &tp, epoch) else {
                        continue;
                    };
                    let result = self.chunk(w, data, &mut scratch, &mut closed);
                    // An unusually large batch does not keep its buffer.
                    if scratch.capacity() > SCRATCH_KEEP {
                        scratch = Vec::new();
                    }
                    (tp, result)
                }
                ToEncoder::Flush { tp, epoch } => {
                    let Some(w) = self.current(&mut writers, &tp, epoch) else {
                        continue;
                    };
                    let result = w.flush(self.spool, self.files).map(|c| closed.extend(c));
                    (tp, result.map_err(ChunkError::Write))
                }
                ToEncoder::Finish { tp, epoch } => {
                    let Some(w) = self.current(&mut writers, &tp, epoch) else {
                        continue;
                    };
                    let result = w.flush(self.spool, self.files).map(|c| closed.extend(c));
                    // The partition is done for this run; nothing is open.
                    writers.remove(&tp);
                    (tp, result.map_err(ChunkError::Write))
                }
                ToEncoder::Jump { tp, epoch, to } => {
                    let Some(w) = self.current(&mut writers, &tp, epoch) else {
                        continue;
                    };
                    let result = w.jump(to, self.spool, self.files).map(|c| closed.extend(c));
                    (tp, result.map_err(ChunkError::Write))
                }
            };
            let halt = match result {
                Ok(()) => None,
                Err(ChunkError::Records(e)) => Some(Halt::Corrupt(e)),
                Err(ChunkError::Write(WriteError::Record { offset, source, .. })) => {
                    Some(Halt::Unarchivable {
                        offset,
                        why: source.to_string(),
                    })
                }
                // Files closed before the failure are dropped with `closed`
                // (and their spool files with them): rebuilt next time.
                Err(ChunkError::Write(e @ WriteError::Spool { .. })) => return Err(e.into()),
            };
            if let Some(why) = halt {
                self.registry.halt(&tp, why);
                // Keep what was good before the problem: close the file there.
                if let Some(mut w) = writers.remove(&tp) {
                    closed.extend(w.flush(self.spool, self.files)?);
                }
            }
            for c in closed.drain(..) {
                let i = worker_for(&c.key.tp(), uploaders.len());
                // Not sent (stopping): dropped, and its spool file with it.
                self.stop.send(&uploaders[i], c);
            }
        }
        // Open files of a stopped run are abandoned (dropping a writer deletes them).
        Ok(())
    }

    /// The writer of `tp` if `epoch` is still current (older work is dropped).
    fn current<'w>(
        &self,
        writers: &'w mut HashMap<TopicPartition, PartitionWriter>,
        tp: &TopicPartition,
        epoch: u64,
    ) -> Option<&'w mut PartitionWriter> {
        let w = writers.get_mut(tp)?;
        (w.epoch() == epoch && self.registry.epoch(tp) == Some(epoch)).then_some(w)
    }

    /// Decodes one fetched chunk into the partition's files.
    fn chunk(
        &self,
        w: &mut PartitionWriter,
        data: PartitionData,
        scratch: &mut Vec<u8>,
        closed: &mut Vec<Closed>,
    ) -> Result<(), ChunkError> {
        if data.fetch_offset != w.position() {
            log::debug!(
                "dropping a chunk at {} (position {})",
                data.fetch_offset,
                w.position()
            );
            return Ok(());
        }
        let mut filter = TxnFilter::new(data.aborted);
        records::visit(
            &data.records,
            w.position(),
            &mut filter,
            scratch,
            |event| -> Result<(), ChunkError> {
                match event {
                    Event::Record(r) => w.record(&r, self.spool, self.files, closed)?,
                    Event::Skipped { next } => w.skipped(next),
                }
                Ok(())
            },
        )
        .map(drop)
    }
}
