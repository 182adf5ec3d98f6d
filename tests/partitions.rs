//! Many partitions in one process: descriptors (and memory) do not grow
//! with the number of partitions that have a file open.

use std::process::Command;
use std::time::Duration;

use crate::support::{self, Proc, Rec, Setup};

/// Under `ulimit -n 256` (soft and hard), 2,000 partitions with a file open
/// at the same time: every record is archived, and SIGTERM ends the run
/// with exit 0. With a descriptor per open file the process fails with
/// "Too many open files" long before.
#[test]
fn two_thousand_open_files_fit_in_256_descriptors() {
    let _broker = support::shared_broker();
    let partitions = 2000;
    let topic = support::unique("many");
    support::create_topic(&topic, partitions, &[]);
    let recs: Vec<Rec> = (0..partitions * 2)
        .map(|i| Rec {
            partition: i % partitions,
            timestamp: 1_700_000_000_000 + i64::from(i),
            key: Some(format!("k{i}").into_bytes()),
            value: Some(vec![b'v'; 200 + (i as usize % 50)]),
            headers: vec![("h".into(), Some(i.to_string().into_bytes()))],
        })
        .collect();
    let produced = support::produce(&topic, &recs, "none");
    // Every file stays open until the idle flush, long enough to see all
    // of them open at once.
    let setup = Setup::new(
        &[&topic],
        &support::unique("many"),
        "",
        "idle_flush = \"20s\"\n",
    );
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=256:256", "--"])
        .arg(support::binary())
        .args(["run", "--config", setup.config.to_str().unwrap()])
        .env("KAFKA_STORE_LOG", "info");
    let mut proc = Proc::spawn(cmd);
    let spool = setup.dir.path().join("spool");
    let mut most_open = 0;
    support::wait_until("2,000 files open at once", Duration::from_secs(60), || {
        assert!(
            proc.child.try_wait().unwrap().is_none(),
            "kafka-store exited: {:?}",
            proc.log()
        );
        most_open = most_open.max(support::open_spool_files(&spool));
        most_open == partitions as usize
    });
    support::wait_until("every record archived", Duration::from_secs(120), || {
        support::archive_is_complete(&setup.archive, &topic, &produced)
    });
    proc.signal("-TERM");
    let status = proc.wait(Duration::from_secs(30));
    let log = proc.log();
    assert!(status.success(), "{status}: {log:?}");
    assert!(
        log.iter().any(|l| l.contains("open files limit 256")),
        "the limit is logged: {log:?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("Too many open files")),
        "{log:?}"
    );
    support::delete_topic(&topic);
}
