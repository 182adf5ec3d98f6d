//! What a restore selects and where it resumes: the offset and time bounds
//! of `--from-*`/`--until-*`, which archive objects may hold selected
//! records, and the mark every restored record carries in a header, which
//! is how a restore started again finds where the last one stopped.
//!
//! Pure: no I/O; it decides, `replay` and `tail` act.

use crate::cli::Bound;
use crate::format::avro::Summary;

/// The header every restored record carries, after its own headers:
/// `SOURCE_TOPIC/PARTITION/OFFSET` of the archived record. The target's
/// tail is the resume point: restore keeps no local state that could be
/// lost, and a record is in the target exactly when its mark is.
pub const MARK_HEADER: &str = "kafka-store.source";

/// Where a restored record came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Mark {
    pub fn value(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    /// Reads a mark header's value (topic names cannot hold `/`).
    pub fn parse(value: &[u8]) -> Option<Mark> {
        let s = std::str::from_utf8(value).ok()?;
        let mut parts = s.rsplitn(3, '/');
        let offset = parts.next()?.parse().ok().filter(|o: &i64| *o >= 0)?;
        let partition = parts.next()?.parse().ok().filter(|p: &i32| *p >= 0)?;
        let topic = parts.next().filter(|t| !t.is_empty() && !t.contains('/'))?;
        Some(Mark {
            topic: topic.to_string(),
            partition,
            offset,
        })
    }
}

/// The records a restore selects: offsets in `[from_offset, until_offset)`
/// and timestamps in `[from_time, until_time)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub from_offset: i64,
    pub until_offset: Option<i64>,
    pub from_time: Option<i64>,
    pub until_time: Option<i64>,
}

impl Selection {
    pub fn new(from: Option<Bound>, until: Option<Bound>) -> Self {
        let mut s = Selection::default();
        match from {
            Some(Bound::Offset(o)) => s.from_offset = o,
            Some(Bound::Time(t)) => s.from_time = Some(t),
            None => {}
        }
        match until {
            Some(Bound::Offset(o)) => s.until_offset = Some(o),
            Some(Bound::Time(t)) => s.until_time = Some(t),
            None => {}
        }
        s
    }

    /// Whether the record at `offset` with `timestamp` is selected.
    pub fn selects(&self, offset: i64, timestamp: i64) -> bool {
        offset >= self.from_offset
            && self.until_offset.is_none_or(|u| offset < u)
            && self.from_time.is_none_or(|t| timestamp >= t)
            && self.until_time.is_none_or(|t| timestamp < t)
    }

    /// Whether an object covering `[first, summary.next_offset)` may hold a
    /// selected record at or after `start` (its summary's timestamps bound
    /// those of its records).
    pub fn may_hold(&self, start: i64, first: i64, summary: &Summary) -> bool {
        let (Some(min), Some(max)) = (summary.min_timestamp, summary.max_timestamp) else {
            return false; // no records: a skipped range
        };
        summary.next_offset > start.max(self.from_offset)
            && self.until_offset.is_none_or(|u| first < u)
            && self.from_time.is_none_or(|t| max >= t)
            && self.until_time.is_none_or(|t| min < t)
    }

    /// Whether nothing at or after `offset` can be selected.
    pub fn done_at(&self, offset: i64) -> bool {
        self.until_offset.is_some_and(|u| offset >= u)
    }
}

/// Where the restore of a partition starts: after the last record already
/// restored (the target's last mark), and not before the selection.
pub fn start_offset(selection: &Selection, restored_to: Option<i64>) -> i64 {
    restored_to.map_or(selection.from_offset, |last| {
        (last + 1).max(selection.from_offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read_back_or_not_at_all() {
        let m = Mark {
            topic: "a.b-c_d".into(),
            partition: 12,
            offset: 9_000_000_000,
        };
        assert_eq!(m.value(), "a.b-c_d/12/9000000000");
        assert_eq!(Mark::parse(m.value().as_bytes()), Some(m));
        for bad in [
            &b""[..],
            b"t/1",
            b"/1/2",
            b"t/-1/2",
            b"t/1/-2",
            b"t/x/2",
            b"a/b/1/2",
            b"\xff/1/2",
        ] {
            assert_eq!(Mark::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn summary(next: i64, min: i64, max: i64) -> Summary {
        Summary {
            next_offset: next,
            record_count: 1,
            min_timestamp: Some(min),
            max_timestamp: Some(max),
            last_epoch: None,
        }
    }

    #[test]
    fn selections_pick_records_and_objects() {
        let all = Selection::default();
        let offsets = Selection::new(Some(Bound::Offset(10)), Some(Bound::Offset(20)));
        let times = Selection::new(Some(Bound::Time(1_000)), Some(Bound::Time(2_000)));
        let mixed = Selection::new(Some(Bound::Offset(10)), Some(Bound::Time(2_000)));
        // (selection, offset, timestamp, selected)
        for (s, offset, ts, want) in [
            (all, 0, -1, true),
            (offsets, 9, 0, false),
            (offsets, 10, 0, true),
            (offsets, 19, 0, true),
            (offsets, 20, 0, false),
            (times, 0, 999, false),
            (times, 0, 1_000, true),
            (times, 0, 1_999, true),
            (times, 0, 2_000, false),
            (mixed, 9, 1_500, false),
            (mixed, 10, 1_500, true),
            (mixed, 11, 2_500, false),
        ] {
            assert_eq!(s.selects(offset, ts), want, "{s:?} {offset} {ts}");
        }
        // (selection, start, first, summary, may hold)
        for (s, start, first, sum, want) in [
            (all, 0, 0, summary(10, 5, 6), true),
            (all, 10, 0, summary(10, 5, 6), false),
            (all, 9, 0, summary(10, 5, 6), true),
            (offsets, 0, 0, summary(10, 5, 6), false),
            (offsets, 0, 0, summary(11, 5, 6), true),
            (offsets, 0, 20, summary(30, 5, 6), false),
            (times, 0, 0, summary(10, 0, 999), false),
            (times, 0, 0, summary(10, 0, 1_000), true),
            (times, 0, 0, summary(10, 2_000, 3_000), false),
            (times, 0, 0, summary(10, 1_999, 3_000), true),
        ] {
            assert_eq!(
                s.may_hold(start, first, &sum),
                want,
                "{s:?} {start} {first} {sum:?}"
            );
        }
        let skipped = Summary {
            min_timestamp: None,
            max_timestamp: None,
            record_count: 0,
            ..summary(10, 0, 0)
        };
        assert!(!all.may_hold(0, 0, &skipped));
        assert!(offsets.done_at(20) && !offsets.done_at(19) && !all.done_at(i64::MAX));
    }

    #[test]
    fn a_restore_resumes_after_its_last_mark() {
        let s = Selection::new(Some(Bound::Offset(100)), None);
        assert_eq!(start_offset(&s, None), 100);
        assert_eq!(start_offset(&s, Some(50)), 100);
        assert_eq!(start_offset(&s, Some(150)), 151);
        assert_eq!(start_offset(&Selection::default(), Some(0)), 1);
    }
}
