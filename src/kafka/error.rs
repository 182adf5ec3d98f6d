//! Typed Kafka client errors and the one place that decides what a failure
//! means: retry as is, retry after refreshing metadata or the coordinator, or
//! give up.
//!
//! Never performs I/O and never sleeps; callers own the retry loops.

use std::io;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

/// What the caller should do about a broker error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Transient: back off and send the same request again.
    Retry,
    /// Leadership or topic layout changed: refresh metadata, then retry.
    RefreshMetadata,
    /// The group coordinator moved or is loading: look it up again, then retry.
    RefreshCoordinator,
    /// Retrying cannot help; report it.
    Fatal,
}

/// Classifies a broker error code (Kafka's `Errors.java` is the reference).
pub fn classify(code: ResponseError) -> Action {
    use ResponseError as E;
    match code {
        E::NotLeaderOrFollower
        | E::LeaderNotAvailable
        | E::FencedLeaderEpoch
        | E::UnknownLeaderEpoch
        | E::UnknownTopicOrPartition
        | E::UnknownTopicId
        | E::InconsistentTopicId
        | E::ReplicaNotAvailable
        | E::KafkaStorageError
        | E::OffsetNotAvailable => Action::RefreshMetadata,
        E::NotCoordinator | E::CoordinatorNotAvailable => Action::RefreshCoordinator,
        E::CoordinatorLoadInProgress
        | E::RequestTimedOut
        | E::NetworkException
        | E::NotEnoughReplicas
        | E::NotEnoughReplicasAfterAppend
        | E::ThrottlingQuotaExceeded
        | E::ConcurrentTransactions
        | E::UnstableOffsetCommit => Action::Retry,
        // Kafka marks these retriable too, but for a reader they mean data
        // or configuration trouble that a retry will not fix.
        E::CorruptMessage => Action::Fatal,
        other if other.is_retriable() => Action::Retry,
        _ => Action::Fatal,
    }
}

/// Kafka's own spelling of an error code, e.g. `NOT_LEADER_OR_FOLLOWER`.
pub fn code_name(code: ResponseError) -> String {
    let camel = code.to_string();
    if let ResponseError::Unknown(n) = code {
        return format!("UNKNOWN_ERROR_CODE_{n}");
    }
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Errors of the Kafka client. Messages are one lowercase line naming the
/// broker, topic, partition or offset involved.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// No TCP connection could be made (refused, unreachable, DNS).
    #[error("cannot connect to kafka broker {broker}: {source}")]
    Connect {
        broker: String,
        source: Arc<io::Error>,
    },
    /// The connection failed while a request was in flight.
    #[error("connection to kafka broker {broker} lost: {source}")]
    Io {
        broker: String,
        source: Arc<io::Error>,
    },
    /// A phase (connect, request) took longer than its configured timeout.
    #[error("kafka broker {broker} did not answer within {millis} ms ({phase})")]
    Timeout {
        broker: String,
        phase: &'static str,
        millis: u128,
    },
    /// The broker answered with an error code.
    #[error("kafka {what} failed: {}", code_name(*.code))]
    Broker { what: String, code: ResponseError },
    /// The broker refused records for good (too large, a timestamp out of
    /// range, a fenced producer); `hint` says what to change, when known.
    #[error("kafka refused {what}: {}{hint}", code_name(*.code))]
    Refused {
        what: String,
        code: ResponseError,
        hint: &'static str,
    },
    /// A fetch position outside the partition's log; never retried silently.
    #[error("offset {offset} is out of range for {topic}/{partition}")]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A configured topic does not exist.
    #[error("kafka topic {topic:?} does not exist")]
    UnknownTopic { topic: String },
    /// A record batch failed its CRC or could not be decoded.
    #[error("corrupt record batch in {topic}/{partition} at offset {offset}: {reason}")]
    CorruptBatch {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// The broker sent bytes that do not decode as the expected response.
    #[error("unexpected response from kafka broker {broker}: {what}")]
    Protocol { broker: String, what: String },
    /// A response larger than the caller accepts (a batch larger than the
    /// fetch limits: Kafka always returns a partition's first batch whole).
    #[error(
        "kafka broker {broker} sent a response of {size} bytes, more than the {limit} accepted"
    )]
    ResponseTooLarge {
        broker: String,
        size: usize,
        limit: usize,
    },
    /// The TLS handshake or session failed for good (an unknown CA, a
    /// certificate not valid for the broker's address, a refused client
    /// certificate); `why` ends with what to fix.
    #[error("tls with kafka broker {broker} failed: {why}")]
    Tls { broker: String, why: String },
    /// The broker refused the SASL authentication (wrong credentials, a
    /// mechanism it does not enable). Never holds the password.
    #[error(
        "kafka broker {broker} refused SASL {mechanism} authentication for user {user:?}: {why}"
    )]
    Auth {
        broker: String,
        mechanism: &'static str,
        user: String,
        why: String,
    },
    /// The broker holds this client back for `wait` (a client quota): not
    /// a failure, the request is sent again once the wait is over.
    #[error("kafka broker {broker} throttles this client for {} ms (a client quota)", .wait.as_millis())]
    Throttled {
        broker: String,
        wait: std::time::Duration,
    },
    /// A retry loop stopped because shutdown was requested.
    #[error("interrupted by a stop request")]
    Interrupted,
    /// No protocol version both sides speak for an API we need.
    #[error(
        "kafka broker {broker} does not support {api} in a version this client speaks (ours {ours}, broker's {theirs})"
    )]
    Unsupported {
        broker: String,
        api: &'static str,
        ours: String,
        theirs: String,
    },
}

impl KafkaError {
    /// What to do about this error (see [`classify`] for broker codes).
    pub fn action(&self) -> Action {
        match self {
            KafkaError::Connect { .. } | KafkaError::Io { .. } | KafkaError::Timeout { .. } => {
                Action::RefreshMetadata
            }
            KafkaError::ResponseTooLarge { .. } | KafkaError::Throttled { .. } => Action::Retry,
            KafkaError::Broker { code, .. } => classify(*code),
            KafkaError::OffsetOutOfRange { .. }
            | KafkaError::Refused { .. }
            | KafkaError::UnknownTopic { .. }
            | KafkaError::CorruptBatch { .. }
            | KafkaError::Protocol { .. }
            | KafkaError::Interrupted
            | KafkaError::Tls { .. }
            | KafkaError::Auth { .. }
            | KafkaError::Unsupported { .. } => Action::Fatal,
        }
    }

    /// A response's error code for `what`: nothing wrong (0), or the
    /// broker error it names.
    pub fn check(code: i16, what: impl FnOnce() -> String) -> Result<(), KafkaError> {
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(code) => Err(KafkaError::Broker { what: what(), code }),
        }
    }

    /// True when waiting and trying again may succeed.
    pub fn is_retriable(&self) -> bool {
        self.action() != Action::Fatal
    }

    /// `UNKNOWN_SERVER_ERROR`: an exception in the broker (for a fetch, a
    /// tiered-storage read that failed or a full remote-read queue). Not
    /// retriable in general, but a reader fetches again, as Kafka's own
    /// consumer does.
    pub fn is_broker_exception(&self) -> bool {
        matches!(
            self,
            KafkaError::Broker {
                code: ResponseError::UnknownServerError,
                ..
            }
        )
    }

    /// Maps an I/O error on an established connection: timeouts are their own kind.
    pub(crate) fn from_io(broker: &str, phase: &'static str, millis: u128, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => KafkaError::Timeout {
                broker: broker.to_string(),
                phase,
                millis,
            },
            _ => KafkaError::Io {
                broker: broker.to_string(),
                source: Arc::new(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_code_is_nothing_or_the_broker_error_it_names() {
        assert!(KafkaError::check(0, || unreachable!("not asked for")).is_ok());
        let e = KafkaError::check(6, || "fetch of t/0".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "kafka fetch of t/0 failed: NOT_LEADER_OR_FOLLOWER"
        );
    }

    #[test]
    fn broker_codes_are_classified_like_the_java_client() {
        use ResponseError as E;
        let table = [
            (E::NotLeaderOrFollower, Action::RefreshMetadata),
            (E::LeaderNotAvailable, Action::RefreshMetadata),
            (E::FencedLeaderEpoch, Action::RefreshMetadata),
            (E::UnknownTopicOrPartition, Action::RefreshMetadata),
            (E::NotCoordinator, Action::RefreshCoordinator),
            (E::CoordinatorNotAvailable, Action::RefreshCoordinator),
            (E::CoordinatorLoadInProgress, Action::Retry),
            (E::RequestTimedOut, Action::Retry),
            (E::OffsetOutOfRange, Action::Fatal),
            (E::CorruptMessage, Action::Fatal),
            (E::TopicAuthorizationFailed, Action::Fatal),
            (E::GroupAuthorizationFailed, Action::Fatal),
            (E::SaslAuthenticationFailed, Action::Fatal),
            (E::UnsupportedVersion, Action::Fatal),
            (E::Unknown(12345), Action::Fatal),
        ];
        for (code, want) in table {
            assert_eq!(classify(code), want, "{code:?}");
        }
    }

    #[test]
    fn connection_failures_are_retriable_and_data_errors_are_not() {
        let io = || Arc::new(io::Error::from(io::ErrorKind::ConnectionReset));
        let retriable = [
            KafkaError::Connect {
                broker: "b".into(),
                source: io(),
            },
            KafkaError::Io {
                broker: "b".into(),
                source: io(),
            },
            KafkaError::from_io(
                "b",
                "request",
                5,
                io::Error::from(io::ErrorKind::WouldBlock),
            ),
        ];
        for e in retriable {
            assert!(e.is_retriable(), "{e}");
        }
        let fatal = [
            KafkaError::OffsetOutOfRange {
                topic: "t".into(),
                partition: 0,
                offset: 5,
            },
            KafkaError::CorruptBatch {
                topic: "t".into(),
                partition: 0,
                offset: 5,
                reason: "crc".into(),
            },
            KafkaError::Tls {
                broker: "b".into(),
                why: "invalid peer certificate: UnknownIssuer".into(),
            },
            KafkaError::Auth {
                broker: "b".into(),
                mechanism: "SCRAM-SHA-512",
                user: "archiver".into(),
                why: "invalid credentials".into(),
            },
        ];
        for e in fatal {
            assert!(!e.is_retriable(), "{e}");
        }
    }

    #[test]
    fn only_unknown_server_error_is_a_broker_exception() {
        let broker = |code| KafkaError::Broker {
            what: "fetch".into(),
            code,
        };
        let table = [
            (broker(ResponseError::UnknownServerError), true),
            (broker(ResponseError::CorruptMessage), false),
            (broker(ResponseError::TopicAuthorizationFailed), false),
            (broker(ResponseError::NotLeaderOrFollower), false),
        ];
        for (e, want) in table {
            assert_eq!(e.is_broker_exception(), want, "{e}");
        }
        assert!(!broker(ResponseError::UnknownServerError).is_retriable());
    }

    #[test]
    fn error_names_use_kafka_spelling() {
        assert_eq!(
            code_name(ResponseError::NotLeaderOrFollower),
            "NOT_LEADER_OR_FOLLOWER"
        );
        assert_eq!(
            code_name(ResponseError::OffsetOutOfRange),
            "OFFSET_OUT_OF_RANGE"
        );
        assert_eq!(
            code_name(ResponseError::Unknown(999)),
            "UNKNOWN_ERROR_CODE_999"
        );
        let e = KafkaError::Broker {
            what: "fetch of events/3".into(),
            code: ResponseError::NotLeaderOrFollower,
        };
        assert_eq!(
            e.to_string(),
            "kafka fetch of events/3 failed: NOT_LEADER_OR_FOLLOWER"
        );
    }
}
