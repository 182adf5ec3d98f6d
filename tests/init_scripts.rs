//! The init scripts of `vendor-config/`, driven for real: the SysV script
//! starts the service as its own user, reports it, and stops it with a
//! drain; the systemd unit passes `systemd-analyze verify`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{self, Setup};

const USER: &str = "kafka-store";

/// The service user, created like a package would (the tests run as root).
fn ensure_user() {
    let known = Command::new("id").args(["-u", USER]).output().unwrap();
    if !known.status.success() {
        let made = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", USER])
            .output()
            .unwrap();
        assert!(
            made.status.success() || String::from_utf8_lossy(&made.stderr).contains("exists"),
            "useradd: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
}

fn chown_for_service(dir: &Path) {
    let run = |cmd: &str, args: &[&str]| {
        let out = Command::new(cmd).args(args).arg(dir).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("chown", &["-R", &format!("{USER}:{USER}")]);
    run("chmod", &["0755"]);
}

fn script(defaults: &Path, command: &str) -> Output {
    Command::new("sh")
        .arg(support::repo().join("vendor-config/init.d/kafka-store"))
        .arg(command)
        .env("KAFKA_STORE_DEFAULTS", defaults)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_sysv_script_runs_the_service_as_its_user_and_stops_it_cleanly() {
    let _broker = support::shared_broker();
    ensure_user();
    let (topic, produced) = support::topic_with_records("initd", 2, 400, &["lz4"]);
    let s = Setup::new(
        &[&topic],
        &support::unique("g"),
        "",
        "idle_flush = \"1s\"\n",
    );
    let dir = s.dir.path();
    let (pidfile, logfile) = (
        dir.join("run/kafka-store.pid"),
        dir.join("log/kafka-store.log"),
    );
    let defaults = dir.join("defaults");
    std::fs::write(
        &defaults,
        format!(
            "DAEMON={}\nCONFIG={}\nPIDFILE={}\nLOGFILE={}\nSTOP_TIMEOUT=60\n",
            support::binary().display(),
            s.config.display(),
            pidfile.display(),
            logfile.display()
        ),
    )
    .unwrap();
    chown_for_service(dir);

    let started = script(&defaults, "start");
    assert!(started.status.success(), "{}", text(&started));
    assert!(
        text(&started).contains("started (pid "),
        "{}",
        text(&started)
    );
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let status = script(&defaults, "status");
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(text(&status).contains(&format!("running (pid {pid})")));
    let owner = Command::new("ps")
        .args(["-o", "user=", "-p", &pid])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), USER);
    // A second start changes nothing.
    let again = script(&defaults, "start");
    assert!(text(&again).contains(&format!("already running (pid {pid})")));

    support::wait_until(
        "the service archived every record",
        Duration::from_secs(120),
        || support::archive_is_complete(&s.archive, &topic, &produced),
    );

    let stopped = script(&defaults, "stop");
    assert_eq!(stopped.status.code(), Some(0), "{}", text(&stopped));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still runs"
    );
    assert!(!pidfile.exists(), "the pid file is left");
    let log = std::fs::read_to_string(&logfile).unwrap();
    // The drain ran to its end: the service logged its own stop.
    assert!(log.contains("stopped; peak memory"), "{log}");
    assert!(!text(&stopped).contains("killing"), "{}", text(&stopped));
    assert!(support::archive_is_complete(&s.archive, &topic, &produced));
    assert_eq!(script(&defaults, "status").status.code(), Some(3));

    // `restart` of a stopped service starts it; of a running one, replaces it.
    let restarted = script(&defaults, "restart");
    assert!(restarted.status.success(), "{}", text(&restarted));
    let first = std::fs::read_to_string(&pidfile).unwrap();
    let restarted = script(&defaults, "restart");
    assert!(restarted.status.success(), "{}", text(&restarted));
    let second = std::fs::read_to_string(&pidfile).unwrap();
    assert_ne!(first, second, "restart kept the old process");
    assert!(
        !Path::new(&format!("/proc/{}", first.trim())).exists(),
        "the old process still runs"
    );
    assert_eq!(script(&defaults, "stop").status.code(), Some(0));
    assert!(support::archive_is_complete(&s.archive, &topic, &produced));

    // A configuration only root can read: start names the fix, starts nothing.
    let chown = |owner: &str, mode: &str| {
        for (cmd, arg) in [("chown", owner), ("chmod", mode)] {
            let done = Command::new(cmd).arg(arg).arg(&s.config).status().unwrap();
            assert!(done.success(), "{cmd} {arg}");
        }
    };
    chown("root:root", "0600");
    let unreadable = script(&defaults, "start");
    assert_eq!(unreadable.status.code(), Some(6), "{}", text(&unreadable));
    assert!(
        text(&unreadable).contains(&format!(
            "{USER} cannot read {}: chgrp {USER} {0} && chmod 0640 {0}",
            s.config.display()
        )),
        "{}",
        text(&unreadable)
    );
    assert!(!pidfile.exists(), "a pid file was written");
    chown(&format!("{USER}:{USER}"), "0640");

    // A configuration the service refuses: start says so and fails.
    std::fs::write(&s.config, "[kafka]\n").unwrap();
    let refused = script(&defaults, "start");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("did not start"),
        "{}",
        text(&refused)
    );
    assert!(
        text(&refused).contains("missing field `brokers`"),
        "{}",
        text(&refused)
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit =
        std::fs::read_to_string(support::repo().join("vendor-config/systemd/kafka-store.service"))
            .unwrap();
    for line in [
        "User=kafka-store",
        "ExecStart=/usr/local/bin/kafka-store run --config /etc/kafka-store/kafka-store.toml",
        "Restart=on-failure",
        "LimitNOFILE=",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/kafka-store",
    ] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(stop >= 60, "TimeoutStopSec {stop}s is short for a drain");
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kafka-store.service");
    let binary = support::binary();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/kafka-store", binary.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    // Warnings (an unknown key, a bad value) do not fail verify: none allowed.
    assert!(
        !said.contains("kafka-store.service"),
        "systemd-analyze verify: {said}"
    );
}
