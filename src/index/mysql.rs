//! The MySQL connection (with the `mysql-index` feature): one `Conn`,
//! statements with timeouts, the table checked (or created) at open.

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder};

use super::row::{COLUMNS, IndexError, MysqlOptions, Row};

/// ER_DUP_ENTRY
const DUPLICATE_KEY: u16 = 1062;

/// What a MySQL error means for the caller: the error codes that mean the
/// configuration is wrong, the rest is unavailability.
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
            let why = format!("{}{hint}", m.message);
            let what = what.to_string();
            match m.code {
                1044 | 1045 | 1049 | 1142 | 1143 => IndexError::Refused { what, why },
                1146 | 1054 | 1064 => IndexError::Table(format!("{what}: {why}")),
                _ => IndexError::Unavailable { what, why },
            }
        }
        mysql::Error::UrlError(u) => IndexError::BadUrl(u.to_string()),
        other => IndexError::Unavailable {
            what: what.to_string(),
            why: other.to_string(),
        },
    }
}

/// A connection to the index table.
pub struct Index {
    conn: Conn,
    table: String,
    /// The store whose rows this connection reads and writes.
    store: String,
}

impl Index {
    /// Connects, and checks (or creates) the table; rows are those of
    /// the store at `store_url`.
    pub fn open(config: &MysqlOptions, store_url: &str) -> Result<Index, IndexError> {
        let opts = Opts::from_url(&config.url).map_err(|e| IndexError::BadUrl(e.to_string()))?;
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
            store: store_url.to_string(),
        };
        index.check_table(config.create_table)?;
        Ok(index)
    }

    fn check_table(&mut self, create: bool) -> Result<(), IndexError> {
        let table = self.table.clone();
        // Each column with its collation (NULL for numbers).
        let columns: Vec<(String, Option<String>)> = self
            .conn
            .exec(
                "SELECT column_name, collation_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
                (table.as_str(),),
            )
            .map_err(|e| classify(e, "cannot read the index table's columns"))?;
        let have: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
        if have.is_empty() {
            if !create {
                return Err(IndexError::Table(format!(
                    "table {table} does not exist (create it from vendor-config/mysql-schema.sql, or set mysql.create_table = true)"
                )));
            }
            let ddl = include_str!("../../vendor-config/mysql-schema.sql")
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
            let upgrade = if missing == ["store"] {
                "; a table of kafka-store 0.1 is upgraded with vendor-config/mysql-migrate-store.sql"
            } else {
                ""
            };
            return Err(IndexError::Table(format!(
                "table {table} lacks column(s) {} (see vendor-config/mysql-schema.sql{upgrade})",
                missing.join(", ")
            )));
        }
        let folded: Vec<&str> = columns
            .iter()
            .filter(|(name, collation)| {
                ["store", "topic"]
                    .iter()
                    .any(|c| name.eq_ignore_ascii_case(c))
                    && collation.as_deref().is_some_and(|c| !c.ends_with("_bin"))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if !folded.is_empty() {
            log::warn!(
                "mysql index table {table} compares {} ignoring case: topics that differ only in case share rows; run vendor-config/mysql-migrate-binary.sql",
                folded.join(" and ")
            );
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
            "{} WHERE store = ? AND topic = ? AND `partition` = ? {more}",
            self.select()
        );
        let store = self.store.clone();
        let params = match value {
            Some(v) => (store, topic, partition, v).into(),
            None => (store, topic, partition).into(),
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
            self.store.as_str(),
            row.topic.as_str(),
            row.partition,
            row.first_offset,
        );
        match existing {
            Some(old) if old.agrees(row) => Ok(()),
            Some(old) => {
                let q = format!(
                    "UPDATE `{}` SET next_offset = ?, record_count = ?, min_timestamp = ?, max_timestamp = ?, bytes = ?, crc32c = ?, object_url = ? WHERE store = ? AND topic = ? AND `partition` = ? AND first_offset = ?",
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
                    "INSERT INTO `{}` (next_offset, record_count, min_timestamp, max_timestamp, bytes, crc32c, object_url, store, topic, `partition`, first_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    self.table
                );
                match self.conn.exec_drop(q, values) {
                    Ok(()) => Ok(()),
                    // Another process wrote the row meanwhile: compare with it.
                    Err(mysql::Error::MySqlError(e)) if e.code == DUPLICATE_KEY => self.upsert(row),
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
    ) -> Result<Option<(i64, Option<i64>)>, IndexError> {
        let more = "ORDER BY first_offset DESC LIMIT 1";
        Ok(self
            .partition_where(topic, partition, more, None)?
            .pop()
            .map(|r| (r.next_offset, Some(r.first_offset))))
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
    pub fn since_time(
        &mut self,
        topic: &str,
        partition: i32,
        ts: i64,
    ) -> Result<Vec<Row>, IndexError> {
        let more = "AND max_timestamp >= ? ORDER BY first_offset";
        self.partition_where(topic, partition, more, Some(ts))
    }

    /// Every row of a partition, in offset order.
    pub fn partition_rows(&mut self, topic: &str, partition: i32) -> Result<Vec<Row>, IndexError> {
        self.partition_where(topic, partition, "ORDER BY first_offset", None)
    }

    /// Deletes a row (reindex: the object is not in the store).
    pub fn delete(&mut self, topic: &str, partition: i32, first: i64) -> Result<(), IndexError> {
        let q = format!(
            "DELETE FROM `{}` WHERE store = ? AND topic = ? AND `partition` = ? AND first_offset = ?",
            self.table
        );
        self.conn
            .exec_drop(q, (self.store.as_str(), topic, partition, first))
            .map_err(|e| classify(e, "cannot delete an index row"))
    }
}
