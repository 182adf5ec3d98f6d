//! Steps 3 and 4 of the commit protocol: store the finished file with a
//! create-only put, then commit the position to the Kafka group.
//!
//! Uploader threads own the store side: `Created` or `Identical` moves the
//! partition on; `Conflict` (another builder's cut won) adopts the stored
//! object's `next-offset`, follows the chain and sends the fetcher there.
//! The committer thread owns the group offsets and commits only positions
//! the store already covers, so a crash at any point loses and duplicates
//! nothing. Neither ever overwrites an object.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::index::{Keeper, Row};
use crate::kafka::{Client, TopicPartition};
use crate::partition::Closed;
use crate::pipeline::{GroupState, Registry, Seek, Stop, Stored};
use crate::resume::{commit_metadata, follow};
use crate::spool::Spool;
use crate::store::{ObjectInfo, PutOutcome, Store, StoreError, Upload};

/// Back-off between attempts when the store fails retriably.
const STORE_BACKOFF: Duration = Duration::from_secs(1);
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// An uploader thread: stores its partitions' files in order.
pub fn upload_loop(
    rx: Receiver<Closed>,
    store: &dyn Store,
    registry: &Registry,
    stop: &Stop,
    seeks: Sender<Seek>,
    stored: Sender<Stored>,
) -> anyhow::Result<()> {
    while let Some(file) = stop.recv(&rx) {
        let tp = file.key.tp();
        let Some(ctl) = registry.get(&tp) else {
            Spool::remove(&file.path);
            continue;
        };
        // Files of a halted partition are still stored: they hold records
        // from before the problem, which Kafka may no longer have.
        if ctl.epoch.load(Ordering::SeqCst) != file.epoch {
            Spool::remove(&file.path);
            continue;
        }
        let started = Instant::now();
        let upload = Upload {
            key: &file.key,
            path: &file.path,
            summary: file.summary,
            size: file.size,
            crc32c: file.crc32c,
        };
        let outcome = retrying(stop, || Ok(store.put(&upload)?));
        Spool::remove(&file.path);
        let Some(outcome) = outcome? else { break };
        let url = store.object_url(&file.key);
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
                ctl.stored.fetch_max(next, Ordering::SeqCst);
                let info = ObjectInfo {
                    summary: file.summary,
                    size: file.size,
                    crc32c: Some(file.crc32c),
                    md5: None,
                    format_version: crate::store::FORMAT_VERSION,
                };
                let _ = stored.send(Stored {
                    tp,
                    next,
                    prev: Some(file.key.first),
                    row: Some(Row::new(&file.key, &info, url)),
                    start: false,
                });
            }
            PutOutcome::Conflict(info) => {
                let theirs = info.summary.next_offset;
                log::warn!(
                    "{url} already exists with another cut (next offset {theirs}, ours {next}); adopting it"
                );
                let Some(end) =
                    retrying(stop, || follow(store, &tp, theirs, Some(file.key.first)))?
                else {
                    break;
                };
                // Revoked, or revoked and assigned again, while the put ran:
                // that new start followed the chain itself.
                let Some(epoch) = registry.bump(&tp, &ctl) else {
                    continue;
                };
                ctl.stored.fetch_max(end.position, Ordering::SeqCst);
                let _ = seeks.send(Seek {
                    tp: tp.clone(),
                    epoch,
                    position: end.position,
                });
                let _ = stored.send(Stored {
                    tp,
                    next: end.position,
                    prev: end.prev,
                    row: None,
                    start: false,
                });
            }
        }
    }
    // Stopping: files still queued are rebuilt from Kafka next time.
    while let Ok(file) = rx.try_recv() {
        Spool::remove(&file.path);
    }
    Ok(())
}

/// A store operation, retried while the store's failure is retriable (the
/// archive is safe while the store is away); None if the pipeline stops
/// meanwhile.
fn retrying<T>(
    stop: &Stop,
    mut op: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    let mut backoff = STORE_BACKOFF;
    loop {
        match op() {
            Ok(v) => return Ok(Some(v)),
            Err(e)
                if e.downcast_ref::<StoreError>()
                    .is_some_and(StoreError::is_retriable) =>
            {
                if stop.requested() {
                    return Ok(None);
                }
                log::warn!("{e:#}; retrying in {}s", backoff.as_secs());
                if !stop.sleep(backoff) {
                    return Ok(None);
                }
                backoff = (backoff * 2).min(STORE_BACKOFF_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The committer thread: writes the index row of every stored object (with
/// `[mysql]`), then commits the newest position of each partition every
/// `interval` (and once more when the uploaders are done), as a member of
/// the current group generation and only for partitions this process still
/// owns. With an index, a position is committed only once its rows exist.
pub fn commit_loop(
    rx: Receiver<Stored>,
    mut client: Client,
    mut committer: Committer<'_>,
) -> anyhow::Result<()> {
    let mut pending: HashMap<TopicPartition, Pending> = HashMap::new();
    let mut due = Instant::now() + committer.interval;
    loop {
        let wait = if committer.keeper.as_ref().is_some_and(Keeper::behind) {
            Duration::from_millis(20)
        } else {
            due.saturating_duration_since(Instant::now())
        };
        match rx.recv_timeout(wait) {
            Ok(s) => {
                if let Some(k) = committer.keeper.as_mut() {
                    if s.start {
                        k.start(&s.tp, s.next);
                    } else {
                        k.stored(&s.tp, s.next, s.row);
                    }
                }
                let newest = Pending {
                    next: s.next,
                    prev: s.prev,
                    start: s.start,
                };
                let e = pending.entry(s.tp).or_insert(newest);
                if newest.next >= e.next {
                    *e = newest;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(k) = committer.keeper.as_mut() {
                    k.work(committer.store);
                }
                committer.commit(&mut client, &mut pending);
                return Ok(());
            }
        }
        if let Some(k) = committer.keeper.as_mut()
            && k.behind()
        {
            k.work(committer.store);
        }
        if Instant::now() >= due {
            committer.commit(&mut client, &mut pending);
            due = Instant::now() + committer.interval;
        }
    }
}

/// The newest position of a partition waiting to be committed.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    next: i64,
    prev: Option<i64>,
    /// A start position (no object ends there for this process).
    start: bool,
}

/// What the committer needs besides its client.
pub struct Committer<'a> {
    pub group: &'a str,
    pub store_tag: &'a str,
    pub interval: Duration,
    pub registry: &'a Registry,
    /// The group generation to commit in; None for a standalone run.
    pub membership: Option<&'a GroupState>,
    pub store: &'a dyn Store,
    /// The MySQL index, when configured.
    pub keeper: Option<Keeper>,
    /// What was last committed per partition.
    pub committed: HashMap<TopicPartition, i64>,
}

impl Committer<'_> {
    fn commit(&mut self, client: &mut Client, pending: &mut HashMap<TopicPartition, Pending>) {
        // A partition that moved on is the new owner's to commit.
        pending.retain(|tp, _| self.registry.owns(tp));
        if let Some(k) = self.keeper.as_mut() {
            for tp in k.partitions() {
                if !self.registry.owns(&tp) {
                    k.forget(&tp);
                }
            }
        }
        let (generation, assigned) = match self.membership {
            None => (None, None),
            Some(state) => match state.get() {
                Some((g, assigned)) => (Some(g), Some(assigned)),
                None => return, // Rebalancing: commit with the next generation.
            },
        };
        // With an index, only what has its rows: a restart back-fills from there.
        let mut offsets: Vec<(TopicPartition, i64, String)> = Vec::new();
        for (tp, p) in pending.iter() {
            let (next, prev) = (p.next, p.prev);
            // Only what this generation assigned to us.
            if assigned.as_ref().is_some_and(|a| !a.contains(tp)) {
                continue;
            }
            let (next, prev) = match self.keeper.as_ref() {
                // A start position has no row to wait for.
                None => (next, prev),
                Some(_) if p.start => (next, prev),
                Some(k) => match k.covered(tp) {
                    Some((covered, cprev)) if covered < next => (covered, cprev),
                    Some(_) => (next, prev),
                    None => continue,
                },
            };
            if self.committed.get(tp).is_some_and(|c| *c >= next) {
                continue;
            }
            offsets.push((tp.clone(), next, commit_metadata(self.store_tag, prev)));
        }
        if offsets.is_empty() {
            return;
        }
        offsets.sort();
        match client.commit_offsets(self.group, generation.as_ref(), &offsets) {
            Ok(()) => {
                log::debug!(
                    "committed {} offset(s) to group {}",
                    offsets.len(),
                    self.group
                );
                for (tp, next, _) in offsets {
                    if pending.get(&tp).is_some_and(|p| p.next <= next) {
                        pending.remove(&tp);
                    }
                    self.committed.insert(tp, next);
                }
            }
            Err(e) => log::warn!(
                "cannot commit offsets to group {} (they are retried; the archive is safe): {e}",
                self.group
            ),
        }
    }
}
