//! The optional MySQL index of archived files (`[mysql]`): one row per
//! object with its offset range, record count, time span, size, CRC32C and
//! URL, for quick lookups (`kafka-store locate`) without listing the store.
//!
//! The store stays the ledger: a row is written only after its object
//! exists, rows are idempotent (an identical row is a no-op, a disagreeing
//! one is corrected from the object and logged), and a missing row can
//! always be rebuilt from the store (the pipeline's back-fill, `reindex`).
//!
//! A leaf: it takes its own options and talks to MySQL only; one
//! connection, owned by its user (the committer thread, or a command).

#[cfg(feature = "mysql-index")]
mod mysql;
#[cfg(not(feature = "mysql-index"))]
mod none;
mod row;

#[cfg(feature = "mysql-index")]
pub use mysql::Index;
#[cfg(not(feature = "mysql-index"))]
pub use none::Index;
pub use row::{IndexError, MysqlOptions, Row};
