//! An uploader thread: the end of step 2 of the commit protocol (the
//! fsync) and step 3. Stores its partitions' finished files in order with
//! a create-only put.
//!
//! `Created` or `Identical` moves the partition on; `Conflict` (another
//! builder's cut won) adopts the stored object's `next-offset`, follows the
//! chain and sends the fetcher there. The committer learns what the store
//! now covers. Never overwrites an object and never commits offsets.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::{Receiver, Sender};

use super::halt::Halt;
use super::msg::{Closed, Seek, Stored};
use super::registry::{PartitionCtl, Registry};
use super::resume::follow;
use super::rows::row_of;
use super::spool::Spool;
use super::stop::Stop;
use crate::format::avro::{AvroError, Reader};
use crate::format::names::ObjectKey;
use crate::store::{ObjectInfo, PutOutcome, Store, StoreError, Upload};

/// Back-off between attempts when the store fails retriably.
const STORE_BACKOFF: Duration = Duration::from_secs(1);
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Everything an uploader thread uses besides its input.
pub struct Uploader<'a> {
    pub store: &'a dyn Store,
    pub spool: &'a Spool,
    pub registry: &'a Registry,
    pub stop: &'a Stop,
    pub seeks: Sender<Seek>,
    pub stored: Sender<Stored>,
}

impl Uploader<'_> {
    pub fn run(self, rx: Receiver<Closed>) -> anyhow::Result<()> {
        while let Some(file) = self.stop.recv(&rx) {
            if !self.upload(file)? {
                break;
            }
        }
        // Stopping: files still queued are dropped (with their spool files)
        // and rebuilt from Kafka next time.
        Ok(())
    }

    /// Stores one file; false when the pipeline stopped meanwhile. An
    /// object at its name that is not a kafka-store file of the partition
    /// stops that partition alone, and no later file of it is stored.
    fn upload(&self, file: Closed) -> anyhow::Result<bool> {
        let tp = file.key.tp();
        // Files of a partition halted by the fetcher or an encoder are still
        // stored: they hold records from before the problem, which Kafka
        // may no longer have. Files of an older epoch, or of a partition
        // that moved away, are dropped.
        let Some(ctl) = self.registry.get(&tp) else {
            return Ok(true);
        };
        if ctl.epoch.load(Ordering::SeqCst) != file.epoch {
            return Ok(true);
        }
        // Durable before the store is asked for it (step 2 of the
        // protocol), here rather than on the encoder, which goes on
        // compressing while the disk writes. A failed fsync is not retried
        // (the kernel may have dropped the pages): the process stops and
        // the file is rebuilt from Kafka.
        file.file
            .sync()
            .with_context(|| format!("cannot fsync spool file {}", file.file.path().display()))?;
        match self.store_file(file, &ctl) {
            Err(StoreError::NotArchive { what, why }) => {
                self.registry
                    .halt(&tp, Halt::BadObject { object: what, why });
                // The chain breaks at this name: a later file stored after
                // it would let the committer move past records the archive
                // does not have. A new epoch drops them.
                self.registry.bump(&tp, &ctl);
                Ok(true)
            }
            other => Ok(other?),
        }
    }

    fn store_file(&self, file: Closed, ctl: &Arc<PartitionCtl>) -> Result<bool, StoreError> {
        let tp = file.key.tp();
        let started = Instant::now();
        let session_note = self.spool.session_note(&file.key);
        let upload = Upload {
            key: &file.key,
            topic_id: file.topic_id,
            skipped: file.skipped,
            path: file.file.path(),
            session_note: &session_note,
            summary: file.summary,
            size: file.size,
            crc32c: file.crc32c,
        };
        let Some(outcome) = self.retrying(|| self.store.put(&upload))? else {
            return Ok(false);
        };
        let url = self.store.object_url(&file.key);
        let next = file.summary.next_offset;
        match outcome {
            PutOutcome::Created | PutOutcome::Identical => {
                log::info!(
                    "stored {tp} offsets {}..{next}: {} records, {} bytes, built in {:.1}s, stored in {:.1}s{} -> {url}",
                    file.key.first,
                    file.summary.record_count,
                    file.size,
                    started.duration_since(file.opened).as_secs_f64(),
                    started.elapsed().as_secs_f64(),
                    if outcome == PutOutcome::Identical {
                        " (identical object already there)"
                    } else {
                        ""
                    },
                );
                self.registry.stored(ctl, next);
                self.registry.metrics.committed(
                    &tp,
                    next,
                    file.summary.record_count,
                    file.size,
                    file.skipped.is_some(),
                );
                let info = ObjectInfo {
                    summary: file.summary,
                    size: file.size,
                    crc32c: Some(file.crc32c),
                    md5: None,
                    format_version: crate::format::avro::FORMAT_VERSION,
                    topic_id: file.topic_id,
                    skipped: file.skipped,
                };
                let row = row_of(&file.key, &info, url);
                let _ = self.stored.send(Stored::Object { tp, row });
            }
            PutOutcome::Conflict(info) => {
                let theirs = info.summary.next_offset;
                // Another builder's file, read whole before the chain goes
                // on after it: a foreign or damaged object is never adopted.
                let Some(()) = self.retrying(|| check_object(self.store, &file.key))? else {
                    return Ok(false);
                };
                log::warn!(
                    "{url} already exists with another cut (next offset {theirs}, ours {next}); adopting it"
                );
                let Some(end) = self.retrying(|| follow(self.store, &tp, file.key.first, &info))?
                else {
                    return Ok(false);
                };
                // Revoked, or revoked and assigned again, while the put ran:
                // that new start followed the chain itself.
                let Some(epoch) = self.registry.bump(&tp, ctl) else {
                    return Ok(true);
                };
                self.registry.stored(ctl, end.at.position);
                self.registry.metrics.archived(&tp, end.at.position);
                let _ = self.seeks.send(Seek {
                    tp: tp.clone(),
                    epoch,
                    position: end.at.position,
                    last_epoch: end.last_epoch,
                });
                let _ = self.stored.send(Stored::Adopted { tp, at: end.at });
            }
        }
        Ok(true)
    }

    /// A store operation, retried while the store's failure is retriable (the
    /// archive is safe while the store is away); None if the pipeline stops
    /// meanwhile.
    fn retrying<T>(
        &self,
        mut op: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut backoff = STORE_BACKOFF;
        loop {
            match op() {
                Ok(v) => return Ok(Some(v)),
                Err(StoreError::Interrupted { .. }) => return Ok(None),
                Err(e) if e.is_retriable() => {
                    if self.stop.requested() {
                        return Ok(None);
                    }
                    log::warn!("{e}; retrying in {}s", backoff.as_secs());
                    if !self.stop.sleep(backoff) {
                        return Ok(None);
                    }
                    backoff = (backoff * 2).min(STORE_BACKOFF_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads an object whole: a kafka-store file of its partition, starting
/// at its name, every block and the summary checked by the reader.
fn check_object(store: &dyn Store, key: &ObjectKey) -> Result<(), StoreError> {
    let bad = |why: String| StoreError::NotArchive {
        what: store.object_url(key),
        why,
    };
    let mut reader = match Reader::new(store.open(key)?) {
        Ok(r) => r,
        Err(AvroError::Io(e)) => {
            return Err(StoreError::Unavailable {
                what: format!("cannot read {}", store.object_url(key)),
                why: e.to_string(),
            });
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let h = reader.header();
    if h.first_offset != key.first || h.partition != key.partition || *h.topic != *key.topic {
        return Err(bad(format!(
            "its header names {}/{} offset {}",
            h.topic, h.partition, h.first_offset
        )));
    }
    loop {
        match reader.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(AvroError::Io(e)) => {
                return Err(StoreError::Unavailable {
                    what: format!("cannot read {}", store.object_url(key)),
                    why: e.to_string(),
                });
            }
            Err(e) => return Err(bad(e.to_string())),
        }
    }
}
