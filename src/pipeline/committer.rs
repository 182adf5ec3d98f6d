//! The committer thread: step 4 of the commit protocol. Writes the index
//! row of every stored object (with `[mysql]`), then commits the newest
//! position of each partition to the Kafka group every `commit_interval`,
//! and once more when the uploaders are done.
//!
//! What may be committed now is one pure function (`commits`): only
//! positions the store covers, only as far as the index has rows (with an
//! index), only partitions this generation assigned to this process, and
//! only when they move past the last commit. Owns the group offsets; never
//! writes the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::msg::Stored;
use super::registry::{GroupState, Registry};
use super::resume::{ChainPos, commit_metadata};
use super::rows::Keeper;
use super::stop::Stop;
use crate::format::names::TopicPartition;
use crate::kafka::Client;
use crate::store::Store;

/// The newest position of a partition waiting to be committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Where the partition starts in this process: no object ends there for
    /// this process, so there is no row to wait for.
    Start(ChainPos),
    /// The end of stored (or adopted) objects, whose rows the index may
    /// still owe.
    Stored(ChainPos),
}

impl Pending {
    fn at(self) -> ChainPos {
        match self {
            Pending::Start(at) | Pending::Stored(at) => at,
        }
    }
}

/// With an index: how far its rows cover a partition.
pub type RowsCovered<'a> = &'a dyn Fn(&TopicPartition) -> Option<ChainPos>;

/// What may be committed now, in partition order.
///
/// - `assigned`: the partitions the current generation gave this process
///   (None outside a group);
/// - `rows`: with an index, how far its rows cover a partition (None when
///   nothing is known yet: nothing is committed for it).
pub fn commits(
    pending: &BTreeMap<TopicPartition, Pending>,
    committed: &HashMap<TopicPartition, i64>,
    assigned: Option<&BTreeSet<TopicPartition>>,
    rows: Option<RowsCovered>,
) -> Vec<(TopicPartition, ChainPos)> {
    let mut out = Vec::new();
    for (tp, p) in pending {
        if assigned.is_some_and(|a| !a.contains(tp)) {
            continue;
        }
        let at = match (rows, p) {
            (None, p) | (Some(_), p @ Pending::Start(_)) => p.at(),
            (Some(rows), Pending::Stored(at)) => match rows(tp) {
                Some(covered) if covered.position < at.position => covered,
                Some(_) => *at,
                None => continue,
            },
        };
        if committed.get(tp).is_some_and(|c| *c >= at.position) {
            continue;
        }
        out.push((tp.clone(), at));
    }
    out
}

/// Everything the committer thread owns besides its input.
pub struct Committer<'a> {
    pub client: Client,
    pub group: &'a str,
    pub store_tag: &'a str,
    pub interval: Duration,
    pub registry: &'a Registry,
    /// The group generation to commit in; None for a standalone run.
    pub membership: Option<&'a GroupState>,
    pub store: &'a dyn Store,
    pub stop: &'a Stop,
    /// The MySQL index, when configured.
    pub keeper: Option<Keeper>,
    /// What was last committed per partition.
    pub committed: HashMap<TopicPartition, i64>,
}

impl Committer<'_> {
    pub fn run(mut self, rx: Receiver<Stored>) -> anyhow::Result<()> {
        let mut pending: BTreeMap<TopicPartition, Pending> = BTreeMap::new();
        let mut due = Instant::now() + self.interval;
        loop {
            if self.stop.aborted() {
                return Ok(());
            }
            let wait = if self.keeper.as_ref().is_some_and(Keeper::behind) {
                Duration::from_millis(20)
            } else {
                due.saturating_duration_since(Instant::now())
            };
            match rx.recv_timeout(wait.min(super::stop::POLL)) {
                Ok(s) => self.note(s, &mut pending),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if let Some(k) = self.keeper.as_mut() {
                        k.work(self.store);
                    }
                    self.commit(&mut pending);
                    return Ok(());
                }
            }
            if let Some(k) = self.keeper.as_mut()
                && k.behind()
            {
                k.work(self.store);
            }
            if Instant::now() >= due {
                self.commit(&mut pending);
                due = Instant::now() + self.interval;
            }
        }
    }

    /// Records what the store now covers (and the object's row).
    fn note(&mut self, s: Stored, pending: &mut BTreeMap<TopicPartition, Pending>) {
        let (tp, newest) = match s {
            Stored::Start { tp, at } => {
                if let Some(k) = self.keeper.as_mut() {
                    k.start(&tp, at.position);
                }
                (tp, Pending::Start(at))
            }
            Stored::Object { tp, row } => {
                if let Some(k) = self.keeper.as_mut() {
                    k.stored(&tp, row.next_offset, Some(&row));
                }
                let at = ChainPos {
                    position: row.next_offset,
                    prev: Some(row.first_offset),
                };
                (tp, Pending::Stored(at))
            }
            Stored::Adopted { tp, at } => {
                if let Some(k) = self.keeper.as_mut() {
                    k.stored(&tp, at.position, None);
                }
                (tp, Pending::Stored(at))
            }
        };
        let e = pending.entry(tp).or_insert(newest);
        if newest.at().position >= e.at().position {
            *e = newest;
        }
    }

    fn commit(&mut self, pending: &mut BTreeMap<TopicPartition, Pending>) {
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
        let keeper = self.keeper.as_ref();
        let covered = |tp: &TopicPartition| keeper.and_then(|k| k.covered(tp));
        let rows: Option<RowsCovered> = keeper.is_some().then_some(&covered);
        let plan = commits(pending, &self.committed, assigned.as_ref(), rows);
        if plan.is_empty() {
            return;
        }
        let offsets: Vec<(TopicPartition, i64, String)> = plan
            .iter()
            .map(|(tp, at)| {
                (
                    tp.clone(),
                    at.position,
                    commit_metadata(self.store_tag, at.prev),
                )
            })
            .collect();
        match self
            .client
            .commit_offsets(self.group, generation.as_ref(), &offsets)
        {
            Ok(()) => {
                log::debug!(
                    "committed {} offset(s) to group {}",
                    offsets.len(),
                    self.group
                );
                for (tp, at) in plan {
                    if pending
                        .get(&tp)
                        .is_some_and(|p| p.at().position <= at.position)
                    {
                        pending.remove(&tp);
                    }
                    self.committed.insert(tp, at.position);
                }
            }
            Err(e) => log::warn!(
                "cannot commit offsets to group {} (they are retried; the archive is safe): {e}",
                self.group
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn at(position: i64, prev: i64) -> ChainPos {
        ChainPos {
            position,
            prev: Some(prev),
        }
    }

    fn plan(
        pending: &[(i32, Pending)],
        committed: &[(i32, i64)],
        assigned: Option<&[i32]>,
        rows: Option<&[(i32, ChainPos)]>,
    ) -> Vec<(i32, i64)> {
        let pending = pending.iter().map(|(p, x)| (tp(*p), *x)).collect();
        let committed = committed.iter().map(|(p, o)| (tp(*p), *o)).collect();
        let assigned: Option<BTreeSet<_>> = assigned.map(|a| a.iter().map(|p| tp(*p)).collect());
        let rows: Option<HashMap<_, _>> =
            rows.map(|r| r.iter().map(|(p, c)| (tp(*p), *c)).collect());
        let lookup = |t: &TopicPartition| rows.as_ref().and_then(|r| r.get(t).copied());
        let rows_fn: Option<RowsCovered> = rows.is_some().then_some(&lookup);
        commits(&pending, &committed, assigned.as_ref(), rows_fn)
            .into_iter()
            .map(|(t, a)| (t.partition, a.position))
            .collect()
    }

    #[test]
    fn only_positions_past_the_last_commit_are_committed() {
        let pending = [
            (0, Pending::Stored(at(50, 40))),
            (1, Pending::Stored(at(9, 5))),
        ];
        assert_eq!(plan(&pending, &[(1, 9)], None, None), vec![(0, 50)]);
        assert_eq!(plan(&pending, &[(0, 60)], None, None), vec![(1, 9)]);
    }

    #[test]
    fn a_group_member_commits_only_what_its_generation_assigned() {
        let pending = [
            (0, Pending::Stored(at(50, 40))),
            (1, Pending::Stored(at(9, 5))),
        ];
        assert_eq!(plan(&pending, &[], Some(&[1]), None), vec![(1, 9)]);
        assert_eq!(plan(&pending, &[], Some(&[]), None), vec![]);
    }

    #[test]
    fn with_an_index_only_what_has_its_rows_is_committed() {
        let pending = [
            (0, Pending::Stored(at(50, 40))),
            (1, Pending::Stored(at(9, 5))),
            (2, Pending::Stored(at(30, 20))),
            (3, Pending::Start(at(70, 60))),
        ];
        let rows = [(0, at(40, 30)), (1, at(9, 5))];
        // Partition 0: rows end at 40; 1: complete; 2: unknown (nothing);
        // 3: a start has no row to wait for.
        assert_eq!(
            plan(&pending, &[], None, Some(&rows)),
            vec![(0, 40), (1, 9), (3, 70)]
        );
        assert_eq!(plan(&pending, &[(0, 40)], None, Some(&rows)).len(), 2);
    }
}
