//! One blocking TCP connection to one broker: TLS over it when configured
//! (`tls`), size-prefixed framing, correlation ids, the ApiVersions
//! handshake, SASL authentication (SaslHandshake + SaslAuthenticate, the
//! tokens made by `sasl`) and its renewal before a session the broker
//! limits runs out (KIP-368), and the choice of the protocol version for
//! each request. Every connection the process opens goes through here, so
//! each is authenticated the same way.
//!
//! A connection never retries and never reconnects: after any error it is
//! broken and the owner drops it. It knows nothing about topics or leaders.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Message, Request, StrBytes, VersionRange,
};

use super::error::{KafkaError, code_name};
use super::pool::Pool;
use super::sasl::{Exchange, SaslConfig, Step};
use super::tls::{self, Stream, TlsConfig};
use crate::cancel::Cancel;

/// Reads wait at most this long before looking at the stop flag.
const READ_SLICE: Duration = Duration::from_millis(200);
/// ApiVersions is always answered with a v0 header; v3 is the first flexible one.
const API_VERSIONS_VERSION: i16 = 3;
/// An ApiVersions answer is a few KiB: anything far larger is not Kafka
/// speaking (a TLS alert read as a size is ~350 MB).
const HANDSHAKE_MAX_BYTES: usize = 1 << 20;
/// UNSUPPORTED_VERSION: the broker then answers ApiVersions in v0 form.
const UNSUPPORTED_VERSION: i16 = 35;
/// v1: SaslAuthenticate requests carry the tokens (v0 sent them raw).
const SASL_HANDSHAKE: VersionRange = VersionRange { min: 1, max: 1 };
const SASL_AUTHENTICATE: VersionRange = VersionRange { min: 0, max: 2 };
/// More SASL round trips than any mechanism here needs (SCRAM takes two).
const SASL_MAX_STEPS: usize = 4;
/// A session the broker limits is renewed once this share of it has gone
/// (Kafka's Java client picks 85–95%): the margin covers the time between
/// the check and the broker reading the request.
const REAUTH_AT_PERCENT: u64 = 85;
/// The broker refuses a renewal that starts within a second of the last
/// (Kafka's `KafkaChannel`), however short the session it grants.
const REAUTH_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Timeouts and identity shared by every connection of a client.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// A response announcing more than this is refused (memory bound; also
    /// catches a listener that does not speak plain Kafka).
    pub max_response_bytes: usize,
    pub security: Security,
}

/// How a connection proves who it talks to and who it is: TLS and SASL,
/// each optional (`security_protocol`: plaintext has neither, ssl TLS,
/// sasl_plaintext SASL, sasl_ssl both).
#[derive(Clone, Debug, Default)]
pub struct Security {
    pub tls: Option<TlsConfig>,
    pub sasl: Option<SaslConfig>,
}

/// How long after authenticating to renew a session the broker grants for
/// `session_lifetime_ms` (0: unlimited, nothing to renew): 85% of it, and
/// never sooner than the broker accepts a renewal.
fn renewal_after(session_lifetime_ms: i64) -> Option<Duration> {
    u64::try_from(session_lifetime_ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(|ms| {
            Duration::from_millis(ms.saturating_mul(REAUTH_AT_PERCENT) / 100)
                .max(REAUTH_MIN_INTERVAL)
        })
}

/// The version to speak for one API: the highest both sides support.
///
/// `ours` is what this client implements; `theirs` the broker's advertised
/// range (None if the broker does not know the API).
pub fn choose_version(ours: VersionRange, theirs: Option<(i16, i16)>) -> Option<i16> {
    let (min, max) = theirs?;
    let low = ours.min.max(min);
    let high = ours.max.min(max);
    (low <= high).then_some(high)
}

/// An open, handshaken connection to one broker.
pub struct Connection {
    broker: String,
    stream: Stream,
    correlation_id: i32,
    client_id: StrBytes,
    request_timeout: Duration,
    max_response_bytes: usize,
    cancel: Cancel,
    /// The broker's supported range per API key.
    supported: HashMap<i16, (i16, i16)>,
    /// Buffers for large responses, back when their last chunk is dropped.
    pool: Pool,
    /// The quota wait the last response asked for (its `throttle_time_ms`),
    /// until the owner takes it.
    throttle_time_ms: i32,
    /// What this connection authenticated with, kept to do it again.
    sasl: Option<SaslConfig>,
    /// When the session the broker granted must be renewed: the broker
    /// closes a connection used for anything else after it ends.
    reauthenticate_at: Option<Instant>,
}

/// A response that says how long the broker throttles this client by a
/// quota. From Kafka 2.0 on (KIP-219, the versions this client speaks to
/// Kafka 3 and 4) the broker answers at once and then mutes the
/// connection that long; the client waits too.
pub trait ThrottleTime {
    fn throttle_time_ms(&self) -> i32;
}

macro_rules! throttle_time {
    ($($response:ident),* $(,)?) => {
        $(impl ThrottleTime for kafka_protocol::messages::$response {
            fn throttle_time_ms(&self) -> i32 {
                self.throttle_time_ms
            }
        })*
    };
}

throttle_time!(
    MetadataResponse,
    ListOffsetsResponse,
    FetchResponse,
    OffsetForLeaderEpochResponse,
    FindCoordinatorResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    LeaveGroupResponse,
    ProduceResponse,
    InitProducerIdResponse,
    DescribeProducersResponse,
);

/// The SASL exchange carries no throttle time.
impl ThrottleTime for kafka_protocol::messages::SaslHandshakeResponse {
    fn throttle_time_ms(&self) -> i32 {
        0
    }
}

impl ThrottleTime for kafka_protocol::messages::SaslAuthenticateResponse {
    fn throttle_time_ms(&self) -> i32 {
        0
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`), runs the TLS handshake, negotiates
    /// API versions and authenticates, as `config.security` says. `cancel`
    /// aborts a request in flight (the stop flag).
    pub fn open(
        addr: &str,
        config: &ConnectionConfig,
        cancel: &Cancel,
    ) -> Result<Self, KafkaError> {
        let connect_err = |source| KafkaError::Connect {
            broker: addr.to_string(),
            source: std::sync::Arc::new(source),
        };
        let addrs: Vec<_> = addr.to_socket_addrs().map_err(connect_err)?.collect();
        let mut last =
            std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing");
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, config.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(KafkaError::Timeout {
                        broker: addr.to_string(),
                        phase: "connect",
                        millis: config.connect_timeout.as_millis(),
                    });
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| connect_err(last))?;
        let io = |e| KafkaError::Io {
            broker: addr.to_string(),
            source: std::sync::Arc::new(e),
        };
        stream.set_nodelay(true).map_err(io)?;
        stream
            .set_read_timeout(Some(config.request_timeout.min(READ_SLICE)))
            .map_err(io)?;
        stream
            .set_write_timeout(Some(config.request_timeout))
            .map_err(io)?;
        let stream = match &config.security.tls {
            None => Stream::Plain(stream),
            Some(tls) => tls::handshake(tls, addr, stream, config.connect_timeout, cancel)?,
        };
        let mut conn = Connection {
            broker: addr.to_string(),
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_string(config.client_id.clone()),
            request_timeout: config.request_timeout,
            max_response_bytes: config.max_response_bytes,
            cancel: cancel.clone(),
            supported: HashMap::new(),
            pool: Pool::default(),
            throttle_time_ms: 0,
            sasl: config.security.sasl.clone(),
            reauthenticate_at: None,
        };
        conn.handshake()?;
        if let Some(sasl) = conn.sasl.clone() {
            conn.authenticate(&sasl).map_err(|e| conn.explain_sasl(e))?;
        }
        Ok(conn)
    }

    /// The `host:port` this connection talks to.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    fn handshake(&mut self) -> Result<(), KafkaError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kafka-store"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let body = self
            .round_trip::<ApiVersionsRequest>(
                &request,
                API_VERSIONS_VERSION,
                self.request_timeout,
                HANDSHAKE_MAX_BYTES,
            )
            .map_err(|e| self.explain_handshake(e))?;
        let response = match ApiVersionsResponse::decode(&mut body.clone(), API_VERSIONS_VERSION) {
            Ok(r) if r.error_code == 0 => r,
            _ => {
                // An older broker answers an unknown version in v0 form with
                // its own range for ApiVersions; speak that.
                let v0 = ApiVersionsResponse::decode(&mut body.clone(), 0)
                    .map_err(|e| self.protocol(format!("undecodable ApiVersions response: {e}")))?;
                if v0.error_code != UNSUPPORTED_VERSION {
                    return Err(KafkaError::Broker {
                        what: format!("api versions handshake with {}", self.broker),
                        code: kafka_protocol::ResponseError::try_from_code(v0.error_code)
                            .unwrap_or(kafka_protocol::ResponseError::UnknownServerError),
                    });
                }
                let theirs = v0
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                    .map(|k| (k.min_version, k.max_version));
                let version =
                    choose_version(ApiVersionsRequest::VERSIONS, theirs).ok_or_else(|| {
                        self.unsupported("ApiVersions", ApiVersionsRequest::VERSIONS, theirs)
                    })?;
                let body = self.round_trip::<ApiVersionsRequest>(
                    &request,
                    version,
                    self.request_timeout,
                    HANDSHAKE_MAX_BYTES,
                )?;
                ApiVersionsResponse::decode(&mut body.clone(), version)
                    .map_err(|e| self.protocol(format!("undecodable ApiVersions response: {e}")))?
            }
        };
        self.supported = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    /// SaslHandshake, then SaslAuthenticate until the mechanism is done.
    /// Every failure is final and names the broker, mechanism and user.
    fn authenticate(&mut self, sasl: &SaslConfig) -> Result<(), KafkaError> {
        let mechanism = sasl.mechanism.name();
        let refused = |broker: &str, why: String| KafkaError::Auth {
            broker: broker.to_string(),
            mechanism,
            user: sasl.username.clone(),
            why,
        };
        let version = self.version_for::<SaslHandshakeRequest>(SASL_HANDSHAKE)?;
        let request =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let response = self.send(&request, version)?;
        if response.error_code != 0 {
            let code = ResponseError::try_from_code(response.error_code)
                .unwrap_or(ResponseError::Unknown(response.error_code));
            let enabled: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
            let why = match code {
                ResponseError::UnsupportedSaslMechanism => format!(
                    "the listener enables only {} (set kafka.sasl_mechanism)",
                    enabled.join(", ")
                ),
                ResponseError::IllegalSaslState => format!(
                    "{} (is this a SASL listener? check kafka.security_protocol)",
                    code_name(code)
                ),
                other => code_name(other),
            };
            return Err(refused(&self.broker, why));
        }
        let version = self.version_for::<SaslAuthenticateRequest>(SASL_AUTHENTICATE)?;
        let (mut exchange, mut token) = Exchange::start(sasl);
        for _ in 0..SASL_MAX_STEPS {
            let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
            let response = self.send(&request, version)?;
            if response.error_code != 0 {
                let code = ResponseError::try_from_code(response.error_code)
                    .unwrap_or(ResponseError::Unknown(response.error_code));
                let why = response
                    .error_message
                    .as_ref()
                    .map_or_else(|| code_name(code), |m| format!("{} ({m})", code_name(code)));
                return Err(refused(&self.broker, why));
            }
            match exchange.next(&response.auth_bytes) {
                Ok(Step::Send(next)) => token = next,
                Ok(Step::Done) => {
                    self.reauthenticate_at = renewal_after(response.session_lifetime_ms)
                        .map(|after| Instant::now() + after);
                    return Ok(());
                }
                Err(e) => return Err(refused(&self.broker, e.to_string())),
            }
        }
        Err(refused(
            &self.broker,
            format!("the broker wants more than {SASL_MAX_STEPS} round trips"),
        ))
    }

    /// A listener that closes a new connection at SaslHandshake does not
    /// do SASL (a renewal that loses its connection is a lost connection).
    fn explain_sasl(&self, e: KafkaError) -> KafkaError {
        match e {
            KafkaError::Io { source, .. } if source.kind() == ErrorKind::UnexpectedEof => self.protocol(
                "the broker closed the connection during SASL authentication (is this a SASL listener? check kafka.security_protocol)".into(),
            ),
            other => other,
        }
    }

    /// The version to use for `R`, given the range this client implements.
    pub fn version_for<R: Request>(&self, ours: VersionRange) -> Result<i16, KafkaError> {
        let theirs = self.supported.get(&R::KEY).copied();
        choose_version(ours, theirs).ok_or_else(|| self.unsupported(api_name(R::KEY), ours, theirs))
    }

    /// The quota wait the last response asked for, once.
    pub fn take_throttle(&mut self) -> i32 {
        std::mem::take(&mut self.throttle_time_ms)
    }

    /// Sends `request` at `version` and decodes the response.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, KafkaError>
    where
        R::Response: ThrottleTime,
    {
        self.send_up_to(request, version, self.max_response_bytes)
    }

    /// Like [`Connection::send`], accepting a response of up to `max_bytes`
    /// (a fetch of one partition whose first batch is larger than the usual
    /// bound). A larger response is [`KafkaError::ResponseTooLarge`] and
    /// leaves the connection broken.
    pub fn send_up_to<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        max_bytes: usize,
    ) -> Result<R::Response, KafkaError>
    where
        R::Response: ThrottleTime,
    {
        let mut body = self.round_trip(request, version, self.request_timeout, max_bytes)?;
        self.decode_throttled::<R>(&mut body, version)
    }

    /// Like [`Connection::send`] for a request the broker may hold longer
    /// than the request timeout (JoinGroup waits for the whole rebalance).
    pub fn send_waiting<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        wait: Duration,
    ) -> Result<R::Response, KafkaError>
    where
        R::Response: ThrottleTime,
    {
        let limit = self.request_timeout.max(wait);
        let mut body = self.round_trip(request, version, limit, self.max_response_bytes)?;
        self.decode_throttled::<R>(&mut body, version)
    }

    fn decode_throttled<R: Request>(
        &mut self,
        body: &mut Bytes,
        version: i16,
    ) -> Result<R::Response, KafkaError>
    where
        R::Response: ThrottleTime,
    {
        let response = self.decode::<R>(body, version)?;
        self.throttle_time_ms = response.throttle_time_ms();
        Ok(response)
    }

    fn decode<R: Request>(
        &self,
        body: &mut Bytes,
        version: i16,
    ) -> Result<R::Response, KafkaError> {
        R::Response::decode(body, version).map_err(|e| {
            self.protocol(format!(
                "undecodable {} v{version} response: {e}",
                api_name(R::KEY)
            ))
        })
    }

    /// Authenticates again on this connection when its session is due for
    /// renewal (nothing else is in flight: one request at a time).
    fn renew_session(&mut self) -> Result<(), KafkaError> {
        if self.reauthenticate_at.is_none_or(|at| Instant::now() < at) {
            return Ok(());
        }
        let Some(sasl) = self.sasl.clone() else {
            return Ok(());
        };
        self.reauthenticate_at = None;
        self.authenticate(&sasl)?;
        log::debug!(
            "kafka broker {}: {} session of {:?} authenticated again",
            self.broker,
            sasl.mechanism.name(),
            sasl.username
        );
        Ok(())
    }

    /// Writes one framed request and reads its response body (after the
    /// header), renewing the session first when it is due.
    fn round_trip<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        limit: Duration,
        max_bytes: usize,
    ) -> Result<Bytes, KafkaError> {
        self.renew_session()?;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| request.encode(&mut buf, version))
            .map_err(|e| {
                self.protocol(format!(
                    "cannot encode {} v{version}: {e}",
                    api_name(R::KEY)
                ))
            })?;
        let size = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&size.to_be_bytes());

        let started = Instant::now();
        let millis = limit.as_millis();
        self.stream
            .write_all(&buf)
            .and_then(|()| self.stream.flush())
            .map_err(|e| io_error(&self.broker, millis, e))?;
        let mut size = [0u8; 4];
        self.read_fully(&mut size, started, limit)?;
        let size = i32::from_be_bytes(size);
        if size < 4 {
            return Err(self.protocol(format!(
                "a response of {size} bytes is not a kafka response"
            )));
        }
        if size as usize > max_bytes {
            return Err(KafkaError::ResponseTooLarge {
                broker: self.broker.clone(),
                size: size as usize,
                limit: max_bytes,
            });
        }
        let mut body = self.pool.take(size as usize);
        self.read_fully(&mut body, started, limit)?;
        let mut body = self.pool.share(body);
        let response_header_version = R::Response::header_version(version);
        let header = ResponseHeader::decode(&mut body, response_header_version)
            .map_err(|e| self.protocol(format!("undecodable response header: {e}")))?;
        if header.correlation_id != self.correlation_id {
            return Err(self.protocol(format!(
                "correlation id {} does not match request {}",
                header.correlation_id, self.correlation_id
            )));
        }
        Ok(body)
    }

    /// Reads exactly `buf.len()` bytes within `limit` of `started`, in short
    /// slices so that a stop request is noticed while the broker holds a
    /// request (JoinGroup can wait minutes).
    fn read_fully(
        &mut self,
        buf: &mut [u8],
        started: Instant,
        limit: Duration,
    ) -> Result<(), KafkaError> {
        let millis = limit.as_millis();
        let mut filled = 0;
        while filled < buf.len() {
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    let eof = std::io::Error::from(ErrorKind::UnexpectedEof);
                    return Err(io_error(&self.broker, millis, eof));
                }
                Ok(n) => filled += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    if self.cancel.is_set() {
                        return Err(KafkaError::Interrupted);
                    }
                    if started.elapsed() > limit {
                        return Err(KafkaError::Timeout {
                            broker: self.broker.clone(),
                            phase: "request",
                            millis,
                        });
                    }
                }
                Err(e) => return Err(io_error(&self.broker, millis, e)),
            }
        }
        Ok(())
    }

    /// A listener that closes the connection at the first request most
    /// likely wants TLS (or, over TLS, SASL).
    fn explain_handshake(&self, e: KafkaError) -> KafkaError {
        match e {
            KafkaError::ResponseTooLarge { size, .. } => self.protocol(format!(
                "a response of {size} bytes is not a kafka response (is this a TLS listener? check kafka.security_protocol)"
            )),
            KafkaError::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => self.protocol(
                "the broker closed the connection at the first request (is this a TLS or SASL listener? check kafka.security_protocol)".into(),
            ),
            other => other,
        }
    }

    fn protocol(&self, what: String) -> KafkaError {
        KafkaError::Protocol {
            broker: self.broker.clone(),
            what,
        }
    }

    fn unsupported(
        &self,
        api: &'static str,
        ours: VersionRange,
        theirs: Option<(i16, i16)>,
    ) -> KafkaError {
        KafkaError::Unsupported {
            broker: self.broker.clone(),
            api,
            ours: format!("{}..={}", ours.min, ours.max),
            theirs: theirs.map_or("none".into(), |(a, b)| format!("{a}..={b}")),
        }
    }
}

/// An I/O error of a request: a TLS failure is final and says what to fix.
fn io_error(broker: &str, millis: u128, e: std::io::Error) -> KafkaError {
    match tls::explain(&e) {
        Some(why) => KafkaError::Tls {
            broker: broker.to_string(),
            why,
        },
        None => KafkaError::from_io(broker, "request", millis, e),
    }
}

/// The protocol guide's name of an API key.
pub fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Fetch) => "Fetch",
        Ok(ApiKey::ListOffsets) => "ListOffsets",
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::OffsetCommit) => "OffsetCommit",
        Ok(ApiKey::OffsetFetch) => "OffsetFetch",
        Ok(ApiKey::FindCoordinator) => "FindCoordinator",
        Ok(ApiKey::JoinGroup) => "JoinGroup",
        Ok(ApiKey::Heartbeat) => "Heartbeat",
        Ok(ApiKey::LeaveGroup) => "LeaveGroup",
        Ok(ApiKey::SyncGroup) => "SyncGroup",
        Ok(ApiKey::ApiVersions) => "ApiVersions",
        Ok(ApiKey::OffsetForLeaderEpoch) => "OffsetsForLeaderEpoch",
        Ok(ApiKey::Produce) => "Produce",
        Ok(ApiKey::InitProducerId) => "InitProducerId",
        Ok(ApiKey::SaslHandshake) => "SaslHandshake",
        Ok(ApiKey::SaslAuthenticate) => "SaslAuthenticate",
        _ => "request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(min: i16, max: i16) -> VersionRange {
        VersionRange { min, max }
    }

    #[test]
    fn the_highest_common_version_is_chosen() {
        let cases = [
            // (ours, theirs, expected)
            (range(4, 17), Some((0, 18)), Some(17)),
            (range(4, 17), Some((4, 12)), Some(12)),
            (range(4, 17), Some((0, 3)), None),
            (range(4, 17), Some((18, 20)), None),
            (range(4, 17), None, None),
            (range(0, 0), Some((0, 9)), Some(0)),
        ];
        for (ours, theirs, want) in cases {
            assert_eq!(choose_version(ours, theirs), want, "{ours:?} vs {theirs:?}");
        }
    }

    #[test]
    fn a_limited_session_is_renewed_before_it_ends() {
        let cases = [
            // (session_lifetime_ms, renew after)
            (0, None),
            (-1, None),
            (2_000, Some(Duration::from_millis(1_700))),
            (1_000, Some(Duration::from_secs(1))),
            (300, Some(Duration::from_secs(1))),
            (3_600_000, Some(Duration::from_secs(3_060))),
            (i64::MAX, Some(Duration::from_millis(u64::MAX / 100))),
        ];
        for (lifetime, want) in cases {
            assert_eq!(renewal_after(lifetime), want, "{lifetime} ms");
        }
    }

    #[test]
    fn an_unreachable_broker_fails_fast_with_its_address() {
        // Port 1 on loopback refuses at once.
        let config = ConnectionConfig {
            client_id: "t".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            max_response_bytes: 1 << 20,
            security: Security::default(),
        };
        let started = Instant::now();
        let err = Connection::open("127.0.0.1:1", &config, &Cancel::default())
            .err()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        assert!(err.is_retriable());
    }
}
