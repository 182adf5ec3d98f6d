//! What the HTTP stores share: the blocking `ureq` agent built from their
//! options (proxy, trust roots, timeouts), the retry policy (one pure
//! function: 408, 429, 5xx and transport failures retry, TLS failures and
//! other statuses are final), jittered back-off, percent-encoding, and the
//! count of retries by reason (`Retries`, handed in with the options and
//! read by whoever reports it: `/metrics`).
//!
//! Also what both HTTP stores share about objects: the metadata keys, the
//! CRC32C spelling, the error constructors, and the one wait between
//! attempts (`pause`: deadline, back-off, retry count, stop flag).
//!
//! No store logic and no I/O besides building the agent, reading the clock
//! for the back-off seed, and sleeping in `pause`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::object::StoreError;
use crate::cancel::Cancel;
use crate::redact::redact_url;

/// How an HTTP store connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    /// The config section the options come from, for messages (`gcs`).
    pub section: &'static str,
    /// HTTPS proxy URL; None = the HTTPS_PROXY/ALL_PROXY environment (with NO_PROXY).
    pub proxy: Option<String>,
    /// Hosts that bypass `proxy`.
    pub no_proxy: Vec<String>,
    /// PEM file whose certificates replace the built-in web roots.
    pub ca_bundle: Option<PathBuf>,
    /// Upper bound of one HTTP exchange.
    pub request_timeout: Duration,
    /// Where the store counts its retries (clones share the counts).
    pub retries: Arc<Retries>,
}

/// What went wrong with one HTTP exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with this status.
    Status(u16),
    /// The exchange did not complete.
    Transport(Transport),
}

/// Transport failures, as far as they matter for retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A phase timed out (connect, send, receive).
    Timeout,
    /// Refused, reset or closed mid-exchange.
    Connection,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake or certificate check failed (a configuration problem).
    Tls,
    /// Anything else (malformed response, proxy refusing, ...).
    Other,
}

/// Should the exchange be tried again? Not a `501 Not Implemented`: the
/// server lacks what the request needs (S3-compatible stores without
/// conditional writes answer so), and will lack it next time.
pub fn retriable(f: Failure) -> bool {
    match f {
        Failure::Status(s) => s == 408 || s == 429 || ((500..=599).contains(&s) && s != 501),
        Failure::Transport(Transport::Tls) => false,
        Failure::Transport(_) => true,
    }
}

/// The reasons a retry is counted under, as `reason` names them.
pub const REASONS: [&str; 13] = [
    "408",
    "429",
    "500",
    "502",
    "503",
    "504",
    "5xx",
    "status",
    "timeout",
    "connection",
    "dns",
    "tls",
    "other",
];

/// The reason label of a failure: the status for the common ones, `5xx`
/// for other server errors, the transport failure's kind otherwise.
pub fn reason(f: Failure) -> &'static str {
    match f {
        Failure::Status(408) => "408",
        Failure::Status(429) => "429",
        Failure::Status(500) => "500",
        Failure::Status(502) => "502",
        Failure::Status(503) => "503",
        Failure::Status(504) => "504",
        Failure::Status(500..=599) => "5xx",
        Failure::Status(_) => "status",
        Failure::Transport(Transport::Timeout) => "timeout",
        Failure::Transport(Transport::Connection) => "connection",
        Failure::Transport(Transport::Dns) => "dns",
        Failure::Transport(Transport::Tls) => "tls",
        Failure::Transport(Transport::Other) => "other",
    }
}

/// Requests of an HTTP store retried, by reason. Counting is all this
/// does: nothing reads it back to decide.
pub struct Retries([AtomicU64; REASONS.len()]);

impl Default for Retries {
    fn default() -> Self {
        Retries([const { AtomicU64::new(0) }; REASONS.len()])
    }
}

/// Counters are equal when they hold the same counts.
impl PartialEq for Retries {
    fn eq(&self, other: &Self) -> bool {
        self.read() == other.read()
    }
}

impl Eq for Retries {}

impl fmt::Debug for Retries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counted: Vec<_> = self.read().into_iter().filter(|(_, n)| *n > 0).collect();
        write!(f, "Retries{counted:?}")
    }
}

impl Retries {
    /// One more retry after `f`.
    pub fn count(&self, f: Failure) {
        let r = reason(f);
        if let Some(i) = REASONS.iter().position(|x| *x == r) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every reason with its count.
    pub fn read(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .zip(&self.0)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The object metadata keys both HTTP stores write (the contract in DESIGN.md).
pub mod meta {
    pub const NEXT_OFFSET: &str = "next-offset";
    pub const RECORD_COUNT: &str = "record-count";
    pub const MIN_TIMESTAMP: &str = "min-timestamp";
    pub const MAX_TIMESTAMP: &str = "max-timestamp";
    pub const FORMAT_VERSION: &str = "format-version";
    pub const TOPIC_ID: &str = "topic-id";
    pub const LAST_EPOCH: &str = "last-epoch";
    pub const SKIPPED: &str = "skipped";
    pub const CRC32C: &str = "crc32c";
}

/// CRC32C as GCS and S3 spell it: base64 of its big-endian bytes.
pub fn crc32c_b64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

pub fn parse_crc32c(b64: &str) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

pub fn unavailable(what: String, why: impl fmt::Display) -> StoreError {
    StoreError::Unavailable {
        what,
        why: why.to_string(),
    }
}

pub fn refused(what: String, why: impl fmt::Display) -> StoreError {
    StoreError::Refused {
        what,
        why: why.to_string(),
    }
}

pub fn not_archive(what: String, why: impl fmt::Display) -> StoreError {
    StoreError::NotArchive {
        what,
        why: why.to_string(),
    }
}

/// The names of the folders right under `folder`, from a listing's common
/// prefixes (`{folder}{name}/`), sorted; empty names left out.
pub fn child_folders(folder: &str, prefixes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = prefixes
        .iter()
        .filter_map(|p| Some(p.strip_prefix(folder)?.trim_end_matches('/').to_string()))
        .filter(|t| !t.is_empty())
        .collect();
    out.sort();
    out
}

/// How long an HTTP store keeps trying, and what it answers to while it
/// waits.
pub struct Patience<'a> {
    /// The setting that bounds it, for the message (`gcs.retry_timeout`).
    pub setting: &'static str,
    pub timeout: Duration,
    pub retries: &'a Retries,
    pub cancel: &'a Cancel,
}

/// The one wait between attempts of an HTTP store: an error when the next
/// attempt would start past `deadline` or the stop flag is set; otherwise
/// the retry is counted (by reason) and the back-off slept.
pub fn pause(
    what: &dyn Fn() -> String,
    backoff: &mut Backoff,
    deadline: Instant,
    failure: Failure,
    why: &str,
    patience: &Patience,
) -> Result<(), StoreError> {
    let delay = backoff.next_delay();
    if Instant::now() + delay >= deadline {
        return Err(unavailable(
            what(),
            format!(
                "{why} (still failing after {}s: {})",
                patience.timeout.as_secs(),
                patience.setting
            ),
        ));
    }
    log::debug!("{}: {failure:?} {why}; retrying in {delay:?}", what());
    patience.retries.count(failure);
    if !patience.cancel.sleep(delay) {
        return Err(StoreError::Interrupted { what: what() });
    }
    Ok(())
}

/// Exponential back-off with full jitter: the n-th wait is uniform in
/// `[0, min(max, base · 2ⁿ)]` (so many clients do not retry in step).
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    state: u64,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        Backoff::with_seed(base, max, seed)
    }

    pub fn with_seed(base: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
            state: seed | 1,
        }
    }

    /// The cap of the next wait (before jitter).
    fn cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.cap();
        self.attempt += 1;
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let fraction = (r >> 11) as f64 / (1u64 << 53) as f64;
        cap.mul_f64(fraction)
    }

    /// Start over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Classifies a ureq error for the retry policy.
pub fn transport(e: &ureq::Error) -> Transport {
    use ureq::Error as E;
    match e {
        E::Timeout(_) => Transport::Timeout,
        // rustls reports a certificate it does not trust as invalid data on
        // the stream: a configuration problem, not a broken connection.
        E::Io(io)
            if io.kind() == std::io::ErrorKind::InvalidData
                && io.to_string().contains("certificate") =>
        {
            Transport::Tls
        }
        E::Io(_) | E::ConnectionFailed | E::BodyStalled => Transport::Connection,
        E::HostNotFound => Transport::Dns,
        E::Tls(_) | E::Rustls(_) | E::Pem(_) => Transport::Tls,
        _ => Transport::Other,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The HTTP agent: no redirects (GCS's 308 means "resume incomplete"),
/// statuses as values, timeouts, proxy and trust roots from the options.
pub fn agent(config: &HttpOptions) -> Result<ureq::Agent, StoreError> {
    let mut builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(config.request_timeout))
        .timeout_connect(Some(config.request_timeout.min(Duration::from_secs(15))))
        .user_agent(format!("kafka-store/{}", env!("CARGO_PKG_VERSION")));
    if let Some(url) = &config.proxy {
        let bad = |e: ureq::Error| StoreError::Refused {
            what: format!("{}.proxy {:?}", config.section, redact_url(url)),
            why: e.to_string(),
        };
        let parsed = ureq::Proxy::new(url).map_err(bad)?;
        let mut proxy = ureq::Proxy::builder(parsed.protocol())
            .host(parsed.host())
            .port(parsed.port());
        if let Some(user) = parsed.username() {
            proxy = proxy.username(user);
        }
        if let Some(password) = parsed.password() {
            proxy = proxy.password(password);
        }
        for host in &config.no_proxy {
            proxy = proxy.no_proxy(host);
        }
        builder = builder.proxy(Some(proxy.build().map_err(bad)?));
    }
    if let Some(path) = &config.ca_bundle {
        let what = || format!("{}.ca_bundle {}", config.section, path.display());
        let pem = std::fs::read(path).map_err(|cause| StoreError::Io {
            what: what(),
            cause,
        })?;
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Refused {
                what: what(),
                why: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(StoreError::Refused {
                what: what(),
                why: "holds no PEM certificate".into(),
            });
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build();
        builder = builder.tls_config(tls);
    }
    Ok(builder.build().new_agent())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(
            encode("events/000003/00000000000000000042.avro"),
            "events%2F000003%2F00000000000000000042.avro"
        );
        assert_eq!(encode("a b+c~"), "a%20b%2Bc~");
    }

    #[test]
    fn status_codes_and_transport_failures_are_classified() {
        let table = [
            (Failure::Status(408), true),
            (Failure::Status(429), true),
            (Failure::Status(500), true),
            (Failure::Status(502), true),
            (Failure::Status(501), false),
            (Failure::Status(503), true),
            (Failure::Status(504), true),
            (Failure::Status(400), false),
            (Failure::Status(401), false),
            (Failure::Status(403), false),
            (Failure::Status(404), false),
            (Failure::Status(409), false),
            (Failure::Status(410), false),
            (Failure::Status(412), false),
            (Failure::Transport(Transport::Timeout), true),
            (Failure::Transport(Transport::Connection), true),
            (Failure::Transport(Transport::Dns), true),
            (Failure::Transport(Transport::Other), true),
            (Failure::Transport(Transport::Tls), false),
        ];
        for (f, want) in table {
            assert_eq!(retriable(f), want, "{f:?}");
        }
    }

    #[test]
    fn child_folders_are_named_from_their_prefixes() {
        let prefixes: Vec<String> = ["a/t2/", "a/t1/", "a/", "b/x/"]
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(child_folders("a/", &prefixes), vec!["t1", "t2"]);
        assert_eq!(
            child_folders("", &prefixes),
            vec!["a", "a/t1", "a/t2", "b/x"]
        );
    }

    #[test]
    fn crc32c_is_base64_of_big_endian_bytes() {
        // The CRC32C of "hello world" is 0xc99465aa; GCS shows it as yZRlqg==.
        assert_eq!(crc32c::crc32c(b"hello world"), 0xc994_65aa);
        assert_eq!(crc32c_b64(0xc994_65aa), "yZRlqg==");
        assert_eq!(parse_crc32c("yZRlqg=="), Some(0xc994_65aa));
        assert_eq!(parse_crc32c("nope"), None);
    }

    #[test]
    fn transport_errors_are_told_apart() {
        use std::io::{Error, ErrorKind};
        let io = |kind, msg: &str| ureq::Error::Io(Error::new(kind, msg.to_string()));
        let table = [
            (
                io(
                    ErrorKind::InvalidData,
                    "invalid peer certificate: UnknownIssuer",
                ),
                Transport::Tls,
            ),
            (
                io(ErrorKind::InvalidData, "received corrupt message"),
                Transport::Connection,
            ),
            (
                io(ErrorKind::ConnectionReset, "reset"),
                Transport::Connection,
            ),
            (ureq::Error::HostNotFound, Transport::Dns),
            (ureq::Error::ConnectionFailed, Transport::Connection),
        ];
        for (e, want) in table {
            assert_eq!(transport(&e), want, "{e}");
        }
    }

    #[test]
    fn retries_are_counted_by_reason() {
        let table = [
            (Failure::Status(503), "503"),
            (Failure::Status(429), "429"),
            (Failure::Status(408), "408"),
            (Failure::Status(500), "500"),
            (Failure::Status(507), "5xx"),
            (Failure::Status(404), "status"),
            (Failure::Transport(Transport::Timeout), "timeout"),
            (Failure::Transport(Transport::Connection), "connection"),
            (Failure::Transport(Transport::Dns), "dns"),
            (Failure::Transport(Transport::Tls), "tls"),
            (Failure::Transport(Transport::Other), "other"),
        ];
        for (f, want) in table {
            assert_eq!(reason(f), want, "{f:?}");
            assert!(REASONS.contains(&want));
        }
        let retries = Retries::default();
        retries.count(Failure::Status(503));
        retries.count(Failure::Status(503));
        retries.count(Failure::Transport(Transport::Timeout));
        let read = retries.read();
        assert_eq!(read.len(), REASONS.len());
        assert!(read.contains(&("503", 2)) && read.contains(&("timeout", 1)));
        assert!(read.contains(&("429", 0)));
    }

    #[test]
    fn waits_grow_to_the_cap_with_jitter_below_it() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut b = Backoff::with_seed(base, max, 7);
        let mut caps = Vec::new();
        for _ in 0..8 {
            caps.push(b.cap());
            let d = b.next_delay();
            assert!(d <= *caps.last().unwrap());
        }
        assert_eq!(caps[0], base);
        assert_eq!(caps[1], base * 2);
        assert_eq!(caps[4], Duration::from_millis(1600));
        assert_eq!(caps[5], max);
        assert_eq!(caps[7], max);
        b.reset();
        assert_eq!(b.cap(), base);
        // Jitter spreads the waits.
        let waits: Vec<_> = (0..20)
            .map(|_| Backoff::with_seed(max, max, rand_seed()).next_delay())
            .collect();
        assert!(waits.iter().any(|w| *w != waits[0]));
    }

    fn rand_seed() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(1);
        N.fetch_add(0x9E37_79B9, Ordering::Relaxed)
    }
}
