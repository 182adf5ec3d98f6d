//! What the index holds and how it fails: the row of one archived file, the
//! options of `[mysql]`, and typed errors (archiving goes on while MySQL is
//! unavailable; a misconfiguration needs an operator).

use std::fmt;
use std::time::Duration;

use crate::redact::redact_url;

/// The columns the table must have (vendor-config/mysql-schema.sql).
#[cfg(feature = "mysql-index")]
pub(super) const COLUMNS: [&str; 12] = [
    "store",
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

/// `[mysql]`: where archived files are indexed.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlOptions {
    /// `mysql://user:password@host:port/database`
    pub url: String,
    pub table: String,
    /// Create the table if it is missing.
    pub create_table: bool,
    pub connect_timeout: Duration,
    /// Upper bound of one statement.
    pub request_timeout: Duration,
}

impl fmt::Debug for MysqlOptions {
    /// The URL's password is not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlOptions")
            .field("url", &redact_url(&self.url))
            .field("table", &self.table)
            .field("create_table", &self.create_table)
            .finish()
    }
}

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
    /// Whether two rows say the same of an object (a missing CRC32C, as a
    /// local store reports it, agrees with any).
    #[cfg_attr(not(feature = "mysql-index"), allow(dead_code))]
    pub(super) fn agrees(&self, other: &Row) -> bool {
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

/// Index failures; the variant says what the caller does about it.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(not(feature = "mysql-index"), allow(dead_code))]
#[non_exhaustive]
pub enum IndexError {
    /// MySQL cannot be reached, dropped the connection or timed out:
    /// archiving goes on, rows are back-filled when it answers.
    #[error("mysql index unavailable: {what}: {why}")]
    Unavailable { what: String, why: String },
    /// MySQL refused the user, the password, the database or a grant.
    #[error("mysql index: {what}: {why}")]
    Refused { what: String, why: String },
    /// The table is missing, lacks columns, or is not what kafka-store writes.
    #[error("mysql index: {0}")]
    Table(String),
    /// `mysql.url` cannot be used.
    #[error("mysql.url: {0}")]
    BadUrl(String),
    /// This build was made without the `mysql-index` feature.
    #[cfg(not(feature = "mysql-index"))]
    #[error("this build has no MySQL index (build with the mysql-index feature)")]
    NotBuilt,
}

impl IndexError {
    /// Whether waiting may help (everything else needs an operator).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, IndexError::Unavailable { .. })
    }
}

#[cfg(test)]
impl Row {
    /// A row of `t/1` offsets 10..20, for tests here and of its readers.
    pub(crate) fn example() -> Row {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row::example()
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

    #[test]
    fn the_password_of_the_url_is_not_shown() {
        let o = MysqlOptions {
            url: "mysql://u:secret@h:3306/db".into(),
            table: "t".into(),
            create_table: true,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        };
        let shown = format!("{o:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("mysql://u:***@h:3306/db"), "{shown}");
    }
}
