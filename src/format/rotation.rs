//! The rotation rule: where a file ends, as a pure function of the records it
//! holds, so whoever rebuilds a file after a crash or a rebalance cuts it at
//! the same place.
//!
//! - size: after the record that brings the file's Avro-encoded
//!   (uncompressed) payload to `max_file_bytes`;
//! - count: after `max_file_records` records (0 = no limit);
//! - time: before the first record whose timestamp is at least
//!   `rotate_interval` past the file's first record timestamp.
//!
//! Never reads the clock: the one clock-driven cut, the idle flush, is
//! decided by the pipeline, not here.

use std::time::Duration;

/// The limits of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub max_file_bytes: u64,
    /// 0 = no limit.
    pub max_file_records: u64,
    pub rotate_interval_ms: i64,
}

impl Rules {
    pub fn new(max_file_bytes: u64, max_file_records: u64, rotate_interval: Duration) -> Self {
        Rules {
            max_file_bytes,
            max_file_records,
            rotate_interval_ms: i64::try_from(rotate_interval.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// What the rule needs to know about the open file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fill {
    pub records: u64,
    pub encoded_bytes: u64,
    /// Timestamp of the file's first record.
    pub first_timestamp: Option<i64>,
}

impl Fill {
    /// The file after appending a record of `encoded` bytes at `timestamp`.
    pub fn add(&mut self, encoded: u64, timestamp: i64) {
        self.records += 1;
        self.encoded_bytes += encoded;
        self.first_timestamp.get_or_insert(timestamp);
    }
}

impl Rules {
    /// Must the open file be closed before a record with `timestamp`?
    pub fn close_before(&self, fill: &Fill, timestamp: i64) -> bool {
        fill.first_timestamp
            .is_some_and(|first| timestamp >= first.saturating_add(self.rotate_interval_ms))
    }

    /// Must the open file be closed right after its last record?
    pub fn close_after(&self, fill: &Fill) -> bool {
        fill.encoded_bytes >= self.max_file_bytes
            || (self.max_file_records > 0 && fill.records >= self.max_file_records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The cut points of a record sequence (offset, encoded size, timestamp)
    /// starting at `start`: the `next` offset of every closed file.
    fn cuts(rules: &Rules, records: &[(i64, u64, i64)]) -> Vec<i64> {
        let mut out = Vec::new();
        let mut fill = Fill::default();
        let mut last = None;
        for &(offset, size, ts) in records {
            if rules.close_before(&fill, ts) {
                out.push(last.expect("a file with a first timestamp has a record") + 1);
                fill = Fill::default();
            }
            fill.add(size, ts);
            last = Some(offset);
            if rules.close_after(&fill) {
                out.push(offset + 1);
                fill = Fill::default();
            }
        }
        out
    }

    fn rules(bytes: u64, records: u64, interval: i64) -> Rules {
        Rules {
            max_file_bytes: bytes,
            max_file_records: records,
            rotate_interval_ms: interval,
        }
    }

    #[test]
    fn size_cuts_after_the_record_that_reaches_the_limit() {
        let r = rules(100, 0, i64::MAX);
        let recs: Vec<_> = (0..10).map(|o| (o, 30, 0)).collect();
        assert_eq!(cuts(&r, &recs), vec![4, 8]);
    }

    #[test]
    fn count_cuts_after_n_records() {
        let r = rules(u64::MAX, 3, i64::MAX);
        let recs: Vec<_> = (0..7).map(|o| (o, 1, 0)).collect();
        assert_eq!(cuts(&r, &recs), vec![3, 6]);
    }

    #[test]
    fn time_cuts_before_the_first_record_past_the_interval() {
        let r = rules(u64::MAX, 0, 1000);
        // Timestamps may go backwards; only the distance from the file's first counts.
        let recs = [
            (0, 1, 5000),
            (1, 1, 5999),
            (2, 1, 4000),
            (3, 1, 6000),
            (4, 1, 6500),
        ];
        assert_eq!(cuts(&r, &recs), vec![3]);
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let r = rules(u64::MAX, 0, 3_600_000);
        let fill = Fill {
            records: 1,
            encoded_bytes: 1,
            first_timestamp: Some(i64::MAX - 5),
        };
        assert!(!r.close_before(&fill, i64::MAX - 1));
        let fill = Fill {
            first_timestamp: Some(-1),
            ..fill
        };
        assert!(r.close_before(&fill, 3_600_000));
    }

    proptest! {
        /// Rebuilding from any cut point (as a restarted or rebalanced
        /// process does) cuts the rest of the partition at the same places.
        #[test]
        fn rebuilding_from_a_cut_reproduces_the_remaining_cuts(
            sizes in prop::collection::vec((1u64..500, -50i64..400), 1..300),
            max_bytes in 1u64..3000,
            max_records in 0u64..40,
            interval in 1i64..2000,
            pick in any::<prop::sample::Index>(),
        ) {
            let r = rules(max_bytes, max_records, interval);
            let mut ts = 1_000_000i64;
            let records: Vec<(i64, u64, i64)> = sizes
                .iter()
                .enumerate()
                .map(|(i, &(size, dt))| {
                    ts += dt;
                    (i as i64 * 2 + 7, size, ts)
                })
                .collect();
            let all = cuts(&r, &records);
            if !all.is_empty() {
                let cut = all[pick.index(all.len())];
                let rest: Vec<_> = records.iter().copied().filter(|&(o, _, _)| o >= cut).collect();
                let expected: Vec<i64> = all.iter().copied().filter(|&c| c > cut).collect();
                prop_assert_eq!(cuts(&r, &rest), expected);
            }
        }
    }
}
