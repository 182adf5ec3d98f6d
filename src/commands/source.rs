//! How a command finds its store: from a config file, or from a URL given
//! with `--store` (with default `[gcs]` and `[s3]` settings).

use crate::cancel::Cancel;
use crate::cli::{Source, usage};
use crate::config::Config;
use crate::store::gcs::GcsOptions;
use crate::store::s3::S3Options;
use crate::store::{self, Store, StoreUrl};

/// The store named by a config file or given directly.
pub fn open_store(source: &Source) -> anyhow::Result<Box<dyn Store>> {
    let (url, gcs, s3) = match source {
        Source::Config(path) => {
            let config = Config::load(path)?;
            (config.store.url, config.store.gcs, config.store.s3)
        }
        Source::Store(url) => (
            StoreUrl::parse(url).map_err(|e| usage(format!("--store: {e}")))?,
            GcsOptions::default(),
            S3Options::default(),
        ),
    };
    Ok(store::open(&url, &gcs, &s3, &Cancel::default())?)
}
