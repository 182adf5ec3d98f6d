//! `[mysql]`: the optional index (mapped into the index's own `MysqlOptions`).

use serde::Deserialize;

use super::value::{ConfigError, Dur, invalid, positive};
use crate::index::MysqlOptions;

/// `[mysql]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMysql {
    url: String,
    table: Option<String>,
    #[serde(default = "yes")]
    create_table: bool,
    connect_timeout: Option<Dur>,
    request_timeout: Option<Dur>,
}

fn yes() -> bool {
    true
}

/// The database a `mysql://` URL names (its path), if any.
fn database(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("mysql://")?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let (_, path) = host.split_once('/')?;
    let db = path.split(['?', '#']).next().unwrap_or("");
    (!db.is_empty()).then_some(db)
}

/// Validates `[mysql]`.
pub fn validate(m: RawMysql) -> Result<MysqlOptions, ConfigError> {
    if !cfg!(feature = "mysql-index") {
        return Err(invalid(
            "mysql",
            "this build has no MySQL index (build with the mysql-index feature, or remove [mysql])",
        ));
    }
    if !m.url.starts_with("mysql://") {
        return Err(invalid(
            "mysql.url",
            "must look like mysql://user:password@host:3306/database",
        ));
    }
    // The URL holds the password: the message never quotes it.
    if database(&m.url).is_none() {
        return Err(invalid(
            "mysql.url",
            "names no database: add it after the host, mysql://user:password@host:3306/DATABASE",
        ));
    }
    let table = m.table.unwrap_or_else(|| "kafka_store_files".into());
    let plain = !table.is_empty()
        && table.len() <= 64
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !plain {
        return Err(invalid(
            "mysql.table",
            format!("{table:?} must be letters, digits and '_'"),
        ));
    }
    Ok(MysqlOptions {
        url: m.url,
        table,
        create_table: m.create_table,
        connect_timeout: positive("mysql.connect_timeout", m.connect_timeout, "10s")?,
        request_timeout: positive("mysql.request_timeout", m.request_timeout, "30s")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_must_name_a_database() {
        for (url, want) in [
            ("mysql://u:p@db:3306/archive", Some("archive")),
            ("mysql://u:p@db/archive?ssl-mode=REQUIRED", Some("archive")),
            ("mysql://u:p/w@db:3306/archive", Some("archive")),
            ("mysql://db:3306/archive", Some("archive")),
            ("mysql://u:p@db:3306", None),
            ("mysql://u:p@db:3306/", None),
            ("mysql://u:p@db:3306/?ssl-mode=REQUIRED", None),
            ("postgres://u:p@db/archive", None),
        ] {
            assert_eq!(database(url), want, "{url}");
        }
    }
}
