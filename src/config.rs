//! The configuration file: TOML with unknown keys refused, parsed into plain
//! validated structs that the rest of the program receives explicitly.
//!
//! Owns parsing, defaults and validation; every error is one line naming the
//! key (and the line of the file) to fix. Never touches the network or the
//! store.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::assignor::Strategy;
use crate::avro::Codec;
use crate::interrupt::Interrupt;
use crate::kafka::{ClientConfig, ConnectionConfig};

/// A configuration problem, already phrased for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Where a partition with no archive starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    Earliest,
    Latest,
    Error,
}

/// What to do when the resume position is below the log start (records
/// deleted by retention before they were archived).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnGap {
    Stop,
    Skip,
}

/// A store location, parsed from `store.url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file://DIR`: a local or mounted directory.
    File(PathBuf),
    /// `gs://BUCKET/PREFIX`: Google Cloud Storage; the prefix may be empty.
    Gcs { bucket: String, prefix: String },
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(err(format!("store url {url:?} names no directory")));
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=222).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
                })
                && bucket.as_bytes()[0].is_ascii_alphanumeric();
            if !bucket_ok {
                return Err(err(format!(
                    "store url {url:?}: {bucket:?} is not a valid bucket name (lowercase letters, digits, '-', '_', '.')"
                )));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
                return Err(err(format!(
                    "store url {url:?}: the prefix must be a plain path"
                )));
            }
            return Ok(StoreUrl::Gcs {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        Err(err(format!(
            "store url {url:?} is not a store url (expected file:///path/to/dir or gs://bucket/prefix)"
        )))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::File(p) => write!(f, "file://{}", p.display()),
            StoreUrl::Gcs { bucket, prefix } if prefix.is_empty() => write!(f, "gs://{bucket}"),
            StoreUrl::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
        }
    }
}

/// How to reach Google Cloud Storage (`[gcs]`, only for gs:// stores).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcsConfig {
    /// JSON API endpoint, e.g. `https://storage.googleapis.com`.
    pub endpoint: String,
    /// `none`, `metadata`, or the path of a service-account JSON key.
    pub credentials: String,
    /// Resumable upload chunk: a multiple of 256 KiB.
    pub chunk_bytes: u64,
    /// HTTPS proxy URL; None = the HTTPS_PROXY/ALL_PROXY environment (with NO_PROXY).
    pub proxy: Option<String>,
    /// Hosts that bypass `proxy`.
    pub no_proxy: Vec<String>,
    /// PEM file whose certificates replace the built-in web roots.
    pub ca_bundle: Option<PathBuf>,
    /// Upper bound of one HTTP exchange (one chunk, one lookup).
    pub request_timeout: Duration,
    /// How long one operation retries transient failures before reporting them.
    pub retry_timeout: Duration,
}

impl Default for GcsConfig {
    fn default() -> Self {
        GcsConfig {
            endpoint: "https://storage.googleapis.com".into(),
            credentials: "metadata".into(),
            chunk_bytes: 8 << 20,
            proxy: None,
            no_proxy: Vec::new(),
            ca_bundle: None,
            request_timeout: Duration::from_secs(120),
            retry_timeout: Duration::from_secs(600),
        }
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub store: StoreConfig,
    pub files: FilesConfig,
    pub pipeline: PipelineConfig,
    /// The optional MySQL index.
    pub mysql: Option<MysqlConfig>,
}

/// `[mysql]`: where archived files are indexed.
#[derive(Clone)]
pub struct MysqlConfig {
    /// `mysql://user:password@host:port/database`
    pub url: String,
    pub table: String,
    /// Create the table if it is missing.
    pub create_table: bool,
    pub connect_timeout: Duration,
    /// Upper bound of one statement.
    pub request_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct KafkaConfig {
    pub client: ClientConfig,
    pub group_id: String,
    /// Topics named one by one.
    pub topics: Vec<String>,
    /// Topics matched by name (whole name), found in the cluster's metadata.
    pub topic_regex: Option<regex_lite::Regex>,
    pub start: Start,
    pub on_gap: OnGap,
    /// How often stored positions are committed to the group.
    pub commit_interval: Duration,
    pub group: GroupConfig,
}

/// How this process takes part in the consumer group.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// Static membership (`group.instance.id`): a restart within the
    /// session timeout keeps the partitions without a rebalance.
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// How often topic metadata is checked for new topics or partitions.
    pub metadata_refresh: Duration,
    /// Preferred assignor first.
    pub assignors: Vec<Strategy>,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub url: StoreUrl,
    pub spool_dir: PathBuf,
    /// Settings for gs:// stores (defaults when `[gcs]` is absent).
    pub gcs: GcsConfig,
}

#[derive(Clone, Debug)]
pub struct FilesConfig {
    pub codec: Codec,
    pub max_file_bytes: u64,
    /// 0 = no limit.
    pub max_file_records: u64,
    pub block_bytes: usize,
    pub rotate_interval: Duration,
    pub idle_flush: Duration,
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Threads that decode batches and write Avro files.
    pub encoders: usize,
    /// Threads that upload finished files to the store.
    pub uploaders: usize,
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    kafka: RawKafka,
    store: RawStore,
    #[serde(default)]
    files: RawFiles,
    #[serde(default)]
    pipeline: RawPipeline,
    gcs: Option<RawGcs>,
    mysql: Option<RawMysql>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMysql {
    url: String,
    table: Option<String>,
    #[serde(default = "yes")]
    create_table: bool,
    connect_timeout: Option<Dur>,
    request_timeout: Option<Dur>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGcs {
    endpoint: Option<String>,
    credentials: Option<String>,
    chunk_bytes: Option<Size>,
    proxy: Option<String>,
    #[serde(default)]
    no_proxy: Vec<String>,
    ca_bundle: Option<PathBuf>,
    request_timeout: Option<Dur>,
    retry_timeout: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: Vec<String>,
    #[serde(default = "default_group")]
    group_id: String,
    #[serde(default)]
    topics: Vec<String>,
    topic_regex: Option<String>,
    group_instance_id: Option<String>,
    session_timeout: Option<Dur>,
    rebalance_timeout: Option<Dur>,
    heartbeat_interval: Option<Dur>,
    metadata_refresh: Option<Dur>,
    assignor: Option<String>,
    #[serde(default = "default_start")]
    start: Start,
    #[serde(default = "default_on_gap")]
    on_gap: OnGap,
    #[serde(default = "default_client_id")]
    client_id: String,
    connect_timeout: Option<Dur>,
    request_timeout: Option<Dur>,
    retry_timeout: Option<Dur>,
    retry_backoff: Option<Dur>,
    retry_backoff_max: Option<Dur>,
    fetch_max_wait: Option<Dur>,
    fetch_max_bytes: Option<Size>,
    partition_fetch_bytes: Option<Size>,
    commit_interval: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: String,
    spool_dir: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    codec: Option<String>,
    compression_level: Option<i32>,
    max_file_bytes: Option<Size>,
    #[serde(default)]
    max_file_records: u64,
    block_bytes: Option<Size>,
    rotate_interval: Option<Dur>,
    idle_flush: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    encoders: Option<usize>,
    uploaders: Option<usize>,
}

fn default_group() -> String {
    "kafka-store".into()
}
fn default_client_id() -> String {
    "kafka-store".into()
}
fn default_start() -> Start {
    Start::Earliest
}
fn default_on_gap() -> OnGap {
    OnGap::Stop
}

/// A duration written as `"500ms"`, `"10s"`, `"10m"`, `"1h"`, `"1d"` or a
/// sum such as `"1h30m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

/// A byte count: an integer, or a string such as `"64MiB"`, `"512KiB"`, `"1GiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(Size(n)),
            Either::S(s) => parse_size(&s).map(Size).map_err(de::Error::custom),
        }
    }
}

/// Parses `"500ms"`, `"10s"`, `"1h30m"` …
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (write e.g. \"500ms\", \"10s\", \"5m\", \"1h\")");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86400),
            _ => return Err(bad()),
        };
        total += part;
    }
    Ok(total)
}

/// Parses `"64MiB"`, `"512KiB"`, `"1GiB"`, `"1000"` …
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid size {s:?} (write bytes, or e.g. \"512KiB\", \"64MiB\", \"1GiB\")");
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let mult = match t[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read config file {}: {e}", path.display())))?;
        Config::parse(&text).map_err(|e| err(format!("config file {}: {}", path.display(), e.0)))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| err(one_line(text, &e)))?;
        raw.validate()
    }
}

/// Turns a toml error into one line: `line N: message`, naming the section
/// when the error points at a table header.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .lines()
        .next()
        .unwrap_or("invalid toml")
        .trim()
        .to_string();
    let Some(span) = e.span() else {
        return message;
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    if line.starts_with('[') && message.starts_with("missing field") {
        format!("line {line_no}: {message} in {line}")
    } else {
        format!("line {line_no}: {message}")
    }
}

fn positive(name: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(err(format!("{name}: must be greater than zero")))
    } else {
        Ok(d)
    }
}

/// The value of an optional duration key, or its default.
fn dur(v: Option<Dur>, default: &str) -> Duration {
    v.map_or_else(|| parse_duration(default).expect("valid default"), |d| d.0)
}

/// The value of an optional size key, or its default.
fn bytes(v: Option<Size>, default: u64) -> u64 {
    v.map_or(default, |s| s.0)
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let k = self.kafka;
        if k.brokers.is_empty() {
            return Err(err(
                "kafka.brokers: list at least one broker as \"host:port\"",
            ));
        }
        for b in &k.brokers {
            let port_ok = b
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !port_ok {
                return Err(err(format!("kafka.brokers: {b:?} is not \"host:port\"")));
            }
        }
        if k.topics.is_empty() && k.topic_regex.is_none() {
            return Err(err(
                "kafka.topics: list at least one topic to archive (or set kafka.topic_regex)",
            ));
        }
        let topic_regex = match &k.topic_regex {
            None => None,
            Some(r) => Some(regex_lite::Regex::new(&format!("^(?:{r})$")).map_err(|e| {
                err(format!(
                    "kafka.topic_regex: {r:?} is not a valid regex: {e}"
                ))
            })?),
        };
        let session_timeout = positive("kafka.session_timeout", dur(k.session_timeout, "45s"))?;
        let heartbeat_interval =
            positive("kafka.heartbeat_interval", dur(k.heartbeat_interval, "3s"))?;
        if heartbeat_interval >= session_timeout {
            return Err(err(
                "kafka.heartbeat_interval: must be shorter than kafka.session_timeout (a third of it is usual)",
            ));
        }
        let assignors = match k.assignor.as_deref().unwrap_or("sticky") {
            "sticky" => vec![Strategy::Sticky, Strategy::Range],
            "range" => vec![Strategy::Range, Strategy::Sticky],
            other => {
                return Err(err(format!(
                    "kafka.assignor: unknown assignor {other:?} (use sticky or range)"
                )));
            }
        };
        if k.group_instance_id
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return Err(err("kafka.group_instance_id: must not be empty when set"));
        }
        let group = GroupConfig {
            instance_id: k.group_instance_id.clone(),
            session_timeout,
            rebalance_timeout: positive(
                "kafka.rebalance_timeout",
                dur(k.rebalance_timeout, "60s"),
            )?,
            heartbeat_interval,
            metadata_refresh: positive("kafka.metadata_refresh", dur(k.metadata_refresh, "1m"))?,
            assignors,
        };
        for t in &k.topics {
            validate_topic(t)?;
        }
        if k.group_id.trim().is_empty() {
            return Err(err("kafka.group_id: must not be empty"));
        }
        let fetch_max_bytes = bytes(k.fetch_max_bytes, 16 << 20);
        let partition_fetch_bytes = bytes(k.partition_fetch_bytes, 1 << 20);
        if !(1024..=(1 << 30)).contains(&fetch_max_bytes) {
            return Err(err("kafka.fetch_max_bytes: must be between 1KiB and 1GiB"));
        }
        if !(1024..=fetch_max_bytes).contains(&partition_fetch_bytes) {
            return Err(err(
                "kafka.partition_fetch_bytes: must be between 1KiB and kafka.fetch_max_bytes",
            ));
        }
        let client = ClientConfig {
            brokers: k.brokers,
            connection: ConnectionConfig {
                client_id: k.client_id,
                max_response_bytes: (2 * fetch_max_bytes as usize).max(64 << 20),
                connect_timeout: positive("kafka.connect_timeout", dur(k.connect_timeout, "10s"))?,
                request_timeout: positive("kafka.request_timeout", dur(k.request_timeout, "30s"))?,
            },
            retry_timeout: positive("kafka.retry_timeout", dur(k.retry_timeout, "60s"))?,
            retry_backoff: positive("kafka.retry_backoff", dur(k.retry_backoff, "100ms"))?,
            retry_backoff_max: positive("kafka.retry_backoff_max", dur(k.retry_backoff_max, "5s"))?,
            fetch_max_wait: dur(k.fetch_max_wait, "500ms"),
            fetch_max_bytes: fetch_max_bytes as i32,
            partition_fetch_bytes: partition_fetch_bytes as i32,
            interrupt: Interrupt::default(),
        };
        if client.fetch_max_wait >= client.connection.request_timeout {
            return Err(err(
                "kafka.fetch_max_wait: must be shorter than kafka.request_timeout",
            ));
        }
        let kafka = KafkaConfig {
            client,
            group_id: k.group_id,
            topics: k.topics,
            topic_regex,
            start: k.start,
            on_gap: k.on_gap,
            commit_interval: positive("kafka.commit_interval", dur(k.commit_interval, "5s"))?,
            group,
        };

        let url =
            StoreUrl::parse(&self.store.url).map_err(|e| err(format!("store.url: {}", e.0)))?;
        let gcs = match self.gcs {
            None => GcsConfig::default(),
            Some(g) => g.validate()?,
        };
        let store = StoreConfig {
            url,
            spool_dir: self.store.spool_dir,
            gcs,
        };

        let f = self.files;
        let codec_name = f.codec.as_deref().unwrap_or("deflate");
        let codec = match (codec_name, f.compression_level) {
            ("deflate", level) => {
                let level = level.unwrap_or(6);
                if !(0..=9).contains(&level) {
                    return Err(err("files.compression_level: deflate takes 0 to 9"));
                }
                Codec::Deflate {
                    level: level as u32,
                }
            }
            ("zstandard", level) => {
                let level = level.unwrap_or(3);
                if !(1..=22).contains(&level) {
                    return Err(err("files.compression_level: zstandard takes 1 to 22"));
                }
                Codec::Zstandard { level }
            }
            ("snappy" | "null", Some(_)) => {
                return Err(err(format!(
                    "files.compression_level: codec {codec_name} has no level; remove the key"
                )));
            }
            ("snappy", None) => Codec::Snappy,
            ("null", None) => Codec::Null,
            (other, _) => {
                return Err(err(format!(
                    "files.codec: unknown codec {other:?} (use deflate, zstandard, snappy or null)"
                )));
            }
        };
        let block_bytes = bytes(f.block_bytes, 1 << 20);
        let max_file_bytes = bytes(f.max_file_bytes, 64 << 20);
        if !(1024..=64 << 20).contains(&block_bytes) {
            return Err(err("files.block_bytes: must be between 1KiB and 64MiB"));
        }
        if max_file_bytes == 0 {
            return Err(err("files.max_file_bytes: must be greater than zero"));
        }
        let files = FilesConfig {
            codec,
            max_file_bytes,
            max_file_records: f.max_file_records,
            block_bytes: block_bytes as usize,
            rotate_interval: positive("files.rotate_interval", dur(f.rotate_interval, "1h"))?,
            idle_flush: positive("files.idle_flush", dur(f.idle_flush, "10m"))?,
        };

        let p = self.pipeline;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let encoders = match p.encoders.unwrap_or(0) {
            0 => cores,
            n => n,
        };
        let uploaders = p.uploaders.unwrap_or(2);
        if encoders > 256 || uploaders == 0 || uploaders > 256 {
            return Err(err(
                "pipeline: encoders must be 0 (one per core) to 256, uploaders 1 to 256",
            ));
        }
        let mysql = match self.mysql {
            None => None,
            Some(m) => Some(m.validate()?),
        };
        Ok(Config {
            kafka,
            store,
            files,
            mysql,
            pipeline: PipelineConfig {
                encoders,
                uploaders,
            },
        })
    }
}

/// A URL with the password of its user info replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((cred, host)) => {
            let user = cred.split_once(':').map_or(cred, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

impl fmt::Debug for MysqlConfig {
    /// The URL's password is not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("url", &redact_url(&self.url))
            .field("table", &self.table)
            .field("create_table", &self.create_table)
            .finish()
    }
}

impl RawMysql {
    fn validate(self) -> Result<MysqlConfig, ConfigError> {
        if !cfg!(feature = "mysql-index") {
            return Err(err(
                "mysql: this build has no MySQL index (build with the mysql-index feature, or remove [mysql])",
            ));
        }
        if !self.url.starts_with("mysql://") {
            return Err(err(
                "mysql.url: must look like mysql://user:password@host:3306/database",
            ));
        }
        let table = self.table.unwrap_or_else(|| "kafka_store_files".into());
        let plain = !table.is_empty()
            && table.len() <= 64
            && table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain {
            return Err(err(format!(
                "mysql.table: {table:?} must be letters, digits and '_'"
            )));
        }
        Ok(MysqlConfig {
            url: self.url,
            table,
            create_table: self.create_table,
            connect_timeout: positive("mysql.connect_timeout", dur(self.connect_timeout, "10s"))?,
            request_timeout: positive("mysql.request_timeout", dur(self.request_timeout, "30s"))?,
        })
    }
}

impl RawGcs {
    fn validate(self) -> Result<GcsConfig, ConfigError> {
        let d = GcsConfig::default();
        let endpoint = self
            .endpoint
            .unwrap_or(d.endpoint)
            .trim_end_matches('/')
            .to_string();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(err(format!(
                "gcs.endpoint: {endpoint:?} is not an http(s) URL"
            )));
        }
        let chunk_bytes = bytes(self.chunk_bytes, d.chunk_bytes);
        if chunk_bytes == 0 || !chunk_bytes.is_multiple_of(256 << 10) || chunk_bytes > 1 << 30 {
            return Err(err(
                "gcs.chunk_bytes: must be a multiple of 256KiB, at most 1GiB (e.g. \"8MiB\")",
            ));
        }
        if let Some(p) = &self.proxy
            && !(p.starts_with("http://") || p.starts_with("https://"))
        {
            return Err(err(format!(
                "gcs.proxy: {:?} is not an http(s) URL",
                redact_url(p)
            )));
        }
        let request_timeout = self.request_timeout.map_or(d.request_timeout, |x| x.0);
        let retry_timeout = self.retry_timeout.map_or(d.retry_timeout, |x| x.0);
        Ok(GcsConfig {
            endpoint,
            credentials: self.credentials.unwrap_or(d.credentials),
            chunk_bytes,
            proxy: self.proxy,
            no_proxy: self.no_proxy,
            ca_bundle: self.ca_bundle,
            request_timeout: positive("gcs.request_timeout", request_timeout)?,
            retry_timeout: positive("gcs.retry_timeout", retry_timeout)?,
        })
    }
}

/// Kafka's topic name rule; the name also becomes a folder in the store.
fn validate_topic(t: &str) -> Result<(), ConfigError> {
    let ok = !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "kafka.topics: {t:?} is not a valid kafka topic name (letters, digits, '.', '_', '-')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[kafka]
brokers = ["127.0.0.1:9092"]
topics = ["events"]

[store]
url = "file:///var/lib/kafka-store/archive"
spool_dir = "/var/lib/kafka-store/spool"
"#;

    fn check_err(text: &str, want: &str) {
        let e = Config::parse(text).expect_err("should fail").0;
        assert!(e.contains(want), "{e:?} should contain {want:?}");
        assert!(!e.contains('\n'), "{e:?} must be one line");
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.kafka.group_id, "kafka-store");
        assert_eq!(c.kafka.start, Start::Earliest);
        assert_eq!(c.kafka.on_gap, OnGap::Stop);
        assert_eq!(c.files.codec, Codec::Deflate { level: 6 });
        assert_eq!(c.files.max_file_bytes, 64 << 20);
        assert_eq!(c.files.max_file_records, 0);
        assert_eq!(c.files.block_bytes, 1 << 20);
        assert_eq!(c.files.rotate_interval, Duration::from_secs(3600));
        assert_eq!(c.files.idle_flush, Duration::from_secs(600));
        assert_eq!(
            c.store.url,
            StoreUrl::File(PathBuf::from("/var/lib/kafka-store/archive"))
        );
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../vendor-config/kafka-store.toml");
        Config::parse(text).unwrap();
    }

    #[test]
    fn errors_are_one_line_and_name_the_key() {
        check_err(
            &MINIMAL.replace("topics =", "topicz ="),
            "line 4: unknown field `topicz`",
        );
        check_err(
            &format!("{MINIMAL}\n[gcz]\nendpoint = \"x\"\n"),
            "unknown field `gcz`",
        );
        check_err(
            &MINIMAL.replace("brokers = [\"127.0.0.1:9092\"]\n", ""),
            "missing field `brokers` in [kafka]",
        );
        check_err(
            &MINIMAL.replace("127.0.0.1:9092", "localhost"),
            "kafka.brokers",
        );
        check_err(
            &format!("{MINIMAL}\n[files]\ncodec = \"lz5\"\n"),
            "files.codec: unknown codec \"lz5\"",
        );
        check_err(
            &format!("{MINIMAL}\n[files]\nrotate_interval = \"1 hour\"\n"),
            "invalid duration \"1 hour\"",
        );
        check_err(
            &format!("{MINIMAL}\n[files]\nmax_file_bytes = \"64 MB!\"\n"),
            "invalid size",
        );
        check_err(
            &MINIMAL.replace("start", "x").replace(
                "topics = [\"events\"]",
                "topics = [\"events\"]\nstart = \"middle\"",
            ),
            "unknown variant `middle`",
        );
        check_err(
            &MINIMAL.replace("file:///var", "gs://Bad_Bucket/var"),
            "store.url",
        );
        check_err(
            &format!("{MINIMAL}\n[gcs]\nchunk_bytes = \"100KiB\"\n"),
            "gcs.chunk_bytes",
        );
        check_err(
            &format!("{MINIMAL}\n[gcs]\nendpointz = \"x\"\n"),
            "unknown field `endpointz`",
        );
        check_err(
            &MINIMAL.replace("\"events\"", "\"bad/topic\""),
            "kafka.topics",
        );
    }

    #[test]
    fn gs_urls_parse_into_bucket_and_prefix() {
        assert_eq!(
            StoreUrl::parse("gs://my-bucket/archive/kafka/").unwrap(),
            StoreUrl::Gcs {
                bucket: "my-bucket".into(),
                prefix: "archive/kafka".into()
            }
        );
        let bare = StoreUrl::parse("gs://my-bucket").unwrap();
        assert_eq!(bare.to_string(), "gs://my-bucket");
        assert!(StoreUrl::parse("gs://x").is_err());
        assert!(StoreUrl::parse("gs://bucket/../up").is_err());
        let text = format!(
            "{MINIMAL}\n[gcs]\nendpoint = \"http://127.0.0.1:9023/\"\ncredentials = \"none\"\nchunk_bytes = \"512KiB\"\n"
        );
        let gcs = Config::parse(&text).unwrap().store.gcs;
        assert_eq!(gcs.endpoint, "http://127.0.0.1:9023");
        assert_eq!(gcs.chunk_bytes, 512 << 10);
    }

    #[test]
    fn passwords_in_urls_are_not_shown() {
        assert_eq!(
            redact_url("mysql://u:p@ss@h:3306/db"),
            "mysql://u:***@h:3306/db"
        );
        assert_eq!(
            redact_url("http://user:secret@proxy:3128"),
            "http://user:***@proxy:3128"
        );
        assert_eq!(redact_url("http://proxy:3128"), "http://proxy:3128");
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        for bad in ["", "10", "ms", "1x", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
    }
}
