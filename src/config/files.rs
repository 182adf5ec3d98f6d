//! `[files]`: the codec and how archive files are cut (blocks, rotation,
//! idle flush).

use std::time::Duration;

use serde::Deserialize;

use super::value::{ConfigError, Dur, Size, bytes, invalid, positive};
use crate::format::avro::Codec;
use crate::format::rotation::Rules;

#[derive(Clone, Copy, Debug)]
pub struct FilesConfig {
    pub codec: Codec,
    /// Encoded bytes per Avro block.
    pub block_bytes: usize,
    /// Where files are cut: size, count, time (a pure function of the records).
    pub rules: Rules,
    /// A caught-up partition with nothing new for this long closes its file.
    pub idle_flush: Duration,
}

/// `[files]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFiles {
    codec: Option<String>,
    compression_level: Option<i32>,
    max_file_bytes: Option<Size>,
    #[serde(default)]
    max_file_records: u64,
    block_bytes: Option<Size>,
    rotate_interval: Option<Dur>,
    idle_flush: Option<Dur>,
}

/// Validates `[files]`.
pub fn validate(f: RawFiles) -> Result<FilesConfig, ConfigError> {
    let codec_name = f.codec.as_deref().unwrap_or("deflate");
    let codec = match (codec_name, f.compression_level) {
        ("deflate", level) => {
            let level = level.unwrap_or(6);
            if !(0..=9).contains(&level) {
                return Err(invalid("files.compression_level", "deflate takes 0 to 9"));
            }
            Codec::Deflate {
                level: level as u32,
            }
        }
        ("zstandard", level) => {
            let level = level.unwrap_or(3);
            if !(1..=22).contains(&level) {
                return Err(invalid(
                    "files.compression_level",
                    "zstandard takes 1 to 22",
                ));
            }
            Codec::Zstandard { level }
        }
        ("snappy" | "null", Some(_)) => {
            return Err(invalid(
                "files.compression_level",
                format!("codec {codec_name} has no level; remove the key"),
            ));
        }
        ("snappy", None) => Codec::Snappy,
        ("null", None) => Codec::Null,
        (other, _) => {
            return Err(invalid(
                "files.codec",
                format!("unknown codec {other:?} (use deflate, zstandard, snappy or null)"),
            ));
        }
    };
    let block_bytes = bytes(f.block_bytes, 1 << 20);
    let max_file_bytes = bytes(f.max_file_bytes, 64 << 20);
    if !(1024..=64 << 20).contains(&block_bytes) {
        return Err(invalid(
            "files.block_bytes",
            "must be between 1KiB and 64MiB",
        ));
    }
    if max_file_bytes == 0 {
        return Err(invalid("files.max_file_bytes", "must be greater than zero"));
    }
    Ok(FilesConfig {
        codec,
        block_bytes: block_bytes as usize,
        rules: Rules::new(
            max_file_bytes,
            f.max_file_records,
            positive("files.rotate_interval", f.rotate_interval, "1h")?,
        ),
        idle_flush: positive("files.idle_flush", f.idle_flush, "10m")?,
    })
}
