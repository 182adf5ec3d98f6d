//! `[kafka]`: the brokers, what to archive, where a partition with no
//! archive starts, the consumer group, the client's timeouts and fetch
//! sizes, and how connections are secured (TLS, SASL), mapped into the
//! client's own `ClientConfig`.
//!
//! Reads the files the security keys name (the password, PEM files), and
//! nothing else; a password is never accepted inline, and none reaches an
//! error message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::value::{ConfigError, Dur, Size, bytes, dur, invalid, positive};
use crate::kafka::assignor::Strategy;
use crate::kafka::{
    ClientConfig, ConnectionConfig, Mechanism, Password, PemFile, SaslConfig, Security, TlsConfig,
};

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
    security_protocol: Option<String>,
    sasl_mechanism: Option<String>,
    sasl_username: Option<String>,
    sasl_password_file: Option<PathBuf>,
    /// Only to refuse it with a line saying where a password goes.
    sasl_password: Option<toml::Value>,
    ssl_ca_file: Option<PathBuf>,
    ssl_cert_file: Option<PathBuf>,
    ssl_key_file: Option<PathBuf>,
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
    let fetch_max_bytes = bytes(k.fetch_max_bytes, 8 << 20);
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
            security: security(k)?,
        },
        retry_timeout: positive("kafka.retry_timeout", k.retry_timeout, "60s")?,
        retry_backoff: positive("kafka.retry_backoff", k.retry_backoff, "100ms")?,
        retry_backoff_max: positive("kafka.retry_backoff_max", k.retry_backoff_max, "5s")?,
        fetch_max_wait: dur(k.fetch_max_wait, "500ms"),
        fetch_max_bytes: fetch_max_bytes as i32,
        partition_fetch_bytes: partition_fetch_bytes as i32,
        throttling: Default::default(),
    };
    if client.fetch_max_wait >= client.connection.request_timeout {
        return Err(invalid(
            "kafka.fetch_max_wait",
            "must be shorter than kafka.request_timeout",
        ));
    }
    Ok(client)
}

/// `security_protocol` and the keys it needs: TLS settings read from their
/// PEM files, SASL credentials with the password read from its file.
fn security(k: &RawKafka) -> Result<Security, ConfigError> {
    let protocol = k.security_protocol.as_deref().unwrap_or("plaintext");
    let (tls, sasl) = match protocol.to_ascii_lowercase().as_str() {
        "plaintext" => (false, false),
        "ssl" => (true, false),
        "sasl_plaintext" => (false, true),
        "sasl_ssl" => (true, true),
        _ => {
            return Err(invalid(
                "kafka.security_protocol",
                format!(
                    "unknown protocol {protocol:?} (use plaintext, ssl, sasl_plaintext or sasl_ssl)"
                ),
            ));
        }
    };
    let sasl_keys = [
        ("kafka.sasl_mechanism", k.sasl_mechanism.is_some()),
        ("kafka.sasl_username", k.sasl_username.is_some()),
        ("kafka.sasl_password_file", k.sasl_password_file.is_some()),
    ];
    let ssl_keys = [
        ("kafka.ssl_ca_file", k.ssl_ca_file.is_some()),
        ("kafka.ssl_cert_file", k.ssl_cert_file.is_some()),
        ("kafka.ssl_key_file", k.ssl_key_file.is_some()),
    ];
    for (keys, wanted, protocols) in [
        (&sasl_keys, sasl, "\"sasl_plaintext\" or \"sasl_ssl\""),
        (&ssl_keys, tls, "\"ssl\" or \"sasl_ssl\""),
    ] {
        if let Some((key, _)) = keys.iter().find(|(_, set)| *set && !wanted) {
            return Err(invalid(
                key,
                format!(
                    "is used only with kafka.security_protocol = {protocols} (it is {protocol:?})"
                ),
            ));
        }
    }
    if k.sasl_password.is_some() {
        return Err(invalid(
            "kafka.sasl_password",
            "a password is not accepted in the config file: write it to a file readable only by kafka-store and set kafka.sasl_password_file",
        ));
    }
    Ok(Security {
        tls: tls.then(|| tls_config(k)).transpose()?,
        sasl: sasl.then(|| sasl_config(k)).transpose()?,
    })
}

fn sasl_config(k: &RawKafka) -> Result<SaslConfig, ConfigError> {
    let mechanism = match k.sasl_mechanism.as_deref() {
        None => {
            return Err(invalid(
                "kafka.sasl_mechanism",
                "required with a sasl security_protocol (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
            ));
        }
        Some(name) => Mechanism::from_name(name).ok_or_else(|| {
            invalid(
                "kafka.sasl_mechanism",
                format!("unknown mechanism {name:?} (use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"),
            )
        })?,
    };
    let username = match k.sasl_username.as_deref() {
        Some(u) if !u.is_empty() => u.to_string(),
        _ => {
            return Err(invalid(
                "kafka.sasl_username",
                "required (and not empty) with a sasl security_protocol",
            ));
        }
    };
    let path = k.sasl_password_file.as_deref().ok_or_else(|| {
        invalid(
            "kafka.sasl_password_file",
            "required with a sasl security_protocol (a file holding the password)",
        )
    })?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(
            "kafka.sasl_password_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(invalid(
            "kafka.sasl_password_file",
            format!("{} is empty", path.display()),
        ));
    }
    Ok(SaslConfig {
        mechanism,
        username,
        password: Password::new(password.to_string()),
    })
}

fn tls_config(k: &RawKafka) -> Result<TlsConfig, ConfigError> {
    let key_of = |file| match file {
        PemFile::Ca => "kafka.ssl_ca_file",
        PemFile::Cert => "kafka.ssl_cert_file",
        PemFile::Key => "kafka.ssl_key_file",
    };
    let path_of = |file| match file {
        PemFile::Ca => k.ssl_ca_file.as_deref(),
        PemFile::Cert => k.ssl_cert_file.as_deref(),
        PemFile::Key => k.ssl_key_file.as_deref(),
    };
    let read = |file: PemFile, path: &Path| {
        std::fs::read(path)
            .map_err(|e| invalid(key_of(file), format!("cannot read {}: {e}", path.display())))
    };
    let ca = path_of(PemFile::Ca)
        .map(|p| read(PemFile::Ca, p))
        .transpose()?;
    let client = match (path_of(PemFile::Cert), path_of(PemFile::Key)) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((read(PemFile::Cert, cert)?, read(PemFile::Key, key)?)),
        (Some(_), None) => {
            return Err(invalid(
                "kafka.ssl_key_file",
                "required with kafka.ssl_cert_file (the client certificate's private key)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "kafka.ssl_cert_file",
                "required with kafka.ssl_key_file (the client certificate)",
            ));
        }
    };
    TlsConfig::new(
        ca.as_deref(),
        client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
    )
    .map_err(|e| {
        let file = e.file();
        let path = path_of(file).map_or(String::new(), |p| format!("{} ", p.display()));
        invalid(key_of(file), format!("{path}{e}"))
    })
}

/// Kafka's topic name rule; the name also becomes a folder in the store.
fn validate_topic(t: &str) -> Result<(), ConfigError> {
    if crate::format::names::is_topic_name(t) {
        Ok(())
    } else {
        Err(invalid(
            "kafka.topics",
            format!("{t:?} is not a valid kafka topic name (letters, digits, '.', '_', '-')"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[kafka]` with `extra` lines, in a directory holding `pw` (password
    /// `s3cret` and a newline), `crlf` (the same with CRLF), `empty` (a lone
    /// newline) and `junk.pem` (no PEM at all); `@` in `extra` is that
    /// directory.
    fn check(extra: &str) -> Result<KafkaConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("pw", "s3cret\n"),
            ("crlf", "s3cret\r\n"),
            ("empty", "\n"),
            ("junk.pem", "not a certificate\n"),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let text = format!(
            "brokers = [\"127.0.0.1:9092\"]\ntopics = [\"t\"]\n{}",
            extra.replace('@', &dir.path().display().to_string())
        );
        let raw: RawKafka = toml::from_str(&text).map_err(|e| e.to_string())?;
        validate(raw).map_err(|e| {
            let e = e.to_string();
            assert!(!e.contains('\n'), "{e:?} must be one line");
            assert!(!e.contains("s3cret"), "{e:?} shows the password");
            e
        })
    }

    #[test]
    fn security_keys_are_validated_naming_the_key() {
        let sasl = "sasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"u\"\nsasl_password_file = \"@/pw\"\n";
        let cases: &[(String, &str)] = &[
            ("security_protocol = \"tls\"".into(), "kafka.security_protocol: unknown protocol \"tls\""),
            (format!("security_protocol = \"plaintext\"\n{sasl}"), "kafka.sasl_mechanism: is used only with kafka.security_protocol = \"sasl_plaintext\" or \"sasl_ssl\" (it is \"plaintext\")"),
            ("security_protocol = \"ssl\"\nsasl_username = \"u\"".into(), "kafka.sasl_username: is used only with"),
            ("sasl_password_file = \"@/pw\"".into(), "kafka.sasl_password_file: is used only with"),
            ("security_protocol = \"sasl_plaintext\"\nssl_ca_file = \"@/junk.pem\"".into(), "kafka.ssl_ca_file: is used only with kafka.security_protocol = \"ssl\" or \"sasl_ssl\""),
            ("security_protocol = \"sasl_ssl\"\nsasl_username = \"u\"\nsasl_password_file = \"@/pw\"".into(), "kafka.sasl_mechanism: required"),
            ("security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"GSSAPI\"\nsasl_username = \"u\"\nsasl_password_file = \"@/pw\"".into(), "kafka.sasl_mechanism: unknown mechanism \"GSSAPI\""),
            ("security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_password_file = \"@/pw\"".into(), "kafka.sasl_username: required"),
            ("security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"\"\nsasl_password_file = \"@/pw\"".into(), "kafka.sasl_username: required"),
            ("security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"".into(), "kafka.sasl_password_file: required"),
            ("security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nsasl_password_file = \"@/missing\"".into(), "kafka.sasl_password_file: cannot read"),
            ("security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nsasl_password_file = \"@/empty\"".into(), "/empty is empty"),
            (format!("security_protocol = \"sasl_ssl\"\n{sasl}sasl_password = \"s3cret\""), "kafka.sasl_password: a password is not accepted in the config file"),
            ("security_protocol = \"ssl\"\nssl_ca_file = \"@/junk.pem\"".into(), "kafka.ssl_ca_file: "),
            ("security_protocol = \"ssl\"\nssl_ca_file = \"@/missing.pem\"".into(), "kafka.ssl_ca_file: cannot read"),
            ("security_protocol = \"ssl\"\nssl_cert_file = \"@/junk.pem\"".into(), "kafka.ssl_key_file: required with kafka.ssl_cert_file"),
            ("security_protocol = \"ssl\"\nssl_key_file = \"@/junk.pem\"".into(), "kafka.ssl_cert_file: required with kafka.ssl_key_file"),
            ("security_protocol = \"ssl\"\nssl_cert_file = \"@/junk.pem\"\nssl_key_file = \"@/junk.pem\"".into(), "kafka.ssl_cert_file: "),
        ];
        for (extra, want) in cases {
            let got = check(extra)
                .err()
                .unwrap_or_else(|| panic!("{extra} should fail"));
            assert!(
                got.contains(want),
                "{extra}: {got:?} should contain {want:?}"
            );
        }
        let junk = check("security_protocol = \"ssl\"\nssl_ca_file = \"@/junk.pem\"").unwrap_err();
        assert!(
            junk.ends_with("/junk.pem holds no PEM certificate"),
            "{junk}"
        );
    }

    #[test]
    fn security_protocols_map_to_tls_and_sasl() {
        let sasl = "sasl_mechanism = \"SCRAM-SHA-256\"\nsasl_username = \"archiver\"\nsasl_password_file = \"@/pw\"\n";
        let cases = [
            (String::new(), false, false),
            ("security_protocol = \"plaintext\"".into(), false, false),
            ("security_protocol = \"ssl\"".into(), true, false),
            (
                format!("security_protocol = \"sasl_plaintext\"\n{sasl}"),
                false,
                true,
            ),
            (
                format!("security_protocol = \"SASL_SSL\"\n{sasl}"),
                true,
                true,
            ),
        ];
        for (extra, tls, sasl) in cases {
            let security = check(&extra).unwrap().client.connection.security;
            assert_eq!(security.tls.is_some(), tls, "{extra}");
            assert_eq!(security.sasl.is_some(), sasl, "{extra}");
        }
    }

    #[test]
    fn the_password_comes_from_its_file_without_the_newline() {
        for file in ["pw", "crlf"] {
            let config = check(&format!(
                "security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"archiver\"\nsasl_password_file = \"@/{file}\""
            ))
            .unwrap();
            let sasl = config.client.connection.security.sasl.clone().unwrap();
            assert_eq!(sasl.mechanism, Mechanism::Plain);
            assert_eq!(sasl.username, "archiver");
            assert_eq!(sasl.password, Password::new("s3cret".into()));
            let shown = format!("{config:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }
}
