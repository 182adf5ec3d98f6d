//! What `[gcs] credentials` says: [`Credentials`] (none, the metadata
//! server, or a service-account key file, read and checked when the config
//! is) and the metadata server's address, from `GCE_METADATA_HOST`.
//!
//! Never fetches a token or talks to the network, and a key file's errors
//! name the file, never what is in it.

use std::path::Path;

use super::error::AuthError;
use super::key::ServiceAccountKey;

/// The metadata server's address on GCE and GKE.
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";

/// The environment variable that overrides the metadata server's `host[:port]`,
/// as in Google's own client libraries.
pub const METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";

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

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::TokenSource;
    use super::super::testkit::agent;

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
}
