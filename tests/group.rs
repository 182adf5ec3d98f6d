//! Scaling out with Kafka's consumer-group protocol: processes share the
//! partitions fairly, survive a storm of `kill -9`, hand partitions over on
//! SIGTERM, and recover from a broker restart during a rebalance; the
//! archive stays exactly once throughout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::{self, Frame, Proc, Rec, Rng, Setup, StreamingProducer};

/// Group settings that make rebalances quick in tests.
const FAST_GROUP: &str = "heartbeat_interval = \"500ms\"\nsession_timeout = \"6s\"\nrebalance_timeout = \"10s\"\nmetadata_refresh = \"5s\"";

/// A config for process `i` sharing `setup`'s store and group (own spool).
fn member_config(setup: &Setup, topic: &str, group: &str, i: usize, files: &str) -> PathBuf {
    let path = setup.dir.path().join(format!("member-{i}.toml"));
    let spool = setup.dir.path().join(format!("spool-{i}"));
    Setup::write(
        &path,
        &[topic],
        group,
        &setup.archive,
        &spool,
        FAST_GROUP,
        files,
    );
    path
}

/// Every process reports the same generation with `each` partitions.
fn fair(procs: &[&Proc], each: usize) -> bool {
    let seen: Vec<_> = procs.iter().map(|p| p.assignment()).collect();
    seen.iter()
        .all(|a| a.is_some_and(|(g, n)| n == each && Some(g) == seen[0].map(|(g, _)| g)))
}

#[test]
fn three_processes_share_twelve_partitions_fairly_and_hand_over_on_sigterm() {
    let _broker = support::shared_broker();
    let (topic, mut produced) = support::topic_with_records("share", 12, 6_000, &["lz4"]);
    let group = support::unique("share");
    let setup = Setup::new(&[&topic], &group, "", "");
    let files = "idle_flush = \"1s\"\n";
    let mut procs: Vec<Proc> = (0..3)
        .map(|i| {
            let p = Proc::start(&member_config(&setup, &topic, &group, i, files));
            std::thread::sleep(Duration::from_millis(300));
            p
        })
        .collect();
    support::wait_until(
        "a fair share of 4 partitions each",
        Duration::from_secs(60),
        || fair(&procs.iter().collect::<Vec<_>>(), 4),
    );
    support::wait_until("every record archived", Duration::from_secs(60), || {
        support::archive_is_complete(&setup.archive, &topic, &produced)
    });

    // Graceful scale-down: one process leaves, the other two take over.
    let mut leaving = procs.pop().unwrap();
    let started = Instant::now();
    leaving.signal("-TERM");
    let status = leaving.wait(Duration::from_secs(20));
    assert!(status.success(), "{:?}", leaving.log());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        started.elapsed()
    );
    assert!(
        leaving
            .log()
            .iter()
            .any(|l| l.contains(&format!("left group {group}"))),
        "{:?}",
        leaving.log()
    );
    support::wait_until(
        "6 partitions each for the two left",
        Duration::from_secs(30),
        || fair(&procs.iter().collect::<Vec<_>>(), 6),
    );
    produced.extend(support::produce(
        &topic,
        &support::gen_records(99, 3_000, 12, 1_750_000_000_000),
        "zstd",
    ));
    support::wait_until("the new records archived", Duration::from_secs(60), || {
        support::archive_is_complete(&setup.archive, &topic, &produced)
    });
    for p in &mut procs {
        p.signal("-TERM");
        assert!(p.wait(Duration::from_secs(20)).success());
    }
}

#[test]
fn a_storm_of_kill_9_leaves_the_archive_an_uninterrupted_run_would_make() {
    let _broker = support::shared_broker();
    let seconds: u64 = std::env::var("KAFKA_STORE_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let min_kills = 20;
    let partitions = 6;
    let topic = support::unique("chaos");
    support::create_topic(&topic, partitions, &[]);
    let group = support::unique("chaos");
    let files = "max_file_records = 400\nidle_flush = \"1h\"\nblock_bytes = \"16KiB\"\n";
    let setup = Setup::new(&[&topic], &group, "", files);

    // Produce continuously in the background.
    let producing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let producer = {
        let (topic, producing) = (topic.clone(), producing.clone());
        std::thread::spawn(move || {
            let mut p = StreamingProducer::start(&topic, "lz4", None);
            let mut sent = Vec::new();
            let mut seed = 1000;
            while producing.load(std::sync::atomic::Ordering::SeqCst) {
                let recs = support::gen_records(
                    seed,
                    300,
                    partitions,
                    1_700_000_000_000 + seed as i64 * 5_000,
                );
                p.send(&recs.iter().cloned().map(Frame::Rec).collect::<Vec<_>>());
                sent.extend(recs);
                seed += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            let offsets = p.finish();
            assert_eq!(offsets.len(), sent.len());
            offsets
                .into_iter()
                .zip(sent)
                .collect::<BTreeMap<(i32, i64), Rec>>()
        })
    };

    let mut rng = Rng::new(0x5EED);
    let mut alive: Vec<Proc> = Vec::new();
    let mut kills = 0;
    let mut next_member = 0;
    let started = Instant::now();
    while kills < min_kills || started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(300 + rng.below(1700)));
        let start = alive.is_empty() || (alive.len() < 4 && rng.below(2) == 0);
        if start {
            alive.push(Proc::start(&member_config(
                &setup,
                &topic,
                &group,
                next_member,
                files,
            )));
            next_member += 1;
        } else {
            let victim = alive.remove(rng.below(alive.len() as u64) as usize);
            victim.signal("-KILL");
            kills += 1;
        }
    }
    producing.store(false, std::sync::atomic::Ordering::SeqCst);
    let produced = producer.join().unwrap();
    for p in &alive {
        p.signal("-KILL");
    }
    drop(alive);
    let during = if setup.archive.exists() {
        support::snapshot(&setup.archive).len()
    } else {
        0
    };
    eprintln!(
        "chaos: {kills} kills, {next_member} processes, {} records, {during} files in {:?}",
        produced.len(),
        started.elapsed()
    );
    assert!(during > 0, "the processes of the storm archived nothing");

    // One process finishes the job; a single uninterrupted run makes the reference.
    setup.run_to_end();
    let reference = Setup::new(&[&topic], &support::unique("ref"), "", files);
    reference.run_to_end();

    let ends: BTreeMap<i32, (i64, i64)> = support::from_zero(&topic);
    let read = support::check_tiling(&support::read_archive(&setup.archive), &topic, &ends);
    support::assert_same_records(&read, &produced);
    let want = support::snapshot(&reference.archive);
    let got = support::snapshot(&setup.archive);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "same file names"
    );
    for (name, bytes) in &want {
        assert!(
            got[name] == *bytes,
            "{name} differs from the uninterrupted run's"
        );
    }
}

#[test]
fn the_group_recovers_from_a_broker_restart_during_a_rebalance() {
    let _broker = support::exclusive_broker();
    let (topic, mut produced) = support::topic_with_records("rebal", 6, 2_000, &["snappy"]);
    let group = support::unique("rebal");
    let setup = Setup::new(&[&topic], &group, "", "");
    let files = "idle_flush = \"1s\"\n";
    let a = Proc::start(&member_config(&setup, &topic, &group, 0, files));
    let b = Proc::start(&member_config(&setup, &topic, &group, 1, files));
    support::wait_until(
        "two members with 3 partitions each",
        Duration::from_secs(60),
        || fair(&[&a, &b], 3),
    );

    // A third member triggers a rebalance; the broker goes down meanwhile.
    let rebalancing = || {
        [&a, &b]
            .iter()
            .map(|p| p.log().iter().filter(|l| l.contains("rebalancing")).count())
            .sum::<usize>()
    };
    let before = rebalancing();
    let c = Proc::start(&member_config(&setup, &topic, &group, 2, files));
    support::wait_until("a rebalance under way", Duration::from_secs(30), || {
        rebalancing() > before
    });
    support::test_services("stop-kafka");
    std::thread::sleep(Duration::from_secs(3));
    support::test_services("start-kafka");

    support::wait_until(
        "three members with 2 partitions each",
        Duration::from_secs(120),
        || fair(&[&a, &b, &c], 2),
    );
    produced.extend(support::produce(
        &topic,
        &support::gen_records(7, 2_000, 6, 1_750_000_000_000),
        "lz4",
    ));
    support::wait_until("every record archived", Duration::from_secs(90), || {
        support::archive_is_complete(&setup.archive, &topic, &produced)
    });
    for mut p in [a, b, c] {
        p.signal("-TERM");
        assert!(p.wait(Duration::from_secs(30)).success(), "{:?}", p.log());
    }
}

#[test]
fn a_topic_regex_picks_up_new_topics_and_partitions() {
    let _broker = support::shared_broker();
    let prefix = support::unique("rx").replace('-', "_");
    let first = format!("{prefix}.a");
    support::create_topic(&first, 1, &[]);
    let mut produced_a = support::produce(
        &first,
        &support::gen_records(1, 50, 1, 1_700_000_000_000),
        "none",
    );
    let group = support::unique("rx");
    let setup = Setup::new(&[], &group, "", "idle_flush = \"1s\"\n");
    let config = setup.dir.path().join("regex.toml");
    let spool = setup.dir.path().join("spool-rx");
    let kafka = format!("topic_regex = \"{prefix}\\\\..*\"\n{FAST_GROUP}");
    Setup::write(
        &config,
        &[],
        &group,
        &setup.archive,
        &spool,
        &kafka,
        "idle_flush = \"1s\"\n",
    );
    let mut p = Proc::start(&config);
    support::wait_until("the first topic archived", Duration::from_secs(60), || {
        support::archive_is_complete(&setup.archive, &first, &produced_a)
    });

    // A new matching topic, and a new partition of the first one.
    let second = format!("{prefix}.b");
    support::create_topic(&second, 2, &[]);
    let produced_b = support::produce(
        &second,
        &support::gen_records(2, 40, 2, 1_700_000_000_000),
        "none",
    );
    support::add_partitions(&first, 2);
    produced_a.extend(support::produce(
        &first,
        &support::gen_records(3, 30, 2, 1_700_000_100_000),
        "none",
    ));
    support::wait_until(
        "the new topic and partition archived",
        Duration::from_secs(60),
        || {
            support::archive_is_complete(&setup.archive, &second, &produced_b)
                && support::archive_is_complete(&setup.archive, &first, &produced_a)
        },
    );
    p.signal("-TERM");
    assert!(p.wait(Duration::from_secs(20)).success());
}

#[test]
fn sigterm_during_a_rebalance_exits_at_once() {
    let _broker = support::shared_broker();
    let topic = support::unique("term");
    support::create_topic(&topic, 2, &[]);
    let group = support::unique("term");
    let setup = Setup::new(&[&topic], &group, "", "");
    // A member that dies without leaving keeps the group waiting for it.
    let slow =
        "heartbeat_interval = \"1s\"\nsession_timeout = \"30s\"\nrebalance_timeout = \"30s\"";
    let config = |i: usize| {
        let path = setup.dir.path().join(format!("m{i}.toml"));
        Setup::write(
            &path,
            &[&topic],
            &group,
            &setup.archive,
            &setup.dir.path().join(format!("spool-{i}")),
            slow,
            "",
        );
        path
    };
    let ghost = Proc::start(&config(0));
    support::wait_until("the first member assigned", Duration::from_secs(30), || {
        ghost.assignment().is_some()
    });
    ghost.signal("-KILL");
    drop(ghost);
    let mut late = Proc::start(&config(1));
    support::wait_until("the second member joining", Duration::from_secs(30), || {
        late.log()
            .iter()
            .any(|l| l.contains("as a member of group"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        late.assignment().is_none(),
        "the rebalance should still wait for the dead member"
    );
    let started = Instant::now();
    late.signal("-TERM");
    assert!(
        late.wait(Duration::from_secs(20)).success(),
        "{:?}",
        late.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM during a JoinGroup took {:?}",
        started.elapsed()
    );
}
