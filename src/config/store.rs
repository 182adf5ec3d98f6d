//! `[store]` and `[gcs]`: where the archive lives and where files are built,
//! and how to reach Google Cloud Storage (mapped into the store's own
//! `GcsOptions`).

use std::path::PathBuf;

use serde::Deserialize;

use super::value::{ConfigError, Dur, Size, bytes, invalid, nonzero};
use crate::redact::redact_url;
use crate::store::StoreUrl;
use crate::store::gcs::GcsOptions;
use crate::store::http::HttpOptions;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub url: StoreUrl,
    pub spool_dir: PathBuf,
    /// Settings for gs:// stores (defaults when `[gcs]` is absent).
    pub gcs: GcsOptions,
}

/// `[store]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    url: String,
    spool_dir: PathBuf,
}

/// `[gcs]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGcs {
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

/// Validates `[store]` with its `[gcs]` settings.
pub fn validate(store: RawStore, gcs: Option<RawGcs>) -> Result<StoreConfig, ConfigError> {
    let url = StoreUrl::parse(&store.url).map_err(|e| invalid("store.url", e.to_string()))?;
    Ok(StoreConfig {
        url,
        spool_dir: store.spool_dir,
        gcs: match gcs {
            None => GcsOptions::default(),
            Some(g) => validate_gcs(g)?,
        },
    })
}

fn validate_gcs(g: RawGcs) -> Result<GcsOptions, ConfigError> {
    let d = GcsOptions::default();
    let endpoint = g
        .endpoint
        .unwrap_or(d.endpoint)
        .trim_end_matches('/')
        .to_string();
    if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
        return Err(invalid(
            "gcs.endpoint",
            format!("{endpoint:?} is not an http(s) URL"),
        ));
    }
    let chunk_bytes = bytes(g.chunk_bytes, d.chunk_bytes);
    if chunk_bytes == 0 || !chunk_bytes.is_multiple_of(256 << 10) || chunk_bytes > 1 << 30 {
        return Err(invalid(
            "gcs.chunk_bytes",
            "must be a multiple of 256KiB, at most 1GiB (e.g. \"8MiB\")",
        ));
    }
    if let Some(p) = &g.proxy
        && !(p.starts_with("http://") || p.starts_with("https://"))
    {
        return Err(invalid(
            "gcs.proxy",
            format!("{:?} is not an http(s) URL", redact_url(p)),
        ));
    }
    let request_timeout = g.request_timeout.map_or(d.http.request_timeout, |t| t.0);
    let retry_timeout = g.retry_timeout.map_or(d.retry_timeout, |t| t.0);
    Ok(GcsOptions {
        endpoint,
        credentials: g.credentials.unwrap_or(d.credentials),
        chunk_bytes,
        http: HttpOptions {
            section: "gcs",
            proxy: g.proxy,
            no_proxy: g.no_proxy,
            ca_bundle: g.ca_bundle,
            request_timeout: nonzero("gcs.request_timeout", request_timeout)?,
            retries: Default::default(),
        },
        retry_timeout: nonzero("gcs.retry_timeout", retry_timeout)?,
    })
}
