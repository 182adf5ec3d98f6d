//! The MySQL index against the store (when `[mysql]` is configured): each
//! readable object of a partition has a row that agrees with it (its
//! offsets, record count, timestamps, size, URL, and its CRC32C when both
//! know one), and each row has an object.
//!
//! Reads the index only: never writes a row, never repairs one (that is
//! `reindex`).

use std::collections::BTreeMap;

use super::chain::Listed;
use super::report::{Check, Finding, Report, Span};
use crate::format::names::TopicPartition;
use crate::index::{Index, Row};
use crate::store::Store;

/// Each readable object has a row that agrees with it; each row has an object.
pub(super) fn check_rows(
    store: &dyn Store,
    index: &mut Index,
    tp: &TopicPartition,
    listed: &[Listed],
    crcs: &[Option<u32>],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut rows: BTreeMap<i64, Row> = index
        .partition_rows(&tp.topic, tp.partition)?
        .into_iter()
        .map(|r| (r.first_offset, r))
        .collect();
    for (l, crc) in listed.iter().zip(crcs) {
        let row = rows.remove(&l.key.first);
        let Ok(info) = &l.info else {
            continue; // already a problem of its own
        };
        let url = store.object_url(&l.key);
        let span = Span::range(l.key.first, info.summary.next_offset);
        let want = Row {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            first_offset: l.key.first,
            next_offset: info.summary.next_offset,
            record_count: info.summary.record_count as i64,
            min_timestamp: info.summary.min_timestamp,
            max_timestamp: info.summary.max_timestamp,
            bytes: info.size as i64,
            crc32c: *crc,
            object_url: url.clone(),
        };
        match row {
            None => report.finding(tp, Finding::new(Check::Index, &url, span, "no index row"))?,
            Some(row) => {
                for m in row_mismatches(&row, &want) {
                    report.finding(tp, Finding::new(Check::Index, &url, span, m))?;
                }
            }
        }
    }
    for row in rows.values() {
        let span = Span::range(row.first_offset, row.next_offset);
        let why = "an index row without an object in the store";
        report.finding(tp, Finding::new(Check::Index, &row.object_url, span, why))?;
    }
    Ok(())
}

/// How an index row disagrees with the row its object makes (a CRC32C only
/// when both know one).
fn row_mismatches(row: &Row, want: &Row) -> Vec<String> {
    let show = |v: Option<i64>| v.map_or("null".to_string(), |v| v.to_string());
    let crc = |c: Option<u32>| c.map_or("null".to_string(), |c| format!("{c:08x}"));
    let mut fields = vec![
        ("topic", row.topic.clone(), want.topic.clone()),
        (
            "partition",
            row.partition.to_string(),
            want.partition.to_string(),
        ),
        (
            "first_offset",
            row.first_offset.to_string(),
            want.first_offset.to_string(),
        ),
        (
            "next_offset",
            row.next_offset.to_string(),
            want.next_offset.to_string(),
        ),
        (
            "record_count",
            row.record_count.to_string(),
            want.record_count.to_string(),
        ),
        (
            "min_timestamp",
            show(row.min_timestamp),
            show(want.min_timestamp),
        ),
        (
            "max_timestamp",
            show(row.max_timestamp),
            show(want.max_timestamp),
        ),
        ("bytes", row.bytes.to_string(), want.bytes.to_string()),
        (
            "object_url",
            row.object_url.clone(),
            want.object_url.clone(),
        ),
    ];
    if row.crc32c.is_some() && want.crc32c.is_some() {
        fields.push(("crc32c", crc(row.crc32c), crc(want.crc32c)));
    }
    fields
        .into_iter()
        .filter(|(_, r, w)| r != w)
        .map(|(what, r, w)| format!("index row says {what} {r}, the object {w}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_row_must_agree_with_its_object() {
        let want = Row::example();
        let table: Vec<(Row, Vec<&str>)> = vec![
            (want.clone(), vec![]),
            (
                Row {
                    crc32c: None,
                    ..want.clone()
                },
                vec![],
            ),
            (
                Row {
                    next_offset: 25,
                    ..want.clone()
                },
                vec!["index row says next_offset 25, the object 20"],
            ),
            (
                Row {
                    crc32c: Some(8),
                    min_timestamp: None,
                    ..want.clone()
                },
                vec![
                    "index row says min_timestamp null, the object 5",
                    "index row says crc32c 00000008, the object 00000007",
                ],
            ),
            (
                Row {
                    object_url: "file:///b".into(),
                    ..want.clone()
                },
                vec![
                    "index row says object_url file:///b, the object file:///a/t/000001/00000000000000000010.avro",
                ],
            ),
        ];
        for (row, expected) in table {
            assert_eq!(row_mismatches(&row, &want), expected, "{row:?}");
        }
    }
}
