//! Names and chain arithmetic: a Kafka partition's name, archive object
//! names, and how a partition's objects chain and tile.
//!
//! A file of partition P of topic T starting at offset F is the object
//! `{topic}/{P:06}/{F:020}.avro` under the store's prefix. Zero-padding makes
//! the lexical order of names the numeric order of offsets. Each object's
//! `next-offset` names the next object, so a partition's files form a chain.
//!
//! Pure functions only: no I/O (chain following takes the lookup as a closure).

use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

/// A topic and one of its partitions; cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        TopicPartition {
            topic: Arc::from(topic),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// The file-name suffix of archive objects.
pub const SUFFIX: &str = ".avro";

/// Kafka's rule for topic names (the name is also a folder in the store).
pub fn is_topic_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The name of one archive object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub topic: Arc<str>,
    pub partition: i32,
    pub first: i64,
}

impl ObjectKey {
    pub fn new(tp: &TopicPartition, first: i64) -> Self {
        ObjectKey {
            topic: tp.topic.clone(),
            partition: tp.partition,
            first,
        }
    }

    /// `topic/000003/00000000000000000042.avro`
    pub fn path(&self) -> String {
        format!(
            "{}/{}",
            partition_dir(&self.topic, self.partition),
            file_name(self.first)
        )
    }

    pub fn tp(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    /// Parses a path made by [`ObjectKey::path`].
    pub fn parse(path: &str) -> Option<ObjectKey> {
        let mut parts = path.trim_start_matches('/').rsplitn(3, '/');
        let file = parts.next()?;
        let partition = parse_partition_dir(parts.next()?)?;
        let topic = parts.next()?;
        if topic.is_empty() || topic.contains('/') {
            return None;
        }
        Some(ObjectKey {
            topic: Arc::from(topic),
            partition,
            first: parse_file_name(file)?,
        })
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// `topic/000003`
pub fn partition_dir(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition:06}")
}

/// `00000000000000000042.avro`
pub fn file_name(first: i64) -> String {
    format!("{first:020}{SUFFIX}")
}

/// The first offset named by an archive file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The partition number named by a partition folder, if it is one.
pub fn parse_partition_dir(name: &str) -> Option<i32> {
    if name.len() != 6 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// Where following a chain stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEnd {
    /// The first offset with no object: where writing resumes.
    pub position: i64,
    /// The first offset of the last object passed on the way, if any.
    pub last: Option<i64>,
}

/// A chain that cannot be followed: an object whose `next` does not move forward.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("archive object at offset {first} says its next offset is {next}, which is not after it")]
pub struct BrokenChain {
    pub first: i64,
    pub next: i64,
}

/// Follows the chain from `start`: `next_of(first)` returns the `next-offset`
/// of the object named `first`, or None if there is none.
pub fn follow_chain<E: From<BrokenChain>>(
    start: i64,
    mut next_of: impl FnMut(i64) -> Result<Option<i64>, E>,
) -> Result<ChainEnd, E> {
    let mut position = start;
    let mut last = None;
    while let Some(next) = next_of(position)? {
        if next <= position {
            return Err(BrokenChain {
                first: position,
                next,
            }
            .into());
        }
        last = Some(position);
        position = next;
    }
    Ok(ChainEnd { position, last })
}

/// What is wrong with a partition's files, first problem only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TilingProblem {
    /// Offsets `[from, to)` are in no file.
    Gap { from: i64, to: i64 },
    /// The file at `first` starts before the previous file ended at `prev_next`.
    Overlap { first: i64, prev_next: i64 },
}

impl fmt::Display for TilingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TilingProblem::Gap { from, to } => {
                write!(f, "gap: offsets {from}..{to} are in no file")
            }
            TilingProblem::Overlap { first, prev_next } => write!(
                f,
                "overlap: file {first} starts before the previous file ends at {prev_next}"
            ),
        }
    }
}

/// Checks that files given as (first, next), sorted by first, tile their
/// offset range with no gap and no overlap.
pub fn check_tiling(files: &[(i64, i64)]) -> Option<TilingProblem> {
    files.windows(2).find_map(|w| {
        let (_, prev_next) = w[0];
        let (first, _) = w[1];
        match first.cmp(&prev_next) {
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(TilingProblem::Gap {
                from: prev_next,
                to: first,
            }),
            std::cmp::Ordering::Less => Some(TilingProblem::Overlap { first, prev_next }),
        }
    })
}

/// Where a partition's chain changes history: the first object (by first
/// offset) whose topic id differs from the one before it that records one.
/// Objects written before topic ids were recorded (None) break nothing.
pub fn history_break(files: &[(i64, Option<Uuid>)]) -> Option<(i64, Uuid, Uuid)> {
    let mut seen: Option<Uuid> = None;
    for (first, id) in files {
        match (seen, id) {
            (Some(before), Some(now)) if before != *now => return Some((*first, before, *now)),
            (_, Some(now)) => seen = Some(*now),
            _ => {}
        }
    }
    None
}

/// Every hole and overlap of a partition's files given as (first, next),
/// sorted by first: a file that starts after every file before it ended
/// leaves a gap, one that starts before one of them ended overlaps it
/// (`prev_next` is then the furthest end of the files before it).
pub fn tiling_problems(files: &[(i64, i64)]) -> Vec<TilingProblem> {
    let mut problems = Vec::new();
    let mut end: Option<i64> = None;
    for &(first, next) in files {
        if let Some(prev_next) = end {
            match first.cmp(&prev_next) {
                std::cmp::Ordering::Equal => {}
                std::cmp::Ordering::Greater => problems.push(TilingProblem::Gap {
                    from: prev_next,
                    to: first,
                }),
                std::cmp::Ordering::Less => {
                    problems.push(TilingProblem::Overlap { first, prev_next })
                }
            }
        }
        end = Some(end.map_or(next, |e| e.max(next)));
    }
    problems
}

/// Every change of history along a partition's chain, as
/// [`history_break`] finds the first: (first offset of the object, the id
/// before it, its id).
pub fn history_breaks(files: &[(i64, Option<Uuid>)]) -> Vec<(i64, Uuid, Uuid)> {
    let mut breaks = Vec::new();
    let mut seen: Option<Uuid> = None;
    for (first, id) in files {
        if let Some(now) = id {
            if let Some(before) = seen.filter(|b| b != now) {
                breaks.push((*first, before, *now));
            }
            seen = Some(*now);
        }
    }
    breaks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn names_are_zero_padded_and_parse_back() {
        let key = ObjectKey::new(&TopicPartition::new("events.v1", 3), 42);
        assert_eq!(key.path(), "events.v1/000003/00000000000000000042.avro");
        assert_eq!(ObjectKey::parse(&key.path()), Some(key.clone()));
        assert_eq!(ObjectKey::parse(&format!("prefix/{}", key.path())), None);
        assert_eq!(parse_file_name("00000000000000000042.avro"), Some(42));
        for bad in [
            "42.avro",
            "0000000000000000004x.avro",
            "00000000000000000042.avr",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        assert_eq!(parse_partition_dir("000012"), Some(12));
        assert_eq!(parse_partition_dir("12"), None);
        // Lexical order is numeric order.
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn topic_names_follow_kafka() {
        let long = "t".repeat(249);
        for (name, ok) in [
            ("events", true),
            (".internal-ish_v1.2", true),
            (long.as_str(), true),
            ("lost+found", false),
            ("", false),
            (".", false),
            ("..", false),
            ("a b", false),
            ("ünicode", false),
        ] {
            assert_eq!(is_topic_name(name), ok, "{name:?}");
        }
        assert!(!is_topic_name(&"t".repeat(250)));
    }

    #[test]
    fn a_chain_is_followed_to_the_first_missing_object() {
        let objects: HashMap<i64, i64> = [(0, 10), (10, 25), (25, 26)].into();
        let end = follow_chain::<BrokenChain>(0, |f| Ok(objects.get(&f).copied())).unwrap();
        assert_eq!(end.position, 26);
        assert_eq!(end.last, Some(25));
        let end = follow_chain::<BrokenChain>(10, |f| Ok(objects.get(&f).copied())).unwrap();
        assert_eq!(end.position, 26);
        let end = follow_chain::<BrokenChain>(99, |f| Ok(objects.get(&f).copied())).unwrap();
        assert_eq!(
            end,
            ChainEnd {
                position: 99,
                last: None
            }
        );
    }

    #[test]
    fn a_chain_that_does_not_advance_is_an_error() {
        let objects: HashMap<i64, i64> = [(0, 10), (10, 10)].into();
        let err = follow_chain::<BrokenChain>(0, |f| Ok(objects.get(&f).copied())).unwrap_err();
        assert_eq!(
            err,
            BrokenChain {
                first: 10,
                next: 10
            }
        );
    }

    #[test]
    fn a_change_of_topic_id_along_the_chain_is_a_history_break() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(history_break(&[(0, Some(a)), (5, Some(a))]), None);
        assert_eq!(history_break(&[(0, None), (5, Some(a)), (9, None)]), None);
        assert_eq!(
            history_break(&[(0, Some(a)), (5, None), (9, Some(b))]),
            Some((9, a, b))
        );
        assert_eq!(history_break(&[]), None);
    }

    #[test]
    fn tiling_finds_the_first_gap_or_overlap() {
        assert_eq!(check_tiling(&[(0, 5), (5, 9), (9, 12)]), None);
        assert_eq!(
            check_tiling(&[(0, 5), (7, 9)]),
            Some(TilingProblem::Gap { from: 5, to: 7 })
        );
        assert_eq!(
            check_tiling(&[(0, 5), (4, 9)]),
            Some(TilingProblem::Overlap {
                first: 4,
                prev_next: 5
            })
        );
        assert_eq!(check_tiling(&[]), None);
    }

    #[test]
    fn tiling_problems_lists_every_gap_and_overlap() {
        use TilingProblem::{Gap, Overlap};
        type Case = (Vec<(i64, i64)>, Vec<TilingProblem>);
        let table: Vec<Case> = vec![
            (vec![], vec![]),
            (vec![(0, 5)], vec![]),
            (vec![(0, 5), (5, 9), (9, 12)], vec![]),
            (
                vec![(0, 5), (7, 9), (9, 10), (12, 20)],
                vec![Gap { from: 5, to: 7 }, Gap { from: 10, to: 12 }],
            ),
            (
                vec![(0, 5), (4, 9), (9, 12), (11, 13)],
                vec![
                    Overlap {
                        first: 4,
                        prev_next: 5,
                    },
                    Overlap {
                        first: 11,
                        prev_next: 12,
                    },
                ],
            ),
            // A file inside an earlier one, then a gap after the furthest end.
            (
                vec![(0, 10), (2, 4), (12, 13)],
                vec![
                    Overlap {
                        first: 2,
                        prev_next: 10,
                    },
                    Gap { from: 10, to: 12 },
                ],
            ),
        ];
        for (files, want) in table {
            assert_eq!(tiling_problems(&files), want, "{files:?}");
            assert_eq!(check_tiling(&files).is_none(), want.is_empty(), "{files:?}");
        }
    }

    #[test]
    fn history_breaks_lists_every_change_of_topic_id() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        type Case = (Vec<(i64, Option<Uuid>)>, Vec<(i64, Uuid, Uuid)>);
        let table: Vec<Case> = vec![
            (vec![], vec![]),
            (vec![(0, Some(a)), (5, Some(a))], vec![]),
            (vec![(0, None), (5, Some(a)), (9, None)], vec![]),
            (vec![(0, Some(a)), (5, None), (9, Some(b))], vec![(9, a, b)]),
            (
                vec![(0, Some(a)), (5, Some(b)), (9, Some(b)), (12, Some(a))],
                vec![(5, a, b), (12, b, a)],
            ),
        ];
        for (files, want) in table {
            assert_eq!(history_breaks(&files), want, "{files:?}");
            assert_eq!(history_break(&files), want.first().copied(), "{files:?}");
        }
    }
}
