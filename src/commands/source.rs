//! How a command finds its store: from a config file, or from a URL given
//! with `--store` (with default `[gcs]` settings).

use crate::cancel::Cancel;
use crate::cli::{Source, usage};
use crate::config::Config;
use crate::store::gcs::GcsOptions;
use crate::store::{self, Store, StoreUrl};

/// The store named by a config file or given directly.
pub fn open_store(source: &Source) -> anyhow::Result<Box<dyn Store>> {
    let (url, gcs) = match source {
        Source::Config(path) => {
            let config = Config::load(path)?;
            (config.store.url, config.store.gcs)
        }
        Source::Store(url) => (
            StoreUrl::parse(url).map_err(|e| usage(format!("--store: {e}")))?,
            GcsOptions::default(),
        ),
    };
    Ok(store::open(&url, &gcs, &Cancel::default())?)
}
