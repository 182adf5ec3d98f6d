//! The `Client` itself and what every request shares: its options
//! (`ClientConfig`), its state (brokers, the metadata cache's entries, one
//! connection per broker, coordinators), the retry loop of one-shot
//! requests, and sending on a broker's connection or on whichever answers.
//!
//! The bottom of `client/`: it imports none of its siblings and knows no
//! request but the one it is handed; it never reads metadata, routes to a
//! leader or decides what a response means beyond dropping a broken
//! connection and marking the cache stale.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::protocol::{Request, VersionRange};
use uuid::Uuid;

use crate::cancel::Cancel;
use crate::format::names::TopicPartition;
use crate::kafka::connection::{Connection, ConnectionConfig, ThrottleTime};
use crate::kafka::error::{Action, KafkaError};

/// Everything the client needs to know; built from the `[kafka]` config.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub connection: ConnectionConfig,
    /// How long one operation retries retriable failures before giving up.
    pub retry_timeout: Duration,
    /// First back-off between retries; doubles up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// How long a broker may hold a fetch when it has no new data.
    pub fetch_max_wait: Duration,
    /// Upper bound of one fetch response (all partitions).
    pub fetch_max_bytes: i32,
    /// Upper bound of one partition's data in a fetch response.
    pub partition_fetch_bytes: i32,
    /// Where the brokers' quota waits are summed (clones share the sum).
    pub throttling: Arc<Throttling>,
}

/// How long brokers held this process back by a client quota: the
/// `throttle_time_ms` of their responses (KIP-219), summed.
#[derive(Debug, Default)]
pub struct Throttling {
    millis: AtomicU64,
}

impl Throttling {
    fn add(&self, wait: Duration) {
        self.millis
            .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
    }

    /// The waits so far.
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }
}

/// How often a throttled client says so at info level.
const THROTTLE_LOG_EVERY: Duration = Duration::from_secs(60);

/// `read_committed`: only committed transactional data, up to the LSO.
pub(super) const READ_COMMITTED: i8 = 1;

#[derive(Clone, Debug)]
pub(super) struct PartitionMeta {
    pub(super) leader: i32,
    pub(super) leader_epoch: i32,
}

#[derive(Clone, Debug)]
pub(super) struct TopicMeta {
    pub(super) id: Uuid,
    pub(super) partitions: BTreeMap<i32, PartitionMeta>,
}

/// A synchronous Kafka client for one thread.
pub struct Client {
    pub(crate) config: ClientConfig,
    /// The stop flag: retry loops and reads in flight give up when it is set.
    pub(super) cancel: Cancel,
    /// Node id → `host:port`, from the last metadata response.
    pub(super) brokers: HashMap<i32, String>,
    /// Open connections by `host:port`.
    pub(super) conns: HashMap<String, Connection>,
    pub(super) topics: HashMap<Arc<str>, TopicMeta>,
    pub(super) metadata_stale: bool,
    pub(super) last_refresh: Option<Instant>,
    /// Rotates partition order between fetches so no partition starves.
    pub(super) fetch_round: usize,
    /// Group id → coordinator `host:port`.
    pub(crate) coordinators: HashMap<String, String>,
    /// `host:port` → when its quota lets this client send again.
    pub(super) throttled_until: HashMap<String, Instant>,
    /// When a quota was last logged at info level.
    pub(super) throttle_logged: Option<Instant>,
}

#[cfg(test)]
impl ClientConfig {
    /// Options for unit tests: `brokers`, every timeout `quick`, short
    /// back-offs, 1 MiB limits.
    pub(crate) fn for_tests(brokers: Vec<String>, quick: Duration) -> ClientConfig {
        ClientConfig {
            brokers,
            connection: ConnectionConfig {
                client_id: "test".into(),
                connect_timeout: quick,
                request_timeout: quick,
                max_response_bytes: 1 << 20,
                security: Default::default(),
            },
            retry_timeout: quick,
            retry_backoff: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(10),
            fetch_max_wait: Duration::from_millis(100),
            fetch_max_bytes: 1 << 20,
            partition_fetch_bytes: 1 << 20,
            throttling: Default::default(),
        }
    }
}

impl Client {
    /// A client that knows only its bootstrap brokers: no connection, no
    /// metadata yet.
    pub(super) fn unconnected(config: ClientConfig, cancel: Cancel) -> Client {
        Client {
            config,
            cancel,
            brokers: HashMap::new(),
            conns: HashMap::new(),
            topics: HashMap::new(),
            metadata_stale: true,
            last_refresh: None,
            fetch_round: 0,
            coordinators: HashMap::new(),
            throttled_until: HashMap::new(),
            throttle_logged: None,
        }
    }

    /// Runs `op` until it succeeds, fails for good, or `retry_timeout` passes;
    /// refreshes metadata between attempts when the error calls for it.
    pub(crate) fn retrying<T>(
        &mut self,
        mut op: impl FnMut(&mut Self) -> Result<T, KafkaError>,
    ) -> Result<T, KafkaError> {
        let mut deadline = Instant::now() + self.config.retry_timeout;
        let mut backoff = self.config.retry_backoff;
        loop {
            match op(self) {
                Ok(v) => return Ok(v),
                // A quota's wait is no failure: it uses none of the patience.
                Err(KafkaError::Throttled { wait, .. }) => {
                    deadline += wait;
                    if !self.cancel.sleep(wait) {
                        return Err(KafkaError::Interrupted);
                    }
                }
                Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                    log::debug!("retrying in {backoff:?}: {e}");
                    self.note_failure(&e);
                    if !self.cancel.sleep(backoff) {
                        return Err(KafkaError::Interrupted);
                    }
                    backoff = (backoff * 2).min(self.config.retry_backoff_max);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs a request of one attempt per call with an outcome per partition
    /// (`once`) until every partition of `tps` has its answer: those that
    /// failed are asked again until `retry_timeout`; a failure no retry can
    /// help (an unknown topic, an unsupported request) ends it at once.
    pub(crate) fn until_answered<T>(
        &mut self,
        tps: &[TopicPartition],
        mut once: impl FnMut(
            &mut Client,
            &[TopicPartition],
        ) -> Vec<(TopicPartition, Result<T, KafkaError>)>,
    ) -> Result<HashMap<TopicPartition, T>, KafkaError> {
        let mut done = HashMap::new();
        self.retrying(|c| {
            let todo: Vec<TopicPartition> = tps
                .iter()
                .filter(|tp| !done.contains_key(*tp))
                .cloned()
                .collect();
            let mut failure = None;
            for (tp, result) in once(c, &todo) {
                match result {
                    Ok(v) => {
                        done.insert(tp, v);
                    }
                    Err(e) if !e.is_retriable() => return Err(e),
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            failure.map_or(Ok(()), Err)
        })?;
        Ok(done)
    }

    /// Puts one request's answers on `out`, one per partition asked, in the
    /// order asked: the request's failure for each, or each one's answer. A
    /// partition the broker left out of its answer gets
    /// NOT_LEADER_OR_FOLLOWER (`what` of it), so that it is asked again
    /// after a metadata refresh; every failure marks the cache stale.
    pub(crate) fn settle<T, X>(
        &mut self,
        asked: Vec<(TopicPartition, X)>,
        answered: Result<HashMap<TopicPartition, Result<T, KafkaError>>, KafkaError>,
        what: &str,
        out: &mut Vec<(TopicPartition, Result<T, KafkaError>)>,
    ) {
        let mut answered = match answered {
            Ok(answered) => answered,
            Err(e) => {
                self.note_failure(&e);
                out.extend(asked.into_iter().map(|(tp, _)| (tp, Err(e.clone()))));
                return;
            }
        };
        for (tp, _) in asked {
            let result = answered.remove(&tp).unwrap_or_else(|| {
                Err(KafkaError::Broker {
                    what: format!("{what} of {tp}"),
                    code: ResponseError::NotLeaderOrFollower,
                })
            });
            if let Err(e) = &result {
                self.note_failure(e);
            }
            out.push((tp, result));
        }
    }

    /// `addr` answered with a quota's `throttle_time_ms`: it mutes this
    /// client's connection that long, and this client sends it nothing
    /// before then either (as Kafka's own clients do).
    pub(super) fn note_throttle(&mut self, addr: &str, throttle_time_ms: i32) {
        if throttle_time_ms <= 0 {
            return;
        }
        let wait = Duration::from_millis(throttle_time_ms as u64);
        let now = Instant::now();
        self.throttled_until.insert(addr.to_string(), now + wait);
        self.config.throttling.add(wait);
        let said = self
            .throttle_logged
            .is_some_and(|t| now.duration_since(t) < THROTTLE_LOG_EVERY);
        let line = format!(
            "kafka broker {addr} throttles client id {:?} by a quota: {} ms now, {:.1}s in all (kafka_store_kafka_throttle_seconds_total)",
            self.config.connection.client_id,
            wait.as_millis(),
            self.config.throttling.total().as_secs_f64()
        );
        if said {
            log::debug!("{line}");
        } else {
            log::info!("{line}");
            self.throttle_logged = Some(now);
        }
    }

    /// How long `addr` still throttles this client, if it does.
    pub(super) fn throttled(&self, addr: &str) -> Option<Duration> {
        let until = self.throttled_until.get(addr)?;
        Some(until.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
    }

    /// Records what a failure means for cached state.
    pub(crate) fn note_failure(&mut self, e: &KafkaError) {
        match e.action() {
            Action::RefreshMetadata => self.metadata_stale = true,
            Action::RefreshCoordinator => self.coordinators.clear(),
            Action::Retry | Action::Fatal => {}
        }
    }

    /// Runs `f` on the connection to `addr`, opening it if needed; a
    /// connection that failed is dropped so the next call reconnects.
    pub(crate) fn with_conn<T>(
        &mut self,
        addr: &str,
        f: impl FnOnce(&mut Connection) -> Result<T, KafkaError>,
    ) -> Result<T, KafkaError> {
        // A broker's quota mutes the connection for a while: no request
        // goes to it before that is over.
        if let Some(wait) = self.throttled(addr)
            && !self.cancel.sleep(wait)
        {
            return Err(KafkaError::Interrupted);
        }
        if !self.conns.contains_key(addr) {
            let conn = Connection::open(addr, &self.config.connection, &self.cancel)?;
            self.conns.insert(addr.to_string(), conn);
        }
        let conn = self.conns.get_mut(addr).expect("inserted above");
        let result = f(conn);
        let throttle_time_ms = conn.take_throttle();
        self.note_throttle(addr, throttle_time_ms);
        if let Err(
            KafkaError::Io { .. }
            | KafkaError::Timeout { .. }
            | KafkaError::Protocol { .. }
            | KafkaError::Interrupted
            | KafkaError::ResponseTooLarge { .. }
            | KafkaError::Connect { .. }
            | KafkaError::Auth { .. },
        ) = &result
        {
            self.conns.remove(addr);
        }
        result
    }

    /// Addresses to try for a request any broker can answer: open
    /// connections first, then known brokers, then the bootstrap list.
    pub(crate) fn candidate_brokers(&self) -> Vec<String> {
        let mut out: Vec<String> = self.conns.keys().cloned().collect();
        let mut known: Vec<&String> = self.brokers.values().collect();
        known.sort();
        for addr in known.into_iter().chain(self.config.brokers.iter()) {
            if !out.contains(addr) {
                out.push(addr.clone());
            }
        }
        out
    }

    /// Sends a request to whichever broker answers first.
    pub(crate) fn send_any<R: Request>(
        &mut self,
        request: &R,
        ours: VersionRange,
    ) -> Result<R::Response, KafkaError>
    where
        R::Response: ThrottleTime,
    {
        let mut last = None;
        for addr in self.candidate_brokers() {
            let result = self.with_conn(&addr, |conn| {
                let version = conn.version_for::<R>(ours)?;
                conn.send(request, version)
            });
            match result {
                Ok(r) => return Ok(r),
                Err(e) if e.is_retriable() => {
                    log::debug!("broker {addr}: {e}");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| KafkaError::Connect {
            broker: "(none)".into(),
            source: Arc::new(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no brokers configured",
            )),
        }))
    }

    /// Address of a broker by node id.
    pub(crate) fn broker_addr(&self, id: i32) -> Option<&String> {
        self.brokers.get(&id)
    }

    pub(crate) fn set_broker(&mut self, id: i32, addr: String) {
        self.brokers.insert(id, addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_asked_gets_an_answer_in_the_order_asked() {
        let tp = |p| TopicPartition::new("t", p);
        let not_leader = |p| {
            Err::<i64, _>(KafkaError::Broker {
                what: format!("list offsets of t/{p}"),
                code: ResponseError::NotLeaderOrFollower,
            })
        };
        let asked = || vec![(tp(0), ()), (tp(1), ()), (tp(2), ())];
        let config = ClientConfig::for_tests(vec!["b:9092".into()], Duration::from_secs(1));
        let mut client = Client::unconnected(config, Cancel::default());

        // Answered, failed, and left out (asked again after a refresh).
        client.metadata_stale = false;
        let answered = HashMap::from([(tp(0), Ok(7)), (tp(1), not_leader(1))]);
        let mut out = Vec::new();
        client.settle(asked(), Ok(answered), "list offsets", &mut out);
        let want = vec![
            (tp(0), Ok(7)),
            (tp(1), not_leader(1)),
            (tp(2), not_leader(2)),
        ];
        assert_eq!(format!("{out:?}"), format!("{want:?}"));
        assert!(client.metadata_stale, "a failure did not mark the cache");

        // The request failed: every partition gets its failure.
        client.metadata_stale = false;
        let failed = not_leader(9).unwrap_err();
        let mut out: Vec<(TopicPartition, Result<i64, KafkaError>)> = Vec::new();
        client.settle(asked(), Err(failed.clone()), "list offsets", &mut out);
        let want: Vec<(TopicPartition, Result<i64, _>)> =
            (0..3).map(|p| (tp(p), Err(failed.clone()))).collect();
        assert_eq!(format!("{out:?}"), format!("{want:?}"));
        assert!(client.metadata_stale);
    }

    #[test]
    fn a_quota_wait_holds_one_broker_back_and_uses_none_of_the_patience() {
        let config = ClientConfig::for_tests(vec!["a:9092".into()], Duration::from_millis(50));
        let throttling = config.throttling.clone();
        let mut client = Client::unconnected(config, Cancel::default());
        for ms in [0, -1] {
            client.note_throttle("a:9092", ms);
        }
        assert_eq!(client.throttled("a:9092"), None, "no wait asked");
        client.note_throttle("a:9092", 200);
        let wait = client.throttled("a:9092").expect("a wait");
        assert!(wait > Duration::from_millis(150) && wait <= Duration::from_millis(200));
        assert_eq!(client.throttled("b:9092"), None, "another broker");
        assert_eq!(throttling.total(), Duration::from_millis(200));

        // Three waits of 40 ms outlast a retry_timeout of 50 ms: still
        // retried, and the fourth answer is the result.
        let mut calls = 0;
        let started = Instant::now();
        let got = client.retrying(|_| {
            calls += 1;
            if calls <= 3 {
                Err(KafkaError::Throttled {
                    broker: "a:9092".into(),
                    wait: Duration::from_millis(40),
                })
            } else {
                Ok(calls)
            }
        });
        assert_eq!(got.unwrap(), 4);
        assert!(started.elapsed() >= Duration::from_millis(120));
    }
}
