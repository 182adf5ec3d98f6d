//! Service-account JSON key files: reading and checking them, the PEM
//! private key in them (PKCS#8, or PKCS#1, RSA, parsed by `ring`), and the
//! RS256-signed JWT-bearer assertion made with it.
//!
//! Never puts key material or a key file's text into an error message or the
//! `Debug` output, and never talks to the network.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Serialize;
use serde_json::Value;

use super::error::{AuthError, short_quoted};

/// The OAuth2 scope requested with a service-account key: read and write objects.
pub const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// Lifetime of a signed assertion (Google accepts at most one hour).
const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// A parsed service-account key. Cloning shares the key pair.
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub(super) client_email: String,
    /// Goes into the JWT header as `kid`; optional, as in Google's libraries.
    private_key_id: Option<String>,
    pub(super) token_uri: String,
    key_pair: Arc<RsaKeyPair>,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Reads and checks a service-account JSON key file.
    pub fn from_file(path: &Path) -> Result<ServiceAccountKey, AuthError> {
        let what = format!("credentials file {}", path.display());
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::fatal(&what, format!("cannot be read: {e}")))?;
        Self::parse(&text).map_err(|why| AuthError::fatal(what, why))
    }

    /// Parses the JSON text of a key file. The error says what is wrong and
    /// never quotes the file (serde_json's own messages may quote values).
    fn parse(json: &str) -> Result<ServiceAccountKey, String> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            format!(
                "is not valid JSON (error at line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        let object = value
            .as_object()
            .ok_or("is not a JSON object (expected a service-account key)")?;
        let field = |name: &str| -> Result<Option<&str>, String> {
            match object.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(format!("{name} is not a string")),
            }
        };
        let required = |name: &str| field(name)?.ok_or_else(|| format!("missing {name}"));

        match field("type")? {
            Some("service_account") => {}
            Some(other) => {
                return Err(format!(
                    "type is {}, not \"service_account\" (only service-account keys are supported)",
                    short_quoted(other)
                ));
            }
            None => return Err("missing type (expected \"service_account\")".to_owned()),
        }
        let client_email = required("client_email")?.to_owned();
        let token_uri = required("token_uri")?.to_owned();
        if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
            return Err(format!(
                "token_uri {} is not an http(s) URL",
                short_quoted(&token_uri)
            ));
        }
        let private_key_id = field("private_key_id")?.map(str::to_owned);
        let key_pair = parse_private_key(required("private_key")?)?;
        Ok(ServiceAccountKey {
            client_email,
            private_key_id,
            token_uri,
            key_pair: Arc::new(key_pair),
        })
    }

    /// A signed JWT-bearer assertion issued at `now` (Unix seconds).
    pub(super) fn assertion(&self, now: u64, rng: &SystemRandom) -> Result<String, String> {
        #[derive(Serialize)]
        struct Header<'a> {
            alg: &'static str,
            typ: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            kid: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'static str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let header = Header {
            alg: "RS256",
            typ: "JWT",
            kid: self.private_key_id.as_deref(),
        };
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        let signing_input = format!("{}.{}", base64_json(&header)?, base64_json(&claims)?);
        let mut signature = vec![0; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                rng,
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the JWT failed".to_owned())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// A JWT part: JSON, base64url without padding.
fn base64_json<T: Serialize>(part: &T) -> Result<String, String> {
    serde_json::to_vec(part)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|e| format!("cannot encode the JWT: {e}"))
}

/// Parses the PEM `private_key` of a key file: PKCS#8 (what Google issues),
/// or PKCS#1 (`BEGIN RSA PRIVATE KEY`) for hand-converted keys.
fn parse_private_key(pem: &str) -> Result<RsaKeyPair, String> {
    const PKCS8: (&str, &str) = ("-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----");
    const PKCS1: (&str, &str) = (
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----",
    );
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(
            "private_key is encrypted; it must be an unencrypted PKCS#8 RSA key".to_owned(),
        );
    }
    let (body, pkcs1) = if let Some(body) = pem_body(pem, PKCS8) {
        (body, false)
    } else if let Some(body) = pem_body(pem, PKCS1) {
        (body, true)
    } else {
        return Err(
            "private_key is not a PKCS#8 RSA key (no \"-----BEGIN PRIVATE KEY-----\" ... \"-----END PRIVATE KEY-----\" block)"
                .to_owned(),
        );
    };
    let base64: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(base64)
        .map_err(|_| "private_key is not a PKCS#8 RSA key (its PEM body is not base64)")?;
    let parsed = if pkcs1 {
        RsaKeyPair::from_der(&der)
    } else {
        RsaKeyPair::from_pkcs8(&der)
    };
    // ring's rejection reasons are fixed words (e.g. "WrongAlgorithm").
    parsed.map_err(|e| format!("private_key is not a PKCS#8 RSA key ({e})"))
}

fn pem_body<'a>(pem: &'a str, (begin, end): (&str, &str)) -> Option<&'a str> {
    let start = pem.find(begin)? + begin.len();
    let len = pem[start..].find(end)?;
    Some(&pem[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::testkit::{
        EMAIL, agent, assert_no_key_material, error_json, form_field, key_json, openssl, serve,
        service_account, test_key, token_json, write_file,
    };
    use super::super::{Credentials, TokenSource};

    fn ec_key_pem() -> String {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ec.pem");
        let key = key.to_str().unwrap();
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key,
        ]);
        std::fs::read_to_string(key).unwrap()
    }

    #[test]
    fn pkcs1_keys_and_keys_without_private_key_id_work() {
        let server = serve(|request, _| {
            let assertion = form_field(&request.body, "assertion").unwrap();
            let header = assertion.split('.').next().unwrap();
            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
            match header.get("kid") {
                None => (200, token_json("no-kid", 3600)),
                Some(_) => (400, error_json("unexpected_kid", "")),
            }
        });
        let mut json = key_json(&format!("{}/token", server.url), &test_key().pkcs1_pem);
        json.as_object_mut().unwrap().remove("private_key_id");
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, &json.to_string());
        let source = TokenSource::new(
            Credentials::from_config(path.to_str().unwrap()).unwrap(),
            agent(),
        );
        assert_eq!(source.token().unwrap().as_deref(), Some("no-kid"));
    }

    #[test]
    fn service_account_key_fields_and_identity() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = service_account(&dir, "https://oauth2.googleapis.com/token");
        assert_eq!(credentials.identity(), format!("service account {EMAIL}"));
        let Credentials::ServiceAccount(key) = &credentials else {
            panic!("{credentials:?}")
        };
        assert_eq!(key.client_email, EMAIL);
        assert_eq!(key.token_uri, "https://oauth2.googleapis.com/token");
    }

    /// Loads `contents` as a key file and returns the error message, after
    /// checking it is fatal, names the file and holds no key material.
    fn key_file_error(contents: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, contents);
        let error = Credentials::from_config(path.to_str().unwrap()).unwrap_err();
        assert!(!error.is_retriable());
        let message = error.to_string();
        let prefix = format!("credentials file {}: ", path.display());
        assert!(message.starts_with(&prefix), "{message}");
        assert_no_key_material(&message);
        assert!(!message.contains('\n'), "{message}");
        message[prefix.len()..].to_owned()
    }

    fn key_without(field: &str) -> String {
        let mut json = key_json("https://oauth2.googleapis.com/token", &test_key().pem);
        json.as_object_mut().unwrap().remove(field);
        json.to_string()
    }

    fn key_with(field: &str, value: Value) -> String {
        let mut json = key_json("https://oauth2.googleapis.com/token", &test_key().pem);
        json[field] = value;
        json.to_string()
    }

    #[test]
    fn malformed_key_files_are_fatal_and_name_the_file() {
        let pem = &test_key().pem;
        // Broken JSON right after the key: the message must not quote it.
        let truncated = format!("{{\"private_key\": {:?} oops", pem);
        assert!(
            key_file_error(&truncated).starts_with("is not valid JSON (error at line 1, column")
        );
        assert_eq!(
            key_file_error("[1, 2]"),
            "is not a JSON object (expected a service-account key)"
        );
        assert_eq!(
            key_file_error(&key_without("client_email")),
            "missing client_email"
        );
        assert_eq!(
            key_file_error(&key_without("private_key")),
            "missing private_key"
        );
        assert_eq!(
            key_file_error(&key_without("token_uri")),
            "missing token_uri"
        );
        assert_eq!(
            key_file_error(&key_with("client_email", "".into())),
            "missing client_email"
        );
        assert_eq!(
            key_file_error(&key_with("client_email", 7.into())),
            "client_email is not a string"
        );
        assert_eq!(
            key_file_error(&key_without("type")),
            "missing type (expected \"service_account\")"
        );
        assert_eq!(
            key_file_error(&key_with("type", "authorized_user".into())),
            "type is \"authorized_user\", not \"service_account\" (only service-account keys are supported)"
        );
        assert_eq!(
            key_file_error(&key_with("token_uri", "oauth2.googleapis.com/token".into())),
            "token_uri \"oauth2.googleapis.com/token\" is not an http(s) URL"
        );
    }

    #[test]
    fn private_keys_that_are_not_pkcs8_rsa_are_refused() {
        let ec = key_file_error(&key_with("private_key", ec_key_pem().into()));
        assert_eq!(ec, "private_key is not a PKCS#8 RSA key (WrongAlgorithm)");

        let no_pem = key_file_error(&key_with(
            "private_key",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC".into(),
        ));
        assert!(
            no_pem.starts_with("private_key is not a PKCS#8 RSA key (no \"-----BEGIN"),
            "{no_pem}"
        );

        let corrupt = test_key().pem.replacen("MII", "M*I", 1);
        let corrupt = key_file_error(&key_with("private_key", corrupt.into()));
        assert_eq!(
            corrupt,
            "private_key is not a PKCS#8 RSA key (its PEM body is not base64)"
        );

        // Valid base64 that is not a key: the middle of the real key cut out.
        let pem = &test_key().pem;
        let lines: Vec<&str> = pem.lines().collect();
        let cut = format!(
            "{}\n{}\n{}\n",
            lines[0],
            lines[3..6].join("\n"),
            lines[lines.len() - 1]
        );
        let cut = key_file_error(&key_with("private_key", cut.into()));
        assert_eq!(cut, "private_key is not a PKCS#8 RSA key (InvalidEncoding)");

        let encrypted = key_file_error(&key_with(
            "private_key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .into(),
        ));
        assert_eq!(
            encrypted,
            "private_key is encrypted; it must be an unencrypted PKCS#8 RSA key"
        );
    }

    #[test]
    fn missing_key_file_is_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.json");
        let error = Credentials::from_config(path.to_str().unwrap()).unwrap_err();
        assert!(!error.is_retriable());
        assert!(
            error.to_string().starts_with(&format!(
                "credentials file {}: cannot be read: ",
                path.display()
            )),
            "{error}"
        );
    }
}
