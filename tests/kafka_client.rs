//! The Kafka client against a genuine Apache Kafka broker: every codec,
//! transactions, a broker restart mid-fetch, group offsets, and the errors
//! a user meets first.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_store::format::names::TopicPartition;
use kafka_store::format::record::{OwnedRecord, TimestampType};
use kafka_store::kafka::records::{self, Event, RecordsError, TxnFilter};
use kafka_store::kafka::{Client, ClientConfig, KafkaError, OffsetSpec, Position};

use crate::support::{self, BOOTSTRAP, Frame, Rec};

fn config(brokers: &[&str]) -> ClientConfig {
    support::client_config(brokers)
}

/// One fetch round's outcomes, collected.
fn fetch_round(
    client: &mut Client,
    wanted: &[(TopicPartition, i64)],
) -> Vec<(
    TopicPartition,
    Result<kafka_store::kafka::PartitionData, KafkaError>,
)> {
    let wanted: Vec<(TopicPartition, Position)> = wanted
        .iter()
        .map(|(tp, offset)| {
            let at = Position {
                offset: *offset,
                last_epoch: None,
            };
            (tp.clone(), at)
        })
        .collect();
    let mut out = Vec::new();
    client.fetch(&wanted, |tp, r| out.push((tp, r)));
    out
}

/// What fetching a partition range produced.
#[derive(Default)]
struct Fetched {
    records: BTreeMap<(i32, i64), OwnedRecord>,
    /// Offsets reported as skipped (control batches, aborted records).
    skipped_to: Vec<(i32, i64)>,
    errors: usize,
}

/// Fetches every partition of `topic` from its start to `ends`, checking
/// that offsets come exactly once and in order.
fn fetch_until(
    client: &mut Client,
    topic: &str,
    ends: &BTreeMap<i32, (i64, i64)>,
    out: &mut Fetched,
    positions: &mut BTreeMap<i32, i64>,
    deadline: Duration,
    rounds: Option<usize>,
) {
    let started = Instant::now();
    let mut scratch = Vec::new();
    let mut round = 0;
    loop {
        let wanted: Vec<(TopicPartition, i64)> = positions
            .iter()
            .filter(|(p, pos)| **pos < ends[p].1)
            .map(|(p, pos)| (TopicPartition::new(topic, *p), *pos))
            .collect();
        if wanted.is_empty() || rounds.is_some_and(|r| round >= r) {
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "fetching {topic} took longer than {deadline:?}"
        );
        round += 1;
        for (tp, result) in fetch_round(client, &wanted) {
            let data = match result {
                Ok(d) => d,
                Err(e) => {
                    assert!(e.is_retriable(), "{tp}: {e}");
                    out.errors += 1;
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let pos = positions.get_mut(&tp.partition).unwrap();
            assert_eq!(data.fetch_offset, *pos);
            let mut last = *pos - 1;
            let next = records::visit::<RecordsError>(
                &data.records,
                *pos,
                &mut TxnFilter::new(data.aborted.clone()),
                &mut scratch,
                |e| {
                    match e {
                        Event::Record { record: r, .. } => {
                            assert!(r.offset > last, "{tp}: offset {} after {last}", r.offset);
                            last = r.offset;
                            let owned = r.to_owned_record();
                            assert!(
                                out.records
                                    .insert((tp.partition, r.offset), owned)
                                    .is_none(),
                                "{tp}: offset {} twice",
                                r.offset
                            );
                        }
                        Event::Skipped { next, .. } => out.skipped_to.push((tp.partition, next)),
                    }
                    Ok(())
                },
            )
            .unwrap_or_else(|e| panic!("{tp}: {e}"));
            *pos = next;
        }
    }
}

fn compare(fetched: &Fetched, produced: &BTreeMap<(i32, i64), Rec>) {
    assert_eq!(fetched.records.len(), produced.len());
    for (k, rec) in produced {
        let got = &fetched.records[k];
        assert_eq!(got.timestamp, rec.timestamp, "{k:?} timestamp");
        assert_eq!(got.timestamp_type, TimestampType::Create, "{k:?}");
        assert_eq!(got.key, rec.key, "{k:?} key");
        assert_eq!(got.value, rec.value, "{k:?} value");
        assert_eq!(got.headers, rec.headers, "{k:?} headers");
    }
}

#[test]
fn every_record_of_every_codec_is_fetched_once_in_order_with_all_fields() {
    let _broker = support::shared_broker();
    let topic = support::unique("codecs");
    support::create_topic(&topic, 4, &[]);
    let mut produced = BTreeMap::new();
    for (i, codec) in ["none", "gzip", "snappy", "lz4", "zstd"].iter().enumerate() {
        let recs = support::gen_records(
            i as u64 + 1,
            50_000,
            4,
            1_700_000_000_000 + i as i64 * 10_000_000,
        );
        produced.extend(support::produce(&topic, &recs, codec));
    }
    let ends = support::extents(&topic);
    let mut client = Client::connect(config(&[BOOTSTRAP]), Default::default()).unwrap();
    assert_eq!(client.partitions(&topic).unwrap(), vec![0, 1, 2, 3]);
    let starts = client
        .list_offsets(
            &(0..4)
                .map(|p| TopicPartition::new(&topic, p))
                .collect::<Vec<_>>(),
            OffsetSpec::Earliest,
        )
        .unwrap();
    let mut positions: BTreeMap<i32, i64> =
        starts.iter().map(|(tp, o)| (tp.partition, *o)).collect();
    let mut fetched = Fetched::default();
    fetch_until(
        &mut client,
        &topic,
        &ends,
        &mut fetched,
        &mut positions,
        Duration::from_secs(120),
        None,
    );
    compare(&fetched, &produced);
    let latest = client
        .list_offsets(
            &(0..4)
                .map(|p| TopicPartition::new(&topic, p))
                .collect::<Vec<_>>(),
            OffsetSpec::Latest,
        )
        .unwrap();
    for (tp, end) in latest {
        assert_eq!(end, ends[&tp.partition].1, "{tp} latest");
        assert_eq!(positions[&tp.partition], end);
    }
}

#[test]
fn log_append_time_records_carry_the_broker_time() {
    let _broker = support::shared_broker();
    let topic = support::unique("logappend");
    support::create_topic(&topic, 1, &["message.timestamp.type=LogAppendTime"]);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let produced = support::produce(&topic, &support::gen_records(9, 500, 1, 1_000), "lz4");
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ends = support::extents(&topic);
    let mut client = Client::connect(config(&[BOOTSTRAP]), Default::default()).unwrap();
    let mut fetched = Fetched::default();
    fetch_until(
        &mut client,
        &topic,
        &ends,
        &mut fetched,
        &mut BTreeMap::from([(0, 0)]),
        Duration::from_secs(30),
        None,
    );
    assert_eq!(fetched.records.len(), produced.len());
    for r in fetched.records.values() {
        assert_eq!(r.timestamp_type, TimestampType::LogAppend);
        assert!(
            (before - 1000..=after + 1000).contains(&r.timestamp),
            "{} not in [{before}, {after}]",
            r.timestamp
        );
    }
}

#[test]
fn aborted_transactions_are_skipped_and_positions_move_past_markers() {
    let _broker = support::shared_broker();
    let topic = support::unique("txn");
    support::create_topic(&topic, 1, &[]);
    let recs = support::gen_records(7, 90, 1, 1_700_000_000_000);
    let mut frames = Vec::new();
    for (i, chunk) in recs.chunks(30).enumerate() {
        frames.push(Frame::Begin);
        frames.extend(chunk.iter().cloned().map(Frame::Rec));
        frames.push(if i == 1 { Frame::Abort } else { Frame::Commit });
    }
    let offsets = support::produce_frames(&topic, &frames, "gzip", Some(&support::unique("tx")));
    let committed: BTreeMap<(i32, i64), Rec> = offsets
        .iter()
        .zip(&recs)
        .enumerate()
        .filter(|(i, _)| !(30..60).contains(i))
        .map(|(_, (k, r))| (*k, r.clone()))
        .collect();
    let ends = support::extents(&topic);
    assert_eq!(ends[&0].1, 93, "90 records and three markers");
    let mut client = Client::connect(config(&[BOOTSTRAP]), Default::default()).unwrap();
    let mut fetched = Fetched::default();
    let mut positions = BTreeMap::from([(0, 0)]);
    fetch_until(
        &mut client,
        &topic,
        &ends,
        &mut fetched,
        &mut positions,
        Duration::from_secs(30),
        None,
    );
    compare(&fetched, &committed);
    assert_eq!(positions[&0], 93, "the position moves past the last marker");
    // The markers at 30, 61 and 92 and the aborted batch were reported as skipped.
    for next in [31, 62, 93] {
        assert!(
            fetched.skipped_to.contains(&(0, next)),
            "skipped {next}: {:?}",
            fetched.skipped_to
        );
    }
}

#[test]
fn a_broker_restart_mid_fetch_resumes_at_the_right_offset() {
    let _broker = support::exclusive_broker();
    let topic = support::unique("restart");
    support::create_topic(&topic, 2, &[]);
    let produced = support::produce(
        &topic,
        &support::gen_records(11, 20_000, 2, 1_700_000_000_000),
        "snappy",
    );
    let ends = support::extents(&topic);
    let mut cfg = config(&[BOOTSTRAP]);
    cfg.partition_fetch_bytes = 32 << 10;
    let mut client = Client::connect(cfg, Default::default()).unwrap();
    let mut fetched = Fetched::default();
    let mut positions = BTreeMap::from([(0, 0), (1, 0)]);
    fetch_until(
        &mut client,
        &topic,
        &ends,
        &mut fetched,
        &mut positions,
        Duration::from_secs(30),
        Some(20),
    );
    assert!(fetched.records.len() > 1000 && fetched.records.len() < produced.len());

    support::test_services("stop-kafka");
    let wanted: Vec<_> = positions
        .iter()
        .map(|(p, o)| (TopicPartition::new(&topic, *p), *o))
        .collect();
    let results = fetch_round(&mut client, &wanted);
    assert_eq!(results.len(), wanted.len(), "one result per partition");
    for (tp, result) in results {
        let e = result.expect_err("the broker is down");
        assert!(e.is_retriable(), "{tp}: {e}");
    }
    support::test_services("start-kafka");
    fetch_until(
        &mut client,
        &topic,
        &ends,
        &mut fetched,
        &mut positions,
        Duration::from_secs(90),
        None,
    );
    compare(&fetched, &produced);
}

#[test]
fn group_offsets_round_trip_with_their_metadata() {
    let _broker = support::shared_broker();
    let topic = support::unique("offsets");
    support::create_topic(&topic, 3, &[]);
    let group = support::unique("group");
    let mut client = Client::connect(config(&[BOOTSTRAP]), Default::default()).unwrap();
    let tps: Vec<_> = (0..3).map(|p| TopicPartition::new(&topic, p)).collect();
    assert!(client.committed_offsets(&group, &tps).unwrap().is_empty());
    let meta = || "kafka-store/1".to_string();
    client
        .commit_offsets(
            &group,
            None,
            &[(tps[0].clone(), 42, meta()), (tps[2].clone(), 7, meta())],
        )
        .unwrap();
    let got = client.committed_offsets(&group, &tps).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[&tps[0]].offset, 42);
    assert_eq!(got[&tps[0]].metadata, "kafka-store/1");
    assert_eq!(got[&tps[2]].offset, 7);
    client
        .commit_offsets(&group, None, &[(tps[0].clone(), 50, "x".into())])
        .unwrap();
    let got = Client::connect(config(&[BOOTSTRAP]), Default::default())
        .unwrap()
        .committed_offsets(&group, &tps)
        .unwrap();
    assert_eq!(
        (got[&tps[0]].offset, got[&tps[0]].metadata.as_str()),
        (50, "x")
    );
}

#[test]
fn an_unreachable_broker_fails_in_bounded_time_naming_it() {
    let mut cfg = config(&["127.0.0.1:1"]);
    cfg.retry_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = Client::connect(cfg, Default::default())
        .err()
        .expect("nothing listens on port 1");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let msg = err.to_string();
    assert!(msg.contains("127.0.0.1:1") && !msg.contains('\n'), "{msg}");
}

#[test]
fn an_unknown_topic_is_a_clear_error_not_a_retry_loop() {
    let _broker = support::shared_broker();
    let mut client = Client::connect(config(&[BOOTSTRAP]), Default::default()).unwrap();
    let started = Instant::now();
    let err = client.partitions("no-such-topic-here").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, KafkaError::UnknownTopic { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "kafka topic \"no-such-topic-here\" does not exist"
    );
}

#[test]
fn an_offset_out_of_range_is_reported_not_hidden() {
    let _broker = support::shared_broker();
    let topic = support::unique("oor");
    support::create_topic(&topic, 1, &[]);
    support::produce(&topic, &support::gen_records(3, 10, 1, 0), "none");
    let mut client = Client::connect(config(&[BOOTSTRAP]), Default::default()).unwrap();
    let results = fetch_round(&mut client, &[(TopicPartition::new(&topic, 0), 1_000)]);
    let err = results[0].1.as_ref().unwrap_err();
    assert!(
        matches!(err, KafkaError::OffsetOutOfRange { offset: 1000, .. }),
        "{err}"
    );
}

/// What restore relies on when it goes on as the producer of a target's
/// last record: the broker writes a batch it already appended only once,
/// and refuses one cut differently, whatever producer session sends it.
#[test]
fn a_continuing_producer_never_writes_an_unseen_batch_twice() {
    use kafka_store::format::record::{Header, Record};
    use kafka_store::kafka::records::{Compression, Origin};
    use kafka_store::kafka::{BatchBuilder, Sealed};

    let _broker = support::shared_broker();
    let topic = support::unique("continue");
    support::create_topic(&topic, 1, &[]);
    let tp = TopicPartition::new(&topic, 0);
    let mut client = Client::connect(config(&[BOOTSTRAP]), Default::default()).unwrap();
    let values: Vec<Vec<u8>> = (0..6).map(|i| format!("v{i}").into_bytes()).collect();
    let batch = |from: usize, n: usize| {
        let mut b = BatchBuilder::default();
        for v in &values[from..from + n] {
            let r = Record {
                offset: 0,
                timestamp: 1_700_000_000_000,
                timestamp_type: TimestampType::Create,
                key: None,
                value: Some(v),
                headers: Vec::<Header>::new(),
            };
            b.add(&r, &[]);
        }
        b
    };
    let produce = |client: &mut Client, b: Sealed| client.produce(std::slice::from_ref(&b));
    let end = |client: &mut Client| {
        client
            .list_offsets(std::slice::from_ref(&tp), OffsetSpec::Latest)
            .unwrap()[&tp]
    };

    // The earlier run: three records acknowledged, then two more appended
    // whose answer it never saw.
    let mut earlier = client.init_producer().unwrap();
    produce(
        &mut client,
        earlier.seal(&tp, &mut batch(0, 3), Compression::None),
    )
    .unwrap();
    produce(
        &mut client,
        earlier.seal(&tp, &mut batch(3, 2), Compression::None),
    )
    .unwrap();
    assert_eq!(end(&mut client), 5);
    // The next run saw only the first three: the origin of offset 2.
    let data = client
        .fetch_one(
            &tp,
            Position {
                offset: 0,
                last_epoch: None,
            },
        )
        .unwrap();
    let mut origin: Option<Origin> = None;
    records::visit::<RecordsError>(
        &data.records,
        0,
        &mut TxnFilter::new(vec![]),
        &mut Vec::new(),
        |e| {
            if let Event::Record {
                record, origin: o, ..
            } = e
                && record.offset == 2
            {
                origin = Some(o);
            }
            Ok(())
        },
    )
    .unwrap();
    let origin = origin.unwrap();
    assert_eq!(origin.sequence, 2);

    // Sent again with the same records: recognised, written once.
    let mut next = client.init_producer().unwrap();
    assert!(next.continue_after(&tp, origin));
    produce(
        &mut client,
        next.seal(&tp, &mut batch(3, 2), Compression::None),
    )
    .unwrap();
    assert_eq!(end(&mut client), 5, "the unseen batch was written twice");
    // Cut differently: refused, nothing written.
    let mut other = client.init_producer().unwrap();
    assert!(other.continue_after(&tp, origin));
    let e = produce(
        &mut client,
        other.seal(&tp, &mut batch(3, 1), Compression::None),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("OUT_OF_ORDER_SEQUENCE_NUMBER"),
        "{e}"
    );
    assert_eq!(end(&mut client), 5);
    // And the run goes on after what the log holds.
    let mut last = client.init_producer().unwrap();
    let after = Origin {
        sequence: 4,
        ..origin
    };
    assert!(last.continue_after(&tp, after));
    produce(
        &mut client,
        last.seal(&tp, &mut batch(5, 1), Compression::None),
    )
    .unwrap();
    assert_eq!(end(&mut client), 6);
}
