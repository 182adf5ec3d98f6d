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
    kafka-store locate --config FILE --topic T --partition P (--offset O | --time RFC3339)
    kafka-store reindex --config FILE
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
    locate  the archive file holding an offset, or the first archived record
            at or after a time (uses the MySQL index when configured)
    reindex rebuild the MySQL index table from the store

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(RunArgs),
    Ls(LsArgs),
    Cat(CatArgs),
    /// `kafka-store status --config FILE`.
    Status(PathBuf),
    Locate(LocateArgs),
    /// `kafka-store reindex --config FILE`.
    Reindex(PathBuf),
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
            Long("offset") => {
                let v = parser.value()?.string()?;
                offset = Some(
                    v.parse::<i64>()
                        .ok()
                        .filter(|o| *o >= 0)
                        .ok_or_else(|| usage(format!("--offset: {v:?} is not an offset")))?,
                );
            }
            Long("time") => {
                let v = parser.value()?.string()?;
                time = Some(
                    crate::format::timestamp::parse_rfc3339(&v)
                        .map_err(|e| usage(format!("--time: {e}")))?,
                );
            }
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
        ] {
            let e = p(args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
