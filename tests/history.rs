//! One history per chain, explicit skips, partitions that start alone:
//! a re-created topic and an unclean leader election stop their partition
//! without a record of the new history in the old chain; two builders
//! starting at `latest` meet at one skipped range; adopting another
//! builder's chain that ends in a later leader epoch is no divergence; a
//! partition whose only broker is down does not hold the others up.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::fault_proxy::{FaultProxy, Faults};
use crate::support::{self, PAIR, Proc, Rec, Restart, Setup, pair_topic};

fn records(seed: u64, n: usize, partitions: i32) -> Vec<Rec> {
    support::gen_records(
        seed,
        n,
        partitions,
        1_700_000_000_000 + seed as i64 * 1_000_000,
    )
}

/// `kafka-store run --until-caught-up`: exit code and stderr.
fn run_once(s: &Setup) -> (Option<i32>, String) {
    let out = support::run_with_timeout(
        s.command(&[
            "run",
            "--config",
            s.config.to_str().unwrap(),
            "--until-caught-up",
        ]),
        Duration::from_secs(180),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (first, next) of every file of partition 0.
fn files(s: &Setup, topic: &str) -> Vec<(i64, i64)> {
    support::read_archive(&s.archive)
        .get(topic)
        .and_then(|t| t.get(&0))
        .map(|f| f.iter().map(|f| (f.first, f.next)).collect())
        .unwrap_or_default()
}

fn status(s: &Setup) -> String {
    let out = s
        .command(&["status", "--config", s.config.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_re_created_topic_is_never_appended_to_the_old_chain() {
    let _broker = support::shared_broker();
    let topic = support::unique("recreated");
    support::create_topic(&topic, 1, &[]);
    support::produce(&topic, &records(1, 1000, 1), "none");
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "max_file_records = 400\n",
    );
    s.run_to_end();
    let before = files(&s, &topic);
    assert_eq!(before.last().map(|f| f.1), Some(1000));
    let old_id = support::topic_id(&topic);

    support::kafka_tool_at(
        support::BOOTSTRAP,
        &["delete-topic", "--topic", &topic],
        None,
    );
    support::create_topic(&topic, 1, &[]);
    support::produce(&topic, &records(2, 2500, 1), "none");
    let (code, stderr) = run_once(&s);
    assert_eq!(code, Some(3), "{stderr}");
    let new_id = support::topic_id(&topic);
    assert_ne!(old_id, new_id);
    assert_eq!(
        stderr.lines().last().unwrap(),
        format!(
            "kafka-store: {topic}/0 was not archived: the archive of {topic}/0 was read from topic id {old_id} but kafka now has topic id {new_id}: the topic was deleted and created again; archive the new topic under a new store prefix"
        )
    );
    assert_eq!(
        files(&s, &topic),
        before,
        "nothing of the new topic is archived"
    );
    let status = status(&s);
    assert!(
        status.contains(&format!("{topic}/0\t1000\t0\t2500\t"))
            && status.contains("stopped: the archive of")
            && status.contains("1 that cannot be archived"),
        "{status}"
    );
}

/// `s` pointed at the pair, with extra `[kafka]` keys.
fn to_pair(s: &Setup, kafka_extra: &str) {
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(
            &format!("brokers = [\"{}\"]", support::BOOTSTRAP),
            "brokers = [\"127.0.0.1:9292\", \"127.0.0.1:9392\"]",
        )
        .replace("[kafka]\n", &format!("[kafka]\n{kafka_extra}"));
    std::fs::write(&s.config, text).unwrap();
}

/// A config for the pair, with `kafka.retry_timeout` as given. The group
/// coordinator is asked for once (`status`), so that the offsets topic
/// exists with both replicas before a test stops a broker.
fn pair_setup(topics: &[&str], retry_timeout: &str, files_extra: &str) -> Setup {
    let s = Setup::new(topics, &support::unique("g"), "", files_extra);
    to_pair(&s, "");
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "retry_timeout = \"20s\"",
        &format!("retry_timeout = \"{retry_timeout}\""),
    );
    std::fs::write(&s.config, text).unwrap();
    s.succeed("status", &[]);
    s
}

#[test]
fn an_unclean_leader_election_stops_the_partition_at_the_divergence() {
    let _pair = support::exclusive_pair();
    let topic = support::unique("unclean");
    pair_topic(
        &topic,
        1,
        "11,12",
        &[
            "unclean.leader.election.enable=true",
            "min.insync.replicas=1",
        ],
    );
    support::produce_at(PAIR, &topic, &records(3, 100, 1), "none", &[]);
    let s = pair_setup(
        &[&topic],
        "10s",
        "max_file_records = 50\nidle_flush = \"1s\"\n",
    );
    // The follower goes away; only the leader (11) has offsets 100..200.
    support::test_services("stop-pair-12");
    let _back_12 = Restart("start-pair-12");
    support::produce_at(PAIR, &topic, &records(4, 100, 1), "none", &[]);
    let mut p = Proc::start_logging(&s.config, "debug");
    support::wait_until("archived to 200", Duration::from_secs(60), || {
        files(&s, &topic).last().map(|f| f.1) == Some(200)
    });

    // The leader goes away and the stale follower is elected (unclean):
    // its log ends at 100, in a new leader epoch, and grows past 200.
    support::test_services("stop-pair-11");
    let _back_11 = Restart("start-pair-11");
    support::test_services("start-pair-12");
    support::produce_at(PAIR, &topic, &records(5, 150, 1), "none", &[]);

    // The running archiver's fetch at 200 names the epoch of what it
    // fetched last: the new leader answers with a diverging epoch.
    let diverged = format!(
        "the kafka log of {topic}/0 does not continue the archive: leader epoch 0 ends at offset 100 in the log but the archive holds it up to offset 200"
    );
    support::wait_until(
        "the divergence found while fetching",
        Duration::from_secs(60),
        || p.log().iter().any(|l| l.contains(&diverged)),
    );
    p.signal("-TERM");
    assert_eq!(
        p.wait(Duration::from_secs(30)).code(),
        Some(3),
        "{:?}",
        p.log()
    );
    let archived = files(&s, &topic);
    assert_eq!(archived.last().map(|f| f.1), Some(200), "{archived:?}");

    // A new run finds it at start (OffsetsForLeaderEpoch), with the old
    // leader back as a follower.
    support::test_services("start-pair-11");
    let (code, stderr) = run_once(&s);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.lines().last().unwrap().contains(&diverged),
        "{stderr}"
    );
    assert_eq!(
        files(&s, &topic),
        archived,
        "nothing of the new history is archived"
    );
}

#[test]
fn adopting_a_chain_that_ends_in_a_later_leader_epoch_is_no_divergence() {
    let _pair = support::exclusive_pair();
    let topic = support::unique("adopt-epoch");
    pair_topic(&topic, 1, "11,12", &["min.insync.replicas=1"]);
    support::produce_at(PAIR, &topic, &records(20, 3000, 1), "none", &[]);
    let bucket = support::gcs_bucket();
    // A: small chunks, small files and slow uploads, so that its fetcher
    // stands still in leader epoch 0, held back by full queues. Its first
    // upload asks to create the name only after B has (B takes a broker
    // stop and a run: about 10 s).
    let slow = FaultProxy::start("127.0.0.1:9023");
    slow.set_faults(Faults {
        body_delay: Duration::from_secs(45),
        ..Faults::default()
    });
    let a = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        &bucket,
        &slow.url(),
        "max_file_records = 10\nidle_flush = \"1s\"\n",
        "",
    );
    to_pair(
        &a,
        "fetch_max_bytes = \"4KiB\"\npartition_fetch_bytes = \"1KiB\"\n",
    );
    a.succeed("status", &[]);
    let p = Proc::start(&a.config);
    support::wait_until("A uploading a file", Duration::from_secs(60), || {
        slow.log()
            .iter()
            .any(|e| e.target.contains("uploadType=resumable"))
    });
    // A new leader (epoch 1) takes the next records; B archives all of it
    // with other cuts while A's first upload crawls.
    support::test_services("stop-pair-11");
    let _back = Restart("start-pair-11");
    support::produce_at(PAIR, &topic, &records(21, 100, 1), "none", &[]);
    let fast = FaultProxy::start("127.0.0.1:9023");
    let b = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        &bucket,
        &fast.url(),
        "max_file_records = 1000\n",
        "",
    );
    to_pair(&b, "");
    let b_started = std::time::Instant::now();
    b.run_to_end();
    assert!(
        b_started.elapsed() < Duration::from_secs(30),
        "B took {:?}: A may have created the name first",
        b_started.elapsed()
    );
    // A's put meets B's object, adopts B's chain to 3100 and fetches on
    // there: the log continues it in epoch 1.
    let adopted = format!("{topic}/0 continues at offset 3100");
    let waiting = std::time::Instant::now();
    while !p.log().iter().any(|l| l.contains(&adopted)) {
        assert!(
            waiting.elapsed() < Duration::from_secs(90),
            "A did not adopt B's chain: {:#?}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    slow.set_faults(Faults::default());
    support::produce_at(PAIR, &topic, &records(22, 10, 1), "none", &[]);
    let stored = format!("stored {topic}/0 offsets 3100..3110");
    support::wait_until(
        "A storing after the adopted chain",
        Duration::from_secs(90),
        || {
            let log = p.log();
            assert!(
                !log.iter()
                    .any(|l| l.contains("does not continue the archive")),
                "a false divergence: {log:#?}"
            );
            log.iter().any(|l| l.contains(&stored))
        },
    );
}

#[test]
fn a_partition_whose_only_broker_is_down_does_not_hold_up_the_others() {
    let _pair = support::exclusive_pair();
    let topic = support::unique("one-down");
    pair_topic(&topic, 2, "11;12", &[]);
    let produced = support::produce_at(PAIR, &topic, &records(6, 200, 2), "none", &[]);
    let s = pair_setup(&[&topic], "5s", "");
    support::test_services("stop-pair-12");
    let _back = Restart("start-pair-12");
    let (code, stderr) = run_once(&s);
    assert_eq!(code, Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(&format!(
            "kafka-store: {topic}/1 was not archived: it could not start:"
        )),
        "{last}"
    );
    // Partition 0 is archived whole.
    let archive = support::read_archive(&s.archive);
    let p0: BTreeMap<_, _> = produced.into_iter().filter(|((p, _), _)| *p == 0).collect();
    let read = support::check_tiling(
        &archive,
        &topic,
        &BTreeMap::from([(0, (0, p0.len() as i64))]),
    );
    support::assert_same_records(&read, &p0);
    assert!(!archive[&topic].contains_key(&1), "nothing of partition 1");
}

#[test]
fn two_builders_starting_at_latest_meet_at_one_skipped_range() {
    let _broker = support::shared_broker();
    let topic = support::unique("latest-twins");
    support::create_topic(&topic, 1, &[]);
    support::produce(&topic, &records(7, 500, 1), "none");
    // Two one-shot runs over one gs:// archive, each through its own
    // proxy: the first reads the log end, then its uploads crawl; the
    // second reads a later log end and stores its skipped range first.
    let bucket = support::gcs_bucket();
    let slow = FaultProxy::start("127.0.0.1:9023");
    slow.set_faults(Faults {
        body_delay: Duration::from_secs(4),
        ..Faults::default()
    });
    let fast = FaultProxy::start("127.0.0.1:9023");
    let files = "max_file_records = 100\n";
    let setup = |proxy: &FaultProxy| {
        let s = Setup::gcs(
            &[&topic],
            &support::unique("g"),
            &bucket,
            &proxy.url(),
            files,
            "",
        );
        let text = std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("[kafka]\n", "[kafka]\nstart = \"latest\"\n");
        std::fs::write(&s.config, text).unwrap();
        s
    };
    let (first, second) = (setup(&slow), setup(&fast));
    let a = first.spawn(&["--until-caught-up"]);
    support::wait_until("the first run uploading", Duration::from_secs(30), || {
        !slow.log().is_empty()
    });
    let more = support::produce(&topic, &records(8, 300, 1), "none");
    let b = second.spawn(&["--until-caught-up"]);
    let logs: Vec<String> = [b, a]
        .into_iter()
        .map(|c| {
            let out = support::wait_with_timeout(c, Duration::from_secs(120));
            let log = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{log}");
            log
        })
        .collect();
    // Each run began the chain with a skipped range up to the end it read.
    let ends: Vec<i64> = logs
        .iter()
        .map(|log| {
            log.lines()
                .find_map(|l| {
                    let rest = l.split("kafka.start = \"latest\": offsets 0..").nth(1)?;
                    rest.split(' ').next()?.parse().ok()
                })
                .unwrap_or_else(|| panic!("no skipped range at start: {log}"))
        })
        .collect();
    assert_eq!(ends, vec![800, 500], "the runs read different log ends");
    assert!(
        logs[1].contains("adopting it"),
        "the first run adopted the second's range: {}",
        logs[1]
    );

    let dest = tempfile::tempdir().unwrap();
    support::download_archive(&bucket, "archive", dest.path());
    let archive = support::read_archive(dest.path());
    let chain = &archive[&topic][&0];
    let skips: Vec<_> = chain.iter().filter(|f| f.skipped.is_some()).collect();
    assert_eq!(skips.len(), 1, "one skipped range: {chain:?}");
    assert_eq!(
        (skips[0].first, skips[0].next, skips[0].skipped.as_deref()),
        (0, 800, Some("start-latest"))
    );
    // The chain tiles 0..800 and nothing overlaps (check_tiling asserts it).
    let read = support::check_tiling(&archive, &topic, &BTreeMap::from([(0, (0, 800))]));
    assert!(read.is_empty(), "{more:?}");
}
