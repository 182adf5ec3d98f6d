//! Create-only uploads to S3.
//!
//! 1. The spool file is cut into parts of `part_bytes` (`plan`) and read
//!    once for each part's MD5 and SHA-256 (signed payload, `Content-MD5`).
//! 2. A file of one part is one `PUT` with `If-None-Match: *`, its MD5 and
//!    CRC32C; the store checks both. An answer whose ETag is not our MD5
//!    (SSE-KMS and SSE-C objects have other ETags) is confirmed by a HEAD:
//!    the store's CRC32C of what it holds.
//! 3. A larger file is a multipart upload streamed part by part from disk,
//!    each part checked by the store against its `Content-MD5`;
//!    `CompleteMultipartUpload` carries `If-None-Match: *` and names each
//!    part by the ETag the store gave it (an MD5 on most stores, not under
//!    SSE-KMS or SSE-C); an answer whose ETag is not the MD5 of the parts'
//!    MD5s is confirmed by a HEAD.
//! 4. The upload id is noted beside the spool file: a restarted process
//!    that rebuilt the same bytes asks ListParts what the store holds and
//!    sends only the rest; a note for other bytes is aborted.
//! 5. `412` means the object exists: equal size and CRC32C is `Identical`,
//!    anything else a `Conflict`. Never overwrites.
//! 6. All of this needs a store that honours `If-None-Match`; `probe`
//!    checks that before a writer starts.

use std::io::Read;
use std::path::Path;

use base64::Engine as _;
use md5::Digest as _;
use serde::{Deserialize, Serialize};

use super::api::{
    CRC32C, FORMAT_VERSION, LAST_EPOCH, MAX_TIMESTAMP, MIN_TIMESTAMP, NEXT_OFFSET, Payload,
    RECORD_COUNT, Reply, Request, S3Store, SKIPPED, TOPIC_ID, crc32c_b64, refused, tag, tags,
    unavailable,
};
use super::sign::hex;
use crate::store::object::{PutOutcome, StoreError, Upload};

/// How many times a vanished multipart upload is replaced before giving up.
const MAX_NEW_UPLOADS: u32 = 3;

/// A part the store holds: number, ETag (when the listing gives one), size.
type StoredPart = (u32, Option<String>, u64);

/// The ETag to complete the upload with, if the store holds the local part
/// `number` of `len` bytes whose MD5 is `md5`. Number and size decide: the
/// upload's note says it is for these very bytes, and the store checked
/// each part against its Content-MD5 when it was sent. The listed ETag is
/// not compared with the MD5, since under SSE-KMS or SSE-C it is not one;
/// a store that lists no ETags (s3s-fs) gave the MD5.
fn held(stored: &[StoredPart], number: u32, len: u64, md5: &str) -> Option<String> {
    stored
        .iter()
        .find(|(n, _, size)| *n == number && *size == len)
        .map(|(_, etag, _)| etag.clone().unwrap_or_else(|| md5.to_string()))
}

/// Where the parts of a file of `size` bytes start and how long they are.
pub fn plan(size: u64, part_bytes: u64) -> Vec<(u64, u64)> {
    if size <= part_bytes {
        return vec![(0, size)];
    }
    (0..size.div_ceil(part_bytes))
        .map(|i| {
            let offset = i * part_bytes;
            (offset, part_bytes.min(size - offset))
        })
        .collect()
}

/// One part of the file with its digests.
struct Part {
    number: u32,
    offset: u64,
    len: u64,
    md5: [u8; 16],
    sha256: String,
}

/// Reads the file once, digesting each planned part.
fn digest_parts(path: &Path, ranges: &[(u64, u64)]) -> std::io::Result<Vec<Part>> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut parts = Vec::with_capacity(ranges.len());
    for (i, &(offset, len)) in ranges.iter().enumerate() {
        let mut md5 = md5::Md5::new();
        let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..want])?;
            md5.update(&buf[..want]);
            sha.update(&buf[..want]);
            left -= want as u64;
        }
        parts.push(Part {
            number: i as u32 + 1,
            offset,
            len,
            md5: md5.finalize().into(),
            sha256: hex(sha.finish().as_ref()),
        });
    }
    Ok(parts)
}

/// The ETag S3 gives a multipart object: MD5 of the parts' MD5s, `-N`.
fn multipart_etag(parts: &[Part]) -> String {
    let mut md5 = md5::Md5::new();
    for p in parts {
        md5.update(p.md5);
    }
    format!("{}-{}", hex(&md5.finalize()), parts.len())
}

fn unquote(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// What is remembered of a multipart upload across restarts.
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
struct Note {
    bucket: String,
    name: String,
    upload_id: String,
    size: u64,
    crc32c: u32,
    part_bytes: u64,
}

fn load_note(path: &Path) -> Option<Note> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// One upload of one file.
struct Put<'a> {
    store: &'a S3Store,
    upload: &'a Upload<'a>,
    name: String,
    parts: Vec<Part>,
}

pub(super) fn put(store: &S3Store, upload: &Upload) -> Result<PutOutcome, StoreError> {
    let ranges = plan(upload.size, store.part_bytes);
    let parts = digest_parts(upload.path, &ranges).map_err(|cause| StoreError::Io {
        what: format!("cannot read spool file {}", upload.path.display()),
        cause,
    })?;
    let put = Put {
        store,
        upload,
        name: store.object_name(upload.key),
        parts,
    };
    let outcome = if put.parts.len() == 1 {
        put.single()
    } else {
        put.multipart()
    };
    if outcome.is_ok() {
        let _ = std::fs::remove_file(upload.session_note);
    }
    outcome
}

impl Put<'_> {
    fn what(&self) -> String {
        format!(
            "cannot store object s3://{}/{}",
            self.store.bucket, self.name
        )
    }

    /// The object metadata as `x-amz-meta-*` headers.
    fn metadata(&self) -> Vec<(String, String)> {
        let s = &self.upload.summary;
        let mut out = vec![(
            "content-type".to_string(),
            "application/octet-stream".to_string(),
        )];
        let mut meta = |k: &str, v: String| out.push((format!("x-amz-meta-{k}"), v));
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
        meta(CRC32C, crc32c_b64(self.upload.crc32c));
        out
    }

    fn call(&self, req: &Request) -> Result<Reply, StoreError> {
        let what = self.what();
        self.store.call(&|| what.clone(), req)
    }

    fn part_payload(&self, p: &Part) -> Payload<'_> {
        Payload::File {
            path: self.upload.path,
            offset: p.offset,
            len: p.len,
            sha256: &self.parts[p.number as usize - 1].sha256,
        }
    }

    /// A file of one part: one conditional PUT.
    fn single(&self) -> Result<PutOutcome, StoreError> {
        let part = &self.parts[0];
        let mut headers = self.metadata();
        headers.push(("if-none-match".into(), "*".into()));
        headers.push(("content-md5".into(), b64(&part.md5)));
        headers.push((
            "x-amz-checksum-crc32c".into(),
            crc32c_b64(self.upload.crc32c),
        ));
        let req = Request {
            method: "PUT",
            key: Some(&self.name),
            query: vec![],
            headers,
            body: self.part_payload(part),
        };
        let reply = self.call(&req)?;
        match reply.status {
            200 | 201 => {
                let etag = reply.header("etag").map(unquote).unwrap_or("");
                if etag == hex(&part.md5) {
                    Ok(PutOutcome::Created)
                } else {
                    self.confirm()
                }
            }
            412 | 409 => self.compare(),
            _ => Err(self.store.refusal(self.what(), &reply)),
        }
    }

    /// The store said it created the object, with an ETag that does not
    /// show which bytes it holds: its checksum does.
    fn confirm(&self) -> Result<PutOutcome, StoreError> {
        Ok(match self.compare()? {
            PutOutcome::Identical => PutOutcome::Created,
            other => other,
        })
    }

    /// The object exists: ours (identical bytes) or another builder's.
    fn compare(&self) -> Result<PutOutcome, StoreError> {
        let info = self.store.head_object(&self.name)?.ok_or_else(|| {
            unavailable(
                self.what(),
                "the object existed a moment ago and is gone now",
            )
        })?;
        if info.crc32c == Some(self.upload.crc32c) && info.size == self.upload.size {
            Ok(PutOutcome::Identical)
        } else {
            Ok(PutOutcome::Conflict(info))
        }
    }

    fn upload_query(upload_id: &str) -> Vec<(String, String)> {
        vec![("uploadId".into(), upload_id.into())]
    }

    /// A multipart upload, resumed from the note when it is for these bytes.
    fn multipart(&self) -> Result<PutOutcome, StoreError> {
        let note_path = self.upload.session_note;
        let note = load_note(note_path);
        let matches = |n: &Note| {
            n.bucket == self.store.bucket
                && n.name == self.name
                && n.size == self.upload.size
                && n.crc32c == self.upload.crc32c
                && n.part_bytes == self.store.part_bytes
        };
        let mut resumed = match note {
            Some(n) if matches(&n) => Some(n.upload_id),
            Some(stale) => {
                log::info!(
                    "aborting the upload of other bytes to {} noted in {}",
                    stale.name,
                    note_path.display()
                );
                abort(self.store, &stale.name, &stale.upload_id);
                let _ = std::fs::remove_file(note_path);
                None
            }
            None => None,
        };
        for _ in 0..MAX_NEW_UPLOADS {
            let (upload_id, stored) = match resumed.take() {
                Some(id) => match self.list_parts(&id)? {
                    Some(stored) => {
                        log::info!(
                            "resuming the upload of {}: the store holds {} of {} parts",
                            self.name,
                            stored.len(),
                            self.parts.len()
                        );
                        (id, stored)
                    }
                    None => continue,
                },
                None => {
                    if self.store.head_object(&self.name)?.is_some() {
                        return self.compare();
                    }
                    (self.create()?, Vec::new())
                }
            };
            let mut etags = Vec::with_capacity(self.parts.len());
            for part in &self.parts {
                if let Some(etag) = held(&stored, part.number, part.len, &hex(&part.md5)) {
                    etags.push(etag);
                    continue;
                }
                if self.store.cancel.is_set() {
                    // The upload is noted: a later run resumes it.
                    return Err(StoreError::Interrupted { what: self.what() });
                }
                match self.upload_part(&upload_id, part)? {
                    Some(etag) => etags.push(etag),
                    None => break,
                }
            }
            match self.complete(&upload_id, &etags)? {
                Some(outcome) => return Ok(outcome),
                None => {
                    let _ = std::fs::remove_file(note_path);
                }
            }
        }
        Err(unavailable(self.what(), "multipart uploads keep vanishing"))
    }

    /// CreateMultipartUpload with the metadata; notes the upload id.
    fn create(&self) -> Result<String, StoreError> {
        let req = Request {
            method: "POST",
            key: Some(&self.name),
            query: vec![("uploads".into(), String::new())],
            headers: self.metadata(),
            body: Payload::Empty,
        };
        let reply = self.call(&req)?;
        let id = match (reply.status, tag(&reply.text(), "UploadId")) {
            (200, Some(id)) => id,
            _ => return Err(self.store.refusal(self.what(), &reply)),
        };
        let note = Note {
            bucket: self.store.bucket.clone(),
            name: self.name.clone(),
            upload_id: id.clone(),
            size: self.upload.size,
            crc32c: self.upload.crc32c,
            part_bytes: self.store.part_bytes,
        };
        let json = serde_json::to_vec(&note).expect("note serializes");
        if let Err(e) = std::fs::write(self.upload.session_note, json) {
            log::warn!(
                "cannot note the upload id in {}: {e}",
                self.upload.session_note.display()
            );
        }
        Ok(id)
    }

    /// The parts the store holds (number, ETag, size); None when the
    /// upload no longer exists.
    fn list_parts(&self, upload_id: &str) -> Result<Option<Vec<StoredPart>>, StoreError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut query = Self::upload_query(upload_id);
            if let Some(m) = &marker {
                query.push(("part-number-marker".into(), m.clone()));
            }
            let req = Request {
                method: "GET",
                key: Some(&self.name),
                query,
                headers: vec![],
                body: Payload::Empty,
            };
            let reply = self.call(&req)?;
            match reply.status {
                200 => {}
                404 => return Ok(None),
                _ => return Err(self.store.refusal(self.what(), &reply)),
            }
            let text = reply.text();
            for p in tags(&text, "Part") {
                let number = tag(p, "PartNumber").and_then(|n| n.parse().ok());
                let size = tag(p, "Size").and_then(|n| n.parse().ok());
                if let (Some(n), Some(size)) = (number, size) {
                    let etag = tag(p, "ETag").map(|e| unquote(&e).to_string());
                    out.push((n, etag, size));
                }
            }
            match tag(&text, "NextPartNumberMarker") {
                Some(m) if tag(&text, "IsTruncated").as_deref() == Some("true") => marker = Some(m),
                _ => return Ok(Some(out)),
            }
        }
    }

    /// UploadPart, checked by the store against the part's Content-MD5: the
    /// ETag it gives the part, None when the upload no longer exists.
    fn upload_part(&self, upload_id: &str, part: &Part) -> Result<Option<String>, StoreError> {
        let mut query = Self::upload_query(upload_id);
        query.push(("partNumber".into(), part.number.to_string()));
        let req = Request {
            method: "PUT",
            key: Some(&self.name),
            query,
            headers: vec![("content-md5".into(), b64(&part.md5))],
            body: self.part_payload(part),
        };
        let reply = self.call(&req)?;
        match reply.status {
            200 => Ok(Some(
                reply
                    .header("etag")
                    .map(unquote)
                    .filter(|e| !e.is_empty())
                    .map_or_else(|| hex(&part.md5), str::to_string),
            )),
            404 => Ok(None),
            _ => Err(self.store.refusal(self.what(), &reply)),
        }
    }

    /// CompleteMultipartUpload of the parts named by `etags`, create-only;
    /// None when the upload vanished without creating the object (start
    /// over).
    fn complete(
        &self,
        upload_id: &str,
        etags: &[String],
    ) -> Result<Option<PutOutcome>, StoreError> {
        let mut body = String::from("<CompleteMultipartUpload>");
        for (p, etag) in self.parts.iter().zip(etags) {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>\"{etag}\"</ETag></Part>",
                p.number,
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let req = Request {
            method: "POST",
            key: Some(&self.name),
            query: Self::upload_query(upload_id),
            headers: vec![
                ("if-none-match".into(), "*".into()),
                ("content-type".into(), "application/xml".into()),
            ],
            body: Payload::Bytes(body.as_bytes()),
        };
        let reply = self.call(&req)?;
        match (reply.status, reply.code()) {
            (200, None) => {
                let etag = tag(&reply.text(), "ETag").unwrap_or_default();
                if unquote(&etag) == multipart_etag(&self.parts) {
                    Ok(Some(PutOutcome::Created))
                } else {
                    self.confirm().map(Some)
                }
            }
            (412 | 409, _) => {
                abort(self.store, &self.name, upload_id);
                self.compare().map(Some)
            }
            // Completed before (its answer lost), or gone.
            (404, _) => match self.store.head_object(&self.name)? {
                Some(_) => self.compare().map(Some),
                None => Ok(None),
            },
            _ => Err(self.store.refusal(self.what(), &reply)),
        }
    }
}

/// AbortMultipartUpload, best effort (a leftover upload costs storage, not
/// correctness).
pub(super) fn abort(store: &S3Store, name: &str, upload_id: &str) {
    let req = Request {
        method: "DELETE",
        key: Some(name),
        query: vec![("uploadId".into(), upload_id.into())],
        headers: vec![],
        body: Payload::Empty,
    };
    let what = || format!("abort of upload {upload_id} of {name}");
    match store.call(&what, &req) {
        Ok(r) if matches!(r.status, 204 | 200 | 404) => {}
        Ok(r) => log::warn!(
            "cannot abort upload {upload_id} of {name}: {}",
            refused(name.into(), r.message())
        ),
        Err(e) => log::warn!("cannot abort upload {upload_id} of {name}: {e}"),
    }
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn files_are_cut_into_parts_that_cover_every_byte_once() {
        type Case = (u64, u64, &'static [(u64, u64)]);
        let table: [Case; 5] = [
            (1, 16 * MIB, &[(0, 1)]),
            (16 * MIB, 16 * MIB, &[(0, 16 * MIB)]),
            (16 * MIB + 1, 16 * MIB, &[(0, 16 * MIB), (16 * MIB, 1)]),
            (
                12 * MIB,
                5 * MIB,
                &[(0, 5 * MIB), (5 * MIB, 5 * MIB), (10 * MIB, 2 * MIB)],
            ),
            (10 * MIB, 5 * MIB, &[(0, 5 * MIB), (5 * MIB, 5 * MIB)]),
        ];
        for (size, part, want) in table {
            assert_eq!(plan(size, part), want, "{size} by {part}");
        }
    }

    #[test]
    fn a_listed_part_of_the_right_number_and_size_is_ours_by_the_etag_it_was_given() {
        let md5 = "0123456789abcdef0123456789abcdef";
        let kms = "7c2ba0a1e3f9d8c5b4a3928170f6e5d4";
        let table: [(StoredPart, Option<&str>); 5] = [
            ((2, Some(md5.to_string()), 100), Some(md5)),
            // s3s-fs lists no ETags: the part was given its MD5.
            ((2, None, 100), Some(md5)),
            // SSE-KMS: the store's own ETag, which completion must name.
            ((2, Some(kms.to_string()), 100), Some(kms)),
            ((3, Some(md5.to_string()), 100), None),
            ((2, None, 99), None),
        ];
        for (stored, want) in table {
            let got = held(std::slice::from_ref(&stored), 2, 100, md5);
            assert_eq!(got.as_deref(), want, "{stored:?}");
        }
    }

    #[test]
    fn parts_are_digested_and_the_multipart_etag_follows_s3() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let parts = digest_parts(&path, &plan(11, 5)).unwrap();
        assert_eq!(parts.len(), 3);
        // MD5("hello") and SHA-256("hello").
        assert_eq!(hex(&parts[0].md5), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(
            parts[0].sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!((parts[2].number, parts[2].offset, parts[2].len), (3, 10, 1));
        let etag = multipart_etag(&parts);
        assert!(etag.ends_with("-3") && etag.len() == 34, "{etag}");
        assert_eq!(unquote("\"abc\""), "abc");
    }
}
