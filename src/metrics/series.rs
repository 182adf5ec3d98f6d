//! The process's series: what the pipeline reports at the points that
//! already know the facts (a fetch saw the log end, a file was stored, a
//! file opened or closed, a partition stopped), kept in atomics and short
//! locks, and read into metric families by the responder and the progress
//! line.
//!
//! Partition labels are capped: the first `max_partition_labels`
//! partitions this process sees get series of their own for its lifetime;
//! every partition counts in the totals. Never blocks the pipeline on a
//! reader and never decides anything about the data.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::text::{Family, Kind, Sample, encode};
use crate::format::names::TopicPartition;

/// The default of `metrics.max_partition_labels`.
pub const MAX_PARTITION_LABELS: usize = 1000;

/// Log ends remembered per partition to date its oldest unarchived record.
const ARRIVALS: usize = 32;
/// Log ends seen within this long of the last one remembered join it.
const GRAIN: Duration = Duration::from_secs(1);

const R: Ordering = Ordering::Relaxed;

/// The series of one run of `kafka-store run`.
pub struct Metrics {
    max_labels: usize,
    started: Instant,
    partitions: RwLock<BTreeMap<TopicPartition, Arc<Series>>>,
    files: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    skipped: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(MAX_PARTITION_LABELS)
    }
}

/// One partition's facts.
struct Series {
    /// Among the first `max_labels` partitions: has series of its own.
    labeled: bool,
    /// The last stable offset of the last fetch; -1 unknown.
    log_end: AtomicI64,
    /// How far the store covers the partition; -1 unknown.
    archived: AtomicI64,
    arrivals: Mutex<Arrivals>,
    files: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    /// Unix milliseconds of the last object stored; 0 never.
    last_commit_ms: AtomicU64,
    /// Milliseconds after `started` (plus one) the open file was opened; 0 none.
    open_since: AtomicU64,
    halted: AtomicBool,
}

/// What the progress line reports: totals at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    pub records: u64,
    pub bytes: u64,
    /// Records between the archive end and the log end, all partitions.
    pub lag_records: u64,
    /// Partitions whose lag is known.
    pub partitions: usize,
    pub open_files: usize,
    pub oldest_open: Option<Duration>,
    pub halted: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Metrics {
    pub fn new(max_partition_labels: usize) -> Metrics {
        Metrics {
            max_labels: max_partition_labels,
            started: Instant::now(),
            partitions: RwLock::default(),
            files: AtomicU64::new(0),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    fn series(&self, tp: &TopicPartition) -> Arc<Series> {
        if let Some(s) = self.partitions.read().expect("metrics").get(tp) {
            return s.clone();
        }
        let mut map = self.partitions.write().expect("metrics");
        let labeled = map.len() < self.max_labels;
        map.entry(tp.clone())
            .or_insert_with(|| {
                Arc::new(Series {
                    labeled,
                    log_end: AtomicI64::new(-1),
                    archived: AtomicI64::new(-1),
                    arrivals: Mutex::default(),
                    files: AtomicU64::new(0),
                    records: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                    last_commit_ms: AtomicU64::new(0),
                    open_since: AtomicU64::new(0),
                    halted: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// A fetch of `tp` saw its log end (last stable offset) at `end`.
    pub fn log_end(&self, tp: &TopicPartition, end: i64) {
        let s = self.series(tp);
        s.log_end.store(end, R);
        lock(&s.arrivals).saw(end, Instant::now());
    }

    /// The store covers `tp` up to `position` (a start, an adopted chain).
    pub fn archived(&self, tp: &TopicPartition, position: i64) {
        self.series(tp).archived.fetch_max(position, R);
    }

    /// This process stored an object of `tp` ending at `next`.
    pub fn committed(&self, tp: &TopicPartition, next: i64, records: u64, bytes: u64, skip: bool) {
        let s = self.series(tp);
        s.archived.fetch_max(next, R);
        for (one, all, n) in [
            (&s.files, &self.files, 1),
            (&s.records, &self.records, records),
            (&s.bytes, &self.bytes, bytes),
        ] {
            one.fetch_add(n, R);
            all.fetch_add(n, R);
        }
        if skip {
            self.skipped.fetch_add(1, R);
        }
        s.last_commit_ms.store(unix_ms(), R);
    }

    /// The file `tp` is building opened at `since` (None: no file open).
    pub fn open_file(&self, tp: &TopicPartition, since: Option<Instant>) {
        let at = since.map_or(0, |t| {
            t.saturating_duration_since(self.started).as_millis() as u64 + 1
        });
        self.series(tp).open_since.store(at, R);
    }

    /// `tp` stopped (or could not start): it is not archived any further.
    pub fn halted(&self, tp: &TopicPartition) {
        self.series(tp).halted.store(true, R);
    }

    /// `tp` is no longer this process's: its lag, open file and halt are
    /// forgotten, its counters kept.
    pub fn forget(&self, tp: &TopicPartition) {
        let s = self.series(tp);
        s.log_end.store(-1, R);
        s.archived.store(-1, R);
        *lock(&s.arrivals) = Arrivals::default();
        s.open_since.store(0, R);
        s.halted.store(false, R);
    }

    /// The totals now.
    pub fn totals(&self) -> Totals {
        self.read(Instant::now(), |_, _| {})
    }

    /// The exposition text: every family, with the store's retries by
    /// reason, the spool's bytes on disk and the brokers' quota waits,
    /// which their owners count.
    pub fn render(
        &self,
        store_retries: &[(&'static str, u64)],
        spool_bytes: u64,
        kafka_throttle: Duration,
    ) -> String {
        let mut families = self.families();
        let mut retries = Family::new(
            "kafka_store_store_retries_total",
            "Store requests retried, by reason: the HTTP status, or timeout, connection, dns, other.",
            Kind::Counter,
        );
        retries.samples = store_retries
            .iter()
            .map(|(reason, n)| Sample {
                labels: vec![("reason", reason.to_string())],
                value: *n as f64,
            })
            .collect();
        families.push(retries);
        families.push(Family::single(
            "kafka_store_spool_bytes",
            "Bytes on disk of the spool files being built or waiting for the store.",
            Kind::Gauge,
            spool_bytes as f64,
        ));
        families.push(Family::single(
            "kafka_store_kafka_throttle_seconds_total",
            "How long Kafka brokers held this process back by a client quota (the throttle_time_ms of their responses, summed).",
            Kind::Counter,
            kafka_throttle.as_secs_f64(),
        ));
        encode(&families)
    }

    /// Every family, partition series for the labelled partitions only.
    fn families(&self) -> Vec<Family> {
        use Kind::{Counter, Gauge};
        let mut lag = Family::new(
            "kafka_store_partition_lag_records",
            "Records between the partition's archive end (what the store holds) and its log end (last stable offset) at the last fetch.",
            Gauge,
        );
        let mut lag_s = Family::new(
            "kafka_store_partition_lag_seconds",
            "Age of the partition's oldest record not yet in the store, dated when a fetch of this process first saw the log end pass it (to about a second; 0 when caught up).",
            Gauge,
        );
        let mut files = Family::new(
            "kafka_store_partition_committed_files_total",
            "Archive files of the partition this process stored (created, or found identical).",
            Counter,
        );
        let mut records = Family::new(
            "kafka_store_partition_committed_records_total",
            "Records in the archive files of the partition this process stored.",
            Counter,
        );
        let mut bytes = Family::new(
            "kafka_store_partition_committed_bytes_total",
            "Bytes of the archive files of the partition this process stored.",
            Counter,
        );
        let mut last = Family::new(
            "kafka_store_partition_last_commit_timestamp_seconds",
            "Unix time this process last stored an archive file of the partition.",
            Gauge,
        );
        let mut max_age = 0.0f64;
        let t = self.read(Instant::now(), |tp, p| {
            let labels = || {
                vec![
                    ("topic", tp.topic.to_string()),
                    ("partition", tp.partition.to_string()),
                ]
            };
            let sample = |value: f64| Sample {
                labels: labels(),
                value,
            };
            if let Some((n, age)) = p.lag {
                max_age = max_age.max(age.as_secs_f64());
                if p.labeled {
                    lag.samples.push(sample(n as f64));
                    lag_s.samples.push(sample(age.as_secs_f64()));
                }
            }
            if p.labeled && p.files > 0 {
                files.samples.push(sample(p.files as f64));
                records.samples.push(sample(p.records as f64));
                bytes.samples.push(sample(p.bytes as f64));
                last.samples.push(sample(p.last_commit_ms as f64 / 1000.0));
            }
        });
        vec![
            lag,
            Family::single(
                "kafka_store_lag_records",
                "Records not yet in the store, summed over the partitions this process archives.",
                Gauge,
                t.lag_records as f64,
            ),
            lag_s,
            Family::single(
                "kafka_store_lag_seconds",
                "The largest kafka_store_partition_lag_seconds over the partitions this process archives.",
                Gauge,
                max_age,
            ),
            files,
            Family::single(
                "kafka_store_committed_files_total",
                "Archive files this process stored, all partitions.",
                Counter,
                t.files as f64,
            ),
            records,
            Family::single(
                "kafka_store_committed_records_total",
                "Records in the archive files this process stored, all partitions.",
                Counter,
                t.records as f64,
            ),
            bytes,
            Family::single(
                "kafka_store_committed_bytes_total",
                "Bytes of the archive files this process stored, all partitions.",
                Counter,
                t.bytes as f64,
            ),
            last,
            Family::single(
                "kafka_store_skipped_ranges_total",
                "Skipped ranges (start = latest, records deleted before they were archived) this process stored as files of their own.",
                Counter,
                self.skipped.load(R) as f64,
            ),
            Family::single(
                "kafka_store_halted_partitions",
                "Partitions of this process that stopped or could not start (a data problem; see the log).",
                Gauge,
                t.halted as f64,
            ),
            Family::single(
                "kafka_store_open_files",
                "Archive files being built in the spool.",
                Gauge,
                t.open_files as f64,
            ),
            Family::single(
                "kafka_store_oldest_open_file_age_seconds",
                "Seconds since the oldest archive file being built was opened (0 when none is open).",
                Gauge,
                t.oldest_open.map_or(0.0, |d| d.as_secs_f64()),
            ),
        ]
    }

    /// Walks the partitions (in order) and sums the totals.
    fn read(&self, now: Instant, mut each: impl FnMut(&TopicPartition, &Partition)) -> Totals {
        let all: Vec<_> = self
            .partitions
            .read()
            .expect("metrics")
            .iter()
            .map(|(tp, s)| (tp.clone(), s.clone()))
            .collect();
        let mut t = Totals {
            files: self.files.load(R),
            records: self.records.load(R),
            bytes: self.bytes.load(R),
            ..Totals::default()
        };
        for (tp, s) in all {
            let (end, archived) = (s.log_end.load(R), s.archived.load(R));
            let lag = (end >= 0 && archived >= 0).then(|| {
                let age = lock(&s.arrivals).age(archived, now);
                ((end - archived).max(0) as u64, age)
            });
            let open = match s.open_since.load(R) {
                0 => None,
                ms => Some(
                    now.saturating_duration_since(self.started + Duration::from_millis(ms - 1)),
                ),
            };
            let halted = s.halted.load(R);
            if let Some((n, _)) = lag {
                t.lag_records += n;
                t.partitions += 1;
            }
            if let Some(age) = open {
                t.open_files += 1;
                t.oldest_open = Some(t.oldest_open.map_or(age, |o| o.max(age)));
            }
            t.halted += usize::from(halted);
            let p = Partition {
                labeled: s.labeled,
                lag,
                files: s.files.load(R),
                records: s.records.load(R),
                bytes: s.bytes.load(R),
                last_commit_ms: s.last_commit_ms.load(R),
            };
            each(&tp, &p);
        }
        t
    }
}

/// One partition as read for the families.
struct Partition {
    labeled: bool,
    lag: Option<(u64, Duration)>,
    files: u64,
    records: u64,
    bytes: u64,
    last_commit_ms: u64,
}

/// When fetches first saw the log end pass which offsets: `(end, when)`,
/// ends rising. Records below `end` (and at or above the previous entry's
/// end) were first seen at `when`. Bounded: when full, neighbours merge,
/// each pair keeping the earlier time (an age is overstated, never
/// understated).
#[derive(Debug, Default)]
struct Arrivals {
    seen: VecDeque<(i64, Instant)>,
}

impl Arrivals {
    fn saw(&mut self, end: i64, now: Instant) {
        match self.seen.back_mut() {
            Some((e, _)) if end <= *e => {}
            Some((e, t)) if now.saturating_duration_since(*t) < GRAIN => *e = end,
            _ => {
                if self.seen.len() == ARRIVALS {
                    let old = std::mem::take(&mut self.seen);
                    let mut pairs = old.into_iter();
                    while let Some((e, t)) = pairs.next() {
                        let e = pairs.next().map_or(e, |(later, _)| later);
                        self.seen.push_back((e, t));
                    }
                }
                self.seen.push_back((end, now));
            }
        }
    }

    /// How long the record at `archived` (the oldest not in the store) has
    /// been seen waiting; zero when every record seen is archived.
    fn age(&mut self, archived: i64, now: Instant) -> Duration {
        while self.seen.front().is_some_and(|(e, _)| *e <= archived) {
            self.seen.pop_front();
        }
        self.seen
            .front()
            .map_or(Duration::ZERO, |(_, t)| now.saturating_duration_since(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn family<'a>(fs: &'a [Family], name: &str) -> &'a Family {
        fs.iter().find(|f| f.name == name).unwrap()
    }

    #[test]
    fn the_oldest_unarchived_record_is_dated_when_first_seen() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // (seen log end, at second) then (archived, at second) -> age in seconds.
        type Case<'a> = (&'a [(i64, u64)], i64, u64, u64);
        let table: &[Case] = &[
            (&[], 0, 10, 0),
            (&[(100, 0)], 0, 10, 10),
            (&[(100, 0)], 100, 10, 0),
            (&[(100, 0), (200, 5)], 100, 10, 5),
            (&[(100, 0), (200, 5)], 150, 10, 5),
            (&[(100, 0), (200, 5)], 99, 10, 10),
            // Within a second of the last one: joins it (the earlier time).
            (&[(100, 0), (150, 5), (200, 5)], 160, 10, 5),
            // A lower end (a new leader) changes nothing.
            (&[(100, 0), (50, 5)], 60, 10, 10),
        ];
        for (seen, archived, now, want) in table {
            let mut a = Arrivals::default();
            for (end, s) in *seen {
                a.saw(*end, at(*s));
            }
            assert_eq!(
                a.age(*archived, at(*now)),
                Duration::from_secs(*want),
                "{seen:?} archived {archived}"
            );
        }
    }

    #[test]
    fn arrivals_stay_bounded_and_never_understate() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        for i in 0..1000u64 {
            a.saw((i as i64 + 1) * 10, t0 + Duration::from_secs(i * 2));
        }
        assert!(a.seen.len() <= ARRIVALS);
        let now = t0 + Duration::from_secs(3000);
        for archived in [0, 5000, 9000, 9995] {
            let exact = Duration::from_secs(3000 - (archived as u64 / 10) * 2);
            assert!(a.age(archived, now) >= exact, "archived {archived}");
        }
        assert_eq!(a.age(10_000, now), Duration::ZERO);
    }

    #[test]
    fn partition_labels_are_capped_and_totals_count_every_partition() {
        let m = Metrics::new(2);
        for p in 0..4 {
            m.archived(&tp(p), 0);
            m.log_end(&tp(p), 10);
            m.committed(&tp(p), 5, 5, 100, false);
        }
        let fs = m.families();
        for name in [
            "kafka_store_partition_lag_records",
            "kafka_store_partition_committed_files_total",
            "kafka_store_partition_committed_bytes_total",
        ] {
            let labels: Vec<_> = family(&fs, name)
                .samples
                .iter()
                .map(|s| s.labels[1].1.clone())
                .collect();
            assert_eq!(labels, ["0", "1"], "{name}");
        }
        let total = |name| family(&fs, name).samples[0].value;
        assert_eq!(total("kafka_store_lag_records"), 20.0);
        assert_eq!(total("kafka_store_committed_files_total"), 4.0);
        assert_eq!(total("kafka_store_committed_bytes_total"), 400.0);
        assert_eq!(total("kafka_store_committed_records_total"), 20.0);
    }

    #[test]
    fn open_files_halts_and_skips_are_counted_and_forgotten() {
        let m = Metrics::new(10);
        let opened = Instant::now();
        m.open_file(&tp(0), Some(opened));
        m.open_file(&tp(1), Some(opened));
        m.open_file(&tp(1), None);
        m.halted(&tp(2));
        m.committed(&tp(3), 7, 0, 90, true);
        let t = m.totals();
        assert_eq!((t.open_files, t.halted), (1, 1));
        assert!(t.oldest_open.is_some());
        let fs = m.families();
        assert_eq!(
            family(&fs, "kafka_store_skipped_ranges_total").samples[0].value,
            1.0
        );
        let text = m.render(
            &[("503", 4), ("timeout", 0)],
            1234,
            Duration::from_millis(1500),
        );
        for line in [
            "# TYPE kafka_store_store_retries_total counter",
            "kafka_store_store_retries_total{reason=\"503\"} 4",
            "kafka_store_store_retries_total{reason=\"timeout\"} 0",
            "kafka_store_spool_bytes 1234",
            "kafka_store_kafka_throttle_seconds_total 1.5",
            "kafka_store_open_files 1",
            "kafka_store_halted_partitions 1",
            "kafka_store_partition_committed_bytes_total{topic=\"t\",partition=\"3\"} 90",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        m.forget(&tp(0));
        m.forget(&tp(2));
        let t = m.totals();
        assert_eq!((t.open_files, t.halted, t.files), (0, 0, 1));
    }
}
