//! Where the S3 store's keys come from (`s3.credentials`): `env`
//! (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), the path
//! of an AWS shared-credentials file (INI, profile AWS_PROFILE or
//! `default`), or `instance` (EC2 IMDSv2: a session token, then the role's
//! keys, fetched again before they expire).
//!
//! Never shows a secret key or a session token: not in Debug, not in an
//! error; only the access key id, which names the identity.

use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The instance metadata service; `AWS_EC2_METADATA_SERVICE_ENDPOINT`
/// (the AWS SDKs' name) points elsewhere.
const IMDS: &str = "http://169.254.169.254";
const IMDS_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// Instance keys are fetched again this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// One set of keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub access_key_id: String,
    pub secret: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"***")
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Why no keys: `retriable` when the metadata service may answer later.
#[derive(Debug, thiserror::Error)]
#[error("s3.credentials {source_name}: {why}")]
pub struct CredError {
    pub source_name: String,
    pub why: String,
    pub retriable: bool,
}

fn fatal(source_name: &str, why: impl Into<String>) -> CredError {
    CredError {
        source_name: source_name.into(),
        why: why.into(),
        retriable: false,
    }
}

/// Keys with the time (Unix seconds) after which they are not used.
struct Cached {
    keys: Keys,
    expires: Option<u64>,
}

/// The configured source and the keys it last gave.
pub struct Provider {
    config: String,
    cached: Mutex<Option<Cached>>,
    agent: ureq::Agent,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Provider({})", self.config)
    }
}

/// Reads `aws_access_key_id`, `aws_secret_access_key` and
/// `aws_session_token` of one profile from shared-credentials INI text.
pub fn parse_ini(text: &str, profile: &str) -> Result<Keys, String> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            in_profile = name == profile || name == format!("profile {profile}");
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(v.trim().to_string());
            match k.trim() {
                "aws_access_key_id" => id = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret)) => Ok(Keys {
            access_key_id,
            secret,
            session_token: token,
        }),
        _ => Err(format!(
            "profile [{profile}] has no aws_access_key_id and aws_secret_access_key"
        )),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Provider {
    /// Checks the setting now (the environment and a file are read once
    /// here; the metadata service is asked on first use).
    pub fn new(config: &str) -> Result<Provider, CredError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(5)))
            .proxy(None)
            .build()
            .into();
        let provider = Provider {
            config: config.to_string(),
            cached: Mutex::new(None),
            agent,
        };
        let keys = match config {
            "env" => Some(Self::from_env()?),
            "instance" => None,
            path => Some(Self::from_file(Path::new(path))?),
        };
        *provider.lock() = keys.map(|keys| Cached {
            keys,
            expires: None,
        });
        Ok(provider)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Cached>> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn from_env() -> Result<Keys, CredError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret)) => Ok(Keys {
                access_key_id,
                secret,
                session_token: var("AWS_SESSION_TOKEN"),
            }),
            _ => Err(fatal(
                "env",
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set",
            )),
        }
    }

    fn from_file(path: &Path) -> Result<Keys, CredError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| fatal(&name, format!("cannot read it: {e}")))?;
        let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
        parse_ini(&text, &profile).map_err(|why| fatal(&name, why))
    }

    /// The access key id, for messages ("instance" before the first fetch).
    pub fn identity(&self) -> String {
        match &*self.lock() {
            Some(c) => format!("access key {}", c.keys.access_key_id),
            None => format!("s3.credentials {}", self.config),
        }
    }

    /// Forgets fetched instance keys (after an ExpiredToken).
    pub fn invalidate(&self) {
        if self.config == "instance" {
            *self.lock() = None;
        }
    }

    /// Keys to sign with now.
    pub fn keys(&self) -> Result<Keys, CredError> {
        let mut cached = self.lock();
        if let Some(c) = &*cached
            && c.expires
                .is_none_or(|e| now_secs() + REFRESH_MARGIN.as_secs() < e)
        {
            return Ok(c.keys.clone());
        }
        let fetched = self.fetch_instance_keys()?;
        let keys = fetched.keys.clone();
        *cached = Some(fetched);
        Ok(keys)
    }

    /// IMDSv2: a token by PUT, the role name, then its keys.
    fn fetch_instance_keys(&self) -> Result<Cached, CredError> {
        let base = std::env::var(IMDS_ENV).unwrap_or_else(|_| IMDS.into());
        let base = base.trim_end_matches('/');
        let unreachable = |e: ureq::Error| CredError {
            source_name: "instance".into(),
            why: format!("instance metadata service {base}: {e}"),
            retriable: true,
        };
        let answer = |r: ureq::http::Response<ureq::Body>, step: &str| {
            let status = r.status().as_u16();
            let text = r
                .into_body()
                .with_config()
                .limit(64 << 10)
                .read_to_string()
                .map_err(unreachable)?;
            match status {
                200 => Ok(text),
                s => Err(CredError {
                    source_name: "instance".into(),
                    why: format!("instance metadata service {base}: HTTP {s} for {step}"),
                    retriable: s >= 500,
                }),
            }
        };
        let token = answer(
            self.agent
                .put(format!("{base}/latest/api/token"))
                .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
                .send_empty()
                .map_err(unreachable)?,
            "the session token",
        )?;
        let roles = format!("{base}/latest/meta-data/iam/security-credentials/");
        let get = |url: &str, step: &str| {
            answer(
                self.agent
                    .get(url)
                    .header("x-aws-ec2-metadata-token", &token)
                    .call()
                    .map_err(unreachable)?,
                step,
            )
        };
        let role = get(&roles, "the role name")?;
        let role = role.lines().next().unwrap_or("").trim().to_string();
        if role.is_empty() {
            return Err(fatal("instance", "the instance has no IAM role"));
        }
        let body = get(&format!("{roles}{role}"), "the role's keys")?;
        parse_instance_keys(&body).map_err(|why| fatal("instance", why))
    }
}

/// The role-credentials document of the metadata service.
fn parse_instance_keys(body: &str) -> Result<Cached, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Doc {
        access_key_id: String,
        secret_access_key: String,
        token: Option<String>,
        expiration: Option<String>,
    }
    let doc: Doc = serde_json::from_str(body)
        .map_err(|e| format!("unexpected role credentials document: {e}"))?;
    let expires = doc
        .expiration
        .as_deref()
        .map(crate::format::timestamp::parse_rfc3339)
        .transpose()?
        .map(|ms| (ms / 1000).max(0) as u64);
    Ok(Cached {
        keys: Keys {
            access_key_id: doc.access_key_id,
            secret: doc.secret_access_key,
            session_token: doc.token,
        },
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_from_ini_files() {
        let text = "# keys\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key=sdef\n\n\
                    [profile other]\naws_access_key_id=AKO\naws_secret_access_key = so\n\
                    aws_session_token = tok\n[broken]\naws_access_key_id=AKB\n";
        let table = [
            ("default", Ok(("AKDEF", "sdef", None))),
            ("other", Ok(("AKO", "so", Some("tok")))),
            ("broken", Err("profile [broken] has no")),
            ("missing", Err("profile [missing] has no")),
        ];
        for (profile, want) in table {
            match (parse_ini(text, profile), want) {
                (Ok(k), Ok((id, secret, token))) => {
                    assert_eq!(k.access_key_id, id);
                    assert_eq!(k.secret, secret);
                    assert_eq!(k.session_token.as_deref(), token);
                }
                (Err(e), Err(why)) => assert!(e.contains(why), "{e}"),
                (got, want) => panic!("{profile}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn secrets_are_not_shown() {
        let k = Keys {
            access_key_id: "AKID".into(),
            secret: "very-secret".into(),
            session_token: Some("token-secret".into()),
        };
        let shown = format!("{k:?}");
        assert!(shown.contains("AKID") && !shown.contains("secret\"") && !shown.contains("very"));
        assert!(!shown.contains("token-secret"));
    }

    #[test]
    fn instance_keys_carry_their_expiry() {
        let c = parse_instance_keys(
            r#"{"Code":"Success","AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2026-11-25T18:07:23Z"}"#,
        )
        .unwrap();
        assert_eq!(c.keys.access_key_id, "ASIA1");
        assert_eq!(c.keys.session_token.as_deref(), Some("t"));
        assert_eq!(c.expires, Some(1_795_630_043));
        assert!(parse_instance_keys("{}").is_err());
    }
}
