//! Round trips through the writer and the reader, and the independent
//! reader (apache-avro) on every file the writer makes.

use std::io;

use apache_avro::types::Value;
use proptest::prelude::*;

use super::layout::{fmt_count, fmt_offset, fmt_timestamp};
use super::reader::BlockCursor;
use super::writer::encode_record;
use super::*;
use crate::format::record::{OwnedRecord, Record, TimestampType};

/// The topic id and last leader epoch the test files record.
const TOPIC_ID: uuid::Uuid = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
const EPOCH: Option<i32> = Some(7);

fn spec(codec: Codec, first_offset: i64, block_bytes: usize) -> FileSpec<'static> {
    FileSpec {
        topic: "events.v1",
        partition: 3,
        first_offset,
        topic_id: Some(TOPIC_ID),
        skipped: None,
        codec,
        block_bytes,
    }
}

/// A file in memory.
impl Spooled for Vec<u8> {
    fn write_at(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        let at = at as usize;
        assert!(at <= self.len(), "the writer writes within or at the end");
        let end = at + bytes.len();
        if end > self.len() {
            self.resize(end, 0);
        }
        self[at..end].copy_from_slice(bytes);
        Ok(())
    }
    fn read_at<'a>(&'a mut self, at: u64, len: usize, _: &'a mut Vec<u8>) -> io::Result<&'a [u8]> {
        Ok(&self[at as usize..at as usize + len])
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        Vec::truncate(self, len as usize);
        Ok(())
    }
    fn settle(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write(spec: &FileSpec, records: &[OwnedRecord], next_offset: i64) -> (Vec<u8>, Finished) {
    let mut bench = Workbench::new(spec.codec).unwrap();
    let mut out = Vec::new();
    let mut w = Writer::new(spec, &mut out).unwrap();
    let mut encoded = 0;
    for r in records {
        encoded += w.append(&r.as_record(), &mut bench, &mut out).unwrap() as u64;
    }
    assert_eq!(w.records(), records.len() as u64);
    assert_eq!(w.encoded_bytes(), encoded);
    let finished = w.finish(next_offset, EPOCH, &mut bench, &mut out).unwrap();
    assert_eq!(finished.file_bytes, out.len() as u64);
    assert_eq!(finished.crc32c, crc32c::crc32c(&out));
    (out, finished)
}

fn read_ours(bytes: &[u8]) -> Result<(FileHeader, Vec<OwnedRecord>), AvroError> {
    let mut r = Reader::new(bytes)?;
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok((r.header().clone(), out))
}

fn nullable(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Union(0, inner) if **inner == Value::Null => None,
        Value::Union(1, inner) => match &**inner {
            Value::Bytes(b) => Some(b.clone()),
            other => panic!("not bytes: {other:?}"),
        },
        other => panic!("not a [null, bytes] union: {other:?}"),
    }
}

fn from_apache(v: Value) -> OwnedRecord {
    let Value::Record(fields) = v else {
        panic!("not a record: {v:?}")
    };
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "offset",
            "timestamp",
            "timestamp_type",
            "key",
            "value",
            "headers"
        ]
    );
    let long = |v: &Value| match v {
        Value::Long(l) => *l,
        other => panic!("not a long: {other:?}"),
    };
    OwnedRecord {
        offset: long(&fields[0].1),
        timestamp: long(&fields[1].1),
        timestamp_type: match &fields[2].1 {
            Value::Enum(0, s) if s == "create" => TimestampType::Create,
            Value::Enum(1, s) if s == "log_append" => TimestampType::LogAppend,
            other => panic!("bad enum {other:?}"),
        },
        key: nullable(&fields[3].1),
        value: nullable(&fields[4].1),
        headers: match &fields[5].1 {
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::Record(f)
                        if f.len() == 3
                            && f[0].0 == "key"
                            && f[1].0 == "value"
                            && f[2].0 == "raw_key" =>
                    {
                        let Value::String(k) = &f[0].1 else {
                            panic!("header key not a string: {f:?}")
                        };
                        let raw = nullable(&f[2].1);
                        if let Some(raw) = &raw {
                            assert_eq!(k, &escape_key(raw), "the key is the raw key escaped");
                        }
                        (
                            raw.unwrap_or_else(|| k.as_bytes().to_vec()),
                            nullable(&f[1].1),
                        )
                    }
                    other => panic!("bad header {other:?}"),
                })
                .collect(),
            other => panic!("not an array: {other:?}"),
        },
    }
}

/// Reads with apache-avro: user metadata and records.
fn read_apache(bytes: &[u8]) -> (std::collections::HashMap<String, Vec<u8>>, Vec<OwnedRecord>) {
    let reader = apache_avro::Reader::new(bytes).expect("apache-avro reads the header");
    let schema = apache_avro::Schema::parse_str(SCHEMA).unwrap();
    assert_eq!(
        reader.writer_schema().canonical_form(),
        schema.canonical_form()
    );
    let meta = reader.user_metadata().clone();
    let records = reader
        .map(|v| from_apache(v.expect("apache-avro reads a record")))
        .collect();
    (meta, records)
}

fn meta_str(meta: &std::collections::HashMap<String, Vec<u8>>, key: &str) -> String {
    String::from_utf8(meta.get(key).unwrap_or_else(|| panic!("no {key}")).clone()).unwrap()
}

fn rec(offset: i64, timestamp: i64, value: &[u8]) -> OwnedRecord {
    OwnedRecord {
        offset,
        timestamp,
        timestamp_type: TimestampType::Create,
        key: Some(format!("k{offset}").into_bytes()),
        value: Some(value.to_vec()),
        headers: vec![("h".into(), Some(b"v".to_vec())), ("n".into(), None)],
    }
}

fn some_records(n: i64) -> Vec<OwnedRecord> {
    (0..n)
        .map(|i| {
            rec(
                100 + i,
                1_700_000_000_000 + (i * 7919) % 1000,
                format!(
                    "{{\"n\":{i},\"pad\":\"{}\"}}",
                    "x".repeat((i % 50) as usize)
                )
                .as_bytes(),
            )
        })
        .collect()
}

const CODECS: [Codec; 4] = [
    Codec::Null,
    Codec::Deflate { level: 6 },
    Codec::Snappy,
    Codec::Zstandard { level: 3 },
];

fn arb_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        Just(Some(Vec::new())),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Some),
        "\\PC{0,40}".prop_map(|s| Some(s.into_bytes())),
    ]
}

fn arb_long() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        -3i64..3,
        Just(i64::MIN),
        Just(i64::MAX),
        0i64..1 << 42,
    ]
}

fn arb_record() -> impl Strategy<Value = OwnedRecord> {
    (
        arb_long(),
        arb_long(),
        any::<bool>(),
        arb_bytes(),
        arb_bytes(),
        proptest::collection::vec((arb_key(), arb_bytes()), 0..4),
    )
        .prop_map(
            |(offset, timestamp, log_append, key, value, headers)| OwnedRecord {
                offset,
                timestamp,
                timestamp_type: if log_append {
                    TimestampType::LogAppend
                } else {
                    TimestampType::Create
                },
                key,
                value,
                headers,
            },
        )
}

/// Header keys: mostly text, sometimes bytes that are not UTF-8.
fn arb_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "\\PC{0,12}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

fn arb_codec() -> impl Strategy<Value = Codec> {
    prop_oneof![
        Just(Codec::Null),
        (0u32..=9).prop_map(|level| Codec::Deflate { level }),
        Just(Codec::Snappy),
        (-5i32..=9).prop_map(|level| Codec::Zstandard { level }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn round_trip(
        records in proptest::collection::vec(arb_record(), 0..30),
        codec in arb_codec(),
        block_bytes in 1usize..300,
        topic in "\\PC{0,20}",
        partition in any::<i32>(),
        first_offset in arb_long(),
        next_offset in arb_long(),
    ) {
        let spec = FileSpec {
            topic: &topic,
            partition,
            first_offset,
            topic_id: Some(TOPIC_ID),
            skipped: None,
            codec,
            block_bytes,
        };
        let (bytes, finished) = write(&spec, &records, next_offset);
        let want = Summary {
            next_offset,
            record_count: records.len() as u64,
            min_timestamp: records.iter().map(|r| r.timestamp).min(),
            max_timestamp: records.iter().map(|r| r.timestamp).max(),
            last_epoch: EPOCH,
        };
        prop_assert_eq!(finished.summary, want);

        let (meta, theirs) = read_apache(&bytes);
        prop_assert_eq!(&theirs, &records);
        prop_assert_eq!(meta_str(&meta, "kafka.topic"), topic.clone());
        prop_assert_eq!(meta_str(&meta, "kafka.partition"), partition.to_string());
        prop_assert_eq!(meta_str(&meta, "kafka.first_offset"), first_offset.to_string());
        prop_assert_eq!(meta_str(&meta, "kafka.next_offset"), format!("{next_offset:020}"));
        prop_assert_eq!(meta_str(&meta, "kafka.record_count"), format!("{:020}", records.len()));
        let (min, max) = (want.min_timestamp.unwrap_or(-1), want.max_timestamp.unwrap_or(-1));
        prop_assert_eq!(meta_str(&meta, "kafka.min_timestamp"), format!("{min:+020}"));
        prop_assert_eq!(meta_str(&meta, "kafka.max_timestamp"), format!("{max:+020}"));
        prop_assert_eq!(meta_str(&meta, "kafka_store.format_version"), "2");
        prop_assert_eq!(meta_str(&meta, "kafka.last_epoch"), "+0000000007");
        prop_assert_eq!(meta_str(&meta, "kafka.topic_id"), TOPIC_ID.hyphenated().to_string());

        let (header, ours) = read_ours(&bytes).unwrap();
        prop_assert_eq!(&ours, &records);
        prop_assert_eq!(&header.topic, &topic);
        prop_assert_eq!(header.partition, partition);
        prop_assert_eq!(header.first_offset, first_offset);
        prop_assert_eq!(header.codec.avro_name(), codec.avro_name());
        prop_assert_eq!(header.sync, sync_marker(&topic, partition, first_offset));
        prop_assert_eq!(header.summary, want);
        prop_assert_eq!(header.format_version, FORMAT_VERSION);
        prop_assert_eq!(header.topic_id, Some(TOPIC_ID));
        prop_assert_eq!(header.skipped, None);
        prop_assert_eq!(read_header(&mut &bytes[..]).unwrap(), header.clone());
        // The blocks start right after the header and each ends with the sync marker.
        if !records.is_empty() {
            prop_assert_eq!(&bytes[header.header_bytes as usize - 16..header.header_bytes as usize], &header.sync);
            prop_assert_eq!(&bytes[bytes.len() - 16..], &header.sync);
        } else {
            prop_assert_eq!(header.header_bytes, bytes.len() as u64);
        }

        // Determinism: the same input gives the same bytes.
        let (again, _) = write(&spec, &records, next_offset);
        prop_assert_eq!(again, bytes);
    }
}

#[test]
fn deterministic_and_sync_depends_on_first_offset() {
    let records = some_records(500);
    for codec in CODECS {
        let (a, _) = write(&spec(codec, 100, 4096), &records, 600);
        let (b, _) = write(&spec(codec, 100, 4096), &records, 600);
        assert_eq!(a, b, "{codec:?}");
        let (c, _) = write(&spec(codec, 101, 4096), &records, 600);
        assert_ne!(a[a.len() - 16..], c[c.len() - 16..], "{codec:?}");
        assert_eq!(
            Reader::new(&c[..]).unwrap().header().sync,
            sync_marker("events.v1", 3, 101)
        );
        // Several blocks were written, and apache-avro reads them all.
        assert!(
            a.windows(16)
                .filter(|w| *w == sync_marker("events.v1", 3, 100))
                .count()
                > 3
        );
        assert_eq!(read_apache(&a).1, records);
    }
    assert_ne!(
        sync_marker("events.v1", 3, 100),
        sync_marker("events.v1", 3, 101)
    );
    assert_ne!(
        sync_marker("events.v1", 3, 100),
        sync_marker("events.v1", 4, 100)
    );
    assert_ne!(
        sync_marker("events.v1", 3, 100),
        sync_marker("events.v2", 3, 100)
    );
}

/// The data of each block, as (record count, bytes).
fn blocks(bytes: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let mut cur = BlockCursor {
        buf: bytes,
        at: read_header(&mut &bytes[..]).unwrap().header_bytes as usize,
    };
    let mut out = Vec::new();
    while cur.at < bytes.len() {
        let count = cur.long().unwrap();
        out.push((count, cur.bytes().unwrap().to_vec()));
        cur.at += 16;
    }
    out
}

/// A block's bytes depend only on its records (compressors are reset, so
/// no history leaks from one block into the next).
#[test]
fn blocks_do_not_depend_on_earlier_blocks() {
    let records = some_records(40);
    for codec in CODECS {
        let (whole, _) = write(&spec(codec, 100, 600), &records, 140);
        let whole = blocks(&whole);
        assert!(whole.len() > 3, "{codec:?}");
        let first = whole[0].0 as usize;
        let (rest, _) = write(&spec(codec, 7, 600), &records[first..], 140);
        assert_eq!(blocks(&rest), whole[1..], "{codec:?}");
    }
}

#[test]
fn block_boundaries() {
    // Each record alone reaches block_bytes: one block per record.
    let records = some_records(5);
    let (bytes, _) = write(&spec(Codec::Null, 100, 1), &records, 105);
    let sync = sync_marker("events.v1", 3, 100);
    assert_eq!(bytes.windows(16).filter(|w| *w == sync).count(), 1 + 5);
    // Everything in one block.
    let (bytes, _) = write(&spec(Codec::Null, 100, 1 << 20), &records, 105);
    assert_eq!(bytes.windows(16).filter(|w| *w == sync).count(), 1 + 1);
}

#[test]
fn empty_file() {
    for codec in CODECS {
        let (bytes, finished) = write(&spec(codec, 42, 1024), &[], 42);
        assert_eq!(
            finished.summary,
            Summary {
                next_offset: 42,
                record_count: 0,
                min_timestamp: None,
                max_timestamp: None,
                last_epoch: EPOCH,
            }
        );
        let (meta, records) = read_apache(&bytes);
        assert!(records.is_empty());
        assert_eq!(
            meta_str(&meta, "kafka.min_timestamp"),
            "-0000000000000000001"
        );
        assert_eq!(meta_str(&meta, "kafka.next_offset"), "00000000000000000042");
        let (header, records) = read_ours(&bytes).unwrap();
        assert!(records.is_empty());
        assert_eq!(header.summary, finished.summary);
        assert_eq!(header.header_bytes, bytes.len() as u64);
    }
}

#[test]
fn header_keys_that_are_not_utf8_are_kept_byte_exact() {
    let mut records = some_records(3);
    records[1].headers = vec![
        (b"fine".to_vec(), None),
        (b"\xff\xfe".to_vec(), Some(b"x".to_vec())),
        (b"a\xc3(".to_vec(), Some(Vec::new())),
    ];
    for codec in CODECS {
        let (bytes, _) = write(&spec(codec, 100, 1), &records, 103);
        assert_eq!(read_ours(&bytes).unwrap().1, records);
        // apache-avro reads the escaped key and the raw one (from_apache
        // checks that one is the other escaped).
        assert_eq!(read_apache(&bytes).1, records);
        let find = |s: &[u8]| bytes.windows(s.len()).any(|w| w == s);
        assert!(
            codec != Codec::Null || find(b"\x10\\xff\\xfe"),
            "escaped key in the file"
        );
    }
}

#[test]
fn a_skipped_range_is_a_file_without_records_that_says_why() {
    let spec = FileSpec {
        skipped: Some(Skipped::StartLatest),
        ..spec(Codec::Deflate { level: 6 }, 0, 1024)
    };
    let mut bench = Workbench::new(spec.codec).unwrap();
    let mut bytes = Vec::new();
    let w = Writer::new(&spec, &mut bytes).unwrap();
    assert_eq!(w.records(), 0);
    w.finish(5000, None, &mut bench, &mut bytes).unwrap();
    let (meta, records) = read_apache(&bytes);
    assert!(records.is_empty());
    assert_eq!(meta_str(&meta, "kafka.skipped"), "start-latest");
    assert_eq!(meta_str(&meta, "kafka.last_epoch"), "-0000000001");
    let (header, _) = read_ours(&bytes).unwrap();
    assert_eq!(header.skipped, Some(Skipped::StartLatest));
    assert_eq!(header.summary.next_offset, 5000);
    assert_eq!(header.summary.last_epoch, None);
}

/// A file written by kafka-store before format 2 (no raw keys, topic id,
/// last epoch or skip reason): archives of that time keep working.
#[test]
fn format_1_files_are_still_read() {
    let bytes = include_bytes!("../../../tests/fixtures/format-1.avro");
    let (header, records) = read_ours(bytes).unwrap();
    assert_eq!(header.format_version, 1);
    assert_eq!(
        (header.topic_id, header.skipped, header.summary.last_epoch),
        (None, None, None)
    );
    assert_eq!(header.summary.record_count, records.len() as u64);
    assert!(!records.is_empty());
    assert_eq!(
        header.summary.next_offset,
        records.last().unwrap().offset + 1
    );
}

#[test]
fn summary_fields_are_fixed_width_and_patched() {
    let records = vec![rec(5, -20, b"a"), rec(6, 1_700_000_000_000, b"b")];
    let (bytes, _) = write(&spec(Codec::Deflate { level: 6 }, 5, 1024), &records, 7);
    let find = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(find("\x22kafka.next_offset\x2800000000000000000007"));
    assert!(find("\x24kafka.record_count\x2800000000000000000002"));
    assert!(find("\x26kafka.min_timestamp\x28-0000000000000000020"));
    assert!(find("\x26kafka.max_timestamp\x28+0000001700000000000"));
    // Extremes still fit in 20 characters.
    assert_eq!(fmt_offset(i64::MIN).len(), 20);
    assert_eq!(fmt_offset(i64::MAX).len(), 20);
    assert_eq!(fmt_count(u64::MAX).len(), 20);
    assert_eq!(fmt_timestamp(i64::MIN).len(), 20);
    assert_eq!(fmt_timestamp(i64::MAX).len(), 20);
}

/// One workbench serves many files of a thread: interleaving their records
/// (and blocks) gives the same bytes as writing each file alone.
#[test]
fn files_sharing_a_workbench_are_the_files_written_alone() {
    for codec in [
        Codec::Deflate { level: 6 },
        Codec::Snappy,
        Codec::Zstandard { level: 3 },
    ] {
        let specs = [spec(codec, 100, 300), spec(codec, 500, 700)];
        let records = [some_records(40), some_records(25)];
        let alone: Vec<Vec<u8>> = specs
            .iter()
            .zip(&records)
            .map(|(spec, records)| write(spec, records, 1000).0)
            .collect();
        let mut bench = Workbench::new(codec).unwrap();
        let mut outs = [Vec::new(), Vec::new()];
        let mut writers: Vec<Writer> = specs
            .iter()
            .zip(&mut outs)
            .map(|(spec, out)| Writer::new(spec, out).unwrap())
            .collect();
        for i in 0..40 {
            for (f, w) in writers.iter_mut().enumerate() {
                if let Some(r) = records[f].get(i) {
                    w.append(&r.as_record(), &mut bench, &mut outs[f]).unwrap();
                }
            }
        }
        for (f, w) in writers.into_iter().enumerate() {
            w.finish(1000, EPOCH, &mut bench, &mut outs[f]).unwrap();
        }
        assert_eq!(outs.as_slice(), alone.as_slice(), "{codec:?}");
    }
}

#[test]
fn bad_levels_are_refused() {
    for codec in [
        Codec::Deflate { level: 10 },
        Codec::Zstandard { level: 1000 },
    ] {
        let r = Workbench::new(codec);
        assert_eq!(r.err().unwrap().kind(), io::ErrorKind::InvalidInput);
    }
}

fn expect_corrupt(bytes: &[u8], needle: &str) -> u64 {
    match read_ours(bytes) {
        Err(AvroError::Corrupt { what, position }) => {
            assert!(what.contains(needle), "{what:?} lacks {needle:?}");
            let msg = AvroError::Corrupt { what, position }.to_string();
            assert!(msg.contains(&position.to_string()), "{msg}");
            position
        }
        other => panic!("expected Corrupt({needle}), got {other:?}"),
    }
}

#[test]
fn reader_rejects_bad_magic_and_foreign_schema() {
    let (bytes, _) = write(&spec(Codec::Null, 100, 64), &some_records(3), 103);
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(
        read_ours(&bad),
        Err(AvroError::NotArchiveFile { .. })
    ));
    assert!(matches!(
        read_ours(&[]),
        Err(AvroError::NotArchiveFile { .. })
    ));
    assert!(matches!(
        read_ours(b"Obj"),
        Err(AvroError::NotArchiveFile { .. })
    ));

    // Same length, other record name.
    let at = bytes.windows(11).position(|w| w == b"KafkaRecord").unwrap();
    let mut bad = bytes.clone();
    bad[at + 10] = b'X';
    let err = read_ours(&bad).unwrap_err();
    assert!(matches!(err, AvroError::NotArchiveFile { .. }), "{err:?}");
    assert!(err.to_string().contains("schema"), "{err}");

    // A valid Avro file written by someone else.
    let schema = apache_avro::Schema::parse_str(
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#,
    )
    .unwrap();
    let mut w = apache_avro::Writer::new(&schema, Vec::new()).unwrap();
    w.append_value(Value::Record(vec![("a".into(), Value::Long(1))]))
        .unwrap();
    let foreign = w.into_inner().unwrap();
    assert!(matches!(
        read_ours(&foreign),
        Err(AvroError::NotArchiveFile { .. })
    ));
    assert!(matches!(
        read_header(&mut &foreign[..]),
        Err(AvroError::NotArchiveFile { .. })
    ));
}

#[test]
fn reader_rejects_corrupt_sync_markers() {
    for codec in CODECS {
        let (bytes, _) = write(&spec(codec, 100, 256), &some_records(20), 120);
        let header_bytes = read_header(&mut &bytes[..]).unwrap().header_bytes as usize;
        // The last block's marker.
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 3] ^= 0x40;
        assert_eq!(expect_corrupt(&bad, "sync marker"), n as u64 - 16);
        // The header's marker no longer matches its derivation.
        let mut bad = bytes.clone();
        bad[header_bytes - 1] ^= 1;
        assert_eq!(
            expect_corrupt(&bad, "sync marker"),
            header_bytes as u64 - 16
        );
    }
}

#[test]
fn reader_rejects_truncation() {
    for codec in CODECS {
        let (bytes, _) = write(&spec(codec, 100, 256), &some_records(20), 120);
        let header_bytes = read_header(&mut &bytes[..]).unwrap().header_bytes as usize;
        for cut in [
            bytes.len() - 1,
            bytes.len() - 16,
            bytes.len() - 20,
            header_bytes + 1,
            header_bytes + 3,
        ] {
            expect_corrupt(&bytes[..cut], "truncated");
        }
        // Cut exactly at a block boundary: the header summary disagrees.
        expect_corrupt(&bytes[..header_bytes], "header says 20");
        // Cut inside the header.
        assert!(read_ours(&bytes[..header_bytes - 1]).is_err());
        assert!(read_ours(&bytes[..100]).is_err());
    }
}

#[test]
fn reader_rejects_corrupt_block_data() {
    let records = some_records(20);
    // Snappy: a flipped CRC byte.
    let (mut bytes, _) = write(&spec(Codec::Snappy, 100, 1 << 20), &records, 120);
    let n = bytes.len();
    bytes[n - 17] ^= 1;
    expect_corrupt(&bytes, "crc32");
    // Deflate and zstandard: garbage inside the compressed data.
    for codec in [Codec::Deflate { level: 6 }, Codec::Zstandard { level: 3 }] {
        let (bytes, _) = write(&spec(codec, 100, 1 << 20), &records, 120);
        let header_bytes = read_header(&mut &bytes[..]).unwrap().header_bytes as usize;
        let mut bad = bytes.clone();
        for b in &mut bad[header_bytes + 4..header_bytes + 40] {
            *b = 0xff;
        }
        assert!(
            matches!(read_ours(&bad), Err(AvroError::Corrupt { .. })),
            "{codec:?}"
        );
    }
    // Null: a record count larger than the block holds.
    let (bytes, _) = write(&spec(Codec::Null, 100, 1 << 20), &records, 120);
    let header_bytes = read_header(&mut &bytes[..]).unwrap().header_bytes as usize;
    let mut bad = bytes.clone();
    assert_eq!(bad[header_bytes], 40); // zigzag(20)
    bad[header_bytes] = 42;
    expect_corrupt(&bad, "record 20 of the block");
    bad[header_bytes] = 38;
    expect_corrupt(&bad, "bytes after the block's 19 records");
}

#[test]
fn reader_checks_the_summary() {
    let (bytes, _) = write(
        &spec(Codec::Deflate { level: 1 }, 100, 256),
        &some_records(3),
        103,
    );
    let at = bytes
        .windows(20)
        .position(|w| w == b"00000000000000000003")
        .unwrap();
    let mut bad = bytes.clone();
    bad[at + 19] = b'4';
    expect_corrupt(&bad, "header says 4");
    bad[at + 19] = b'x';
    expect_corrupt(&bad, "bad kafka.record_count");
}

#[test]
fn unfinished_file_is_reported() {
    let spec = spec(Codec::Null, 100, 1);
    let mut bench = Workbench::new(spec.codec).unwrap();
    let mut bytes = Vec::new();
    let mut w = Writer::new(&spec, &mut bytes).unwrap();
    for r in &some_records(3) {
        w.append(&r.as_record(), &mut bench, &mut bytes).unwrap();
    }
    drop(w);
    let err = read_ours(&bytes).unwrap_err();
    assert!(matches!(err, AvroError::Unfinished { .. }), "{err:?}");
    assert!(matches!(
        read_header(&mut &bytes[..]),
        Err(AvroError::Unfinished { .. })
    ));
}

#[test]
fn io_errors_poison_the_writer() {
    /// Accepts the header, then fails.
    struct Failing(Vec<u8>);
    impl Spooled for Failing {
        fn write_at(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
            if at > 0 {
                return Err(io::Error::other("disk full"));
            }
            self.0.write_at(at, bytes)
        }
        fn read_at<'a>(
            &'a mut self,
            at: u64,
            len: usize,
            buf: &'a mut Vec<u8>,
        ) -> io::Result<&'a [u8]> {
            self.0.read_at(at, len, buf)
        }
        fn truncate(&mut self, len: u64) -> io::Result<()> {
            Spooled::truncate(&mut self.0, len)
        }
        fn settle(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let spec = spec(Codec::Null, 100, 1);
    let mut bench = Workbench::new(spec.codec).unwrap();
    let mut out = Failing(Vec::new());
    let mut w = Writer::new(&spec, &mut out).unwrap();
    let records = some_records(2);
    assert!(matches!(
        w.append(&records[0].as_record(), &mut bench, &mut out),
        Err(AvroError::Io(_))
    ));
    assert!(matches!(
        w.append(&records[1].as_record(), &mut bench, &mut out),
        Err(AvroError::Poisoned)
    ));
    assert!(matches!(
        w.finish(102, EPOCH, &mut bench, &mut out),
        Err(AvroError::Poisoned)
    ));
}

/// ~1 KiB JSON-like values, deterministic: an event log line with a
/// fixed set of keys, random ids and numbers, and strings drawn from
/// small sets (user agents, paths, event names).
pub(super) fn json_values(n: usize) -> Vec<Vec<u8>> {
    const EVENTS: [&str; 8] = [
        "page_view",
        "click",
        "add_to_cart",
        "checkout",
        "login",
        "logout",
        "search",
        "purchase",
    ];
    const AGENTS: [&str; 4] = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    ];
    const PATHS: [&str; 6] = [
        "/products/",
        "/cart",
        "/search?q=",
        "/account/orders/",
        "/checkout/step/",
        "/",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..n)
        .map(|i| {
            let mut s = format!(
                "{{\"event_id\":\"{:016x}{:016x}\",\"seq\":{i},\"event\":\"{}\",\"ts\":\"2024-03-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\"user\":{{\"id\":{},\"session\":\"{:012x}\",\"country\":\"{}\"}},\"http\":{{\"method\":\"GET\",\"status\":{},\"path\":\"{}{}\",\"user_agent\":\"{}\",\"latency_ms\":{}}},\"items\":[",
                next(),
                next(),
                EVENTS[(next() % 8) as usize],
                1 + next() % 28,
                next() % 24,
                next() % 60,
                next() % 60,
                next() % 1000,
                next() % 1_000_000,
                next() & 0xffff_ffff_ffff,
                ["US", "DE", "FR", "BR", "JP", "IN"][(next() % 6) as usize],
                [200, 200, 200, 304, 404, 500][(next() % 6) as usize],
                PATHS[(next() % 6) as usize],
                next() % 100_000,
                AGENTS[(next() % 4) as usize],
                next() % 2000,
            );
            while s.len() < 1000 {
                s.push_str(&format!(
                    "{{\"sku\":\"SKU-{:08}\",\"qty\":{},\"price\":{}.{:02}}},",
                    next() % 100_000_000,
                    1 + next() % 5,
                    next() % 500,
                    next() % 100
                ));
            }
            s.push_str("{}]}");
            s.into_bytes()
        })
        .collect()
}

/// `cargo test --release -- --ignored --nocapture throughput`
#[test]
#[ignore = "a micro-benchmark of the encoder: run with --release --ignored --nocapture"]
fn throughput() {
    let values = json_values(4096);
    let records: Vec<OwnedRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| OwnedRecord {
            offset: i as i64,
            timestamp: 1_700_000_000_000 + i as i64,
            timestamp_type: TimestampType::Create,
            key: Some(format!("user_{}", i % 977).into_bytes()),
            value: Some(v.clone()),
            headers: vec![("trace".into(), Some(b"abc123".to_vec()))],
        })
        .collect();
    let borrowed: Vec<Record<'_>> = records.iter().map(OwnedRecord::as_record).collect();
    for codec in [
        Codec::Null,
        Codec::Deflate { level: 6 },
        Codec::Deflate { level: 1 },
        Codec::Snappy,
        Codec::Zstandard { level: 3 },
        Codec::Zstandard { level: 1 },
    ] {
        let mut best = 0.0f64;
        let mut ratio = 0.0;
        for _ in 0..3 {
            let start = std::time::Instant::now();
            let mut bench = Workbench::new(codec).unwrap();
            let mut out = Vec::new();
            let mut w = Writer::new(&spec(codec, 0, 1 << 20), &mut out).unwrap();
            for _ in 0..25 {
                for r in &borrowed {
                    w.append(r, &mut bench, &mut out).unwrap();
                }
            }
            let encoded = w.encoded_bytes();
            let f = w.finish(0, EPOCH, &mut bench, &mut out).unwrap();
            let secs = start.elapsed().as_secs_f64();
            best = best.max(encoded as f64 / secs / 1e6);
            ratio = encoded as f64 / f.file_bytes as f64;
        }
        println!("{codec:?}: {best:.0} MB/s of encoded input, ratio {ratio:.2}");
    }
    // Baseline: the compressor alone, one call per 1 MiB of the same bytes.
    let mut all = Vec::new();
    for r in &borrowed {
        encode_record(&mut all, r);
    }
    let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
    let mut out = Vec::with_capacity(2 << 20);
    let start = std::time::Instant::now();
    for _ in 0..25 {
        for chunk in all.chunks(1 << 20) {
            c.reset();
            out.clear();
            let status = c
                .compress_vec(chunk, &mut out, flate2::FlushCompress::Finish)
                .unwrap();
            assert_eq!(status, flate2::Status::StreamEnd);
        }
    }
    let mb = 25.0 * all.len() as f64 / 1e6;
    println!(
        "baseline zlib-rs level 6, one shot per MiB: {:.0} MB/s",
        mb / start.elapsed().as_secs_f64()
    );
    let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(6).unwrap());
    let start = std::time::Instant::now();
    for _ in 0..25 {
        for chunk in all.chunks(1 << 20) {
            out.resize(c.deflate_compress_bound(chunk.len()), 0);
            c.deflate_compress(chunk, &mut out).unwrap();
        }
    }
    println!(
        "baseline libdeflate level 6, one shot per MiB: {:.0} MB/s",
        mb / start.elapsed().as_secs_f64()
    );
}
