//! The `gs://` store against the real GCS emulator (gcp-storage-emulator),
//! with a fault-injecting proxy in front of it (tests/support/fault_proxy.rs):
//! exactly once, CRC32C end to end, faults survived, a killed upload resumed
//! in the same session, and the errors a user meets first.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{FaultKind, FaultProxy, Faults, parse_content_range, upload_id};
use crate::support::{self, GCS_EMULATOR, Rec, Setup};

/// Downloads the archive and checks it record by record.
fn check_archive(s: &Setup, bucket: &str, topic: &str, produced: &BTreeMap<(i32, i64), Rec>) {
    support::download_archive(bucket, "archive", &s.archive);
    let archive = support::read_archive(&s.archive);
    let ends: BTreeMap<i32, (i64, i64)> = support::from_zero(topic);
    let read = support::check_tiling(&archive, topic, &ends);
    support::assert_same_records(&read, produced);
}

#[test]
fn gcs_archive_is_exactly_once_and_readable_with_ls_and_cat() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("gcs", 4, 15_000, &["zstd", "gzip"]);
    let bucket = support::gcs_bucket();
    let s = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        &bucket,
        GCS_EMULATOR,
        "max_file_bytes = \"1MiB\"\n",
        "chunk_bytes = \"256KiB\"\n",
    );
    let out = s.run_to_end();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!("gs://{bucket}/archive/{topic}/")),
        "{log}"
    );
    check_archive(&s, &bucket, &topic, &produced);

    let config = s.config.to_str().unwrap();
    let ls = s.command(&["ls", "--config", config]).output().unwrap();
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let listing = String::from_utf8(ls.stdout).unwrap();
    assert_eq!(listing.matches("no gaps").count(), 4, "{listing}");
    let object = format!("{topic}/000001/00000000000000000000.avro");
    let cat = s
        .command(&["cat", "--config", config, &object])
        .output()
        .unwrap();
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8(cat.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["offset"], 0);

    // A second run resumes from the chain in the bucket and adds nothing;
    // the emulator does not enforce create-only, so a rewritten object
    // would show only as a new generation.
    let generations = |bucket: &str| -> Vec<(String, String)> {
        support::gcs_objects(bucket)
            .into_iter()
            .map(|o| (o.name, o.generation))
            .collect()
    };
    let before = generations(&bucket);
    s.run_to_end();
    assert_eq!(generations(&bucket), before);
}

#[test]
fn gcs_uploads_survive_faults_of_every_kind() {
    let _broker = support::shared_broker();
    let (topic, produced) =
        support::topic_with_records("gcs-faults", 4, 35_000, &["lz4", "snappy", "zstd"]);
    let bucket = support::gcs_bucket();
    let proxy = FaultProxy::start("127.0.0.1:9023");
    proxy.set_faults(Faults {
        rate: 0.3,
        seed: 7,
        kinds: vec![
            FaultKind::DropMidBody,
            FaultKind::Status(503),
            FaultKind::Status(429),
            FaultKind::Status(408),
            FaultKind::Stall,
            FaultKind::LoseResponse,
        ],
        stall: Duration::from_secs(3),
        ..Faults::default()
    });
    let s = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        &bucket,
        &proxy.url(),
        "codec = \"null\"\nmax_file_bytes = \"2MiB\"\n",
        "chunk_bytes = \"256KiB\"\nrequest_timeout = \"2s\"\nretry_timeout = \"120s\"\n",
    );
    let started = Instant::now();
    s.run_to_end();
    eprintln!("archived through faults in {:?}", started.elapsed());
    proxy.set_faults(Faults::default());
    check_archive(&s, &bucket, &topic, &produced);

    let log = proxy.log();
    let faulted = log.iter().filter(|e| e.fault.is_some()).count();
    eprintln!("{faulted} of {} requests faulted", log.len());
    assert!(
        faulted * 5 >= log.len(),
        "only {faulted} of {} requests faulted",
        log.len()
    );
    for kind in [
        FaultKind::DropMidBody,
        FaultKind::Stall,
        FaultKind::LoseResponse,
        FaultKind::Status(503),
    ] {
        assert!(
            log.iter().any(|e| e.fault == Some(kind)),
            "no {kind:?} fault happened"
        );
    }
    // Lost answers to chunks that the emulator stored were resumed after
    // them, not resent: the session's next chunk starts where the lost one ended.
    let mut resumed = 0;
    for (i, lost) in log.iter().enumerate() {
        let range = lost.content_range.as_deref().and_then(parse_content_range);
        let (Some(id), Some((start, end, _))) = (upload_id(&lost.target), range) else {
            continue;
        };
        if lost.fault != Some(FaultKind::LoseResponse)
            || lost.forwarded_body_bytes != end + 1 - start
        {
            continue;
        }
        let next = log[i + 1..]
            .iter()
            .filter(|e| upload_id(&e.target).as_deref() == Some(id.as_str()))
            .find_map(|e| e.content_range.as_deref().and_then(parse_content_range));
        if let Some((next_start, _, _)) = next {
            assert_eq!(
                next_start,
                end + 1,
                "session {id}: the answer to bytes {start}-{end} was lost and the next chunk starts at {next_start}"
            );
            resumed += 1;
        }
    }
    assert!(
        resumed > 0,
        "no lost answer to a stored chunk was followed by another chunk"
    );
}

/// What `kill_mid_upload` leaves: the setup, the proxy, the topic, what was
/// produced, the killed session's upload id and the bytes it holds.
type Killed = (
    Setup,
    FaultProxy,
    String,
    BTreeMap<(i32, i64), Rec>,
    String,
    u64,
);

/// Archives a topic through a slow proxy and kills the process once an
/// upload session has stored a few chunks.
fn kill_mid_upload(prefix: &str) -> Killed {
    let topic = support::unique(prefix);
    support::create_topic(&topic, 1, &[]);
    let produced = support::produce(
        &topic,
        &support::gen_records(77, 20_000, 1, 1_700_000_000_000),
        "lz4",
    );
    let bucket = support::gcs_bucket();
    let proxy = FaultProxy::start("127.0.0.1:9023");
    proxy.set_faults(Faults {
        body_delay: Duration::from_millis(250),
        ..Faults::default()
    });
    let s = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        &bucket,
        &proxy.url(),
        "codec = \"null\"\nmax_file_bytes = \"3MiB\"\n",
        "chunk_bytes = \"256KiB\"\n",
    );
    let mut child = s.spawn(&["--until-caught-up"]);

    // Wait until a session has stored a few chunks, then kill the process.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (session, stored) = loop {
        let log = proxy.log();
        let mut per_session: BTreeMap<String, u64> = BTreeMap::new();
        for e in &log {
            if let (Some(id), Some(range)) = (upload_id(&e.target), &e.content_range)
                && e.status == Some(308)
                && let Some((_, end, _)) = parse_content_range(range)
            {
                let v = per_session.entry(id).or_default();
                *v = (*v).max(end + 1);
            }
        }
        if let Some((id, n)) = per_session.into_iter().find(|(_, n)| *n >= 3 * 256 * 1024) {
            break (id, n);
        }
        assert!(Instant::now() < deadline, "no upload got going");
        std::thread::sleep(Duration::from_millis(50));
    };
    support::signal(&child, "-KILL");
    let _ = child.wait();
    proxy.set_faults(Faults::default());
    (s, proxy, topic, produced, session, stored)
}

#[test]
fn a_process_killed_mid_upload_resumes_the_same_session() {
    let _broker = support::shared_broker();
    let (s, proxy, topic, produced, session, stored) = kill_mid_upload("gcs-resume");
    let bucket = bucket_of(&s);
    let before = proxy.log().len();
    s.run_to_end();
    let after = &proxy.log()[before..];
    let resumed: Vec<_> = after
        .iter()
        .filter(|e| upload_id(&e.target).as_deref() == Some(session.as_str()))
        .collect();
    assert!(
        !resumed.is_empty(),
        "the restarted process did not reuse session {session}"
    );
    for e in &resumed {
        if let Some((start, _, _)) = e.content_range.as_deref().and_then(parse_content_range) {
            assert!(
                start >= stored,
                "bytes {start}.. were sent again though the server had {stored}"
            );
        }
    }
    assert!(
        resumed
            .iter()
            .any(|e| e.status == Some(200) || e.status == Some(201)),
        "the resumed session did not complete"
    );
    check_archive(&s, &bucket, &topic, &produced);
}

/// Runs `kafka-store run` expecting a quick failure; returns its last line.
fn failing_run(s: &Setup) -> String {
    let started = Instant::now();
    let out = support::run_with_timeout(
        s.command(&[
            "run",
            "--config",
            s.config.to_str().unwrap(),
            "--until-caught-up",
        ]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let line = stderr.lines().last().unwrap_or("").to_string();
    assert!(line.starts_with("kafka-store: "), "{stderr}");
    line
}

#[test]
fn gcs_misconfiguration_is_named_in_one_line_and_nothing_is_committed() {
    let _broker = support::shared_broker();
    let topic = support::unique("gcs-bad");
    support::create_topic(&topic, 1, &[]);
    support::produce(&topic, &support::gen_records(5, 100, 1, 0), "none");
    let groups: Vec<String> = (0..5).map(|_| support::unique("g")).collect();

    // An unknown bucket.
    let s = Setup::gcs(
        &[&topic],
        &groups[0],
        "no-such-bucket-here",
        GCS_EMULATOR,
        "",
        "",
    );
    let line = failing_run(&s);
    assert!(
        line.contains("no-such-bucket-here") && line.contains("does not exist"),
        "{line}"
    );

    // Access refused (403 from the proxy).
    let bucket = support::gcs_bucket();
    let proxy = FaultProxy::start("127.0.0.1:9023");
    proxy.set_faults(Faults {
        rate: 1.0,
        kinds: vec![FaultKind::Status(403)],
        ..Faults::default()
    });
    let s = Setup::gcs(&[&topic], &groups[1], &bucket, &proxy.url(), "", "");
    let line = failing_run(&s);
    assert!(
        line.contains("403") && line.contains(&bucket) && line.contains("no credentials"),
        "{line}"
    );

    // The store refuses the chunks of a session (e.g. a checksum it does
    // not accept): named, and not retried by starting over from byte 0.
    proxy.set_faults(Faults {
        rate: 1.0,
        kinds: vec![FaultKind::Status(400)],
        sessions_only: true,
        ..Faults::default()
    });
    let before = proxy.log().len();
    let s = Setup::gcs(&[&topic], &groups[4], &bucket, &proxy.url(), "", "");
    let line = failing_run(&s);
    assert!(
        line.contains("HTTP 400") && line.contains(&bucket),
        "{line}"
    );
    let initiations = proxy.log()[before..]
        .iter()
        .filter(|e| e.method == "POST")
        .count();
    assert_eq!(initiations, 1, "a refused session was started again");

    // A malformed credentials file.
    let s = Setup::gcs(&[&topic], &groups[2], &bucket, GCS_EMULATOR, "", "");
    let key = s.dir.path().join("key.json");
    std::fs::write(&key, "{ not json").unwrap();
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "credentials = \"none\"",
        &format!("credentials = \"{}\"", key.display()),
    );
    std::fs::write(&s.config, text).unwrap();
    let line = failing_run(&s);
    assert!(
        line.contains("key.json") && line.contains("gcs.credentials"),
        "{line}"
    );

    // An unreachable endpoint gives up within gcs.retry_timeout.
    let s = Setup::gcs(
        &[&topic],
        &groups[3],
        &bucket,
        "http://127.0.0.1:1",
        "",
        "retry_timeout = \"3s\"\n",
    );
    let line = failing_run(&s);
    assert!(
        line.contains("127.0.0.1:1") || line.contains("gs://"),
        "{line}"
    );

    assert!(
        support::gcs_objects(&bucket).is_empty(),
        "nothing may be stored"
    );
    // The refused-chunk run got as far as the start position (offset 0,
    // where the empty archive begins); nothing went past what is stored.
    for (i, group) in groups.iter().enumerate() {
        let committed = support::committed(group, &topic, 1);
        let allowed = if i == 4 { vec![(0, 0)] } else { vec![] };
        assert!(
            committed.clone().into_iter().all(|c| allowed.contains(&c)),
            "group {group}: committed {committed:?}"
        );
    }
}

#[test]
fn an_https_proxy_and_no_proxy_are_honoured() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("gcs-proxy", 1, 2_000, &["none"]);
    let bucket = support::gcs_bucket();
    let proxy = support::ConnectProxy::start(None);
    let through = format!("proxy = \"http://{}\"\n", proxy.addr);
    let s = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        &bucket,
        GCS_EMULATOR,
        "",
        &through,
    );
    s.run_to_end();
    check_archive(&s, &bucket, &topic, &produced);
    let tunnels = proxy.tunnels.lock().unwrap().clone();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| t == "127.0.0.1:9023"),
        "{tunnels:?}"
    );

    // The same store reached directly when its host is in no_proxy.
    proxy.tunnels.lock().unwrap().clear();
    let bucket = support::gcs_bucket();
    let bypass = format!("{through}no_proxy = [\"127.0.0.1\"]\n");
    let s = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        &bucket,
        GCS_EMULATOR,
        "",
        &bypass,
    );
    s.run_to_end();
    check_archive(&s, &bucket, &topic, &produced);
    assert!(proxy.tunnels.lock().unwrap().is_empty());

    // A CA bundle that cannot be read is named.
    let s = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        &bucket,
        GCS_EMULATOR,
        "",
        "ca_bundle = \"/nonexistent/ca.pem\"\n",
    );
    let line = failing_run(&s);
    assert!(line.contains("gcs.ca_bundle /nonexistent/ca.pem"), "{line}");
}

/// The bucket a GCS setup writes to.
fn bucket_of(s: &Setup) -> String {
    let text = std::fs::read_to_string(&s.config).unwrap();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("url = \"gs://"))
        .unwrap();
    url.split('/').next().unwrap().to_string()
}

#[test]
fn an_upload_session_is_not_resumed_for_another_object_name() {
    let _broker = support::shared_broker();
    let (s, proxy, topic, produced, session, _) = kill_mid_upload("gcs-moved");
    let bucket = bucket_of(&s);
    // The operator moves the archive to a new prefix; the spool keeps the
    // note of the killed upload, whose bytes the rebuild reproduces.
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("/archive\"", "/moved\"");
    std::fs::write(&s.config, text).unwrap();
    let before = proxy.log().len();
    s.run_to_end();
    assert!(
        proxy.log()[before..]
            .iter()
            .all(|e| upload_id(&e.target).as_deref() != Some(session.as_str())),
        "the session of the old object name was resumed"
    );
    support::download_archive(&bucket, "moved", &s.archive);
    let archive = support::read_archive(&s.archive);
    let ends: BTreeMap<i32, (i64, i64)> = support::from_zero(&topic);
    support::assert_same_records(&support::check_tiling(&archive, &topic, &ends), &produced);
}

#[test]
fn gcs_over_https_trusts_the_ca_bundle_and_names_a_wrong_one() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("gcs-tls", 2, 2_000, &["lz4"]);
    let (_dir, ca, other_ca, proxy) = support::tls_in_front_of(9023);
    let endpoint = format!("https://127.0.0.1:{}", proxy.port);
    let bucket = support::gcs_bucket();
    let with_ca = |ca: &std::path::Path| {
        Setup::gcs(
            &[&topic],
            &support::unique("g"),
            &bucket,
            &endpoint,
            "max_file_bytes = \"64KiB\"\n",
            &format!("ca_bundle = \"{}\"\nretry_timeout = \"5s\"\n", ca.display()),
        )
    };

    // A CA that did not sign the server's certificate: one line, nothing stored.
    let err = support::run_exits_1(&with_ca(&other_ca));
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("gcs.ca_bundle"), "{last}");
    assert!(
        last.contains(&endpoint.replace("https://", "")) || last.contains(&endpoint),
        "{last}"
    );
    assert!(
        support::gcs_objects(&bucket).is_empty(),
        "a wrong CA stored objects"
    );

    // The right one: every record archived over TLS, and the archive proves itself.
    let good = with_ca(&ca);
    good.run_to_end();
    check_archive(&good, &bucket, &topic, &produced);
    let verify = support::run_with_timeout(
        good.command(&[
            "verify",
            "--config",
            good.config.to_str().unwrap(),
            "--deep",
        ]),
        Duration::from_secs(120),
    );
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
