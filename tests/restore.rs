//! `kafka-store restore`: archived records replayed into a topic, read back
//! with an independent consumer (confluent-kafka) and compared record by
//! record; exactly once across `kill -9`; selections; refusals before
//! anything is produced.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, Rec, Setup, assert_restored, partition_of};

fn restore_cmd(s: &Setup, from: &str, to: &str, extra: &[&str]) -> Command {
    let mut args = vec![
        "restore",
        "--config",
        s.config.to_str().unwrap(),
        "--topic",
        from,
        "--to-topic",
        to,
    ];
    args.extend_from_slice(extra);
    s.command(&args)
}

fn restore(s: &Setup, from: &str, to: &str, extra: &[&str]) -> Output {
    support::run_with_timeout(restore_cmd(s, from, to, extra), Duration::from_secs(300))
}

/// The bytes `--rate` and quotas count: keys, values and headers.
fn record_bytes(produced: &BTreeMap<(i32, i64), Rec>) -> usize {
    produced
        .values()
        .map(|r| {
            let headers: usize = r
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum();
            r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len) + headers
        })
        .sum()
}

fn restored(s: &Setup, from: &str, to: &str, extra: &[&str]) -> String {
    let out = restore(s, from, to, extra);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn restore_replays_every_record_of_every_codec_in_order() {
    let _broker = support::shared_broker();
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let (topic, produced) = support::topic_with_records("restore-src", 3, 400, &codecs);
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "max_file_bytes = \"64KiB\"\nblock_bytes = \"8KiB\"\n",
    );
    s.run_to_end();
    // Every codec of our producer, each into its own topic.
    for codec in codecs {
        let target = support::unique(&format!("restored-{codec}"));
        support::create_topic(&target, 3, &[]);
        let out = restored(&s, &topic, &target, &["--compression", codec]);
        let n = partition_of(&produced, 0).len();
        assert!(
            out.contains(&format!("{topic}/0 -> {target}/0: restored {n} record(s)")),
            "{out}"
        );
        let back = support::consume(&target);
        for p in 0..3 {
            assert_restored(&topic, p, &back[&p], &partition_of(&produced, p));
        }
        // A second run finds everything there and adds nothing.
        let again = restored(&s, &topic, &target, &["--compression", codec]);
        assert!(again.contains(": restored 0 record(s)"), "{again}");
        assert_eq!(
            support::consume(&target),
            back,
            "{codec}: a rerun changed the target"
        );
    }
}

#[test]
fn restore_from_gcs_replays_every_record() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("restore-gcs", 2, 500, &["zstd"]);
    let bucket = support::gcs_bucket();
    let s = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        &bucket,
        support::GCS_EMULATOR,
        "max_file_bytes = \"32KiB\"\n",
        "",
    );
    s.run_to_end();
    let target = support::unique("restored-gcs");
    support::create_topic(&target, 2, &[]);
    restored(&s, &topic, &target, &[]);
    let back = support::consume(&target);
    for p in 0..2 {
        assert_restored(&topic, p, &back[&p], &partition_of(&produced, p));
    }
}

#[test]
fn a_restore_killed_at_any_moment_ends_with_every_record_once() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("restore-kill", 2, 30_000, &["lz4"]);
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "max_file_bytes = \"1MiB\"\n",
    );
    s.run_to_end();
    let target = support::unique("restored-kill");
    support::create_topic(&target, 2, &[]);
    let total = produced.len() as i64;
    let in_target = || -> i64 {
        support::high_watermarks(&target)
            .iter()
            .map(|(_, _, high)| high)
            .sum()
    };
    // Small batches at a bounded rate: each run lives long enough to be
    // killed in the middle of its work.
    let mut rng = support::Rng::new(11);
    let mut mid_way = 0;
    let args = ["--rate", "700000"];
    for kill in 0..5 {
        let mut child = restore_cmd(&s, &topic, &target, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let before = in_target();
        std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let after = in_target();
        eprintln!("kill {kill}: {before} -> {after} of {total} records in the target");
        mid_way += usize::from(after > before && after < total);
    }
    assert!(
        mid_way >= 3,
        "only {mid_way} of 5 kills hit a restore at work"
    );
    // Run again with the same arguments, as a user would.
    restored(&s, &topic, &target, &args);
    let back = support::consume(&target);
    for p in 0..2 {
        assert_restored(&topic, p, &back[&p], &partition_of(&produced, p));
    }
}

/// A restore killed while its first batch waits for a follower leaves the
/// batch in the leader's log but not visible: the target looks empty. The
/// next run sees that the leader keeps a producer's state, waits for the
/// batch to be committed and goes on as its producer: every record once.
#[test]
fn a_restore_killed_while_its_first_batch_is_in_flight_writes_it_once() {
    let _broker = support::shared_broker();
    let _pair = support::exclusive_pair();
    let (topic, produced) = support::topic_with_records("restore-first", 1, 3000, &["lz4"]);
    let s = Setup::new(&[&topic], &support::unique("g"), "", "");
    s.run_to_end();
    let target = support::unique("restored-first");
    support::pair_topic(&target, 1, "11,12", &["min.insync.replicas=1"]);
    let args = ["--brokers", "127.0.0.1:9292", "--rate", "200000"];
    let frozen = support::Frozen::new(12);
    let started = Instant::now();
    let mut first = restore_cmd(&s, &topic, &target, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    support::wait_until(
        "the first batch in the leader's log",
        Duration::from_secs(20),
        || support::pair_log_bytes(11, &target, 0) > 0,
    );
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let held = support::pair_log_bytes(11, &target, 0);
    let visible = support::kafka_tool_at(
        "127.0.0.1:9292",
        &["high-watermarks", "--topic", &target, "--uncommitted"],
        None,
    );
    assert_eq!(visible.trim(), "0 0 0", "the batch is already visible");
    // The controller fences a silent broker after 9 s: the next run must
    // start well before that to find the batch still in flight.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "too slow: {:?}",
        started.elapsed()
    );
    let mut second = support::Proc::spawn(restore_cmd(&s, &topic, &target, &args));
    // Thawed once the second run waits for the batch (or after a few
    // seconds, when it does not wait).
    let waiting = Instant::now();
    while waiting.elapsed() < Duration::from_secs(4)
        && !second
            .log()
            .iter()
            .any(|l| l.contains("keeps the state of producer(s)"))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(frozen);
    let status = second.wait(Duration::from_secs(120));
    let log = second.log().join("\n");
    assert!(status.success(), "the second restore failed: {log}");
    eprintln!("{held} bytes held in flight; second run:\n{log}");
    let back = support::consume_at("127.0.0.1:9292", &target);
    assert_restored(&topic, 0, &back[&0], &partition_of(&produced, 0));
    assert!(
        log.contains("keeps the state of producer(s)") && log.contains("going on as producer"),
        "the second run did not wait for the first one's batch: {log}"
    );
}

/// `--rate` bounds the record bytes (keys, values, headers) produced per
/// second: a restore of about four seconds' worth takes at least that long.
#[test]
fn a_rate_bounds_the_bytes_restored_per_second() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("restore-rate", 1, 3_000, &["none"]);
    let s = Setup::new(&[&topic], &support::unique("g"), "", "");
    s.run_to_end();
    let bytes = record_bytes(&produced);
    let rate = (bytes / 4).to_string();
    let target = support::unique("restored-rate");
    support::create_topic(&target, 1, &[]);
    let started = Instant::now();
    restored(&s, &topic, &target, &["--rate", &rate]);
    let took = started.elapsed();
    // Paced in batches of a twentieth of a second's bytes: the last one
    // may go early.
    assert!(
        took >= Duration::from_millis(3_800),
        "{bytes} bytes at {rate} B/s took only {took:?}"
    );
    assert_restored(
        &topic,
        0,
        &support::consume(&target)[&0],
        &partition_of(&produced, 0),
    );
}

/// A produce quota (`producer_byte_rate`) makes the broker answer with
/// `throttle_time_ms` and mute the connection (KIP-219): restore sends
/// nothing to it before the wait is over, so a wait longer than
/// `request_timeout` is not taken for a broker that does not answer; it
/// says so, and every record lands once (3.3 MB uncompressed in requests
/// of 512 KiB, at a twelfth of that per second: the broker asks for waits
/// of one to seven seconds).
#[test]
fn a_produce_quota_is_waited_out_and_said() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("restore-quota", 1, 20_000, &["none"]);
    let client_id = support::unique("ks-quota");
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        &format!("client_id = \"{client_id}\"\nrequest_timeout = \"3s\"\n"),
        "",
    );
    s.run_to_end();
    let rate = record_bytes(&produced) / 12;
    support::client_quota(&client_id, &format!("producer_byte_rate={rate}"));
    let target = support::unique("restored-quota");
    support::create_topic(&target, 1, &[]);
    let started = Instant::now();
    let mut cmd = restore_cmd(&s, &topic, &target, &["--compression", "none"]);
    cmd.env("KAFKA_STORE_LOG", "debug");
    let out = support::run_with_timeout(cmd, Duration::from_secs(300));
    let took = started.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore failed: {log}");
    assert!(
        log.contains(&format!("throttles client id \"{client_id}\" by a quota")),
        "no line says the broker throttles: {log}"
    );
    for failed in ["did not answer", "lost:", "retrying"] {
        assert!(
            !log.contains(failed),
            "a request sent while the broker mutes the connection ({failed:?}): {log}"
        );
    }
    assert!(
        took >= Duration::from_secs(2),
        "{rate} B/s did not slow the restore: {took:?}: {log}"
    );
    assert_restored(
        &topic,
        0,
        &support::consume(&target)[&0],
        &partition_of(&produced, 0),
    );
}

#[test]
fn offsets_and_times_select_exactly_their_records() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("restore-select", 1, 2_000, &["none"]);
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "max_file_records = 300\n",
    );
    s.run_to_end();
    let all = partition_of(&produced, 0);

    let target = support::unique("restored-offsets");
    support::create_topic(&target, 1, &[]);
    restored(
        &s,
        &topic,
        &target,
        &["--from-offset", "450", "--until-offset", "1234"],
    );
    let want: Vec<_> = all
        .iter()
        .copied()
        .filter(|(o, _)| (450..1234).contains(o))
        .collect();
    assert_eq!(want.len(), 784);
    assert_restored(&topic, 0, &support::consume(&target)[&0], &want);

    // Times are record timestamps (they do not always rise): [from, until).
    let ts: Vec<i64> = all.iter().map(|(_, r)| r.timestamp).collect();
    let (from, until) = (ts[300], ts[1500]);
    let rfc = |ms: i64| {
        let out = Command::new("date")
            .args([
                "-u",
                "-d",
                &format!("@{}.{:03}", ms / 1000, ms % 1000),
                "+%Y-%m-%dT%H:%M:%S.%3NZ",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let target = support::unique("restored-times");
    support::create_topic(&target, 1, &[]);
    let dry = restored(
        &s,
        &topic,
        &target,
        &[
            "--from-time",
            &rfc(from),
            "--until-time",
            &rfc(until),
            "--dry-run",
        ],
    );
    let want: Vec<_> = all
        .iter()
        .copied()
        .filter(|(_, r)| r.timestamp >= from && r.timestamp < until)
        .collect();
    assert!(
        dry.contains(&format!("would restore {} record(s)", want.len())),
        "{dry}"
    );
    assert_eq!(
        support::high_watermarks(&target),
        vec![(0, 0, 0)],
        "a dry run produced"
    );
    restored(
        &s,
        &topic,
        &target,
        &["--from-time", &rfc(from), "--until-time", &rfc(until)],
    );
    assert_restored(&topic, 0, &support::consume(&target)[&0], &want);
}

#[test]
fn targets_that_cannot_take_the_records_are_refused_before_anything_is_produced() {
    let _broker = support::shared_broker();
    let (topic, _) = support::topic_with_records("restore-bad", 3, 50, &["none"]);
    let s = Setup::new(&[&topic], &support::unique("g"), "", "");
    s.run_to_end();
    let refused = |to: &str, extra: &[&str], code: i32, want: &str| {
        let out = restore(&s, &topic, to, extra);
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default().to_string();
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert!(last.contains(want), "wanted {want:?} in {last:?}");
    };
    let small = support::unique("restore-small");
    support::create_topic(&small, 2, &[]);
    refused(&small, &[], 2, "has 2 partition(s) but the archive of");
    assert_eq!(support::high_watermarks(&small), vec![(0, 0, 0), (1, 0, 0)]);
    // One partition of the archive fits.
    restored(&s, &topic, &small, &["--partition", "1"]);

    let missing = support::unique("restore-missing");
    refused(&missing, &[], 2, "does not exist");

    let foreign = support::unique("restore-foreign");
    support::create_topic(&foreign, 3, &[]);
    support::produce(
        &foreign,
        &support::gen_records(5, 3, 3, 1_700_000_000_000),
        "none",
    );
    refused(&foreign, &[], 2, "holds records restore did not write");
    let before = support::high_watermarks(&foreign);

    let out = restore(&s, "no-such-topic", &foreign, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("holds no archive of topic \"no-such-topic\"")
    );
    assert_eq!(support::high_watermarks(&foreign), before);

    refused(&small, &["--compression", "brotli"], 2, "--compression");

    // A store that does not answer: one line, exit 1, nothing produced.
    let dead = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        "bucket-x",
        "http://127.0.0.1:9",
        "",
        "retry_timeout = \"2s\"\n",
    );
    let empty = support::unique("restore-empty");
    support::create_topic(&empty, 3, &[]);
    let started = Instant::now();
    let out = restore(&dead, &topic, &empty, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.lines().last().unwrap().contains("127.0.0.1:9"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(
        support::high_watermarks(&empty),
        vec![(0, 0, 0), (1, 0, 0), (2, 0, 0)]
    );
}
