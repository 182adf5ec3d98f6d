//! Everything Kafka accepts is archived, and what is not ours stops only
//! its partition: a 70 MB record among small ones, header keys that are
//! not UTF-8, topics named with a leading dot (and `lost+found`, which no
//! topic can be named, is no topic); a junk and a truncated
//! object at a chain's next name, at start or met while running (no later
//! file is stored after it); temporary copies a crash left behind.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::support::{self, Rec, Setup};

fn run_once(s: &Setup) -> (Option<i32>, String) {
    let out = support::run_with_timeout(
        s.command(&[
            "run",
            "--config",
            s.config.to_str().unwrap(),
            "--until-caught-up",
        ]),
        Duration::from_secs(300),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rec(partition: i32, ts: i64, value: Vec<u8>) -> Rec {
    Rec {
        partition,
        timestamp: ts,
        key: Some(format!("k{ts}").into_bytes()),
        value: Some(value),
        headers: vec![(b"h".to_vec(), Some(b"v".to_vec()))],
    }
}

#[test]
fn a_record_of_70_mb_among_small_ones_is_archived_and_halts_nothing() {
    let _broker = support::shared_broker();
    let topic = support::unique("large");
    support::create_topic(&topic, 2, &["max.message.bytes=100000000"]);
    let mut records: Vec<Rec> = (0..40)
        .map(|i| rec(i % 2, 1_700_000_000_000 + i64::from(i), vec![b'a'; 100]))
        .collect();
    // Not compressible to nothing: 70 MB of varied bytes.
    let mut rng = support::Rng::new(70);
    let big: Vec<u8> = (0..70_000_000 / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    records.insert(20, rec(0, 1_700_000_000_100, big));
    let produced = support::produce_at(
        support::BOOTSTRAP,
        &topic,
        &records,
        "none",
        &["message.max.bytes=100000000", "batch.size=100000000"],
    );
    let s = Setup::new(&[&topic], &support::unique("g"), "", "");
    let (code, stderr) = run_once(&s);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("fetching its") && stderr.contains("partition(s) one by one"),
        "the large response was fetched again alone: {stderr}"
    );
    let read = support::check_tiling(
        &support::read_archive(&s.archive),
        &topic,
        &support::from_zero(&topic),
    );
    support::assert_same_records(&read, &produced);
}

#[test]
fn header_keys_that_are_not_utf8_are_archived_byte_exact() {
    let _broker = support::shared_broker();
    let topic = support::unique("raw-keys");
    support::create_topic(&topic, 1, &[]);
    let records = vec![
        Rec {
            partition: 0,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(b"plain".to_vec()),
            headers: vec![(b"trace".to_vec(), Some(b"1".to_vec()))],
        },
        Rec {
            partition: 0,
            timestamp: 1_700_000_000_001,
            key: Some(b"k".to_vec()),
            value: None,
            headers: vec![
                (b"\xff\xfe".to_vec(), Some(b"not utf-8".to_vec())),
                (b"ok".to_vec(), None),
                (b"mix\xc3(".to_vec(), Some(Vec::new())),
            ],
        },
    ];
    let base = support::produce_raw(&topic, 0, &records);
    let produced: BTreeMap<(i32, i64), Rec> = records
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, r)| ((0, base + i as i64), r))
        .collect();
    let s = Setup::new(&[&topic], &support::unique("g"), "", "");
    s.run_to_end();
    // apache-avro reads every key back (the raw one where it is not UTF-8).
    let read = support::check_tiling(
        &support::read_archive(&s.archive),
        &topic,
        &support::from_zero(&topic),
    );
    support::assert_same_records(&read, &produced);
    // cat shows such a key as base64, like any bytes that are not UTF-8.
    let cat = s
        .command(&[
            "cat",
            "--config",
            s.config.to_str().unwrap(),
            &format!("{topic}/000000/00000000000000000000.avro"),
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&cat.stdout);
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert!(
        out.contains(r#"{"key":{"base64":"//4="},"value":"not utf-8"}"#),
        "{out}"
    );
    assert!(out.contains(r#"{"key":"trace","value":"1"}"#), "{out}");
}

#[test]
fn a_topic_named_with_a_leading_dot_is_archived_and_listed() {
    let _broker = support::shared_broker();
    let topic = format!(".{}", support::unique("dot"));
    support::create_topic(&topic, 1, &[]);
    let produced = support::produce(
        &topic,
        &support::gen_records(8, 50, 1, 1_700_000_000_000),
        "none",
    );
    let s = Setup::new(&[&topic], &support::unique("g"), "", "");
    s.run_to_end();
    let read = support::check_tiling(
        &support::read_archive(&s.archive),
        &topic,
        &support::from_zero(&topic),
    );
    support::assert_same_records(&read, &produced);
    // The archive at the root of a filesystem: `lost+found` is no topic.
    std::fs::create_dir_all(s.archive.join("lost+found").join("000000")).unwrap();
    let ls = s
        .command(&["ls", "--config", s.config.to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{ls:?}");
    assert!(
        listing.contains(&format!("# {topic}/0: 1 file(s), offsets 0..50")),
        "{listing}"
    );
    assert!(!listing.contains("lost+found"), "{listing}");
    let status = s
        .command(&["status", "--config", s.config.to_str().unwrap()])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains(&format!("{topic}/0\t50\t")), "{status}");
}

/// The folder of a partition in a `file://` archive.
fn partition_dir(root: &Path, topic: &str, partition: i32) -> std::path::PathBuf {
    root.join(topic).join(format!("{partition:06}"))
}

#[test]
fn a_junk_or_truncated_object_at_the_next_name_stops_only_its_partition() {
    let _broker = support::shared_broker();
    let topic = support::unique("bad-objects");
    support::create_topic(&topic, 3, &[]);
    support::produce(
        &topic,
        &support::gen_records(9, 600, 3, 1_700_000_000_000),
        "none",
    );
    let files = "max_file_records = 100\n";
    let s = Setup::new(&[&topic], &support::unique("g"), "", files);
    s.run_to_end();
    let ends = support::extents(&topic);
    // The same log, archived elsewhere further on: a valid file that
    // starts exactly at the first archive's next name of partition 1.
    let produced = support::produce(
        &topic,
        &support::gen_records(10, 600, 3, 1_700_000_100_000),
        "none",
    );
    let other = Setup::new(&[&topic], &support::unique("g"), "", files);
    other.run_to_end();
    let next1 = ends[&1].1;
    let name = |first: i64| format!("{first:020}.avro");
    let valid = std::fs::read(partition_dir(&other.archive, &topic, 1).join(name(next1))).unwrap();
    std::fs::write(
        partition_dir(&s.archive, &topic, 1).join(name(next1)),
        &valid[..valid.len() / 2],
    )
    .unwrap();
    let next0 = ends[&0].1;
    std::fs::write(
        partition_dir(&s.archive, &topic, 0).join(name(next0)),
        b"not an archive file at all",
    )
    .unwrap();

    let (code, stderr) = run_once(&s);
    assert_eq!(code, Some(3), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("kafka-store: "))
        .collect();
    let junk = format!(
        "kafka-store: {topic}/0 was not archived: file://{}/{topic}/000000/{} is in the archive chain of {topic}/0 but is not a kafka-store file of it (not a kafka-store archive file: bad magic",
        s.archive.display(),
        name(next0)
    );
    let cut = format!(
        "kafka-store: {topic}/1 was not archived: file://{}/{topic}/000001/{} is in the archive chain of {topic}/1 but is not a kafka-store file of it (truncated: ",
        s.archive.display(),
        name(next1)
    );
    assert!(lines.iter().any(|l| l.starts_with(&junk)), "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with(&cut)), "{lines:#?}");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    // Partition 2 went on to the end.
    let archive = support::read_archive_except(&s.archive, &[0, 1]);
    let p2: BTreeMap<_, _> = produced.into_iter().filter(|((p, _), _)| *p == 2).collect();
    let end2 = support::extents(&topic)[&2].1;
    let read = support::check_tiling(&archive, &topic, &BTreeMap::from([(2, (0, end2))]));
    assert!(p2.keys().all(|k| read.contains_key(k)));
}

#[test]
fn a_junk_object_met_while_running_stops_the_chain_there() {
    let _broker = support::shared_broker();
    let topic = support::unique("bad-later");
    support::create_topic(&topic, 1, &[]);
    let records = |seed, n| support::gen_records(seed, n, 1, 1_700_000_000_000);
    support::produce(&topic, &records(12, 100), "none");
    let group = support::unique("g");
    let s = Setup::new(&[&topic], &group, "", "max_file_records = 100\n");
    let folder = partition_dir(&s.archive, &topic, 0);
    let name = |first: i64| format!("{first:020}.avro");
    let mut p = support::Proc::start(&s.config);
    support::wait_until("the first file", Duration::from_secs(60), || {
        folder.join(name(0)).exists()
    });
    // Junk at the second file's name, found only when that file is put;
    // the files after it are built meanwhile.
    std::fs::write(folder.join(name(100)), b"junk").unwrap();
    support::produce(&topic, &records(13, 2_000), "none");
    support::wait_until("the halt", Duration::from_secs(60), || {
        p.log()
            .iter()
            .any(|l| l.contains("is not a kafka-store file"))
    });
    std::thread::sleep(Duration::from_secs(2));
    p.signal("-TERM");
    p.wait(Duration::from_secs(30));
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [name(0), name(100)],
        "files were stored after the junk"
    );
    let committed = support::committed(&group, &topic, 1);
    assert!(
        committed.get(&0).is_none_or(|&c| c <= 100),
        "committed past the junk: {committed:?}"
    );
}

#[test]
fn temporary_copies_left_by_a_crash_are_removed_when_the_partition_is_taken() {
    let _broker = support::shared_broker();
    let topic = support::unique("temp-copies");
    support::create_topic(&topic, 1, &[]);
    let produced = support::produce(
        &topic,
        &support::gen_records(11, 100, 1, 1_700_000_000_000),
        "none",
    );
    let s = Setup::new(&[&topic], &support::unique("g"), "", "");
    let folder = partition_dir(&s.archive, &topic, 0);
    std::fs::create_dir_all(&folder).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .replace(['.', '/'], "-");
    // A dead process's copy (pid 0 is never a process).
    let stale = folder.join(format!(".00000000000000000000.avro.{host}.0.123.tmp"));
    std::fs::write(&stale, b"half a copy").unwrap();
    let out = s.run_to_end();
    assert!(!stale.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a temporary copy left by a crash"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // read_archive also fails on any file left with a leading dot.
    let read = support::check_tiling(
        &support::read_archive(&s.archive),
        &topic,
        &support::from_zero(&topic),
    );
    support::assert_same_records(&read, &produced);
}
