//! The optional MySQL index of archived files (`[mysql]`): one row per
//! object with its offset range, record count, time span, size, CRC32C and
//! URL, for quick lookups (`kafka-store locate`) without listing the store.
//!
//! The store stays the ledger: a row is written only after its object
//! exists, rows are idempotent (an identical row is a no-op, a disagreeing
//! one is corrected from the object and logged), and a missing row can
//! always be rebuilt from the store. One connection, owned by its user (the
//! committer thread, or a command). Never writes to the store or to Kafka.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::{ConfigError, MysqlConfig};
use crate::kafka::TopicPartition;
use crate::naming::ObjectKey;
use crate::store::ObjectInfo;
use crate::store::Store;

/// The columns the table must have (vendor-config/mysql-schema.sql).
#[cfg(feature = "mysql-index")]
const COLUMNS: [&str; 11] = [
    "topic",
    "partition",
    "first_offset",
    "next_offset",
    "record_count",
    "min_timestamp",
    "max_timestamp",
    "bytes",
    "crc32c",
    "object_url",
    "created_at",
];

/// One archived file, as the index records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub next_offset: i64,
    pub record_count: i64,
    pub min_timestamp: Option<i64>,
    pub max_timestamp: Option<i64>,
    pub bytes: i64,
    pub crc32c: Option<u32>,
    pub object_url: String,
}

impl Row {
    pub fn new(key: &ObjectKey, info: &ObjectInfo, object_url: String) -> Row {
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

    /// Whether two rows say the same of an object (a missing CRC32C, as a
    /// local store reports it, agrees with any).
    #[cfg_attr(not(feature = "mysql-index"), allow(dead_code))]
    fn agrees(&self, other: &Row) -> bool {
        let crc = self.crc32c.is_none() || other.crc32c.is_none() || self.crc32c == other.crc32c;
        crc && Row {
            crc32c: None,
            ..self.clone()
        } == Row {
            crc32c: None,
            ..other.clone()
        }
    }
}

/// Index failures, by what the caller does about them.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// MySQL is unreachable or busy: archiving goes on, rows are back-filled later.
    #[error("mysql index unavailable: {0}")]
    Unavailable(String),
    /// The configuration or the table is wrong: an operator must fix it.
    #[error("mysql index: {0}")]
    Fatal(String),
}

impl IndexError {
    /// As a command's error: a fatal one is the operator's configuration
    /// to fix (exit code 2).
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            IndexError::Fatal(_) => ConfigError(self.to_string()).into(),
            other => other.into(),
        }
    }
}

/// The MySQL connection (with the `mysql-index` feature).
#[cfg(feature = "mysql-index")]
mod imp {
    use mysql::prelude::Queryable;
    use mysql::{Conn, Opts, OptsBuilder};

    use super::{COLUMNS, IndexError, Row};

    /// ER_DUP_ENTRY
    const DUPLICATE_KEY: u16 = 1062;
    use crate::config::MysqlConfig;

    /// MySQL's error codes that mean the configuration is wrong.
    fn classify(e: mysql::Error, what: &str) -> IndexError {
        match e {
            mysql::Error::MySqlError(m) => {
                let hint = match m.code {
                    1044 | 1045 => " (check the user and password in mysql.url)",
                    1049 => " (create the database, or fix mysql.url)",
                    1142 | 1143 => " (grant the user SELECT, INSERT, UPDATE, DELETE on the table)",
                    1146 => {
                        " (create it from vendor-config/mysql-schema.sql, or set mysql.create_table = true)"
                    }
                    _ => "",
                };
                match m.code {
                    1044 | 1045 | 1049 | 1142 | 1143 | 1146 | 1054 | 1064 => {
                        IndexError::Fatal(format!("{what}: {}{hint}", m.message))
                    }
                    _ => IndexError::Unavailable(format!("{what}: {}", m.message)),
                }
            }
            mysql::Error::UrlError(u) => IndexError::Fatal(format!("mysql.url: {u}")),
            other => IndexError::Unavailable(format!("{what}: {other}")),
        }
    }

    /// A connection to the index table.
    pub struct Index {
        conn: Conn,
        table: String,
    }

    impl Index {
        /// Connects, and checks (or creates) the table.
        pub fn open(config: &MysqlConfig) -> Result<Index, IndexError> {
            let opts = Opts::from_url(&config.url)
                .map_err(|e| IndexError::Fatal(format!("mysql.url: {e}")))?;
            let opts = OptsBuilder::from_opts(opts)
                .tcp_connect_timeout(Some(config.connect_timeout))
                .read_timeout(Some(config.request_timeout))
                .write_timeout(Some(config.request_timeout))
                .prefer_socket(false);
            let what = "cannot connect to the mysql index";
            let mut conn = Conn::new(opts).map_err(|e| classify(e, what))?;
            conn.query_drop("SET SESSION innodb_lock_wait_timeout = 50")
                .map_err(|e| classify(e, what))?;
            let mut index = Index {
                conn,
                table: config.table.clone(),
            };
            index.check_table(config.create_table)?;
            Ok(index)
        }

        fn check_table(&mut self, create: bool) -> Result<(), IndexError> {
            let table = self.table.clone();
            let have: Vec<String> = self
                .conn
                .exec(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?",
                    (table.as_str(),),
                )
                .map_err(|e| classify(e, "cannot read the index table's columns"))?;
            if have.is_empty() {
                if !create {
                    return Err(IndexError::Fatal(format!(
                        "table {table} does not exist (create it from vendor-config/mysql-schema.sql, or set mysql.create_table = true)"
                    )));
                }
                let ddl = include_str!("../vendor-config/mysql-schema.sql")
                    .replace("`kafka_store_files`", &format!("`{table}`"));
                self.conn
                    .query_drop(ddl)
                    .map_err(|e| classify(e, &format!("cannot create table {table}")))?;
                log::info!("created mysql index table {table}");
                return Ok(());
            }
            let missing: Vec<&str> = COLUMNS
                .iter()
                .copied()
                .filter(|c| !have.iter().any(|h| h.eq_ignore_ascii_case(c)))
                .collect();
            if !missing.is_empty() {
                return Err(IndexError::Fatal(format!(
                    "table {table} lacks column(s) {} (see vendor-config/mysql-schema.sql)",
                    missing.join(", ")
                )));
            }
            Ok(())
        }

        fn select(&self) -> String {
            format!(
                "SELECT topic, `partition`, first_offset, next_offset, record_count, min_timestamp, max_timestamp, bytes, crc32c, object_url FROM `{}`",
                self.table
            )
        }

        fn rows(&mut self, query: String, params: mysql::Params) -> Result<Vec<Row>, IndexError> {
            type Tuple = (
                String,
                i32,
                i64,
                i64,
                i64,
                Option<i64>,
                Option<i64>,
                i64,
                Option<u32>,
                String,
            );
            let rows: Vec<Tuple> = self
                .conn
                .exec(query, params)
                .map_err(|e| classify(e, "cannot read the index"))?;
            Ok(rows
                .into_iter()
                .map(|r| Row {
                    topic: r.0,
                    partition: r.1,
                    first_offset: r.2,
                    next_offset: r.3,
                    record_count: r.4,
                    min_timestamp: r.5,
                    max_timestamp: r.6,
                    bytes: r.7,
                    crc32c: r.8,
                    object_url: r.9,
                })
                .collect())
        }

        /// Rows of one partition matching `more`: SQL after the partition's
        /// condition, its one `?` (if any) bound to `value`.
        fn partition_where(
            &mut self,
            topic: &str,
            partition: i32,
            more: &str,
            value: Option<i64>,
        ) -> Result<Vec<Row>, IndexError> {
            let q = format!(
                "{} WHERE topic = ? AND `partition` = ? {more}",
                self.select()
            );
            let params = match value {
                Some(v) => (topic, partition, v).into(),
                None => (topic, partition).into(),
            };
            self.rows(q, params)
        }

        /// The row of the object starting at `first`, if any.
        pub fn get(
            &mut self,
            topic: &str,
            partition: i32,
            first: i64,
        ) -> Result<Option<Row>, IndexError> {
            Ok(self
                .partition_where(topic, partition, "AND first_offset = ?", Some(first))?
                .pop())
        }

        /// Records an object (idempotent; a disagreeing row is corrected).
        pub fn upsert(&mut self, row: &Row) -> Result<(), IndexError> {
            let existing = self.get(&row.topic, row.partition, row.first_offset)?;
            let what = format!(
                "cannot index {}/{} offset {}",
                row.topic, row.partition, row.first_offset
            );
            let values = (
                row.next_offset,
                row.record_count,
                row.min_timestamp,
                row.max_timestamp,
                row.bytes,
                row.crc32c,
                row.object_url.as_str(),
                row.topic.as_str(),
                row.partition,
                row.first_offset,
            );
            match existing {
                Some(old) if old.agrees(row) => Ok(()),
                Some(old) => {
                    let q = format!(
                        "UPDATE `{}` SET next_offset = ?, record_count = ?, min_timestamp = ?, max_timestamp = ?, bytes = ?, crc32c = ?, object_url = ? WHERE topic = ? AND `partition` = ? AND first_offset = ?",
                        self.table
                    );
                    self.conn
                        .exec_drop(q, values)
                        .map_err(|e| classify(e, &what))?;
                    log::warn!(
                        "corrected the index row of {}/{} offset {} (it said next offset {}, {} records; the object says {}, {})",
                        row.topic,
                        row.partition,
                        row.first_offset,
                        old.next_offset,
                        old.record_count,
                        row.next_offset,
                        row.record_count
                    );
                    Ok(())
                }
                None => {
                    let q = format!(
                        "INSERT INTO `{}` (next_offset, record_count, min_timestamp, max_timestamp, bytes, crc32c, object_url, topic, `partition`, first_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        self.table
                    );
                    match self.conn.exec_drop(q, values) {
                        Ok(()) => Ok(()),
                        // Another process wrote the row meanwhile: compare with it.
                        Err(mysql::Error::MySqlError(e)) if e.code == DUPLICATE_KEY => {
                            self.upsert(row)
                        }
                        Err(e) => Err(classify(e, &what)),
                    }
                }
            }
        }

        /// Where the partition's rows end (rows are written in offset
        /// order): the next row's expected first offset, and the first offset
        /// of the last row. None without rows.
        pub fn indexed_to(
            &mut self,
            topic: &str,
            partition: i32,
            store_url: &str,
        ) -> Result<Option<(i64, Option<i64>)>, IndexError> {
            // Rows of this store only (the URL starts with the store's).
            let q = format!(
                "SELECT first_offset, next_offset FROM `{}` WHERE topic = ? AND `partition` = ? AND LEFT(object_url, ?) = ? ORDER BY first_offset DESC LIMIT 1",
                self.table
            );
            let prefix = format!("{store_url}/");
            let last: Option<(i64, i64)> = self
                .conn
                .exec_first(
                    q,
                    (topic, partition, prefix.chars().count(), prefix.as_str()),
                )
                .map_err(|e| classify(e, "cannot read the index"))?;
            Ok(last.map(|(first, next)| (next, Some(first))))
        }

        /// The row whose range holds `offset`.
        pub fn at_offset(
            &mut self,
            topic: &str,
            partition: i32,
            offset: i64,
        ) -> Result<Option<Row>, IndexError> {
            let more = "AND first_offset <= ? ORDER BY first_offset DESC LIMIT 1";
            Ok(self
                .partition_where(topic, partition, more, Some(offset))?
                .pop()
                .filter(|r| offset < r.next_offset))
        }

        /// The rows, in offset order, from the first that may hold a record at
        /// or after `ts` (its max timestamp reaches `ts`).
        pub fn from_time(
            &mut self,
            topic: &str,
            partition: i32,
            ts: i64,
        ) -> Result<Vec<Row>, IndexError> {
            let more = "AND max_timestamp >= ? ORDER BY first_offset";
            self.partition_where(topic, partition, more, Some(ts))
        }

        /// Every row of a partition, in offset order.
        pub fn partition_rows(
            &mut self,
            topic: &str,
            partition: i32,
        ) -> Result<Vec<Row>, IndexError> {
            self.partition_where(topic, partition, "ORDER BY first_offset", None)
        }

        /// Deletes a row (reindex: the object is not in the store).
        pub fn delete(
            &mut self,
            topic: &str,
            partition: i32,
            first: i64,
        ) -> Result<(), IndexError> {
            let q = format!(
                "DELETE FROM `{}` WHERE topic = ? AND `partition` = ? AND first_offset = ?",
                self.table
            );
            self.conn
                .exec_drop(q, (topic, partition, first))
                .map_err(|e| classify(e, "cannot delete an index row"))
        }
    }
}

/// Without the `mysql-index` feature there is no connection (the config
/// refuses `[mysql]`), only the type.
#[cfg(not(feature = "mysql-index"))]
mod imp {
    use super::{IndexError, Row};
    use crate::config::MysqlConfig;

    pub enum Index {}

    impl Index {
        pub fn open(_: &MysqlConfig) -> Result<Index, IndexError> {
            Err(IndexError::Fatal("this build has no MySQL index".into()))
        }
        pub fn upsert(&mut self, _: &Row) -> Result<(), IndexError> {
            match *self {}
        }
        pub fn indexed_to(
            &mut self,
            _: &str,
            _: i32,
            _: &str,
        ) -> Result<Option<(i64, Option<i64>)>, IndexError> {
            match *self {}
        }
        pub fn at_offset(&mut self, _: &str, _: i32, _: i64) -> Result<Option<Row>, IndexError> {
            match *self {}
        }
        pub fn from_time(&mut self, _: &str, _: i32, _: i64) -> Result<Vec<Row>, IndexError> {
            match *self {}
        }
        pub fn partition_rows(&mut self, _: &str, _: i32) -> Result<Vec<Row>, IndexError> {
            match *self {}
        }
        pub fn delete(&mut self, _: &str, _: i32, _: i64) -> Result<(), IndexError> {
            match *self {}
        }
    }
}

pub use imp::Index;

/// How long to wait before trying an unavailable index again.
pub const RETRY: Duration = Duration::from_secs(10);
/// Objects looked up per back-fill step (the committer stays responsive).
const BACKFILL_STEP: usize = 32;

/// Where a partition's rows stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    /// Not known yet (the index was unavailable when the partition started).
    Unknown,
    /// Rows exist for every object before `next`; `prev` ends there.
    At { next: i64, prev: Option<i64> },
}

/// The committer's side of the index: writes a row for every stored object
/// (store first, then index, then the Kafka offset), and back-fills rows
/// from the store when MySQL was away or a process died in between.
pub struct Keeper {
    config: MysqlConfig,
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
    pub fn open(config: &MysqlConfig) -> Result<Keeper, IndexError> {
        let index = match Index::open(config) {
            Ok(i) => Some(i),
            Err(IndexError::Unavailable(why)) => {
                log::warn!("{why}; archiving goes on, rows are back-filled when it answers");
                None
            }
            Err(fatal) => return Err(fatal),
        };
        Ok(Keeper {
            config: config.clone(),
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
    pub fn stored(&mut self, tp: &TopicPartition, next: i64, row: Option<Row>) {
        let end = self.stored.entry(tp.clone()).or_insert(next);
        *end = (*end).max(next);
        if let (Some(row), Some(Mark::At { next: at, .. })) = (row, self.marks.get(tp).copied())
            && at == row.first_offset
            && let Some(index) = self.index.as_mut()
        {
            match index.upsert(&row) {
                Ok(_) => {
                    self.marks.insert(
                        tp.clone(),
                        Mark::At {
                            next: row.next_offset,
                            prev: Some(row.first_offset),
                        },
                    );
                }
                Err(e) => self.lost(e),
            }
        }
    }

    /// Where the index covers a partition: Kafka offsets are committed up
    /// to there only, so a restart back-fills from the committed offset.
    pub fn covered(&self, tp: &TopicPartition) -> Option<(i64, Option<i64>)> {
        match self.marks.get(tp) {
            Some(Mark::At { next, prev }) => Some((*next, *prev)),
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
                Mark::At { next, .. } => self.stored.get(tp).is_some_and(|end| next < end),
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
            match Index::open(&self.config) {
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
            if let Err(e) = self.catch_up(store, &tp) {
                match e {
                    Backfill::Index(e) => return self.lost(e),
                    Backfill::Store(why) => {
                        log::warn!(
                            "cannot back-fill index rows of {tp} (retried in {}s): {why}",
                            RETRY.as_secs()
                        );
                        self.paused.insert(tp, now + RETRY);
                    }
                }
            }
        }
    }

    fn catch_up(&mut self, store: &dyn Store, tp: &TopicPartition) -> Result<(), Backfill> {
        let Some(index) = self.index.as_mut() else {
            return Ok(());
        };
        let end = self.stored.get(tp).copied().unwrap_or(0);
        let mut mark = match self.marks[tp] {
            Mark::At { next, prev } => (next, prev),
            Mark::Unknown => match index
                .indexed_to(&tp.topic, tp.partition, &store.url())
                .map_err(Backfill::Index)?
            {
                Some((next, prev)) if next <= end => (next, prev),
                Some((next, _)) => {
                    log::warn!(
                        "the index has rows of {tp} up to offset {next}, beyond the archive's end {end}; run kafka-store reindex"
                    );
                    (end, None)
                }
                // No row yet: from the first object of the partition.
                None => {
                    let first = store
                        .list(&tp.topic, tp.partition)
                        .map_err(|e| Backfill::Store(e.to_string()))?;
                    (first.first().copied().unwrap_or(end).min(end), None)
                }
            },
        };
        for _ in 0..BACKFILL_STEP {
            if mark.0 >= end {
                break;
            }
            let key = ObjectKey::new(tp, mark.0);
            let Some(info) = store
                .head(&key)
                .map_err(|e| Backfill::Store(e.to_string()))?
            else {
                // A gap in the chain (records skipped with on_gap = "skip"):
                // go on at the next object.
                let firsts = store
                    .list(&tp.topic, tp.partition)
                    .map_err(|e| Backfill::Store(e.to_string()))?;
                let resume = firsts
                    .into_iter()
                    .find(|f| *f > mark.0)
                    .unwrap_or(end)
                    .min(end);
                log::warn!(
                    "the archive of {tp} has no file for offsets {}..{resume}; no index rows there",
                    mark.0
                );
                mark = (resume, None);
                continue;
            };
            let row = Row::new(&key, &info, store.object_url(&key));
            index.upsert(&row).map_err(Backfill::Index)?;
            mark = (row.next_offset, Some(row.first_offset));
        }
        self.marks.insert(
            tp.clone(),
            Mark::At {
                next: mark.0,
                prev: mark.1,
            },
        );
        Ok(())
    }
}

/// Why a back-fill step stopped.
enum Backfill {
    Index(IndexError),
    Store(String),
}

/// `kafka-store reindex`: rebuilds the rows of every partition in the store
/// from the objects' metadata (rows without an object are deleted).
/// Returns (rows written or checked, rows deleted).
pub fn reindex(
    index: &mut Index,
    store: &dyn Store,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<(usize, usize)> {
    let (mut written, mut deleted) = (0, 0);
    for topic in store.topics()? {
        for partition in store.partitions(&topic)? {
            let infos = store.list_infos(&topic, partition)?;
            for (first, info) in &infos {
                let key = ObjectKey {
                    topic: topic.as_str().into(),
                    partition,
                    first: *first,
                };
                index.upsert(&Row::new(&key, info, store.object_url(&key)))?;
                written += 1;
            }
            for row in index.partition_rows(&topic, partition)? {
                if !infos.iter().any(|(first, _)| *first == row.first_offset) {
                    index.delete(&topic, partition, row.first_offset)?;
                    deleted += 1;
                }
            }
            writeln!(
                out,
                "{topic}/{partition}: {} object(s) indexed",
                infos.len()
            )?;
        }
    }
    Ok((written, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            topic: "t".into(),
            partition: 1,
            first_offset: 10,
            next_offset: 20,
            record_count: 10,
            min_timestamp: Some(5),
            max_timestamp: Some(9),
            bytes: 100,
            crc32c: Some(7),
            object_url: "file:///a/t/000001/00000000000000000010.avro".into(),
        }
    }

    #[test]
    fn rows_agree_unless_the_object_says_otherwise() {
        let a = row();
        assert!(a.agrees(&a));
        assert!(a.agrees(&Row {
            crc32c: None,
            ..a.clone()
        }));
        assert!(!a.agrees(&Row {
            next_offset: 21,
            ..a.clone()
        }));
        assert!(!a.agrees(&Row {
            crc32c: Some(8),
            ..a.clone()
        }));
    }
}
