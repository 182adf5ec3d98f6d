//! The MySQL index against a real MariaDB: one row per stored file, equal
//! to the object; back-filled after MySQL was down or a process died
//! between store and row; `locate` agrees with a brute-force scan; topics
//! that differ only in case keep rows of their own; and the errors a
//! misconfigured index gives.

use std::collections::BTreeMap;
use std::time::Duration;

use mysql::prelude::Queryable;

use crate::support::{self, Proc, Rng, Setup};

fn with_index(db: &str) -> String {
    format!("\n[mysql]\nurl = \"{}/{db}\"\n", support::MYSQL)
}

/// A setup whose config has a `[mysql]` section.
fn setup(topic: &str, db: &str, files: &str) -> Setup {
    let s = Setup::new(&[topic], &support::unique("g"), "", files);
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("{text}{}", with_index(db))).unwrap();
    s
}

/// Every file of the archive has exactly one row, equal to what the file
/// says. `uploaded`: every row was written by the uploader, none back-filled.
fn check_rows(s: &Setup, db: &str, topic: &str, uploaded: bool) {
    let archive = support::read_archive(&s.archive);
    let rows = support::index_rows(db, topic);
    let mut expected = Vec::new();
    for (p, files) in &archive[topic] {
        for f in files {
            let bytes = std::fs::read(&f.path).unwrap();
            let ts: Vec<i64> = f.records.iter().map(|r| r.timestamp).collect();
            expected.push((
                *p,
                f.first,
                f.next,
                f.records.len() as i64,
                ts.iter().min().copied(),
                ts.iter().max().copied(),
                bytes.len() as i64,
                crc32c::crc32c(&bytes),
                format!("file://{}", f.path.display()),
            ));
        }
    }
    assert_eq!(rows.len(), expected.len(), "one row per file");
    for (row, want) in rows.iter().zip(&expected) {
        let (p, first, next, n, min, max, bytes, crc, url) = row.clone();
        assert_eq!(
            (p, first, next, n, min, max, bytes, url),
            (
                want.0,
                want.1,
                want.2,
                want.3,
                want.4,
                want.5,
                want.6,
                want.8.clone()
            ),
            "row of {topic}/{p} at {first}"
        );
        // A row written by the uploader carries our CRC32C; one back-filled
        // from a local store has none (the store keeps no checksum).
        assert!(
            if uploaded {
                crc == Some(want.7)
            } else {
                crc.is_none_or(|c| c == want.7)
            },
            "crc32c of {topic}/{p} at {first}"
        );
    }
}

#[test]
fn every_stored_file_has_exactly_one_row_equal_to_its_object() {
    let (_broker, _db) = (support::shared_broker(), support::shared_mariadb());
    let (topic, _) = support::topic_with_records("idx", 3, 3_000, &["lz4"]);
    let db = support::mysql_db();
    let s = setup(&topic, &db, "max_file_records = 400\n");
    s.run_to_end();
    check_rows(&s, &db, &topic, true);
    // A second run adds nothing and changes nothing.
    s.run_to_end();
    check_rows(&s, &db, &topic, true);
}

#[test]
fn rows_are_back_filled_after_mysql_was_down() {
    let (_broker, _db) = (support::shared_broker(), support::exclusive_mariadb());
    let (topic, mut produced) = support::topic_with_records("idx-down", 2, 1_000, &["none"]);
    let db = support::mysql_db();
    let s = setup(&topic, &db, "idle_flush = \"1s\"\nmax_file_records = 300\n");
    let mut p = Proc::start(&s.config);
    let complete = |produced: &BTreeMap<(i32, i64), support::Rec>| {
        support::archive_is_complete(&s.archive, &topic, produced)
    };
    support::wait_until("first records archived", Duration::from_secs(60), || {
        complete(&produced)
    });
    support::wait_until("first rows indexed", Duration::from_secs(30), || {
        support::index_rows(&db, &topic).len()
            == support::read_archive(&s.archive)[&topic]
                .values()
                .map(Vec::len)
                .sum::<usize>()
    });

    support::test_services("stop-mariadb");
    produced.extend(support::produce(
        &topic,
        &support::gen_records(8, 1_000, 2, 1_710_000_000_000),
        "none",
    ));
    support::wait_until(
        "records archived while mysql is down",
        Duration::from_secs(60),
        || complete(&produced),
    );
    // Offsets are committed only as far as rows exist.
    support::test_services("start-mariadb");
    // Committed offsets first: rows back-filled between the two reads only
    // add to the index.
    let committed = support::committed(&s_group(&s), &topic, 2);
    let rows_before = support::index_rows(&db, &topic);
    for (p, c) in &committed {
        let indexed = rows_before
            .iter()
            .filter(|r| r.0 == *p)
            .map(|r| r.2)
            .max()
            .unwrap_or(0);
        assert!(
            *c <= indexed,
            "partition {p}: committed {c} beyond the index ({indexed})"
        );
    }
    support::wait_until("rows back-filled", Duration::from_secs(60), || {
        support::index_rows(&db, &topic).len()
            == support::read_archive(&s.archive)[&topic]
                .values()
                .map(Vec::len)
                .sum::<usize>()
    });
    p.signal("-TERM");
    assert!(p.wait(Duration::from_secs(30)).success());
    check_rows(&s, &db, &topic, false);
}

/// The group id written into a setup's config.
fn s_group(s: &Setup) -> String {
    let text = std::fs::read_to_string(&s.config).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("group_id = "))
        .unwrap()
        .trim_matches('"')
        .to_string()
}

#[test]
fn a_process_killed_between_store_and_row_leaves_the_row_to_its_successor() {
    let (_broker, _db) = (support::shared_broker(), support::shared_mariadb());
    let topic = support::unique("idx-kill");
    support::create_topic(&topic, 1, &[]);
    let db = support::mysql_db();
    let s = setup(&topic, &db, "idle_flush = \"1s\"\n");
    let mut p = Proc::start(&s.config);
    support::wait_until("the member started", Duration::from_secs(30), || {
        p.assignment().is_some()
    });
    // Hold the table: the process stores the object, then blocks on its row.
    let mut lock = support::mysql(Some(&db));
    lock.query_drop("LOCK TABLES kafka_store_files WRITE")
        .unwrap();
    let produced = support::produce(
        &topic,
        &support::gen_records(5, 200, 1, 1_700_000_000_000),
        "none",
    );
    support::wait_until("the object stored", Duration::from_secs(60), || {
        support::read_archive(&s.archive)
            .get(&topic)
            .is_some_and(|t| !t.is_empty())
    });
    std::thread::sleep(Duration::from_millis(300));
    p.signal("-KILL");
    p.wait(Duration::from_secs(10));
    lock.query_drop("UNLOCK TABLES").unwrap();
    assert!(
        support::index_rows(&db, &topic).is_empty(),
        "the row was not written before the kill"
    );

    s.run_to_end();
    check_rows(&s, &db, &topic, false);
    let ends = BTreeMap::from([(0, (0, 200))]);
    support::assert_same_records(
        &support::check_tiling(&support::read_archive(&s.archive), &topic, &ends),
        &produced,
    );
}

#[test]
fn locate_agrees_with_a_brute_force_scan_with_and_without_mysql() {
    let (_broker, _db) = (support::shared_broker(), support::shared_mariadb());
    let topic = support::unique("locate");
    support::create_topic(&topic, 1, &[]);
    let mut recs = support::gen_records(21, 1_000, 1, 0);
    let mut rng = Rng::new(3);
    for (i, r) in recs.iter_mut().enumerate() {
        // Mostly rising timestamps, with some jumps back.
        r.timestamp = 1_700_000_000_000 + i as i64 * 1_000 - (rng.below(4) as i64 * 7_000);
    }
    support::produce(&topic, &recs, "none");
    let db = support::mysql_db();
    let indexed = setup(&topic, &db, "max_file_records = 50\n");
    indexed.run_to_end();
    let plain = indexed.dir.path().join("plain.toml");
    let text = std::fs::read_to_string(&indexed.config).unwrap();
    std::fs::write(&plain, text.split("\n[mysql]").next().unwrap()).unwrap();
    // An index that does not answer: locate goes through the store.
    let unreachable = indexed.dir.path().join("unreachable.toml");
    std::fs::write(
        &unreachable,
        text.replace(support::MYSQL, "mysql://root@127.0.0.1:1"),
    )
    .unwrap();

    let archive = support::read_archive(&indexed.archive);
    let files = &archive[&topic][&0];
    let all: Vec<&support::ReadRec> = files.iter().flat_map(|f| &f.records).collect();
    let locate = |config: &std::path::Path, arg: &str, value: &str| {
        let out = indexed
            .command(&[
                "locate",
                "--config",
                config.to_str().unwrap(),
                "--topic",
                &topic,
                "--partition",
                "0",
                arg,
                value,
            ])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    for _ in 0..15 {
        let offset = rng.below(1_100) as i64;
        let want = files.iter().find(|f| f.first <= offset && offset < f.next);
        for config in [&indexed.config, &plain, &unreachable] {
            let (code, out) = locate(config, "--offset", &offset.to_string());
            match want {
                Some(f) => assert!(
                    out.starts_with(&format!(
                        "file://{}\tfirst {}\tnext {}",
                        f.path.display(),
                        f.first,
                        f.next
                    )),
                    "offset {offset}: {out}"
                ),
                None => assert_eq!(code, Some(4), "offset {offset}: {out}"),
            }
        }
        let t = 1_700_000_000_000 + rng.below(1_100_000) as i64;
        let want = all.iter().find(|r| r.timestamp >= t);
        let time = kafka_store::format::timestamp::format_millis(t);
        for config in [&indexed.config, &plain, &unreachable] {
            let (code, out) = locate(config, "--time", &time);
            match want {
                Some(r) => assert!(
                    out.contains(&format!("\toffset {}\ttimestamp {}", r.offset, r.timestamp)),
                    "time {time}: {out}"
                ),
                None => assert_eq!(code, Some(4), "time {time}: {out}"),
            }
        }
    }
}

#[test]
fn a_misconfigured_index_is_named_and_an_unreachable_one_is_waited_for() {
    let (_broker, _db) = (support::shared_broker(), support::shared_mariadb());
    let topic = support::unique("idx-bad");
    support::create_topic(&topic, 1, &[]);
    support::produce(
        &topic,
        &support::gen_records(6, 20, 1, 1_700_000_000_000),
        "none",
    );
    let db = support::mysql_db();
    let user = format!("u{}", &db[3..]);
    let mut root = support::mysql(None);
    root.query_drop(format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'right'"))
        .unwrap();
    root.query_drop(format!("GRANT ALL ON {db}.* TO '{user}'@'%'"))
        .unwrap();

    // `command` with a config whose [mysql] section is `url` and `more`.
    let command = |command: &str, url: &str, more: &str| {
        let s = Setup::new(&[&topic], &support::unique("g"), "", "");
        let text = std::fs::read_to_string(&s.config).unwrap();
        std::fs::write(
            &s.config,
            format!("{text}\n[mysql]\nurl = \"{url}\"\n{more}"),
        )
        .unwrap();
        let mut args = vec![command, "--config", s.config.to_str().unwrap()];
        if command == "run" {
            args.push("--until-caught-up");
        }
        let out = support::run_with_timeout(s.command(&args), Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (
            out.status.code(),
            stderr.lines().last().unwrap_or("").to_string(),
            stderr,
        )
    };
    let run = |url: &str| command("run", url, "");
    let (code, line, _) = run(&format!("mysql://{user}:wrong@127.0.0.1:3306/{db}"));
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.contains("Access denied") && line.contains("mysql.url") && !line.contains("wrong"),
        "{line}"
    );
    // Other commands say the same, with the same exit code.
    let (code, reindex_line, _) = command(
        "reindex",
        &format!("mysql://{user}:wrong@127.0.0.1:3306/{db}"),
        "",
    );
    assert_eq!((code, &reindex_line), (Some(2), &line));

    let (code, line, _) = run(&format!("mysql://{user}:right@127.0.0.1:3306/{db}_missing"));
    assert_eq!(code, Some(2), "{line}");
    assert!(line.contains(&format!("{db}_missing")), "{line}");

    support::mysql(Some(&db))
        .query_drop("CREATE TABLE kafka_store_files (topic VARCHAR(10), first_offset BIGINT)")
        .unwrap();
    let (code, line, _) = run(&format!("mysql://{user}:right@127.0.0.1:3306/{db}"));
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.contains("lacks column(s) store, partition, next_offset"),
        "{line}"
    );

    // A table named by a reserved word is created and used.
    let (code, _, log) = command(
        "run",
        &format!("mysql://{user}:right@127.0.0.1:3306/{db}"),
        "table = \"order\"\ncreate_table = true\n",
    );
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("created mysql index table order"), "{log}");

    // Unreachable: archiving goes on (the store is the ledger).
    let (code, _, log) = run(&format!("mysql://{user}:right@127.0.0.1:1/{db}"));
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("cannot connect to the mysql index")
            && log.contains("archiving goes on")
            && log.contains("stored "),
        "{log}"
    );
}

#[test]
fn reindex_rebuilds_the_table_from_the_store() {
    let (_broker, _db) = (support::shared_broker(), support::shared_mariadb());
    let (topic, _) = support::topic_with_records("reindex", 2, 500, &["none"]);
    let db = support::mysql_db();
    let s = setup(&topic, &db, "max_file_records = 100\n");
    s.run_to_end();
    // A lost row, a wrong row and a row without an object.
    let mut conn = support::mysql(Some(&db));
    conn.exec_drop(
        "DELETE FROM kafka_store_files WHERE topic = ? AND first_offset = 100",
        (&topic,),
    )
    .unwrap();
    conn.exec_drop(
        "UPDATE kafka_store_files SET next_offset = 999 WHERE topic = ? AND first_offset = 200",
        (&topic,),
    )
    .unwrap();
    conn.exec_drop(
        "INSERT INTO kafka_store_files (store, topic, `partition`, first_offset, next_offset, record_count, bytes, object_url) VALUES (?, ?, 0, 5000, 5100, 1, 1, 'nowhere')",
        (format!("file://{}", s.archive.display()), &topic),
    )
    .unwrap();
    let out = s
        .command(&["reindex", "--config", s.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("1 row(s) without an object deleted"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrected the index row"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_rows(&s, &db, &topic, false);
}

#[test]
fn rows_cover_an_archive_with_a_skipped_range_and_locate_falls_back_to_the_store() {
    let (_broker, _db) = (support::shared_broker(), support::shared_mariadb());
    let topic = support::unique("idx-gap");
    support::create_topic(&topic, 1, &[]);
    support::produce(
        &topic,
        &support::gen_records(31, 100, 1, 1_700_000_000_000),
        "none",
    );
    let db = support::mysql_db();
    let s = setup(&topic, &db, "max_file_records = 40\n");
    s.run_to_end();
    // Retention takes 100..150 before the next run; on_gap = "skip" goes on.
    support::produce(
        &topic,
        &support::gen_records(32, 100, 1, 1_700_000_100_000),
        "none",
    );
    support::delete_records(&topic, 0, 150);
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("commit_interval", "on_gap = \"skip\"\ncommit_interval");
    std::fs::write(&s.config, text).unwrap();
    s.run_to_end();
    check_rows(&s, &db, &topic, true);
    let firsts: Vec<i64> = support::index_rows(&db, &topic)
        .iter()
        .map(|r| r.1)
        .collect();
    // The skipped range 100..150 is a file of its own, with its row.
    assert_eq!(firsts, vec![0, 40, 80, 100, 150, 190]);
    assert_eq!(
        support::committed(&s_group(&s), &topic, 1).get(&0),
        Some(&200)
    );

    // Rows lost from the index: locate still answers, from the store.
    support::mysql(Some(&db))
        .exec_drop("DELETE FROM kafka_store_files WHERE topic = ?", (&topic,))
        .unwrap();
    let out = s
        .command(&[
            "locate",
            "--config",
            s.config.to_str().unwrap(),
            "--topic",
            &topic,
            "--partition",
            "0",
            "--offset",
            "170",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("first 150\tnext 190"));
}

#[test]
fn two_stores_share_one_table_without_touching_each_others_rows() {
    let (_broker, _db) = (support::shared_broker(), support::shared_mariadb());
    let (topic, _) = support::topic_with_records("idx-two", 1, 300, &["none"]);
    let db = support::mysql_db();
    // Two archives of one topic with different cuts: the same first
    // offsets, different objects.
    let a = setup(&topic, &db, "max_file_records = 100\n");
    let b = setup(&topic, &db, "max_file_records = 150\n");
    a.run_to_end();
    b.run_to_end();
    let rows = support::index_rows(&db, &topic);
    let of = |s: &Setup| -> Vec<(i64, i64)> {
        let prefix = format!("file://{}/", s.archive.display());
        rows.iter()
            .filter(|r| r.8.starts_with(&prefix))
            .map(|r| (r.1, r.2))
            .collect()
    };
    assert_eq!(of(&a), vec![(0, 100), (100, 200), (200, 300)]);
    assert_eq!(of(&b), vec![(0, 150), (150, 300)]);
    assert_eq!(rows.len(), 5);
    // reindex of one store leaves the other's rows alone.
    let out = a
        .command(&["reindex", "--config", a.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(support::index_rows(&db, &topic).len(), 5);
}

#[test]
fn a_table_of_kafka_store_0_1_is_named_and_upgraded_by_the_migration() {
    let (_broker, _db) = (support::shared_broker(), support::shared_mariadb());
    let (topic, _) = support::topic_with_records("idx-migrate", 1, 200, &["none"]);
    let db = support::mysql_db();
    let s = setup(&topic, &db, "max_file_records = 100\n");
    // The 0.1 table, with a row of a file that exists.
    let mut conn = support::mysql(Some(&db));
    conn.query_drop(
        "CREATE TABLE kafka_store_files (topic VARCHAR(249) NOT NULL, `partition` INT NOT NULL, first_offset BIGINT NOT NULL, next_offset BIGINT NOT NULL, record_count BIGINT NOT NULL, min_timestamp BIGINT NULL, max_timestamp BIGINT NULL, bytes BIGINT NOT NULL, crc32c INT UNSIGNED NULL, object_url VARCHAR(2048) NOT NULL, created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), PRIMARY KEY (topic, `partition`, first_offset), KEY by_time (topic, `partition`, max_timestamp)) ENGINE = InnoDB",
    )
    .unwrap();
    let url = format!(
        "file://{}/{topic}/000000/00000000000000000000.avro",
        s.archive.display()
    );
    conn.exec_drop(
        "INSERT INTO kafka_store_files (topic, `partition`, first_offset, next_offset, record_count, bytes, object_url) VALUES (?, 0, 0, 100, 100, 1, ?)",
        (&topic, &url),
    )
    .unwrap();
    let out = s
        .command(&[
            "run",
            "--config",
            s.config.to_str().unwrap(),
            "--until-caught-up",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lacks column(s) store")
            && stderr.contains("vendor-config/mysql-migrate-store.sql"),
        "{stderr}"
    );
    migrate(&mut conn, "mysql-migrate-store.sql");
    let store: Option<String> = conn
        .exec_first(
            "SELECT store FROM kafka_store_files WHERE topic = ?",
            (&topic,),
        )
        .unwrap();
    assert_eq!(store, Some(format!("file://{}", s.archive.display())));
    s.run_to_end();
    check_rows(&s, &db, &topic, false);
}

/// Runs the statements of a migration script from vendor-config.
fn migrate(conn: &mut mysql::Conn, script: &str) {
    let text = std::fs::read_to_string(support::repo().join("vendor-config").join(script)).unwrap();
    let statements: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for statement in statements.split(';').filter(|s| !s.trim().is_empty()) {
        conn.query_drop(statement).unwrap();
    }
}

#[test]
fn topics_that_differ_only_in_case_have_rows_of_their_own() {
    let (_broker, _db) = (support::shared_broker(), support::shared_mariadb());
    let base = support::unique("idx-case");
    let (upper, lower) = (format!("Case-{base}"), format!("case-{base}"));
    for (topic, n) in [(&upper, 100), (&lower, 150)] {
        support::create_topic(topic, 1, &[]);
        support::produce(
            topic,
            &support::gen_records(30, n, 1, 1_700_000_000_000),
            "none",
        );
    }
    // A table made by an older schema, which compares ignoring case (the
    // server's default collation): named at start, fixed by the migration.
    let db = support::mysql_db();
    let mut conn = support::mysql(Some(&db));
    conn.query_drop(
        "CREATE TABLE kafka_store_files (store VARCHAR(500) NOT NULL, topic VARCHAR(249) NOT NULL, `partition` INT NOT NULL, first_offset BIGINT NOT NULL, next_offset BIGINT NOT NULL, record_count BIGINT NOT NULL, min_timestamp BIGINT NULL, max_timestamp BIGINT NULL, bytes BIGINT NOT NULL, crc32c INT UNSIGNED NULL, object_url VARCHAR(2048) NOT NULL, created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), PRIMARY KEY (store, topic, `partition`, first_offset), KEY by_time (store, topic, `partition`, max_timestamp)) ENGINE = InnoDB",
    )
    .unwrap();
    let s = Setup::new(
        &[&upper, &lower],
        &support::unique("g"),
        "",
        "max_file_records = 50\n",
    );
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("{text}{}", with_index(&db))).unwrap();
    let warning = "compares store and topic ignoring case";
    let run = |s: &Setup| {
        let out = s
            .command(&[
                "run",
                "--config",
                s.config.to_str().unwrap(),
                "--until-caught-up",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = run(&s);
    assert!(first.contains(warning), "{first}");
    migrate(&mut conn, "mysql-migrate-binary.sql");
    conn.query_drop("DELETE FROM kafka_store_files").unwrap();
    let out = s
        .command(&["reindex", "--config", s.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let second = run(&s);
    assert!(!second.contains(warning), "{second}");
    check_rows(&s, &db, &upper, false);
    check_rows(&s, &db, &lower, false);
    assert_eq!(support::index_rows(&db, &upper).len(), 2);
    assert_eq!(support::index_rows(&db, &lower).len(), 3);

    // A table kafka-store creates compares byte for byte from the start.
    let db = support::mysql_db();
    let fresh = Setup::new(
        &[&upper, &lower],
        &support::unique("g"),
        "",
        "max_file_records = 50\n",
    );
    let text = std::fs::read_to_string(&fresh.config).unwrap();
    std::fs::write(&fresh.config, format!("{text}{}", with_index(&db))).unwrap();
    let log = run(&fresh);
    assert!(!log.contains(warning), "{log}");
    check_rows(&fresh, &db, &upper, true);
    check_rows(&fresh, &db, &lower, true);
}
