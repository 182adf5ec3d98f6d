//! The S3 REST API as the store uses it: the bucket handle and its
//! options, addressing (path-style or virtual-hosted), one signed exchange
//! and the one retry loop around it (`run`), HEAD metadata, listings and
//! the little XML the answers carry. Uploads are `upload`'s; the `Store`
//! methods are in `s3`'s `mod.rs`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ureq::http;

use super::creds::Provider;
use super::sign;
use crate::cancel::Cancel;
use crate::format::avro::{Skipped, Summary};
use crate::format::names::{self, ObjectKey};
/// The object metadata keys, sent as `x-amz-meta-*` (the GCS store's names).
pub(super) use crate::store::http::meta::*;
use crate::store::http::{self as web, Backoff, Failure, HttpOptions, Transport, encode};
pub(super) use crate::store::http::{crc32c_b64, not_archive, parse_crc32c, refused, unavailable};
use crate::store::object::{ObjectInfo, StoreError};

/// Largest answer read into memory (listings, errors).
const MAX_REPLY_BYTES: u64 = 16 << 20;
/// The smallest part S3 accepts (but the last).
pub const MIN_PART_BYTES: u64 = 5 << 20;

/// How to reach an S3 or S3-compatible store (`[s3]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Options {
    /// `https://host[:port]`; None = AWS's `https://s3.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    pub region: String,
    /// `https://host/bucket/key` instead of `https://bucket.host/key`.
    pub path_style: bool,
    /// `env`, `instance`, or the path of an AWS credentials file.
    pub credentials: String,
    /// Files above this go up as multipart uploads of parts this size.
    pub part_bytes: u64,
    pub http: HttpOptions,
    /// How long one operation retries transient failures before reporting them.
    pub retry_timeout: Duration,
    /// `run` refuses a store that overwrites objects despite
    /// `If-None-Match: *` (a one-writer archive may turn this off).
    pub require_create_only: bool,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            credentials: "env".into(),
            part_bytes: 16 << 20,
            require_create_only: true,
            http: HttpOptions {
                section: "s3",
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

/// An S3 bucket (and prefix) holding an archive.
pub struct S3Store {
    pub(super) bucket: String,
    prefix: String,
    /// `http` or `https`.
    scheme: String,
    /// `host[:port]` of the endpoint.
    host: String,
    path_style: bool,
    region: String,
    agent: ureq::Agent,
    pub(super) creds: Provider,
    pub(super) part_bytes: u64,
    pub(super) retry_timeout: Duration,
    pub(super) cancel: Cancel,
    retries: Arc<web::Retries>,
    pub(super) require_create_only: bool,
}

/// A request that can be sent again after a failure.
pub(super) struct Request<'a> {
    pub method: &'static str,
    /// The object; None for the bucket itself.
    pub key: Option<&'a str>,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Payload<'a>,
}

pub(super) enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`, streamed, with their SHA-256 (hex).
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        sha256: &'a str,
    },
}

/// Why an exchange produced no answer.
enum SendError {
    Transient(Failure, String),
    Final(String),
    Spool(String, std::io::Error),
}

/// A complete answer.
pub(super) struct Reply {
    pub status: u16,
    headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
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

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The S3 error code of an `<Error>` body.
    pub fn code(&self) -> Option<String> {
        let text = self.text();
        text.contains("<Error>")
            .then(|| tag(&text, "Code"))
            .flatten()
    }

    /// `Code: Message` of an error body (or the start of the body).
    pub fn message(&self) -> String {
        let text = self.text();
        match (tag(&text, "Code"), tag(&text, "Message")) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c,
            _ => text.chars().take(200).collect(),
        }
        .replace('\n', " ")
    }
}

/// What the retry loop does with an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The caller reads it (success or a final refusal).
    Answer,
    /// Transient: wait and send again.
    Retry(Failure),
    /// The keys expired: fetch new ones and send again (once).
    Refresh,
}

/// Classifies an answer by status and S3 error code: throttling
/// (`SlowDown`), 408/429/5xx and S3's transient codes (also inside a 200,
/// as CompleteMultipartUpload may send them) are retried; expired session
/// keys are refreshed; everything else is final.
pub(super) fn verdict(status: u16, code: Option<&str>) -> Verdict {
    match code {
        Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout") => {
            Verdict::Retry(Failure::Status(if status < 300 { 500 } else { status }))
        }
        Some("ExpiredToken" | "TokenRefreshRequired") => Verdict::Refresh,
        _ if web::retriable(Failure::Status(status)) => Verdict::Retry(Failure::Status(status)),
        _ => Verdict::Answer,
    }
}

/// An answer: a success whose body is still to read, or one read whole.
pub(super) enum Answer {
    Stream(http::Response<ureq::Body>),
    Read(Reply),
}

/// The text of the first `<tag>…</tag>`, XML entities decoded.
pub(super) fn tag(xml: &str, name: &str) -> Option<String> {
    tags(xml, name).into_iter().next().map(unescape)
}

/// The insides of every `<tag>…</tag>` (not nested in themselves).
pub(super) fn tags<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// One page of a listing: keys, common prefixes, the continuation token.
type Page = (Vec<String>, Vec<String>, Option<String>);

/// Scheme and `host[:port]` of an endpoint URL (no path allowed).
pub fn split_endpoint(endpoint: &str) -> Option<(String, String)> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let host = rest.trim_end_matches('/');
    let ok = matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/');
    ok.then(|| (scheme.to_string(), host.to_string()))
}

impl S3Store {
    /// Connects to the bucket and checks (by listing one object under the
    /// prefix) that it exists and that the keys may read it.
    pub fn open(
        bucket: &str,
        prefix: &str,
        options: &S3Options,
        cancel: Cancel,
    ) -> Result<Self, StoreError> {
        let agent = web::agent(&options.http)?;
        let creds = Provider::new(&options.credentials)
            .map_err(|e| refused(e.to_string(), "cannot be used"))?;
        let endpoint = options
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", options.region));
        let (scheme, host) = split_endpoint(&endpoint).ok_or_else(|| {
            refused(
                format!("s3.endpoint {endpoint:?}"),
                "is not an http(s) URL without a path",
            )
        })?;
        let store = S3Store {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            scheme,
            host,
            path_style: options.path_style,
            region: options.region.clone(),
            agent,
            creds,
            part_bytes: options.part_bytes,
            retry_timeout: options.retry_timeout,
            cancel,
            retries: options.http.retries.clone(),
            require_create_only: options.require_create_only,
        };
        store.list_page(&store.folder(""), None, Some(1), None)?;
        Ok(store)
    }

    /// The store's URL, `s3://bucket[/prefix]`.
    pub(super) fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
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

    /// Host and encoded path of a request for `key` (None: the bucket).
    fn address(&self, key: Option<&str>) -> (String, String) {
        let key_path = key
            .map(|k| k.split('/').map(encode).collect::<Vec<_>>().join("/"))
            .unwrap_or_default();
        if self.path_style {
            let path = match key {
                Some(_) => format!("/{}/{key_path}", encode(&self.bucket)),
                None => format!("/{}", encode(&self.bucket)),
            };
            (self.host.clone(), path)
        } else {
            (
                format!("{}.{}", self.bucket, self.host),
                format!("/{key_path}"),
            )
        }
    }

    /// One signed exchange: the answer's head, its body still to read.
    fn exchange(&self, req: &Request) -> Result<http::Response<ureq::Body>, SendError> {
        let keys = self.creds.keys().map_err(|e| {
            if e.retriable {
                SendError::Transient(Failure::Transport(Transport::Connection), e.to_string())
            } else {
                SendError::Final(e.to_string())
            }
        })?;
        let (host, path) = self.address(req.key);
        let payload_hash = match &req.body {
            Payload::Empty => sign::sha256_hex(b""),
            Payload::Bytes(b) => sign::sha256_hex(b),
            Payload::File { sha256, .. } => sha256.to_string(),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut headers = req.headers.clone();
        headers.push(("host".into(), host.clone()));
        headers.push(("x-amz-date".into(), sign::amz_date(now)));
        headers.push(("x-amz-content-sha256".into(), payload_hash.clone()));
        if let Some(t) = &keys.session_token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        let key = sign::Key {
            access_key_id: &keys.access_key_id,
            secret: &keys.secret,
            region: &self.region,
            service: "s3",
        };
        let signed = sign::Request {
            method: req.method,
            path: &path,
            query: &req.query,
            headers: &headers,
            payload_hash: &payload_hash,
        };
        let authorization = sign::authorization(&key, &signed, &sign::amz_date(now));
        let query = sign::canonical_query(&req.query);
        let url = if query.is_empty() {
            format!("{}://{host}{path}", self.scheme)
        } else {
            format!("{}://{host}{path}?{query}", self.scheme)
        };
        let mut builder = http::Request::builder().method(req.method).uri(&url);
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            builder = builder.header(k.as_str(), v.as_str());
        }
        builder = builder.header("authorization", authorization);
        let result = match &req.body {
            Payload::Empty => builder.body(&[][..]).map(|r| self.agent.run(r)),
            Payload::Bytes(b) => builder.body(*b).map(|r| self.agent.run(r)),
            Payload::File {
                path, offset, len, ..
            } => {
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
        let endpoint = format!("{}://{}", self.scheme, self.host);
        let why = match transport {
            Transport::Tls => format!(
                "{endpoint}: {e} (check s3.ca_bundle: it must hold the CA that signed the server's certificate)"
            ),
            _ => format!("{endpoint}: {e}"),
        };
        if web::retriable(failure) {
            SendError::Transient(failure, why)
        } else {
            SendError::Final(why)
        }
    }

    /// THE retry loop: sends until an answer that is not transient arrives,
    /// `retry_timeout` passes, or the stop flag is set. With `stream`, a
    /// success comes back unread (downloads).
    pub(super) fn run(
        &self,
        what: &dyn Fn() -> String,
        req: &Request,
        stream: bool,
    ) -> Result<Answer, StoreError> {
        let deadline = Instant::now() + self.retry_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut refreshed = false;
        loop {
            let (failure, why) = match self.exchange(req) {
                Err(SendError::Transient(failure, why)) => (failure, why),
                Err(SendError::Final(why)) => return Err(refused(what(), why)),
                Err(SendError::Spool(what, cause)) => return Err(StoreError::Io { what, cause }),
                Ok(r) if stream && r.status().is_success() => return Ok(Answer::Stream(r)),
                Ok(r) => {
                    let read = if r.status().is_success() {
                        Reply::read(r).map_err(|e| self.transport_error(e))
                    } else {
                        Ok(Reply::read_failed(r))
                    };
                    match read {
                        Err(SendError::Transient(failure, why)) => (failure, why),
                        Err(SendError::Final(why)) => return Err(refused(what(), why)),
                        Err(SendError::Spool(what, cause)) => {
                            return Err(StoreError::Io { what, cause });
                        }
                        Ok(reply) => match verdict(reply.status, reply.code().as_deref()) {
                            Verdict::Answer => return Ok(Answer::Read(reply)),
                            Verdict::Refresh if !refreshed => {
                                self.creds.invalidate();
                                refreshed = true;
                                continue;
                            }
                            Verdict::Refresh => return Ok(Answer::Read(reply)),
                            Verdict::Retry(failure) => (
                                failure,
                                format!("HTTP {}: {}", reply.status, reply.message()),
                            ),
                        },
                    }
                }
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
            setting: "s3.retry_timeout",
            timeout: self.retry_timeout,
            retries: &self.retries,
            cancel: &self.cancel,
        };
        web::pause(what, backoff, deadline, failure, why, &patience)
    }

    /// [`run`](Self::run) with the answer read whole.
    pub(super) fn call(
        &self,
        what: &dyn Fn() -> String,
        req: &Request,
    ) -> Result<Reply, StoreError> {
        match self.run(what, req, false)? {
            Answer::Read(reply) => Ok(reply),
            Answer::Stream(r) => Reply::read(r).map_err(|e| unavailable(what(), e)),
        }
    }

    /// The error for an answer that is not what we needed.
    pub(super) fn refusal(&self, what: String, reply: &Reply) -> StoreError {
        let message = reply.message();
        let code = reply.code().unwrap_or_default();
        match (reply.status, code.as_str()) {
            (404, "NoSuchBucket") => refused(
                what,
                format!(
                    "bucket {} does not exist (check store.url): {message}",
                    self.bucket
                ),
            ),
            (401 | 403, _) | (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch") => refused(
                what,
                format!(
                    "HTTP {} for {} on bucket {} (check s3.credentials and s3.region): {message}",
                    reply.status,
                    self.creds.identity(),
                    self.bucket
                ),
            ),
            (501, _) => refused(
                what,
                format!(
                    "HTTP 501: this store does not implement a request kafka-store makes (create-only commits need If-None-Match on PUT and on CompleteMultipartUpload): {message}"
                ),
            ),
            (s, _) => refused(what, format!("HTTP {s}: {message}")),
        }
    }

    /// An object's content, streamed.
    pub(super) fn download(&self, key: &ObjectKey) -> Result<ureq::Body, StoreError> {
        let name = self.object_name(key);
        let what = || format!("cannot read s3://{}/{name}", self.bucket);
        let req = Request {
            method: "GET",
            key: Some(&name),
            query: vec![],
            headers: vec![],
            body: Payload::Empty,
        };
        match self.run(&what, &req, true)? {
            Answer::Stream(r) => Ok(r.into_body()),
            Answer::Read(reply) => Err(self.refusal(what(), &reply)),
        }
    }

    /// HEAD of an object: its metadata, or None if there is no such object.
    pub(super) fn head_object(&self, name: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let what = || format!("cannot look up s3://{}/{name}", self.bucket);
        let req = Request {
            method: "HEAD",
            key: Some(name),
            query: vec![],
            headers: vec![("x-amz-checksum-mode".into(), "ENABLED".into())],
            body: Payload::Empty,
        };
        let reply = self.call(&what, &req)?;
        match reply.status {
            200 => self.info(name, &reply).map(Some),
            404 => Ok(None),
            403 | 401 => Err(self.refusal(what(), &reply)),
            _ => Err(self.refusal(what(), &reply)),
        }
    }

    /// An archive object's metadata from its HEAD answer.
    fn info(&self, name: &str, reply: &Reply) -> Result<ObjectInfo, StoreError> {
        let what = || format!("s3://{}/{name}", self.bucket);
        let meta = |k: &str| reply.header(&format!("x-amz-meta-{k}"));
        let get = |k: &str| -> Result<Option<i64>, StoreError> {
            meta(k)
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
        // The server's own checksum (single PUTs) wins over the writer's claim.
        let crc32c = reply
            .header("x-amz-checksum-crc32c")
            .or(meta(CRC32C))
            .and_then(parse_crc32c);
        Ok(ObjectInfo {
            summary: Summary {
                next_offset,
                record_count: get(RECORD_COUNT)?.unwrap_or(0) as u64,
                min_timestamp: get(MIN_TIMESTAMP)?,
                max_timestamp: get(MAX_TIMESTAMP)?,
                last_epoch: get(LAST_EPOCH)?.map(|e| e as i32).filter(|e| *e >= 0),
            },
            size: reply
                .header("content-length")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            crc32c,
            md5: None,
            format_version: get(FORMAT_VERSION)?.unwrap_or(1) as u32,
            topic_id: meta(TOPIC_ID)
                .map(|v| {
                    uuid::Uuid::try_parse(v).map_err(|_| {
                        not_archive(
                            what(),
                            format!("metadata {TOPIC_ID} = {v:?} is not a topic id"),
                        )
                    })
                })
                .transpose()?,
            skipped: meta(SKIPPED)
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

    /// One page of ListObjectsV2 under `prefix`: keys, common prefixes and
    /// the continuation token.
    fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        max: Option<u32>,
        token: Option<&str>,
    ) -> Result<Page, StoreError> {
        let what = || format!("cannot list s3://{}/{prefix}", self.bucket);
        let mut query = vec![
            ("list-type".to_string(), "2".to_string()),
            ("prefix".to_string(), prefix.to_string()),
        ];
        if let Some(d) = delimiter {
            query.push(("delimiter".into(), d.into()));
        }
        if let Some(m) = max {
            query.push(("max-keys".into(), m.to_string()));
        }
        if let Some(t) = token {
            query.push(("continuation-token".into(), t.into()));
        }
        let req = Request {
            method: "GET",
            key: None,
            query,
            headers: vec![],
            body: Payload::Empty,
        };
        let reply = self.call(&what, &req)?;
        if reply.status != 200 {
            return Err(self.refusal(what(), &reply));
        }
        let text = reply.text();
        let keys = tags(&text, "Contents")
            .into_iter()
            .filter_map(|c| tag(c, "Key"))
            .collect();
        let prefixes = tags(&text, "CommonPrefixes")
            .into_iter()
            .filter_map(|c| tag(c, "Prefix"))
            .collect();
        let next = (tag(&text, "IsTruncated").as_deref() == Some("true"))
            .then(|| tag(&text, "NextContinuationToken"))
            .flatten();
        Ok((keys, prefixes, next))
    }

    /// Every key and sub-folder under `prefix`, following pages.
    pub(super) fn list_all(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let (mut keys, mut prefixes) = (Vec::new(), Vec::new());
        let mut token: Option<String> = None;
        loop {
            let (mut k, mut p, next) = self.list_page(prefix, delimiter, None, token.as_deref())?;
            keys.append(&mut k);
            prefixes.append(&mut p);
            match next {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok((keys, prefixes)),
            }
        }
    }

    /// First offsets of one partition's archive objects, ascending.
    pub(super) fn partition_objects(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<i64>, StoreError> {
        let folder = self.folder(&format!("{}/", names::partition_dir(topic, partition)));
        let mut out: Vec<i64> = self
            .list_all(&folder, Some("/"))?
            .0
            .iter()
            .filter_map(|k| names::parse_file_name(k.strip_prefix(&folder)?))
            .collect();
        out.sort_unstable();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_status_and_code() {
        let table = [
            (200, None, Verdict::Answer),
            (
                200,
                Some("InternalError"),
                Verdict::Retry(Failure::Status(500)),
            ),
            (503, Some("SlowDown"), Verdict::Retry(Failure::Status(503))),
            (500, None, Verdict::Retry(Failure::Status(500))),
            (503, None, Verdict::Retry(Failure::Status(503))),
            (
                400,
                Some("RequestTimeout"),
                Verdict::Retry(Failure::Status(400)),
            ),
            (400, Some("ExpiredToken"), Verdict::Refresh),
            (403, Some("SignatureDoesNotMatch"), Verdict::Answer),
            (403, Some("InvalidAccessKeyId"), Verdict::Answer),
            (404, Some("NoSuchBucket"), Verdict::Answer),
            (404, Some("NoSuchUpload"), Verdict::Answer),
            (412, Some("PreconditionFailed"), Verdict::Answer),
            (409, Some("ConditionalRequestConflict"), Verdict::Answer),
            (400, Some("EntityTooSmall"), Verdict::Answer),
        ];
        for (status, code, want) in table {
            assert_eq!(verdict(status, code), want, "{status} {code:?}");
        }
    }

    #[test]
    fn xml_answers_are_read() {
        let xml = "<?xml version=\"1.0\"?><ListBucketResult><IsTruncated>true</IsTruncated>\
            <Contents><Key>a/b&amp;c</Key><Size>3</Size></Contents>\
            <Contents><Key>a/d</Key></Contents>\
            <CommonPrefixes><Prefix>a/e/</Prefix></CommonPrefixes>\
            <NextContinuationToken>tok</NextContinuationToken></ListBucketResult>";
        let keys: Vec<_> = tags(xml, "Contents")
            .into_iter()
            .filter_map(|c| tag(c, "Key"))
            .collect();
        assert_eq!(keys, ["a/b&c", "a/d"]);
        assert_eq!(tag(xml, "NextContinuationToken").as_deref(), Some("tok"));
        assert_eq!(tag(xml, "Missing"), None);
    }

    #[test]
    fn endpoints_split_into_scheme_and_host() {
        let table = [
            ("http://127.0.0.1:9024", Some(("http", "127.0.0.1:9024"))),
            (
                "https://s3.eu-west-1.amazonaws.com/",
                Some(("https", "s3.eu-west-1.amazonaws.com")),
            ),
            ("https://h/path", None),
            ("ftp://h", None),
            ("h", None),
        ];
        for (endpoint, want) in table {
            let got = split_endpoint(endpoint);
            let want = want.map(|(s, h)| (s.to_string(), h.to_string()));
            assert_eq!(got, want, "{endpoint}");
        }
    }
}
