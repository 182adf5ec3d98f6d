//! `gs://BUCKET/PREFIX`: the archive in Google Cloud Storage, over the JSON
//! API with blocking `ureq` (rustls).
//!
//! An object is `{prefix}/{topic}/{partition:06}/{first:020}.avro` with the
//! custom metadata `next-offset`, `record-count`, `min-timestamp`,
//! `max-timestamp`, `format-version`, and GCS's own CRC32C and MD5. Puts are
//! resumable uploads created with `ifGenerationMatch=0`, so an existing
//! object is never replaced (`upload`). Transient failures (408, 429, 5xx,
//! broken connections) are retried with jittered back-off up to
//! `gcs.retry_timeout` (`retry`); other answers are final and reported in one
//! line naming the bucket, the object and the identity used (`auth`).
//!
//! Never logs a credential, a token or a signed assertion.

mod auth;
mod retry;
mod upload;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use ureq::http;

use self::retry::{Backoff, Failure, Transport};
use super::{ObjectInfo, PutOutcome, Store, StoreError, Upload};
use crate::avro::Summary;
use crate::config::GcsConfig;
use crate::interrupt::Interrupt;
use crate::naming::{self, ObjectKey};

/// The object metadata keys (the contract in DESIGN.md).
const NEXT_OFFSET: &str = "next-offset";
const RECORD_COUNT: &str = "record-count";
const MIN_TIMESTAMP: &str = "min-timestamp";
const MAX_TIMESTAMP: &str = "max-timestamp";
const FORMAT_VERSION: &str = "format-version";

/// A Google Cloud Storage bucket (and prefix) holding an archive.
pub struct GcsStore {
    bucket: String,
    prefix: String,
    endpoint: String,
    agent: ureq::Agent,
    tokens: auth::TokenSource,
    chunk_bytes: u64,
    retry_timeout: Duration,
    interrupt: Interrupt,
}

/// A request that can be sent again after a failure.
pub(crate) struct Request<'a> {
    method: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Payload<'a>,
}

pub(crate) enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`, streamed (memory: ureq's buffers).
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
}

/// Why an exchange produced no answer.
pub(crate) enum SendError {
    /// Worth another attempt (transport trouble, token endpoint down).
    Transient(Failure, String),
    /// Will not work without a fix (TLS, credentials, unreadable file).
    Final(String),
}

/// A complete answer.
pub(crate) struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Google's JSON error message, if the body has one.
    fn message(&self) -> String {
        #[derive(Deserialize)]
        struct E {
            error: Option<Inner>,
        }
        #[derive(Deserialize)]
        struct Inner {
            message: Option<String>,
        }
        serde_json::from_slice::<E>(&self.body)
            .ok()
            .and_then(|e| e.error?.message)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect()
            })
            .replace('\n', " ")
    }
}

/// An object resource as the JSON API returns it (fields we use).
#[derive(Deserialize)]
struct ObjectResource {
    name: String,
    size: Option<String>,
    crc32c: Option<String>,
    #[serde(rename = "md5Hash")]
    md5_hash: Option<String>,
    metadata: Option<std::collections::HashMap<String, String>>,
}

#[derive(Deserialize)]
struct ObjectList {
    #[serde(default)]
    items: Vec<ObjectResource>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GCS spells CRC32C as base64 of its big-endian bytes.
fn crc32c_b64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

fn parse_crc32c(b64: &str) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Classifies a ureq error for the retry policy.
fn transport(e: &ureq::Error) -> Transport {
    use ureq::Error as E;
    match e {
        E::Timeout(_) => Transport::Timeout,
        E::Io(_) | E::ConnectionFailed | E::BodyStalled => Transport::Connection,
        E::HostNotFound => Transport::Dns,
        E::Tls(_) | E::Rustls(_) | E::Pem(_) => Transport::Tls,
        _ => Transport::Other,
    }
}

fn retriable(what: String, why: impl std::fmt::Display) -> StoreError {
    StoreError::Retriable {
        what,
        why: why.to_string(),
    }
}

fn fatal(what: String, why: impl std::fmt::Display) -> StoreError {
    StoreError::Fatal {
        what,
        why: why.to_string(),
    }
}

/// Builds the HTTP agent: no redirects (a 308 is "resume incomplete"),
/// statuses as values, timeouts, proxy and trust roots from the config.
fn agent(config: &GcsConfig) -> Result<ureq::Agent, StoreError> {
    let mut builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(config.request_timeout))
        .timeout_connect(Some(config.request_timeout.min(Duration::from_secs(15))))
        .user_agent(format!("kafka-store/{}", env!("CARGO_PKG_VERSION")));
    if let Some(url) = &config.proxy {
        let bad = |e| fatal(format!("gcs.proxy {:?}", crate::config::redact_url(url)), e);
        let parsed = ureq::Proxy::new(url).map_err(bad)?;
        let mut proxy = ureq::Proxy::builder(parsed.protocol())
            .host(parsed.host())
            .port(parsed.port());
        if let Some(user) = parsed.username() {
            proxy = proxy.username(user);
        }
        if let Some(password) = parsed.password() {
            proxy = proxy.password(password);
        }
        for host in &config.no_proxy {
            proxy = proxy.no_proxy(host);
        }
        builder = builder.proxy(Some(proxy.build().map_err(bad)?));
    }
    if let Some(path) = &config.ca_bundle {
        let what = || format!("gcs.ca_bundle {}", path.display());
        let pem = std::fs::read(path).map_err(|e| fatal(what(), e))?;
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| fatal(what(), e))?;
        if certs.is_empty() {
            return Err(fatal(what(), "holds no PEM certificate"));
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build();
        builder = builder.tls_config(tls);
    }
    Ok(builder.build().new_agent())
}

impl GcsStore {
    /// Connects to the bucket and checks (by listing one object under the
    /// prefix) that it exists and that the credentials may read it.
    pub fn open(
        bucket: &str,
        prefix: &str,
        config: &GcsConfig,
        interrupt: Interrupt,
    ) -> Result<Self, StoreError> {
        let agent = agent(config)?;
        let credentials = auth::Credentials::from_config(&config.credentials)
            .map_err(|e| fatal("gcs.credentials".into(), e))?;
        let store = GcsStore {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: config.endpoint.clone(),
            tokens: auth::TokenSource::new(credentials, agent.clone()),
            agent,
            chunk_bytes: config.chunk_bytes,
            retry_timeout: config.retry_timeout,
            interrupt,
        };
        store.list_page(&store.folder(""), None, Some(1), None)?;
        Ok(store)
    }

    /// `{prefix}/{rest}` (just `rest` without a prefix).
    fn folder(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    fn object_name(&self, key: &ObjectKey) -> String {
        self.folder(&key.path())
    }

    fn metadata_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            encode(&self.bucket),
            encode(name)
        )
    }

    /// One exchange with the current access token.
    fn send(&self, req: &Request) -> Result<Reply, SendError> {
        let token = self.tokens.token().map_err(|e| {
            if e.is_retriable() {
                SendError::Transient(Failure::Transport(Transport::Connection), e.to_string())
            } else {
                SendError::Final(e.to_string())
            }
        })?;
        let mut builder = http::Request::builder().method(req.method).uri(&req.url);
        for (k, v) in &req.headers {
            builder = builder.header(*k, v);
        }
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let result = match &req.body {
            Payload::Empty => builder.body(&[][..]).map(|r| self.agent.run(r)),
            Payload::Bytes(b) => builder.body(*b).map(|r| self.agent.run(r)),
            Payload::File { path, offset, len } => {
                let opened = File::open(path).and_then(|mut f| {
                    f.seek(SeekFrom::Start(*offset))?;
                    Ok(f)
                });
                let file = opened.map_err(|e| {
                    SendError::Final(format!("cannot read spool file {}: {e}", path.display()))
                })?;
                let mut reader = file.take(*len);
                builder
                    .header("content-length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut reader))
                    .map(|r| self.agent.run(r))
            }
        };
        let ureq_error = |e: ureq::Error| {
            let failure = Failure::Transport(transport(&e));
            let why = format!("{}: {e}", self.endpoint);
            if retry::retriable(failure) {
                SendError::Transient(failure, why)
            } else {
                SendError::Final(why)
            }
        };
        let mut response = result
            .map_err(|e| SendError::Final(format!("invalid request: {e}")))?
            .map_err(ureq_error)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_vec()
            .map_err(ureq_error)?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends until an answer that is not a transient failure arrives, or
    /// `retry_timeout` passes. A 401 refreshes the token once.
    fn call(&self, what: &dyn Fn() -> String, req: &Request) -> Result<Reply, StoreError> {
        let deadline = Instant::now() + self.retry_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut refreshed = false;
        loop {
            let (failure, why) = match self.send(req) {
                Ok(reply) if reply.status == 401 && !refreshed => {
                    self.tokens.invalidate();
                    refreshed = true;
                    continue;
                }
                Ok(reply) if !retry::retriable(Failure::Status(reply.status)) => return Ok(reply),
                Ok(reply) => (
                    Failure::Status(reply.status),
                    format!("HTTP {}: {}", reply.status, reply.message()),
                ),
                Err(SendError::Transient(failure, why)) => (failure, why),
                Err(SendError::Final(why)) => return Err(fatal(what(), why)),
            };
            let delay = backoff.next_delay();
            if Instant::now() + delay >= deadline {
                return Err(retriable(
                    what(),
                    format!(
                        "{why} (still failing after {}s: gcs.retry_timeout)",
                        self.retry_timeout.as_secs()
                    ),
                ));
            }
            log::debug!("{}: {failure:?} {why}; retrying in {delay:?}", what());
            if !self.interrupt.sleep(delay) {
                return Err(retriable(
                    what(),
                    format!("{why} (interrupted by a stop request)"),
                ));
            }
        }
    }

    /// A final error for an answer that is not what we needed.
    fn refused(&self, what: String, reply: &Reply) -> StoreError {
        let message = reply.message();
        match reply.status {
            401 | 403 => fatal(
                what,
                format!(
                    "HTTP {} for {} on bucket {}: {message}",
                    reply.status,
                    self.tokens.identity(),
                    self.bucket
                ),
            ),
            404 => fatal(
                what,
                format!(
                    "bucket {} does not exist (check store.url): {message}",
                    self.bucket
                ),
            ),
            s => fatal(what, format!("HTTP {s}: {message}")),
        }
    }

    /// The object resource, or None if there is no such object.
    fn get_resource(&self, name: &str) -> Result<Option<ObjectResource>, StoreError> {
        let what = || format!("cannot look up gs://{}/{name}", self.bucket);
        let req = Request {
            method: "GET",
            url: self.metadata_url(name),
            headers: vec![],
            body: Payload::Empty,
        };
        let reply = self.call(&what, &req)?;
        match reply.status {
            200 => serde_json::from_slice(&reply.body)
                .map(Some)
                .map_err(|e| fatal(what(), format!("unexpected answer: {e}"))),
            404 => Ok(None),
            _ => Err(self.refused(what(), &reply)),
        }
    }

    /// An archive object's metadata as ObjectInfo.
    fn info(&self, o: &ObjectResource) -> Result<ObjectInfo, StoreError> {
        let what = || format!("object gs://{}/{}", self.bucket, o.name);
        let meta = o.metadata.clone().unwrap_or_default();
        let get = |k: &str| -> Result<Option<i64>, StoreError> {
            meta.get(k)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| fatal(what(), format!("metadata {k} = {v:?} is not a number")))
                })
                .transpose()
        };
        let next_offset = get(NEXT_OFFSET)?.ok_or_else(|| {
            fatal(
                what(),
                "has no next-offset metadata: not written by kafka-store",
            )
        })?;
        Ok(ObjectInfo {
            summary: Summary {
                next_offset,
                record_count: get(RECORD_COUNT)?.unwrap_or(0) as u64,
                min_timestamp: get(MIN_TIMESTAMP)?,
                max_timestamp: get(MAX_TIMESTAMP)?,
            },
            size: o.size.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0),
            crc32c: o.crc32c.as_deref().and_then(parse_crc32c),
            md5: o.md5_hash.clone(),
            format_version: get(FORMAT_VERSION)?.unwrap_or(1) as u32,
        })
    }

    /// One page of objects.list under `prefix`.
    fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        max: Option<u32>,
        page: Option<&str>,
    ) -> Result<ObjectList, StoreError> {
        let what = || format!("cannot list gs://{}/{prefix}", self.bucket);
        let mut url = format!(
            "{}/storage/v1/b/{}/o?prefix={}",
            self.endpoint,
            encode(&self.bucket),
            encode(prefix)
        );
        if let Some(d) = delimiter {
            url.push_str(&format!("&delimiter={}", encode(d)));
        }
        if let Some(m) = max {
            url.push_str(&format!("&maxResults={m}"));
        }
        if let Some(p) = page {
            url.push_str(&format!("&pageToken={}", encode(p)));
        }
        let req = Request {
            method: "GET",
            url,
            headers: vec![],
            body: Payload::Empty,
        };
        let reply = self.call(&what, &req)?;
        if reply.status != 200 {
            return Err(self.refused(what(), &reply));
        }
        serde_json::from_slice(&reply.body)
            .map_err(|e| fatal(what(), format!("unexpected answer: {e}")))
    }

    /// Every object (and sub-folder) under `prefix`, following pages.
    fn list_all(&self, prefix: &str, delimiter: Option<&str>) -> Result<ObjectList, StoreError> {
        let mut all = ObjectList {
            items: Vec::new(),
            prefixes: Vec::new(),
            next_page_token: None,
        };
        let mut page: Option<String> = None;
        loop {
            let mut list = self.list_page(prefix, delimiter, None, page.as_deref())?;
            all.items.append(&mut list.items);
            all.prefixes.append(&mut list.prefixes);
            match list.next_page_token {
                Some(t) if !t.is_empty() => page = Some(t),
                _ => return Ok(all),
            }
        }
    }

    /// The archive objects of one partition with their metadata, by first offset.
    fn partition_objects(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<(i64, ObjectResource)>, StoreError> {
        let folder = self.folder(&format!("{}/", naming::partition_dir(topic, partition)));
        let mut out: Vec<(i64, ObjectResource)> = self
            .list_all(&folder, Some("/"))?
            .items
            .into_iter()
            .filter_map(|o| {
                let first = naming::parse_file_name(o.name.strip_prefix(&folder)?)?;
                Some((first, o))
            })
            .collect();
        out.sort_by_key(|(first, _)| *first);
        Ok(out)
    }
}

impl Store for GcsStore {
    fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("gs://{}", self.bucket)
        } else {
            format!("gs://{}/{}", self.bucket, self.prefix)
        }
    }

    fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError> {
        self.get_resource(&self.object_name(key))?
            .map(|o| self.info(&o))
            .transpose()
    }

    fn put(&self, upload: &Upload) -> Result<PutOutcome, StoreError> {
        upload::put(self, upload)
    }

    fn list(&self, topic: &str, partition: i32) -> Result<Vec<i64>, StoreError> {
        Ok(self
            .partition_objects(topic, partition)?
            .into_iter()
            .map(|(f, _)| f)
            .collect())
    }

    fn list_infos(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<(i64, ObjectInfo)>, StoreError> {
        self.partition_objects(topic, partition)?
            .into_iter()
            .map(|(first, o)| Ok((first, self.info(&o)?)))
            .collect()
    }

    fn topics(&self) -> Result<Vec<String>, StoreError> {
        let folder = self.folder("");
        let mut out: Vec<String> = self
            .list_all(&folder, Some("/"))?
            .prefixes
            .iter()
            .filter_map(|p| Some(p.strip_prefix(&folder)?.trim_end_matches('/').to_string()))
            .filter(|t| !t.is_empty())
            .collect();
        out.sort();
        Ok(out)
    }

    fn partitions(&self, topic: &str) -> Result<Vec<i32>, StoreError> {
        let folder = self.folder(&format!("{topic}/"));
        let mut out: Vec<i32> = self
            .list_all(&folder, Some("/"))?
            .prefixes
            .iter()
            .filter_map(|p| {
                naming::parse_partition_dir(p.strip_prefix(&folder)?.trim_end_matches('/'))
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    fn open(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>, StoreError> {
        let name = self.object_name(key);
        let what = || format!("cannot read gs://{}/{name}", self.bucket);
        let url = format!("{}?alt=media", self.metadata_url(&name));
        let deadline = Instant::now() + self.retry_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let token = self.tokens.token().map_err(|e| fatal(what(), e))?;
            let mut req = self.agent.get(&url);
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let failure = match req.call() {
                Ok(r) if r.status() == 200 => return Ok(Box::new(r.into_body().into_reader())),
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    let body = r.body_mut().read_to_vec().unwrap_or_default();
                    let reply = Reply {
                        status,
                        headers: r.headers().clone(),
                        body,
                    };
                    if !retry::retriable(Failure::Status(status)) {
                        return Err(self.refused(what(), &reply));
                    }
                    format!("HTTP {status}")
                }
                Err(e) if retry::retriable(Failure::Transport(transport(&e))) => e.to_string(),
                Err(e) => return Err(fatal(what(), e)),
            };
            let delay = backoff.next_delay();
            if Instant::now() + delay >= deadline || !self.interrupt.sleep(delay) {
                return Err(retriable(what(), failure));
            }
        }
    }

    fn object_url(&self, key: &ObjectKey) -> String {
        format!("gs://{}/{}", self.bucket, self.object_name(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded_for_the_json_api() {
        assert_eq!(
            encode("events/000003/00000000000000000042.avro"),
            "events%2F000003%2F00000000000000000042.avro"
        );
        assert_eq!(encode("a b+c"), "a%20b%2Bc");
    }

    #[test]
    fn crc32c_is_base64_of_big_endian_bytes() {
        // The CRC32C of "hello world" is 0xc99465aa; GCS shows it as yZRlqg==.
        assert_eq!(crc32c::crc32c(b"hello world"), 0xc994_65aa);
        assert_eq!(crc32c_b64(0xc994_65aa), "yZRlqg==");
        assert_eq!(parse_crc32c("yZRlqg=="), Some(0xc994_65aa));
        assert_eq!(parse_crc32c("nope"), None);
    }
}
