//! The one helper module of the integration tests: starts the real services
//! (through `vendor-config/test-services.sh`), creates topics and produces
//! records with an independent client (confluent-kafka, via
//! `tests/support/kafka_tool.py`), runs the `kafka-store` binary, and reads
//! archives back with an independent Avro reader (`apache-avro`).

#![allow(dead_code)]

pub mod fault_proxy;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub const BOOTSTRAP: &str = "127.0.0.1:9092";

/// A Kafka client configuration for tests: short timeouts, small fetches.
pub fn client_config(brokers: &[&str]) -> kafka_store::kafka::ClientConfig {
    kafka_store::kafka::ClientConfig {
        brokers: brokers.iter().map(|b| b.to_string()).collect(),
        connection: kafka_store::kafka::ConnectionConfig {
            client_id: "kafka-store-test".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_response_bytes: 64 << 20,
            security: Default::default(),
        },
        retry_timeout: Duration::from_secs(20),
        retry_backoff: Duration::from_millis(50),
        retry_backoff_max: Duration::from_secs(1),
        fetch_max_wait: Duration::from_millis(200),
        fetch_max_bytes: 4 << 20,
        partition_fetch_bytes: 256 << 10,
        throttling: Default::default(),
    }
}

/// The group's committed offsets of a topic's partitions, by partition.
pub fn committed(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let tps: Vec<_> = (0..partitions)
        .map(|p| kafka_store::format::names::TopicPartition::new(topic, p))
        .collect();
    kafka_store::kafka::Client::connect(client_config(&[BOOTSTRAP]), Default::default())
        .unwrap()
        .committed_offsets(group, &tps)
        .unwrap()
        .into_iter()
        .map(|(tp, c)| (tp.partition, c.offset))
        .collect()
}

/// The topic's id as the single-node broker's metadata says.
pub fn topic_id(topic: &str) -> String {
    let mut client =
        kafka_store::kafka::Client::connect(client_config(&[BOOTSTRAP]), Default::default())
            .unwrap();
    client.partitions(topic).unwrap();
    client
        .topic_id(topic)
        .expect("the broker has topic ids")
        .to_string()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn state_dir() -> PathBuf {
    std::env::var_os("KAFKA_STORE_SERVICES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".services"))
}

/// Brings the services up once per test binary (idempotent and quick when
/// they already run).
pub fn services() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("vendor-config/test-services.sh"))
            .arg("up")
            .output()
            .expect("run test-services.sh");
        assert!(
            out.status.success(),
            "test-services.sh up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The two-broker cluster (nodes 11 and 12) of `test-services.sh`.
pub const PAIR: &str = "127.0.0.1:9292,127.0.0.1:9392";

/// Creates `topic` on the pair, replicas as `assignment` says (partitions
/// split by `;`, replicas by `,`, the first the leader: "11,12").
pub fn pair_topic(topic: &str, partitions: i32, assignment: &str, configs: &[&str]) {
    let p = partitions.to_string();
    let mut args = vec![
        "create-topic",
        "--topic",
        topic,
        "--partitions",
        &p,
        "--assignment",
        assignment,
    ];
    for c in configs {
        args.extend(["--config", c]);
    }
    kafka_tool_at(PAIR, &args, None);
}

/// Starts a broker of the pair again however the test ends
/// (`Restart("start-pair-12")`).
pub struct Restart(pub &'static str);

impl Drop for Restart {
    fn drop(&mut self) {
        test_services(self.0);
    }
}

/// A broker of the pair stopped by SIGSTOP: alive but silent (it neither
/// copies its leaders' logs nor heartbeats the controller) until dropped,
/// which waits until it is registered and unfenced again.
pub struct Frozen(String, u32);

impl Frozen {
    pub fn new(node: u32) -> Frozen {
        let pid = std::fs::read_to_string(state_dir().join(format!("run/kafka-pair-{node}.pid")))
            .expect("the pair broker's pid file");
        let pid = pid.trim().to_string();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let conf = format!("kafka-pair/{node}.properties");
        assert!(
            String::from_utf8_lossy(&cmdline).contains(&conf),
            "pid {pid} is not pair broker {node}"
        );
        // Thawed in a minute even if this test binary dies without
        // unwinding (a harness timeout, SIGINT).
        let watchdog = format!("(sleep 60; kill -CONT {pid}) </dev/null >/dev/null 2>&1 &");
        let started = Command::new("bash").args(["-c", &watchdog]).status();
        assert!(started.is_ok_and(|s| s.success()), "the thaw watchdog");
        let status = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
        assert!(status.success(), "kill -STOP {pid}");
        Frozen(pid, node)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
        if !std::thread::panicking() {
            test_services(&format!("start-pair-{}", self.1));
        }
    }
}

/// Bytes in the log segments of `topic`/`partition` on pair broker `node`:
/// what its log holds, committed or not.
pub fn pair_log_bytes(node: u32, topic: &str, partition: i32) -> u64 {
    let dir = state_dir().join(format!("kafka-pair/data/{node}/{topic}-{partition}"));
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    })
}

/// Tests share the broker; a test that restarts it takes it alone.
static BROKER: RwLock<()> = RwLock::new(());
/// The same for the pair.
static PAIR_LOCK: RwLock<()> = RwLock::new(());

/// The pair, for a test that stops and starts its brokers.
pub fn exclusive_pair() -> RwLockWriteGuard<'static, ()> {
    services();
    PAIR_LOCK.write().unwrap_or_else(|e| e.into_inner())
}

pub fn shared_broker() -> RwLockReadGuard<'static, ()> {
    services();
    BROKER.read().unwrap_or_else(|e| e.into_inner())
}

pub fn exclusive_broker() -> RwLockWriteGuard<'static, ()> {
    services();
    BROKER.write().unwrap_or_else(|e| e.into_inner())
}

pub fn test_services(cmd: &str) {
    let out = Command::new("bash")
        .arg(repo().join("vendor-config/test-services.sh"))
        .arg(cmd)
        .output()
        .expect("run test-services.sh");
    assert!(
        out.status.success(),
        "test-services.sh {cmd} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000;
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn kafka_tool(args: &[&str], stdin: Option<&[u8]>) -> String {
    kafka_tool_at(BOOTSTRAP, args, stdin)
}

/// The helper tool against the cluster at `bootstrap`.
pub fn kafka_tool_at(bootstrap: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut cmd = Command::new(state_dir().join("venv/bin/python"));
    cmd.arg(repo().join("tests/support/kafka_tool.py"))
        .args(["--bootstrap", bootstrap, "--timeout", "60"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("run kafka_tool.py");
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kafka_tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Sets a client quota on the test broker for `client_id` (e.g.
/// `consumer_byte_rate=524288`), with Kafka's own ConfigCommand.
pub fn client_quota(client_id: &str, quota: &str) {
    let out = Command::new("java")
        .arg("-cp")
        .arg(state_dir().join("kafka/libs/*"))
        .arg("kafka.admin.ConfigCommand")
        .args(["--bootstrap-server", BOOTSTRAP, "--alter", "--add-config"])
        .args([
            quota,
            "--entity-type",
            "clients",
            "--entity-name",
            client_id,
        ])
        .output()
        .expect("run java kafka.admin.ConfigCommand");
    assert!(
        out.status.success(),
        "setting the quota {quota} for {client_id} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn create_topic(topic: &str, partitions: i32, configs: &[&str]) {
    let p = partitions.to_string();
    let mut args = vec!["create-topic", "--topic", topic, "--partitions", &p];
    for c in configs {
        args.extend(["--config", c]);
    }
    kafka_tool(&args, None);
}

/// (partition, low, last stable offset) per partition.
pub fn watermarks(topic: &str) -> Vec<(i32, i64, i64)> {
    parse_watermarks(&kafka_tool(&["high-watermarks", "--topic", topic], None))
}

/// (partition, low, high watermark) per partition, open transactions included.
pub fn high_watermarks(topic: &str) -> Vec<(i32, i64, i64)> {
    parse_watermarks(&kafka_tool(
        &["high-watermarks", "--topic", topic, "--uncommitted"],
        None,
    ))
}

fn parse_watermarks(out: &str) -> Vec<(i32, i64, i64)> {
    out.lines()
        .map(|l| {
            let v: Vec<i64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (v[0] as i32, v[1], v[2])
        })
        .collect()
}

/// A record as produced (and as it must come back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub partition: i32,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Header keys as bytes: Kafka accepts keys that are not UTF-8.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

pub enum Frame {
    Rec(Rec),
    Begin,
    Commit,
    Abort,
    /// Wait until every record so far is acknowledged.
    Flush,
}

/// The producer tool's binary frames.
fn encode_frames(frames: &[Frame]) -> Vec<u8> {
    let mut buf = Vec::new();
    let nullable = |buf: &mut Vec<u8>, v: &Option<Vec<u8>>| match v {
        None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(b) => {
            buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
            buf.extend_from_slice(b);
        }
    };
    for f in frames {
        match f {
            Frame::Begin => buf.push(b'B'),
            Frame::Commit => buf.push(b'C'),
            Frame::Abort => buf.push(b'A'),
            Frame::Flush => buf.push(b'F'),
            Frame::Rec(r) => {
                buf.push(b'R');
                buf.extend_from_slice(&r.partition.to_be_bytes());
                buf.extend_from_slice(&r.timestamp.to_be_bytes());
                nullable(&mut buf, &r.key);
                nullable(&mut buf, &r.value);
                buf.extend_from_slice(&(r.headers.len() as i32).to_be_bytes());
                for (k, v) in &r.headers {
                    nullable(&mut buf, &Some(k.clone()));
                    nullable(&mut buf, v);
                }
            }
        }
    }
    buf
}

fn parse_offsets(out: &str) -> Vec<(i32, i64)> {
    out.lines()
        .map(|l| {
            let (p, o) = l.split_once(' ').unwrap();
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect()
}

fn produce_args<'a>(
    topic: &'a str,
    compression: &'a str,
    transactional_id: Option<&'a str>,
) -> Vec<&'a str> {
    let mut args = vec!["produce", "--topic", topic, "--compression", compression];
    if let Some(id) = transactional_id {
        args.extend(["--transactional-id", id]);
    }
    args
}

/// Produces frames with the given codec; returns (partition, offset) per record.
pub fn produce_frames(
    topic: &str,
    frames: &[Frame],
    compression: &str,
    transactional_id: Option<&str>,
) -> Vec<(i32, i64)> {
    let args = produce_args(topic, compression, transactional_id);
    parse_offsets(&kafka_tool(&args, Some(&encode_frames(frames))))
}

/// A producer fed frame by frame, for tests that act between frames (e.g.
/// while a transaction is open).
pub struct StreamingProducer {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
}

impl StreamingProducer {
    pub fn start(topic: &str, compression: &str, transactional_id: Option<&str>) -> Self {
        let mut child = Command::new(state_dir().join("venv/bin/python"))
            .arg(repo().join("tests/support/kafka_tool.py"))
            .args(["--bootstrap", BOOTSTRAP, "--timeout", "60"])
            .args(produce_args(topic, compression, transactional_id))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kafka_tool.py");
        let stdin = child.stdin.take();
        StreamingProducer { child, stdin }
    }

    pub fn send(&mut self, frames: &[Frame]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(&encode_frames(frames)).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes the input and returns (partition, offset) per record sent.
    pub fn finish(mut self) -> Vec<(i32, i64)> {
        drop(self.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "producer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_offsets(&String::from_utf8(out.stdout).unwrap())
    }
}

/// Grows a topic to `total` partitions.
pub fn add_partitions(topic: &str, total: i32) {
    kafka_tool(
        &[
            "add-partitions",
            "--topic",
            topic,
            "--total",
            &total.to_string(),
        ],
        None,
    );
}

/// Waits until the metadata lists `partitions` partitions of `topic` (after
/// `add_partitions`, before producing to them).
pub fn wait_for_partitions(topic: &str, partitions: usize) {
    let mut client =
        kafka_store::kafka::Client::connect(client_config(&[BOOTSTRAP]), Default::default())
            .unwrap();
    wait_until("every partition known", Duration::from_secs(120), || {
        client
            .partitions(topic)
            .is_ok_and(|p| p.len() == partitions)
    });
}

/// Deletes a topic (tests with thousands of partitions clean up after
/// themselves: the broker's heap holds every partition).
pub fn delete_topic(topic: &str) {
    kafka_tool(&["delete-topic", "--topic", topic], None);
}

/// Deletes the records before `offset`, as retention would.
pub fn delete_records(topic: &str, partition: i32, offset: i64) {
    let (p, o) = (partition.to_string(), offset.to_string());
    kafka_tool(
        &[
            "delete-records",
            "--topic",
            topic,
            "--partition",
            &p,
            "--offset",
            &o,
        ],
        None,
    );
}

/// Produces records; returns the map (partition, offset) → record.
pub fn produce(topic: &str, records: &[Rec], compression: &str) -> BTreeMap<(i32, i64), Rec> {
    produce_at(BOOTSTRAP, topic, records, compression, &[])
}

/// [`produce`] to the cluster at `bootstrap`, with extra producer settings
/// (`KEY=VALUE`, librdkafka's names).
pub fn produce_at(
    bootstrap: &str,
    topic: &str,
    records: &[Rec],
    compression: &str,
    settings: &[&str],
) -> BTreeMap<(i32, i64), Rec> {
    let frames: Vec<Frame> = records.iter().cloned().map(Frame::Rec).collect();
    let mut args = produce_args(topic, compression, None);
    for s in settings {
        args.extend(["--producer-config", s]);
    }
    let offsets = parse_offsets(&kafka_tool_at(
        bootstrap,
        &args,
        Some(&encode_frames(&frames)),
    ));
    assert_eq!(offsets.len(), records.len());
    offsets.into_iter().zip(records.iter().cloned()).collect()
}

/// A record as an independent consumer (confluent-kafka) reads it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub offset: i64,
    pub timestamp: i64,
    pub log_append: bool,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Every committed record of `topic`, per partition in offset order, read
/// with the Python client (not ours).
pub fn consume(topic: &str) -> BTreeMap<i32, Vec<Consumed>> {
    consume_at(BOOTSTRAP, topic)
}

/// [`consume`] from the cluster at `bootstrap`.
pub fn consume_at(bootstrap: &str, topic: &str) -> BTreeMap<i32, Vec<Consumed>> {
    use base64::Engine as _;
    let b64 = |v: &serde_json::Value| {
        v.as_str()
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s).unwrap())
    };
    let mut out: BTreeMap<i32, Vec<Consumed>> = BTreeMap::new();
    for line in kafka_tool_at(bootstrap, &["consume", "--topic", topic], None).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let headers = v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h[0].as_str().unwrap().as_bytes().to_vec(), b64(&h[1])))
            .collect();
        out.entry(v["partition"].as_i64().unwrap() as i32)
            .or_default()
            .push(Consumed {
                offset: v["offset"].as_i64().unwrap(),
                timestamp: v["timestamp"].as_i64().unwrap(),
                log_append: v["timestamp_type"] == "log_append",
                key: b64(&v["key"]),
                value: b64(&v["value"]),
                headers,
            });
    }
    for records in out.values_mut() {
        records.sort_by_key(|r| r.offset);
    }
    out
}

/// A small deterministic PRNG (xorshift64*), so runs are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// `n` varied records spread over `partitions`: null and empty keys and
/// values, binary and UTF-8 payloads, headers with null values and
/// repeated keys, CreateTime timestamps that mostly rise.
pub fn gen_records(seed: u64, n: usize, partitions: i32, ts_start: i64) -> Vec<Rec> {
    let mut rng = Rng::new(seed);
    let mut ts = ts_start;
    (0..n)
        .map(|i| {
            ts += rng.below(20) as i64 - 2;
            let key = match rng.below(10) {
                0 => None,
                1 => Some(Vec::new()),
                2 => Some(rng.bytes(8)),
                _ => Some(format!("key-{}", rng.below(1000)).into_bytes()),
            };
            let value = match rng.below(20) {
                0 => None,
                1 => Some(Vec::new()),
                2..=4 => {
                    let len = rng.below(300) as usize;
                    Some(rng.bytes(len))
                }
                _ => Some(
                    format!(
                        r#"{{"seq":{i},"user":"user-{}","text":"héllo wörld {}","pad":"{}"}}"#,
                        rng.below(5000),
                        rng.below(100),
                        "x".repeat(rng.below(200) as usize)
                    )
                    .into_bytes(),
                ),
            };
            let headers = (0..rng.below(4))
                .map(|h| {
                    let k = if h == 2 {
                        "trace".to_string()
                    } else {
                        ["trace", "src", "ünï"][rng.below(3) as usize].to_string()
                    };
                    let v = if rng.below(4) == 0 {
                        None
                    } else {
                        let len = rng.below(12) as usize;
                        Some(rng.bytes(len))
                    };
                    (k.into_bytes(), v)
                })
                .collect();
            Rec {
                partition: (i as i32) % partitions,
                timestamp: ts,
                key,
                value,
                headers,
            }
        })
        .collect()
}

/// A new topic holding `per_codec` varied records produced with each codec;
/// returns its name and what was produced, by (partition, offset).
pub fn topic_with_records(
    prefix: &str,
    partitions: i32,
    per_codec: usize,
    codecs: &[&str],
) -> (String, BTreeMap<(i32, i64), Rec>) {
    let topic = unique(prefix);
    create_topic(&topic, partitions, &[]);
    let mut produced = BTreeMap::new();
    for (i, codec) in codecs.iter().enumerate() {
        let recs = gen_records(
            100 + i as u64,
            per_codec,
            partitions,
            1_700_000_000_000 + i as i64 * 1_000_000,
        );
        produced.extend(produce(&topic, &recs, codec));
    }
    (topic, produced)
}

// ---- running kafka-store -------------------------------------------------

/// The binary under test: `KAFKA_STORE_BIN` (e.g. the static musl build) or
/// the one cargo built for these tests.
pub fn binary() -> PathBuf {
    std::env::var_os("KAFKA_STORE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kafka-store")))
}

/// A scratch directory with a config file, an archive and a spool.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub archive: PathBuf,
}

impl Setup {
    /// Writes a config for `topics` with extra TOML appended to the
    /// `[kafka]`, `[files]` sections.
    pub fn new(topics: &[&str], group: &str, kafka_extra: &str, files_extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let spool = dir.path().join("spool");
        let config = dir.path().join("kafka-store.toml");
        Setup::write(
            &config,
            topics,
            group,
            &archive,
            &spool,
            kafka_extra,
            files_extra,
        );
        Setup {
            dir,
            config,
            archive,
        }
    }

    pub fn write(
        config: &Path,
        topics: &[&str],
        group: &str,
        archive: &Path,
        spool: &Path,
        kafka_extra: &str,
        files_extra: &str,
    ) {
        let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
        std::fs::write(
            config,
            format!(
                "[kafka]\nbrokers = [\"{BOOTSTRAP}\"]\ngroup_id = \"{group}\"\ntopics = [{}]\nretry_timeout = \"20s\"\ncommit_interval = \"200ms\"\n{kafka_extra}\n\n[store]\nurl = \"file://{}\"\nspool_dir = \"{}\"\n\n[files]\n{files_extra}\n",
                topics.join(", "),
                archive.display(),
                spool.display()
            ),
        )
        .unwrap();
    }

    /// A config archiving into `gs://{bucket}/archive` through `endpoint`.
    pub fn gcs(
        topics: &[&str],
        group: &str,
        bucket: &str,
        endpoint: &str,
        files_extra: &str,
        gcs_extra: &str,
    ) -> Setup {
        let s = Setup::new(topics, group, "", files_extra);
        let text = std::fs::read_to_string(&s.config).unwrap().replace(
            &format!("url = \"file://{}\"", s.archive.display()),
            &format!("url = \"gs://{bucket}/archive\""),
        );
        std::fs::write(
            &s.config,
            format!(
                "{text}\n[gcs]\nendpoint = \"{endpoint}\"\ncredentials = \"none\"\n{gcs_extra}\n"
            ),
        )
        .unwrap();
        s
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(args).env("KAFKA_STORE_LOG", "info");
        cmd
    }

    /// `kafka-store COMMAND --config CONFIG ARGS…`, which must succeed
    /// within a minute; its stdout.
    pub fn succeed(&self, command: &str, args: &[&str]) -> String {
        let mut all = vec![command, "--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = run_with_timeout(self.command(&all), Duration::from_secs(60));
        assert!(
            out.status.success(),
            "kafka-store {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kafka-store run --until-caught-up`, which must succeed.
    pub fn run_to_end(&self) -> Output {
        let out = run_with_timeout(
            self.command(&[
                "run",
                "--config",
                self.config.to_str().unwrap(),
                "--until-caught-up",
            ]),
            Duration::from_secs(300),
        );
        assert!(
            out.status.success(),
            "kafka-store run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `kafka-store run` in the background.
    pub fn spawn(&self, extra: &[&str]) -> Child {
        let mut args = vec!["run", "--config", self.config.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Runs a command, killing it after `limit`.
pub fn run_with_timeout(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_timeout(child, limit)
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for a child, killing it after `limit`.
/// Reads a child's pipe to the end in a thread: a child blocked on a full
/// pipe never exits.
pub fn drain(
    pipe: Option<impl std::io::Read + Send + 'static>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap();
            panic!(
                "process did not exit within {limit:?}: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

// ---- reading archives back -----------------------------------------------

/// A record as read back by apache-avro.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRec {
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Keys as Kafka carried them: `raw_key` when the file has one.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// One archive file as read back.
#[derive(Clone, Debug)]
pub struct ArchFile {
    pub path: PathBuf,
    pub first: i64,
    pub next: i64,
    /// `kafka.skipped`: why the file covers offsets without records.
    pub skipped: Option<String>,
    pub records: Vec<ReadRec>,
}

/// topic → partition → files in offset order.
pub type Archive = BTreeMap<String, BTreeMap<i32, Vec<ArchFile>>>;

fn bytes_of(v: &apache_avro::types::Value) -> Option<Vec<u8>> {
    use apache_avro::types::Value;
    match v {
        Value::Union(_, inner) => bytes_of(inner),
        Value::Null => None,
        Value::Bytes(b) => Some(b.clone()),
        other => panic!("unexpected avro value {other:?}"),
    }
}

/// Reads one file with apache-avro, checking its metadata against its name.
pub fn read_file(path: &Path, topic: &str, partition: i32, first: i64) -> ArchFile {
    use apache_avro::types::Value;
    let reader = apache_avro::Reader::new(std::fs::File::open(path).unwrap()).unwrap();
    let meta = reader.user_metadata().clone();
    let text = |k: &str| {
        String::from_utf8(
            meta.get(k)
                .unwrap_or_else(|| panic!("{path:?} lacks {k}"))
                .clone(),
        )
        .unwrap()
    };
    assert_eq!(text("kafka.topic"), topic, "{path:?}");
    assert_eq!(text("kafka.partition"), partition.to_string(), "{path:?}");
    assert_eq!(text("kafka.first_offset"), first.to_string(), "{path:?}");
    let next: i64 = text("kafka.next_offset").parse().unwrap();
    let skipped = meta
        .get("kafka.skipped")
        .map(|v| String::from_utf8(v.clone()).unwrap());
    let count: u64 = text("kafka.record_count").parse().unwrap();
    let mut records = Vec::new();
    for value in reader {
        let Value::Record(fields) = value.unwrap() else {
            panic!("not a record")
        };
        let f: BTreeMap<String, Value> = fields.into_iter().collect();
        let long = |k: &str| match &f[k] {
            Value::Long(n) => *n,
            other => panic!("{k}: {other:?}"),
        };
        let Value::Enum(_, timestamp_type) = &f["timestamp_type"] else {
            panic!("timestamp_type")
        };
        let Value::Array(headers) = &f["headers"] else {
            panic!("headers")
        };
        let headers = headers
            .iter()
            .map(|h| {
                let Value::Record(hf) = h else {
                    panic!("header")
                };
                let Value::String(k) = &hf[0].1 else {
                    panic!("header key")
                };
                let raw = hf
                    .iter()
                    .find(|(n, _)| n == "raw_key")
                    .and_then(|(_, v)| bytes_of(v));
                if let Some(raw) = &raw {
                    assert_eq!(
                        k,
                        &kafka_store::format::avro::escape_key(raw),
                        "{path:?}: the key of a raw key is the raw key escaped"
                    );
                }
                (
                    raw.unwrap_or_else(|| k.as_bytes().to_vec()),
                    bytes_of(&hf[1].1),
                )
            })
            .collect();
        records.push(ReadRec {
            offset: long("offset"),
            timestamp: long("timestamp"),
            timestamp_type: timestamp_type.clone(),
            key: bytes_of(&f["key"]),
            value: bytes_of(&f["value"]),
            headers,
        });
    }
    assert_eq!(
        records.len() as u64,
        count,
        "{path:?}: record count in metadata"
    );
    for r in &records {
        assert!(
            r.offset >= first && r.offset < next,
            "{path:?}: offset {} outside [{first}, {next})",
            r.offset
        );
    }
    if skipped.is_some() {
        assert!(
            records.is_empty(),
            "{path:?}: a skipped range holds records"
        );
    }
    ArchFile {
        path: path.to_path_buf(),
        first,
        next,
        skipped,
        records,
    }
}

/// Reads every file of a `file://` archive.
pub fn read_archive(root: &Path) -> Archive {
    read_archive_except(root, &[])
}

/// [`read_archive`] leaving out the partitions listed (whose folders hold
/// objects a test put there on purpose).
pub fn read_archive_except(root: &Path, skip: &[i32]) -> Archive {
    let mut out = Archive::new();
    let Ok(topics) = std::fs::read_dir(root) else {
        return out;
    };
    for t in topics {
        let t = t.unwrap();
        let topic = t.file_name().to_string_lossy().into_owned();
        if !t.path().is_dir() {
            continue;
        }
        for p in std::fs::read_dir(t.path()).unwrap() {
            let p = p.unwrap();
            let dir = p.file_name().to_string_lossy().into_owned();
            let partition: i32 = dir.parse().unwrap();
            assert_eq!(
                dir,
                format!("{partition:06}"),
                "partition folder of {topic}"
            );
            if skip.contains(&partition) {
                continue;
            }
            let mut files = Vec::new();
            for f in std::fs::read_dir(p.path()).unwrap() {
                let f = f.unwrap();
                let name = f.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with('.'),
                    "leftover temporary file {name} in the archive"
                );
                let first: i64 = name.strip_suffix(".avro").unwrap().parse().unwrap();
                assert_eq!(name, format!("{first:020}.avro"));
                files.push(read_file(&f.path(), &topic, partition, first));
            }
            files.sort_by_key(|f| f.first);
            out.entry(topic.clone())
                .or_default()
                .insert(partition, files);
        }
    }
    out
}

/// A tmpfs mounted for one test (the tests run as root, as CI does);
/// unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {dir:?} (tests need root)");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Checks that the files of each partition tile `[start, end)` of its
/// offsets (each file's `next` names the next file), and returns every
/// record by (partition, offset), failing on a duplicate.
pub fn check_tiling(
    archive: &Archive,
    topic: &str,
    ends: &BTreeMap<i32, (i64, i64)>,
) -> BTreeMap<(i32, i64), ReadRec> {
    let mut all = BTreeMap::new();
    let partitions = archive.get(topic).cloned().unwrap_or_default();
    for (&p, &(start, end)) in ends {
        let files = partitions.get(&p).cloned().unwrap_or_default();
        let mut expect = start;
        for f in &files {
            assert_eq!(
                f.first, expect,
                "{topic}/{p}: file {} does not continue the chain",
                f.first
            );
            assert!(f.next > f.first, "{topic}/{p}: empty range at {}", f.first);
            expect = f.next;
            for r in &f.records {
                assert!(
                    all.insert((p, r.offset), r.clone()).is_none(),
                    "{topic}/{p}: offset {} twice",
                    r.offset
                );
            }
        }
        assert_eq!(
            expect, end,
            "{topic}/{p}: chain ends at {expect}, log at {end}"
        );
    }
    all
}

/// Compares what was read back with what was produced, field by field.
pub fn assert_same_records(
    read: &BTreeMap<(i32, i64), ReadRec>,
    produced: &BTreeMap<(i32, i64), Rec>,
) {
    assert_eq!(read.len(), produced.len(), "record count");
    for ((p, o), rec) in produced {
        let got = read
            .get(&(*p, *o))
            .unwrap_or_else(|| panic!("{p}/{o} is missing from the archive"));
        assert_eq!(got.timestamp, rec.timestamp, "{p}/{o} timestamp");
        assert_eq!(got.timestamp_type, "create", "{p}/{o} timestamp type");
        assert_eq!(got.key, rec.key, "{p}/{o} key");
        assert_eq!(got.value, rec.value, "{p}/{o} value");
        assert_eq!(got.headers, rec.headers, "{p}/{o} headers");
    }
}

/// The archive tiles every partition up to the log end (records produced
/// so far all stored) and holds exactly `produced`.
pub fn archive_is_complete(
    archive: &Path,
    topic: &str,
    produced: &BTreeMap<(i32, i64), Rec>,
) -> bool {
    let ends: BTreeMap<i32, (i64, i64)> = from_zero(topic);
    let got = read_archive(archive);
    let Some(parts) = got.get(topic) else {
        return false;
    };
    let complete = ends.iter().all(|(p, (_, end))| {
        parts
            .get(p)
            .and_then(|f| f.last())
            .is_some_and(|f| f.next == *end)
    });
    if !complete {
        return false;
    }
    let read = check_tiling(&got, topic, &ends);
    assert_same_records(&read, produced);
    true
}

/// Every file's bytes by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

/// (low, high) watermarks per partition of a topic.
/// `[0, log end)` per partition: what a complete archive of the topic covers.
pub fn from_zero(topic: &str) -> BTreeMap<i32, (i64, i64)> {
    extents(topic)
        .into_iter()
        .map(|(p, (_, h))| (p, (0, h)))
        .collect()
}

pub fn extents(topic: &str) -> BTreeMap<i32, (i64, i64)> {
    watermarks(topic)
        .into_iter()
        .map(|(p, l, h)| (p, (l, h)))
        .collect()
}

// ---- the GCS emulator --------------------------------------------------------

pub const GCS_EMULATOR: &str = "http://127.0.0.1:9023";

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// Creates a bucket with a unique name in the emulator.
pub fn gcs_bucket() -> String {
    services();
    let name = unique("bkt").to_lowercase();
    let mut r = http()
        .post(&format!("{GCS_EMULATOR}/storage/v1/b?project=test"))
        .header("content-type", "application/json")
        .send(format!(r#"{{"name":"{name}"}}"#))
        .unwrap();
    assert!(
        r.status().is_success(),
        "create bucket: {}",
        r.body_mut().read_to_string().unwrap()
    );
    name
}

/// An object as the emulator lists it.
#[derive(Clone, Debug)]
pub struct GcsObject {
    pub name: String,
    pub size: u64,
    pub crc32c: String,
    pub generation: String,
    pub metadata: BTreeMap<String, String>,
}

/// Every object of a bucket, straight from the emulator.
pub fn gcs_objects(bucket: &str) -> Vec<GcsObject> {
    let mut r = http()
        .get(&format!("{GCS_EMULATOR}/storage/v1/b/{bucket}/o"))
        .call()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| GcsObject {
            name: o["name"].as_str().unwrap().to_string(),
            size: o["size"].as_str().unwrap().parse().unwrap(),
            crc32c: o["crc32c"].as_str().unwrap_or("").to_string(),
            generation: o["generation"].as_str().unwrap().to_string(),
            metadata: o["metadata"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// Downloads every object under `prefix/` into `dest` (same layout as a
/// file:// archive), checking each object's CRC32C and metadata against
/// its bytes; returns the objects.
pub fn download_archive(bucket: &str, prefix: &str, dest: &Path) -> Vec<GcsObject> {
    use base64::Engine as _;
    let objects: Vec<GcsObject> = gcs_objects(bucket)
        .into_iter()
        .filter(|o| o.name.starts_with(&format!("{prefix}/")))
        .collect();
    for o in &objects {
        let rel = o.name.strip_prefix(&format!("{prefix}/")).unwrap();
        let mut r = http()
            .get(&format!(
                "{GCS_EMULATOR}/storage/v1/b/{bucket}/o/{}?alt=media",
                rel_encode(&o.name)
            ))
            .call()
            .unwrap();
        let bytes = r
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap();
        assert_eq!(bytes.len() as u64, o.size, "{}", o.name);
        let crc =
            base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(&bytes).to_be_bytes());
        assert_eq!(crc, o.crc32c, "{}: CRC32C of the stored bytes", o.name);
        let path = dest.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let file = read_file(
            &path,
            rel.split('/').next().unwrap(),
            rel.split('/').nth(1).unwrap().parse().unwrap(),
            rel.split('/')
                .nth(2)
                .unwrap()
                .strip_suffix(".avro")
                .unwrap()
                .parse()
                .unwrap(),
        );
        assert_eq!(
            o.metadata["next-offset"],
            file.next.to_string(),
            "{}",
            o.name
        );
        assert_eq!(
            o.metadata["record-count"],
            file.records.len().to_string(),
            "{}",
            o.name
        );
        let timestamps = file.records.iter().map(|r| r.timestamp);
        for (key, want) in [
            ("min-timestamp", timestamps.clone().min()),
            ("max-timestamp", timestamps.max()),
        ] {
            assert_eq!(
                o.metadata.get(key),
                want.map(|t| t.to_string()).as_ref(),
                "{}: {key}",
                o.name
            );
        }
        assert_eq!(o.metadata["format-version"], "2");
        let id = &o.metadata["topic-id"];
        assert!(uuid_like(id), "{}: topic-id {id:?}", o.name);
        if !file.records.is_empty() {
            assert!(
                o.metadata["last-epoch"]
                    .parse::<i32>()
                    .is_ok_and(|e| e >= 0),
                "{}: last-epoch",
                o.name
            );
        }
    }
    objects
}

/// A hyphenated lowercase UUID, as topic ids are written.
fn uuid_like(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

fn rel_encode(name: &str) -> String {
    name.replace('/', "%2F")
}

// ---- long-running processes ----------------------------------------------------

/// A `kafka-store run` in the background whose log is collected line by line.
pub struct Proc {
    pub child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `kafka-store run --config CONFIG` (service mode).
    pub fn start(config: &Path) -> Proc {
        Proc::start_logging(config, "info")
    }

    /// [`Proc::start`] with another log level.
    pub fn start_logging(config: &Path, level: &str) -> Proc {
        let mut cmd = Command::new(binary());
        cmd.args(["run", "--config", config.to_str().unwrap()])
            .env("KAFKA_STORE_LOG", level);
        Proc::spawn(cmd)
    }

    /// Starts `cmd` (a `kafka-store run`, perhaps behind a wrapper such as
    /// `prlimit`).
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, log }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The last assignment logged: (generation, partitions).
    pub fn assignment(&self) -> Option<(i32, usize)> {
        self.log().iter().rev().find_map(|l| {
            let rest = l.split(" generation ").nth(1)?;
            let generation = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            let count = rest.split(": ").nth(1)?.split(' ').next()?.parse().ok()?;
            Some((generation, count))
        })
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit (killing after `limit`); returns the exit status.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {limit:?}: {:?}",
                    self.log().iter().rev().take(5).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Files under construction in a spool directory: the files a running
/// kafka-store has open.
pub fn open_spool_files(spool: &Path) -> usize {
    let Ok(topics) = std::fs::read_dir(spool) else {
        return 0;
    };
    topics
        .flatten()
        .filter_map(|t| std::fs::read_dir(t.path()).ok())
        .flat_map(|d| d.flatten())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
        .count()
}

/// Waits until `cond` holds, checking every 100 ms; panics after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- restore ------------------------------------------------------------------------

/// The header `kafka-store restore` puts on every record it replays.
pub const RESTORE_MARK: &[u8] = b"kafka-store.source";

/// Checks that `got` holds exactly `want` (source offset → record) of one
/// partition, in order, each once, with its mark naming the source.
pub fn assert_restored(source: &str, partition: i32, got: &[Consumed], want: &[(i64, &Rec)]) {
    let marks: Vec<String> = got
        .iter()
        .map(|c| {
            let (k, v) = c.headers.last().expect("a mark header");
            assert_eq!(k, RESTORE_MARK);
            String::from_utf8(v.clone().unwrap()).unwrap()
        })
        .collect();
    let want_marks: Vec<String> = want
        .iter()
        .map(|(o, _)| format!("{source}/{partition}/{o}"))
        .collect();
    assert_eq!(
        marks.len(),
        want_marks.len(),
        "record count of partition {partition}"
    );
    assert_eq!(marks, want_marks, "marks of partition {partition}");
    for (c, (offset, r)) in got.iter().zip(want) {
        let what = format!("{source}/{partition} offset {offset}");
        assert_eq!(c.timestamp, r.timestamp, "{what}: timestamp");
        assert!(!c.log_append, "{what}: timestamp type");
        assert_eq!(c.key, r.key, "{what}: key");
        assert_eq!(c.value, r.value, "{what}: value");
        assert_eq!(
            &c.headers[..c.headers.len() - 1],
            &r.headers[..],
            "{what}: headers"
        );
    }
}

/// What was produced to one partition, by offset.
pub fn partition_of(produced: &BTreeMap<(i32, i64), Rec>, p: i32) -> Vec<(i64, &Rec)> {
    produced
        .iter()
        .filter(|((q, _), _)| *q == p)
        .map(|((_, o), r)| (*o, r))
        .collect()
}

// ---- MariaDB ---------------------------------------------------------------------

pub const MYSQL: &str = "mysql://root@127.0.0.1:3306";

/// Tests share MariaDB; one that stops it takes it alone.
static MARIADB: RwLock<()> = RwLock::new(());

pub fn shared_mariadb() -> RwLockReadGuard<'static, ()> {
    services();
    MARIADB.read().unwrap_or_else(|e| e.into_inner())
}

pub fn exclusive_mariadb() -> RwLockWriteGuard<'static, ()> {
    services();
    MARIADB.write().unwrap_or_else(|e| e.into_inner())
}

/// A connection as root (to the server, or to `db`).
pub fn mysql(db: Option<&str>) -> mysql::Conn {
    let url = match db {
        Some(db) => format!("{MYSQL}/{db}"),
        None => MYSQL.to_string(),
    };
    mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap()
}

/// A new, empty database.
pub fn mysql_db() -> String {
    use mysql::prelude::Queryable;
    let db = unique("ks").replace('-', "_");
    mysql(None)
        .query_drop(format!("CREATE DATABASE {db}"))
        .unwrap();
    db
}

/// The index rows of a topic: (partition, first, next, records, min ts, max ts, bytes, crc32c, url).
pub type IndexRow = (
    i32,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    Option<u32>,
    String,
);

pub fn index_rows(db: &str, topic: &str) -> Vec<IndexRow> {
    use mysql::prelude::Queryable;
    mysql(Some(db))
        .exec(
            "SELECT `partition`, first_offset, next_offset, record_count, min_timestamp, max_timestamp, bytes, crc32c, object_url FROM kafka_store_files WHERE topic = ? ORDER BY `partition`, first_offset",
            (topic,),
        )
        .unwrap()
}

// ---- records Kafka accepts and no client library produces ------------------------------

/// Produces one uncompressed batch straight over the protocol (Produce v8,
/// acks = all) to the single-node broker: header keys that are not UTF-8,
/// which every client library refuses. Returns the batch's base offset.
pub fn produce_raw(topic: &str, partition: i32, records: &[Rec]) -> i64 {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
    use std::io::Read;

    fn varint(buf: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            buf.push((z as u8) | 0x80);
            z >>= 7;
        }
        buf.push(z as u8);
    }
    fn field(buf: &mut Vec<u8>, v: Option<&[u8]>) {
        match v {
            None => varint(buf, -1),
            Some(b) => {
                varint(buf, b.len() as i64);
                buf.extend_from_slice(b);
            }
        }
    }
    let base_ts = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let mut body = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut rec = vec![0u8];
        varint(&mut rec, r.timestamp - base_ts);
        varint(&mut rec, i as i64);
        field(&mut rec, r.key.as_deref());
        field(&mut rec, r.value.as_deref());
        varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            field(&mut rec, Some(k));
            field(&mut rec, v.as_deref());
        }
        varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&0i16.to_be_bytes()); // attributes: no codec, CreateTime
    after_crc.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
    after_crc.extend_from_slice(&base_ts.to_be_bytes());
    after_crc.extend_from_slice(&max_ts.to_be_bytes());
    after_crc.extend_from_slice(&(-1i64).to_be_bytes()); // no producer id
    after_crc.extend_from_slice(&(-1i16).to_be_bytes());
    after_crc.extend_from_slice(&(-1i32).to_be_bytes());
    after_crc.extend_from_slice(&(records.len() as i32).to_be_bytes());
    after_crc.extend_from_slice(&body);
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes());
    batch.extend_from_slice(&((after_crc.len() + 9) as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch: set by the broker
    batch.push(2);
    batch.extend_from_slice(&crc32c::crc32c(&after_crc).to_be_bytes());
    batch.extend_from_slice(&after_crc);

    const VERSION: i16 = 8;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ]);
    let header = RequestHeader::default()
        .with_request_api_key(ProduceRequest::KEY)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("raw-producer")));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    header
        .encode(&mut buf, ProduceRequest::header_version(VERSION))
        .unwrap();
    request.encode(&mut buf, VERSION).unwrap();
    let size = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    let mut stream = std::net::TcpStream::connect(BOOTSTRAP).unwrap();
    stream.write_all(&buf).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply).unwrap();
    let mut reply = Bytes::from(reply);
    ResponseHeader::decode(&mut reply, ProduceResponse::header_version(VERSION)).unwrap();
    let response = ProduceResponse::decode(&mut reply, VERSION).unwrap();
    let p = &response.responses[0].partition_responses[0];
    assert_eq!(
        p.error_code, 0,
        "produce of a raw batch to {topic}/{partition}"
    );
    p.base_offset
}

// ---- /metrics --------------------------------------------------------------------

/// Appends `[metrics]` listening on a free port (and `extra`) to a config.
pub fn with_metrics(config: &Path, extra: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(
        config,
        format!("{text}\n[metrics]\nlisten = \"127.0.0.1:0\"\n{extra}\n"),
    )
    .unwrap();
}

/// The address a running kafka-store serves `/metrics` on, from its log.
pub fn metrics_addr(p: &Proc) -> String {
    let mut addr = None;
    wait_until("metrics address logged", Duration::from_secs(30), || {
        addr = p.log().iter().find_map(|l| {
            let rest = l.split("serving metrics at http://").nth(1)?;
            Some(rest.strip_suffix("/metrics")?.to_string())
        });
        addr.is_some()
    });
    addr.unwrap()
}

/// `GET path` over a fresh connection: the status and the body.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> (u16, String) {
    use std::io::Read as _;
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(timeout)).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// One sample of a scrape.
#[derive(Clone, Debug)]
pub struct PromSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Scrapes `/metrics` and parses it with prometheus-client's parser
/// (tests/support/prom_parse.py); every family must have HELP and a type.
pub fn scrape(addr: &str) -> Vec<PromSample> {
    let (status, body) = http_get(addr, "/metrics", Duration::from_secs(10));
    assert_eq!(status, 200, "{body}");
    let mut child = Command::new(state_dir().join("venv/bin/python"))
        .arg(repo().join("tests/support/prom_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run prom_parse.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus-client refused the scrape: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut samples = Vec::new();
    for f in families.as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        assert!(name.starts_with("kafka_store_"), "{name}");
        assert!(
            !f["help"].as_str().unwrap().is_empty(),
            "{name} has no HELP"
        );
        let kind = f["type"].as_str().unwrap();
        assert!(kind == "counter" || kind == "gauge", "{name} is a {kind}");
        for s in f["samples"].as_array().unwrap() {
            samples.push(PromSample {
                name: s["name"].as_str().unwrap().to_string(),
                labels: s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
                value: s["value"].as_f64().unwrap(),
            });
        }
    }
    samples
}

/// The value of the sample `name` whose labels include `labels`.
pub fn prom_value(samples: &[PromSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// Archive files under `root` (hidden temporaries left out), per
/// partition folder `{topic}/{partition:06}`: (count, bytes).
pub fn archive_files_on_disk(root: &Path, topic: &str) -> BTreeMap<i32, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(parts) = std::fs::read_dir(root.join(topic)) else {
        return out;
    };
    for part in parts.flatten() {
        let p: i32 = part.file_name().to_string_lossy().parse().unwrap();
        for f in std::fs::read_dir(part.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".avro") && !name.starts_with('.') {
                let e = out.entry(p).or_insert((0, 0));
                e.0 += 1;
                e.1 += f.metadata().unwrap().len();
            }
        }
    }
    out
}

// ---- the secure broker (TLS and SASL) ---------------------------------------

/// The listeners of `test-services.sh`'s kafka-secure.
pub const SECURE_SSL: &str = "127.0.0.1:9192";
pub const SECURE_SASL_PLAINTEXT: &str = "127.0.0.1:9193";
pub const SECURE_SASL_SSL: &str = "127.0.0.1:9194";
/// SSL with a client certificate required.
pub const SECURE_MTLS: &str = "127.0.0.1:9195";
/// PLAINTEXT, for creating topics and producing with confluent-kafka.
pub const SECURE_ADMIN: &str = "127.0.0.1:9196";
/// SSL with a certificate for `elsewhere.invalid` only.
pub const SECURE_WRONG_NAME: &str = "127.0.0.1:9198";
/// SASL_PLAINTEXT whose sessions last 2 s (`connections.max.reauth.ms`).
pub const SECURE_REAUTH: &str = "127.0.0.1:9199";
/// Its SCRAM user (SCRAM-SHA-256 and -512) and its PLAIN user.
pub const SECURE_SCRAM: (&str, &str) = ("archiver", "archiver-secret");
pub const SECURE_PLAIN: (&str, &str) = ("plain-user", "plain-secret");

/// A file of kafka-secure's certificates: `ca.pem`, `other-ca.pem`,
/// `client.pem`, `client.key`, `broker.pem`.
pub fn secure_tls(name: &str) -> PathBuf {
    state_dir().join("kafka-secure/tls").join(name)
}

/// A topic on kafka-secure holding `n` generated records; returns its name
/// and what was produced, by (partition, offset).
pub fn secure_topic(
    prefix: &str,
    partitions: i32,
    n: usize,
) -> (String, BTreeMap<(i32, i64), Rec>) {
    services();
    let topic = unique(prefix);
    let p = partitions.to_string();
    kafka_tool_at(
        SECURE_ADMIN,
        &["create-topic", "--topic", &topic, "--partitions", &p],
        None,
    );
    let records = gen_records(13, n, partitions, 1_700_000_000_000);
    let produced = produce_at(SECURE_ADMIN, &topic, &records, "lz4", &[]);
    (topic, produced)
}

/// `[0, log end)` per partition of a topic of the cluster at `bootstrap`.
pub fn from_zero_at(bootstrap: &str, topic: &str) -> BTreeMap<i32, (i64, i64)> {
    parse_watermarks(&kafka_tool_at(
        bootstrap,
        &["high-watermarks", "--topic", topic],
        None,
    ))
    .into_iter()
    .map(|(p, _, h)| (p, (0, h)))
    .collect()
}

/// A [`Setup`] archiving `topic` from `broker` with `security` (TOML lines
/// of `[kafka]`); `password` is written to `<dir>/password` (with a
/// newline), which `security` may name as `@PASSWORD@`.
pub fn secure_setup(topic: &str, broker: &str, security: &str, password: &str) -> Setup {
    let s = Setup::new(&[topic], &unique("tls-group"), "", "");
    let password_file = s.dir.path().join("password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        &format!("brokers = [\"{BOOTSTRAP}\"]"),
        &format!(
            "brokers = [\"{broker}\"]\n{}",
            security.replace("@PASSWORD@", &password_file.display().to_string())
        ),
    );
    std::fs::write(&s.config, text).unwrap();
    s
}

/// The S3 test server (s3s-fs, started by vendor-config/test-services.sh).
pub const S3_ENDPOINT: &str = "http://127.0.0.1:9024";

/// The AWS credentials file of the S3 test server's user.
pub fn s3_credentials() -> PathBuf {
    state_dir().join("s3/credentials")
}

/// tests/support/s3_tool.py against the S3 test server; its stdout.
pub fn s3_tool(args: &[&str]) -> String {
    let out = Command::new(state_dir().join("venv/bin/python"))
        .arg(repo().join("tests/support/s3_tool.py"))
        .arg(args[0])
        .arg(S3_ENDPOINT)
        .arg(s3_credentials())
        .args(&args[1..])
        .output()
        .expect("run s3_tool.py");
    assert!(
        out.status.success(),
        "s3_tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A new, empty bucket on the S3 test server.
pub fn s3_bucket() -> String {
    let name = unique("s3").to_lowercase();
    s3_tool(&["mkbucket", &name]);
    name
}

/// Downloads every archive object under `prefix/` into `dest` (not the
/// create-only probe of `run`); one JSON value (key, size, etag, metadata)
/// per object.
pub fn s3_download(bucket: &str, prefix: &str, dest: &Path) -> Vec<serde_json::Value> {
    s3_tool(&["download", bucket, prefix, dest.to_str().unwrap()])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The key of every object under `prefix/` in `bucket`, the create-only
/// probe of `run` included.
pub fn s3_keys(bucket: &str, prefix: &str) -> Vec<String> {
    s3_tool(&["keys", bucket, prefix])
        .lines()
        .map(str::to_string)
        .collect()
}

impl Setup {
    /// A config archiving into `s3://{bucket}/archive` through `endpoint`
    /// (path-style, the test user's credentials file).
    pub fn s3(
        topics: &[&str],
        group: &str,
        bucket: &str,
        endpoint: &str,
        files_extra: &str,
        s3_extra: &str,
    ) -> Setup {
        let s = Setup::new(topics, group, "", files_extra);
        let text = std::fs::read_to_string(&s.config).unwrap().replace(
            &format!("url = \"file://{}\"", s.archive.display()),
            &format!("url = \"s3://{bucket}/archive\""),
        );
        std::fs::write(
            &s.config,
            format!(
                "{text}\n[s3]\nendpoint = \"{endpoint}\"\npath_style = true\ncredentials = \"{}\"\n{s3_extra}\n",
                s3_credentials().display()
            ),
        )
        .unwrap();
        s
    }
}

// ---- an HTTP CONNECT proxy ------------------------------------------------------

/// A minimal HTTP CONNECT proxy (what air-gapped sites put in front of an
/// object store): records the target of every tunnel it opens, and opens
/// it to that target, or to `to` whatever the target (standing in for the
/// DNS of a host name that only the proxy can resolve).
pub struct ConnectProxy {
    pub addr: std::net::SocketAddr,
    pub tunnels: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start(to: Option<&str>) -> ConnectProxy {
        use std::io::{BufRead, BufReader};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = tunnels.clone();
        let to = to.map(str::to_string);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (seen, to) = (seen.clone(), to.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap() <= 2 {
                            break;
                        }
                    }
                    seen.lock().unwrap().push(target.clone());
                    let upstream =
                        std::net::TcpStream::connect(to.as_deref().unwrap_or(&target)).unwrap();
                    let mut client_w = client.try_clone().unwrap();
                    client_w
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .unwrap();
                    let mut up_r = upstream.try_clone().unwrap();
                    let mut up_w = upstream;
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut up_r, &mut client_w);
                    });
                    let _ = std::io::copy(&mut reader, &mut up_w);
                });
            }
        });
        ConnectProxy { addr, tunnels }
    }
}

// ---- TLS in front of a local server ---------------------------------------------

/// A CA and a certificate it signed for 127.0.0.1, made with openssl.
pub fn make_ca(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |p: &std::path::PathBuf| p.to_str().unwrap().to_string();
    let (ca_key, ca, key, csr, cert, ext) = (
        p("ca.key"),
        p("ca.pem"),
        p("server.key"),
        p("server.csr"),
        p("server.pem"),
        p("ext"),
    );
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &s(&ca_key),
        "-out",
        &s(&ca),
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test ca"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca),
        "-CAkey",
        &s(&ca_key),
        "-CAcreateserial",
        "-out",
        &s(&cert),
        "-days",
        "2",
        "-extfile",
        &s(&ext),
    ]);
    (ca, cert, key)
}

/// socat terminating TLS in front of a local server; killed when dropped.
pub struct TlsProxy {
    child: std::process::Child,
    pub port: u16,
}

impl TlsProxy {
    pub fn start(cert: &std::path::Path, key: &std::path::Path, upstream: u16) -> TlsProxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
            cert.display(),
            key.display()
        );
        let child = std::process::Command::new("socat")
            .args([listen, format!("TCP:127.0.0.1:{upstream}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until("socat listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        TlsProxy { child, port }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS proxy in front of the local server on `upstream`, its certificate
/// from a CA made now: (the directory holding them, that CA, another CA
/// that signed nothing here, the proxy).
pub fn tls_in_front_of(upstream: u16) -> (tempfile::TempDir, PathBuf, PathBuf, TlsProxy) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_ca(dir.path(), "good");
    let (other_ca, _, _) = make_ca(dir.path(), "other");
    let proxy = TlsProxy::start(&cert, &key, upstream);
    (dir, ca, other_ca, proxy)
}

/// `kafka-store run --until-caught-up`, which must exit 1; its last line.
pub fn run_exits_1(s: &Setup) -> String {
    let out = run_with_timeout(
        s.command(&[
            "run",
            "--config",
            s.config.to_str().unwrap(),
            "--until-caught-up",
        ]),
        Duration::from_secs(120),
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err.lines().last().unwrap_or_default().to_string()
}
