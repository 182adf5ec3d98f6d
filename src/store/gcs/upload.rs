//! Resumable uploads (GCS JSON API), create-only.
//!
//! 1. Initiate with `uploadType=resumable&ifGenerationMatch=0`, carrying the
//!    object metadata and the file's CRC32C and MD5 (GCS checks them when the
//!    upload completes). `412` means the object exists: compare checksums.
//! 2. Stream the spool file in chunks of `chunk_bytes` (a multiple of
//!    256 KiB), straight from disk. `308` is "resume incomplete": continue
//!    after the server's `Range` (no `Range`: nothing persisted).
//! 3. After any fault, ask the session what it holds (`Content-Range: bytes
//!    */SIZE`) and resume from there: never restart a live session from zero,
//!    never skip a byte. A session that is gone (404/410) is either complete
//!    (the object exists) or must start over.
//! 4. The session URI is kept beside the spool file, so a restarted process
//!    that rebuilds the same bytes resumes the same upload.
//! 5. The stored object's CRC32C must equal ours before the put succeeds.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use md5::Digest as _;
use serde::{Deserialize, Serialize};

use super::api::{
    FORMAT_VERSION, GcsStore, LAST_EPOCH, MAX_TIMESTAMP, MIN_TIMESTAMP, NEXT_OFFSET,
    ObjectResource, Payload, RECORD_COUNT, Reply, Request, SKIPPED, SendError, TOPIC_ID,
    crc32c_b64, refused, unavailable,
};
use crate::store::http::{self as web, Backoff, Failure, encode};
use crate::store::object::{PutOutcome, StoreError, Upload};

/// GCS persists resumable uploads in multiples of this.
const QUANTUM: u64 = 256 << 10;
/// How many times a vanished session is replaced before giving up.
const MAX_NEW_SESSIONS: u32 = 5;

/// What is remembered of an upload session across restarts.
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
struct Session {
    /// The session belongs to this object only (a changed store.url must
    /// not complete an upload under the old name).
    bucket: String,
    name: String,
    uri: String,
    size: u64,
    crc32c: u32,
    md5: String,
}

fn load_session(path: &Path) -> Option<Session> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Base64 MD5 of a file (GCS's `md5Hash`).
fn md5_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}

/// The next byte to send, from a `308`'s `Range: bytes=0-N` header. GCS
/// persists whole 256 KiB quanta until the last byte, so anything else (an
/// emulator answering `bytes=0-0` for an empty session) is rounded down:
/// sending a byte twice is harmless, skipping one is not.
pub fn persisted(range: Option<&str>, size: u64) -> u64 {
    let Some(end) = range
        .and_then(|r| r.trim().strip_prefix("bytes=0-"))
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return 0;
    };
    let next = (end + 1).min(size);
    if next == size {
        next
    } else {
        next - next % QUANTUM
    }
}

/// Where a session stands.
enum Progress {
    /// The server holds bytes `[0, n)`.
    At(u64),
    /// The upload completed; the object resource.
    Done(ObjectResource),
    /// The session no longer exists, or can no longer be used.
    Gone,
    /// The object was created by someone else meanwhile (412).
    Taken,
}

/// One upload of one file.
struct Put<'a> {
    store: &'a GcsStore,
    upload: &'a Upload<'a>,
    name: String,
    md5: String,
    session_file: PathBuf,
    deadline: Instant,
    backoff: Backoff,
}

pub(super) fn put(store: &GcsStore, upload: &Upload) -> Result<PutOutcome, StoreError> {
    let name = store.object_name(upload.key);
    let md5 = md5_of(upload.path).map_err(|cause| StoreError::Io {
        what: format!("cannot read spool file {}", upload.path.display()),
        cause,
    })?;
    let mut put = Put {
        store,
        upload,
        name,
        md5,
        session_file: upload.session_note.to_path_buf(),
        deadline: Instant::now() + store.retry_timeout,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
    };
    let outcome = put.run();
    if outcome.is_ok() {
        let _ = std::fs::remove_file(&put.session_file);
    }
    outcome
}

impl Put<'_> {
    fn what(&self) -> String {
        format!(
            "cannot store object gs://{}/{}",
            self.store.bucket, self.name
        )
    }

    fn run(&mut self) -> Result<PutOutcome, StoreError> {
        let size = self.upload.size;
        let remembered = load_session(&self.session_file).filter(|s| {
            s.bucket == self.store.bucket
                && s.name == self.name
                && s.size == size
                && s.crc32c == self.upload.crc32c
                && s.md5 == self.md5
        });
        let mut resumed = remembered.is_some();
        let mut uri = match remembered {
            Some(s) => {
                log::info!("resuming the upload of {} ({} bytes)", self.name, size);
                s.uri
            }
            None => match self.initiate()? {
                Some(uri) => uri,
                None => return self.compare(),
            },
        };
        let mut sessions = 1;
        loop {
            let progress = if resumed {
                self.query(&uri)?
            } else {
                Progress::At(0)
            };
            let outcome = match progress {
                Progress::At(offset) => self.send_from(&uri, offset)?,
                other => other,
            };
            match outcome {
                Progress::Done(object) => return self.finished(&object),
                Progress::Taken => return self.compare(),
                Progress::At(_) => unreachable!("send_from ends with Done, Gone or Taken"),
                Progress::Gone => {
                    // Completed before we heard of it, or expired.
                    if self.store.get_resource(&self.name)?.is_some() {
                        return self.compare();
                    }
                    let _ = std::fs::remove_file(&self.session_file);
                    if sessions >= MAX_NEW_SESSIONS {
                        return Err(unavailable(self.what(), "upload sessions keep vanishing"));
                    }
                    sessions += 1;
                    resumed = false;
                    uri = match self.initiate()? {
                        Some(uri) => uri,
                        None => return self.compare(),
                    };
                }
            }
        }
    }

    /// Starts a session; None when the object already exists (412).
    fn initiate(&mut self) -> Result<Option<String>, StoreError> {
        let s = &self.upload.summary;
        let mut metadata = serde_json::Map::new();
        let mut meta = |k: &str, v: String| {
            metadata.insert(k.to_string(), serde_json::Value::String(v));
        };
        meta(NEXT_OFFSET, s.next_offset.to_string());
        meta(RECORD_COUNT, s.record_count.to_string());
        if let (Some(min), Some(max)) = (s.min_timestamp, s.max_timestamp) {
            meta(MIN_TIMESTAMP, min.to_string());
            meta(MAX_TIMESTAMP, max.to_string());
        }
        if let Some(epoch) = s.last_epoch {
            meta(LAST_EPOCH, epoch.to_string());
        }
        if let Some(id) = self.upload.topic_id {
            meta(TOPIC_ID, id.hyphenated().to_string());
        }
        if let Some(skipped) = self.upload.skipped {
            meta(SKIPPED, skipped.as_str().to_string());
        }
        meta(
            FORMAT_VERSION,
            crate::format::avro::FORMAT_VERSION.to_string(),
        );
        let body = serde_json::json!({
            "name": self.name,
            "contentType": "application/octet-stream",
            "crc32c": crc32c_b64(self.upload.crc32c),
            "md5Hash": self.md5,
            "metadata": metadata,
        })
        .to_string();
        let req = Request {
            method: "POST",
            url: format!(
                "{}/upload/storage/v1/b/{}/o?uploadType=resumable&ifGenerationMatch=0&name={}",
                self.store.endpoint,
                encode(&self.store.bucket),
                encode(&self.name)
            ),
            headers: vec![
                ("content-type", "application/json; charset=UTF-8".into()),
                ("x-upload-content-type", "application/octet-stream".into()),
                ("x-upload-content-length", self.upload.size.to_string()),
            ],
            body: Payload::Bytes(body.as_bytes()),
        };
        let what = self.what();
        let reply = self.store.call(&|| what.clone(), &req)?;
        match reply.status {
            200 | 201 => {
                let location = reply.header("location").ok_or_else(|| {
                    refused(self.what(), "upload session answer without a Location")
                })?;
                let uri = on_endpoint(&self.store.endpoint, location);
                let session = Session {
                    bucket: self.store.bucket.clone(),
                    name: self.name.clone(),
                    uri: uri.clone(),
                    size: self.upload.size,
                    crc32c: self.upload.crc32c,
                    md5: self.md5.clone(),
                };
                let json = serde_json::to_vec(&session).expect("session serializes");
                if let Err(e) = std::fs::write(&self.session_file, json) {
                    log::warn!(
                        "cannot remember upload session in {}: {e}",
                        self.session_file.display()
                    );
                }
                Ok(Some(uri))
            }
            412 => Ok(None),
            _ => Err(self.store.refusal(self.what(), &reply)),
        }
    }

    /// Waits before the next attempt, or gives up at the deadline.
    fn pause(&mut self, failure: Failure, why: &str) -> Result<(), StoreError> {
        let what = self.what();
        self.store.pause(
            &|| what.clone(),
            &mut self.backoff,
            self.deadline,
            failure,
            why,
        )
    }

    /// One exchange with the session (a 401 refreshes the token once),
    /// read as what it says about the upload; Err for a transient failure
    /// worth another attempt.
    fn exchange(
        &mut self,
        req: &Request,
    ) -> Result<Result<Progress, (Failure, String)>, StoreError> {
        let size = self.upload.size;
        let mut refreshed = false;
        loop {
            return match self.store.send(req) {
                Ok(reply) if reply.status == 401 && !refreshed => {
                    self.store.tokens.invalidate();
                    refreshed = true;
                    continue;
                }
                Ok(reply) => Ok(match reply.status {
                    308 => Ok(Progress::At(persisted(reply.header("range"), size))),
                    200 | 201 => Ok(Progress::Done(self.object(&reply)?)),
                    412 => Ok(Progress::Taken),
                    s if web::retriable(Failure::Status(s)) => {
                        Err((Failure::Status(s), format!("HTTP {s}: {}", reply.message())))
                    }
                    // Expired or cancelled: this session is of no more use.
                    s @ (404 | 410 | 499) => {
                        log::warn!(
                            "upload session of {} answered HTTP {s} ({}); starting a new one",
                            self.name,
                            reply.message()
                        );
                        Ok(Progress::Gone)
                    }
                    // Refused (credentials, a checksum the server does not
                    // accept): a new session would be refused the same way.
                    _ => return Err(self.store.refusal(self.what(), &reply)),
                }),
                Err(SendError::Transient(failure, why)) => Ok(Err((failure, why))),
                Err(SendError::Final(why)) => Err(refused(self.what(), why)),
                Err(SendError::Spool(what, cause)) => Err(StoreError::Io { what, cause }),
            };
        }
    }

    /// Asks the session what it holds.
    fn query(&mut self, uri: &str) -> Result<Progress, StoreError> {
        let size = self.upload.size;
        loop {
            let req = Request {
                method: "PUT",
                url: uri.to_string(),
                headers: vec![("content-range", format!("bytes */{size}"))],
                body: Payload::Empty,
            };
            match self.exchange(&req)? {
                Ok(progress) => return Ok(progress),
                Err((failure, why)) => self.pause(failure, &why)?,
            }
        }
    }

    /// Sends chunks from `offset` until the upload completes, the session
    /// is gone or the object was taken; after a fault, resumes from what
    /// the server reports. The retry deadline runs from the last progress.
    fn send_from(&mut self, uri: &str, mut offset: u64) -> Result<Progress, StoreError> {
        let size = self.upload.size;
        let mut stalls = 0;
        loop {
            if self.store.cancel.is_set() {
                // The session is noted: a later run resumes it.
                return Err(StoreError::Interrupted { what: self.what() });
            }
            if offset >= size {
                // Everything is there but the session is not finished (a
                // lost final answer): a status query completes it.
                match self.query(uri)? {
                    Progress::At(n) if n >= size => return Ok(Progress::Gone),
                    Progress::At(n) => {
                        offset = n;
                        continue;
                    }
                    other => return Ok(other),
                }
            }
            let len = self.store.chunk_bytes.min(size - offset);
            let req = Request {
                method: "PUT",
                url: uri.to_string(),
                headers: vec![(
                    "content-range",
                    format!("bytes {offset}-{}/{size}", offset + len - 1),
                )],
                body: Payload::File {
                    path: self.upload.path,
                    offset,
                    len,
                },
            };
            let (failure, why) = match self.exchange(&req)? {
                Ok(Progress::At(n)) if n > offset => {
                    offset = n;
                    stalls = 0;
                    self.deadline = Instant::now() + self.store.retry_timeout;
                    self.backoff.reset();
                    continue;
                }
                // A 308 that moved nothing forward: a fault like any other.
                Ok(Progress::At(n)) => {
                    stalls += 1;
                    (
                        Failure::Status(308),
                        format!("the server kept {n} bytes after a chunk ({stalls} time(s))"),
                    )
                }
                Ok(other) => return Ok(other),
                Err(failed) => failed,
            };
            self.pause(failure, &why)?;
            match self.query(uri)? {
                Progress::At(n) => offset = n,
                other => return Ok(other),
            }
        }
    }

    fn object(&self, reply: &Reply) -> Result<ObjectResource, StoreError> {
        serde_json::from_slice(&reply.body).map_err(|e| {
            unavailable(
                self.what(),
                format!("unexpected answer to the last chunk: {e}"),
            )
        })
    }

    /// The upload completed: it is ours only if the checksums say so.
    fn finished(&self, object: &ObjectResource) -> Result<PutOutcome, StoreError> {
        if object.name != self.name {
            return Err(refused(
                self.what(),
                format!("the upload session created object {} instead", object.name),
            ));
        }
        let info = self.store.info(object)?;
        if info.crc32c == Some(self.upload.crc32c) && info.size == self.upload.size {
            Ok(PutOutcome::Created)
        } else {
            // Someone else's object under our name (a create-only race lost
            // at the last chunk).
            self.compare()
        }
    }

    /// The object exists: ours (identical bytes) or another builder's.
    fn compare(&self) -> Result<PutOutcome, StoreError> {
        let object = self.store.get_resource(&self.name)?.ok_or_else(|| {
            unavailable(
                self.what(),
                "the object existed a moment ago and is gone now",
            )
        })?;
        let info = self.store.info(&object)?;
        let same_md5 = info.md5.as_deref().is_none_or(|m| m == self.md5);
        if info.crc32c == Some(self.upload.crc32c) && info.size == self.upload.size && same_md5 {
            Ok(PutOutcome::Identical)
        } else {
            Ok(PutOutcome::Conflict(info))
        }
    }
}

/// The session URI `location` on the configured endpoint's scheme and
/// host: the session's requests go where the configuration says (GCS
/// answers with its own host, so this changes nothing there; a TLS proxy or
/// a private endpoint in front of the API would otherwise be bypassed).
fn on_endpoint(endpoint: &str, location: &str) -> String {
    let origin = |url: &str| -> Option<usize> {
        let rest = url.find("://")? + 3;
        Some(url[rest..].find('/').map_or(url.len(), |i| rest + i))
    };
    match (origin(endpoint), origin(location)) {
        (Some(e), Some(l)) => format!("{}{}", &endpoint[..e], &location[l..]),
        _ => location.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_sessions_stay_on_the_configured_endpoint() {
        for (endpoint, location, want) in [
            (
                "https://storage.googleapis.com",
                "https://storage.googleapis.com/upload/storage/v1/b/b/o?upload_id=x",
                "https://storage.googleapis.com/upload/storage/v1/b/b/o?upload_id=x",
            ),
            (
                "https://127.0.0.1:9443",
                "http://127.0.0.1:9443/upload/storage/v1/b/b/o?upload_id=x",
                "https://127.0.0.1:9443/upload/storage/v1/b/b/o?upload_id=x",
            ),
            (
                "https://proxy.example:8443/gcs",
                "http://internal:9023/gcs/upload/x",
                "https://proxy.example:8443/gcs/upload/x",
            ),
            ("https://h", "/upload/relative", "/upload/relative"),
        ] {
            assert_eq!(on_endpoint(endpoint, location), want, "{location}");
        }
    }

    #[test]
    fn the_resume_point_never_skips_a_byte() {
        let size = 10 * QUANTUM + 5;
        let cases = [
            (None, 0),
            (Some("bytes=0-262143"), QUANTUM),
            (Some("bytes=0-524287"), 2 * QUANTUM),
            // The emulator's answer for a session with no byte yet.
            (Some("bytes=0-0"), 0),
            // Not on a quantum: resend from the last whole one.
            (Some("bytes=0-300000"), QUANTUM),
            (Some(&*format!("bytes=0-{}", size - 1)), size),
            (Some("garbage"), 0),
        ];
        for (range, want) in cases {
            assert_eq!(persisted(range, size), want, "{range:?}");
        }
    }
}
