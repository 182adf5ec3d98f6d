//! The tiling of a partition's chain, from the store's listing alone: the
//! objects with their metadata (or why the store cannot give it), and what
//! the listing shows without opening an object: holes, overlaps, history
//! breaks (a change of topic id along the chain), objects that do not
//! advance or cannot be read, and explicit skipped ranges (notes).
//!
//! Lists and heads only: never opens an object, never reads Kafka or MySQL,
//! never writes anything.

use uuid::Uuid;

use super::report::{Check, Finding, Span};
use crate::format::names::{
    ObjectKey, TilingProblem, TopicPartition, history_breaks, tiling_problems,
};
use crate::store::{ObjectInfo, Store, StoreError};

/// One object of a partition's listing.
pub(super) struct Listed {
    pub(super) key: ObjectKey,
    /// Its metadata, or why the store cannot give it.
    pub(super) info: Result<ObjectInfo, String>,
    /// Where it ends: its next offset, or for an object without metadata
    /// the first offset of the object after it (unknown for the last).
    pub(super) end: Option<i64>,
}

/// The partition's objects with their metadata. One listing with metadata
/// when every object has it; else one look-up per object, so that an
/// object that is not an archive file is a finding, not a failure.
pub(super) fn listing(store: &dyn Store, tp: &TopicPartition) -> Result<Vec<Listed>, StoreError> {
    let objects: Vec<(i64, Result<ObjectInfo, String>)> =
        match store.list_infos(&tp.topic, tp.partition) {
            Ok(infos) => infos.into_iter().map(|(f, i)| (f, Ok(i))).collect(),
            Err(StoreError::NotArchive { .. }) => store
                .list(&tp.topic, tp.partition)?
                .into_iter()
                .map(|first| match store.head(&ObjectKey::new(tp, first)) {
                    Ok(Some(info)) => Ok((first, Ok(info))),
                    Ok(None) => Ok((first, Err("vanished while listing".to_string()))),
                    Err(StoreError::NotArchive { why, .. }) => Ok((first, Err(why))),
                    Err(e) => Err(e),
                })
                .collect::<Result<_, _>>()?,
            Err(e) => return Err(e),
        };
    let firsts: Vec<i64> = objects.iter().map(|(f, _)| *f).collect();
    Ok(objects
        .into_iter()
        .enumerate()
        .map(|(i, (first, info))| {
            let end = match &info {
                Ok(info) => Some(info.summary.next_offset),
                Err(_) => firsts.get(i + 1).copied(),
            };
            Listed {
                key: ObjectKey::new(tp, first),
                info,
                end,
            }
        })
        .collect())
}

/// What the listing alone shows: holes, overlaps, history breaks, objects
/// that do not advance or cannot be read, skipped ranges.
/// `url` names an object.
pub(super) fn chain_findings(
    url: &dyn Fn(&ObjectKey) -> String,
    tp: &TopicPartition,
    listed: &[Listed],
) -> Vec<Finding> {
    let url = |first: i64| url(&ObjectKey::new(tp, first));
    let mut findings = Vec::new();
    for l in listed {
        let first = l.key.first;
        let span = Span {
            from: first,
            to: l.end,
        };
        match &l.info {
            Err(why) => findings.push(Finding::new(Check::Unreadable, &url(first), span, why)),
            Ok(info) => {
                let next = info.summary.next_offset;
                if next <= first {
                    findings.push(Finding::new(
                        Check::Chain,
                        &url(first),
                        Span::at(first),
                        format!("its next offset {next} is not after its first offset"),
                    ));
                }
                if let Some(reason) = info.skipped {
                    findings.push(Finding::new(
                        Check::Skipped,
                        &url(first),
                        span,
                        format!("not archived on purpose ({reason})"),
                    ));
                }
            }
        }
    }
    let ranges: Vec<(i64, i64)> = listed
        .iter()
        .filter_map(|l| Some((l.key.first, l.end?)))
        .collect();
    for problem in tiling_problems(&ranges) {
        findings.push(match problem {
            TilingProblem::Gap { from, to } => Finding::new(
                Check::Hole,
                &url(from),
                Span::range(from, to),
                "no object covers these offsets (the chain expects an object at this name)",
            ),
            TilingProblem::Overlap { first, prev_next } => Finding::new(
                Check::Overlap,
                &url(first),
                Span::range(first, prev_next),
                format!("starts before the objects before it end at {prev_next}"),
            ),
        });
    }
    let ids: Vec<(i64, Option<Uuid>)> = listed
        .iter()
        .filter_map(|l| Some((l.key.first, l.info.as_ref().ok()?.topic_id)))
        .collect();
    for (at, before, after) in history_breaks(&ids) {
        let end = listed
            .iter()
            .find(|l| l.key.first == at)
            .and_then(|l| l.end);
        findings.push(Finding::new(
            Check::HistoryBreak,
            &url(at),
            Span { from: at, to: end },
            format!("read from topic id {after}, the objects before it from {before}"),
        ));
    }
    findings.sort_by_key(|f| f.span.from);
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::avro::{Skipped, Summary};

    fn info(next: i64, id: u128, skipped: Option<Skipped>) -> ObjectInfo {
        ObjectInfo {
            summary: Summary {
                next_offset: next,
                record_count: 0,
                min_timestamp: None,
                max_timestamp: None,
                last_epoch: None,
            },
            size: 10,
            crc32c: None,
            md5: None,
            format_version: 2,
            topic_id: Some(Uuid::from_u128(id)),
            skipped,
        }
    }

    #[test]
    fn the_chain_lists_every_hole_overlap_break_and_skipped_range() {
        let tp = TopicPartition::new("t", 0);
        let listed = |objects: Vec<(i64, Result<ObjectInfo, String>)>| -> Vec<Listed> {
            let firsts: Vec<i64> = objects.iter().map(|(f, _)| *f).collect();
            objects
                .into_iter()
                .enumerate()
                .map(|(i, (first, info))| Listed {
                    key: ObjectKey::new(&tp, first),
                    end: match &info {
                        Ok(info) => Some(info.summary.next_offset),
                        Err(_) => firsts.get(i + 1).copied(),
                    },
                    info,
                })
                .collect()
        };
        let brief = |fs: Vec<Finding>| -> Vec<(Check, i64, String, Span)> {
            fs.into_iter()
                .map(|f| {
                    let name = f.object.rsplit('/').next().unwrap_or_default().to_string();
                    (f.check, f.span.from, name, f.span)
                })
                .collect()
        };
        let name = |first: i64| format!("{first:020}.avro");
        type Case = (
            Vec<(i64, Result<ObjectInfo, String>)>,
            Vec<(Check, i64, String, Span)>,
        );
        let table: Vec<Case> = vec![
            (
                vec![(0, Ok(info(5, 1, None))), (5, Ok(info(9, 1, None)))],
                vec![],
            ),
            (
                vec![
                    (0, Ok(info(5, 1, Some(Skipped::StartLatest)))),
                    (7, Ok(info(9, 1, None))),
                    (8, Ok(info(12, 2, None))),
                    (12, Err("bad magic".into())),
                    (20, Ok(info(30, 2, None))),
                    (30, Err("truncated".into())),
                ],
                vec![
                    (Check::Skipped, 0, name(0), Span::range(0, 5)),
                    (Check::Hole, 5, name(5), Span::range(5, 7)),
                    (Check::Overlap, 8, name(8), Span::range(8, 9)),
                    (Check::HistoryBreak, 8, name(8), Span::range(8, 12)),
                    (Check::Unreadable, 12, name(12), Span::range(12, 20)),
                    (Check::Unreadable, 30, name(30), Span { from: 30, to: None }),
                ],
            ),
            (
                vec![(0, Ok(info(0, 1, None)))],
                vec![(Check::Chain, 0, name(0), Span::at(0))],
            ),
        ];
        for (objects, want) in table {
            let url = |key: &ObjectKey| format!("file:///a/{}", key.path());
            let found = brief(chain_findings(&url, &tp, &listed(objects)));
            assert_eq!(found, want);
        }
    }
}
