//! `[pipeline]`: how many encoder and uploader threads run.

use serde::Deserialize;

use super::value::{ConfigError, invalid};

#[derive(Clone, Copy, Debug)]
pub struct PipelineConfig {
    /// Threads that decode batches and write Avro files.
    pub encoders: usize,
    /// Threads that upload finished files to the store.
    pub uploaders: usize,
}

/// `[pipeline]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    encoders: Option<usize>,
    uploaders: Option<usize>,
}

/// Validates `[pipeline]`: 0 encoders means one per core.
pub fn validate(p: RawPipeline) -> Result<PipelineConfig, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let encoders = match p.encoders.unwrap_or(0) {
        0 => cores,
        n => n,
    };
    let uploaders = p.uploaders.unwrap_or(2);
    if encoders > 256 || uploaders == 0 || uploaders > 256 {
        return Err(invalid(
            "pipeline",
            "encoders must be 0 (one per core) to 256, uploaders 1 to 256",
        ));
    }
    Ok(PipelineConfig {
        encoders,
        uploaders,
    })
}
