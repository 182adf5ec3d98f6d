//! The command line: argument definitions and parsing only. Nothing here
//! reads files or talks to services; each command's arguments are a plain
//! struct its `commands::…::run` receives.

use std::path::PathBuf;

use lexopt::prelude::*;

pub const HELP: &str = "\
kafka-store: archive Kafka topics to object storage, every record exactly once

USAGE:
    kafka-store run --config FILE [--until-caught-up]
    kafka-store ls  (--config FILE | --store URL) [--topic T] [--partition P]
    kafka-store cat (--config FILE | --store URL) OBJECT
    kafka-store cat FILE.avro
    kafka-store status --config FILE
    kafka-store check --config FILE
    kafka-store locate --config FILE --topic T --partition P (--offset O | --time RFC3339)
    kafka-store reindex --config FILE
    kafka-store verify (--config FILE | --store URL) [--topic T] [--partition P]
                       [--deep] [--against-kafka] [--json]
    kafka-store restore --config FILE --topic T --to-topic T2 [--partition P]
                        [--from-offset O | --from-time RFC3339]
                        [--until-offset O | --until-time RFC3339]
                        [--brokers LIST] [--rate BYTES_PER_S]
                        [--compression CODEC] [--dry-run]
    kafka-store --help | --version

COMMANDS:
    run     archive the configured topics until SIGTERM/SIGINT, sharing the
            partitions with the other members of kafka.group_id
    ls      list archive files with offset ranges, record counts and sizes,
            and the first gap of each partition's chain
    cat     print one archive file's records as JSON lines; bytes appear as
            a string when they are UTF-8, else as {\"base64\": \"...\"}
    status  per partition: where the archive ends, the log's extent, the lag
            and the group's committed offset
    check   the preflight before enabling the service: config, brokers,
            topics, group coordinator, store, MySQL table, spool; one line
            per check with what to fix (exit 0, 2 for config, 1 otherwise)
    locate  the archive file holding an offset, or the first archived record
            at or after a time (uses the MySQL index when configured)
    reindex rebuild the MySQL index table from the store
    verify  prove the archive: every chain tiles, every object is readable
            and agrees with its metadata (and its MySQL row); --deep decodes
            every record; --against-kafka compares with what Kafka holds
    restore replay archived records into a topic, partition p to p, keeping
            keys, values, headers and timestamps, exactly once whatever
            crashes: run it again with the same arguments to resume

OPTIONS:
    -c, --config FILE      the configuration file (see vendor-config/kafka-store.toml)
        --store URL        a store URL instead of a config file (ls, cat)
        --until-caught-up  run once, outside the consumer group: archive every
                           partition up to the log end seen at start (its last
                           file ends there), then exit
        --topic T          ls: only this topic; locate: the topic
        --partition P      ls: only this partition; locate: the partition
        --offset O         locate: the file holding this offset
        --time T           locate: the first record at or after this RFC 3339 time
        --deep             verify: decode every block and check every record
        --against-kafka    verify: compare every record with what Kafka holds
        --json             verify: one JSON object per line instead of text
        --to-topic T2      restore: the topic to produce into (it must exist
                           with at least as many partitions as T)
        --from-offset O    restore: records at offsets >= O
        --until-offset O   restore: records at offsets < O
        --from-time T      restore: records with timestamps >= T (RFC 3339)
        --until-time T     restore: records with timestamps < T (RFC 3339)
        --brokers LIST     restore: the target cluster (host:port,...) instead
                           of kafka.brokers
        --rate N           restore: produce at most N record bytes per second
        --compression C    restore: none, gzip, snappy, lz4 (default) or zstd
        --dry-run          restore: say what would be produced, produce nothing
        --log-level LEVEL  error, warn, info (default), debug or trace
                           (also KAFKA_STORE_LOG)
    -h, --help             print this help
    -V, --version          print the version

EXIT CODES:
    0  success
    1  runtime failure (kafka, store, spool), or a one-shot run could not
       start a partition; the error line says what failed
    2  usage or configuration error; the error line names the option or key
    3  data problem: a partition stopped (records deleted before they were
       archived, a corrupt batch, a log that does not continue the archive,
       an object in its chain that is not ours) or ls found a hole or a
       history break
    4  locate found nothing archived there

    verify exits 3 when any problem was found; restore exits 2 when the
    target cannot take the records (missing, too few partitions, holding
    records restore did not write)
";

/// Where `ls` and `cat` find the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Config(PathBuf),
    Store(String),
}

/// `kafka-store run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunArgs {
    pub config: PathBuf,
    pub until_caught_up: bool,
}

/// `kafka-store ls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsArgs {
    pub source: Source,
    pub topic: Option<String>,
    pub partition: Option<i32>,
}

/// `kafka-store cat`: an object of a store, or a local file without one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatArgs {
    pub source: Option<Source>,
    pub object: String,
}

/// What `locate` looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Offset(i64),
    /// Milliseconds since the epoch.
    Time(i64),
}

/// `kafka-store locate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocateArgs {
    pub config: PathBuf,
    pub topic: String,
    pub partition: i32,
    pub target: Target,
}

/// `kafka-store verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyArgs {
    pub source: Source,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub deep: bool,
    pub against_kafka: bool,
    pub json: bool,
}

/// Where a restore starts or stops: an offset or a time (ms since the
/// epoch). A start is inclusive, an end exclusive.
pub type Bound = Target;

/// `kafka-store restore`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreArgs {
    pub config: PathBuf,
    pub topic: String,
    pub to_topic: String,
    pub partition: Option<i32>,
    pub from: Option<Bound>,
    pub until: Option<Bound>,
    /// The target cluster, when not the config's brokers.
    pub brokers: Option<Vec<String>>,
    /// Record bytes per second.
    pub rate: Option<u64>,
    /// Kafka batch compression: none, gzip, snappy, lz4, zstd.
    pub compression: Option<String>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(RunArgs),
    Ls(LsArgs),
    Cat(CatArgs),
    /// `kafka-store status --config FILE`.
    Status(PathBuf),
    /// `kafka-store check --config FILE`.
    Check(PathBuf),
    Locate(LocateArgs),
    /// `kafka-store reindex --config FILE`.
    Reindex(PathBuf),
    Verify(VerifyArgs),
    Restore(RestoreArgs),
    Help,
    Version,
}

/// The parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub command: Command,
    pub log_level: Option<String>,
}

/// A usage error, phrased for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0} (see kafka-store --help)")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> Self {
        usage(e.to_string())
    }
}

pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Args, UsageError> {
    let mut parser = lexopt::Parser::from_iter(std::iter::once("kafka-store".into()).chain(args));
    let mut command: Option<String> = None;
    let mut config = None;
    let mut store = None;
    let mut until_caught_up = false;
    let mut topic = None;
    let mut partition = None;
    let mut log_level = None;
    let mut offset = None;
    let mut time = None;
    let mut positional = Vec::new();
    let mut help = false;
    let mut version = false;
    let (mut deep, mut against_kafka, mut json, mut dry_run) = (false, false, false, false);
    let mut to_topic = None;
    let (mut from, mut until) = (None, None);
    let mut brokers = None;
    let mut rate = None;
    let mut compression = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => help = true,
            Short('V') | Long("version") => version = true,
            Short('c') | Long("config") => config = Some(PathBuf::from(parser.value()?)),
            Long("store") => store = Some(parser.value()?.string()?),
            Long("until-caught-up") => until_caught_up = true,
            Long("topic") => topic = Some(parser.value()?.string()?),
            Long("partition") => {
                let v = parser.value()?.string()?;
                partition = Some(v.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(|| {
                    usage(format!("--partition: {v:?} is not a partition number"))
                })?);
            }
            Long("log-level") => log_level = Some(parser.value()?.string()?),
            Long("offset") => offset = Some(offset_arg("--offset", &parser.value()?.string()?)?),
            Long("time") => time = Some(time_arg("--time", parser.value()?.string()?)?),
            Long("deep") => deep = true,
            Long("against-kafka") => against_kafka = true,
            Long("json") => json = true,
            Long("dry-run") => dry_run = true,
            Long("to-topic") => to_topic = Some(parser.value()?.string()?),
            Long(flag @ ("from-offset" | "until-offset" | "from-time" | "until-time")) => {
                let flag = format!("--{flag}");
                let v = parser.value()?.string()?;
                let bound = if flag.ends_with("offset") {
                    Target::Offset(offset_arg(&flag, &v)?)
                } else {
                    Target::Time(time_arg(&flag, v)?)
                };
                let slot = if flag.starts_with("--from") {
                    &mut from
                } else {
                    &mut until
                };
                if slot.replace(bound).is_some() {
                    let which = if flag.starts_with("--from") {
                        "--from-offset or --from-time"
                    } else {
                        "--until-offset or --until-time"
                    };
                    return Err(usage(format!("give one of {which}, once")));
                }
            }
            Long("brokers") => {
                let v = parser.value()?.string()?;
                let list: Vec<String> = v
                    .split(',')
                    .map(|b| b.trim().to_string())
                    .filter(|b| !b.is_empty())
                    .collect();
                if list.is_empty() || list.iter().any(|b| !b.contains(':')) {
                    return Err(usage(format!(
                        "--brokers: {v:?} is not a list of host:port"
                    )));
                }
                brokers = Some(list);
            }
            Long("rate") => {
                let v = parser.value()?.string()?;
                rate = Some(v.parse::<u64>().ok().filter(|r| *r > 0).ok_or_else(|| {
                    usage(format!(
                        "--rate: {v:?} is not a positive number of bytes per second"
                    ))
                })?);
            }
            Long("compression") => compression = Some(parser.value()?.string()?),
            Value(v) if command.is_none() => command = Some(v.string()?),
            Value(v) => positional.push(v.string()?),
            other => return Err(other.unexpected().into()),
        }
    }
    let command = if help {
        Command::Help
    } else if version {
        Command::Version
    } else {
        let source = match (config, store) {
            (Some(_), Some(_)) => return Err(usage("give --config or --store, not both")),
            (Some(c), None) => Some(Source::Config(c)),
            (None, Some(s)) => Some(Source::Store(s)),
            (None, None) => None,
        };
        let no_positional = |cmd: &str| {
            if positional.is_empty() {
                Ok(())
            } else {
                Err(usage(format!(
                    "{cmd}: unexpected argument {:?}",
                    positional[0]
                )))
            }
        };
        // The commands that need a whole config, not just a store.
        let config_of = |cmd: &str, source: Option<Source>| match source {
            Some(Source::Config(config)) => Ok(config),
            _ => Err(usage(format!("{cmd} needs --config FILE"))),
        };
        match command.as_deref() {
            None => return Err(usage("no command given")),
            Some("run") => {
                no_positional("run")?;
                Command::Run(RunArgs {
                    config: config_of("run", source)?,
                    until_caught_up,
                })
            }
            Some("ls") => {
                no_positional("ls")?;
                let source =
                    source.ok_or_else(|| usage("ls needs --config FILE or --store URL"))?;
                Command::Ls(LsArgs {
                    source,
                    topic,
                    partition,
                })
            }
            Some("status") => {
                no_positional("status")?;
                Command::Status(config_of("status", source)?)
            }
            Some("check") => {
                no_positional("check")?;
                Command::Check(config_of("check", source)?)
            }
            Some("locate") => {
                no_positional("locate")?;
                let config = config_of("locate", source)?;
                let topic = topic.ok_or_else(|| usage("locate needs --topic T"))?;
                let partition = partition.ok_or_else(|| usage("locate needs --partition P"))?;
                let target = match (offset, time) {
                    (Some(o), None) => Target::Offset(o),
                    (None, Some(t)) => Target::Time(t),
                    _ => return Err(usage("locate needs one of --offset O or --time T")),
                };
                Command::Locate(LocateArgs {
                    config,
                    topic,
                    partition,
                    target,
                })
            }
            Some("reindex") => {
                no_positional("reindex")?;
                Command::Reindex(config_of("reindex", source)?)
            }
            Some("verify") => {
                no_positional("verify")?;
                let source =
                    source.ok_or_else(|| usage("verify needs --config FILE or --store URL"))?;
                if against_kafka && !matches!(source, Source::Config(_)) {
                    return Err(usage(
                        "verify --against-kafka needs --config FILE (for the brokers)",
                    ));
                }
                Command::Verify(VerifyArgs {
                    source,
                    topic,
                    partition,
                    deep,
                    against_kafka,
                    json,
                })
            }
            Some("restore") => {
                no_positional("restore")?;
                let config = config_of("restore", source)?;
                let topic =
                    topic.ok_or_else(|| usage("restore needs --topic T (the archived topic)"))?;
                let to_topic = to_topic.ok_or_else(|| {
                    usage("restore needs --to-topic T2 (the topic to produce into)")
                })?;
                if let (Some(Target::Offset(a)), Some(Target::Offset(b))) = (from, until)
                    && b <= a
                {
                    return Err(usage(format!(
                        "--until-offset {b} is not after --from-offset {a}"
                    )));
                }
                if let (Some(Target::Time(a)), Some(Target::Time(b))) = (from, until)
                    && b <= a
                {
                    return Err(usage("--until-time is not after --from-time"));
                }
                Command::Restore(RestoreArgs {
                    config,
                    topic,
                    to_topic,
                    partition,
                    from,
                    until,
                    brokers,
                    rate,
                    compression,
                    dry_run,
                })
            }
            Some("cat") => {
                if positional.len() != 1 {
                    return Err(usage("cat takes exactly one object or file"));
                }
                Command::Cat(CatArgs {
                    source,
                    object: positional.remove(0),
                })
            }
            Some(other) => return Err(usage(format!("unknown command {other:?}"))),
        }
    };
    Ok(Args { command, log_level })
}

/// An offset argument: a non-negative integer.
fn offset_arg(flag: &str, v: &str) -> Result<i64, UsageError> {
    v.parse::<i64>()
        .ok()
        .filter(|o| *o >= 0)
        .ok_or_else(|| usage(format!("{flag}: {v:?} is not an offset")))
}

/// A time argument: RFC 3339, to milliseconds since the epoch.
fn time_arg(flag: &str, v: String) -> Result<i64, UsageError> {
    crate::format::timestamp::parse_rfc3339(&v).map_err(|e| usage(format!("{flag}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, UsageError> {
        parse(args.iter().map(|a| a.into()))
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            p(&["run", "--config", "c.toml", "--until-caught-up"])
                .unwrap()
                .command,
            Command::Run(RunArgs {
                config: "c.toml".into(),
                until_caught_up: true
            })
        );
        assert_eq!(
            p(&[
                "ls",
                "--store",
                "file:///a",
                "--topic",
                "t",
                "--partition",
                "3"
            ])
            .unwrap()
            .command,
            Command::Ls(LsArgs {
                source: Source::Store("file:///a".into()),
                topic: Some("t".into()),
                partition: Some(3)
            })
        );
        assert_eq!(
            p(&["cat", "x.avro"]).unwrap().command,
            Command::Cat(CatArgs {
                source: None,
                object: "x.avro".into()
            })
        );
        assert_eq!(
            p(&["verify", "--store", "file:///a", "--deep", "--json"])
                .unwrap()
                .command,
            Command::Verify(VerifyArgs {
                source: Source::Store("file:///a".into()),
                topic: None,
                partition: None,
                deep: true,
                against_kafka: false,
                json: true,
            })
        );
        assert_eq!(
            p(&[
                "restore",
                "-c",
                "c.toml",
                "--topic",
                "a",
                "--to-topic",
                "b",
                "--from-offset",
                "5",
                "--until-time",
                "2024-01-01T00:00:00Z",
                "--brokers",
                "h:1, k:2",
                "--rate",
                "1000",
                "--dry-run"
            ])
            .unwrap()
            .command,
            Command::Restore(RestoreArgs {
                config: "c.toml".into(),
                topic: "a".into(),
                to_topic: "b".into(),
                partition: None,
                from: Some(Target::Offset(5)),
                until: Some(Target::Time(1_704_067_200_000)),
                brokers: Some(vec!["h:1".into(), "k:2".into()]),
                rate: Some(1000),
                compression: None,
                dry_run: true,
            })
        );
        assert_eq!(
            p(&["check", "-c", "c.toml"]).unwrap().command,
            Command::Check("c.toml".into())
        );
        assert_eq!(p(&["--version"]).unwrap().command, Command::Version);
        assert_eq!(p(&["run", "--help"]).unwrap().command, Command::Help);
    }

    #[test]
    fn mistakes_name_what_to_fix() {
        for (args, want) in [
            (&["run"][..], "run needs --config FILE"),
            (&["fly"][..], "unknown command \"fly\""),
            (&["ls"][..], "ls needs --config FILE or --store URL"),
            (&["run", "-c", "a", "--bogus"][..], "--bogus"),
            (
                &["ls", "--store", "x", "--partition", "-1"][..],
                "--partition",
            ),
            (&[][..], "no command given"),
            (
                &["check", "--store", "file:///a"][..],
                "check needs --config FILE",
            ),
            (
                &["verify", "--store", "file:///a", "--against-kafka"][..],
                "--against-kafka needs --config",
            ),
            (&["restore", "-c", "c", "--topic", "a"][..], "--to-topic"),
            (
                &[
                    "restore",
                    "-c",
                    "c",
                    "--from-offset",
                    "1",
                    "--from-time",
                    "2024-01-01T00:00:00Z",
                ][..],
                "give one of --from-offset or --from-time, once",
            ),
            (
                &[
                    "restore",
                    "-c",
                    "c",
                    "--topic",
                    "a",
                    "--to-topic",
                    "b",
                    "--from-offset",
                    "9",
                    "--until-offset",
                    "9",
                ][..],
                "--until-offset 9 is not after --from-offset 9",
            ),
            (
                &["restore", "-c", "c", "--brokers", "nohost"][..],
                "--brokers",
            ),
            (&["restore", "-c", "c", "--rate", "0"][..], "--rate"),
        ] {
            let e = p(args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
