//! `[store]`, `[gcs]` and `[s3]`: where the archive lives and where files
//! are built, and how to reach Google Cloud Storage and S3 (mapped into the
//! stores' own `GcsOptions` and `S3Options`).

use std::path::PathBuf;

use serde::Deserialize;

use super::value::{ConfigError, Dur, Size, bytes, invalid, nonzero};
use crate::cancel::Cancel;
use crate::redact::redact_url;
use crate::store::gcs::GcsOptions;
use crate::store::http::HttpOptions;
use crate::store::s3::{MIN_PART_BYTES, S3Options};
use crate::store::{self, Store, StoreError, StoreUrl};

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub url: StoreUrl,
    pub spool_dir: PathBuf,
    /// Settings for gs:// stores (defaults when `[gcs]` is absent).
    pub gcs: GcsOptions,
    /// Settings for s3:// stores (defaults when `[s3]` is absent); its
    /// retries are counted with the GCS ones (one `/metrics` series).
    pub s3: S3Options,
}

impl StoreConfig {
    /// Opens the configured store, checking that it can be used; `cancel`
    /// ends its waits and retries early.
    pub fn open(&self, cancel: &Cancel) -> Result<Box<dyn Store>, StoreError> {
        store::open(&self.url, &self.gcs, &self.s3, cancel)
    }
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

/// `[s3]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    credentials: Option<String>,
    part_bytes: Option<Size>,
    require_create_only: Option<bool>,
    proxy: Option<String>,
    #[serde(default)]
    no_proxy: Vec<String>,
    ca_bundle: Option<PathBuf>,
    request_timeout: Option<Dur>,
    retry_timeout: Option<Dur>,
}

/// Validates `[store]` with its `[gcs]` and `[s3]` settings.
pub fn validate(
    store: RawStore,
    gcs: Option<RawGcs>,
    s3: Option<RawS3>,
) -> Result<StoreConfig, ConfigError> {
    let url = StoreUrl::parse(&store.url).map_err(|e| invalid("store.url", e.to_string()))?;
    let gcs = match gcs {
        None => GcsOptions::default(),
        Some(g) => validate_gcs(g)?,
    };
    let mut s3 = match s3 {
        None => S3Options::default(),
        Some(s) => validate_s3(s)?,
    };
    s3.http.retries = gcs.http.retries.clone();
    Ok(StoreConfig {
        url,
        spool_dir: store.spool_dir,
        gcs,
        s3,
    })
}

fn http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{:?} is not an http(s) URL", redact_url(url)),
        ))
    }
}

/// Whether the host of `scheme://host[:port]` is an IP address.
fn is_ip_endpoint(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split(':').next().unwrap_or(""),
    };
    host.parse::<std::net::IpAddr>().is_ok()
}

fn validate_s3(s: RawS3) -> Result<S3Options, ConfigError> {
    let d = S3Options::default();
    let endpoint = s.endpoint.map(|e| e.trim_end_matches('/').to_string());
    if let Some(e) = &endpoint {
        http_url("s3.endpoint", e)?;
        if e.split_once("://")
            .is_some_and(|(_, rest)| rest.contains('/'))
        {
            return Err(invalid(
                "s3.endpoint",
                format!("{e:?} has a path: give scheme, host and port only"),
            ));
        }
    }
    let path_style = s.path_style.unwrap_or(d.path_style);
    if let Some(e) = &endpoint
        && !path_style
        && is_ip_endpoint(e)
    {
        return Err(invalid(
            "s3.endpoint",
            format!(
                "{e:?} is an IP address, which takes no bucket name in front of it: set s3.path_style = true"
            ),
        ));
    }
    let region = s.region.unwrap_or(d.region);
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(
            "s3.region",
            format!("{region:?} is not a region name (e.g. \"eu-west-1\")"),
        ));
    }
    let credentials = s.credentials.unwrap_or(d.credentials);
    if credentials.is_empty() {
        return Err(invalid(
            "s3.credentials",
            "must be \"env\", \"instance\" or the path of an AWS credentials file",
        ));
    }
    let part_bytes = bytes(s.part_bytes, d.part_bytes);
    if !(MIN_PART_BYTES..=5 << 30).contains(&part_bytes) {
        return Err(invalid(
            "s3.part_bytes",
            "must be at least 5MiB and at most 5GiB (e.g. \"16MiB\")",
        ));
    }
    if let Some(p) = &s.proxy {
        http_url("s3.proxy", p)?;
    }
    let request_timeout = s.request_timeout.map_or(d.http.request_timeout, |t| t.0);
    let retry_timeout = s.retry_timeout.map_or(d.retry_timeout, |t| t.0);
    Ok(S3Options {
        endpoint,
        region,
        path_style,
        credentials,
        part_bytes,
        http: HttpOptions {
            section: "s3",
            proxy: s.proxy,
            no_proxy: s.no_proxy,
            ca_bundle: s.ca_bundle,
            request_timeout: nonzero("s3.request_timeout", request_timeout)?,
            retries: Default::default(),
        },
        retry_timeout: nonzero("s3.retry_timeout", retry_timeout)?,
        require_create_only: s.require_create_only.unwrap_or(d.require_create_only),
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
    if let Some(p) = &g.proxy {
        http_url("gcs.proxy", p)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<S3Options, ConfigError> {
        let raw: RawS3 = toml::from_str(text).map_err(|e| invalid("s3", e.to_string()))?;
        validate_s3(raw)
    }

    #[test]
    fn s3_settings_are_read_with_their_defaults() {
        let d = parse("").unwrap();
        assert_eq!(d, S3Options::default());
        assert_eq!(
            (d.part_bytes, d.region.as_str(), d.path_style),
            (16 << 20, "us-east-1", false)
        );
        let s = parse(
            "endpoint = \"http://127.0.0.1:9024/\"\nregion = \"eu-west-1\"\npath_style = true\n\
             credentials = \"/etc/kafka-store/aws\"\npart_bytes = \"5MiB\"\nretry_timeout = \"30s\"\n",
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9024"));
        assert_eq!(
            (s.region.as_str(), s.path_style, s.part_bytes),
            ("eu-west-1", true, 5 << 20)
        );
        assert_eq!(s.credentials, "/etc/kafka-store/aws");
        assert_eq!(s.retry_timeout.as_secs(), 30);
        // A host name takes the bucket in front of it.
        assert!(
            !parse("endpoint = \"http://minio.internal:9000\"")
                .unwrap()
                .path_style
        );
    }

    #[test]
    fn bad_s3_settings_name_their_key() {
        for (text, key) in [
            ("part_bytes = \"4MiB\"", "s3.part_bytes"),
            ("part_bytes = \"6GiB\"", "s3.part_bytes"),
            ("endpoint = \"s3.example\"", "s3.endpoint"),
            ("endpoint = \"https://h/p\"", "s3.endpoint"),
            (
                "endpoint = \"http://10.0.0.5:9000\"",
                "set s3.path_style = true",
            ),
            (
                "endpoint = \"http://[::1]:9000\"",
                "set s3.path_style = true",
            ),
            ("region = \"EU West\"", "s3.region"),
            ("credentials = \"\"", "s3.credentials"),
            ("proxy = \"socks://u:pw@p\"", "s3.proxy"),
            ("retry_timeout = \"0s\"", "s3.retry_timeout"),
            ("regoin = \"x\"", "unknown field `regoin`"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
            assert!(!e.contains("pw"), "{e}");
        }
    }
}
