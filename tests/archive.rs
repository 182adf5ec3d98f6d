//! `kafka-store run` into a `file://` store against a genuine broker: every
//! record exactly once (read back with apache-avro), byte-identical rebuilds
//! after `kill -9`, rotation, idle flush, transactions, two processes at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{self, Frame, Rec, Rng, Setup};

#[test]
fn every_record_lands_exactly_once_with_every_field() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records(
        "exact",
        4,
        40_000,
        &["none", "gzip", "snappy", "lz4", "zstd"],
    );
    let group = support::unique("g");
    let setup = Setup::new(
        &[&topic],
        &group,
        "",
        "max_file_bytes = \"1MiB\"\nblock_bytes = \"64KiB\"\n",
    );
    let out = setup.run_to_end();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("stored ") && log.contains(&topic), "{log}");

    let archive = support::read_archive(&setup.archive);
    let ends: BTreeMap<i32, (i64, i64)> = support::from_zero(&topic);
    let read = support::check_tiling(&archive, &topic, &ends);
    support::assert_same_records(&read, &produced);
    let files: usize = archive[&topic].values().map(Vec::len).sum();
    assert!(
        files >= 20,
        "expected size rotation to cut many files, got {files}"
    );
    // Offsets are committed only for what is stored: here, everything.
    let done = support::committed(&group, &topic, 4);
    for (p, (_, end)) in &ends {
        assert_eq!(done.get(p), Some(end), "committed offset of partition {p}");
    }

    // ls lists every file and finds no gap; cat prints a file's records.
    let ls = setup
        .command(&["ls", "--config", setup.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let listing = String::from_utf8(ls.stdout).unwrap();
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("file://")).count(),
        files
    );
    assert_eq!(listing.matches("no gaps").count(), 4, "{listing}");
    let first = &archive[&topic][&0][0];
    let name = first
        .path
        .strip_prefix(&setup.archive)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let cat = setup
        .command(&["cat", "--config", setup.config.to_str().unwrap(), &name])
        .output()
        .unwrap();
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(cat.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), first.records.len());
    assert_eq!(lines[0]["offset"], first.records[0].offset);
}

/// How many archive files a `file://` archive holds now.
fn stored_files(root: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match e.file_type() {
                Ok(t) if t.is_dir() => stored_files(&e.path()),
                Ok(_) if name.ends_with(".avro") && !name.starts_with('.') => 1,
                _ => 0,
            }
        })
        .sum()
}

#[test]
fn kill_9_at_random_moments_rebuilds_an_identical_archive() {
    let _broker = support::shared_broker();
    let (topic, produced) =
        support::topic_with_records("kill9", 4, 60_000, &["lz4", "zstd", "gzip"]);
    let files = "max_file_bytes = \"64KiB\"\nblock_bytes = \"16KiB\"\n";
    let reference = Setup::new(&[&topic], &support::unique("ref"), "", files);
    let started = Instant::now();
    reference.run_to_end();
    let full_run = started.elapsed();
    let total = stored_files(&reference.archive);

    let victim = Setup::new(&[&topic], &support::unique("victim"), "", files);
    let mut rng = Rng::new(0xC0FFEE);
    let mut kills = 0;
    // Kills after which the archive was partly built (not at start-up, not at the end).
    let mut midway = 0;
    for _ in 0..30 {
        if kills >= 6 {
            break;
        }
        let before = stored_files(&victim.archive);
        let mut child = victim.spawn(&["--until-caught-up"]);
        // The first run dies at a random moment from its start (start-up
        // included); the others once they stored a few files of their own,
        // at a random moment after (building, uploading, committing).
        if kills > 0 {
            let files = before + 1 + rng.below(8) as usize;
            let deadline = Instant::now() + Duration::from_secs(60);
            while stored_files(&victim.archive) < files
                && child.try_wait().unwrap().is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let wait = if kills > 0 {
            rng.below(20)
        } else {
            30 + rng.below(full_run.as_millis() as u64 / 2 + 1)
        };
        std::thread::sleep(Duration::from_millis(wait));
        if child.try_wait().unwrap().is_none() {
            support::signal(&child, "-KILL");
            kills += 1;
            let _ = child.wait();
            let stored = stored_files(&victim.archive);
            midway += usize::from(stored > 0 && stored < total);
        }
        let _ = child.wait();
    }
    eprintln!(
        "{kills} kills, {midway} with the archive partly built ({total} files, a full run takes {full_run:?})"
    );
    assert!(kills >= 5, "only {kills} kills landed mid-run");
    assert!(
        midway >= 2,
        "only {midway} of {kills} kills landed with the archive partly built"
    );
    victim.run_to_end();

    let want = support::snapshot(&reference.archive);
    let got = support::snapshot(&victim.archive);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "same file names"
    );
    for (name, bytes) in &want {
        assert!(
            got[name] == *bytes,
            "{name} differs after kill -9 and rebuild"
        );
    }
    let ends: BTreeMap<i32, (i64, i64)> = support::from_zero(&topic);
    let read = support::check_tiling(&support::read_archive(&victim.archive), &topic, &ends);
    support::assert_same_records(&read, &produced);
}

/// The Avro-encoded size of each record of a file, computed by apache-avro.
fn encoded_sizes(file: &support::ArchFile) -> Vec<u64> {
    use apache_avro::types::Value;
    let schema = apache_avro::Schema::parse_str(kafka_store::format::avro::SCHEMA).unwrap();
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap();
    let opt = |b: &Option<Vec<u8>>| match b {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(b) => Value::Union(1, Box::new(Value::Bytes(b.clone()))),
    };
    file.records
        .iter()
        .map(|r| {
            let headers = r
                .headers
                .iter()
                .map(|(k, v)| {
                    let text = kafka_store::format::avro::escape_key(k);
                    let raw = (text.as_bytes() != k.as_slice()).then(|| k.clone());
                    Value::Record(vec![
                        ("key".into(), Value::String(text)),
                        ("value".into(), opt(v)),
                        ("raw_key".into(), opt(&raw)),
                    ])
                })
                .collect();
            let value = Value::Record(vec![
                ("offset".into(), Value::Long(r.offset)),
                ("timestamp".into(), Value::Long(r.timestamp)),
                ("timestamp_type".into(), Value::Enum(0, "create".into())),
                ("key".into(), opt(&r.key)),
                ("value".into(), opt(&r.value)),
                ("headers".into(), Value::Array(headers)),
            ]);
            writer.write_value_to_vec(value).unwrap().len() as u64
        })
        .collect()
}

#[test]
fn files_rotate_by_size_count_and_record_time() {
    let _broker = support::shared_broker();
    let topic = support::unique("rotate");
    support::create_topic(&topic, 1, &[]);
    // Timestamps one second apart, except a jump back and one far ahead.
    let mut recs = support::gen_records(5, 2000, 1, 0);
    for (i, r) in recs.iter_mut().enumerate() {
        r.timestamp = 1_700_000_000_000 + i as i64 * 1000;
    }
    recs[500].timestamp -= 100_000;
    recs[1500].timestamp += 10_000_000;
    let produced = support::produce(&topic, &recs, "zstd");
    let ends = BTreeMap::from([(0, (0, 2000))]);

    // count
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "max_file_records = 300\n",
    );
    s.run_to_end();
    let archive = support::read_archive(&s.archive);
    let read = support::check_tiling(&archive, &topic, &ends);
    support::assert_same_records(&read, &produced);
    let firsts: Vec<i64> = archive[&topic][&0].iter().map(|f| f.first).collect();
    assert_eq!(firsts, vec![0, 300, 600, 900, 1200, 1500, 1800]);

    // size: a file closes after the record that brings it to the limit.
    let limit = 20 * 1024;
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        &format!("max_file_bytes = {limit}\nblock_bytes = 4096\nrotate_interval = \"1000d\"\n"),
    );
    s.run_to_end();
    let archive = support::read_archive(&s.archive);
    support::check_tiling(&archive, &topic, &ends);
    let files = &archive[&topic][&0];
    assert!(files.len() > 5);
    for (i, f) in files.iter().enumerate() {
        let sizes = encoded_sizes(f);
        let total: u64 = sizes.iter().sum();
        if i + 1 < files.len() {
            assert!(
                total >= limit,
                "file {} holds {total} bytes, below {limit}",
                f.first
            );
            assert!(
                total - sizes.last().unwrap() < limit,
                "file {} went on past the limit",
                f.first
            );
        } else {
            assert!(total < limit);
        }
    }

    // time: a file closes before the first record an hour's worth (here
    // 100 s) past its first record; a timestamp going back does not cut.
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "rotate_interval = \"100s\"\n",
    );
    s.run_to_end();
    let archive = support::read_archive(&s.archive);
    support::check_tiling(&archive, &topic, &ends);
    let files = &archive[&topic][&0];
    for pair in files.windows(2) {
        let t0 = pair[0].records[0].timestamp;
        assert!(
            pair[0].records.iter().all(|r| r.timestamp < t0 + 100_000),
            "file {}",
            pair[0].first
        );
        assert!(
            pair[1].records[0].timestamp >= t0 + 100_000,
            "file {} cut early",
            pair[1].first
        );
    }
    assert!(files.len() >= 15, "{} files", files.len());
}

#[test]
fn an_idle_partition_is_flushed_at_its_end_and_continued_by_name() {
    let _broker = support::shared_broker();
    let topic = support::unique("idle");
    support::create_topic(&topic, 1, &[]);
    let group = support::unique("g");
    let s = Setup::new(&[&topic], &group, "", "idle_flush = \"1s\"\n");
    let produced = support::produce(
        &topic,
        &support::gen_records(1, 50, 1, 1_700_000_000_000),
        "none",
    );
    let child = s.spawn(&[]);

    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let archive = support::read_archive(&s.archive);
            let files = archive
                .get(&topic)
                .and_then(|t| t.get(&0))
                .map_or(0, Vec::len);
            if files >= n {
                return archive;
            }
            assert!(Instant::now() < deadline, "no idle flush within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let archive = wait_for(1);
    let files = &archive[&topic][&0];
    assert_eq!((files[0].first, files[0].next), (0, 50));

    let more = support::produce(
        &topic,
        &support::gen_records(2, 30, 1, 1_700_000_100_000),
        "none",
    );
    let archive = wait_for(2);
    let files = &archive[&topic][&0];
    assert_eq!((files[1].first, files[1].next), (50, 80));

    let started = Instant::now();
    support::signal(&child, "-TERM");
    let out = support::wait_with_timeout(child, Duration::from_secs(15));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        started.elapsed()
    );
    let mut all = produced;
    all.extend(more);
    let read = support::check_tiling(&archive, &topic, &BTreeMap::from([(0, (0, 80))]));
    support::assert_same_records(&read, &all);
    assert_eq!(support::committed(&group, &topic, 1).get(&0), Some(&80));
}

#[test]
fn aborted_transactions_leave_a_gapless_chain_without_their_records() {
    let _broker = support::shared_broker();
    let topic = support::unique("txn-archive");
    support::create_topic(&topic, 2, &[]);
    let recs = support::gen_records(8, 1200, 2, 1_700_000_000_000);
    let mut frames = Vec::new();
    let mut aborted = Vec::new();
    for (i, chunk) in recs.chunks(100).enumerate() {
        frames.push(Frame::Begin);
        frames.extend(chunk.iter().cloned().map(Frame::Rec));
        let abort = i % 3 == 1;
        frames.push(if abort { Frame::Abort } else { Frame::Commit });
        aborted.extend(std::iter::repeat_n(abort, chunk.len()));
    }
    let offsets = support::produce_frames(&topic, &frames, "zstd", Some(&support::unique("tx")));
    let committed: BTreeMap<(i32, i64), Rec> = offsets
        .into_iter()
        .zip(recs)
        .zip(aborted)
        .filter(|(_, a)| !a)
        .map(|((k, r), _)| (k, r))
        .collect();
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "max_file_records = 70\n",
    );
    s.run_to_end();
    let ends: BTreeMap<i32, (i64, i64)> = support::from_zero(&topic);
    let read = support::check_tiling(&support::read_archive(&s.archive), &topic, &ends);
    support::assert_same_records(&read, &committed);
}

#[test]
fn two_processes_on_one_store_and_group_archive_exactly_once() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("twins", 4, 20_000, &["lz4", "snappy"]);
    let files = "max_file_bytes = \"256KiB\"\n";
    let reference = Setup::new(&[&topic], &support::unique("ref"), "", files);
    reference.run_to_end();

    let group = support::unique("shared");
    let a = Setup::new(&[&topic], &group, "", files);
    // The second process shares the first one's store but has its own spool.
    let b_config = a.dir.path().join("b.toml");
    Setup::write(
        &b_config,
        &[&topic],
        &group,
        &a.archive,
        &a.dir.path().join("spool-b"),
        "",
        files,
    );
    let pa = a.spawn(&["--until-caught-up"]);
    let pb = a
        .command(&[
            "run",
            "--config",
            b_config.to_str().unwrap(),
            "--until-caught-up",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = String::new();
    for p in [pa, pb] {
        let out = support::wait_with_timeout(p, Duration::from_secs(300));
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{logs}");
    }
    // --until-caught-up runs outside the group: both built every partition.
    assert!(
        logs.contains("(identical object already there)"),
        "the two processes never met: {logs}"
    );
    let ends: BTreeMap<i32, (i64, i64)> = support::from_zero(&topic);
    let read = support::check_tiling(&support::read_archive(&a.archive), &topic, &ends);
    support::assert_same_records(&read, &produced);
    let want = support::snapshot(&reference.archive);
    let got = support::snapshot(&a.archive);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    assert!(
        want == got,
        "the twins' archive differs from a single process's"
    );
}

#[test]
fn builders_that_cut_differently_adopt_each_others_files() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("cuts", 2, 15_000, &["zstd"]);
    let group = support::unique("g");
    // Two processes on one store, each cutting files elsewhere: whoever
    // creates a name first wins; the other adopts the stored file's end.
    let a = Setup::new(&[&topic], &group, "", "max_file_records = 700\n");
    let b_config = a.dir.path().join("b.toml");
    // --until-caught-up runs outside the group: both archive every partition.
    Setup::write(
        &b_config,
        &[&topic],
        &format!("{group}-b"),
        &a.archive,
        &a.dir.path().join("spool-b"),
        "",
        "max_file_records = 1100\n",
    );
    let pa = a.spawn(&["--until-caught-up"]);
    let pb = a
        .command(&[
            "run",
            "--config",
            b_config.to_str().unwrap(),
            "--until-caught-up",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = String::new();
    for p in [pa, pb] {
        let out = support::wait_with_timeout(p, Duration::from_secs(300));
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{logs}");
    }
    let ends: BTreeMap<i32, (i64, i64)> = support::from_zero(&topic);
    let archive = support::read_archive(&a.archive);
    let read = support::check_tiling(&archive, &topic, &ends);
    support::assert_same_records(&read, &produced);
    let sizes: Vec<usize> = archive[&topic]
        .values()
        .flatten()
        .map(|f| f.records.len())
        .collect();
    assert!(sizes.iter().all(|&n| n <= 1100), "{sizes:?}");
    assert!(logs.contains("adopting it"), "no conflict happened: {logs}");
}

#[test]
fn status_shows_where_the_archive_ends_and_the_lag() {
    let _broker = support::shared_broker();
    let topic = support::unique("status");
    support::create_topic(&topic, 2, &[]);
    support::produce(
        &topic,
        &support::gen_records(3, 100, 2, 1_700_000_000_000),
        "none",
    );
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "max_file_records = 20\n",
    );
    let status = |s: &Setup| s.succeed("status", &[]);
    let before = status(&s);
    assert!(
        before.contains(&format!("{topic}/0\t-\t0\t50\t50\t-")),
        "{before}"
    );
    assert!(
        before.contains("total lag 100 record(s), 2 without any archive file"),
        "{before}"
    );

    s.run_to_end();
    support::produce(
        &topic,
        &support::gen_records(4, 10, 2, 1_700_000_100_000),
        "none",
    );
    let after = status(&s);
    assert!(
        after.contains(&format!("{topic}/1\t50\t0\t55\t5\t50")),
        "{after}"
    );
    assert!(
        after.contains("total lag 10 record(s), 0 without any archive file"),
        "{after}"
    );
}
