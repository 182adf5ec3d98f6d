//! GCS authentication: turns the configured credentials (`[gcs] credentials`)
//! into OAuth2 access tokens for the `Authorization: Bearer` header, cached
//! and refreshed shortly before they expire.
//!
//! Three sources: none (emulators), the GCE metadata server (asked directly,
//! never through a proxy), and a service-account JSON key file (an RS256-signed
//! JWT grant posted to the key's `token_uri`, signed with `ring`).
//!
//! What this module never does: log or print an access token, a private key
//! or a signed assertion, or put any of them into an error message. Text that
//! comes from a server is reduced to one line, shortened, and stripped of
//! anything that looks like a token before it goes into a message. The
//! `Debug` output of every type here omits the secrets as well.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Serialize;
use serde_json::Value;

use crate::store::http::{self as web, Failure};

/// The OAuth2 scope requested with a service-account key: read and write objects.
pub const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// The metadata server's address on GCE and GKE.
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";

/// The environment variable that overrides the metadata server's `host[:port]`,
/// as in Google's own client libraries.
pub const METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";

const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, form-encoded.
const JWT_BEARER_GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// Lifetime of a signed assertion (Google accepts at most one hour).
const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// A token is refreshed when less than this remains (or a quarter of its
/// lifetime, if that is smaller).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Longest lifetime we believe a server about (keeps `Instant` arithmetic safe).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Timeout for a token-endpoint request when the caller's agent has none.
const TOKEN_ENDPOINT_TIMEOUT: Duration = Duration::from_secs(60);

/// Timeouts for the metadata server, which is local and normally answers at once.
const METADATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this much of a response body is read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Where access tokens come from (`[gcs] credentials` in the config).
#[derive(Clone, Debug)]
pub enum Credentials {
    /// No Authorization header (emulators).
    None,
    /// The GCE metadata server (`credentials = "metadata"`): a GET of
    /// `{base_url}/computeMetadata/v1/instance/service-accounts/default/token`
    /// with `Metadata-Flavor: Google`, never through a proxy.
    Metadata {
        /// Scheme, host and optional port, without a trailing slash,
        /// e.g. `http://169.254.169.254`.
        base_url: String,
    },
    /// A service-account JSON key file: RS256-signed JWT grant posted to the
    /// key's `token_uri`.
    ServiceAccount(ServiceAccountKey),
}

impl Credentials {
    /// Parses the config value: `"none"`, `"metadata"`, or the path of a
    /// service-account key file, which is read and checked now. Errors name
    /// the file and what is wrong with it, never the key material.
    pub fn from_config(value: &str) -> Result<Credentials, AuthError> {
        match value {
            "none" => Ok(Credentials::None),
            "metadata" => Ok(Credentials::metadata_from_env()),
            "" => Err(AuthError::fatal(
                "credentials",
                "empty: expected \"none\", \"metadata\" or the path of a service-account JSON key file",
            )),
            path => ServiceAccountKey::from_file(Path::new(path)).map(Credentials::ServiceAccount),
        }
    }

    /// The metadata server at [`DEFAULT_METADATA_URL`], or at the
    /// `host[:port]` given by the `GCE_METADATA_HOST` environment variable.
    pub fn metadata_from_env() -> Credentials {
        let host = std::env::var(METADATA_HOST_ENV).ok();
        Credentials::Metadata {
            base_url: metadata_base_url(host.as_deref()),
        }
    }

    /// Who we are, for error messages.
    pub fn identity(&self) -> String {
        match self {
            Credentials::None => "no credentials".to_owned(),
            Credentials::Metadata { .. } => {
                "the GCE metadata server's default service account".to_owned()
            }
            Credentials::ServiceAccount(key) => format!("service account {}", key.client_email),
        }
    }
}

/// The metadata server's base URL for a `GCE_METADATA_HOST` value
/// (`host[:port]`, or a full `http://` URL); the default when unset or empty.
pub fn metadata_base_url(host: Option<&str>) -> String {
    match host.map(str::trim).filter(|h| !h.is_empty()) {
        None => DEFAULT_METADATA_URL.to_owned(),
        Some(h) if h.starts_with("http://") || h.starts_with("https://") => {
            h.trim_end_matches('/').to_owned()
        }
        Some(h) => format!("http://{}", h.trim_end_matches('/')),
    }
}

/// A parsed service-account key. Cloning shares the key pair.
#[derive(Clone)]
pub struct ServiceAccountKey {
    client_email: String,
    /// Goes into the JWT header as `kid`; optional, as in Google's libraries.
    private_key_id: Option<String>,
    token_uri: String,
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
    fn assertion(&self, now: u64, rng: &SystemRandom) -> Result<String, String> {
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

/// A cached access token.
struct Token {
    value: String,
    expires_at: Instant,
    /// Refresh when less than this remains.
    margin: Duration,
}

impl Token {
    fn new(value: String, fetched_at: Instant, lifetime: Duration) -> Token {
        let lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
        Token {
            value,
            expires_at: fetched_at + lifetime,
            margin: refresh_margin(lifetime),
        }
    }

    fn is_fresh_at(&self, now: Instant) -> bool {
        self.expires_at.saturating_duration_since(now) > self.margin
    }
}

/// Five minutes, or a quarter of the lifetime if that is smaller.
fn refresh_margin(lifetime: Duration) -> Duration {
    MAX_REFRESH_MARGIN.min(lifetime / 4)
}

/// Hands out access tokens for one set of credentials.
///
/// Safe to share between threads. The cache lock is held while a token is
/// fetched, so concurrent callers wait for one request instead of each
/// making their own.
pub struct TokenSource {
    credentials: Credentials,
    /// The caller's agent for the token endpoint (proxy, CA bundle); for the
    /// metadata server, an agent of our own without a proxy.
    agent: ureq::Agent,
    rng: SystemRandom,
    cache: Mutex<Option<Token>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("credentials", &self.credentials)
            // try_lock: never wait for (or deadlock with) a fetch in progress.
            .field("cached", &self.cache.try_lock().ok().map(|c| c.is_some()))
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// `agent` is used for the token endpoint (it carries the proxy and CA
    /// settings); the metadata server is always asked without a proxy.
    pub fn new(credentials: Credentials, agent: ureq::Agent) -> TokenSource {
        let agent = match credentials {
            Credentials::Metadata { .. } => metadata_agent(),
            Credentials::None | Credentials::ServiceAccount(_) => agent,
        };
        TokenSource {
            credentials,
            agent,
            rng: SystemRandom::new(),
            cache: Mutex::new(None),
        }
    }

    /// A valid access token, or None for [`Credentials::None`]. Cached, and
    /// refreshed when less than five minutes (or a quarter of its lifetime,
    /// if smaller) remain.
    pub fn token(&self) -> Result<Option<String>, AuthError> {
        self.token_at(Instant::now())
    }

    /// Forgets the cached token (after a 401 from the storage API).
    pub fn invalidate(&self) {
        if self.lock().take().is_some() {
            log::debug!("forgot the cached gcs access token for {}", self.identity());
        }
    }

    /// Who we are, for error messages.
    pub fn identity(&self) -> String {
        self.credentials.identity()
    }

    /// [`Self::token`] with the clock passed in (tests move it forward).
    fn token_at(&self, now: Instant) -> Result<Option<String>, AuthError> {
        let mut cache = self.lock();
        if let Some(token) = cache.as_ref()
            && token.is_fresh_at(now)
        {
            return Ok(Some(token.value.clone()));
        }
        *cache = None;
        let token = match &self.credentials {
            Credentials::None => return Ok(None),
            Credentials::Metadata { base_url } => self.fetch_from_metadata(base_url, now)?,
            Credentials::ServiceAccount(key) => self.fetch_with_key(key, now)?,
        };
        let value = token.value.clone();
        *cache = Some(token);
        Ok(Some(value))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Token>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fetch_with_key(&self, key: &ServiceAccountKey, now: Instant) -> Result<Token, AuthError> {
        let endpoint = Endpoint {
            name: format!("token endpoint {}", key.token_uri),
            for_whom: self.identity(),
        };
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = key.assertion(issued_at, &self.rng).map_err(|why| {
            AuthError::fatal(
                format!("cannot sign a token request for {}", endpoint.for_whom),
                why,
            )
        })?;
        let body = format!("grant_type={JWT_BEARER_GRANT}&assertion={assertion}");

        let timeouts = self.agent.config().timeouts();
        let mut request = self
            .agent
            .post(&key.token_uri)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .config()
            .http_status_as_error(false);
        if timeouts.global.is_none() && timeouts.per_call.is_none() {
            request = request.timeout_global(Some(TOKEN_ENDPOINT_TIMEOUT));
        }
        let response = request.build().send(body);
        let (status, body) = endpoint.read(response)?;
        match status {
            200..=299 => endpoint.parse_token(&body, now),
            400 | 401 | 403 => Err(AuthError::fatal(
                format!(
                    "{} refused the grant for {}",
                    endpoint.name, endpoint.for_whom
                ),
                oauth_error(&body).unwrap_or_else(|| status_detail(status, &body)),
            )),
            _ => Err(endpoint.status_error(status, &body)),
        }
    }

    fn fetch_from_metadata(&self, base_url: &str, now: Instant) -> Result<Token, AuthError> {
        let base_url = base_url.trim_end_matches('/');
        let endpoint = Endpoint {
            name: format!("metadata server {base_url}"),
            for_whom: "its default service account".to_owned(),
        };
        let response = self
            .agent
            .get(format!("{base_url}{METADATA_TOKEN_PATH}"))
            .header("Metadata-Flavor", "Google")
            .call();
        let (status, body) = endpoint.read(response)?;
        match status {
            200..=299 => endpoint.parse_token(&body, now),
            _ => Err(endpoint.status_error(status, &body)),
        }
    }
}

/// The agent for the metadata server: no proxy (not even from the
/// environment), bounded waits, status codes as responses.
fn metadata_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(METADATA_CONNECT_TIMEOUT))
        .timeout_global(Some(METADATA_TIMEOUT))
        .build()
        .new_agent()
}

/// A token server and the identity asked for, for messages.
struct Endpoint {
    name: String,
    for_whom: String,
}

impl Endpoint {
    /// The status and (bounded) body of a response, or why there is none.
    fn read(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Vec<u8>), AuthError> {
        let mut response = response.map_err(|e| {
            let what = format!("cannot reach {} for {}", self.name, self.for_whom);
            let why = e.to_string();
            if web::retriable(Failure::Transport(web::transport(&e))) {
                AuthError::retriable(what, why)
            } else {
                AuthError::fatal(what, why)
            }
        })?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut body)
            .map_err(|e| {
                AuthError::retriable(
                    format!(
                        "cannot read the response of {} for {}",
                        self.name, self.for_whom
                    ),
                    e.to_string(),
                )
            })?;
        Ok((status, body))
    }

    /// A non-success status other than a refused grant.
    fn status_error(&self, status: u16, body: &[u8]) -> AuthError {
        let why = status_detail(status, body);
        if web::retriable(Failure::Status(status)) {
            AuthError::retriable(
                format!(
                    "{} failed to issue a token for {}",
                    self.name, self.for_whom
                ),
                why,
            )
        } else {
            AuthError::fatal(
                format!("{} refused a token for {}", self.name, self.for_whom),
                why,
            )
        }
    }

    /// A successful token response. The body holds the token, so nothing of
    /// it goes into an error message.
    fn parse_token(&self, body: &[u8], fetched_at: Instant) -> Result<Token, AuthError> {
        let bad = |why: &str| {
            AuthError::fatal(
                format!(
                    "{} sent a bad token response for {}",
                    self.name, self.for_whom
                ),
                why,
            )
        };
        let value: Value =
            serde_json::from_slice(body).map_err(|_| bad("the response is not JSON"))?;
        let token = match value.get("access_token") {
            Some(Value::String(t)) if !t.is_empty() => t,
            _ => return Err(bad("the response has no access_token")),
        };
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("the access_token is not printable ASCII"));
        }
        if let Some(token_type) = value.get("token_type").and_then(Value::as_str)
            && !token_type.eq_ignore_ascii_case("bearer")
        {
            return Err(bad(&format!(
                "the token_type is {}, not \"Bearer\"",
                short_quoted(token_type)
            )));
        }
        let expires_in = match value.get("expires_in") {
            Some(Value::Number(n)) => n.as_f64().filter(|s| s.is_finite() && *s >= 0.0),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0),
            _ => None,
        };
        let Some(expires_in) = expires_in else {
            return Err(bad("the response has no valid expires_in"));
        };
        let lifetime = Duration::from_secs_f64(expires_in.min(MAX_TOKEN_LIFETIME.as_secs_f64()));
        log::debug!(
            "got a gcs access token for {} from {}, valid for {}s",
            self.for_whom,
            self.name,
            lifetime.as_secs()
        );
        Ok(Token::new(token.clone(), fetched_at, lifetime))
    }
}

/// OAuth's `error` and `error_description` (`invalid_grant: Invalid JWT
/// Signature.`), if the body is such an error.
fn oauth_error(body: &[u8]) -> Option<String> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let error = json.get("error")?.as_str()?;
    let text = match json.get("error_description").and_then(Value::as_str) {
        Some(description) if !description.trim().is_empty() => format!("{error}: {description}"),
        _ => error.to_owned(),
    };
    Some(server_text(&text)).filter(|t| !t.is_empty())
}

/// `HTTP 503`, and what the body says if anything.
fn status_detail(status: u16, body: &[u8]) -> String {
    match error_detail(body) {
        Some(detail) => format!("HTTP {status}: {detail}"),
        None => format!("HTTP {status}"),
    }
}

/// What an error response says, for a message: OAuth's `error` and
/// `error_description` (`invalid_grant: Invalid JWT Signature.`), Google's
/// `{"error": {"status", "message"}}`, or else the start of the body.
fn error_detail(body: &[u8]) -> Option<String> {
    let detail = match serde_json::from_slice::<Value>(body) {
        Ok(json) => match json.get("error") {
            Some(Value::String(error)) => {
                match json.get("error_description").and_then(Value::as_str) {
                    Some(description) => format!("{error}: {description}"),
                    None => error.clone(),
                }
            }
            Some(Value::Object(error)) => {
                let part = |k: &str| error.get(k).and_then(Value::as_str);
                match (part("status"), part("message")) {
                    (Some(s), Some(m)) => format!("{s}: {m}"),
                    (Some(x), None) | (None, Some(x)) => x.to_owned(),
                    (None, None) => json.to_string(),
                }
            }
            _ => json.to_string(),
        },
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let detail = server_text(&detail);
    (!detail.is_empty()).then_some(detail)
}

/// Server-supplied text made safe for a one-line message: whitespace and
/// control characters collapse to single spaces, every run of 32 or more
/// base64url characters (a token, an echoed assertion, key bytes) becomes
/// `[redacted]`, and the result is cut to 300 characters.
fn server_text(text: &str) -> String {
    const MIN_SECRET_RUN: usize = 32;
    const MAX_CHARS: usize = 300;
    fn flush(out: &mut String, run: &mut String) {
        if run.len() >= MIN_SECRET_RUN {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    }
    let mut out = String::new();
    let mut run = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            run.push(c);
            continue;
        }
        flush(&mut out, &mut run);
        if c.is_whitespace() || c.is_control() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    flush(&mut out, &mut run);
    let out = out.trim_end();
    match out.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &out[..cut]),
        None => out.to_owned(),
    }
}

/// A short, quoted, one-line rendering of a non-secret config value.
fn short_quoted(value: &str) -> String {
    let value: String = value.chars().take(64).collect();
    format!("{value:?}")
}

/// Authentication failures, split by what the caller can do about them.
/// Messages name the endpoint and the identity, never a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Network trouble, or 5xx/429 from the token server: may work later.
    #[error("{what}: {why}")]
    Retriable { what: String, why: String },
    /// A refused grant (400/401/403, e.g. `invalid_grant`), a malformed key
    /// file, a bad response: needs a fix.
    #[error("{what}: {why}")]
    Fatal { what: String, why: String },
}

impl AuthError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, AuthError::Retriable { .. })
    }

    fn retriable(what: impl Into<String>, why: impl Into<String>) -> AuthError {
        AuthError::Retriable {
            what: what.into(),
            why: why.into(),
        }
    }

    fn fatal(what: impl Into<String>, why: impl Into<String>) -> AuthError {
        AuthError::Fatal {
            what: what.into(),
            why: why.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::OnceLock;

    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    const EMAIL: &str = "archiver@test-project.iam.gserviceaccount.com";
    const KID: &str = "0123456789abcdef0123456789abcdef01234567";

    // ---- keys, made with the openssl CLI once per test run ----

    struct TestKey {
        /// PKCS#8 PEM, as in Google's key files.
        pem: String,
        /// The same key as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`).
        pkcs1_pem: String,
        /// RSAPublicKey DER, for ring's verifier.
        public_der: Vec<u8>,
    }

    fn openssl(args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl CLI is needed to make test keys");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn test_key() -> &'static TestKey {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
            let (key, rsa, public) = (path("key.pem"), path("rsa.pem"), path("pub.der"));
            openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &key,
            ]);
            openssl(&["rsa", "-in", &key, "-traditional", "-out", &rsa]);
            openssl(&[
                "rsa",
                "-in",
                &key,
                "-RSAPublicKey_out",
                "-outform",
                "DER",
                "-out",
                &public,
            ]);
            TestKey {
                pem: std::fs::read_to_string(&key).unwrap(),
                pkcs1_pem: std::fs::read_to_string(&rsa).unwrap(),
                public_der: std::fs::read(&public).unwrap(),
            }
        })
    }

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

    fn key_json(token_uri: &str, pem: &str) -> serde_json::Value {
        serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": KID,
            "private_key": pem,
            "client_email": EMAIL,
            "client_id": "123456789",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        })
    }

    fn write_file(dir: &tempfile::TempDir, contents: &str) -> PathBuf {
        let path = dir.path().join("key.json");
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A key file whose token_uri is `token_uri`, loaded through from_config.
    fn service_account(dir: &tempfile::TempDir, token_uri: &str) -> Credentials {
        let path = write_file(dir, &key_json(token_uri, &test_key().pem).to_string());
        Credentials::from_config(path.to_str().unwrap()).unwrap()
    }

    /// Every line of the key's PEM body: none may appear in a message.
    fn assert_no_key_material(message: &str) {
        for line in test_key().pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!message.contains(line), "key material in {message}");
        }
    }

    // ---- a tiny HTTP/1.1 server ----

    #[derive(Clone, Debug)]
    struct Request {
        method: String,
        path: String,
        /// Lower-case names.
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Request {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    struct Server {
        url: String,
        requests: Arc<Mutex<Vec<Request>>>,
    }

    impl Server {
        fn count(&self) -> usize {
            self.requests.lock().unwrap().len()
        }

        fn last(&self) -> Request {
            self.requests.lock().unwrap().last().unwrap().clone()
        }
    }

    /// Serves `handle(request, number)` (numbered from 1) on 127.0.0.1, one
    /// request per connection, until the test process ends.
    fn serve<F>(handle: F) -> Server
    where
        F: Fn(&Request, usize) -> (u16, String) + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let number = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(request.clone());
                    seen.len()
                };
                let (status, body) = handle(&request, number);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Server { url, requests }
    }

    fn read_request(stream: &TcpStream) -> Option<Request> {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(Request {
            method,
            path,
            headers,
            body: String::from_utf8(body).ok()?,
        })
    }

    fn token_json(token: &str, expires_in: u64) -> String {
        format!(r#"{{"access_token":"{token}","expires_in":{expires_in},"token_type":"Bearer"}}"#)
    }

    fn error_json(error: &str, description: &str) -> String {
        serde_json::json!({"error": error, "error_description": description}).to_string()
    }

    /// A plain agent; no proxy from the environment between us and 127.0.0.1.
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .proxy(None)
            .build()
            .new_agent()
    }

    /// An agent whose proxy is a closed port: nothing sent through it arrives.
    fn agent_with_dead_proxy() -> ureq::Agent {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let proxy = ureq::Proxy::new(&format!("http://127.0.0.1:{port}")).unwrap();
        ureq::Agent::config_builder()
            .proxy(Some(proxy))
            .build()
            .new_agent()
    }

    fn percent_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn form_field(body: &str, name: &str) -> Option<String> {
        body.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
    }

    /// What Google's token endpoint checks of a JWT-bearer grant.
    fn check_grant(request: &Request, token_uri: &str) -> Result<(), String> {
        let json = |part: &str| -> Result<Value, String> {
            let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        };
        if request.method != "POST" || request.path != "/token" {
            return Err(format!("{} {}", request.method, request.path));
        }
        if request.header("content-type") != Some("application/x-www-form-urlencoded") {
            return Err(format!("content-type {:?}", request.header("content-type")));
        }
        let grant_type = form_field(&request.body, "grant_type");
        if grant_type.as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return Err(format!("grant_type {grant_type:?}"));
        }
        let assertion = form_field(&request.body, "assertion").ok_or("no assertion")?;
        let parts: Vec<&str> = assertion.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err(format!("{} JWT parts", parts.len()));
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|e| e.to_string())?;
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &test_key().public_der)
            .verify(format!("{header}.{claims}").as_bytes(), &signature)
            .map_err(|_| "bad signature")?;
        let header = json(header)?;
        let expected = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": KID});
        if header != expected {
            return Err(format!("header {header}"));
        }
        let claims = json(claims)?;
        let field = |k: &str| claims.get(k).cloned().unwrap_or(Value::Null);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let iat = field("iat").as_u64().ok_or("no iat")?;
        let exp = field("exp").as_u64().ok_or("no exp")?;
        if field("iss") != EMAIL
            || field("aud") != token_uri
            || field("scope") != SCOPE
            || exp - iat != 3600
            || iat.abs_diff(now) > 60
            || claims.as_object().unwrap().len() != 5
        {
            return Err(format!("claims {claims}"));
        }
        Ok(())
    }

    /// A token endpoint that checks each grant and answers
    /// `token-1`, `token-2`, ... valid for `expires_in` seconds.
    fn token_endpoint(expires_in: u64) -> Server {
        let token_uri = Arc::new(OnceLock::<String>::new());
        let uri = token_uri.clone();
        let server = serve(
            move |request, n| match check_grant(request, uri.get().unwrap()) {
                Ok(()) => (200, token_json(&format!("token-{n}"), expires_in)),
                Err(why) => (418, error_json("test_check_failed", &why)),
            },
        );
        token_uri.set(format!("{}/token", server.url)).unwrap();
        server
    }

    // ---- service accounts ----

    #[test]
    fn service_account_token_is_fetched_cached_and_refreshed() {
        let server = token_endpoint(10);
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(
            service_account(&dir, &format!("{}/token", server.url)),
            agent(),
        );
        let start = Instant::now();
        assert_eq!(source.token_at(start).unwrap().as_deref(), Some("token-1"));
        assert_eq!(server.count(), 1);
        // A 10 s token is refreshed when less than 2.5 s remain.
        let at = |secs: f64| start + Duration::from_secs_f64(secs);
        assert_eq!(
            source.token_at(at(7.0)).unwrap().as_deref(),
            Some("token-1")
        );
        assert_eq!(server.count(), 1, "the cached token was not used");
        assert_eq!(
            source.token_at(at(7.6)).unwrap().as_deref(),
            Some("token-2")
        );
        assert_eq!(server.count(), 2, "the token was not refreshed");
        // The public entry point, right after a refresh at 7.6 s: cached.
        assert_eq!(source.token().unwrap().as_deref(), Some("token-2"));
        assert_eq!(server.count(), 2);
    }

    #[test]
    fn long_lived_token_is_refreshed_five_minutes_before_expiry() {
        let server = token_endpoint(3599);
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(
            service_account(&dir, &format!("{}/token", server.url)),
            agent(),
        );
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(source.token_at(start).unwrap().as_deref(), Some("token-1"));
        assert_eq!(
            source.token_at(at(3298)).unwrap().as_deref(),
            Some("token-1")
        );
        assert_eq!(
            source.token_at(at(3300)).unwrap().as_deref(),
            Some("token-2")
        );
        assert_eq!(server.count(), 2);
    }

    #[test]
    fn refresh_margin_is_five_minutes_or_a_quarter_of_the_lifetime() {
        let secs = Duration::from_secs;
        assert_eq!(refresh_margin(secs(3600)), secs(300));
        assert_eq!(refresh_margin(secs(1200)), secs(300));
        assert_eq!(refresh_margin(secs(600)), secs(150));
        assert_eq!(refresh_margin(secs(10)), Duration::from_millis(2500));
        assert_eq!(refresh_margin(secs(0)), secs(0));
        // A token without lifetime is never served from the cache.
        let now = Instant::now();
        assert!(!Token::new("t".into(), now, secs(0)).is_fresh_at(now));
        // Absurd lifetimes are capped instead of overflowing.
        let token = Token::new("t".into(), now, secs(u64::MAX / 2));
        assert!(token.is_fresh_at(now + secs(23 * 3600)));
        assert!(!token.is_fresh_at(now + secs(24 * 3600)));
    }

    #[test]
    fn invalidate_forgets_the_cached_token() {
        let server = token_endpoint(3600);
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(
            service_account(&dir, &format!("{}/token", server.url)),
            agent(),
        );
        assert_eq!(source.token().unwrap().as_deref(), Some("token-1"));
        assert_eq!(source.token().unwrap().as_deref(), Some("token-1"));
        source.invalidate();
        assert_eq!(source.token().unwrap().as_deref(), Some("token-2"));
        assert_eq!(server.count(), 2);
    }

    #[test]
    fn refused_grant_is_fatal_and_names_endpoint_identity_and_error() {
        let server = serve(|_, _| (400, error_json("invalid_grant", "Invalid JWT Signature.")));
        let token_uri = format!("{}/token", server.url);
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(service_account(&dir, &token_uri), agent());
        let error = source.token().unwrap_err();
        assert!(!error.is_retriable());
        let message = error.to_string();
        assert_eq!(
            message,
            format!(
                "token endpoint {token_uri} refused the grant for service account {EMAIL}: \
                 invalid_grant: Invalid JWT Signature."
            )
        );
        let assertion = form_field(&server.last().body, "assertion").unwrap();
        for part in assertion.split('.') {
            assert!(!message.contains(part), "{message}");
        }
        assert_no_key_material(&message);
        assert_no_key_material(&format!("{error:?}"));
    }

    #[test]
    fn echoed_assertion_and_tokens_are_redacted_from_messages() {
        // A misbehaving server that repeats the grant back in its error.
        let server = serve(|request, _| {
            let assertion = form_field(&request.body, "assertion").unwrap();
            let description = format!(
                "bad assertion\n{assertion} (token ya29.a0AfB_{})",
                "x".repeat(100)
            );
            (401, error_json("unauthorized_client", &description))
        });
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(
            service_account(&dir, &format!("{}/token", server.url)),
            agent(),
        );
        let message = source.token().unwrap_err().to_string();
        let assertion = form_field(&server.last().body, "assertion").unwrap();
        for part in assertion.split('.') {
            assert!(!message.contains(part), "{message}");
        }
        assert!(!message.contains("xxxxxxxxxxxxxxxx"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert!(
            message.ends_with(
                "unauthorized_client: bad assertion [redacted].[redacted].[redacted] \
                 (token ya29.[redacted])"
            ),
            "{message}"
        );
    }

    #[test]
    fn unavailable_token_endpoint_is_retriable() {
        for status in [503, 500, 429] {
            let server =
                serve(move |_, _| (status, "<html>\n<b>Service Unavailable</b></html>".into()));
            let token_uri = format!("{}/token", server.url);
            let dir = tempfile::tempdir().unwrap();
            let source = TokenSource::new(service_account(&dir, &token_uri), agent());
            let error = source.token().unwrap_err();
            assert!(error.is_retriable(), "{error}");
            assert_eq!(
                error.to_string(),
                format!(
                    "token endpoint {token_uri} failed to issue a token for service account \
                     {EMAIL}: HTTP {status}: <html> <b>Service Unavailable</b></html>"
                )
            );
        }
    }

    #[test]
    fn unreachable_token_endpoint_is_retriable() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let token_uri = format!("http://127.0.0.1:{port}/token");
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(service_account(&dir, &token_uri), agent());
        let error = source.token().unwrap_err();
        assert!(error.is_retriable(), "{error}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot reach token endpoint {token_uri} for service account {EMAIL}: "
            )),
            "{message}"
        );
    }

    #[test]
    fn token_endpoint_goes_through_the_given_agent() {
        // The agent's proxy is dead, so the grant never reaches the endpoint.
        let server = token_endpoint(3600);
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(
            service_account(&dir, &format!("{}/token", server.url)),
            agent_with_dead_proxy(),
        );
        let error = source.token().unwrap_err();
        assert!(error.is_retriable(), "{error}");
        assert_eq!(server.count(), 0);
    }

    #[test]
    fn refusal_without_an_oauth_error_names_the_status() {
        let server = serve(|_, _| (403, "<h1>Forbidden by proxy policy</h1>".into()));
        let token_uri = format!("{}/token", server.url);
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(service_account(&dir, &token_uri), agent());
        let error = source.token().unwrap_err();
        assert!(!error.is_retriable());
        assert_eq!(
            error.to_string(),
            format!(
                "token endpoint {token_uri} refused the grant for service account {EMAIL}: \
                 HTTP 403: <h1>Forbidden by proxy policy</h1>"
            )
        );
    }

    #[test]
    fn other_client_errors_are_fatal() {
        let server = serve(|_, _| (404, "not here".into()));
        let token_uri = format!("{}/token", server.url);
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(service_account(&dir, &token_uri), agent());
        let error = source.token().unwrap_err();
        assert!(!error.is_retriable());
        assert_eq!(
            error.to_string(),
            format!(
                "token endpoint {token_uri} refused a token for service account {EMAIL}: \
                 HTTP 404: not here"
            )
        );
    }

    #[test]
    fn bad_token_responses_are_fatal_and_do_not_quote_the_token() {
        let cases = [
            ("not json ya29.secret", "the response is not JSON"),
            (
                r#"{"access_token":"ya29.secret","token_type":"Bearer"}"#,
                "no valid expires_in",
            ),
            (
                r#"{"access_token":"ya29.secret","expires_in":"soon"}"#,
                "no valid expires_in",
            ),
            (r#"{"expires_in":3599}"#, "no access_token"),
            (
                r#"{"access_token":"ya29 secret","expires_in":3599}"#,
                "not printable ASCII",
            ),
            (
                r#"{"access_token":"ya29.secret","expires_in":3599,"token_type":"MAC"}"#,
                "\"MAC\"",
            ),
        ];
        for (body, expected) in cases {
            let server = serve(move |_, _| (200, body.to_owned()));
            let dir = tempfile::tempdir().unwrap();
            let source = TokenSource::new(
                service_account(&dir, &format!("{}/token", server.url)),
                agent(),
            );
            let error = source.token().unwrap_err();
            let message = error.to_string();
            assert!(!error.is_retriable(), "{message}");
            assert!(
                message.contains("sent a bad token response for service account"),
                "{message}"
            );
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn expires_in_as_a_string_is_accepted() {
        let server = serve(|_, _| (200, r#"{"access_token":"tok","expires_in":"3599"}"#.into()));
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(
            service_account(&dir, &format!("{}/token", server.url)),
            agent(),
        );
        assert_eq!(source.token().unwrap().as_deref(), Some("tok"));
        assert_eq!(source.token().unwrap().as_deref(), Some("tok"));
        assert_eq!(server.count(), 1);
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

    // ---- metadata server ----

    fn metadata_server() -> Server {
        serve(|request, n| {
            let path = "/computeMetadata/v1/instance/service-accounts/default/token";
            if request.method != "GET" || request.path != path {
                (404, format!("no {} {}", request.method, request.path))
            } else if request.header("metadata-flavor") != Some("Google") {
                (403, "Missing Metadata-Flavor:Google header.".into())
            } else {
                (200, token_json(&format!("meta-{n}"), 3599))
            }
        })
    }

    #[test]
    fn metadata_server_token_is_fetched_without_the_proxy_and_cached() {
        let server = metadata_server();
        let credentials = Credentials::Metadata {
            base_url: format!("{}/", server.url),
        };
        let source = TokenSource::new(credentials, agent_with_dead_proxy());
        assert_eq!(source.token().unwrap().as_deref(), Some("meta-1"));
        assert_eq!(source.token().unwrap().as_deref(), Some("meta-1"));
        assert_eq!(server.count(), 1);
        assert_eq!(
            source.identity(),
            "the GCE metadata server's default service account"
        );
    }

    #[test]
    fn metadata_server_errors() {
        let server = serve(|_, _| {
            let body =
                r#"{"error":{"code":404,"message":"No service account","status":"NOT_FOUND"}}"#;
            (404, body.into())
        });
        let source = TokenSource::new(
            Credentials::Metadata {
                base_url: server.url.clone(),
            },
            agent(),
        );
        let error = source.token().unwrap_err();
        assert!(!error.is_retriable());
        assert_eq!(
            error.to_string(),
            format!(
                "metadata server {} refused a token for its default service account: \
                 HTTP 404: NOT_FOUND: No service account",
                server.url
            )
        );

        let server = serve(|_, _| (503, String::new()));
        let source = TokenSource::new(
            Credentials::Metadata {
                base_url: server.url.clone(),
            },
            agent(),
        );
        let error = source.token().unwrap_err();
        assert!(error.is_retriable(), "{error}");
        assert_eq!(
            error.to_string(),
            format!(
                "metadata server {} failed to issue a token for its default service account: HTTP 503",
                server.url
            )
        );
    }

    #[test]
    fn metadata_base_url_follows_gce_metadata_host() {
        assert_eq!(metadata_base_url(None), "http://169.254.169.254");
        assert_eq!(metadata_base_url(Some("")), "http://169.254.169.254");
        assert_eq!(
            metadata_base_url(Some("127.0.0.1:8080")),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            metadata_base_url(Some("metadata.google.internal")),
            "http://metadata.google.internal"
        );
        assert_eq!(
            metadata_base_url(Some("http://10.0.0.1:80/")),
            "http://10.0.0.1:80"
        );
    }

    // ---- config values and key files ----

    #[test]
    fn keywords_in_config() {
        let none = Credentials::from_config("none").unwrap();
        assert!(matches!(none, Credentials::None));
        assert_eq!(none.identity(), "no credentials");
        let source = TokenSource::new(none, agent());
        assert_eq!(source.token().unwrap(), None);

        assert!(matches!(
            Credentials::from_config("metadata").unwrap(),
            Credentials::Metadata { .. }
        ));
        let error = Credentials::from_config("").unwrap_err();
        assert!(!error.is_retriable());
        assert!(
            error.to_string().starts_with("credentials: empty"),
            "{error}"
        );
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

    #[test]
    fn debug_output_holds_no_secrets() {
        let server = token_endpoint(3600);
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(
            service_account(&dir, &format!("{}/token", server.url)),
            agent(),
        );
        let token = source.token().unwrap().unwrap();
        let debug = format!("{source:?}");
        assert!(debug.contains(EMAIL), "{debug}");
        assert!(debug.contains("cached: Some(true)"), "{debug}");
        assert!(!debug.contains(&token), "{debug}");
        assert_no_key_material(&debug);
    }

    #[test]
    fn server_text_is_one_short_line_without_secrets() {
        assert_eq!(server_text("  a\r\n\tb  "), "a b");
        assert_eq!(server_text(&"y".repeat(31)), "y".repeat(31));
        assert_eq!(server_text(&"y".repeat(32)), "[redacted]");
        assert_eq!(
            server_text("x@y.iam.gserviceaccount.com"),
            "x@y.iam.gserviceaccount.com"
        );
        let long = "word ".repeat(100);
        let short = server_text(&long);
        assert!(
            short.ends_with("...") && short.chars().count() == 303,
            "{short}"
        );
        assert_eq!(server_text("é".repeat(400).as_str()).chars().count(), 303);
    }

    #[test]
    fn token_source_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<TokenSource>();
        shareable::<Credentials>();
        shareable::<AuthError>();
    }
}
