//! Reading what a token server (a token endpoint or the metadata server)
//! answers: the bounded body, the token in a success, and for a failure the
//! details for the message and whether trying again may help.
//!
//! Never sends a request (the token source in `mod.rs` does), and never
//! quotes a token response in a message: text from a server is reduced to
//! one short line, with anything that looks like a token redacted.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::store::http::{self as web, Failure};

use super::error::{AuthError, short_quoted};
use super::token::{MAX_TOKEN_LIFETIME, Token};

/// At most this much of a response body is read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// A token server and the identity asked for, for messages.
pub(super) struct Endpoint {
    pub(super) name: String,
    pub(super) for_whom: String,
}

impl Endpoint {
    /// The status and (bounded) body of a response, or why there is none.
    pub(super) fn read(
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
    pub(super) fn status_error(&self, status: u16, body: &[u8]) -> AuthError {
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
    pub(super) fn parse_token(&self, body: &[u8], fetched_at: Instant) -> Result<Token, AuthError> {
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
pub(super) fn oauth_error(body: &[u8]) -> Option<String> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let error = json.get("error")?.as_str()?;
    let text = match json.get("error_description").and_then(Value::as_str) {
        Some(description) if !description.trim().is_empty() => format!("{error}: {description}"),
        _ => error.to_owned(),
    };
    Some(server_text(&text)).filter(|t| !t.is_empty())
}

/// `HTTP 503`, and what the body says if anything.
pub(super) fn status_detail(status: u16, body: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::TcpListener;

    use super::super::testkit::{
        EMAIL, agent, assert_no_key_material, error_json, form_field, serve, service_account,
    };
    use super::super::{Credentials, TokenSource};

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
}
