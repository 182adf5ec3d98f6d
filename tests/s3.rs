//! The `s3://` store against a real S3 server that checks SigV4 signatures
//! and honours `If-None-Match` (s3s-fs, vendor-config/test-services.sh),
//! with the fault-injecting proxy in front of it: exactly once with every
//! metadata field read back, multipart uploads, faults survived; ls, cat,
//! status, locate, reindex, verify and restore on s3://; virtual-hosted
//! addressing through a proxy; the errors a user meets first; a store that
//! overwrites despite `If-None-Match` refused.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::fault_proxy::{FaultKind, FaultProxy, Faults, LogEntry};
use crate::support::{self, Rec, S3_ENDPOINT, Setup};

/// What `run` writes under the prefix to check that the store refuses to
/// overwrite (src/store/s3/probe.rs).
const PROBE: &str = "archive/_kafka-store~create-only-probe";

/// Downloads the archive with an independent client (boto3) and checks it
/// record by record; every object's metadata must match its bytes. The
/// create-only probe is there too (the check ran).
fn check_archive(s: &Setup, bucket: &str, topic: &str, produced: &BTreeMap<(i32, i64), Rec>) {
    assert!(
        support::s3_keys(bucket, "archive").contains(&PROBE.to_string()),
        "no create-only probe in {bucket}"
    );
    let objects = support::s3_download(bucket, "archive", &s.archive);
    assert!(!objects.is_empty());
    let archive = support::read_archive(&s.archive);
    let ends: BTreeMap<i32, (i64, i64)> = support::from_zero(topic);
    let read = support::check_tiling(&archive, topic, &ends);
    support::assert_same_records(&read, produced);
    for o in &objects {
        let key = o["key"].as_str().unwrap();
        let rel = key.strip_prefix("archive/").unwrap();
        let bytes = std::fs::read(s.archive.join(rel)).unwrap();
        let meta = &o["metadata"];
        let first: i64 = rel.rsplit('/').next().unwrap()[..20].parse().unwrap();
        let part: i32 = rel.split('/').nth(1).unwrap().parse().unwrap();
        let records: Vec<_> = produced
            .range((part, first)..(part, i64::MAX))
            .take(meta["record-count"].as_str().unwrap().parse().unwrap())
            .collect();
        let last = records.last().unwrap().0.1;
        assert_eq!(meta["next-offset"], (last + 1).to_string(), "{key}");
        assert_eq!(meta["format-version"], "2", "{key}");
        assert!(meta["topic-id"].as_str().unwrap().len() == 36, "{key}");
        assert!(meta["min-timestamp"].is_string() && meta["max-timestamp"].is_string());
        use base64::Engine as _;
        let crc =
            base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(&bytes).to_be_bytes());
        assert_eq!(meta["crc32c"], crc, "{key}: CRC32C of the stored bytes");
    }
}

/// What `proxy` was asked, but the create-only check's requests.
fn archive_requests(proxy: &FaultProxy) -> Vec<LogEntry> {
    proxy
        .log()
        .into_iter()
        .filter(|e| !e.target.contains("/_kafka-store~create-only-probe"))
        .collect()
}

/// The fault proxy in front of the S3 test server, with `faults`.
fn s3_proxy(faults: Faults) -> FaultProxy {
    let proxy = FaultProxy::start(S3_ENDPOINT.strip_prefix("http://").unwrap());
    proxy.set_faults(faults);
    proxy
}

/// A setup of `topic` into `bucket` whose `s3.credentials` is `source`.
fn with_credentials(topic: &str, bucket: &str, source: &str) -> Setup {
    let s = Setup::s3(&[topic], &support::unique("s"), bucket, S3_ENDPOINT, "", "");
    let text = std::fs::read_to_string(&s.config).unwrap();
    let creds = support::s3_credentials().display().to_string();
    std::fs::write(
        &s.config,
        text.replace(&format!("{creds:?}"), &format!("{source:?}")),
    )
    .unwrap();
    s
}

#[test]
fn s3_archive_is_exactly_once_with_multipart_uploads_through_faults() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("s3", 2, 60_000, &["zstd", "gzip"]);
    let bucket = support::s3_bucket();
    let proxy = s3_proxy(Faults {
        rate: 0.4,
        seed: 11,
        kinds: vec![
            FaultKind::DropMidBody,
            FaultKind::Status(503),
            FaultKind::Status(500),
            FaultKind::LoseResponse,
        ],
        ..Faults::default()
    });
    let s = Setup::s3(
        &[&topic],
        &support::unique("s"),
        &bucket,
        &proxy.url(),
        "codec = \"null\"\nmax_file_bytes = \"12MiB\"\n",
        "part_bytes = \"5MiB\"\nrequest_timeout = \"10s\"\nretry_timeout = \"120s\"\n",
    );
    s.run_to_end();
    proxy.set_faults(Faults::default());
    // The create-only check's requests are faulted too.
    let log = proxy.log();
    let faulted = log.iter().filter(|e| e.fault.is_some()).count();
    assert!(
        faulted * 5 >= log.len(),
        "{faulted} of {} faulted",
        log.len()
    );
    assert!(
        archive_requests(&proxy)
            .iter()
            .any(|e| e.target.contains("partNumber=2")),
        "no multipart upload"
    );
    check_archive(&s, &bucket, &topic, &produced);
    // A second run finds the chain and writes nothing.
    let before = support::s3_download(&bucket, "archive", &s.dir.path().join("again")).len();
    std::thread::sleep(Duration::from_millis(10));
    s.run_to_end();
    let after = support::s3_download(&bucket, "archive", &s.dir.path().join("again2"));
    assert_eq!(after.len(), before);
}

#[test]
fn ls_cat_status_locate_reindex_verify_and_restore_work_on_s3() {
    let (_broker, _db) = (support::shared_broker(), support::shared_mariadb());
    let (topic, produced) = support::topic_with_records("s3-cmds", 2, 800, &["lz4"]);
    let bucket = support::s3_bucket();
    let s = Setup::s3(
        &[&topic],
        &support::unique("s"),
        &bucket,
        S3_ENDPOINT,
        "max_file_bytes = \"32KiB\"\n",
        "",
    );
    let db = support::mysql_db();
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!("{text}\n[mysql]\nurl = \"{}/{db}\"\n", support::MYSQL),
    )
    .unwrap();
    s.run_to_end();
    let config = s.config.to_str().unwrap();

    // One row per object, naming it by its s3:// URL; `reindex` rebuilds
    // the same rows from the store alone.
    let objects = support::s3_download(&bucket, "archive", &s.archive);
    let rows = support::index_rows(&db, &topic);
    assert_eq!(rows.len(), objects.len(), "{rows:?}");
    for row in &rows {
        let url = &row.8;
        assert!(
            url.starts_with(&format!("s3://{bucket}/archive/{topic}/")),
            "{url}"
        );
    }
    {
        use mysql::prelude::Queryable;
        support::mysql(Some(&db))
            .exec_drop("DELETE FROM kafka_store_files WHERE topic = ?", (&topic,))
            .unwrap();
    }
    let reindex = support::run_with_timeout(
        s.command(&["reindex", "--config", config]),
        Duration::from_secs(60),
    );
    assert!(
        reindex.status.success(),
        "{}",
        String::from_utf8_lossy(&reindex.stderr)
    );
    assert_eq!(support::index_rows(&db, &topic), rows);
    let ls = support::run_with_timeout(
        s.command(&["ls", "--config", config]),
        Duration::from_secs(60),
    );
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{listing}");
    assert!(
        listing.contains(&format!(
            "s3://{bucket}/archive/{topic}/000000/00000000000000000000.avro"
        )),
        "{listing}"
    );
    assert!(listing.contains("no gaps"), "{listing}");
    let object = format!("{topic}/000000/00000000000000000000.avro");
    let cat = support::run_with_timeout(
        s.command(&["cat", "--config", config, &object]),
        Duration::from_secs(60),
    );
    let first = String::from_utf8_lossy(&cat.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.starts_with(r#"{"headers":"#) && first.contains(r#""offset":0,"#),
        "{first}"
    );
    let status = support::run_with_timeout(
        s.command(&["status", "--config", config]),
        Duration::from_secs(60),
    );
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let locate = support::run_with_timeout(
        s.command(&[
            "locate",
            "--config",
            config,
            "--topic",
            &topic,
            "--partition",
            "1",
            "--offset",
            "5",
        ]),
        Duration::from_secs(60),
    );
    let located = String::from_utf8_lossy(&locate.stdout);
    assert!(
        located.contains(&format!("s3://{bucket}/archive/{topic}/000001/")),
        "{located}"
    );
    let verify = support::run_with_timeout(
        s.command(&["verify", "--config", config, "--deep", "--against-kafka"]),
        Duration::from_secs(120),
    );
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let target = support::unique("s3-restored");
    support::create_topic(&target, 2, &[]);
    let restore = support::run_with_timeout(
        s.command(&[
            "restore",
            "--config",
            config,
            "--topic",
            &topic,
            "--to-topic",
            &target,
        ]),
        Duration::from_secs(120),
    );
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let back = support::consume(&target);
    for p in 0..2 {
        support::assert_restored(&topic, p, &back[&p], &support::partition_of(&produced, p));
    }
}

/// Virtual-hosted addressing (`path_style = false`: the bucket in the
/// host name) through `s3.proxy`: the proxy stands in for the DNS that
/// `BUCKET.s3.test` needs, and every tunnel names that host.
#[test]
fn virtual_hosted_addressing_through_a_proxy() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("s3-vhost", 2, 500, &["none"]);
    let bucket = support::s3_bucket();
    let proxy = support::ConnectProxy::start(Some("127.0.0.1:9024"));
    let s = Setup::s3(
        &[&topic],
        &support::unique("s"),
        &bucket,
        "http://s3.test:9024",
        "max_file_records = 100\n",
        &format!("proxy = \"http://{}\"\n", proxy.addr),
    );
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("path_style = true", "path_style = false"),
    )
    .unwrap();
    s.run_to_end();
    check_archive(&s, &bucket, &topic, &produced);
    let tunnels = proxy.tunnels.lock().unwrap().clone();
    let host = format!("{bucket}.s3.test:9024");
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| *t == host),
        "{tunnels:?}"
    );
}

#[test]
fn wrong_keys_unknown_buckets_dead_endpoints_and_missing_credentials_are_one_line_errors() {
    let _broker = support::shared_broker();
    let (topic, _) = support::topic_with_records("s3-bad", 1, 10, &["none"]);
    let fails = |s: &Setup, wants: &[&str]| {
        let err = support::run_exits_1(s);
        let last = err.lines().last().unwrap_or_default().to_string();
        for w in wants {
            assert!(last.contains(w), "{last:?} should mention {w:?}");
        }
        err
    };
    // A bucket that does not exist: nothing can be committed there.
    let s = Setup::s3(
        &[&topic],
        &support::unique("s"),
        "no-such-bucket-here",
        S3_ENDPOINT,
        "",
        "retry_timeout = \"3s\"\n",
    );
    fails(&s, &["no-such-bucket-here"]);
    // An endpoint nobody answers on.
    let bucket = support::s3_bucket();
    let s = Setup::s3(
        &[&topic],
        &support::unique("s"),
        &bucket,
        "http://127.0.0.1:9",
        "",
        "retry_timeout = \"3s\"\n",
    );
    fails(&s, &["127.0.0.1:9"]);
    assert!(support::s3_download(&bucket, "archive", &s.dir.path().join("dl")).is_empty());
    // A wrong secret: the server checks signatures, the run stops naming
    // the bucket and the server's refusal, and the secret is not shown.
    let right = std::fs::read_to_string(support::s3_credentials()).unwrap();
    let secret = right
        .lines()
        .find_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .unwrap()
        .to_string();
    let wrong = s.dir.path().join("wrong-credentials");
    let bad_secret = "not-the-secret-key-at-all-0000000000000";
    std::fs::write(&wrong, right.replace(&secret, bad_secret)).unwrap();
    let s = with_credentials(&topic, &bucket, wrong.to_str().unwrap());
    let err = fails(&s, &["SignatureDoesNotMatch", &bucket]);
    assert!(!err.contains(bad_secret), "the secret is shown: {err}");
    assert!(support::s3_download(&bucket, "archive", &s.dir.path().join("dl0")).is_empty());
    // A credentials file that is not there names the key.
    let s = with_credentials(&topic, &bucket, "/nonexistent/credentials");
    fails(&s, &["s3.credentials"]);
    assert!(support::s3_download(&bucket, "archive", &s.dir.path().join("dl2")).is_empty());
    // A store that does not implement what is asked (501) is not waited
    // for: it will not implement it a minute later.
    let proxy = s3_proxy(Faults {
        rate: 1.0,
        kinds: vec![FaultKind::Status(501)],
        ..Faults::default()
    });
    let s = Setup::s3(
        &[&topic],
        &support::unique("s"),
        &bucket,
        &proxy.url(),
        "",
        "retry_timeout = \"60s\"\n",
    );
    let started = std::time::Instant::now();
    fails(&s, &["HTTP 501", "If-None-Match"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a 501 was retried for {:?}",
        started.elapsed()
    );
}

/// A store that ignores `If-None-Match` (played by the proxy: it answers
/// 200 where s3s-fs refuses a create-only write) would let two writers of a
/// partition replace each other's files: `run` refuses it at start, on a
/// PUT and on CompleteMultipartUpload, before any archive file is written,
/// in one line naming the setting; with `s3.require_create_only = false`
/// it archives, and warns.
#[test]
fn a_store_that_overwrites_is_refused_before_anything_is_archived() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("s3-overwrites", 2, 100, &["none"]);
    for (ignored_by, request) in [("PUT", "PUT"), ("POST", "CompleteMultipartUpload")] {
        let bucket = support::s3_bucket();
        let proxy = s3_proxy(Faults {
            overwrites: vec![ignored_by],
            ..Faults::default()
        });
        let s = Setup::s3(
            &[&topic],
            &support::unique("s"),
            &bucket,
            &proxy.url(),
            "",
            "",
        );
        let err = support::run_exits_1(&s);
        let last = err.lines().last().unwrap_or_default();
        for w in [
            "_kafka-store~create-only-probe",
            &format!("accepted a create-only {request} (If-None-Match: *)"),
            "overwrites",
            "s3.require_create_only = false",
        ] {
            assert!(last.contains(w), "{last:?} should mention {w:?}");
        }
        assert_eq!(
            support::s3_keys(&bucket, "archive"),
            vec![PROBE.to_string()],
            "something was archived into a store that overwrites"
        );
        let overwritten = proxy
            .log()
            .iter()
            .filter(|e| e.method == ignored_by && e.status == Some(200))
            .filter(|e| ignored_by == "PUT" || e.target.contains("uploadId="))
            .count();
        assert_eq!(
            overwritten,
            1 + usize::from(ignored_by == "PUT"),
            "{request}"
        );
        if ignored_by == "PUT" {
            continue;
        }
        let aborted = proxy.log().iter().any(|e| e.method == "DELETE");
        assert!(aborted, "the probe's multipart upload was not aborted");

        let one_writer = Setup::s3(
            &[&topic],
            &support::unique("s"),
            &bucket,
            &proxy.url(),
            "",
            "require_create_only = false\n",
        );
        let out = one_writer.run_to_end();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("not checked whether the store refuses to overwrite objects"),
            "{log}"
        );
        check_archive(&one_writer, &bucket, &topic, &produced);
    }
}

/// The multipart upload id and part number of an UploadPart request.
fn part_of(target: &str) -> Option<(String, u32)> {
    let query = target.split_once('?')?.1;
    let mut id = None;
    let mut part = None;
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("uploadId", v)) => id = Some(v.to_string()),
            Some(("partNumber", v)) => part = v.parse().ok(),
            _ => {}
        }
    }
    Some((id?, part?))
}

/// What `kill_mid_multipart` leaves: the setup, the proxy, the bucket, the
/// topic, what was produced, the killed upload's id and its stored parts.
struct KilledUpload {
    s: Setup,
    proxy: FaultProxy,
    bucket: String,
    topic: String,
    produced: BTreeMap<(i32, i64), Rec>,
    upload: String,
    stored: Vec<u32>,
}

/// Archives a topic through a slow proxy (playing a store whose ETags are
/// not MD5s if `opaque_etags`) and kills the process once a multipart
/// upload has stored two parts and is not completed.
fn kill_mid_multipart(prefix: &str, opaque_etags: bool) -> KilledUpload {
    let topic = support::unique(prefix);
    support::create_topic(&topic, 1, &[]);
    let produced = support::produce(
        &topic,
        &support::gen_records(78, 100_000, 1, 1_700_000_000_000),
        "lz4",
    );
    let bucket = support::s3_bucket();
    let proxy = FaultProxy::start(S3_ENDPOINT.strip_prefix("http://").unwrap());
    // Slow uploads, so that the process dies between parts.
    proxy.set_faults(Faults {
        body_delay: Duration::from_millis(700),
        opaque_etags,
        ..Faults::default()
    });
    let s = Setup::s3(
        &[&topic],
        &support::unique("s"),
        &bucket,
        &proxy.url(),
        "codec = \"null\"\nmax_file_bytes = \"20MiB\"\n",
        "part_bytes = \"5MiB\"\n",
    );
    let mut child = s.spawn(&["--until-caught-up"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (upload, stored) = loop {
        let log = archive_requests(&proxy);
        let mut parts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for e in &log {
            if let Some((id, n)) = part_of(&e.target)
                && e.method == "PUT"
                && e.status == Some(200)
            {
                parts.entry(id).or_default().push(n);
            }
        }
        let completed = |id: &str| {
            log.iter()
                .any(|e| e.method == "POST" && e.target.contains(&format!("uploadId={id}")))
        };
        if let Some((id, ns)) = parts
            .into_iter()
            .find(|(id, ns)| ns.len() >= 2 && !completed(id))
        {
            break (id, ns);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no multipart upload got going"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    support::signal(&child, "-KILL");
    let _ = child.wait();
    proxy.set_faults(Faults {
        opaque_etags,
        ..Faults::default()
    });

    KilledUpload {
        s,
        proxy,
        bucket,
        topic,
        produced,
        upload,
        stored,
    }
}

#[test]
fn a_process_killed_mid_multipart_upload_resends_no_stored_part() {
    let _broker = support::shared_broker();
    resume_after_kill("s3-resume", false);
}

/// SSE-KMS and SSE-C give ETags that are not MD5s: every part is still
/// sent once, the upload completed with the ETags the store gave, and a
/// killed upload resumed from what the store lists.
#[test]
fn a_store_whose_etags_are_not_md5s_gets_every_file_once() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("s3-kms", 1, 90_000, &["lz4"]);
    let bucket = support::s3_bucket();
    let proxy = s3_proxy(Faults {
        opaque_etags: true,
        ..Faults::default()
    });
    let s = Setup::s3(
        &[&topic],
        &support::unique("s"),
        &bucket,
        &proxy.url(),
        "codec = \"null\"\nmax_file_bytes = \"6MiB\"\n",
        "part_bytes = \"5MiB\"\nretry_timeout = \"20s\"\n",
    );
    s.run_to_end();
    let log = archive_requests(&proxy);
    let puts = |part: bool| {
        log.iter()
            .filter(|e| e.method == "PUT" && e.target.contains("partNumber=") == part)
            .count()
    };
    let completions = log
        .iter()
        .filter(|e| e.method == "POST" && e.target.contains("uploadId="));
    assert!(
        puts(true) >= 4,
        "{} parts: too few multipart uploads",
        puts(true)
    );
    assert!(puts(false) >= 1, "no single PUT");
    for c in completions {
        assert_eq!(c.status, Some(200), "{c:?}");
    }
    let parts: Vec<_> = log
        .iter()
        .filter_map(|e| part_of(&e.target).filter(|_| e.method == "PUT"))
        .collect();
    let once: std::collections::BTreeSet<_> = parts.iter().collect();
    assert_eq!(once.len(), parts.len(), "a part was sent twice: {parts:?}");
    check_archive(&s, &bucket, &topic, &produced);

    resume_after_kill("s3-kms-resume", true);
}

/// Kills a process mid multipart upload, runs again, and checks that the
/// stored parts were not sent again and the archive is whole.
fn resume_after_kill(prefix: &str, opaque_etags: bool) {
    let KilledUpload {
        s,
        proxy,
        bucket,
        topic,
        produced,
        upload,
        stored,
    } = kill_mid_multipart(prefix, opaque_etags);
    let before = proxy.log().len();
    s.run_to_end();
    let after = &proxy.log()[before..];
    let mine =
        |e: &&support::fault_proxy::LogEntry| e.target.contains(&format!("uploadId={upload}"));
    let resent: Vec<u32> = after
        .iter()
        .filter(mine)
        .filter_map(|e| {
            part_of(&e.target)
                .filter(|_| e.method == "PUT")
                .map(|(_, n)| n)
        })
        .collect();
    assert!(
        after.iter().filter(mine).any(|e| e.method == "GET"),
        "the restarted process did not ask which parts upload {upload} holds"
    );
    for n in &stored {
        assert!(
            !resent.contains(n),
            "part {n} of {upload} was sent again: {resent:?}"
        );
    }
    assert!(
        !resent.is_empty(),
        "the rest of upload {upload} was not sent"
    );
    assert!(
        after
            .iter()
            .filter(mine)
            .any(|e| e.method == "POST" && e.status == Some(200)),
        "upload {upload} was not completed"
    );
    check_archive(&s, &bucket, &topic, &produced);
}

#[test]
fn builders_that_cut_differently_adopt_each_others_objects() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("s3-cuts", 2, 15_000, &["zstd"]);
    let bucket = support::s3_bucket();
    // Two processes on one bucket, each cutting files elsewhere: whoever
    // creates a name first wins (If-None-Match), the other adopts its end.
    // Through the proxy, which makes s3s-fs's create-only check atomic as
    // real S3's is (see fault_proxy.rs).
    let proxy = FaultProxy::start(S3_ENDPOINT.strip_prefix("http://").unwrap());
    let a = Setup::s3(
        &[&topic],
        &support::unique("s"),
        &bucket,
        &proxy.url(),
        "max_file_records = 700\n",
        "",
    );
    let b = Setup::s3(
        &[&topic],
        &support::unique("s"),
        &bucket,
        &proxy.url(),
        "max_file_records = 1100\n",
        "",
    );
    let (pa, pb) = (
        a.spawn(&["--until-caught-up"]),
        b.spawn(&["--until-caught-up"]),
    );
    let mut logs = String::new();
    for p in [pa, pb] {
        let out = support::wait_with_timeout(p, Duration::from_secs(300));
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{logs}");
    }
    assert!(logs.contains("adopting it"), "no conflict happened: {logs}");
    check_archive(&a, &bucket, &topic, &produced);
}

/// The test server's keys, from its credentials file.
fn s3_keys() -> (String, String) {
    let text = std::fs::read_to_string(support::s3_credentials()).unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap()
            .to_string()
    };
    (value("aws_access_key_id"), value("aws_secret_access_key"))
}

/// A stand-in for the EC2 instance metadata service (IMDSv2), the one
/// thing no real server here can show: a session token by PUT, then the
/// role and its keys only for requests carrying that token. Records each
/// request line with whether it carried the token.
fn fake_imds(keys: (String, String)) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut token = false;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                token |= h.eq_ignore_ascii_case("x-aws-ec2-metadata-token: tok-123\r\n");
            }
            let target = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
            log.lock().unwrap().push(format!("{target} token={token}"));
            let body = match (target.as_str(), token) {
                ("PUT /latest/api/token", _) => "tok-123".to_string(),
                ("GET /latest/meta-data/iam/security-credentials/", true) => "archiver-role".into(),
                ("GET /latest/meta-data/iam/security-credentials/archiver-role", true) => format!(
                    r#"{{"Code":"Success","AccessKeyId":"{}","SecretAccessKey":"{}","Expiration":"2099-01-01T00:00:00Z"}}"#,
                    keys.0, keys.1
                ),
                _ => String::new(),
            };
            let status = if body.is_empty() {
                "401 Unauthorized"
            } else {
                "200 OK"
            };
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

#[test]
fn keys_from_the_environment_and_from_the_instance_metadata_service() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("s3-keys", 1, 300, &["none"]);
    let keys = s3_keys();
    let with_credentials = |source: &str| {
        let bucket = support::s3_bucket();
        (with_credentials(&topic, &bucket, source), bucket)
    };
    let run = |s: &Setup, env: &[(&str, &str)]| {
        let mut cmd = s.command(&[
            "run",
            "--config",
            s.config.to_str().unwrap(),
            "--until-caught-up",
        ]);
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = support::run_with_timeout(cmd, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    let (s, bucket) = with_credentials("env");
    run(
        &s,
        &[
            ("AWS_ACCESS_KEY_ID", &keys.0),
            ("AWS_SECRET_ACCESS_KEY", &keys.1),
        ],
    );
    check_archive(&s, &bucket, &topic, &produced);

    let (imds, seen) = fake_imds(keys.clone());
    let (s, bucket) = with_credentials("instance");
    run(&s, &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)]);
    check_archive(&s, &bucket, &topic, &produced);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("PUT /latest/api/token token=false"),
        "{seen:?}"
    );
    assert!(
        seen.iter().skip(1).all(|r| r.ends_with("token=true")),
        "a metadata request without the session token: {seen:?}"
    );
}

#[test]
fn an_upload_noted_for_other_bytes_is_aborted() {
    let _broker = support::shared_broker();
    let k = kill_mid_multipart("s3-abandon", false);
    // Cut elsewhere now: the object at the killed upload's name holds other
    // bytes, so its noted upload cannot be resumed and is aborted.
    let text = std::fs::read_to_string(&k.s.config).unwrap();
    std::fs::write(
        &k.s.config,
        text.replace("max_file_bytes = \"20MiB\"", "max_file_bytes = \"16MiB\""),
    )
    .unwrap();
    let before = k.proxy.log().len();
    k.s.run_to_end();
    let after = &k.proxy.log()[before..];
    let upload = &k.upload;
    assert!(
        after
            .iter()
            .any(|e| e.method == "DELETE" && e.target.contains(&format!("uploadId={upload}"))),
        "upload {upload} was not aborted"
    );
    assert!(
        !after
            .iter()
            .any(|e| e.method == "PUT" && e.target.contains(&format!("uploadId={upload}"))),
        "upload {upload} was resumed with other bytes"
    );
    check_archive(&k.s, &k.bucket, &k.topic, &k.produced);
}

#[test]
fn s3_over_https_trusts_the_ca_bundle_and_names_a_wrong_one() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("s3-tls", 1, 500, &["lz4"]);
    let port: u16 = S3_ENDPOINT.rsplit(':').next().unwrap().parse().unwrap();
    let (_dir, ca, other_ca, proxy) = support::tls_in_front_of(port);
    let endpoint = format!("https://127.0.0.1:{}", proxy.port);
    let bucket = support::s3_bucket();
    let with_ca = |ca: &std::path::Path| {
        Setup::s3(
            &[&topic],
            &support::unique("s"),
            &bucket,
            &endpoint,
            "",
            &format!("ca_bundle = \"{}\"\nretry_timeout = \"5s\"\n", ca.display()),
        )
    };
    let wrong = with_ca(&other_ca);
    let err = support::run_exits_1(&wrong);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("s3.ca_bundle") && last.contains(&endpoint),
        "{last}"
    );
    assert!(support::s3_download(&bucket, "archive", &wrong.dir.path().join("dl")).is_empty());
    let good = with_ca(&ca);
    good.run_to_end();
    check_archive(&good, &bucket, &topic, &produced);
}
