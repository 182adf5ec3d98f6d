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
use std::time::{Duration, Instant};

use kafka_protocol::protocol::{Request, VersionRange};
use uuid::Uuid;

use crate::cancel::Cancel;
use crate::kafka::connection::{Connection, ConnectionConfig};
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
}

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
        }
    }

    /// Runs `op` until it succeeds, fails for good, or `retry_timeout` passes;
    /// refreshes metadata between attempts when the error calls for it.
    pub(crate) fn retrying<T>(
        &mut self,
        mut op: impl FnMut(&mut Self) -> Result<T, KafkaError>,
    ) -> Result<T, KafkaError> {
        let deadline = Instant::now() + self.config.retry_timeout;
        let mut backoff = self.config.retry_backoff;
        loop {
            match op(self) {
                Ok(v) => return Ok(v),
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
        if !self.conns.contains_key(addr) {
            let conn = Connection::open(addr, &self.config.connection, &self.cancel)?;
            self.conns.insert(addr.to_string(), conn);
        }
        let conn = self.conns.get_mut(addr).expect("inserted above");
        let result = f(conn);
        if let Err(
            KafkaError::Io { .. }
            | KafkaError::Timeout { .. }
            | KafkaError::Protocol { .. }
            | KafkaError::Interrupted
            | KafkaError::ResponseTooLarge { .. }
            | KafkaError::Connect { .. },
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
    ) -> Result<R::Response, KafkaError> {
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
