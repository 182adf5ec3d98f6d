//! The committer's side of the MySQL index: a row for every stored object
//! (store first, then the row, then the Kafka offset), and the back-fill of
//! rows from the store when MySQL was away or a process died in between.
//!
//! Where a back-fill starts and how it steps over a gap in the chain are
//! pure functions (unit-tested below). Reads the store, writes only rows.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::resume::ChainPos;
use crate::format::names::{ObjectKey, TopicPartition};
use crate::index::{Index, IndexError, MysqlOptions, Row};
use crate::store::{ObjectInfo, Store, StoreError};

/// How long to wait before trying an unavailable index again.
pub const RETRY: Duration = Duration::from_secs(10);
/// Objects looked up per back-fill step (the committer stays responsive).
const BACKFILL_STEP: usize = 32;

/// The index row of a stored object.
pub fn row_of(key: &ObjectKey, info: &ObjectInfo, object_url: String) -> Row {
    Row {
        topic: key.topic.to_string(),
        partition: key.partition,
        first_offset: key.first,
        next_offset: info.summary.next_offset,
        record_count: info.summary.record_count as i64,
        min_timestamp: info.summary.min_timestamp,
        max_timestamp: info.summary.max_timestamp,
        bytes: info.size as i64,
        crc32c: info.crc32c,
        object_url,
    }
}

/// Where a partition's rows stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    /// Not known yet (the index was unavailable when the partition started).
    Unknown,
    /// Rows exist for every object before `at.position`.
    At(ChainPos),
}

/// Where rows must be written from, given where the partition's rows end
/// in the index and where its archive ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackfillFrom {
    /// From the end of the rows.
    Rows(ChainPos),
    /// The rows reach past the archive (another store's rows, or objects
    /// deleted by hand): nothing is written; `reindex` repairs it.
    BeyondArchive { rows_end: i64 },
    /// No row yet: from the partition's first object.
    FirstObject,
}

fn backfill_from(rows_end: Option<ChainPos>, archive_end: i64) -> BackfillFrom {
    match rows_end {
        Some(at) if at.position <= archive_end => BackfillFrom::Rows(at),
        Some(at) => BackfillFrom::BeyondArchive {
            rows_end: at.position,
        },
        None => BackfillFrom::FirstObject,
    }
}

/// Where the back-fill goes on when no object starts at `missing`: at the
/// next listed object (a chain broken by records skipped before
/// skipped-range files existed), never past the archive's end.
fn after_gap(listed: &[i64], missing: i64, archive_end: i64) -> i64 {
    listed
        .iter()
        .copied()
        .find(|f| *f > missing)
        .unwrap_or(archive_end)
        .min(archive_end)
}

/// Why a back-fill step stopped.
enum Backfill {
    Index(IndexError),
    Store(StoreError),
}

/// The rows of the partitions this process archives.
pub struct Keeper {
    options: MysqlOptions,
    /// The store whose rows it keeps.
    store_url: String,
    index: Option<Index>,
    retry_at: Instant,
    marks: HashMap<TopicPartition, Mark>,
    /// Where each partition's archive ends, as far as the committer knows.
    stored: HashMap<TopicPartition, i64>,
    /// Partitions whose back-fill failed, and when to try again.
    paused: HashMap<TopicPartition, Instant>,
}

impl Keeper {
    /// Connects; a configuration problem is an error, an unreachable MySQL
    /// is not (archiving goes on, rows are back-filled later).
    pub fn open(options: &MysqlOptions, store_url: &str) -> Result<Keeper, IndexError> {
        let index = match Index::open(options, store_url) {
            Ok(i) => Some(i),
            Err(e) if e.is_unavailable() => {
                log::warn!("{e}; archiving goes on, rows are back-filled when it answers");
                None
            }
            Err(fatal) => return Err(fatal),
        };
        Ok(Keeper {
            options: options.clone(),
            store_url: store_url.to_string(),
            index,
            retry_at: Instant::now() + RETRY,
            marks: HashMap::new(),
            stored: HashMap::new(),
            paused: HashMap::new(),
        })
    }

    /// A partition starts here: its archive ends at `position`.
    pub fn start(&mut self, tp: &TopicPartition, position: i64) {
        self.marks.insert(tp.clone(), Mark::Unknown);
        self.stored.insert(tp.clone(), position);
    }

    /// The partitions it keeps rows for.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.marks.keys().cloned().collect()
    }

    /// A partition moved to another process.
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.marks.remove(tp);
        self.stored.remove(tp);
        self.paused.remove(tp);
    }

    /// The store now holds objects up to `next`; `row` is the one ending
    /// there when this process stored it (None when adopted: looked up).
    pub fn stored(&mut self, tp: &TopicPartition, next: i64, row: Option<&Row>) {
        let end = self.stored.entry(tp.clone()).or_insert(next);
        *end = (*end).max(next);
        if let (Some(row), Some(Mark::At(at))) = (row, self.marks.get(tp).copied())
            && at.position == row.first_offset
            && let Some(index) = self.index.as_mut()
        {
            match index.upsert(row) {
                Ok(()) => {
                    let at = ChainPos {
                        position: row.next_offset,
                        prev: Some(row.first_offset),
                    };
                    self.marks.insert(tp.clone(), Mark::At(at));
                }
                Err(e) => self.lost(e),
            }
        }
    }

    /// Where the index covers a partition: Kafka offsets are committed up
    /// to there only, so a restart back-fills from the committed offset.
    pub fn covered(&self, tp: &TopicPartition) -> Option<ChainPos> {
        match self.marks.get(tp) {
            Some(Mark::At(at)) => Some(*at),
            _ => None,
        }
    }

    /// Whether rows are owed (the committer then calls `work` soon).
    pub fn behind(&self) -> bool {
        let now = Instant::now();
        if self.index.is_none() && now < self.retry_at {
            return false;
        }
        self.marks
            .iter()
            .filter(|(tp, _)| self.paused.get(*tp).is_none_or(|at| *at <= now))
            .any(|(tp, m)| match m {
                Mark::Unknown => true,
                Mark::At(at) => self.stored.get(tp).is_some_and(|end| at.position < *end),
            })
    }

    fn lost(&mut self, e: IndexError) {
        if self.index.take().is_some() {
            log::warn!("{e}; archiving goes on, rows are back-filled when it answers");
        }
        self.retry_at = Instant::now() + RETRY;
    }

    /// One step of catching up: reconnect if it is time, find where rows
    /// end, and write rows for stored objects that have none.
    pub fn work(&mut self, store: &dyn Store) {
        if self.index.is_none() {
            if Instant::now() < self.retry_at {
                return;
            }
            match Index::open(&self.options, &self.store_url) {
                Ok(i) => {
                    log::info!("mysql index reachable again; back-filling rows from the store");
                    self.index = Some(i);
                }
                Err(e) => {
                    log::debug!("{e}");
                    self.retry_at = Instant::now() + RETRY;
                    return;
                }
            }
        }
        let now = Instant::now();
        let tps: Vec<TopicPartition> = self
            .marks
            .keys()
            .filter(|tp| self.paused.get(*tp).is_none_or(|at| *at <= now))
            .cloned()
            .collect();
        for tp in tps {
            match self.catch_up(store, &tp) {
                Ok(()) => {}
                Err(Backfill::Index(e)) => return self.lost(e),
                Err(Backfill::Store(e)) => {
                    log::warn!(
                        "cannot back-fill index rows of {tp} (retried in {}s): {e}",
                        RETRY.as_secs()
                    );
                    self.paused.insert(tp, now + RETRY);
                }
            }
        }
    }

    fn catch_up(&mut self, store: &dyn Store, tp: &TopicPartition) -> Result<(), Backfill> {
        let Some(index) = self.index.as_mut() else {
            return Ok(());
        };
        let end = self.stored.get(tp).copied().unwrap_or(0);
        let list = || store.list(&tp.topic, tp.partition).map_err(Backfill::Store);
        let mut mark = match self.marks[tp] {
            Mark::At(at) => at,
            Mark::Unknown => {
                let rows_end = index
                    .indexed_to(&tp.topic, tp.partition)
                    .map_err(Backfill::Index)?
                    .map(|(position, prev)| ChainPos { position, prev });
                match backfill_from(rows_end, end) {
                    BackfillFrom::Rows(at) => at,
                    BackfillFrom::BeyondArchive { rows_end } => {
                        log::warn!(
                            "the index has rows of {tp} up to offset {rows_end}, beyond the archive's end {end}; run kafka-store reindex"
                        );
                        ChainPos {
                            position: end,
                            prev: None,
                        }
                    }
                    BackfillFrom::FirstObject => ChainPos {
                        position: list()?.first().copied().unwrap_or(end).min(end),
                        prev: None,
                    },
                }
            }
        };
        for _ in 0..BACKFILL_STEP {
            if mark.position >= end {
                break;
            }
            let key = ObjectKey::new(tp, mark.position);
            let Some(info) = store.head(&key).map_err(Backfill::Store)? else {
                let resume = after_gap(&list()?, mark.position, end);
                log::warn!(
                    "the archive of {tp} has no file for offsets {}..{resume}; no index rows there",
                    mark.position
                );
                mark = ChainPos {
                    position: resume,
                    prev: None,
                };
                continue;
            };
            let row = row_of(&key, &info, store.object_url(&key));
            index.upsert(&row).map_err(Backfill::Index)?;
            mark = ChainPos {
                position: row.next_offset,
                prev: Some(row.first_offset),
            };
        }
        self.marks.insert(tp.clone(), Mark::At(mark));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: i64, prev: Option<i64>) -> ChainPos {
        ChainPos { position, prev }
    }

    #[test]
    fn a_backfill_starts_where_the_rows_end_unless_they_pass_the_archive() {
        let table = [
            (
                Some(at(40, Some(30))),
                100,
                BackfillFrom::Rows(at(40, Some(30))),
            ),
            (
                Some(at(100, Some(90))),
                100,
                BackfillFrom::Rows(at(100, Some(90))),
            ),
            (
                Some(at(140, Some(120))),
                100,
                BackfillFrom::BeyondArchive { rows_end: 140 },
            ),
            (None, 100, BackfillFrom::FirstObject),
        ];
        for (rows_end, archive_end, want) in table {
            assert_eq!(
                backfill_from(rows_end, archive_end),
                want,
                "{rows_end:?} {archive_end}"
            );
        }
    }

    #[test]
    fn a_gap_in_the_chain_is_stepped_over_to_the_next_object() {
        let listed = [0, 40, 80, 150, 190];
        for (missing, end, want) in [
            (120, 200, 150),
            (10, 200, 40),
            (195, 200, 200),
            (120, 140, 140),
            (300, 200, 200),
        ] {
            assert_eq!(after_gap(&listed, missing, end), want, "{missing} {end}");
        }
    }

    #[test]
    fn the_row_of_an_object_carries_its_summary() {
        let key = ObjectKey::new(&TopicPartition::new("t", 2), 10);
        let info = ObjectInfo {
            summary: crate::format::avro::Summary {
                next_offset: 20,
                record_count: 9,
                min_timestamp: Some(5),
                max_timestamp: Some(8),
                last_epoch: Some(0),
            },
            size: 300,
            crc32c: Some(7),
            md5: None,
            format_version: 1,
            topic_id: None,
            skipped: None,
        };
        let row = row_of(
            &key,
            &info,
            "file:///a/t/000002/00000000000000000010.avro".into(),
        );
        assert_eq!(
            (
                row.topic.as_str(),
                row.partition,
                row.first_offset,
                row.next_offset
            ),
            ("t", 2, 10, 20)
        );
        assert_eq!((row.record_count, row.bytes, row.crc32c), (9, 300, Some(7)));
        assert_eq!((row.min_timestamp, row.max_timestamp), (Some(5), Some(8)));
    }
}
