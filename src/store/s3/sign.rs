//! AWS Signature Version 4 for S3 requests, on `ring` (HMAC-SHA256,
//! SHA-256): the canonical request, the string to sign, the derived key
//! and the `Authorization` header. Pure functions of their inputs.
//!
//! Never puts a secret into a string it returns (only the access key id,
//! which AWS treats as public, appears in the header).

use ring::{digest, hmac};

use crate::store::http::encode;

/// The algorithm name in the string to sign and the header.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of bytes (the payload hash of a small body).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn hmac(key: &[u8], data: &str) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
}

/// The key for one day, region and service.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Tag {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k = hmac(k.as_ref(), region);
    let k = hmac(k.as_ref(), service);
    hmac(k.as_ref(), "aws4_request")
}

/// What is signed about one request.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent: already percent-encoded, `/` kept.
    pub path: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(String, String)],
    /// Headers to sign (`host` and `x-amz-date` among them), any case.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    pub payload_hash: &'a str,
}

/// The key pair a request is signed with.
pub struct Key<'a> {
    pub access_key_id: &'a str,
    pub secret: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// The canonical query string: encoded names and values, sorted.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> =
        query.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Canonical headers block and the signed-headers list.
fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), value)
        })
        .collect();
    hs.sort();
    let block = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let names = hs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>();
    (block, names.join(";"))
}

/// The canonical request (AWS's step 1).
pub fn canonical_request(r: &Request) -> String {
    let (headers, signed) = canonical_headers(r.headers);
    format!(
        "{}\n{}\n{}\n{headers}\n{signed}\n{}",
        r.method,
        r.path,
        canonical_query(r.query),
        r.payload_hash
    )
}

/// The `Authorization` header of a request made at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`, equal to its `x-amz-date` header).
pub fn authorization(key: &Key, r: &Request, amz_date: &str) -> String {
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{}/{}/aws4_request", key.region, key.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request(r).as_bytes())
    );
    let k = signing_key(key.secret, date, key.region, key.service);
    let signature = hex(hmac(k.as_ref(), &string_to_sign).as_ref());
    let (_, signed) = canonical_headers(r.headers);
    format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        key.access_key_id
    )
}

/// `YYYYMMDDTHHMMSSZ` of a time in seconds since the epoch.
pub fn amz_date(unix_secs: i64) -> String {
    let iso = crate::format::timestamp::format_millis(unix_secs * 1000);
    // 2026-11-25T18:07:23.000Z → 20261125T180723Z
    let digits: String = iso[..19].chars().filter(|c| c.is_ascii_digit()).collect();
    format!("{}T{}Z", &digits[..8], &digits[8..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// AWS's published examples: the SigV4 test suite (`get-vanilla`,
    /// `get-vanilla-query-order-key-case`), the IAM ListUsers example of
    /// the signing documentation and the S3 "GET object" example.
    #[test]
    fn signatures_match_the_published_examples() {
        let suite = Key {
            access_key_id: "AKIDEXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "service",
        };
        let iam = Key {
            service: "iam",
            ..suite
        };
        let s3 = Key {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "s3",
        };
        let vanilla = h(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let ordered = [
            ("Param2".to_string(), "value2".to_string()),
            ("Param1".to_string(), "value1".to_string()),
        ];
        let list_users = [
            ("Action".to_string(), "ListUsers".to_string()),
            ("Version".to_string(), "2010-05-08".to_string()),
        ];
        let iam_headers = h(&[
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("Host", "iam.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let s3_headers = h(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let table: [(&Key, Request, &str, &str); 4] = [
            (
                &suite,
                Request {
                    method: "GET",
                    path: "/",
                    query: &[],
                    headers: &vanilla,
                    payload_hash: EMPTY,
                },
                "20150830T123600Z",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                &suite,
                Request {
                    method: "GET",
                    path: "/",
                    query: &ordered,
                    headers: &vanilla,
                    payload_hash: EMPTY,
                },
                "20150830T123600Z",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                &iam,
                Request {
                    method: "GET",
                    path: "/",
                    query: &list_users,
                    headers: &iam_headers,
                    payload_hash: EMPTY,
                },
                "20150830T123600Z",
                "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            ),
            (
                &s3,
                Request {
                    method: "GET",
                    path: "/test.txt",
                    query: &[],
                    headers: &s3_headers,
                    payload_hash: EMPTY,
                },
                "20130524T000000Z",
                "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            ),
        ];
        for (key, request, date, want) in table {
            let header = authorization(key, &request, date);
            assert!(
                header.ends_with(&format!("Signature={want}")),
                "{} {:?}: {header}",
                request.path,
                request.query
            );
            assert!(!header.contains(key.secret));
        }
    }

    #[test]
    fn the_derived_key_matches_the_documentation() {
        let k = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex(k.as_ref()),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }

    #[test]
    fn the_header_names_what_was_signed() {
        let headers = h(&[
            ("X-Amz-Date", "20150830T123600Z"),
            ("Host", "h"),
            ("x-amz-meta-a", "  two   words "),
        ]);
        let r = Request {
            method: "PUT",
            path: "/b/k",
            query: &[("uploadId".into(), "a b/c".into())],
            headers: &headers,
            payload_hash: "UNSIGNED-PAYLOAD",
        };
        let canonical = canonical_request(&r);
        assert_eq!(
            canonical,
            "PUT\n/b/k\nuploadId=a%20b%2Fc\nhost:h\nx-amz-date:20150830T123600Z\n\
             x-amz-meta-a:two words\n\nhost;x-amz-date;x-amz-meta-a\nUNSIGNED-PAYLOAD"
        );
        let key = Key {
            access_key_id: "AK",
            secret: "s",
            region: "eu-west-1",
            service: "s3",
        };
        let header = authorization(&key, &r, "20150830T123600Z");
        assert!(header.starts_with(
            "AWS4-HMAC-SHA256 Credential=AK/20150830/eu-west-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-meta-a, Signature="
        ));
    }

    #[test]
    fn dates_are_basic_iso8601() {
        for (secs, want) in [(0, "19700101T000000Z"), (1_440_938_160, "20150830T123600Z")] {
            assert_eq!(amz_date(secs), want);
        }
    }
}
