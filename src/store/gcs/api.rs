//! The GCS JSON API as the store uses it: the bucket handle and its
//! options, one exchange and the one retry loop around it (`call`), object
//! resources and their metadata, listings. Uploads are `upload`'s; the
//! `Store` methods are in `gcs`'s `mod.rs`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use ureq::http;

use super::auth;
use crate::cancel::Cancel;
use crate::format::avro::{Skipped, Summary};
use crate::format::names::{self, ObjectKey};
pub(super) use crate::store::http::meta::*;
use crate::store::http::{self as web, Backoff, Failure, HttpOptions, Transport, encode};
pub(super) use crate::store::http::{crc32c_b64, not_archive, parse_crc32c, refused, unavailable};
use crate::store::object::{ObjectInfo, StoreError};

/// Largest answer read into memory (object resources, listings, errors).
const MAX_REPLY_BYTES: u64 = 16 << 20;

/// How to reach Google Cloud Storage (`[gcs]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcsOptions {
    /// JSON API endpoint, e.g. `https://storage.googleapis.com`.
    pub endpoint: String,
    /// `none`, `metadata`, or the path of a service-account JSON key.
    pub credentials: String,
    /// Resumable upload chunk: a multiple of 256 KiB.
    pub chunk_bytes: u64,
    pub http: HttpOptions,
    /// How long one operation retries transient failures before reporting them.
    pub retry_timeout: Duration,
}

impl Default for GcsOptions {
    fn default() -> Self {
        GcsOptions {
            endpoint: "https://storage.googleapis.com".into(),
            credentials: "metadata".into(),
            chunk_bytes: 8 << 20,
            http: HttpOptions {
                section: "gcs",
                proxy: None,
                no_proxy: Vec::new(),
                ca_bundle: None,
                request_timeout: Duration::from_secs(120),
                retries: Default::default(),
            },
            retry_timeout: Duration::from_secs(600),
        }
    }
}

/// A Google Cloud Storage bucket (and prefix) holding an archive.
pub struct GcsStore {
    pub(super) bucket: String,
    prefix: String,
    pub(super) endpoint: String,
    agent: ureq::Agent,
    pub(super) tokens: auth::TokenSource,
    pub(super) chunk_bytes: u64,
    pub(super) retry_timeout: Duration,
    pub(super) cancel: Cancel,
    retries: Arc<web::Retries>,
}

/// A request that can be sent again after a failure.
pub(super) struct Request<'a> {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Payload<'a>,
}

pub(super) enum Payload<'a> {
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
pub(super) enum SendError {
    /// Worth another attempt (transport trouble, token endpoint down).
    Transient(Failure, String),
    /// Will not work without a fix (TLS, credentials).
    Final(String),
    /// The spool file to send cannot be read.
    Spool(String, std::io::Error),
}

/// A complete answer.
pub(super) struct Reply {
    pub status: u16,
    headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// Reads an answer whole (bounded).
    fn read(mut r: http::Response<ureq::Body>) -> Result<Reply, ureq::Error> {
        let body = r
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_to_vec()?;
        Ok(Reply {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body,
        })
    }

    /// Reads a failed answer for its message: a body that cannot be read
    /// is left out.
    fn read_failed(r: http::Response<ureq::Body>) -> Reply {
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        Reply::read(r).unwrap_or(Reply {
            status,
            headers,
            body: Vec::new(),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Google's JSON error message, if the body has one.
    pub fn message(&self) -> String {
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
pub(super) struct ObjectResource {
    pub name: String,
    size: Option<String>,
    crc32c: Option<String>,
    #[serde(rename = "md5Hash")]
    md5_hash: Option<String>,
    metadata: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
pub(super) struct ObjectList {
    #[serde(default)]
    pub items: Vec<ObjectResource>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
}

impl GcsStore {
    /// Connects to the bucket and checks (by listing one object under the
    /// prefix) that it exists and that the credentials may read it.
    pub fn open(
        bucket: &str,
        prefix: &str,
        options: &GcsOptions,
        cancel: Cancel,
    ) -> Result<Self, StoreError> {
        let agent = web::agent(&options.http)?;
        let credentials = auth::Credentials::from_config(&options.credentials)
            .map_err(|e| refused("gcs.credentials".into(), e))?;
        let store = GcsStore {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: options.endpoint.clone(),
            tokens: auth::TokenSource::new(credentials, agent.clone()),
            agent,
            chunk_bytes: options.chunk_bytes,
            retry_timeout: options.retry_timeout,
            cancel,
            retries: options.http.retries.clone(),
        };
        store.list_page(&store.folder(""), None, Some(1), None)?;
        Ok(store)
    }

    /// The store's URL, `gs://bucket[/prefix]`.
    pub(super) fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("gs://{}", self.bucket)
        } else {
            format!("gs://{}/{}", self.bucket, self.prefix)
        }
    }

    /// `{prefix}/{rest}` (just `rest` without a prefix).
    pub(super) fn folder(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    pub(super) fn object_name(&self, key: &ObjectKey) -> String {
        self.folder(&key.path())
    }

    pub(super) fn metadata_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            encode(&self.bucket),
            encode(name)
        )
    }

    /// One exchange with the current access token: the answer's head, its
    /// body still to read.
    fn exchange(&self, req: &Request) -> Result<http::Response<ureq::Body>, SendError> {
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
                    SendError::Spool(format!("cannot read spool file {}", path.display()), e)
                })?;
                let mut reader = file.take(*len);
                builder
                    .header("content-length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut reader))
                    .map(|r| self.agent.run(r))
            }
        };
        result
            .map_err(|e| SendError::Final(format!("invalid request: {e}")))?
            .map_err(|e| self.transport_error(e))
    }

    fn transport_error(&self, e: ureq::Error) -> SendError {
        let transport = web::transport(&e);
        let failure = Failure::Transport(transport);
        let why = match transport {
            Transport::Tls => format!(
                "{}: {e} (check gcs.ca_bundle: it must hold the CA that signed the server's certificate)",
                self.endpoint
            ),
            _ => format!("{}: {e}", self.endpoint),
        };
        if web::retriable(failure) {
            SendError::Transient(failure, why)
        } else {
            SendError::Final(why)
        }
    }

    /// One exchange, its answer read whole.
    pub(super) fn send(&self, req: &Request) -> Result<Reply, SendError> {
        Reply::read(self.exchange(req)?).map_err(|e| self.transport_error(e))
    }

    /// Sends until an answer that is not a transient failure arrives, or
    /// `retry_timeout` passes, or the stop flag is set; a 401 refreshes the
    /// token once. The answer's body is left to read (downloads stream it).
    fn call_streaming(
        &self,
        what: &dyn Fn() -> String,
        req: &Request,
    ) -> Result<http::Response<ureq::Body>, StoreError> {
        let deadline = Instant::now() + self.retry_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut refreshed = false;
        loop {
            let (failure, why) = match self.exchange(req) {
                Ok(r) if r.status() == 401 && !refreshed => {
                    self.tokens.invalidate();
                    refreshed = true;
                    continue;
                }
                Ok(r) if !web::retriable(Failure::Status(r.status().as_u16())) => return Ok(r),
                Ok(r) => {
                    let reply = Reply::read_failed(r);
                    (
                        Failure::Status(reply.status),
                        format!("HTTP {}: {}", reply.status, reply.message()),
                    )
                }
                Err(SendError::Transient(failure, why)) => (failure, why),
                Err(SendError::Final(why)) => return Err(refused(what(), why)),
                Err(SendError::Spool(what, cause)) => return Err(StoreError::Io { what, cause }),
            };
            self.pause(what, &mut backoff, deadline, failure, &why)?;
        }
    }

    /// Waits before the next attempt; an error at the deadline or when the
    /// stop flag is set.
    pub(super) fn pause(
        &self,
        what: &dyn Fn() -> String,
        backoff: &mut Backoff,
        deadline: Instant,
        failure: Failure,
        why: &str,
    ) -> Result<(), StoreError> {
        let patience = web::Patience {
            setting: "gcs.retry_timeout",
            timeout: self.retry_timeout,
            retries: &self.retries,
            cancel: &self.cancel,
        };
        web::pause(what, backoff, deadline, failure, why, &patience)
    }

    /// [`call_streaming`](Self::call_streaming) with the answer read whole.
    pub(super) fn call(
        &self,
        what: &dyn Fn() -> String,
        req: &Request,
    ) -> Result<Reply, StoreError> {
        Reply::read(self.call_streaming(what, req)?)
            .map_err(|e| unavailable(what(), format!("{}: {e}", self.endpoint)))
    }

    /// The error for an answer that is not what we needed.
    pub(super) fn refusal(&self, what: String, reply: &Reply) -> StoreError {
        let message = reply.message();
        match reply.status {
            401 | 403 => refused(
                what,
                format!(
                    "HTTP {} for {} on bucket {}: {message}",
                    reply.status,
                    self.tokens.identity(),
                    self.bucket
                ),
            ),
            404 => refused(
                what,
                format!(
                    "bucket {} does not exist (check store.url): {message}",
                    self.bucket
                ),
            ),
            s => refused(what, format!("HTTP {s}: {message}")),
        }
    }

    /// An object's content, streamed (retried like any call).
    pub(super) fn download(&self, key: &ObjectKey) -> Result<ureq::Body, StoreError> {
        let name = self.object_name(key);
        let what = || format!("cannot read gs://{}/{name}", self.bucket);
        let req = Request {
            method: "GET",
            url: format!("{}?alt=media", self.metadata_url(&name)),
            headers: vec![],
            body: Payload::Empty,
        };
        let response = self.call_streaming(&what, &req)?;
        if response.status() == 200 {
            return Ok(response.into_body());
        }
        Err(self.refusal(what(), &Reply::read_failed(response)))
    }

    /// The object resource, or None if there is no such object.
    pub(super) fn get_resource(&self, name: &str) -> Result<Option<ObjectResource>, StoreError> {
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
                .map_err(|e| unavailable(what(), format!("unexpected answer: {e}"))),
            404 => Ok(None),
            _ => Err(self.refusal(what(), &reply)),
        }
    }

    /// An archive object's metadata as ObjectInfo.
    pub(super) fn info(&self, o: &ObjectResource) -> Result<ObjectInfo, StoreError> {
        let what = || format!("gs://{}/{}", self.bucket, o.name);
        let meta = o.metadata.clone().unwrap_or_default();
        let get = |k: &str| -> Result<Option<i64>, StoreError> {
            meta.get(k)
                .map(|v| {
                    v.parse::<i64>().map_err(|_| {
                        not_archive(what(), format!("metadata {k} = {v:?} is not a number"))
                    })
                })
                .transpose()
        };
        let next_offset = get(NEXT_OFFSET)?.ok_or_else(|| {
            not_archive(
                what(),
                "it has no next-offset metadata: not written by kafka-store",
            )
        })?;
        Ok(ObjectInfo {
            summary: Summary {
                next_offset,
                record_count: get(RECORD_COUNT)?.unwrap_or(0) as u64,
                min_timestamp: get(MIN_TIMESTAMP)?,
                max_timestamp: get(MAX_TIMESTAMP)?,
                last_epoch: get(LAST_EPOCH)?.map(|e| e as i32).filter(|e| *e >= 0),
            },
            size: o.size.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0),
            crc32c: o.crc32c.as_deref().and_then(parse_crc32c),
            md5: o.md5_hash.clone(),
            format_version: get(FORMAT_VERSION)?.unwrap_or(1) as u32,
            topic_id: meta
                .get(TOPIC_ID)
                .map(|v| {
                    uuid::Uuid::try_parse(v).map_err(|_| {
                        not_archive(
                            what(),
                            format!("metadata {TOPIC_ID} = {v:?} is not a topic id"),
                        )
                    })
                })
                .transpose()?,
            skipped: meta
                .get(SKIPPED)
                .map(|v| {
                    Skipped::parse(v).ok_or_else(|| {
                        not_archive(
                            what(),
                            format!("metadata {SKIPPED} = {v:?} is not a skip reason"),
                        )
                    })
                })
                .transpose()?,
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
            return Err(self.refusal(what(), &reply));
        }
        serde_json::from_slice(&reply.body)
            .map_err(|e| unavailable(what(), format!("unexpected answer: {e}")))
    }

    /// Every object (and sub-folder) under `prefix`, following pages.
    pub(super) fn list_all(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<ObjectList, StoreError> {
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
    pub(super) fn partition_objects(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<(i64, ObjectResource)>, StoreError> {
        let folder = self.folder(&format!("{}/", names::partition_dir(topic, partition)));
        let mut out: Vec<(i64, ObjectResource)> = self
            .list_all(&folder, Some("/"))?
            .items
            .into_iter()
            .filter_map(|o| {
                let first = names::parse_file_name(o.name.strip_prefix(&folder)?)?;
                Some((first, o))
            })
            .collect();
        out.sort_by_key(|(first, _)| *first);
        Ok(out)
    }
}
