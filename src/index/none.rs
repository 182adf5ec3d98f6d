//! Without the `mysql-index` feature there is no connection (the config
//! refuses `[mysql]`), only the type.

use super::row::{IndexError, MysqlOptions, Row};

pub enum Index {}

impl Index {
    pub fn open(_: &MysqlOptions, _: &str) -> Result<Index, IndexError> {
        Err(IndexError::NotBuilt)
    }
    pub fn upsert(&mut self, _: &Row) -> Result<(), IndexError> {
        match *self {}
    }
    pub fn indexed_to(
        &mut self,
        _: &str,
        _: i32,
    ) -> Result<Option<(i64, Option<i64>)>, IndexError> {
        match *self {}
    }
    pub fn at_offset(&mut self, _: &str, _: i32, _: i64) -> Result<Option<Row>, IndexError> {
        match *self {}
    }
    pub fn since_time(&mut self, _: &str, _: i32, _: i64) -> Result<Vec<Row>, IndexError> {
        match *self {}
    }
    pub fn partition_rows(&mut self, _: &str, _: i32) -> Result<Vec<Row>, IndexError> {
        match *self {}
    }
    pub fn delete(&mut self, _: &str, _: i32, _: i64) -> Result<(), IndexError> {
        match *self {}
    }
}
