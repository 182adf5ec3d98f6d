//! The error of GCS authentication, [`AuthError`], split by what the caller
//! can do about it, and the quoting of non-secret values in its messages.
//!
//! Never puts a token, a private key or a signed assertion into a message.
//! Imports nothing from the rest of `auth`: every other file here uses it.

/// A short, quoted, one-line rendering of a non-secret config value.
pub(super) fn short_quoted(value: &str) -> String {
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

    pub(super) fn retriable(what: impl Into<String>, why: impl Into<String>) -> AuthError {
        AuthError::Retriable {
            what: what.into(),
            why: why.into(),
        }
    }

    pub(super) fn fatal(what: impl Into<String>, why: impl Into<String>) -> AuthError {
        AuthError::Fatal {
            what: what.into(),
            why: why.into(),
        }
    }
}
