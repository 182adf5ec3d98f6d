//! What the stages share about the partitions this process archives: each
//! partition's assignment epoch (work from an older epoch is dropped), how
//! far the store covers it, and whether it stopped; the partitions that
//! could not start; the current group generation; and which worker thread
//! handles a partition. It hands the process's `Metrics` to the stages,
//! and tells them when a partition starts, stops or leaves, and the
//! fetcher when the store covers more.
//!
//! Shared state behind locks and atomics, nothing else: it decides nothing.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::halt::{Halt, Halted};
use crate::format::names::TopicPartition;
use crate::kafka::Generation;
use crate::metrics::Metrics;

/// Per-partition state shared by the stages.
#[derive(Debug)]
pub struct PartitionCtl {
    /// Bumped whenever the partition's position is reset; work tagged with
    /// an older epoch is dropped.
    pub epoch: AtomicU64,
    /// How far the store covers the partition (the last stored `next`).
    pub stored: AtomicI64,
    /// Set when the partition cannot go on.
    halted: Mutex<Option<Halt>>,
}

/// The partitions this process archives now.
#[derive(Default)]
pub struct Registry {
    map: RwLock<HashMap<TopicPartition, Arc<PartitionCtl>>>,
    /// Assigned partitions that could not start, and why.
    refused: Mutex<BTreeMap<TopicPartition, Halt>>,
    /// Partitions a one-shot run gave up starting (Kafka or the store kept
    /// failing), and the last failure.
    given_up: Mutex<BTreeMap<TopicPartition, String>>,
    /// Epochs are unique across partitions and assignments, so work from a
    /// partition's earlier ownership can never pass for current.
    epochs: AtomicU64,
    /// What the stages report for `/metrics` and the progress line.
    pub metrics: Arc<Metrics>,
    stored_wake: StoredWake,
}

/// Rings when the store covers more of a partition: at the end of a
/// one-shot run the fetcher waits for that, and wakes at once instead of at
/// its next poll. One pending ring is enough, so the channel holds one.
struct StoredWake {
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Default for StoredWake {
    fn default() -> Self {
        let (tx, rx) = bounded(1);
        StoredWake { tx, rx }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// An empty registry reporting to `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Registry {
        Registry {
            metrics,
            ..Registry::default()
        }
    }

    /// The store now covers `ctl`'s partition up to `next`.
    pub fn stored(&self, ctl: &PartitionCtl, next: i64) {
        ctl.stored.fetch_max(next, Ordering::SeqCst);
        let _ = self.stored_wake.tx.try_send(());
    }

    /// Waits at most `d` for the store to cover more of some partition
    /// (returns at once if it did since the last wait).
    pub fn wait_stored(&self, d: Duration) {
        let _ = self.stored_wake.rx.recv_timeout(d);
    }

    fn new_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Adds a partition whose archive ends at `stored`, in a fresh epoch.
    pub fn insert(&self, tp: &TopicPartition, stored: i64) -> Arc<PartitionCtl> {
        let ctl = Arc::new(PartitionCtl {
            epoch: AtomicU64::new(self.new_epoch()),
            stored: AtomicI64::new(stored),
            halted: Mutex::new(None),
        });
        self.map
            .write()
            .expect("registry")
            .insert(tp.clone(), ctl.clone());
        self.metrics.archived(tp, stored);
        ctl
    }

    /// Moves `tp` to a fresh epoch (its queued work is dropped) if `ctl` is
    /// still its control, i.e. it was not revoked or assigned again since
    /// `ctl` was taken; None otherwise.
    pub fn bump(&self, tp: &TopicPartition, ctl: &Arc<PartitionCtl>) -> Option<u64> {
        let map = self.map.write().expect("registry");
        let current = map.get(tp).is_some_and(|c| Arc::ptr_eq(c, ctl));
        current.then(|| {
            let epoch = self.new_epoch();
            ctl.epoch.store(epoch, Ordering::SeqCst);
            epoch
        })
    }

    /// Forgets a partition (revoked): its queued work is dropped.
    pub fn remove(&self, tp: &TopicPartition) {
        self.map.write().expect("registry").remove(tp);
        lock(&self.refused).remove(tp);
        self.metrics.forget(tp);
    }

    /// Whether this process archives `tp` now.
    pub fn owns(&self, tp: &TopicPartition) -> bool {
        self.map.read().expect("registry").contains_key(tp)
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<PartitionCtl>> {
        self.map.read().expect("registry").get(tp).cloned()
    }

    /// The partition's current epoch (None once it is gone).
    pub fn epoch(&self, tp: &TopicPartition) -> Option<u64> {
        self.get(tp).map(|c| c.epoch.load(Ordering::SeqCst))
    }

    /// Stops archiving a partition; the reason is logged once.
    pub fn halt(&self, tp: &TopicPartition, why: Halt) {
        if let Some(ctl) = self.get(tp) {
            let mut halted = lock(&ctl.halted);
            if halted.is_none() {
                let line = Halted {
                    tp: tp.clone(),
                    why: why.clone(),
                };
                log::error!("stopped archiving {tp}: {line}");
                *halted = Some(why);
                self.metrics.halted(tp);
            }
        }
    }

    /// An assigned partition that cannot start; the reason is logged.
    pub fn refuse(&self, tp: &TopicPartition, why: Halt) {
        let line = Halted {
            tp: tp.clone(),
            why: why.clone(),
        };
        log::error!("cannot archive {tp}: {line}");
        lock(&self.refused).insert(tp.clone(), why);
        self.metrics.halted(tp);
    }

    /// A one-shot run stops trying to start `tp`.
    pub fn give_up(&self, tp: &TopicPartition, why: String) {
        log::error!("gave up starting {tp}: {why}");
        lock(&self.given_up).insert(tp.clone(), why);
    }

    /// The partitions given up, with the last failure.
    pub fn given_up(&self) -> Vec<(TopicPartition, String)> {
        lock(&self.given_up)
            .iter()
            .map(|(tp, why)| (tp.clone(), why.clone()))
            .collect()
    }

    pub fn is_halted(&self, tp: &TopicPartition) -> bool {
        self.get(tp).is_some_and(|c| lock(&c.halted).is_some())
    }

    /// Partitions that stopped or could not start, with the reasons.
    pub fn halted(&self) -> Vec<Halted> {
        let mut out: BTreeMap<TopicPartition, Halt> = lock(&self.refused).clone();
        for (tp, c) in self.map.read().expect("registry").iter() {
            if let Some(why) = lock(&c.halted).clone() {
                out.insert(tp.clone(), why);
            }
        }
        out.into_iter()
            .map(|(tp, why)| Halted { tp, why })
            .collect()
    }
}

/// The current group generation and what it assigned to this process,
/// shared by the group thread (writer) and the committer (reader): commits
/// name the generation and cover only its partitions.
#[derive(Default)]
pub struct GroupState {
    current: Mutex<Option<(Generation, BTreeSet<TopicPartition>)>>,
}

impl GroupState {
    pub fn get(&self) -> Option<(Generation, BTreeSet<TopicPartition>)> {
        lock(&self.current).clone()
    }

    pub fn set(&self, g: Option<(Generation, BTreeSet<TopicPartition>)>) {
        *lock(&self.current) = g;
    }
}

/// Which of `n` workers handles a partition (stable for the process), so
/// that a partition's chunks and files keep their order.
pub fn worker_for(tp: &TopicPartition, n: usize) -> usize {
    let mut h = DefaultHasher::new();
    tp.topic.hash(&mut h);
    (h.finish() as usize).wrapping_add(tp.partition as usize) % n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_wakes_the_waiter_once_and_moves_the_partition_on() {
        let registry = Registry::default();
        let ctl = registry.insert(&TopicPartition::new("t", 0), 10);
        let started = std::time::Instant::now();
        registry.wait_stored(Duration::from_millis(30));
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "no ring yet"
        );
        registry.stored(&ctl, 20);
        registry.stored(&ctl, 15);
        assert_eq!(ctl.stored.load(Ordering::SeqCst), 20, "never backwards");
        let started = std::time::Instant::now();
        registry.wait_stored(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5), "woken at once");
        let started = std::time::Instant::now();
        registry.wait_stored(Duration::from_millis(30));
        assert!(started.elapsed() >= Duration::from_millis(30), "rung once");
    }

    #[test]
    fn an_epoch_moves_only_for_the_assignment_that_took_it() {
        let registry = Registry::default();
        let tp = TopicPartition::new("t", 0);
        let first = registry.insert(&tp, 10);
        let bumped = registry.bump(&tp, &first).unwrap();
        assert_eq!(registry.epoch(&tp), Some(bumped));

        // Revoked and assigned again while an upload of the first ran.
        registry.remove(&tp);
        assert_eq!(registry.bump(&tp, &first), None);
        let again = registry.insert(&tp, 20);
        let current = registry.epoch(&tp);
        assert_eq!(registry.bump(&tp, &first), None);
        assert_eq!(registry.epoch(&tp), current);
        assert!(registry.bump(&tp, &again).is_some());
    }

    #[test]
    fn halted_and_refused_partitions_are_reported_once_each() {
        let registry = Registry::default();
        let (a, b, c) = (
            TopicPartition::new("t", 0),
            TopicPartition::new("t", 1),
            TopicPartition::new("t", 2),
        );
        registry.insert(&a, 0);
        registry.insert(&b, 0);
        registry.halt(&a, Halt::TopicGone);
        registry.halt(&a, Halt::NoArchive);
        registry.refuse(&c, Halt::NoArchive);
        assert!(registry.is_halted(&a) && !registry.is_halted(&b));
        let halted: Vec<String> = registry.halted().iter().map(|h| h.to_string()).collect();
        assert_eq!(halted.len(), 2);
        assert!(halted[0].contains("does not exist any more"), "{halted:?}");
        assert!(halted[1].starts_with("t/2 has no archive"), "{halted:?}");
        registry.remove(&c);
        assert_eq!(registry.halted().len(), 1);
    }
}
