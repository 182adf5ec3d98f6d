//! `[kafka]`: the brokers, what to archive, where a partition with no
//! archive starts, the consumer group, and the client's timeouts and fetch
//! sizes (mapped into the client's own `ClientConfig`).

use std::time::Duration;

use serde::Deserialize;

use super::value::{ConfigError, Dur, Size, bytes, dur, invalid, positive};
use crate::kafka::assignor::Strategy;
use crate::kafka::{ClientConfig, ConnectionConfig};

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

/// `[kafka]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
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

/// Validates `[kafka]`.
pub fn validate(k: RawKafka) -> Result<KafkaConfig, ConfigError> {
    if k.brokers.is_empty() {
        return Err(invalid(
            "kafka.brokers",
            "list at least one broker as \"host:port\"",
        ));
    }
    for b in &k.brokers {
        let port_ok = b
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(invalid(
                "kafka.brokers",
                format!("{b:?} is not \"host:port\""),
            ));
        }
    }
    if k.topics.is_empty() && k.topic_regex.is_none() {
        return Err(invalid(
            "kafka.topics",
            "list at least one topic to archive (or set kafka.topic_regex)",
        ));
    }
    for t in &k.topics {
        validate_topic(t)?;
    }
    let topic_regex = match &k.topic_regex {
        None => None,
        Some(r) => Some(regex_lite::Regex::new(&format!("^(?:{r})$")).map_err(|e| {
            invalid(
                "kafka.topic_regex",
                format!("{r:?} is not a valid regex: {e}"),
            )
        })?),
    };
    if k.group_id.trim().is_empty() {
        return Err(invalid("kafka.group_id", "must not be empty"));
    }
    let group = group(&k)?;
    let client = client(&k)?;
    Ok(KafkaConfig {
        client,
        group_id: k.group_id,
        topics: k.topics,
        topic_regex,
        start: k.start,
        on_gap: k.on_gap,
        commit_interval: positive("kafka.commit_interval", k.commit_interval, "5s")?,
        group,
    })
}

fn group(k: &RawKafka) -> Result<GroupConfig, ConfigError> {
    let session_timeout = positive("kafka.session_timeout", k.session_timeout, "45s")?;
    let heartbeat_interval = positive("kafka.heartbeat_interval", k.heartbeat_interval, "3s")?;
    if heartbeat_interval >= session_timeout {
        return Err(invalid(
            "kafka.heartbeat_interval",
            "must be shorter than kafka.session_timeout (a third of it is usual)",
        ));
    }
    let assignors = match k.assignor.as_deref().unwrap_or("sticky") {
        "sticky" => vec![Strategy::Sticky, Strategy::Range],
        "range" => vec![Strategy::Range, Strategy::Sticky],
        other => {
            return Err(invalid(
                "kafka.assignor",
                format!("unknown assignor {other:?} (use sticky or range)"),
            ));
        }
    };
    if k.group_instance_id
        .as_deref()
        .is_some_and(|i| i.trim().is_empty())
    {
        return Err(invalid(
            "kafka.group_instance_id",
            "must not be empty when set",
        ));
    }
    Ok(GroupConfig {
        instance_id: k.group_instance_id.clone(),
        session_timeout,
        rebalance_timeout: positive("kafka.rebalance_timeout", k.rebalance_timeout, "60s")?,
        heartbeat_interval,
        metadata_refresh: positive("kafka.metadata_refresh", k.metadata_refresh, "1m")?,
        assignors,
    })
}

fn client(k: &RawKafka) -> Result<ClientConfig, ConfigError> {
    let fetch_max_bytes = bytes(k.fetch_max_bytes, 16 << 20);
    let partition_fetch_bytes = bytes(k.partition_fetch_bytes, 1 << 20);
    if !(1024..=(1 << 30)).contains(&fetch_max_bytes) {
        return Err(invalid(
            "kafka.fetch_max_bytes",
            "must be between 1KiB and 1GiB",
        ));
    }
    if !(1024..=fetch_max_bytes).contains(&partition_fetch_bytes) {
        return Err(invalid(
            "kafka.partition_fetch_bytes",
            "must be between 1KiB and kafka.fetch_max_bytes",
        ));
    }
    let client = ClientConfig {
        brokers: k.brokers.clone(),
        connection: ConnectionConfig {
            client_id: k.client_id.clone(),
            max_response_bytes: (2 * fetch_max_bytes as usize).max(64 << 20),
            connect_timeout: positive("kafka.connect_timeout", k.connect_timeout, "10s")?,
            request_timeout: positive("kafka.request_timeout", k.request_timeout, "30s")?,
        },
        retry_timeout: positive("kafka.retry_timeout", k.retry_timeout, "60s")?,
        retry_backoff: positive("kafka.retry_backoff", k.retry_backoff, "100ms")?,
        retry_backoff_max: positive("kafka.retry_backoff_max", k.retry_backoff_max, "5s")?,
        fetch_max_wait: dur(k.fetch_max_wait, "500ms"),
        fetch_max_bytes: fetch_max_bytes as i32,
        partition_fetch_bytes: partition_fetch_bytes as i32,
    };
    if client.fetch_max_wait >= client.connection.request_timeout {
        return Err(invalid(
            "kafka.fetch_max_wait",
            "must be shorter than kafka.request_timeout",
        ));
    }
    Ok(client)
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
        Err(invalid(
            "kafka.topics",
            format!("{t:?} is not a valid kafka topic name (letters, digits, '.', '_', '-')"),
        ))
    }
}
