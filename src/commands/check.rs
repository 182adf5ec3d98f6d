//! `kafka-store check`: the preflight an operator runs before enabling the
//! service. One line per check, `ok` or `FAIL` with what to fix: the
//! configuration, each broker (reachable, authenticated), the topics (or
//! what the regex matches), the group coordinator, the store (reachable,
//! listing allowed; a local directory writable), the MySQL table, the
//! spool (writable, free space).
//!
//! Changes nothing anywhere: no group is joined, no offset committed, no
//! object written (a local store's and the spool's probe files are removed
//! at once).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::cancel::Cancel;
use crate::config::Config;
use crate::exit::Exit;
use crate::index::Index;
use crate::kafka::{Client, ClientConfig, KafkaError};
use crate::store::StoreUrl;

/// How long one check may retry: a preflight should answer in seconds.
const PATIENCE: Duration = Duration::from_secs(10);
/// The spool must have room for this many files of `max_file_bytes`.
const SPOOL_FILES_OF_ROOM: u64 = 2;

/// What the checks found.
struct Checks<'o> {
    out: &'o mut dyn Write,
    failed: usize,
}

impl Checks<'_> {
    fn ok(&mut self, what: &str, detail: impl std::fmt::Display) -> anyhow::Result<()> {
        writeln!(self.out, "ok    {what}: {detail}")?;
        Ok(())
    }

    fn fail(&mut self, what: &str, detail: impl std::fmt::Display) -> anyhow::Result<()> {
        self.failed += 1;
        writeln!(self.out, "FAIL  {what}: {detail}")?;
        Ok(())
    }
}

/// Runs every check; exit 0 when all pass, 2 for the configuration, 1
/// otherwise.
pub fn run(path: &Path) -> anyhow::Result<Exit> {
    let mut stdout = std::io::stdout().lock();
    let mut checks = Checks {
        out: &mut stdout,
        failed: 0,
    };
    let config = match Config::load(path) {
        Ok(config) => {
            checks.ok("config", path.display())?;
            config
        }
        Err(e) => {
            checks.fail("config", format!("{e:#}"))?;
            return Ok(Exit::Usage);
        }
    };
    kafka(&mut checks, &config)?;
    store_and_index(&mut checks, &config)?;
    spool(&mut checks, &config)?;
    Ok(if checks.failed == 0 {
        Exit::Ok
    } else {
        Exit::Failure
    })
}

fn patient(config: &ClientConfig) -> ClientConfig {
    let mut c = config.clone();
    c.retry_timeout = c.retry_timeout.min(PATIENCE);
    c
}

fn kafka(checks: &mut Checks, config: &Config) -> anyhow::Result<()> {
    let k = &config.kafka;
    let cancel = Cancel::default();
    let mut any = None;
    for broker in &k.client.brokers {
        let mut one = patient(&k.client);
        one.brokers = vec![broker.clone()];
        let what = format!("kafka broker {broker}");
        match Client::connect(one, cancel.clone()) {
            Ok(client) => {
                checks.ok(
                    &what,
                    "answers (api versions agreed, authenticated if configured)",
                )?;
                any = any.or(Some(client));
            }
            Err(e) => checks.fail(
                &what,
                format!("{e} (check kafka.brokers and the security settings)"),
            )?,
        }
    }
    let Some(mut client) = any else {
        return checks.fail("kafka", "no broker answers: topics and group not checked");
    };
    for topic in &k.topics {
        let what = format!("kafka topic {topic:?}");
        match client.partitions(topic) {
            Ok(p) => checks.ok(&what, format!("{} partition(s)", p.len()))?,
            Err(KafkaError::UnknownTopic { .. }) => {
                checks.fail(&what, "does not exist (check kafka.topics)")?
            }
            Err(e) => checks.fail(&what, e)?,
        }
    }
    if let Some(re) = &k.topic_regex {
        // The config anchors the pattern to whole names: show it as written.
        let pattern = re.as_str();
        let written = pattern
            .strip_prefix("^(?:")
            .and_then(|p| p.strip_suffix(")$"))
            .unwrap_or(pattern);
        let what = format!("kafka.topic_regex {written:?}");
        match client.topic_names() {
            Ok(names) => {
                let matched: Vec<String> = names.into_iter().filter(|t| re.is_match(t)).collect();
                if matched.is_empty() {
                    checks.fail(&what, "matches no topic of the cluster now")?;
                } else {
                    let shown: Vec<&str> = matched.iter().take(5).map(String::as_str).collect();
                    let more = matched.len().saturating_sub(shown.len());
                    let more = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    checks.ok(&what, format!("matches {}{more}", shown.join(", ")))?;
                }
            }
            Err(e) => checks.fail(&what, e)?,
        }
    }
    let what = format!("kafka group {:?}", k.group_id);
    match client.group_coordinator(&k.group_id) {
        Ok(addr) => checks.ok(&what, format!("coordinator {addr}")),
        Err(e) => checks.fail(&what, e),
    }
}

fn store_and_index(checks: &mut Checks, config: &Config) -> anyhow::Result<()> {
    let url = &config.store.url;
    let what = format!("store {url}");
    let opened = config.store.open(&Cancel::default());
    let store = match opened {
        Ok(store) => store,
        Err(e) => return checks.fail(&what, e),
    };
    let access = match url {
        StoreUrl::File(_) => "writable",
        // Creating objects is only tried by the first commit: a check must
        // not write into the archive.
        StoreUrl::Gcs { .. } | StoreUrl::S3 { .. } => "listing allowed",
    };
    match store.topics() {
        Ok(topics) => checks.ok(
            &what,
            format!("{access}, {} topic(s) archived", topics.len()),
        )?,
        Err(e) => checks.fail(&what, e)?,
    }
    if let Some(mysql) = &config.mysql {
        let what = format!("mysql index table {:?}", mysql.table);
        match Index::open(mysql, &store.url()) {
            Ok(_) => checks.ok(&what, "usable")?,
            Err(e) => checks.fail(&what, e)?,
        }
    }
    Ok(())
}

fn spool(checks: &mut Checks, config: &Config) -> anyhow::Result<()> {
    let dir = &config.store.spool_dir;
    let what = format!("spool {}", dir.display());
    let probe = dir.join(format!(".kafka-store-check-{}", std::process::id()));
    let writable = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"check"))
        .and_then(|()| std::fs::remove_file(&probe));
    if let Err(e) = writable {
        return checks.fail(&what, format!("not writable: {e} (check store.spool_dir)"));
    }
    let free = match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
        Err(e) => return checks.fail(&what, format!("cannot read its free space: {e}")),
    };
    let need = config
        .files
        .rules
        .max_file_bytes
        .saturating_mul(SPOOL_FILES_OF_ROOM);
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    if free < need {
        checks.fail(
            &what,
            format!(
                "{:.2} GiB free, less than {SPOOL_FILES_OF_ROOM} files of files.max_file_bytes ({:.2} GiB)",
                gib(free),
                gib(need)
            ),
        )
    } else {
        checks.ok(&what, format!("writable, {:.1} GiB free", gib(free)))
    }
}
