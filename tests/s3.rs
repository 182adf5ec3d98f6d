//! The `s3://` store against a real S3 API that honours `If-None-Match`
//! (moto, vendor-config/test-services.sh),
//! with the fault-injecting proxy in front of it: exactly once with every
//! metadata field read back, multipart uploads, faults survived.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::fault_proxy::{FaultKind, FaultProxy, Faults};
use crate::support::{self, Rec, S3_ENDPOINT, Setup};

/// Downloads the archive with an independent client (boto3) and checks it
/// record by record; every object's metadata must match its bytes.
fn check_archive(s: &Setup, bucket: &str, topic: &str, produced: &BTreeMap<(i32, i64), Rec>) {
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

#[test]
fn s3_archive_is_exactly_once_with_multipart_uploads_through_faults() {
    let _broker = support::shared_broker();
    let (topic, produced) = support::topic_with_records("s3", 2, 60_000, &["zstd", "gzip"]);
    let bucket = support::s3_bucket();
    let proxy = FaultProxy::start(S3_ENDPOINT.strip_prefix("http://").unwrap());
    proxy.set_faults(Faults {
        rate: 0.25,
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
    let log = proxy.log();
    let faulted = log.iter().filter(|e| e.fault.is_some()).count();
    assert!(
        faulted * 5 >= log.len(),
        "{faulted} of {} faulted",
        log.len()
    );
    assert!(
        log.iter().any(|e| e.target.contains("partNumber=2")),
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
