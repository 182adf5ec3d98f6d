//! Where a run starts: `kafka.start` for an empty archive, the chain for
//! everything else, and `kafka.on_gap` when Kafka deleted records before
//! they were archived (at start-up and while running).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{self, Frame, Proc, Setup, StreamingProducer};

fn records(seed: u64, n: usize) -> Vec<support::Rec> {
    support::gen_records(seed, n, 1, 1_700_000_000_000 + seed as i64 * 1_000_000)
}

fn first_offsets(s: &Setup, topic: &str) -> Vec<(i64, i64)> {
    files(s, topic).iter().map(|f| (f.first, f.next)).collect()
}

fn files(s: &Setup, topic: &str) -> Vec<support::ArchFile> {
    support::read_archive(&s.archive)
        .get(topic)
        .and_then(|t| t.get(&0))
        .cloned()
        .unwrap_or_default()
}

/// The skip reason of each file.
fn skips(s: &Setup, topic: &str) -> Vec<Option<String>> {
    files(s, topic).into_iter().map(|f| f.skipped).collect()
}

fn set(s: &Setup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    std::fs::write(&s.config, text.replace(from, to)).unwrap();
}

#[test]
fn start_latest_begins_at_the_end_and_is_remembered_across_restarts() {
    let _broker = support::shared_broker();
    let topic = support::unique("latest");
    support::create_topic(&topic, 1, &[]);
    support::produce(&topic, &records(1, 100), "none");
    let s = Setup::new(&[&topic], &support::unique("g"), "start = \"latest\"", "");
    s.run_to_end();
    // Nothing before the start is archived: the range is skipped explicitly.
    assert_eq!(first_offsets(&s, &topic), vec![(0, 100)]);
    assert_eq!(skips(&s, &topic), vec![Some("start-latest".to_string())]);
    // Records produced while no process runs are archived by the next one.
    let more = support::produce(&topic, &records(2, 40), "none");
    s.run_to_end();
    assert_eq!(first_offsets(&s, &topic), vec![(0, 100), (100, 140)]);
    let archive = support::read_archive(&s.archive);
    let read = support::check_tiling(&archive, &topic, &BTreeMap::from([(0, (0, 140))]));
    support::assert_same_records(&read, &more);
}

#[test]
fn start_error_refuses_to_guess() {
    let _broker = support::shared_broker();
    let topic = support::unique("start-error");
    support::create_topic(&topic, 1, &[]);
    support::produce(&topic, &records(3, 10), "none");
    let s = Setup::new(&[&topic], &support::unique("g"), "start = \"error\"", "");
    let out = support::run_with_timeout(
        s.command(&[
            "run",
            "--config",
            s.config.to_str().unwrap(),
            "--until-caught-up",
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{topic}/0 has no archive and no committed offset")),
        "{stderr}"
    );
}

#[test]
fn records_deleted_before_archiving_stop_the_partition_or_are_skipped_loudly() {
    let _broker = support::shared_broker();
    let topic = support::unique("gap");
    support::create_topic(&topic, 1, &[]);
    support::produce(&topic, &records(4, 100), "none");
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "max_file_records = 30\n",
    );
    s.run_to_end();
    assert_eq!(
        first_offsets(&s, &topic),
        vec![(0, 30), (30, 60), (60, 90), (90, 100)]
    );

    // Retention takes 100..150 before the next run sees them.
    support::produce(&topic, &records(5, 100), "none");
    support::delete_records(&topic, 0, 150);
    let out = support::run_with_timeout(
        s.command(&[
            "run",
            "--config",
            s.config.to_str().unwrap(),
            "--until-caught-up",
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "records 100..150 of {topic}/0 were deleted from kafka before they were archived"
        )),
        "{stderr}"
    );
    assert_eq!(
        first_offsets(&s, &topic).len(),
        4,
        "nothing archived past the gap"
    );

    set(&s, "commit_interval", "on_gap = \"skip\"\ncommit_interval");
    s.run_to_end();
    // The loss is in the archive itself: a skipped range, no hole.
    assert_eq!(
        first_offsets(&s, &topic)[4..],
        [(100, 150), (150, 180), (180, 200)]
    );
    assert_eq!(skips(&s, &topic)[4], Some("retention".to_string()));
    let ls = s
        .command(&["ls", "--config", s.config.to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert_eq!(ls.status.code(), Some(0), "{listing}");
    assert!(
        listing.contains("\t100\t150\t0\t") && listing.contains("skipped (retention)"),
        "{listing}"
    );
    assert!(
        listing.contains("1 skipped range(s) of 50 offset(s)") && listing.contains("no gaps"),
        "{listing}"
    );
}

#[test]
fn records_deleted_while_running_are_a_gap_not_a_silent_skip() {
    let _broker = support::shared_broker();
    let topic = support::unique("gap-live");
    support::create_topic(&topic, 1, &[]);
    support::produce(&topic, &records(6, 20), "none");
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "idle_flush = \"1s\"\n",
    );
    let mut p = Proc::start(&s.config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while first_offsets(&s, &topic) != vec![(0, 20)] {
        assert!(Instant::now() < deadline, "no idle flush at 20");
        std::thread::sleep(Duration::from_millis(100));
    }

    // An open transaction holds the last stable offset at 20, so the
    // archiver cannot pass it; retention deletes 20..30 meanwhile.
    let mut producer = StreamingProducer::start(&topic, "none", Some(&support::unique("tx")));
    let recs = records(7, 50);
    let mut frames = vec![Frame::Begin];
    frames.extend(recs.iter().cloned().map(Frame::Rec));
    frames.push(Frame::Flush);
    producer.send(&frames);
    let deadline = Instant::now() + Duration::from_secs(30);
    while support::high_watermarks(&topic)[0].2 < 70 {
        assert!(Instant::now() < deadline, "records not in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
    support::delete_records(&topic, 0, 30);
    producer.send(&[Frame::Commit]);
    producer.finish();

    let lost =
        format!("records 20..30 of {topic}/0 were deleted from kafka before they were archived");
    support::wait_until("the partition stopped", Duration::from_secs(60), || {
        p.log().iter().any(|l| l.contains(&lost))
    });
    // The process stays in the group; at exit it reports the stopped partition.
    p.signal("-TERM");
    assert_eq!(
        p.wait(Duration::from_secs(30)).code(),
        Some(3),
        "{:?}",
        p.log()
    );
    assert_eq!(first_offsets(&s, &topic), vec![(0, 20)]);
}
