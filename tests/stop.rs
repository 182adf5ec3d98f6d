//! One stop flag: a fatal error in one thread ends every other thread's
//! retry loop at once, even while Kafka is down and the fetcher, the group
//! thread and the committer are all retrying.

use std::time::{Duration, Instant};

use crate::support::fault_proxy::{FaultKind, FaultProxy, Faults};
use crate::support::{self, Proc, Setup};

/// Starts the broker again however the test ends.
struct BrokerBack;

impl Drop for BrokerBack {
    fn drop(&mut self) {
        support::test_services("start-kafka");
    }
}

#[test]
fn a_fatal_error_ends_the_run_within_two_seconds_while_kafka_is_down() {
    let _broker = support::exclusive_broker();
    let topic = support::unique("stopflag");
    support::create_topic(&topic, 1, &[]);
    support::produce(
        &topic,
        &support::gen_records(11, 200, 1, 1_700_000_000_000),
        "none",
    );
    // Uploads crawl through the proxy (every request with a body waits),
    // so files are still being stored when Kafka goes away.
    let proxy = FaultProxy::start("127.0.0.1:9023");
    proxy.set_faults(Faults {
        body_delay: Duration::from_millis(1500),
        ..Faults::default()
    });
    let bucket = support::gcs_bucket();
    let group = support::unique("g");
    let s = Setup::gcs(
        &[&topic],
        &group,
        &bucket,
        &proxy.url(),
        "max_file_records = 20\n",
        "retry_timeout = \"5m\"\n",
    );
    // Kafka retries for a minute before giving up on anything.
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("retry_timeout = \"20s\"", "retry_timeout = \"60s\"");
    std::fs::write(&s.config, text).unwrap();
    let mut p = Proc::start_logging(&s.config, "debug");
    support::wait_until("an upload under way", Duration::from_secs(60), || {
        proxy
            .log()
            .iter()
            .any(|e| e.target.contains("uploadType=resumable"))
    });

    support::test_services("stop-kafka");
    let _back = BrokerBack;
    let retrying = |p: &Proc| {
        p.log()
            .iter()
            .filter(|l| l.contains("fetch of") && l.contains("failed, retrying"))
            .count()
    };
    let before = retrying(&p);
    support::wait_until("the fetcher retrying", Duration::from_secs(30), || {
        retrying(&p) > before + 2
    });
    assert!(p.child.try_wait().unwrap().is_none(), "{:?}", p.log());

    // The store now refuses: a fatal error in an uploader.
    proxy.set_faults(Faults {
        rate: 1.0,
        kinds: vec![FaultKind::Status(403)],
        ..Faults::default()
    });
    let mut failed_at = None;
    let started = Instant::now();
    let status = loop {
        if failed_at.is_none()
            && p.log()
                .iter()
                .any(|l| l.contains("ERROR") && l.contains("403"))
        {
            failed_at = Some(Instant::now());
        }
        if let Some(status) = p.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still running: {:?}",
            p.log().iter().rev().take(10).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let exited = Instant::now();
    let log = p.log();
    let failed_at = failed_at
        .or_else(|| {
            log.iter()
                .any(|l| l.contains("ERROR") && l.contains("403"))
                .then_some(exited)
        })
        .unwrap_or_else(|| panic!("no store failure was logged: {log:?}"));
    assert_eq!(status.code(), Some(1), "{log:?}");
    let last = log.last().unwrap();
    assert!(
        last.starts_with("kafka-store: ") && last.contains("403") && last.contains(&bucket),
        "the exit names the store's refusal: {last}"
    );
    let took = exited.duration_since(failed_at);
    assert!(
        took < Duration::from_secs(2),
        "the run took {took:?} to end after the fatal error: {:?}",
        log.iter().rev().take(10).collect::<Vec<_>>()
    );
    assert!(
        proxy.log().iter().any(|e| e.status == Some(403)),
        "the store refused nothing"
    );
    p.wait(Duration::from_secs(1));
}
