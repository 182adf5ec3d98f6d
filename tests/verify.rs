//! `kafka-store verify` on real archives: a good archive (file://, gs://,
//! with a MySQL index) passes with `--deep --against-kafka`; damaged
//! objects (deleted, a flipped byte, truncated, foreign, re-encoded with a
//! changed value) and a disagreeing index row are each named with their
//! offsets, with exit 3; `--json` gives JSON lines.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use kafka_store::format::avro::{FileSpec, Reader, Spooled, Workbench, Writer, read_header};
use mysql::prelude::Queryable;

use crate::support::{self, GCS_EMULATOR, Setup};

/// `kafka-store verify --config <setup> <extra>`.
fn verify(s: &Setup, extra: &[&str]) -> Output {
    let mut args = vec!["verify", "--config", s.config.to_str().unwrap()];
    args.extend_from_slice(extra);
    support::run_with_timeout(s.command(&args), Duration::from_secs(300))
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The run passed: exit 0, every partition ok, no problem line.
fn assert_ok(out: &Output, partitions: usize) {
    let text = stdout(out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("problem:"), "{text}");
    assert_eq!(
        text.matches(" problem(s): ok").count(),
        partitions + 1,
        "{text}"
    );
    assert!(
        text.contains(&format!("total: {partitions} partition(s), 0 failed")),
        "{text}"
    );
}

/// The file:// URL of an archive file.
fn url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A setup whose config has a `[mysql]` section.
fn with_index(s: &Setup, db: &str) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    let mysql = format!("\n[mysql]\nurl = \"{}/{db}\"\n", support::MYSQL);
    std::fs::write(&s.config, format!("{text}{mysql}")).unwrap();
}

#[test]
fn a_good_archive_passes_and_a_disagreeing_index_row_is_named() {
    let (_broker, _db) = (support::shared_broker(), support::shared_mariadb());
    let (topic, _) = support::topic_with_records("verify-ok", 2, 1_200, &["none", "zstd"]);
    let db = support::mysql_db();
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "max_file_records = 250\n",
    );
    with_index(&s, &db);
    s.run_to_end();
    let archive = support::read_archive(&s.archive);
    let files = &archive[&topic];
    assert!(
        files.values().all(|f| f.len() >= 4),
        "several files per partition"
    );

    let out = verify(&s, &["--deep", "--against-kafka"]);
    assert_ok(&out, 2);
    let text = stdout(&out);
    for (p, fs) in files {
        let next = fs.last().unwrap().next;
        let line = format!(
            "partition {topic}/{p}: {} object(s), {next} record(s),",
            fs.len()
        );
        assert!(text.contains(&line), "{line} in {text}");
    }

    // One row says the file ends elsewhere: named, with its offsets.
    let f = &files[&1][1];
    support::mysql(Some(&db))
        .exec_drop(
            "UPDATE kafka_store_files SET next_offset = next_offset + 7 WHERE topic = ? AND `partition` = 1 AND first_offset = ?",
            (&topic, f.first),
        )
        .unwrap();
    let out = verify(&s, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let text = stdout(&out);
    let want = format!(
        "problem: {}: offsets {}..{}: index: index row says next_offset {}, the object {}\n",
        url(&f.path),
        f.first,
        f.next,
        f.next + 7,
        f.next
    );
    assert!(text.contains(&want), "{want} in {text}");
    assert_eq!(text.matches("problem:").count(), 1, "{text}");
    assert!(text.contains(&format!("partition {topic}/0: ")), "{text}");
    assert!(
        text.contains(&format!("partition {topic}/1: ")) && text.contains("1 problem(s): FAILED"),
        "{text}"
    );

    // --topic and --partition choose what is proven: partition 0 alone
    // passes, partition 1 alone fails.
    let only = |p: &str| verify(&s, &["--topic", &topic, "--partition", p]);
    let zero = only("0");
    assert_ok(&zero, 1);
    assert!(
        !stdout(&zero).contains(&format!("partition {topic}/1:")),
        "{}",
        stdout(&zero)
    );
    let one = only("1");
    assert_eq!(one.status.code(), Some(3), "{}", stdout(&one));
    assert!(
        !stdout(&one).contains(&format!("partition {topic}/0:")),
        "{}",
        stdout(&one)
    );

    // A selection the archive does not hold is a usage error (a mistyped
    // name must not verify as an empty archive), with nothing verified.
    let archive = url(&s.archive);
    for (args, want) in [
        (
            vec!["--topic", "evnets"],
            format!("--topic: {archive} holds no archive of topic \"evnets\""),
        ),
        (
            vec!["--topic", &topic, "--partition", "99"],
            format!("--partition: {archive} holds no archive of {topic}/99"),
        ),
        (
            vec!["--partition", "99"],
            format!("--partition: {archive} holds no archive of a partition 99"),
        ),
    ] {
        let out = verify(&s, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&want), "{args:?}: {stderr}");
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
}

#[test]
fn a_good_gcs_archive_passes() {
    let _broker = support::shared_broker();
    let (topic, _) = support::topic_with_records("verify-gcs", 2, 1_000, &["lz4"]);
    let bucket = support::gcs_bucket();
    let s = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        &bucket,
        GCS_EMULATOR,
        "max_file_records = 200\n",
        "",
    );
    s.run_to_end();
    let out = verify(&s, &["--deep", "--against-kafka"]);
    assert_ok(&out, 2);
    let text = stdout(&out);
    let prefix = format!("gs://{bucket}/archive/{topic}/");
    assert!(
        text.contains(&format!("partition {topic}/0: 3 object(s), 500 record(s),")),
        "{text}"
    );
    assert!(!text.contains(&prefix), "no object named: {text}");
}

/// An in-memory file for the crate's own writer.
struct Buf(Vec<u8>);

impl Spooled for Buf {
    fn write_at(&mut self, at: u64, bytes: &[u8]) -> std::io::Result<()> {
        let at = at as usize;
        let end = at + bytes.len();
        if self.0.len() < end {
            self.0.resize(end, 0);
        }
        self.0[at..end].copy_from_slice(bytes);
        Ok(())
    }

    fn read_at<'a>(
        &'a mut self,
        at: u64,
        len: usize,
        _buf: &'a mut Vec<u8>,
    ) -> std::io::Result<&'a [u8]> {
        Ok(&self.0[at as usize..at as usize + len])
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.0.truncate(len as usize);
        Ok(())
    }

    fn settle(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rewrites an archive file through the crate's writer with the value of
/// the record at `offset` changed: a valid file that Kafka disagrees with.
fn reencode_with_changed_value(path: &Path, offset: i64) {
    let bytes = std::fs::read(path).unwrap();
    let mut reader = Reader::new(&bytes[..]).unwrap();
    let h = reader.header().clone();
    let spec = FileSpec {
        topic: &h.topic,
        partition: h.partition,
        first_offset: h.first_offset,
        topic_id: h.topic_id,
        skipped: h.skipped,
        codec: h.codec,
        block_bytes: 4096,
    };
    let mut out = Buf(Vec::new());
    let mut bench = Workbench::new(h.codec).unwrap();
    let mut writer = Writer::new(&spec, &mut out).unwrap();
    let mut changed = false;
    while let Some(mut r) = reader.next_record().unwrap() {
        if r.offset == offset {
            r.value = Some(b"not what kafka holds".to_vec());
            changed = true;
        }
        let record = r.as_record();
        writer.append(&record, &mut bench, &mut out).unwrap();
    }
    assert!(changed, "{path:?} holds offset {offset}");
    writer
        .finish(
            h.summary.next_offset,
            h.summary.last_epoch,
            &mut bench,
            &mut out,
        )
        .unwrap();
    std::fs::write(path, &out.0).unwrap();
}

/// The problem lines of `text` that name `object`.
fn problems_of<'t>(text: &'t str, object: &str) -> Vec<&'t str> {
    let prefix = format!("problem: {object}: ");
    text.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[test]
fn each_damaged_object_is_named_with_its_offsets() {
    let _broker = support::shared_broker();
    let (topic, _) = support::topic_with_records("verify-bad", 1, 1_300, &["none"]);
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "max_file_records = 100\ncodec = \"snappy\"\nblock_bytes = \"4KiB\"\n",
    );
    s.run_to_end();
    let files = support::read_archive(&s.archive)[&topic][&0].clone();
    assert!(files.len() >= 12, "{} files", files.len());
    let (hole, flipped, cut, foreign, changed) =
        (&files[2], &files[4], &files[6], &files[8], &files[10]);

    std::fs::remove_file(&hole.path).unwrap();
    let mut bytes = std::fs::read(&flipped.path).unwrap();
    let header = read_header(&mut &bytes[..]).unwrap().header_bytes as usize;
    let at = header + (bytes.len() - header) / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&flipped.path, &bytes).unwrap();
    let bytes = std::fs::read(&cut.path).unwrap();
    std::fs::write(&cut.path, &bytes[..bytes.len() / 2]).unwrap();
    let mut rng = support::Rng::new(7);
    let noise: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    std::fs::write(&foreign.path, noise).unwrap();
    let offset = changed.records[changed.records.len() / 2].offset;
    reencode_with_changed_value(&changed.path, offset);

    // Without --deep: the listing and headers only.
    let out = verify(&s, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let text = stdout(&out);
    let hole_line = format!(
        "problem: {}: offsets {}..{}: hole: ",
        url(&hole.path),
        hole.first,
        hole.next
    );
    assert!(text.contains(&hole_line), "{hole_line} in {text}");
    let cut_lines = problems_of(&text, &url(&cut.path));
    assert_eq!(cut_lines.len(), 1, "{text}");
    assert!(
        cut_lines[0].starts_with(&format!(
            "problem: {}: offsets {}..{}: unreadable: truncated",
            url(&cut.path),
            cut.first,
            cut.next
        )),
        "{text}"
    );
    let foreign_lines = problems_of(&text, &url(&foreign.path));
    assert_eq!(foreign_lines.len(), 1, "{text}");
    assert!(
        foreign_lines[0].starts_with(&format!(
            "problem: {}: offsets {}..{}: unreadable: ",
            url(&foreign.path),
            foreign.first,
            foreign.next
        )) && foreign_lines[0].contains("magic"),
        "{text}"
    );
    assert!(problems_of(&text, &url(&flipped.path)).is_empty(), "{text}");
    assert_eq!(text.matches("problem:").count(), 3, "{text}");

    // --deep decodes every block: the flipped byte is found too.
    let out = verify(&s, &["--deep"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let text = stdout(&out);
    let flipped_lines = problems_of(&text, &url(&flipped.path));
    assert_eq!(flipped_lines.len(), 1, "{text}");
    let line = flipped_lines[0];
    let span = line
        .strip_prefix(&format!("problem: {}: offsets ", url(&flipped.path)))
        .and_then(|rest| rest.split_once(": unreadable: corrupt archive file at byte "))
        .map(|(span, _)| span.to_string())
        .unwrap_or_else(|| panic!("{line}"));
    let (from, to) = span.split_once("..").unwrap();
    let from: i64 = from.parse().unwrap();
    assert!(
        from >= flipped.first && from < flipped.next && to == flipped.next.to_string(),
        "{line}"
    );
    assert_eq!(text.matches("problem:").count(), 4, "{text}");
    assert!(problems_of(&text, &url(&changed.path)).is_empty(), "{text}");

    // Against Kafka: the changed value, and the records of the hole.
    let out = verify(&s, &["--deep", "--against-kafka"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let text = stdout(&out);
    assert_eq!(
        problems_of(&text, &url(&changed.path)),
        vec![format!(
            "problem: {}: offset {offset}: differs from kafka: the archived record's value differ(s) from kafka's",
            url(&changed.path)
        )],
        "{text}"
    );
    let missing = format!(
        "problem: {}: offsets {}..{}: missing: kafka holds {} record(s) here that the archive does not have",
        url(&hole.path),
        hole.first,
        hole.next,
        hole.records.len()
    );
    assert!(text.contains(&missing), "{missing} in {text}");
    assert_eq!(text.matches("problem:").count(), 6, "{text}");
    assert!(
        text.contains(&format!(
            "partition {topic}/0: {} object(s),",
            files.len() - 1
        )) && text.contains("6 problem(s): FAILED"),
        "{text}"
    );

    // The same as JSON lines.
    let out = verify(&s, &["--deep", "--against-kafka", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let values: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds = |k: &str| values.iter().filter(|v| v["kind"] == k).count();
    assert_eq!(
        (kinds("problem"), kinds("partition"), kinds("total")),
        (6, 1, 1)
    );
    assert!(
        values.iter().any(|v| v["kind"] == "problem"
            && v["check"] == "hole"
            && v["object"] == url(&hole.path)
            && v["first"] == hole.first
            && v["next"] == hole.next),
        "{values:?}"
    );
    let total = values.last().unwrap();
    assert_eq!(
        (total["kind"].as_str(), total["problems"].as_u64()),
        (Some("total"), Some(6))
    );
}

#[test]
fn a_skipped_range_is_a_note_even_where_kafka_still_holds_its_records() {
    let _broker = support::shared_broker();
    let topic = support::unique("verify-skip");
    support::create_topic(&topic, 1, &[]);
    support::produce(
        &topic,
        &support::gen_records(1, 60, 1, 1_700_000_000_000),
        "none",
    );
    let s = Setup::new(&[&topic], &support::unique("g"), "start = \"latest\"", "");
    s.run_to_end();
    support::produce(
        &topic,
        &support::gen_records(2, 40, 1, 1_700_000_100_000),
        "none",
    );
    s.run_to_end();
    let files = support::read_archive(&s.archive)[&topic][&0].clone();
    assert_eq!(files[0].skipped.as_deref(), Some("start-latest"));

    let out = verify(&s, &["--deep", "--against-kafka"]);
    assert_ok(&out, 1);
    let note = format!(
        "note: {}: offsets 0..60: skipped range: not archived on purpose (start-latest)\n",
        url(&files[0].path)
    );
    let text = stdout(&out);
    assert!(text.contains(&note), "{note} in {text}");
    assert!(
        text.contains(&format!(
            "partition {topic}/0: {} object(s), 40 record(s),",
            files.len()
        )) && text.contains("offsets 0..100, 1 skipped range(s), 0 problem(s): ok"),
        "{text}"
    );
}
