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

/// Runs `check` on `s` expecting exit 1 and, among its FAIL lines, one
/// holding each of `wants`; every other line is `ok`.
fn fails_with(s: &Setup, wants: &[&str]) {
    let (out, text) = check(s);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    for want in wants {
        assert!(
            failed.iter().any(|l| l.contains(want)),
            "no FAIL with {want:?} in\n{text}"
        );
    }
    assert!(
        text.lines()
            .all(|l| l.starts_with("ok    ") || l.starts_with("FAIL  ")),
        "{text}"
    );
}

#[test]
fn each_broken_thing_alone_is_named_with_what_to_fix() {
    let _broker = support::shared_broker();
    let _db = support::shared_mariadb();
    let topic = support::unique("check-bad");
    support::create_topic(&topic, 1, &[]);
    let fresh = || {
        let s = Setup::new(&[&topic], &support::unique("g"), "", "");
        edit(&s, "retry_timeout = \"20s\"", "retry_timeout = \"2s\"");
        s
    };
    let bootstrap = format!("brokers = [\"{}\"]", support::BOOTSTRAP);

    // A broker that does not answer, beside one that does.
    let s = fresh();
    edit(
        &s,
        &bootstrap,
        &format!("brokers = [\"127.0.0.1:1\", \"{}\"]", support::BOOTSTRAP),
    );
    fails_with(
        &s,
        &[
            "kafka broker 127.0.0.1:1: ",
            "(check kafka.brokers and the security settings)",
        ],
    );
    assert!(check(&s).1.contains(&format!(
        "ok    kafka broker {}: answers",
        support::BOOTSTRAP
    )));

    // A topic that does not exist.
    let s = fresh();
    edit(
        &s,
        &format!("topics = [\"{topic}\"]"),
        &format!("topics = [\"{topic}\", \"no-such-topic-here\"]"),
    );
    fails_with(
        &s,
        &["kafka topic \"no-such-topic-here\": does not exist (check kafka.topics)"],
    );

    // A regex that matches nothing.
    let s = fresh();
    edit(
        &s,
        &format!("topics = [\"{topic}\"]"),
        "topic_regex = \"^nothing-matches-this$\"",
    );
    fails_with(
        &s,
        &["kafka.topic_regex \"^nothing-matches-this$\": matches no topic"],
    );

    // A spool that is a file.
    let s = fresh();
    let spool = s.dir.path().join("spool");
    std::fs::write(&spool, b"not a directory").unwrap();
    fails_with(&s, &[&format!("spool {}: not writable", spool.display())]);

    // A store that does not answer.
    let s = Setup::gcs(
        &[&topic],
        &support::unique("g"),
        "bucket-x",
        "http://127.0.0.1:9",
        "",
        "retry_timeout = \"2s\"\n",
    );
    fails_with(&s, &["store gs://bucket-x/archive: ", "127.0.0.1:9"]);

    // A MySQL database that does not exist.
    let s = fresh();
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!(
            "{text}\n[mysql]\nurl = \"{}/no_such_db_here\"\n",
            support::MYSQL
        ),
    )
    .unwrap();
    fails_with(
        &s,
        &[
            "mysql index table \"kafka_store_files\": ",
            "no_such_db_here",
        ],
    );

    // A password the broker refuses: named, and never shown.
    let (secure_topic, _) = support::secure_topic("check-sasl", 1, 1);
    let security = format!(
        "security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-256\"\nsasl_username = \"{}\"\nsasl_password_file = \"@PASSWORD@\"\n",
        support::SECURE_SCRAM.0
    );
    let s = support::secure_setup(
        &secure_topic,
        support::SECURE_SASL_PLAINTEXT,
        &security,
        "wrong-Pass-91",
    );
    fails_with(
        &s,
        &[
            &format!("kafka broker {}: ", support::SECURE_SASL_PLAINTEXT),
            "refused SASL SCRAM-SHA-256",
        ],
    );
    let (out, text) = check(&s);
    assert!(
        !text.contains("wrong-Pass-91")
            && !String::from_utf8_lossy(&out.stderr).contains("wrong-Pass-91")
    );

    // A configuration that does not load: exit 2, one line.
    let s = fresh();
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
