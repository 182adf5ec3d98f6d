//! How a command finds its store: from a config file, or from a URL given
//! with `--store` (with default `[gcs]` and `[s3]` settings); and the
//! archived partitions a `--topic` / `--partition` selection names.

use anyhow::Context as _;

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

/// The archived partitions of `topic` that `--partition` selects (all of
/// them without it); a usage error when the store holds none of them, so
/// that a mistyped name is not taken for an empty archive.
pub fn archived_partitions(
    store: &dyn Store,
    topic: &str,
    partition: Option<i32>,
) -> anyhow::Result<Vec<i32>> {
    let archived = store
        .partitions(topic)
        .with_context(|| format!("cannot list the archive of {topic}"))?;
    if archived.is_empty() {
        return Err(usage(format!(
            "--topic: {} holds no archive of topic {topic:?}",
            store.url()
        ))
        .into());
    }
    match partition {
        None => Ok(archived),
        Some(p) if archived.contains(&p) => Ok(vec![p]),
        Some(p) => Err(usage(format!(
            "--partition: {} holds no archive of {topic}/{p}",
            store.url()
        ))
        .into()),
    }
}
