//! A tiny fault-injecting HTTP/1.1 proxy for the GCS integration tests.
//!
//! [`FaultProxy::start`] listens on `127.0.0.1:<ephemeral port>` in front of an
//! upstream (the `gcp-storage-emulator`: plain HTTP/1.0, no keep-alive, closes
//! after each response). Only `std` is used: one OS thread per client
//! connection, one request per connection.
//!
//! For every client request the proxy reads the request line, the headers and
//! the body (`Content-Length` or `Transfer-Encoding: chunked`), decides a fault
//! (or none) and then either
//! - forwards the request upstream over a fresh TCP connection (`Connection:
//!   close`, the body re-sent with `Content-Length`, the client's `Host` kept)
//!   and relays the response (status line, headers such as `Location`, `Range`,
//!   `Content-Type`, and the body, re-emitted with a correct `Content-Length`
//!   and `Connection: close`), or
//! - injects the fault ([`FaultKind`]).
//!
//! The client connection is closed after each response.
//!
//! Faults: with probability [`Faults::rate`] a request gets one of
//! [`Faults::kinds`], picked uniformly by a splitmix64 generator seeded with
//! [`Faults::seed`] (reset by every [`FaultProxy::set_faults`]). Faults hit
//! every kind of request: initiations, chunk uploads, status queries, metadata
//! reads, listings and downloads (only session requests with
//! [`Faults::sessions_only`]). [`Faults::body_delay`] delays forwarding each
//! request that carries a body.
//!
//! Always on, whatever the fault rate, because real GCS behaves so and the
//! emulator does not:
//! - `ifGenerationMatch=0` ("create only if absent"). A resumable initiation
//!   (`POST …/b/{bucket}/o?uploadType=resumable&ifGenerationMatch=0`, object
//!   name in the `name` query parameter or in the JSON body) is answered `412
//!   Precondition Failed` when upstream already has the object. The proxy
//!   remembers each session it forwarded (the `upload_id` of upstream's
//!   `Location`), and the final chunk of such a session (`Content-Range: bytes
//!   S-E/T` with `E + 1 == T`, `bytes S-*/T` completing the object, or a PUT
//!   without `Content-Range`) also gets 412 if the object exists by then. The
//!   check and the forwarding of a final chunk are serialised, so two racing
//!   sessions cannot both create the object. Status queries (`bytes */T`) are
//!   never checked.
//! - A completed session stays completed: once upstream answered 200/201 to a
//!   request of a session (even if the response was then lost by a
//!   `LoseResponse` fault), later requests to that session (status queries,
//!   a re-sent final chunk) are answered `200` with the object resource, as
//!   real GCS does; the emulator would answer 404.
//! - A status query on a session that has not stored a byte yet is answered
//!   `308` without a `Range` header, as real GCS does; the emulator would send
//!   `Range: bytes=0-0`, which claims one byte.
//! - S3 create-only writes (a PUT or a POST carrying `If-None-Match`: a
//!   PutObject or a CompleteMultipartUpload) are forwarded one at a time.
//!   s3s-fs 0.14.1 checks that the object is absent, then writes a temporary
//!   file and renames it over the name (`s3.rs`, `put_object`), so two racing
//!   creators can both be told 200 and the later rename wins; real S3 decides
//!   atomically. Serialised, its check holds. It also saves the object's
//!   metadata only after the rename, so a signed GET or HEAD waits while a
//!   create-only write is in flight: a reader never sees an object without
//!   its `x-amz-meta-*`, as on real S3 (reads still overlap each other).
//! - `Location` headers are rewritten to point at the proxy (scheme, host and
//!   port replaced; path and query kept), so clients never bypass it.
//!
//! Emulator facts the tests rely on (gcp-storage-emulator 2026.7.19): its
//! `Location` is built from the request's `Host` header; a chunk whose start is
//! not the stored length (also a re-sent chunk) gets `400 {"error":{"message":
//! "Invalid Content-Range start: expected N, got M"}}`; a checksum mismatch
//! (`crc32c`/`md5Hash` given in the initiation's JSON) gets 400 on the final
//! chunk and leaves the session stuck (every later request 400); an unknown
//! `upload_id` gets 404; `X-Goog-Hash` on uploads is ignored.
//!
//! Every request is logged ([`LogEntry`], [`FaultProxy::log`]); the entry is
//! complete before the client sees the answer or the close. The proxy's own
//! existence checks against upstream are not logged and never faulted.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Read and write timeout on client and upstream sockets.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest request or response head (start line plus headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
const PRECONDITION_FAILED_BODY: &str = r#"{"error":{"code":412,"message":"At least one of the pre-conditions you specified did not hold."}}"#;

/// The proxy. Stops accepting connections when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Clone, Debug)]
pub struct Faults {
    /// Probability (0.0..=1.0) that a request gets a random fault from `kinds`.
    pub rate: f64,
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    /// How long a Stall holds the request before closing (set it past the client's timeout).
    pub stall: Duration,
    /// Delay before forwarding each request that carries a body (slows uploads so a test can kill a process mid-upload).
    pub body_delay: Duration,
    /// Fault only requests to an upload session (`upload_id=` in the
    /// query: chunks and status queries), never initiations or reads.
    pub sessions_only: bool,
    /// Play an S3 store whose ETags are not MD5s (SSE-KMS, SSE-C): see
    /// [`opaque_etags`].
    pub opaque_etags: bool,
    /// Play an S3 store that ignores `If-None-Match` on requests of these
    /// methods (`PUT`: PutObject, `POST`: CompleteMultipartUpload): a
    /// create-only write that upstream refuses because the object exists
    /// (412) is answered `200`, as a store that overwrote it would.
    pub overwrites: Vec<&'static str>,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            rate: 0.0,
            seed: 0,
            kinds: Vec::new(),
            stall: Duration::from_secs(10),
            body_delay: Duration::ZERO,
            sessions_only: false,
            opaque_etags: false,
            overwrites: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Read about half the request body, then close the connection without answering; nothing reaches upstream.
    DropMidBody,
    /// Answer this status (503, 429 or 408) with a small JSON error body; nothing reaches upstream.
    Status(u16),
    /// Read the request, hold it for `stall`, then close without answering; nothing reaches upstream.
    Stall,
    /// Forward the request (upstream stores the chunk), then close the client connection without relaying the response.
    LoseResponse,
}

#[derive(Clone, Debug)]
pub struct LogEntry {
    pub method: String,
    /// Path and query as received, e.g. "/upload/storage/v1/b/bkt/o?uploadType=resumable&upload_id=abc".
    pub target: String,
    pub content_range: Option<String>,
    /// Request body bytes that reached upstream (0 if not forwarded).
    pub forwarded_body_bytes: u64,
    pub fault: Option<FaultKind>,
    /// True when the proxy answered 412 itself (see preconditions).
    pub precondition_failed: bool,
    /// Status relayed or injected (None when the connection was closed without an answer).
    pub status: Option<u16>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` ("host:port", e.g. "127.0.0.1:9023").
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fault proxy: local address");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            base_url: format!("http://{addr}"),
            stop: AtomicBool::new(false),
            faults: Mutex::new(FaultState {
                faults: Faults::default(),
                rng: 0,
            }),
            log: Mutex::new(Vec::new()),
            next_seq: AtomicU64::new(0),
            sessions: Mutex::new(Sessions::default()),
            finalize: Mutex::new(()),
            s3_creating: RwLock::new(()),
            etags: Mutex::new(HashMap::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(&listener, &accept_shared))
            .expect("fault proxy: spawn accept thread");
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Replaces the fault settings (and restarts the generator from `seed`) for
    /// the requests that arrive from now on.
    pub fn set_faults(&self, faults: Faults) {
        let mut state = lock(&self.shared.faults);
        state.rng = faults.seed;
        state.faults = faults;
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<LogEntry> {
        lock(&self.shared.log)
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub fn clear_log(&self) {
        lock(&self.shared.log).clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Helper for tests: the `upload_id` query parameter of a target (or of a full
/// URL such as a `Location`), percent-decoded, if any.
pub fn upload_id(target: &str) -> Option<String> {
    let (_, query) = target.split_once('?')?;
    query_param(query, "upload_id")
}

/// Helper: parse "bytes START-END/TOTAL" → (start, end, total) (None for "bytes */TOTAL").
pub fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((
        start.trim().parse().ok()?,
        end.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

struct Shared {
    upstream: String,
    base_url: String,
    stop: AtomicBool,
    faults: Mutex<FaultState>,
    /// (arrival sequence number, entry)
    log: Mutex<Vec<(u64, LogEntry)>>,
    next_seq: AtomicU64,
    sessions: Mutex<Sessions>,
    /// Held across "does the object exist?" and forwarding a final chunk
    /// (GCS).
    finalize: Mutex<()>,
    /// S3: written while a create-only write is forwarded, read while a
    /// signed GET or HEAD is.
    s3_creating: RwLock<()>,
    /// (upload id, part number) → the opaque ETag the part was given.
    etags: Mutex<HashMap<(String, u32), String>>,
}

struct FaultState {
    faults: Faults,
    rng: u64,
}

#[derive(Default)]
struct Sessions {
    /// upload_id → session, for every initiation forwarded and answered with a Location.
    open: HashMap<String, Session>,
    /// upload_id → upstream's final response body (the object resource).
    completed: HashMap<String, Vec<u8>>,
    /// upload_ids upstream has stored at least one byte for.
    with_bytes: HashSet<String>,
}

#[derive(Clone)]
struct Session {
    bucket: String,
    name: String,
    if_absent: bool,
}

/// Header name/value pairs in arrival order.
type Headers = Vec<(String, String)>;

struct Request {
    method: String,
    target: String,
    headers: Headers,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    reason: String,
    headers: Headers,
    body: Vec<u8>,
}

struct Outcome {
    response: Response,
    forwarded: u64,
    precondition_failed: bool,
}

#[derive(Clone, Copy)]
enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => {
                let shared = Arc::clone(shared);
                let _ = thread::Builder::new()
                    .name("fault-proxy-conn".into())
                    .spawn(move || handle_connection(&shared, stream));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

impl Shared {
    /// The fault for the next request (to `target`), with the stall and
    /// body delay then in force.
    fn decide(&self, target: &str) -> (Option<FaultKind>, Duration, Duration) {
        let mut state = lock(&self.faults);
        let a = splitmix64(&mut state.rng);
        let b = splitmix64(&mut state.rng);
        let f = &state.faults;
        let unit = (a >> 11) as f64 / (1u64 << 53) as f64;
        let eligible = !f.sessions_only || upload_id(target).is_some();
        let fault = if eligible && !f.kinds.is_empty() && unit < f.rate {
            Some(f.kinds[(b % f.kinds.len() as u64) as usize])
        } else {
            None
        };
        (fault, f.stall, f.body_delay)
    }

    fn log_arrival(&self, entry: LogEntry) -> u64 {
        let mut log = lock(&self.log);
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        log.push((seq, entry));
        seq
    }

    fn update_log(&self, seq: u64, f: impl FnOnce(&mut LogEntry)) {
        let mut log = lock(&self.log);
        if let Some((_, entry)) = log.iter_mut().rev().find(|(s, _)| *s == seq) {
            f(entry);
        }
    }

    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= end {
                break;
            }
            thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn handle_connection(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut reader = BufReader::new(&stream);
    let Ok(Some((start_line, headers))) = read_head(&mut reader) else {
        return;
    };
    let mut parts = start_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        reply_and_close(
            &stream,
            &error_response(400, "malformed request line"),
            false,
        );
        return;
    };
    let method = method.to_string();
    let target = origin_form(target);
    let Some(body_kind) = body_kind(&headers) else {
        reply_and_close(&stream, &error_response(400, "bad body framing"), false);
        return;
    };
    if header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        let _ = (&stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    let (fault, stall, body_delay) = shared.decide(&target);
    let seq = shared.log_arrival(LogEntry {
        method: method.clone(),
        target: target.clone(),
        content_range: header(&headers, "content-range").map(str::to_string),
        forwarded_body_bytes: 0,
        fault,
        precondition_failed: false,
        status: None,
    });

    if fault == Some(FaultKind::DropMidBody) {
        read_half_body(&mut reader, body_kind);
        abort(&stream);
        return;
    }
    let Ok(body) = read_body(&mut reader, body_kind) else {
        abort(&stream);
        return;
    };
    match fault {
        Some(FaultKind::Status(code)) => {
            shared.update_log(seq, |e| e.status = Some(code));
            reply_and_close(&stream, &error_response(code, "injected fault"), false);
        }
        Some(FaultKind::Stall) => {
            shared.sleep(stall);
            abort(&stream);
        }
        _ => {
            let head_only = method.eq_ignore_ascii_case("HEAD");
            let request = Request {
                method,
                target,
                headers,
                body,
            };
            let outcome = process(shared, &request, body_delay);
            let lose = fault == Some(FaultKind::LoseResponse);
            shared.update_log(seq, |e| {
                e.forwarded_body_bytes = outcome.forwarded;
                e.precondition_failed = outcome.precondition_failed;
                if !lose {
                    e.status = Some(outcome.response.status);
                }
            });
            if lose {
                abort(&stream);
            } else {
                reply_and_close(&stream, &outcome.response, head_only);
            }
        }
    }
}

/// [`process_plain`], through [`opaque_etags`] when they are on.
fn process(shared: &Shared, req: &Request, body_delay: Duration) -> Outcome {
    let opaque = lock(&shared.faults).faults.opaque_etags;
    let signed = header(&req.headers, "authorization").is_some_and(|a| a.starts_with("AWS4-"));
    if opaque && signed {
        opaque_etags(shared, req, || process_plain(shared, req, body_delay))
    } else {
        process_plain(shared, req, body_delay)
    }
}

/// S3 stores that encrypt with SSE-KMS or SSE-C give objects and parts
/// ETags that are not MD5s, and CompleteMultipartUpload must name each part
/// by the ETag the store gave it. Played in front of s3s-fs: every ETag
/// relayed (headers and XML) has its 32 hex digits reversed; the ETag each
/// part was given is remembered and listed by ListParts (s3s-fs lists
/// none); a CompleteMultipartUpload naming a part by any other ETag is
/// answered `400 InvalidPart` and not forwarded.
fn opaque_etags(shared: &Shared, req: &Request, forward: impl FnOnce() -> Outcome) -> Outcome {
    let query = req.target.split_once('?').map_or("", |(_, q)| q);
    let upload = query_param(query, "uploadId");
    let part: Option<u32> = query_param(query, "partNumber").and_then(|n| n.parse().ok());
    let method = req.method.to_ascii_uppercase();
    if method == "POST"
        && let Some(id) = &upload
    {
        let body = String::from_utf8_lossy(&req.body);
        let given = lock(&shared.etags);
        for p in xml_inside(&body, "Part") {
            let n: u32 = xml_inside(p, "PartNumber")
                .first()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let named = xml_inside(p, "ETag").first().map(|e| unquote_etag(e));
            let want = given.get(&(id.clone(), n));
            if named.as_deref() != want.map(String::as_str) {
                let message = format!("part {n} is named {named:?}, the store gave it {want:?}");
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidPart</Code><Message>{message}</Message></Error>"
                );
                let mut response = json_response(400, "Bad Request", body.into_bytes());
                response.headers = vec![("Content-Type".into(), "application/xml".into())];
                return Outcome {
                    response,
                    forwarded: 0,
                    precondition_failed: false,
                };
            }
        }
    }
    let mut outcome = forward();
    let r = &mut outcome.response;
    for (k, v) in &mut r.headers {
        if k.eq_ignore_ascii_case("etag") {
            *v = reverse_md5s(v);
        }
    }
    if r.status != 200 {
        return outcome;
    }
    if method == "PUT"
        && let (Some(id), Some(n)) = (&upload, part)
        && let Some(etag) = header(&r.headers, "etag")
    {
        lock(&shared.etags).insert((id.clone(), n), unquote_etag(etag));
    }
    let body = String::from_utf8_lossy(&r.body).into_owned();
    if method == "GET"
        && let Some(id) = &upload
    {
        // ListParts: each part with the ETag it was given.
        let given = lock(&shared.etags);
        let reversed = reverse_md5s(&body);
        let mut listed = reversed.clone();
        for p in xml_inside(&reversed, "Part") {
            let n: Option<u32> = xml_inside(p, "PartNumber")
                .first()
                .and_then(|n| n.parse().ok());
            if let Some(etag) = n.and_then(|n| given.get(&(id.clone(), n)))
                && !p.contains("<ETag>")
            {
                listed = listed.replacen(p, &format!("{p}<ETag>&quot;{etag}&quot;</ETag>"), 1);
            }
        }
        r.body = listed.into_bytes();
    } else if body.contains("<ETag>") {
        r.body = reverse_md5s(&body).into_bytes();
    }
    outcome
}

/// `s` with every run of exactly 32 hex digits reversed.
fn reverse_md5s(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() == 32 {
            out.extend(run.chars().rev());
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn unquote_etag(e: &str) -> String {
    e.replace("&quot;", "\"")
        .trim()
        .trim_matches('"')
        .to_string()
}

/// The insides of every `<name>…</name>` of `xml`.
fn xml_inside<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
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

/// Decides between answering locally (preconditions, completed sessions) and
/// forwarding upstream.
fn process_plain(shared: &Shared, req: &Request, body_delay: Duration) -> Outcome {
    if !req.body.is_empty() && !body_delay.is_zero() {
        shared.sleep(body_delay);
    }
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let method = req.method.to_ascii_uppercase();
    let is_write = method == "PUT" || method == "POST";
    if is_write && let Some(id) = query_param(query, "upload_id") {
        return session_request(shared, req, &id);
    }
    if method == "POST"
        && query_param(query, "uploadType").as_deref() == Some("resumable")
        && let Some(bucket) = upload_bucket(path)
    {
        return initiation(shared, req, query, bucket);
    }
    if is_write && header(&req.headers, "if-none-match").is_some() {
        let _alone = shared
            .s3_creating
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut outcome = forward(shared, req);
        if outcome.response.status == 412
            && lock(&shared.faults)
                .faults
                .overwrites
                .contains(&method.as_str())
        {
            outcome.response = Response {
                status: 200,
                reason: "OK".into(),
                headers: vec![],
                body: vec![],
            };
        }
        return outcome;
    }
    let signed = header(&req.headers, "authorization").is_some_and(|a| a.starts_with("AWS4-"));
    if signed && (method == "GET" || method == "HEAD") {
        let _not_while_creating = shared.s3_creating.read().unwrap_or_else(|e| e.into_inner());
        return forward(shared, req);
    }
    forward(shared, req)
}

fn initiation(shared: &Shared, req: &Request, query: &str, bucket: String) -> Outcome {
    let name = query_param(query, "name").or_else(|| json_top_level_string(&req.body, "name"));
    let if_absent = query_param(query, "ifGenerationMatch").as_deref() == Some("0");
    if if_absent
        && let Some(name) = &name
        && let Some(answer) = precondition_check(shared, &bucket, name)
    {
        return answer;
    }
    let outcome = forward(shared, req);
    if matches!(outcome.response.status, 200 | 201)
        && let Some(name) = name
        && let Some(id) = header(&outcome.response.headers, "location").and_then(upload_id)
    {
        lock(&shared.sessions).open.insert(
            id,
            Session {
                bucket,
                name,
                if_absent,
            },
        );
    }
    outcome
}

/// A request to an upload session (chunk, final chunk or status query).
fn session_request(shared: &Shared, req: &Request, id: &str) -> Outcome {
    let (completed, session) = {
        let sessions = lock(&shared.sessions);
        (
            sessions.completed.get(id).cloned(),
            sessions.open.get(id).cloned(),
        )
    };
    if let Some(object) = completed {
        return Outcome {
            response: json_response(200, "OK", object),
            forwarded: 0,
            precondition_failed: false,
        };
    }
    let is_final = match header(&req.headers, "content-range") {
        None => true,
        Some(range) => is_final_chunk(range, req.body.len() as u64),
    };
    // A final chunk of an "only if absent" session: check and forward under
    // one lock, so that of two racing sessions only one creates the object.
    let checked = session.filter(|s| is_final && s.if_absent);
    let _finalizing = checked.as_ref().map(|_| lock(&shared.finalize));
    if let Some(s) = &checked
        && let Some(answer) = precondition_check(shared, &s.bucket, &s.name)
    {
        return answer;
    }
    let mut outcome = forward(shared, req);
    let response = &mut outcome.response;
    let mut sessions = lock(&shared.sessions);
    match response.status {
        200 | 201 => {
            sessions
                .completed
                .insert(id.to_string(), response.body.clone());
            sessions.open.remove(id);
            sessions.with_bytes.remove(id);
        }
        308 => {
            let range = header(&response.headers, "range").map(str::to_string);
            if !req.body.is_empty() || range.as_deref().is_some_and(|r| r != "bytes=0-0") {
                sessions.with_bytes.insert(id.to_string());
            } else if range.as_deref() == Some("bytes=0-0") && !sessions.with_bytes.contains(id) {
                // The emulator's answer for "nothing stored yet"; real GCS sends no Range.
                response
                    .headers
                    .retain(|(k, _)| !k.eq_ignore_ascii_case("range"));
            }
        }
        _ => {}
    }
    outcome
}

/// `Some(answer)` when the request must not be forwarded: 412 if the object
/// exists, 502 if upstream could not tell.
fn precondition_check(shared: &Shared, bucket: &str, name: &str) -> Option<Outcome> {
    let target = format!(
        "/storage/v1/b/{}/o/{}",
        percent_encode(bucket),
        percent_encode(name)
    );
    let headers = vec![("Host".to_string(), shared.upstream.clone())];
    let mut forwarded = 0;
    let response = match exchange(
        &shared.upstream,
        "GET",
        &target,
        &headers,
        &[],
        &mut forwarded,
    ) {
        Ok(r) if r.status == 404 => return None,
        Ok(r) if r.status == 200 => json_response(
            412,
            "Precondition Failed",
            PRECONDITION_FAILED_BODY.as_bytes().to_vec(),
        ),
        Ok(r) => error_response(
            502,
            &format!("precondition check: upstream answered {}", r.status),
        ),
        Err(e) => error_response(502, &format!("precondition check: {e}")),
    };
    let precondition_failed = response.status == 412;
    Some(Outcome {
        response,
        forwarded: 0,
        precondition_failed,
    })
}

fn forward(shared: &Shared, req: &Request) -> Outcome {
    let mut forwarded = 0;
    let response = match exchange(
        &shared.upstream,
        &req.method,
        &req.target,
        &req.headers,
        &req.body,
        &mut forwarded,
    ) {
        Ok(mut r) => {
            for (k, v) in &mut r.headers {
                if k.eq_ignore_ascii_case("location") {
                    *v = rewrite_location(v, &shared.base_url);
                }
            }
            r
        }
        Err(e) => error_response(502, &format!("upstream: {e}")),
    };
    Outcome {
        response,
        forwarded,
        precondition_failed: false,
    }
}

/// One request over a fresh upstream connection. `forwarded` is set to the
/// body length once the whole body has been written.
fn exchange(
    upstream: &str,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    forwarded: &mut u64,
) -> io::Result<Response> {
    let stream = connect(upstream)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    let mut has_host = false;
    for (k, v) in headers {
        if is_hop_by_hop(k) || k.eq_ignore_ascii_case("expect") {
            continue;
        }
        has_host |= k.eq_ignore_ascii_case("host");
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_host {
        head.push_str(&format!("Host: {upstream}\r\n"));
    }
    let bodiless = ["GET", "HEAD", "DELETE", "OPTIONS"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method));
    if !body.is_empty() || !bodiless {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let written = (&stream)
        .write_all(head.as_bytes())
        .and_then(|()| (&stream).write_all(body))
        .and_then(|()| (&stream).flush());
    if written.is_ok() {
        *forwarded = body.len() as u64;
    }
    // Upstream may answer (and close) before reading a body it does not want.
    match read_response(&mut BufReader::new(&stream), method) {
        Ok(r) => Ok(r),
        Err(e) => Err(written.err().unwrap_or(e)),
    }
}

fn connect(addr: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("no address for {addr}"));
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn read_response(r: &mut impl BufRead, method: &str) -> io::Result<Response> {
    loop {
        let (status_line, headers) = read_head(r)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed without a response",
            )
        })?;
        let mut parts = status_line.splitn(3, ' ');
        let _version = parts.next();
        let status: u16 = parts
            .next()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or("").trim().to_string();
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let body = if method.eq_ignore_ascii_case("HEAD") || matches!(status, 204 | 304) {
            Vec::new()
        } else {
            match body_kind(&headers) {
                Some(BodyKind::Chunked) => read_chunked(r)?,
                Some(BodyKind::Length(n)) => read_exact_vec(r, n)?,
                _ => read_to_eof(r)?,
            }
        };
        return Ok(Response {
            status,
            reason,
            headers,
            body,
        });
    }
}

/// Start line and headers; `None` on EOF before the first byte.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<(String, Headers)>> {
    let mut total = 0;
    let mut start_line = None;
    let mut headers = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        total += n;
        if total > MAX_HEAD {
            return Err(invalid("head too long".into()));
        }
        if n == 0 {
            return if start_line.is_none() && total == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside head",
                ))
            };
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        match &start_line {
            None if line.is_empty() => continue,
            None => start_line = Some(line.to_string()),
            Some(_) if line.is_empty() => break,
            Some(_) => {
                let (k, v) = line
                    .split_once(':')
                    .ok_or_else(|| invalid(format!("bad header {line:?}")))?;
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    Ok(start_line.map(|s| (s, headers)))
}

/// `None` for an unparsable Content-Length.
fn body_kind(headers: &[(String, String)]) -> Option<BodyKind> {
    if header(headers, "transfer-encoding").is_some_and(|v| {
        v.to_ascii_lowercase()
            .split(',')
            .any(|c| c.trim() == "chunked")
    }) {
        return Some(BodyKind::Chunked);
    }
    match header(headers, "content-length") {
        Some(v) => v.trim().parse().ok().map(BodyKind::Length),
        None => Some(BodyKind::Empty),
    }
}

fn read_body(r: &mut impl BufRead, kind: BodyKind) -> io::Result<Vec<u8>> {
    match kind {
        BodyKind::Empty => Ok(Vec::new()),
        BodyKind::Length(n) => read_exact_vec(r, n),
        BodyKind::Chunked => read_chunked(r),
    }
}

/// Reads about half of a body (half of the first chunk when chunked), ignoring errors.
fn read_half_body(r: &mut impl BufRead, kind: BodyKind) {
    let half = match kind {
        BodyKind::Empty => 0,
        BodyKind::Length(n) => n / 2,
        BodyKind::Chunked => match read_chunk_size(r) {
            Ok(n) => n / 2,
            Err(_) => 0,
        },
    };
    let _ = read_exact_vec(r, half);
}

fn read_exact_vec(r: &mut impl Read, n: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(n).read_to_end(&mut buf)?;
    if (buf.len() as u64) < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "body shorter than Content-Length",
        ));
    }
    Ok(buf)
}

fn read_chunk_size(r: &mut impl BufRead) -> io::Result<u64> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "EOF in chunked body",
        ));
    }
    let line = String::from_utf8_lossy(&line);
    let size = line.split(';').next().unwrap_or("").trim();
    u64::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {size:?}")))
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size = read_chunk_size(r)?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line)? == 0 || line.trim_ascii().is_empty() {
                    return Ok(body);
                }
            }
        }
        body.extend_from_slice(&read_exact_vec(r, size)?);
        let mut crlf = Vec::new();
        r.read_until(b'\n', &mut crlf)?;
    }
}

/// Reads to EOF; a reset after some bytes counts as EOF.
fn read_to_eof(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !buf.is_empty() => {
                return Ok(buf);
            }
            Err(e) => return Err(e),
        }
    }
}

fn reply_and_close(stream: &TcpStream, response: &Response, head_only: bool) {
    let mut out = format!("HTTP/1.1 {} {}\r\n", response.status, response.reason);
    for (k, v) in &response.headers {
        let keep_length = head_only && k.eq_ignore_ascii_case("content-length");
        if is_hop_by_hop(k) && !keep_length {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !head_only {
        out.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    let mut w = stream;
    let _ = w.write_all(&out).and_then(|()| w.flush());
    let _ = stream.shutdown(Shutdown::Write);
}

/// Closes without an answer.
fn abort(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
}

fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
    ]
    .iter()
    .any(|h| h.eq_ignore_ascii_case(name))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        408 => "Request Timeout",
        412 => "Precondition Failed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

fn json_response(status: u16, reason: &str, body: Vec<u8>) -> Response {
    Response {
        status,
        reason: reason.to_string(),
        headers: vec![(
            "Content-Type".into(),
            "application/json; charset=UTF-8".into(),
        )],
        body,
    }
}

fn error_response(status: u16, message: &str) -> Response {
    let reason = reason_phrase(status);
    let message = format!("{message}: {reason}").replace(['"', '\\'], "'");
    let body = format!(r#"{{"error":{{"code":{status},"message":"{message}"}}}}"#);
    json_response(status, reason, body.into_bytes())
}

/// "http://host/path" → "/path"; origin-form targets unchanged.
fn origin_form(target: &str) -> String {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = target.strip_prefix(scheme) {
            return match rest.find(['/', '?']) {
                Some(i) if rest[i..].starts_with('/') => rest[i..].to_string(),
                Some(i) => format!("/{}", &rest[i..]),
                None => "/".to_string(),
            };
        }
    }
    target.to_string()
}

/// Points an absolute URL at the proxy: "http://emu:9023/p?q" → "{base}/p?q".
fn rewrite_location(location: &str, base_url: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        format!("{base_url}{}", origin_form(location))
    } else {
        location.to_string()
    }
}

/// The bucket of an upload path ".../b/{bucket}/o".
fn upload_bucket(path: &str) -> Option<String> {
    let mut segments = path.rsplit('/');
    let (o, bucket, b) = (segments.next()?, segments.next()?, segments.next()?);
    (o == "o" && b == "b" && !bucket.is_empty()).then(|| percent_decode(bucket, false))
}

/// Whether a chunk with this Content-Range and body length completes the upload.
fn is_final_chunk(content_range: &str, body_len: u64) -> bool {
    if let Some((_, end, total)) = parse_content_range(content_range) {
        return end + 1 == total;
    }
    // Node style "bytes START-*/TOTAL": the body is the remainder.
    let Some(rest) = content_range.trim().strip_prefix("bytes") else {
        return false;
    };
    let Some((range, total)) = rest.trim_start().split_once('/') else {
        return false;
    };
    match (
        range.strip_suffix("-*").map(|s| s.trim().parse::<u64>()),
        total.trim().parse::<u64>(),
    ) {
        (Some(Ok(start)), Ok(total)) => start + body_len == total,
        _ => false,
    }
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true) == key).then(|| percent_decode(v, true))
    })
}

fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The string value of `key` in a JSON object's top level (no serde here).
fn json_top_level_string(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let mut chars = text.chars();
    let mut depth = 0usize;
    // The last significant token at any depth: one of { } [ ] , : or 's' (string) / 'v' (other value).
    let mut prev = ' ';
    let mut last_key: Option<String> = None;
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => continue,
            _ if depth == 0 && c != '{' => return None,
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.checked_sub(1)?,
            ',' | ':' => {}
            '"' => {
                let s = json_string(&mut chars)?;
                if depth == 1 && matches!(prev, '{' | ',') {
                    last_key = Some(s);
                    prev = 'k';
                    continue;
                }
                if depth == 1 && prev == ':' && last_key.as_deref() == Some(key) {
                    return Some(s);
                }
                prev = 's';
                continue;
            }
            _ => {
                prev = 'v';
                continue;
            }
        }
        prev = c;
    }
    None
}

/// A JSON string body after its opening quote.
fn json_string(chars: &mut std::str::Chars<'_>) -> Option<String> {
    fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
        (0..4).try_fold(0, |acc, _| Some(acc * 16 + chars.next()?.to_digit(16)?))
    }
    let mut out = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'u' => {
                    let hi = hex4(chars)?;
                    let code = if (0xD800..0xDC00).contains(&hi) {
                        if chars.next()? != '\\' || chars.next()? != 'u' {
                            return None;
                        }
                        let lo = hex4(chars)?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return None;
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        hi
                    };
                    out.push(char::from_u32(code)?);
                }
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                c @ ('"' | '\\' | '/') => out.push(c),
                _ => return None,
            },
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicU32;
    use std::time::{SystemTime, UNIX_EPOCH};

    const EMULATOR: &str = "127.0.0.1:9023";
    const CHUNK: usize = 256 * 1024;
    const TIMEOUT: Duration = Duration::from_secs(20);

    /// The real emulator; started through the project's script if it is not up.
    fn emulator() -> &'static str {
        static UP: OnceLock<()> = OnceLock::new();
        UP.get_or_init(|| {
            if TcpStream::connect(EMULATOR).is_ok() {
                return;
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor-config/test-services.sh");
            if script.exists() {
                let status = Command::new("bash").arg(&script).arg("up").status();
                assert!(status.is_ok_and(|s| s.success()), "test-services.sh up failed");
            }
            assert!(
                TcpStream::connect(EMULATOR).is_ok(),
                "gcp-storage-emulator is not listening on {EMULATOR} (vendor-config/test-services.sh up)"
            );
        });
        EMULATOR
    }

    fn unique(prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let n = N.fetch_add(1, Ordering::SeqCst);
        format!("{prefix}-{}-{nanos}-{n}", std::process::id())
    }

    fn new_bucket() -> String {
        let name = unique("fp");
        let body = format!(r#"{{"name":"{name}"}}"#);
        let r = call(
            emulator(),
            "POST",
            "/storage/v1/b?project=test",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .expect("create bucket");
        assert_eq!(r.status, 200, "create bucket: {}", r.text());
        name
    }

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len).map(|_| splitmix64(&mut state) as u8).collect()
    }

    struct Resp {
        status: u16,
        headers: Headers,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            header(&self.headers, name)
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// "http://host:port/path?q" → ("host:port", "/path?q")
    fn split_url(url: &str) -> (String, String) {
        let rest = url.strip_prefix("http://").expect("http URL");
        let i = rest.find('/').unwrap_or(rest.len());
        (rest[..i].to_string(), rest[i..].to_string())
    }

    fn proxy_addr(proxy: &FaultProxy) -> String {
        split_url(&proxy.url()).0
    }

    fn call(
        addr: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        send(addr, method, target, headers, body, false, TIMEOUT)
    }

    /// A minimal HTTP/1.1 client: one request, the response read to EOF. An
    /// error (or EOF before any byte) means "no answer".
    fn send(
        addr: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        chunked: bool,
        timeout: Duration,
    ) -> io::Result<Resp> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut head = format!("{method} {target} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {addr}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if chunked {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        } else {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        }
        stream.write_all(head.as_bytes())?;
        if chunked {
            for piece in body.chunks(100_000) {
                stream.write_all(format!("{:x};ext=1\r\n", piece.len()).as_bytes())?;
                stream.write_all(piece)?;
                stream.write_all(b"\r\n")?;
            }
            stream.write_all(b"0\r\nX-Trailer: t\r\n\r\n")?;
        } else {
            stream.write_all(body)?;
        }
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response head"))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line[9..12].parse().expect("status code");
        let headers: Headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').expect("header line");
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let body = raw[split + 4..].to_vec();
        if addr == EMULATOR {
            return Ok(Resp {
                status,
                headers,
                body,
            });
        }
        // What the proxy sends back.
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        assert_eq!(header(&headers, "connection"), Some("close"));
        let length = header(&headers, "content-length").map(|v| v.parse::<usize>().unwrap());
        assert_eq!(
            length,
            Some(body.len()),
            "Content-Length of the relayed response"
        );
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    fn init_target(bucket: &str, name: &str) -> String {
        format!(
            "/upload/storage/v1/b/{bucket}/o?uploadType=resumable&ifGenerationMatch=0&name={}",
            percent_encode(name)
        )
    }

    fn initiate(addr: &str, bucket: &str, name: &str) -> io::Result<Resp> {
        call(
            addr,
            "POST",
            &init_target(bucket, name),
            &[("Content-Type", "application/json")],
            b"{}",
        )
    }

    fn location(r: &Resp) -> String {
        assert_eq!(r.status, 200, "initiation: {}", r.text());
        r.header("location").expect("Location").to_string()
    }

    fn put(url: &str, range: &str, body: &[u8]) -> io::Result<Resp> {
        let (addr, target) = split_url(url);
        call(&addr, "PUT", &target, &[("Content-Range", range)], body)
    }

    fn range(start: usize, end_inclusive: usize, total: usize) -> String {
        format!("bytes {start}-{end_inclusive}/{total}")
    }

    fn object_target(bucket: &str, name: &str) -> String {
        format!("/storage/v1/b/{bucket}/o/{}", percent_encode(name))
    }

    fn media(addr: &str, bucket: &str, name: &str) -> Vec<u8> {
        let r = call(
            addr,
            "GET",
            &format!("{}?alt=media", object_target(bucket, name)),
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200, "download: {}", r.text());
        r.body
    }

    fn always(kind: FaultKind) -> Faults {
        Faults {
            rate: 1.0,
            kinds: vec![kind],
            ..Faults::default()
        }
    }

    #[test]
    fn helpers_parse_targets_ranges_and_json() {
        let target = "/upload/storage/v1/b/bkt/o?uploadType=resumable&name=a%2Fb&upload_id=bkt%3Aa%2Fb%3A2026-11-25+18%3A58%3A47.5";
        assert_eq!(
            upload_id(target).as_deref(),
            Some("bkt:a/b:2026-11-25 18:58:47.5")
        );
        assert_eq!(
            upload_id("http://h:1/x?upload_id=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(upload_id("/x?uploadType=resumable"), None);
        assert_eq!(upload_id("/x"), None);
        assert_eq!(
            parse_content_range("bytes 0-262143/786432"),
            Some((0, 262_143, 786_432))
        );
        assert_eq!(parse_content_range(" bytes 5-9/10 "), Some((5, 9, 10)));
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("bytes 0-4/*"), None);
        assert!(is_final_chunk("bytes 5-9/10", 5));
        assert!(!is_final_chunk("bytes 0-4/10", 5));
        assert!(!is_final_chunk("bytes */10", 0));
        assert!(is_final_chunk("bytes 5-*/10", 5));
        assert!(!is_final_chunk("bytes 0-4/*", 5));
        let body = br#"{"metadata": {"name": "decoy"}, "list": ["name", "x"], "name" : "a\/b \u00e9\ud83d\ude00"}"#;
        assert_eq!(
            json_top_level_string(body, "name").as_deref(),
            Some("a/b é😀")
        );
        assert_eq!(
            json_top_level_string(br#"{"metadata":{"name":"decoy"}}"#, "name"),
            None
        );
        assert_eq!(json_top_level_string(br#"["name","x"]"#, "name"), None);
        assert_eq!(json_top_level_string(b"", "name"), None);
        assert_eq!(percent_encode("a/b c~é"), "a%2Fb%20c~%C3%A9");
        assert_eq!(percent_decode("a%2Fb+c%zz%", true), "a/b c%zz%");
        assert_eq!(
            upload_bucket("/upload/storage/v1/b/bkt/o").as_deref(),
            Some("bkt")
        );
        assert_eq!(upload_bucket("/b/bkt/o").as_deref(), Some("bkt"));
        assert_eq!(upload_bucket("/storage/v1/b/bkt/o/x"), None);
        assert_eq!(
            rewrite_location("http://127.0.0.1:9023/upload/x?y=1", "http://127.0.0.1:5"),
            "http://127.0.0.1:5/upload/x?y=1"
        );
        assert_eq!(rewrite_location("/relative", "http://p:1"), "/relative");
        assert_eq!(origin_form("http://h:1?q"), "/?q");
        assert_eq!(origin_form("/p?q"), "/p?q");
    }

    #[test]
    fn fault_choice_is_deterministic_per_seed() {
        let proxy = FaultProxy::start("127.0.0.1:9");
        let kinds = vec![
            FaultKind::DropMidBody,
            FaultKind::Status(503),
            FaultKind::Stall,
            FaultKind::LoseResponse,
        ];
        let draw = |seed: u64, rate: f64| {
            proxy.set_faults(Faults {
                rate,
                seed,
                kinds: kinds.clone(),
                ..Faults::default()
            });
            (0..200)
                .map(|_| proxy.shared.decide("/").0)
                .collect::<Vec<_>>()
        };
        let a = draw(42, 0.5);
        assert_eq!(a, draw(42, 0.5));
        assert_ne!(a, draw(43, 0.5));
        let faulted = a.iter().flatten().count();
        assert!((60..140).contains(&faulted), "{faulted} of 200 at rate 0.5");
        for kind in &kinds {
            assert!(a.contains(&Some(*kind)), "{kind:?} never drawn");
        }
        assert!(draw(1, 0.0).iter().all(Option::is_none));
        assert!(draw(1, 1.0).iter().all(Option::is_some));
    }

    #[test]
    fn relays_a_resumable_upload_and_rewrites_location() {
        let bucket = new_bucket();
        let proxy = FaultProxy::start(emulator());
        let addr = proxy_addr(&proxy);
        let name = "dir/object 1.avro";
        let data = data(2 * CHUNK + 1000, 1);
        let total = data.len();

        // The Host header names the emulator, so its Location points there
        // until the proxy rewrites it.
        let init_body = br#"{"contentType":"application/octet-stream"}"#;
        let init = call(
            &addr,
            "POST",
            &init_target(&bucket, name),
            &[("Host", EMULATOR), ("Content-Type", "application/json")],
            init_body,
        )
        .unwrap();
        let loc = location(&init);
        let prefix = format!("{}/upload/storage/v1/b/{bucket}/o?", proxy.url());
        assert!(loc.starts_with(&prefix), "{loc}");
        assert!(upload_id(&loc).unwrap().contains(name), "{loc}");

        // Status before any byte: 308 without Range (emulator: bytes=0-0).
        let status = put(&loc, &format!("bytes */{total}"), b"").unwrap();
        assert_eq!((status.status, status.header("range")), (308, None));

        let r1 = put(&loc, &range(0, CHUNK - 1, total), &data[..CHUNK]).unwrap();
        assert_eq!(
            (r1.status, r1.header("range")),
            (308, Some("bytes=0-262143"))
        );
        // A chunked request body is re-sent upstream with a Content-Length.
        let (loc_addr, loc_target) = split_url(&loc);
        let r2 = send(
            &loc_addr,
            "PUT",
            &loc_target,
            &[("Content-Range", &range(CHUNK, 2 * CHUNK - 1, total))],
            &data[CHUNK..2 * CHUNK],
            true,
            TIMEOUT,
        )
        .unwrap();
        assert_eq!(
            (r2.status, r2.header("range")),
            (308, Some("bytes=0-524287"))
        );
        let done = put(
            &loc,
            &range(2 * CHUNK, total - 1, total),
            &data[2 * CHUNK..],
        )
        .unwrap();
        assert_eq!(done.status, 200, "{}", done.text());
        assert!(
            done.text().contains(&format!(r#""size": "{total}""#)),
            "{}",
            done.text()
        );
        assert!(
            done.header("content-type")
                .unwrap()
                .starts_with("application/json")
        );

        let meta = call(&addr, "GET", &object_target(&bucket, name), &[], b"").unwrap();
        assert_eq!(meta.status, 200, "{}", meta.text());
        assert!(
            meta.text().contains(r#""name": "dir/object 1.avro""#),
            "{}",
            meta.text()
        );
        assert_eq!(media(&addr, &bucket, name), data);
        let listing = call(
            &addr,
            "GET",
            &format!("/storage/v1/b/{bucket}/o?prefix=dir%2F"),
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(listing.status, 200);
        assert!(
            listing.text().contains("dir/object 1.avro"),
            "{}",
            listing.text()
        );

        // A completed session answers 200 with the object (emulator: 404).
        let after = put(&loc, &format!("bytes */{total}"), b"").unwrap();
        assert_eq!((after.status, &after.body), (200, &done.body));

        let log = proxy.log();
        let summary: Vec<_> = log
            .iter()
            .map(|e| {
                (
                    e.method.as_str(),
                    e.content_range.clone(),
                    e.forwarded_body_bytes,
                    e.status,
                )
            })
            .collect();
        let cr = |s: String| Some(s);
        assert_eq!(
            summary,
            vec![
                ("POST", None, init_body.len() as u64, Some(200)),
                ("PUT", cr(format!("bytes */{total}")), 0, Some(308)),
                (
                    "PUT",
                    cr(range(0, CHUNK - 1, total)),
                    CHUNK as u64,
                    Some(308)
                ),
                (
                    "PUT",
                    cr(range(CHUNK, 2 * CHUNK - 1, total)),
                    CHUNK as u64,
                    Some(308)
                ),
                (
                    "PUT",
                    cr(range(2 * CHUNK, total - 1, total)),
                    1000,
                    Some(200)
                ),
                ("GET", None, 0, Some(200)),
                ("GET", None, 0, Some(200)),
                ("GET", None, 0, Some(200)),
                ("PUT", cr(format!("bytes */{total}")), 0, Some(200)),
            ]
        );
        assert_eq!(log[0].target, init_target(&bucket, name));
        assert_eq!(log[2].target, loc_target);
        assert!(
            log.iter()
                .all(|e| e.fault.is_none() && !e.precondition_failed)
        );
        proxy.clear_log();
        assert!(proxy.log().is_empty());
    }

    #[test]
    fn emulates_if_generation_match_zero() {
        let bucket = new_bucket();
        let proxy = FaultProxy::start(emulator());
        let addr = proxy_addr(&proxy);
        let name = "a/b.avro";
        let first = data(1000, 2);
        let second = data(1000, 3);

        let loc_a = location(&initiate(&addr, &bucket, name).unwrap());
        // Session B names the object in the JSON body only.
        let init_b = call(
            &addr,
            "POST",
            &format!("/upload/storage/v1/b/{bucket}/o?uploadType=resumable&ifGenerationMatch=0"),
            &[("Content-Type", "application/json")],
            br#"{"metadata":{"name":"decoy"},"name":"a/b.avro"}"#,
        )
        .unwrap();
        let loc_b = location(&init_b);
        assert!(upload_id(&loc_b).unwrap().contains(name), "{loc_b}");
        let r = put(&loc_b, &range(0, 499, 1000), &second[..500]).unwrap();
        assert_eq!(r.status, 308);
        let r = put(&loc_a, &range(0, 999, 1000), &first).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());

        proxy.clear_log();
        let again = initiate(&addr, &bucket, name).unwrap();
        assert_eq!(again.status, 412);
        assert_eq!(again.text(), PRECONDITION_FAILED_BODY);
        let late = put(&loc_b, &range(500, 999, 1000), &second[500..]).unwrap();
        assert_eq!(late.status, 412, "{}", late.text());
        // Status queries are left alone: B still holds its first 500 bytes.
        let status = put(&loc_b, "bytes */1000", b"").unwrap();
        assert_eq!(
            (status.status, status.header("range")),
            (308, Some("bytes=0-499"))
        );
        assert_eq!(media(&addr, &bucket, name), first);

        let log = proxy.log();
        let summary: Vec<_> = log
            .iter()
            .map(|e| {
                (
                    e.method.as_str(),
                    e.precondition_failed,
                    e.forwarded_body_bytes,
                    e.status,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("POST", true, 0, Some(412)),
                ("PUT", true, 0, Some(412)),
                ("PUT", false, 0, Some(308)),
                ("GET", false, 0, Some(200)),
            ]
        );

        // Without the precondition, nothing is checked: overwrite allowed.
        let target = format!(
            "/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name={}",
            percent_encode(name)
        );
        let loc_c = location(&call(&addr, "POST", &target, &[], b"").unwrap());
        let r = put(&loc_c, &range(0, 999, 1000), &second).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(media(&addr, &bucket, name), second);
    }

    #[test]
    fn status_faults_answer_without_forwarding() {
        let bucket = new_bucket();
        let proxy = FaultProxy::start(emulator());
        let addr = proxy_addr(&proxy);
        let loc = location(&initiate(&addr, &bucket, "s.avro").unwrap());
        let data = data(2000, 4);
        proxy.clear_log();
        for code in [503, 429, 408] {
            proxy.set_faults(always(FaultKind::Status(code)));
            let list = call(&addr, "GET", &format!("/storage/v1/b/{bucket}/o"), &[], b"").unwrap();
            assert_eq!(list.status, code);
            assert!(
                list.text().contains(&format!(r#""code":{code}"#)),
                "{}",
                list.text()
            );
            let chunk = put(&loc, &range(0, 999, 2000), &data[..1000]).unwrap();
            assert_eq!(chunk.status, code);
        }
        proxy.set_faults(Faults::default());
        let status = put(&loc, "bytes */2000", b"").unwrap();
        assert_eq!((status.status, status.header("range")), (308, None));

        let log = proxy.log();
        assert_eq!(log.len(), 7);
        for (entry, code) in log.chunks(2).zip([503, 429, 408]) {
            for e in entry {
                assert_eq!(
                    (e.fault, e.status, e.forwarded_body_bytes),
                    (Some(FaultKind::Status(code)), Some(code), 0)
                );
            }
        }
        assert_eq!(log[1].content_range.as_deref(), Some("bytes 0-999/2000"));
    }

    #[test]
    fn drop_mid_body_forwards_nothing() {
        let bucket = new_bucket();
        let proxy = FaultProxy::start(emulator());
        let addr = proxy_addr(&proxy);
        let loc = location(&initiate(&addr, &bucket, "d.avro").unwrap());
        let data = data(4 * CHUNK, 5);
        proxy.clear_log();
        proxy.set_faults(always(FaultKind::DropMidBody));
        assert!(
            put(
                &loc,
                &range(0, 2 * CHUNK - 1, 4 * CHUNK),
                &data[..2 * CHUNK]
            )
            .is_err()
        );
        assert!(call(&addr, "GET", &object_target(&bucket, "d.avro"), &[], b"").is_err());
        proxy.set_faults(Faults::default());
        let status = put(&loc, &format!("bytes */{}", 4 * CHUNK), b"").unwrap();
        assert_eq!((status.status, status.header("range")), (308, None));

        let log = proxy.log();
        assert_eq!(log.len(), 3);
        for e in &log[..2] {
            assert_eq!(
                (e.fault, e.status, e.forwarded_body_bytes),
                (Some(FaultKind::DropMidBody), None, 0)
            );
        }
    }

    #[test]
    fn stall_holds_then_closes() {
        let bucket = new_bucket();
        let proxy = FaultProxy::start(emulator());
        let addr = proxy_addr(&proxy);
        let loc = location(&initiate(&addr, &bucket, "t.avro").unwrap());
        proxy.clear_log();
        proxy.set_faults(Faults {
            stall: Duration::from_millis(700),
            ..always(FaultKind::Stall)
        });
        let started = Instant::now();
        assert!(put(&loc, "bytes 0-9/20", &[7; 10]).is_err());
        assert!(started.elapsed() >= Duration::from_millis(700));
        // A client with a shorter timeout gives up first.
        let started = Instant::now();
        let (a, t) = split_url(&loc);
        let r = send(
            &a,
            "PUT",
            &t,
            &[("Content-Range", "bytes 0-9/20")],
            &[7; 10],
            false,
            Duration::from_millis(200),
        );
        assert!(r.is_err());
        assert!(started.elapsed() < Duration::from_millis(650));
        proxy.set_faults(Faults::default());
        let status = put(&loc, "bytes */20", b"").unwrap();
        assert_eq!((status.status, status.header("range")), (308, None));
        let log = proxy.log();
        assert_eq!(log.len(), 3);
        for e in &log[..2] {
            assert_eq!(
                (e.fault, e.status, e.forwarded_body_bytes),
                (Some(FaultKind::Stall), None, 0)
            );
        }
    }

    #[test]
    fn lose_response_forwards_then_closes() {
        let bucket = new_bucket();
        let proxy = FaultProxy::start(emulator());
        let addr = proxy_addr(&proxy);
        let name = "l.avro";
        let data = data(2 * CHUNK + 10, 6);
        let total = data.len();
        let loc = location(&initiate(&addr, &bucket, name).unwrap());
        proxy.clear_log();

        proxy.set_faults(always(FaultKind::LoseResponse));
        let lost = put(&loc, &range(0, CHUNK - 1, total), &data[..CHUNK]);
        assert!(lost.is_err());
        proxy.set_faults(Faults::default());
        let status = put(&loc, &format!("bytes */{total}"), b"").unwrap();
        assert_eq!(
            (status.status, status.header("range")),
            (308, Some("bytes=0-262143"))
        );
        let r = put(
            &loc,
            &range(CHUNK, 2 * CHUNK - 1, total),
            &data[CHUNK..2 * CHUNK],
        )
        .unwrap();
        assert_eq!(r.status, 308);

        proxy.set_faults(always(FaultKind::LoseResponse));
        assert!(
            put(
                &loc,
                &range(2 * CHUNK, total - 1, total),
                &data[2 * CHUNK..]
            )
            .is_err()
        );
        proxy.set_faults(Faults::default());
        let status = put(&loc, &format!("bytes */{total}"), b"").unwrap();
        assert_eq!(status.status, 200, "{}", status.text());
        assert!(status.text().contains(&format!(r#""size": "{total}""#)));
        // Re-sending the final chunk gets the object too, not a 412.
        let again = put(
            &loc,
            &range(2 * CHUNK, total - 1, total),
            &data[2 * CHUNK..],
        )
        .unwrap();
        assert_eq!((again.status, &again.body), (200, &status.body));
        assert_eq!(media(&addr, &bucket, name), data);

        let log = proxy.log();
        let summary: Vec<_> = log
            .iter()
            .map(|e| (e.fault, e.forwarded_body_bytes, e.status))
            .collect();
        let lose = Some(FaultKind::LoseResponse);
        assert_eq!(
            summary,
            vec![
                (lose, CHUNK as u64, None),
                (None, 0, Some(308)),
                (None, CHUNK as u64, Some(308)),
                (lose, 10, None),
                (None, 0, Some(200)),
                (None, 0, Some(200)),
                (None, 0, Some(200)),
            ]
        );
    }

    #[test]
    fn body_delay_slows_requests_with_a_body() {
        let bucket = new_bucket();
        let proxy = FaultProxy::start(emulator());
        let addr = proxy_addr(&proxy);
        let loc = location(&initiate(&addr, &bucket, "slow.avro").unwrap());
        proxy.set_faults(Faults {
            body_delay: Duration::from_millis(500),
            ..Faults::default()
        });
        let started = Instant::now();
        assert_eq!(put(&loc, "bytes 0-9/20", &[1; 10]).unwrap().status, 308);
        assert!(started.elapsed() >= Duration::from_millis(500));
    }

    /// A client that re-queries the session after every failure survives all
    /// fault kinds at a high rate.
    #[test]
    fn a_retrying_client_survives_random_faults() {
        let bucket = new_bucket();
        let proxy = FaultProxy::start(emulator());
        let addr = proxy_addr(&proxy);
        let name = "r/retry.avro";
        let data = data(5 * CHUNK + 123, 7);
        let total = data.len();
        proxy.set_faults(Faults {
            rate: 0.4,
            seed: 7,
            kinds: vec![
                FaultKind::DropMidBody,
                FaultKind::Status(503),
                FaultKind::Status(429),
                FaultKind::Status(408),
                FaultKind::Stall,
                FaultKind::LoseResponse,
            ],
            stall: Duration::from_millis(200),
            ..Faults::default()
        });
        let mut attempts = 0;
        let mut attempt = || {
            attempts += 1;
            assert!(attempts < 500, "no progress");
        };
        let loc = loop {
            attempt();
            if let Ok(r) = initiate(&addr, &bucket, name)
                && r.status == 200
            {
                break r.header("location").unwrap().to_string();
            }
        };
        loop {
            attempt();
            let Ok(status) = put(&loc, &format!("bytes */{total}"), b"") else {
                continue;
            };
            let offset = match status.status {
                200 => break,
                308 => status.header("range").map_or(0, |r| {
                    r.rsplit('-').next().unwrap().parse::<usize>().unwrap() + 1
                }),
                _ => continue,
            };
            let end = (offset + CHUNK).min(total);
            let _ = put(&loc, &range(offset, end - 1, total), &data[offset..end]);
        }
        proxy.set_faults(Faults::default());
        assert_eq!(media(&addr, &bucket, name), data);
        let log = proxy.log();
        for kind in [
            FaultKind::DropMidBody,
            FaultKind::Stall,
            FaultKind::LoseResponse,
        ] {
            assert!(
                log.iter().any(|e| e.fault == Some(kind)),
                "{kind:?} never injected"
            );
        }
        assert!(log.iter().all(|e| !e.precondition_failed));
    }

    /// An upstream that answers every request 200 after `hold`, and reports
    /// the most requests it ever had in hand at once.
    fn counting_upstream(hold: Duration) -> (String, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (now, most) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let peak = most.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let (now, most) = (now.clone(), most.clone());
                thread::spawn(move || {
                    let stream = stream.unwrap();
                    let mut r = BufReader::new(&stream);
                    let (_, headers) = read_head(&mut r).unwrap().unwrap();
                    read_body(&mut r, body_kind(&headers).unwrap()).unwrap();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    thread::sleep(hold);
                    now.fetch_sub(1, Ordering::SeqCst);
                    let _ = (&stream).write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                });
            }
        });
        (addr, peak)
    }

    #[test]
    fn s3_create_only_writes_reach_upstream_one_at_a_time() {
        let most_at_once = |extra: &[(&'static str, &'static str)]| {
            let (upstream, most) = counting_upstream(Duration::from_millis(150));
            let proxy = FaultProxy::start(&upstream);
            let addr = proxy_addr(&proxy);
            let extra = extra.to_vec();
            let clients: Vec<_> = (0..4)
                .map(|i| {
                    let (addr, extra) = (addr.clone(), extra.clone());
                    thread::spawn(move || {
                        let r = call(&addr, "PUT", &format!("/b/k{i}"), &extra, b"x").unwrap();
                        assert_eq!(r.status, 200, "{}", r.text());
                    })
                })
                .collect();
            for c in clients {
                c.join().unwrap();
            }
            most.load(Ordering::SeqCst)
        };
        assert_eq!(most_at_once(&[("If-None-Match", "*")]), 1);
        assert!(most_at_once(&[]) > 1, "plain writes were serialised too");
    }

    #[test]
    fn s3_reads_wait_for_a_create_only_write_and_overlap_each_other() {
        let signed = ("Authorization", "AWS4-HMAC-SHA256 Credential=k/x");
        let most_at_once = |requests: &[(&'static str, bool)]| {
            let (upstream, most) = counting_upstream(Duration::from_millis(150));
            let proxy = FaultProxy::start(&upstream);
            let addr = proxy_addr(&proxy);
            let clients: Vec<_> = requests
                .iter()
                .enumerate()
                .map(|(i, &(method, create))| {
                    let addr = addr.clone();
                    thread::spawn(move || {
                        thread::sleep(Duration::from_millis(20 * i as u64));
                        let mut extra = vec![signed];
                        if create {
                            extra.push(("If-None-Match", "*"));
                        }
                        let body: &[u8] = if method == "PUT" { b"x" } else { b"" };
                        let r = call(&addr, method, "/b/k", &extra, body).unwrap();
                        assert_eq!(r.status, 200, "{}", r.text());
                    })
                })
                .collect();
            for c in clients {
                c.join().unwrap();
            }
            most.load(Ordering::SeqCst)
        };
        for read in ["HEAD", "GET"] {
            assert_eq!(most_at_once(&[("PUT", true), (read, false)]), 1, "{read}");
        }
        assert_eq!(most_at_once(&[("HEAD", false), ("GET", false)]), 2);
    }
}
