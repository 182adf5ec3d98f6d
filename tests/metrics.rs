//! `/metrics` of a running `kafka-store run`, scraped over HTTP and parsed
//! by prometheus-client's own parser: lag that falls to 0 once the archive
//! holds every record, files and bytes equal to what the store holds, a 503
//! storm counted by reason, clients that stall nothing, and the cap on
//! partition labels.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{FaultKind, FaultProxy, Faults};
use crate::support::{self, Proc, PromSample, Setup, prom_value, scrape};

fn total(samples: &[PromSample], name: &str) -> f64 {
    prom_value(samples, name, &[]).unwrap_or_else(|| panic!("no {name}"))
}

/// A topic of `partitions` partitions holding `n` records.
fn topic_of(prefix: &str, partitions: i32, n: usize) -> String {
    let topic = support::unique(prefix);
    support::create_topic(&topic, partitions, &[]);
    let recs = support::gen_records(13, n, partitions, 1_700_000_000_000);
    support::produce(&topic, &recs, "none");
    topic
}

#[test]
fn metrics_lag_falls_to_zero_and_files_and_bytes_equal_the_store() {
    let _broker = support::shared_broker();
    let topic = topic_of("metrics-lag", 2, 2 * 1234);
    // Files of 500 records close at once; the tail of each partition waits
    // for the idle flush, so the archive is behind the log for a while.
    let s = Setup::new(
        &[&topic],
        &support::unique("m"),
        "",
        "max_file_records = 500\nidle_flush = \"6s\"\n",
    );
    support::with_metrics(&s.config, "");
    let p = Proc::start(&s.config);
    let addr = support::metrics_addr(&p);

    let mut behind = None;
    let mut last = Vec::new();
    support::wait_until(
        "lag 0 with every record stored",
        Duration::from_secs(90),
        || {
            last = scrape(&addr);
            let lag = total(&last, "kafka_store_lag_records");
            let stored = total(&last, "kafka_store_committed_records_total");
            if lag > 0.0 && stored > 0.0 && behind.is_none() {
                behind = Some(last.clone());
            }
            lag == 0.0 && stored == 2.0 * 1234.0
        },
    );
    let behind = behind.expect("a scrape while the tails waited for the idle flush");
    for partition in ["0", "1"] {
        let labels = [("topic", topic.as_str()), ("partition", partition)];
        let lag = prom_value(&behind, "kafka_store_partition_lag_records", &labels);
        assert!(
            lag.is_some_and(|l| l > 0.0),
            "partition {partition}: {lag:?}"
        );
        assert_eq!(
            prom_value(&last, "kafka_store_partition_lag_records", &labels),
            Some(0.0)
        );
        assert_eq!(
            prom_value(&last, "kafka_store_partition_lag_seconds", &labels),
            Some(0.0)
        );
    }
    assert!(total(&behind, "kafka_store_open_files") >= 1.0);
    assert_eq!(total(&last, "kafka_store_open_files"), 0.0);

    let on_disk = support::archive_files_on_disk(&s.archive, &topic);
    assert_eq!(on_disk.len(), 2, "{on_disk:?}");
    let (mut files, mut bytes) = (0, 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (partition, (n, size)) in &on_disk {
        let p = partition.to_string();
        let labels = [("topic", topic.as_str()), ("partition", p.as_str())];
        let got = |name| prom_value(&last, name, &labels);
        assert_eq!(
            got("kafka_store_partition_committed_files_total"),
            Some(*n as f64)
        );
        assert_eq!(
            got("kafka_store_partition_committed_bytes_total"),
            Some(*size as f64)
        );
        assert_eq!(
            got("kafka_store_partition_committed_records_total"),
            Some(1234.0)
        );
        let at = got("kafka_store_partition_last_commit_timestamp_seconds").unwrap();
        assert!(
            (now - 120.0..=now + 1.0).contains(&at),
            "last commit at {at}, now {now}"
        );
        files += n;
        bytes += size;
    }
    assert_eq!(files, 6, "500 + 500 + 234 records per partition");
    assert_eq!(
        total(&last, "kafka_store_committed_files_total"),
        files as f64
    );
    assert_eq!(
        total(&last, "kafka_store_committed_bytes_total"),
        bytes as f64
    );
    assert_eq!(total(&last, "kafka_store_halted_partitions"), 0.0);
    assert_eq!(total(&last, "kafka_store_spool_bytes"), 0.0);
}

#[test]
fn metrics_count_a_503_storm_under_its_reason() {
    let _broker = support::shared_broker();
    let topic = topic_of("metrics-503", 2, 3000);
    let bucket = support::gcs_bucket();
    let proxy = FaultProxy::start("127.0.0.1:9023");
    proxy.set_faults(Faults {
        rate: 0.4,
        seed: 11,
        kinds: vec![FaultKind::Status(503)],
        ..Faults::default()
    });
    let s = Setup::gcs(
        &[&topic],
        &support::unique("m"),
        &bucket,
        &proxy.url(),
        "codec = \"null\"\nmax_file_records = 400\nidle_flush = \"1s\"\n",
        "chunk_bytes = \"256KiB\"\nretry_timeout = \"120s\"\n",
    );
    support::with_metrics(&s.config, "");
    let p = Proc::start(&s.config);
    let addr = support::metrics_addr(&p);
    let injected = || {
        proxy
            .log()
            .iter()
            .filter(|e| e.fault == Some(FaultKind::Status(503)))
            .count() as f64
    };
    let mut last = Vec::new();
    support::wait_until("every record stored", Duration::from_secs(120), || {
        last = scrape(&addr);
        total(&last, "kafka_store_committed_records_total") == 3000.0
    });
    // Every injected 503 was retried once, and counted under "503".
    support::wait_until("each 503 counted", Duration::from_secs(10), || {
        last = scrape(&addr);
        prom_value(
            &last,
            "kafka_store_store_retries_total",
            &[("reason", "503")],
        ) == Some(injected())
    });
    assert!(injected() >= 3.0, "only {} 503s injected", injected());
    assert_eq!(
        prom_value(
            &last,
            "kafka_store_store_retries_total",
            &[("reason", "429")]
        ),
        Some(0.0)
    );
    assert_eq!(
        prom_value(
            &last,
            "kafka_store_store_retries_total",
            &[("reason", "connection")]
        ),
        Some(0.0)
    );
}

#[test]
fn metrics_clients_that_stall_hold_up_neither_scrapes_nor_the_archive() {
    let _broker = support::shared_broker();
    let topic = support::unique("metrics-slow");
    support::create_topic(&topic, 2, &[]);
    let s = Setup::new(
        &[&topic],
        &support::unique("m"),
        "",
        "idle_flush = \"1s\"\n",
    );
    support::with_metrics(&s.config, "");
    let p = Proc::start(&s.config);
    let addr = support::metrics_addr(&p);

    // More silent clients than the responder serves at once, and one that
    // sends its request a byte a second.
    let silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let trickle_addr = addr.clone();
    let trickle = std::thread::spawn(move || {
        let mut c = TcpStream::connect(&trickle_addr).unwrap();
        for b in b"GET /metrics HTTP/1.1\r\n\r\n" {
            if c.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let recs = support::gen_records(5, 2000, 2, 1_700_000_000_000);
    support::produce(&topic, &recs, "lz4");
    let started = Instant::now();
    for _ in 0..20 {
        let t = Instant::now();
        let samples = scrape(&addr);
        assert!(total(&samples, "kafka_store_open_files") >= 0.0);
        let took = t.elapsed();
        assert!(took < Duration::from_secs(2), "a scrape took {took:?}");
    }
    let (status, _) = support::http_get(&addr, "/", Duration::from_secs(5));
    assert_eq!(status, 404);
    support::wait_until("every record stored", Duration::from_secs(60), || {
        total(&scrape(&addr), "kafka_store_committed_records_total") == 2000.0
    });
    eprintln!("scrapes and the archive went on in {:?}", started.elapsed());

    // The responder gives up on a client that never finishes its request.
    let mut last = silent.into_iter().last().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 16];
    let waited = Instant::now();
    let n = last.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a silent client was answered");
    assert!(waited.elapsed() < Duration::from_secs(10));
    trickle.join().unwrap();
}

#[test]
fn metrics_partition_labels_are_capped() {
    let _broker = support::shared_broker();
    let topic = topic_of("metrics-cap", 4, 4000);
    let s = Setup::new(
        &[&topic],
        &support::unique("m"),
        "",
        "idle_flush = \"1s\"\n",
    );
    support::with_metrics(&s.config, "max_partition_labels = 2\n");
    let p = Proc::start(&s.config);
    let addr = support::metrics_addr(&p);
    let mut last = Vec::new();
    support::wait_until("every record stored", Duration::from_secs(90), || {
        last = scrape(&addr);
        total(&last, "kafka_store_committed_records_total") == 4000.0
            && total(&last, "kafka_store_lag_records") == 0.0
    });
    let labelled: BTreeSet<(String, String)> = last
        .iter()
        .filter_map(|s| {
            Some((
                s.labels.get("topic")?.clone(),
                s.labels.get("partition")?.clone(),
            ))
        })
        .collect();
    assert_eq!(labelled.len(), 2, "{labelled:?}");
    let per_partition: f64 = last
        .iter()
        .filter(|s| s.name == "kafka_store_partition_committed_records_total")
        .map(|s| s.value)
        .sum();
    assert!(per_partition < 4000.0, "{per_partition}");
    let on_disk = support::archive_files_on_disk(&s.archive, &topic);
    let files: u64 = on_disk.values().map(|(n, _)| n).sum();
    assert_eq!(on_disk.len(), 4);
    assert_eq!(
        total(&last, "kafka_store_committed_files_total"),
        files as f64
    );
}

/// A client quota (`consumer_byte_rate`) is waited out, not taken for a
/// moved leader: every record is archived, the waits are counted and said,
/// and a quiet partition on the throttled broker still closes its file
/// after `idle_flush` while the busy one is held back.
#[test]
fn metrics_a_fetch_quota_is_waited_out_and_counted() {
    let _broker = support::shared_broker();
    let topic = support::unique("metrics-quota");
    support::create_topic(&topic, 2, &[]);
    let mut recs = support::gen_records(41, 24_000, 1, 1_700_000_000_000);
    let quiet = support::gen_records(42, 40, 1, 1_700_000_000_000);
    recs.extend(
        quiet
            .into_iter()
            .map(|r| support::Rec { partition: 1, ..r }),
    );
    let produced = support::produce(&topic, &recs, "none");
    let busy = produced.keys().filter(|(p, _)| *p == 0).count() as f64;
    let client_id = support::unique("ks-quota");
    support::client_quota(&client_id, "consumer_byte_rate=204800");
    let s = Setup::new(
        &[&topic],
        &support::unique("m"),
        &format!(
            "client_id = \"{client_id}\"\nfetch_max_bytes = \"128KiB\"\npartition_fetch_bytes = \"64KiB\""
        ),
        "idle_flush = \"2s\"\n",
    );
    support::with_metrics(&s.config, "");
    let mut p = Proc::start_logging(&s.config, "debug");
    let addr = support::metrics_addr(&p);

    let records = |samples: &[PromSample], partition: &str| {
        let labels = [("topic", topic.as_str()), ("partition", partition)];
        prom_value(
            samples,
            "kafka_store_partition_committed_records_total",
            &labels,
        )
        .unwrap_or(0.0)
    };
    let mut quiet_done_while_busy = None;
    let mut last = Vec::new();
    support::wait_until(
        "every record stored under the quota",
        Duration::from_secs(120),
        || {
            last = scrape(&addr);
            let (busy_now, quiet_now) = (records(&last, "0"), records(&last, "1"));
            if quiet_now == 40.0 && busy_now < busy && quiet_done_while_busy.is_none() {
                quiet_done_while_busy = Some(busy_now);
            }
            busy_now == busy && quiet_now == 40.0
        },
    );
    p.signal("-TERM");
    assert!(p.wait(Duration::from_secs(30)).success());

    let throttled = total(&last, "kafka_store_kafka_throttle_seconds_total");
    assert!(throttled > 1.0, "throttled for {throttled}s in all");
    let log = p.log();
    assert!(
        log.iter()
            .any(|l| l.contains(&format!("throttles client id \"{client_id}\" by a quota"))),
        "no line says the broker throttles"
    );
    let misread: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("NOT_LEADER_OR_FOLLOWER"))
        .collect();
    assert!(
        misread.is_empty(),
        "a throttled fetch taken for a moved leader: {misread:?}"
    );
    let busy_then = quiet_done_while_busy
        .expect("the quiet partition's file closes only once the busy one is done");
    eprintln!(
        "quiet partition stored at {busy_then} of {busy} busy records, {throttled}s throttled"
    );
    assert!(support::archive_is_complete(&s.archive, &topic, &produced));
}
