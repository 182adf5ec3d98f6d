//! The configuration file: TOML with unknown keys refused, parsed into plain
//! validated structs that the rest of the program receives explicitly. One
//! file per section, each with the one function that validates it and maps
//! it into the options of the part it configures (`kafka`, `store`, `index`,
//! `format`); `value` holds what the sections share.
//!
//! Every error is one line naming the key (and the line of the file) to
//! fix. Never touches the network or the store.

use std::path::Path;

use serde::Deserialize;

mod files;
mod kafka;
mod metrics;
mod mysql;
mod pipeline;
mod store;
mod value;

pub use files::FilesConfig;
pub use kafka::{KafkaConfig, OnGap, Start};
pub use metrics::MetricsConfig;
pub use pipeline::PipelineConfig;
pub use store::StoreConfig;
pub use value::ConfigError;

use crate::index::MysqlOptions;

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub store: StoreConfig,
    pub files: FilesConfig,
    pub pipeline: PipelineConfig,
    /// The optional MySQL index.
    pub mysql: Option<MysqlOptions>,
    /// The optional `/metrics` responder.
    pub metrics: Option<MetricsConfig>,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    kafka: kafka::RawKafka,
    store: store::RawStore,
    #[serde(default)]
    files: files::RawFiles,
    #[serde(default)]
    pipeline: pipeline::RawPipeline,
    gcs: Option<store::RawGcs>,
    s3: Option<store::RawS3>,
    mysql: Option<mysql::RawMysql>,
    metrics: Option<metrics::RawMetrics>,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_path_buf(),
            cause: source,
        })?;
        Config::parse(&text).map_err(|e| ConfigError::InFile {
            path: path.to_path_buf(),
            error: Box::new(e),
        })
    }

    /// Parses and validates config text, section by section.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| syntax(text, &e))?;
        Ok(Config {
            kafka: kafka::validate(raw.kafka)?,
            store: store::validate(raw.store, raw.gcs, raw.s3)?,
            files: files::validate(raw.files)?,
            pipeline: pipeline::validate(raw.pipeline)?,
            mysql: raw.mysql.map(mysql::validate).transpose()?,
            metrics: raw.metrics.map(metrics::validate).transpose()?,
        })
    }
}

/// Turns a toml error into one line: `line N: message`, naming the section
/// when the error points at a table header.
fn syntax(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e
        .message()
        .lines()
        .next()
        .unwrap_or("invalid toml")
        .trim()
        .to_string();
    let Some(span) = e.span() else {
        return ConfigError::Syntax {
            line: None,
            message,
        };
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let message = if line.starts_with('[') && message.starts_with("missing field") {
        format!("{message} in {line}")
    } else {
        message
    };
    ConfigError::Syntax {
        line: Some(line_no),
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::format::avro::Codec;
    use crate::format::rotation::Rules;
    use crate::store::StoreUrl;

    const MINIMAL: &str = r#"
[kafka]
brokers = ["127.0.0.1:9092"]
topics = ["events"]

[store]
url = "file:///var/lib/kafka-store/archive"
spool_dir = "/var/lib/kafka-store/spool"
"#;

    fn check_err(text: &str, want: &str) {
        let e = Config::parse(text).expect_err("should fail").to_string();
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
        assert_eq!(
            c.files.rules,
            Rules::new(64 << 20, 0, Duration::from_secs(3600))
        );
        assert_eq!(c.files.block_bytes, 1 << 20);
        assert_eq!(c.files.idle_flush, Duration::from_secs(600));
        assert_eq!(
            c.store.url,
            StoreUrl::File(PathBuf::from("/var/lib/kafka-store/archive"))
        );
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../vendor-config/kafka-store.toml");
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
        if cfg!(feature = "mysql-index") {
            check_err(
                &format!("{MINIMAL}\n[mysql]\nurl = \"mysql://u:secret@db:3306\"\n"),
                "mysql.url: names no database",
            );
            let e = Config::parse(&format!(
                "{MINIMAL}\n[mysql]\nurl = \"mysql://u:secret@db:3306\"\n"
            ))
            .err()
            .unwrap()
            .to_string();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn metrics_are_off_without_the_section_and_checked_with_it() {
        assert_eq!(Config::parse(MINIMAL).unwrap().metrics, None);
        let with = |section: &str| format!("{MINIMAL}\n[metrics]\n{section}\n");
        let m = Config::parse(&with("listen = \"127.0.0.1:9100\""))
            .unwrap()
            .metrics
            .unwrap();
        assert_eq!(m.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(m.max_partition_labels, 1000);
        let m = Config::parse(&with("listen = \"[::]:0\"\nmax_partition_labels = 2"))
            .unwrap()
            .metrics
            .unwrap();
        assert_eq!((m.listen.port(), m.max_partition_labels), (0, 2));
        check_err(&with("listen = \"localhost:9100\""), "metrics.listen");
        check_err(&with("max_partition_labels = 2"), "missing field `listen`");
        check_err(
            &with("listen = \"127.0.0.1:9100\"\nmax_labels = 2"),
            "unknown field `max_labels`",
        );
    }

    #[test]
    fn gcs_settings_are_read() {
        let text = format!(
            "{MINIMAL}\n[gcs]\nendpoint = \"http://127.0.0.1:9023/\"\ncredentials = \"none\"\nchunk_bytes = \"512KiB\"\n"
        );
        let gcs = Config::parse(&text).unwrap().store.gcs;
        assert_eq!(gcs.endpoint, "http://127.0.0.1:9023");
        assert_eq!(gcs.chunk_bytes, 512 << 10);
    }
}
