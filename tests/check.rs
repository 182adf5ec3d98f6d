//! `kafka-store check`: the preflight, against the real services; each
//! check's line, and the exit codes 0, 1 and 2.

use std::process::Output;
use std::time::Duration;

use crate::support::{self, Setup};

fn check(s: &Setup) -> (Output, String) {
    let out = support::run_with_timeout(
        s.command(&["check", "--config", s.config.to_str().unwrap()]),
        Duration::from_secs(120),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (out, text)
}

fn edit(s: &Setup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    std::fs::write(&s.config, text.replace(from, to)).unwrap();
}

#[test]
fn every_check_passes_on_a_working_setup() {
    let _broker = support::shared_broker();
    let _db = support::shared_mariadb();
    let topic = support::unique("check");
    support::create_topic(&topic, 3, &[]);
    let db = support::mysql_db();
    let s = Setup::new(&[&topic], &support::unique("g"), "", "");
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!("{text}\n[mysql]\nurl = \"{}/{db}\"\n", support::MYSQL),
    )
    .unwrap();
    let (out, text) = check(&s);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for want in [
        format!("ok    config: {}", s.config.display()),
        format!("ok    kafka broker {}: answers", support::BOOTSTRAP),
        format!("ok    kafka topic {topic:?}: 3 partition(s)"),
        "ok    kafka group \"g-".to_string(),
        format!("ok    store file://{}: writable", s.archive.display()),
        "ok    mysql index table \"kafka_store_files\": usable".to_string(),
        format!(
            "ok    spool {}: writable",
            s.dir.path().join("spool").display()
        ),
    ] {
        assert!(text.contains(&want), "no {want:?} in\n{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
    // A check writes nothing into the archive.
    assert!(support::read_archive(&s.archive).is_empty());
}

#[test]
fn each_failing_check_says_what_to_fix() {
    let _broker = support::shared_broker();
    let topic = support::unique("check-bad");
    support::create_topic(&topic, 1, &[]);
    let s = Setup::new(
        &[&topic, "no-such-topic-here"],
        &support::unique("g"),
        "",
        "",
    );
    // One broker of two does not answer; the other still serves the rest.
    edit(
        &s,
        &format!("brokers = [\"{}\"]", support::BOOTSTRAP),
        &format!("brokers = [\"127.0.0.1:1\", \"{}\"]", support::BOOTSTRAP),
    );
    edit(&s, "retry_timeout = \"20s\"", "retry_timeout = \"2s\"");
    // The spool is a file, not a directory.
    let spool = s.dir.path().join("spool");
    std::fs::write(&spool, b"not a directory").unwrap();
    let (out, text) = check(&s);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for want in [
        "FAIL  kafka broker 127.0.0.1:1: ",
        "(check kafka.brokers and the security settings)",
        &format!("ok    kafka broker {}: answers", support::BOOTSTRAP),
        &format!("ok    kafka topic {topic:?}: 1 partition(s)"),
        "FAIL  kafka topic \"no-such-topic-here\": does not exist (check kafka.topics)",
        &format!("FAIL  spool {}: not writable", spool.display()),
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    assert_eq!(text.matches("FAIL").count(), 3, "{text}");

    // A configuration that does not load: exit 2, one line naming the key.
    std::fs::write(
        &s.config,
        "[kafka]\nbrokers = []\n[store]\nurl = \"file:///x\"\nspool_dir = \"/x\"\n",
    )
    .unwrap();
    let (out, text) = check(&s);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.starts_with("FAIL  config: "), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}
