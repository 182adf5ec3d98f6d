//! The create-only check a writer makes before it starts: everything
//! `upload` promises rests on the store refusing a create-only write
//! (`If-None-Match: *`) of a name that exists, on a PUT and on
//! CompleteMultipartUpload. A store that ignores the header overwrites
//! instead, silently, so a second writer of a partition (a rebalance, a
//! second process) could replace a file with one of another range.
//!
//! [`PROBE`] is written create-only until it exists (the first start
//! only), then the store must refuse a PUT of it and the completion of a
//! one-part multipart upload to it. It stays: an archiver need not be
//! allowed to delete. Never touches an archive file.

use md5::Digest as _;

use super::api::{Payload, Reply, Request, S3Store, crc32c_b64, refused, tag, unavailable};
use super::upload::{abort, b64};
use crate::store::object::StoreError;

/// The probe's name under the prefix: `~` is not allowed in a topic name,
/// so no archive file is ever called so, and the leading `_` makes
/// Hadoop-style readers (Spark, Hive) skip it.
pub const PROBE: &str = "_kafka-store~create-only-probe";
const PROBE_TEXT: &[u8] =
    b"kafka-store writes this object create-only (If-None-Match: *) at start to check that the store refuses to overwrite objects.\n";
/// Writes of the probe before the store must have created it or refused.
const ATTEMPTS: usize = 4;
/// What to do about a store that overwrites.
const ADVICE: &str = "so two writers of one partition (a rebalance, a second process) could replace each other's files; use a store that honours If-None-Match (AWS S3, MinIO, Ceph RGW) or, if only one process ever writes this archive, set s3.require_create_only = false";

/// An error unless the store refuses to overwrite [`PROBE`] by a PUT and
/// by CompleteMultipartUpload.
pub(super) fn check_create_only(store: &S3Store) -> Result<(), StoreError> {
    let name = store.folder(PROBE);
    let what = || format!("s3://{}/{name}", store.bucket);
    let md5 = b64(&md5::Md5::digest(PROBE_TEXT));
    let put = Request {
        method: "PUT",
        key: Some(&name),
        query: vec![],
        headers: vec![
            ("if-none-match".into(), "*".into()),
            // Buckets with Object Lock refuse a PUT without a checksum.
            ("content-md5".into(), md5.clone()),
            (
                "x-amz-checksum-crc32c".into(),
                crc32c_b64(crc32c::crc32c(PROBE_TEXT)),
            ),
        ],
        body: Payload::Bytes(PROBE_TEXT),
    };
    let mut created = false;
    for _ in 0..ATTEMPTS {
        let reply = store.call(&what, &put)?;
        match (reply.status, reply.code().as_deref()) {
            (412, _) => return check_completion(store, &name, &what, &md5),
            // A concurrent create-only write of it: the next one sees it.
            (409, Some("ConditionalRequestConflict")) => {}
            (200 | 201, _) if !created => created = true,
            (200 | 201, _) => return Err(overwrites(what(), "PUT")),
            _ => return Err(not_checked(store, what(), &reply)),
        }
    }
    Err(unavailable(
        what(),
        "the store neither created it nor refused to write it again",
    ))
}

/// A one-part multipart upload to the existing probe, completed
/// create-only, must be refused; the upload is aborted.
fn check_completion(
    store: &S3Store,
    name: &str,
    what: &dyn Fn() -> String,
    md5: &str,
) -> Result<(), StoreError> {
    let create = Request {
        method: "POST",
        key: Some(name),
        query: vec![("uploads".into(), String::new())],
        headers: vec![],
        body: Payload::Empty,
    };
    let reply = store.call(what, &create)?;
    let Some(upload_id) = tag(&reply.text(), "UploadId").filter(|_| reply.status == 200) else {
        return Err(not_checked(store, what(), &reply));
    };
    let result = complete(store, name, what, md5, &upload_id);
    abort(store, name, &upload_id);
    result
}

fn complete(
    store: &S3Store,
    name: &str,
    what: &dyn Fn() -> String,
    md5: &str,
    upload_id: &str,
) -> Result<(), StoreError> {
    let upload = || vec![("uploadId".to_string(), upload_id.to_string())];
    let mut query = upload();
    query.push(("partNumber".into(), "1".into()));
    let part = Request {
        method: "PUT",
        key: Some(name),
        query,
        headers: vec![("content-md5".into(), md5.to_string())],
        body: Payload::Bytes(PROBE_TEXT),
    };
    let reply = store.call(what, &part)?;
    if reply.status != 200 {
        return Err(not_checked(store, what(), &reply));
    }
    let etag = reply.header("etag").unwrap_or_default().trim_matches('"');
    let body = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"{etag}\"</ETag></Part></CompleteMultipartUpload>"
    );
    let completion = Request {
        method: "POST",
        key: Some(name),
        query: upload(),
        headers: vec![
            ("if-none-match".into(), "*".into()),
            ("content-type".into(), "application/xml".into()),
        ],
        body: Payload::Bytes(body.as_bytes()),
    };
    let reply = store.call(what, &completion)?;
    match (reply.status, reply.code().as_deref()) {
        (412 | 409, _) => Ok(()),
        // Completed (404: completed by an attempt whose answer was lost).
        (200, None) | (404, _) => Err(overwrites(what(), "CompleteMultipartUpload")),
        _ => Err(not_checked(store, what(), &reply)),
    }
}

fn overwrites(what: String, request: &str) -> StoreError {
    refused(
        what,
        format!(
            "the store accepted a create-only {request} (If-None-Match: *) of an object that exists: it overwrites, {ADVICE}"
        ),
    )
}

/// The store did not let the check happen: what to change.
fn not_checked(store: &S3Store, what: String, reply: &Reply) -> StoreError {
    match (reply.status, reply.code().as_deref()) {
        (403, _) => refused(
            what,
            format!(
                "HTTP 403 {}: the keys may not write the create-only probe; allow s3:PutObject on it, or set s3.require_create_only = false if only one process ever writes this archive",
                reply.code().unwrap_or_default()
            ),
        ),
        (501, _) | (_, Some("NotImplemented")) => refused(
            what,
            format!(
                "the store does not implement If-None-Match: * ({}), {ADVICE}",
                reply.message()
            ),
        ),
        _ => store.refusal(what, reply),
    }
}
