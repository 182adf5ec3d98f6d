//! What a user sees when something is wrong: one line naming what to fix,
//! a non-zero exit, bounded time, nothing half-written in the store and no
//! offset committed past what the store holds.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use kafka_store::format::names::TopicPartition;
use kafka_store::kafka::Client;

use crate::support::{self, BOOTSTRAP, Setup};

/// Runs `kafka-store run --until-caught-up` expecting failure; returns the
/// exit code and the last stderr line.
fn run_failing(setup: &Setup, limit: Duration) -> (i32, String, Duration) {
    let started = Instant::now();
    let out: Output = support::run_with_timeout(
        setup.command(&[
            "run",
            "--config",
            setup.config.to_str().unwrap(),
            "--until-caught-up",
        ]),
        limit,
    );
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let last = stderr.lines().last().unwrap_or("").to_string();
    assert!(
        !out.status.success(),
        "expected a failure, got success: {stderr}"
    );
    (out.status.code().unwrap_or(-1), last, took)
}

/// The error line the user reads ends the output and stands on one line.
fn assert_error_line(line: &str, wants: &[&str]) {
    assert!(line.starts_with("kafka-store: "), "{line}");
    for w in wants {
        assert!(line.contains(w), "{line:?} should mention {w:?}");
    }
}

#[test]
fn an_unknown_config_key_is_named_with_its_line() {
    let s = Setup::new(&["t"], "g", "brokerz = [\"x:1\"]", "");
    let (code, line, took) = run_failing(&s, Duration::from_secs(10));
    assert_eq!(code, 2);
    assert_error_line(
        &line,
        &["unknown field `brokerz`", "line 7", "kafka-store.toml"],
    );
    assert!(took < Duration::from_secs(2));
}

#[test]
fn a_missing_topic_is_named() {
    let _broker = support::shared_broker();
    let s = Setup::new(&["no-such-topic-at-all"], "g", "", "");
    let (code, line, took) = run_failing(&s, Duration::from_secs(30));
    assert_eq!(code, 1);
    assert_error_line(
        &line,
        &[
            "kafka topic \"no-such-topic-at-all\" does not exist",
            "kafka.topics",
        ],
    );
    assert!(took < Duration::from_secs(10));
    assert!(support::snapshot(&s.archive).is_empty());
}

#[test]
fn an_unreachable_broker_fails_in_bounded_time() {
    let s = Setup::new(&["t"], "g", "", "");
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(BOOTSTRAP, "127.0.0.1:1")
        .replace("retry_timeout = \"20s\"", "retry_timeout = \"2s\"");
    std::fs::write(&s.config, text).unwrap();
    let (code, line, took) = run_failing(&s, Duration::from_secs(30));
    assert_eq!(code, 1);
    assert_error_line(&line, &["127.0.0.1:1", "kafka.brokers"]);
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn an_unwritable_archive_or_spool_directory_is_named() {
    for which in ["archive", "spool"] {
        let s = Setup::new(&["t"], "g", "", "");
        let _ro = support::Tmpfs::mount(&s.dir.path().join(which), "ro,size=1m");
        let (code, line, _) = run_failing(&s, Duration::from_secs(30));
        assert_eq!(code, 1, "{which}: {line}");
        let dir = s.dir.path().join(which);
        assert_error_line(&line, &[which, dir.to_str().unwrap()]);
        assert!(
            line.contains("not writable") || line.contains("Read-only"),
            "{line}"
        );
    }
}

/// Every committed offset is the end of a stored file (or the start): the
/// group never claims more than the store holds.
fn assert_commits_within_store(group: &str, topic: &str, archive: &Path) {
    let stored = support::read_archive(archive);
    let mut client =
        Client::connect(support::client_config(&[BOOTSTRAP]), Default::default()).unwrap();
    let tps: Vec<_> = (0..2).map(|p| TopicPartition::new(topic, p)).collect();
    for (tp, c) in client.committed_offsets(group, &tps).unwrap() {
        let files = stored
            .get(topic)
            .and_then(|t| t.get(&tp.partition))
            .cloned()
            .unwrap_or_default();
        let chain_end = files.last().map_or(0, |f| f.next);
        assert!(
            c.offset <= chain_end,
            "{tp}: committed {} beyond the stored {chain_end}",
            c.offset
        );
    }
}

#[test]
fn a_full_disk_stops_the_run_with_nothing_half_written() {
    let _broker = support::shared_broker();
    let topic = support::unique("full");
    support::create_topic(&topic, 2, &[]);
    support::produce(
        &topic,
        &support::gen_records(4, 20_000, 2, 1_700_000_000_000),
        "lz4",
    );
    // A full spool (a file larger than the disk is being written), then a
    // full store (files are copied there from a spool on another filesystem).
    for (which, file_bytes) in [("spool", "1MiB"), ("archive", "256KiB")] {
        let group = support::unique("g");
        let files = format!(
            "codec = \"null\"\nmax_file_bytes = \"{file_bytes}\"\nblock_bytes = \"16KiB\"\n"
        );
        let s = Setup::new(&[&topic], &group, "", &files);
        let _small = support::Tmpfs::mount(&s.dir.path().join(which), "size=600k");
        let (code, line, _) = run_failing(&s, Duration::from_secs(60));
        assert_eq!(code, 1, "{which}: {line}");
        assert_error_line(&line, &["No space left on device"]);
        // Whatever is in the store reads back whole (read_archive fails on
        // temporary leftovers and unreadable files).
        support::read_archive(&s.archive);
        assert_commits_within_store(&group, &topic, &s.archive);
    }
}
