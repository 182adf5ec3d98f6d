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

use crate::kafka::TopicPartition;
use crate::kafka::records::{self, Event, RecordsError, TxnFilter};
use crate::partition::{Closed, FileSettings, PartitionWriter, WriteError};
use crate::pipeline::{Registry, Stop, ToEncoder, worker_for};
use crate::spool::Spool;

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

pub fn run(
    rx: Receiver<ToEncoder>,
    uploaders: Vec<Sender<Closed>>,
    spool: &Spool,
    settings: &FileSettings,
    registry: &Registry,
    stop: &Stop,
) -> anyhow::Result<()> {
    let mut writers: HashMap<TopicPartition, PartitionWriter> = HashMap::new();
    let mut scratch = Vec::new();
    let mut closed = Vec::new();
    while let Some(msg) = stop.recv(&rx) {
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
                let Some(w) = current(&mut writers, registry, &tp, epoch) else {
                    continue;
                };
                if data.fetch_offset != w.position() {
                    log::debug!(
                        "{tp}: dropping a chunk at {} (position {})",
                        data.fetch_offset,
                        w.position()
                    );
                    continue;
                }
                let mut filter = TxnFilter::new(data.aborted);
                let result = records::visit(
                    &data.records,
                    w.position(),
                    &mut filter,
                    &mut scratch,
                    |event| {
                        match event {
                            Event::Record(r) => w.record(&r, spool, settings, &mut closed),
                            Event::Skipped { next } => {
                                w.skipped(next);
                                Ok(())
                            }
                        }
                        .map_err(ChunkError::Write)
                    },
                );
                // An unusually large batch does not keep its buffer.
                if scratch.capacity() > SCRATCH_KEEP {
                    scratch = Vec::new();
                }
                (tp, result.map(drop))
            }
            ToEncoder::Flush { tp, epoch, last } => {
                let Some(w) = current(&mut writers, registry, &tp, epoch) else {
                    continue;
                };
                let result = w.flush(spool, settings).map(|c| closed.extend(c));
                if last {
                    // The partition is done for this run; nothing is open.
                    writers.remove(&tp);
                }
                (tp, result.map_err(ChunkError::Write))
            }
            ToEncoder::Jump { tp, epoch, to } => {
                let Some(w) = current(&mut writers, registry, &tp, epoch) else {
                    continue;
                };
                let result = w.jump(to, spool, settings).map(|c| closed.extend(c));
                (tp, result.map_err(ChunkError::Write))
            }
        };
        let halted = match result {
            Ok(()) => None,
            Err(ChunkError::Records(e)) => Some(format!(
                "corrupt record batch in {tp} at offset {}: {}",
                e.offset, e.reason
            )),
            Err(ChunkError::Write(WriteError::Data(why))) => Some(why),
            Err(ChunkError::Write(WriteError::Io(why))) => {
                for c in closed.drain(..) {
                    Spool::remove(&c.path);
                }
                anyhow::bail!(why);
            }
        };
        if let Some(why) = halted {
            registry.halt(&tp, why);
            // Keep what was good before the problem: close the file there.
            if let Some(mut w) = writers.remove(&tp) {
                match w.flush(spool, settings) {
                    Ok(c) => closed.extend(c),
                    Err(e) => anyhow::bail!("{e}"),
                }
            }
        }
        for c in closed.drain(..) {
            let i = worker_for(&c.key.tp(), uploaders.len());
            let path = c.path.clone();
            if !stop.send(&uploaders[i], c) {
                Spool::remove(&path);
            }
        }
    }
    // Open files of a stopped run are abandoned (dropping a writer deletes them).
    Ok(())
}

/// The writer of `tp` if `epoch` is still current (older work is dropped).
fn current<'w>(
    writers: &'w mut HashMap<TopicPartition, PartitionWriter>,
    registry: &Registry,
    tp: &TopicPartition,
    epoch: u64,
) -> Option<&'w mut PartitionWriter> {
    let w = writers.get_mut(tp)?;
    (w.epoch() == epoch && registry.epoch(tp) == Some(epoch)).then_some(w)
}
