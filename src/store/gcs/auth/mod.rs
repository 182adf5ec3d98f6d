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
//!
//! This file holds the [`TokenSource`]: the cache, and the requests to the
//! token endpoint and the metadata server. The files below it import nothing
//! from here: `credentials` (the config value and the metadata server's
//! address), `key` (key files, PEM and the signed JWT), `endpoint` (reading
//! a token server's answer: the token, or the error details), `token` (a
//! fetched token and when to refresh it) and `error` ([`AuthError`]);
//! `testkit` holds the fixtures of their tests.

mod credentials;
mod endpoint;
mod error;
mod key;
#[cfg(test)]
mod testkit;
mod token;

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;

use endpoint::{Endpoint, oauth_error, status_detail};
use token::Token;

// Everything `credentials` and `key` make public is part of `auth`'s surface.
pub use credentials::Credentials;
use error::AuthError;
use key::ServiceAccountKey;

const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, form-encoded.
const JWT_BEARER_GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// Timeout for a token-endpoint request when the caller's agent has none.
const TOKEN_ENDPOINT_TIMEOUT: Duration = Duration::from_secs(60);

/// Timeouts for the metadata server, which is local and normally answers at once.
const METADATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

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

#[cfg(test)]
mod tests {
    use super::key::SCOPE;
    use super::*;

    use std::net::TcpListener;
    use std::sync::{Arc, OnceLock};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    use serde_json::Value;

    use super::testkit::{
        EMAIL, KID, Request, Server, agent, assert_no_key_material, error_json, form_field, serve,
        service_account, test_key, token_json,
    };

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
    fn token_source_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<TokenSource>();
        shareable::<Credentials>();
        shareable::<AuthError>();
    }
}
