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
use super::partition::{Desk, PartitionWriter, WriteError};
use super::registry::{Registry, worker_for};
use super::spool::Spool;
use super::stop::Stop;
use crate::config::FilesConfig;
use crate::format::names::TopicPartition;
use crate::kafka::PartitionData;
use crate::kafka::records::{self, Event, RecordsError, TxnFilter};

/// Decompression buffers larger than this are released after use.
const SCRATCH_KEEP: usize = 8 << 20;

/// The writers of an encoder's partitions. Boxed: with thousands of
/// partitions the table holds pointers, not writers, so its spare buckets
/// and the copy made while it grows stay small.
type Writers = HashMap<TopicPartition, Box<PartitionWriter>>;

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
        let mut desk = Desk::new(self.spool, self.files)?;
        let mut writers: Writers = HashMap::new();
        let mut scratch = Vec::new();
        let mut closed = Vec::new();
        while let Some(msg) = self.stop.recv(&rx) {
            let (tp, result) = match msg {
                ToEncoder::Revoke { tp } => {
                    if let Some(mut w) = writers.remove(&tp) {
                        w.abandon(&mut desk);
                    }
                    self.registry.metrics.open_file(&tp, None);
                    continue;
                }
                ToEncoder::Assign {
                    tp,
                    topic_id,
                    epoch,
                    position,
                } => {
                    let w = PartitionWriter::new(tp.clone(), topic_id, epoch, position);
                    writers.insert(tp.clone(), Box::new(w));
                    self.registry.metrics.open_file(&tp, None);
                    continue;
                }
                ToEncoder::Chunk { tp, epoch, data } => {
                    let Some(w) = self.current(&mut writers, &tp, epoch) else {
                        continue;
                    };
                    let result = self.chunk(w, data, &mut desk, &mut scratch, &mut closed);
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
                    let result = w.flush(&mut desk).map(|c| closed.extend(c));
                    (tp, result.map_err(ChunkError::Write))
                }
                ToEncoder::Finish { tp, epoch } => {
                    let Some(w) = self.current(&mut writers, &tp, epoch) else {
                        continue;
                    };
                    let result = w.flush(&mut desk).map(|c| closed.extend(c));
                    // The partition is done for this run; nothing is open.
                    writers.remove(&tp);
                    (tp, result.map_err(ChunkError::Write))
                }
                ToEncoder::Jump {
                    tp,
                    epoch,
                    to,
                    reason,
                } => {
                    let Some(w) = self.current(&mut writers, &tp, epoch) else {
                        continue;
                    };
                    let result = w.jump(to, reason, &mut desk, &mut closed);
                    (tp, result.map_err(ChunkError::Write))
                }
            };
            let halt = match result {
                Ok(()) => None,
                Err(ChunkError::Records(e)) => Some(Halt::Corrupt(e)),
                // Files closed before the failure are dropped with `closed`
                // (and their spool files with them): rebuilt next time.
                Err(ChunkError::Write(e)) => return Err(e.into()),
            };
            if let Some(why) = halt {
                self.registry.halt(&tp, why);
                // Keep what was good before the problem: close the file there.
                if let Some(mut w) = writers.remove(&tp) {
                    closed.extend(w.flush(&mut desk)?);
                }
            }
            let opened = writers.get(&tp).and_then(|w| w.opened());
            self.registry.metrics.open_file(&tp, opened);
            for c in closed.drain(..) {
                let i = worker_for(&c.key.tp(), uploaders.len());
                // Not sent (stopping): dropped, and its spool file with it.
                self.stop.send(&uploaders[i], c);
            }
        }
        // Open files of a stopped run are abandoned: rebuilt next time.
        for w in writers.values_mut() {
            w.abandon(&mut desk);
        }
        Ok(())
    }

    /// The writer of `tp` if `epoch` is still current (older work is dropped).
    fn current<'w>(
        &self,
        writers: &'w mut Writers,
        tp: &TopicPartition,
        epoch: u64,
    ) -> Option<&'w mut PartitionWriter> {
        let w = writers.get_mut(tp)?;
        (w.epoch() == epoch && self.registry.epoch(tp) == Some(epoch)).then_some(&mut **w)
    }

    /// Decodes one fetched chunk into the partition's files.
    fn chunk(
        &self,
        w: &mut PartitionWriter,
        data: PartitionData,
        desk: &mut Desk,
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
                    Event::Record { record, epoch, .. } => {
                        w.record(&record, epoch, desk, closed)?
                    }
                    Event::Skipped { next, epoch } => w.skipped(next, epoch),
                }
                Ok(())
            },
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use bytes::Bytes;
    use crossbeam_channel::bounded;

    use super::*;
    use crate::cancel::Cancel;
    use crate::format::avro::Codec;
    use crate::format::rotation::Rules;
    use crate::kafka::records::tests::{encode_batch, rec};

    fn chunk(tp: &TopicPartition, epoch: u64, fetch_offset: i64, records: Vec<u8>) -> ToEncoder {
        ToEncoder::Chunk {
            tp: tp.clone(),
            epoch,
            data: PartitionData {
                fetch_offset,
                topic_id: None,
                diverging: None,
                high_watermark: 0,
                last_stable_offset: 0,
                log_start_offset: 0,
                aborted: vec![],
                records: Bytes::from(records),
            },
        }
    }

    /// Runs an encoder over `msgs`; returns the files it closed as
    /// (first, next, records) and the registry.
    fn encode(
        msgs: impl FnOnce(&Registry, &TopicPartition) -> Vec<ToEncoder>,
    ) -> (Vec<(i64, i64, u64)>, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let files = FilesConfig {
            codec: Codec::Null,
            block_bytes: 1024,
            rules: Rules::new(1 << 30, 2, Duration::from_secs(3600)),
            idle_flush: Duration::from_secs(600),
        };
        let registry = Registry::default();
        let stop = Stop::new(Cancel::default());
        let tp = TopicPartition::new("t", 0);
        let (tx, rx) = bounded(16);
        let (up_tx, up_rx) = bounded(16);
        for m in msgs(&registry, &tp) {
            tx.send(m).unwrap();
        }
        drop(tx);
        let encoder = Encoder {
            spool: &spool,
            files: &files,
            registry: &registry,
            stop: &stop,
        };
        encoder.run(rx, vec![up_tx]).unwrap();
        let closed: Vec<_> = up_rx
            .try_iter()
            .map(|c: Closed| (c.key.first, c.summary.next_offset, c.summary.record_count))
            .collect();
        (closed, registry)
    }

    #[test]
    fn chunks_become_files_in_order_and_stale_epochs_are_dropped() {
        let (closed, registry) = encode(|registry, tp| {
            let epoch = registry.insert(tp, 0).epoch.load(Ordering::SeqCst);
            vec![
                ToEncoder::Assign {
                    tp: tp.clone(),
                    topic_id: None,
                    epoch,
                    position: 0,
                },
                chunk(
                    tp,
                    epoch,
                    0,
                    encode_batch(0, 0, -1, 2, &[rec(0, b"a"), rec(1, b"b"), rec(2, b"c")]),
                ),
                // Fetched again from an older position: dropped.
                chunk(tp, epoch, 1, encode_batch(1, 0, -1, 0, &[rec(0, b"x")])),
                // An older epoch: dropped.
                chunk(tp, epoch - 1, 3, encode_batch(3, 0, -1, 0, &[rec(0, b"y")])),
                ToEncoder::Finish {
                    tp: tp.clone(),
                    epoch,
                },
            ]
        });
        assert_eq!(closed, vec![(0, 2, 2), (2, 3, 1)]);
        assert!(registry.halted().is_empty());
    }

    #[test]
    fn a_corrupt_batch_halts_its_partition_and_keeps_what_came_before() {
        let (closed, registry) = encode(|registry, tp| {
            let epoch = registry.insert(tp, 0).epoch.load(Ordering::SeqCst);
            let mut data = encode_batch(0, 0, -1, 0, &[rec(0, b"a")]);
            let mut bad = encode_batch(1, 0, -1, 0, &[rec(0, b"b")]);
            let last = bad.len() - 1;
            bad[last] ^= 0xff;
            data.extend_from_slice(&bad);
            vec![
                ToEncoder::Assign {
                    tp: tp.clone(),
                    topic_id: None,
                    epoch,
                    position: 0,
                },
                chunk(tp, epoch, 0, data),
            ]
        });
        assert_eq!(closed, vec![(0, 1, 1)]);
        let halted = registry.halted();
        assert_eq!(halted.len(), 1);
        let line = halted[0].to_string();
        assert!(
            line.starts_with("corrupt record batch in t/0 at offset 1: crc32c mismatch"),
            "{line}"
        );
    }
}
