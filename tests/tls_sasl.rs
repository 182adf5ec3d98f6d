//! TLS and SASL against `test-services.sh`'s kafka-secure broker: a topic
//! archived through each listener (SSL, mutual TLS, and SASL_PLAINTEXT and
//! SASL_SSL with each of PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, PLAIN over
//! SASL_SSL as a group member, sessions renewed on a listener whose SASL
//! sessions expire), every record read back; a restore over SASL_SSL read back by an independent
//! consumer; and the one-line errors of a wrong password, an unknown user,
//! a wrong CA, a certificate for another host name, a missing client
//! certificate and a plaintext client on a TLS listener, with the password
//! nowhere in the output.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::{
    self, SECURE_ADMIN, SECURE_MTLS, SECURE_PLAIN, SECURE_REAUTH, SECURE_SASL_PLAINTEXT,
    SECURE_SASL_SSL, SECURE_SCRAM, SECURE_SSL, SECURE_WRONG_NAME, Setup,
};

fn ca() -> String {
    support::secure_tls("ca.pem").display().to_string()
}

fn sasl(protocol: &str, mechanism: &str, user: &str) -> String {
    format!(
        "security_protocol = \"{protocol}\"\nsasl_mechanism = \"{mechanism}\"\nsasl_username = \"{user}\"\nsasl_password_file = \"@PASSWORD@\"\n"
    )
}

/// SASL over TLS, trusting the test CA.
fn sasl_ssl(mechanism: &str, user: &str) -> String {
    format!(
        "{}ssl_ca_file = \"{}\"\n",
        sasl("sasl_ssl", mechanism, user),
        ca()
    )
}

/// Archives a fresh topic of kafka-secure from `broker` with `security`
/// and checks that every record came back, exactly once.
fn archives_through(broker: &str, security: &str, password: &str) {
    let (topic, produced) = support::secure_topic("tls", 2, 300);
    let s = support::secure_setup(&topic, broker, security, password);
    let out = s.run_to_end();
    if !password.is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains(password),
            "the password is shown: {stderr}"
        );
    }
    assert_archived(&s, &topic, &produced);
}

/// The archive of `s` holds every record of `topic` exactly once.
fn assert_archived(s: &Setup, topic: &str, produced: &BTreeMap<(i32, i64), support::Rec>) {
    let archive = support::read_archive(&s.archive);
    let read = support::check_tiling(&archive, topic, &support::from_zero_at(SECURE_ADMIN, topic));
    support::assert_same_records(&read, produced);
}

/// Runs `kafka-store run --until-caught-up`, which must fail; returns the
/// exit code, the whole stderr and its last line (the error).
fn run_failing(s: &Setup) -> (i32, String, String) {
    let out: Output = support::run_with_timeout(
        s.command(&[
            "run",
            "--config",
            s.config.to_str().unwrap(),
            "--until-caught-up",
        ]),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected a failure: {stderr}");
    let last = stderr.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("kafka-store: "), "{last}");
    (out.status.code().unwrap_or(-1), stderr, last)
}

/// `s` as a service whose files close after a second without records.
fn with_idle_flush_of_a_second(s: Setup) -> Setup {
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("[files]\n", "[files]\nidle_flush = \"1s\"\n"),
    )
    .unwrap();
    s
}

/// Waits until the archive of `s` holds `n` records of `topic`.
fn wait_archived(s: &Setup, topic: &str, n: usize) {
    support::wait_until("every record archived", Duration::from_secs(120), || {
        support::read_archive(&s.archive)
            .get(topic)
            .map_or(0, |ps| {
                ps.values()
                    .flatten()
                    .map(|f| f.records.len())
                    .sum::<usize>()
            })
            == n
    });
}

fn assert_mentions(line: &str, wants: &[&str]) {
    for w in wants {
        assert!(line.contains(w), "{line:?} should mention {w:?}");
    }
}

#[test]
fn a_topic_is_archived_over_ssl() {
    archives_through(
        SECURE_SSL,
        &format!("security_protocol = \"ssl\"\nssl_ca_file = \"{}\"\n", ca()),
        "",
    );
}

/// Each mechanism over each SASL listener (PLAIN over SASL_SSL is the
/// group member below).
#[test]
fn a_topic_is_archived_with_each_sasl_mechanism_over_each_listener() {
    for (listener, mechanism, (user, password)) in [
        (SECURE_SASL_PLAINTEXT, "PLAIN", SECURE_PLAIN),
        (SECURE_SASL_PLAINTEXT, "SCRAM-SHA-256", SECURE_SCRAM),
        (SECURE_SASL_PLAINTEXT, "SCRAM-SHA-512", SECURE_SCRAM),
        (SECURE_SASL_SSL, "SCRAM-SHA-256", SECURE_SCRAM),
        (SECURE_SASL_SSL, "SCRAM-SHA-512", SECURE_SCRAM),
    ] {
        let security = if listener == SECURE_SASL_SSL {
            sasl_ssl(mechanism, user)
        } else {
            sasl("sasl_plaintext", mechanism, user)
        };
        eprintln!("{mechanism} on {listener}");
        archives_through(listener, &security, password);
    }
}

/// Service mode over SASL_SSL with PLAIN: the group protocol (join, sync,
/// heartbeats, offset commits, leave) goes over the same connections as
/// the fetches, which `--until-caught-up` never shows.
#[test]
fn a_group_member_archives_commits_and_leaves_over_sasl_ssl_with_plain() {
    let (user, password) = SECURE_PLAIN;
    let (topic, produced) = support::secure_topic("tls-member", 2, 300);
    let security = sasl_ssl("PLAIN", user);
    let s = with_idle_flush_of_a_second(support::secure_setup(
        &topic,
        SECURE_SASL_SSL,
        &security,
        password,
    ));
    let mut member = support::Proc::start(&s.config);
    wait_archived(&s, &topic, produced.len());
    // `status` reads the group's offsets over SASL_SSL too.
    let committed = |text: &str| {
        (0..2).all(|p| {
            let n = produced.keys().filter(|(q, _)| *q == p).count();
            text.contains(&format!("{topic}/{p}\t{n}\t0\t{n}\t0\t{n}\t"))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = s.succeed("status", &[]);
        if committed(&shown) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the member did not commit its last offsets: {shown}\n{}",
            member.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    member.signal("-TERM");
    let status = member.wait(Duration::from_secs(60));
    let log = member.log().join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains(" generation "),
        "never joined the group: {log}"
    );
    assert!(log.contains("left group"), "did not leave the group: {log}");
    assert!(!log.contains(password), "the password is shown: {log}");
    assert_archived(&s, &topic, &produced);
}

/// A listener whose SASL sessions last 2 s (`connections.max.reauth.ms`,
/// KIP-368) closes a connection used after its session ends unless the
/// client authenticated it again. A member that runs for ten seconds
/// (fetches, heartbeats and commits on long-lived connections, records
/// produced half way) renews each session in time: no connection is lost,
/// every record is archived once.
#[test]
fn sessions_that_expire_are_renewed_by_authenticating_again() {
    let (user, password) = SECURE_SCRAM;
    let (topic, mut produced) = support::secure_topic("tls-reauth", 2, 300);
    let security = sasl("sasl_plaintext", "SCRAM-SHA-256", user);
    let s = with_idle_flush_of_a_second(support::secure_setup(
        &topic,
        SECURE_REAUTH,
        &security,
        password,
    ));
    let started = Instant::now();
    let mut member = support::Proc::start_logging(&s.config, "debug");
    std::thread::sleep(Duration::from_secs(4));
    let later = support::gen_records(14, 300, 2, 1_700_000_100_000);
    produced.extend(support::produce_at(
        SECURE_ADMIN,
        &topic,
        &later,
        "lz4",
        &[],
    ));
    wait_archived(&s, &topic, produced.len());
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    member.signal("-TERM");
    let status = member.wait(Duration::from_secs(60));
    let log = member.log().join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    let renewed = log.matches("authenticated again").count();
    assert!(renewed >= 4, "{renewed} sessions renewed in 10 s: {log}");
    assert!(
        !log.contains("lost:"),
        "a connection was closed for an expired session: {log}"
    );
    assert!(!log.contains(password), "the password is shown: {log}");
    assert_archived(&s, &topic, &produced);
}

#[test]
fn a_topic_is_archived_over_mutual_tls() {
    archives_through(
        SECURE_MTLS,
        &format!(
            "security_protocol = \"ssl\"\nssl_ca_file = \"{}\"\nssl_cert_file = \"{}\"\nssl_key_file = \"{}\"\n",
            ca(),
            support::secure_tls("client.pem").display(),
            support::secure_tls("client.key").display()
        ),
        "",
    );
}

#[test]
fn a_listener_requiring_a_client_certificate_says_so() {
    let (topic, _) = support::secure_topic("tls-nocert", 1, 1);
    let s = support::secure_setup(
        &topic,
        SECURE_MTLS,
        &format!("security_protocol = \"ssl\"\nssl_ca_file = \"{}\"\n", ca()),
        "",
    );
    let (code, _, line) = run_failing(&s);
    assert_eq!(code, 1, "{line}");
    assert_mentions(&line, &[SECURE_MTLS, "kafka.ssl_cert_file"]);
}

#[test]
fn a_wrong_password_is_refused_at_once_naming_the_mechanism() {
    let wrong = "not-the-Password-42";
    for (broker, security) in [
        (
            SECURE_SASL_SSL,
            format!(
                "{}ssl_ca_file = \"{}\"\n",
                sasl("sasl_ssl", "SCRAM-SHA-512", SECURE_SCRAM.0),
                ca()
            ),
        ),
        (
            SECURE_SASL_PLAINTEXT,
            sasl("sasl_plaintext", "PLAIN", SECURE_PLAIN.0),
        ),
    ] {
        let (topic, _) = support::secure_topic("tls-wrongpw", 1, 1);
        let s = support::secure_setup(&topic, broker, &security, wrong);
        let started = Instant::now();
        let (code, stderr, line) = run_failing(&s);
        assert_eq!(code, 1, "{line}");
        // Final, not retried for kafka.retry_timeout (20 s here).
        assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
        let mechanism = if broker == SECURE_SASL_SSL {
            "SCRAM-SHA-512"
        } else {
            "PLAIN"
        };
        let user = if broker == SECURE_SASL_SSL {
            SECURE_SCRAM.0
        } else {
            SECURE_PLAIN.0
        };
        assert_mentions(
            &line,
            &[&format!(
                "kafka broker {broker} refused SASL {mechanism} authentication for user \"{user}\""
            )],
        );
        assert!(!stderr.contains(wrong), "the password is shown: {stderr}");
    }
}

#[test]
fn a_wrong_ca_is_refused_naming_ssl_ca_file() {
    let other = support::secure_tls("other-ca.pem").display().to_string();
    for roots in [format!("ssl_ca_file = \"{other}\"\n"), String::new()] {
        let (topic, _) = support::secure_topic("tls-wrongca", 1, 1);
        let s = support::secure_setup(
            &topic,
            SECURE_SSL,
            &format!("security_protocol = \"ssl\"\n{roots}"),
            "",
        );
        let started = Instant::now();
        let (code, stderr, line) = run_failing(&s);
        assert_eq!(code, 1, "{line}");
        assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
        assert_mentions(&line, &[SECURE_SSL, "UnknownIssuer", "kafka.ssl_ca_file"]);
    }
}

#[test]
fn a_certificate_for_another_host_is_refused() {
    let (topic, _) = support::secure_topic("tls-wrongname", 1, 1);
    let s = support::secure_setup(
        &topic,
        SECURE_WRONG_NAME,
        &format!("security_protocol = \"ssl\"\nssl_ca_file = \"{}\"\n", ca()),
        "",
    );
    let (code, _, line) = run_failing(&s);
    assert_eq!(code, 1, "{line}");
    assert_mentions(
        &line,
        &[
            SECURE_WRONG_NAME,
            "not valid for name \"127.0.0.1\"",
            "kafka.brokers",
        ],
    );
}

#[test]
fn restore_with_brokers_works_over_sasl_ssl() {
    let (topic, produced) = support::secure_topic("tls-restore", 2, 200);
    let (user, password) = SECURE_SCRAM;
    let s = support::secure_setup(
        &topic,
        SECURE_SASL_SSL,
        &sasl_ssl("SCRAM-SHA-512", user),
        password,
    );
    s.run_to_end();
    let target = support::unique("tls-restored");
    support::kafka_tool_at(
        SECURE_ADMIN,
        &["create-topic", "--topic", &target, "--partitions", "2"],
        None,
    );
    // By name: the broker's certificate lists DNS:localhost too.
    let out = support::run_with_timeout(
        s.command(&[
            "restore",
            "--config",
            s.config.to_str().unwrap(),
            "--topic",
            &topic,
            "--to-topic",
            &target,
            "--brokers",
            "localhost:9194",
        ]),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = support::consume_at(SECURE_ADMIN, &target);
    let mut want: BTreeMap<i32, Vec<_>> = BTreeMap::new();
    for ((p, o), r) in &produced {
        want.entry(*p).or_default().push((*o, r));
    }
    for (p, records) in &want {
        let restored = got.get(p).map_or(&[][..], |v| &v[..]);
        assert_eq!(restored.len(), records.len(), "partition {p}");
        for (c, (o, r)) in restored.iter().zip(records) {
            assert_eq!((&c.key, &c.value), (&r.key, &r.value), "{p}/{o}");
            assert_eq!(c.timestamp, r.timestamp, "{p}/{o}");
            let (mark, source) = c.headers.last().expect("the source mark");
            assert_eq!(mark, b"kafka-store.source");
            assert_eq!(
                source.as_deref(),
                Some(format!("{topic}/{p}/{o}").as_bytes())
            );
            assert_eq!(&c.headers[..c.headers.len() - 1], &r.headers[..], "{p}/{o}");
        }
    }
}

#[test]
fn an_unknown_user_is_refused_at_once_naming_the_user() {
    let (topic, _) = support::secure_topic("tls-nouser", 1, 1);
    let security = format!(
        "{}ssl_ca_file = \"{}\"\n",
        sasl("sasl_ssl", "SCRAM-SHA-512", "nobody-here"),
        ca()
    );
    let password = "some-Secret-77";
    let s = support::secure_setup(&topic, SECURE_SASL_SSL, &security, password);
    let started = Instant::now();
    let (code, stderr, line) = run_failing(&s);
    assert_eq!(code, 1, "{line}");
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
    assert_mentions(
        &line,
        &[&format!(
            "kafka broker {SECURE_SASL_SSL} refused SASL SCRAM-SHA-512 authentication for user \"nobody-here\""
        )],
    );
    assert!(
        !stderr.contains(password),
        "the password is shown: {stderr}"
    );
}

#[test]
fn a_plaintext_client_on_a_tls_listener_is_told_to_use_tls() {
    let (topic, _) = support::secure_topic("tls-plain-client", 1, 1);
    let s = support::secure_setup(&topic, SECURE_SSL, "", "");
    let started = Instant::now();
    let (code, stderr, line) = run_failing(&s);
    assert_eq!(code, 1, "{line}");
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
    assert_mentions(&line, &[SECURE_SSL, "kafka.security_protocol"]);
}
