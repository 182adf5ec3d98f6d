//! The `kafka-store` binary: parse the command line, load the config, run
//! the command, map the outcome to an exit code. Errors are printed once,
//! on one line.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use kafka_store::cli::{self, Command, Source, UsageError};
use kafka_store::config::{Config, ConfigError, GcsConfig, StoreUrl};
use kafka_store::index::{self, Index, IndexError};
use kafka_store::interrupt::Interrupt;
use kafka_store::kafka::{Client, TopicPartition};
use kafka_store::naming::ObjectKey;
use kafka_store::pipeline::{self, RunOptions};
use kafka_store::timestamp::format_millis;
use kafka_store::{cat, locate, logging, ls, status, store};

/// Exit codes, as documented in `--help`.
#[derive(Clone, Copy)]
enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    Data = 3,
    NotFound = 4,
}

fn main() -> ExitCode {
    let code = match run() {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => Exit::Ok,
        Err(e) => {
            let code = if e.is::<UsageError>() || e.is::<ConfigError>() {
                Exit::Usage
            } else {
                Exit::Failure
            };
            eprintln!("kafka-store: {}", one_line(&e));
            code
        }
    };
    ExitCode::from(code as u8)
}

/// Output cut short by a closed pipe (`kafka-store cat … | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn run() -> anyhow::Result<Exit> {
    let args = cli::parse(std::env::args_os().skip(1))?;
    let level = args
        .log_level
        .or_else(|| std::env::var("KAFKA_STORE_LOG").ok())
        .unwrap_or_else(|| "info".into());
    logging::init(&level).map_err(|e| UsageError(format!("--log-level: {e}")))?;
    match args.command {
        Command::Help => {
            print!("{}", cli::HELP);
            Ok(Exit::Ok)
        }
        Command::Version => {
            println!("kafka-store {}", env!("CARGO_PKG_VERSION"));
            Ok(Exit::Ok)
        }
        Command::Run {
            config,
            until_caught_up,
        } => {
            let config = Config::load(&config)?;
            let interrupt = Interrupt::default();
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                // A second signal ends the process at once.
                signal_hook::flag::register_conditional_shutdown(signal, 1, interrupt.flag())
                    .context("cannot install signal handlers")?;
                signal_hook::flag::register(signal, interrupt.flag())
                    .context("cannot install signal handlers")?;
            }
            let outcome = pipeline::run(&config, RunOptions { until_caught_up }, interrupt)?;
            log::info!("stopped; peak memory {}", peak_rss());
            if outcome.halted.is_empty() {
                Ok(Exit::Ok)
            } else {
                for (tp, why) in &outcome.halted {
                    eprintln!("kafka-store: {tp} was not archived: {why}");
                }
                Ok(Exit::Data)
            }
        }
        Command::Ls {
            source,
            topic,
            partition,
        } => {
            let store = open_store(&source)?;
            let mut out = std::io::stdout().lock();
            let tiles = ls::ls(store.as_ref(), topic.as_deref(), partition, &mut out)?;
            out.flush()?;
            Ok(if tiles { Exit::Ok } else { Exit::Data })
        }
        Command::Status { config } => {
            let config = Config::load(&config)?;
            let store = store::open(&config.store.url, &config.store.gcs, &Interrupt::default())?;
            let mut client = Client::connect(config.kafka.client.clone())
                .map_err(anyhow::Error::new)
                .with_context(|| {
                    format!(
                        "cannot reach kafka brokers {}",
                        config.kafka.client.brokers.join(",")
                    )
                })?;
            let mut out = std::io::stdout().lock();
            status::status(&config, &mut client, store.as_ref(), &mut out)?;
            out.flush()?;
            Ok(Exit::Ok)
        }
        Command::Locate {
            config,
            topic,
            partition,
            target,
        } => {
            let config = Config::load(&config)?;
            let store = store::open(&config.store.url, &config.store.gcs, &Interrupt::default())?;
            let mut index = match config.mysql.as_ref().map(Index::open) {
                None => None,
                Some(Ok(index)) => Some(index),
                Some(Err(IndexError::Unavailable(why))) => {
                    log::warn!("{why}; locating through the store instead");
                    None
                }
                Some(Err(fatal)) => return Err(fatal.into_anyhow()),
            };
            let tp = TopicPartition::new(&topic, partition);
            let found = locate::locate(store.as_ref(), index.as_mut(), &tp, target)?;
            let Some(found) = found else {
                eprintln!("kafka-store: nothing of {tp} is archived there");
                return Ok(Exit::NotFound);
            };
            let mut out = std::io::stdout().lock();
            match found.record {
                None => writeln!(
                    out,
                    "{}\tfirst {}\tnext {}",
                    found.object_url, found.key.first, found.next
                )?,
                Some(r) => writeln!(
                    out,
                    "{}\toffset {}\ttimestamp {} ({})",
                    found.object_url,
                    r.offset,
                    r.timestamp,
                    format_millis(r.timestamp)
                )?,
            }
            Ok(Exit::Ok)
        }
        Command::Reindex { config } => {
            let config = Config::load(&config)?;
            let Some(mysql) = &config.mysql else {
                return Err(
                    ConfigError("reindex: the config has no [mysql] section".into()).into(),
                );
            };
            let store = store::open(&config.store.url, &config.store.gcs, &Interrupt::default())?;
            let mut index = Index::open(mysql).map_err(IndexError::into_anyhow)?;
            let mut out = std::io::stdout().lock();
            let (written, deleted) = index::reindex(&mut index, store.as_ref(), &mut out)?;
            writeln!(
                out,
                "# {written} row(s) written or checked, {deleted} row(s) without an object deleted"
            )?;
            Ok(Exit::Ok)
        }
        Command::Cat { source, object } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match source {
                None => {
                    let path = object.strip_prefix("file://").unwrap_or(&object);
                    let file =
                        std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
                    cat::cat(std::io::BufReader::new(file), path, &mut out)?;
                }
                Some(source) => {
                    let store = open_store(&source)?;
                    let name = object
                        .strip_prefix(&store.url())
                        .unwrap_or(&object)
                        .trim_start_matches('/');
                    let key = ObjectKey::parse(name).ok_or_else(|| {
                        UsageError(format!(
                            "cat: {object:?} is not an archive object name (topic/000000/00000000000000000000.avro)"
                        ))
                    })?;
                    let url = store.object_url(&key);
                    cat::cat(store.open(&key)?, &url, &mut out)?;
                }
            }
            out.flush()?;
            Ok(Exit::Ok)
        }
    }
}

/// The process's peak resident set size, from `/proc/self/status` (VmHWM).
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} MiB", kib as f64 / 1024.0))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The store named by a config file or given directly (with default
/// `[gcs]` settings).
fn open_store(source: &Source) -> anyhow::Result<Box<dyn store::Store>> {
    let (url, gcs) = match source {
        Source::Config(path) => {
            let config = Config::load(path)?;
            (config.store.url, config.store.gcs)
        }
        Source::Store(url) => (
            StoreUrl::parse(url).map_err(|e| ConfigError(format!("--store: {}", e.0)))?,
            GcsConfig::default(),
        ),
    };
    Ok(store::open(&url, &gcs, &Interrupt::default())?)
}
