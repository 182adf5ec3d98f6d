//! Building record batches (message format v2) for Produce: records are
//! encoded as they are added, and `seal` compresses them whole and frames
//! them with the producer's id, epoch and sequence and the CRC32C.
//!
//! Pure encoding over byte buffers: no I/O, no retries, no decision about
//! what to produce. Its output is read back by `records` in the unit tests.

use std::io::Write;

use crate::format::record::{Header, Record};

use super::records::{BATCH_HEADER_LEN, Compression};

/// Who writes a batch (idempotent produce): the broker keeps the last
/// sequence numbers of each producer per partition and drops a batch it
/// has already appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// A batch under construction: its records encoded, uncompressed.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    body: Vec<u8>,
    scratch: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

fn varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

fn bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => varint(buf, -1),
        Some(b) => {
            varint(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}

impl BatchBuilder {
    /// Records added so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded (uncompressed) size of the records so far.
    pub fn encoded_bytes(&self) -> usize {
        self.body.len()
    }

    /// Adds a record with CreateTime `record.timestamp` (its offset is
    /// not kept: the broker assigns offsets), followed by `extra` headers.
    pub fn add(&mut self, record: &Record, extra: &[Header]) {
        if self.count == 0 {
            self.base_timestamp = record.timestamp;
            self.max_timestamp = record.timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        let r = &mut self.scratch;
        r.clear();
        r.push(0); // record attributes: unused
        varint(r, record.timestamp.wrapping_sub(self.base_timestamp));
        varint(r, i64::from(self.count));
        bytes(r, record.key);
        bytes(r, record.value);
        varint(r, (record.headers.len() + extra.len()) as i64);
        for h in record.headers.iter().chain(extra) {
            bytes(r, Some(h.key));
            bytes(r, h.value);
        }
        varint(&mut self.body, r.len() as i64);
        self.body.extend_from_slice(r);
        self.count += 1;
    }

    /// The framed batch, its records compressed with `compression`; the
    /// builder is empty again afterwards.
    pub fn seal(&mut self, who: Identity, compression: Compression) -> Vec<u8> {
        let records = compress(&self.body, compression);
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + records.len());
        out.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker's
        let length = (BATCH_HEADER_LEN - 12 + records.len()) as i32;
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        out.push(2); // magic
        out.extend_from_slice(&[0; 4]); // crc, below
        let crc_start = out.len();
        let attributes: i16 = match compression {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        };
        out.extend_from_slice(&attributes.to_be_bytes());
        out.extend_from_slice(&(self.count - 1).to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&who.producer_id.to_be_bytes());
        out.extend_from_slice(&who.producer_epoch.to_be_bytes());
        out.extend_from_slice(&who.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&records);
        let crc = crc32c::crc32c(&out[crc_start..]);
        out[crc_start - 4..crc_start].copy_from_slice(&crc.to_be_bytes());
        self.body.clear();
        self.count = 0;
        out
    }
}

/// Compresses a batch's records the way Kafka's readers expect: gzip
/// streams, raw snappy (as librdkafka sends it), LZ4 frames with
/// independent blocks, one zstd frame.
fn compress(body: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => body.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(body).expect("writing to a Vec cannot fail");
            e.finish().expect("writing to a Vec cannot fail")
        }
        Compression::Snappy => snap::raw::Encoder::new()
            .compress_vec(body)
            .expect("a batch is far below snappy's input limit"),
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            e.write_all(body).expect("writing to a Vec cannot fail");
            e.finish().expect("writing to a Vec cannot fail")
        }
        Compression::Zstd => zstd::bulk::compress(body, 3).expect("zstd compresses any input"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::TimestampType;
    use crate::kafka::records::batches;

    fn record<'a>(ts: i64, key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> Record<'a> {
        Record {
            offset: 99,
            timestamp: ts,
            timestamp_type: TimestampType::LogAppend,
            key,
            value,
            headers: vec![Header {
                key: b"h",
                value: None,
            }],
        }
    }

    #[test]
    fn sealed_batches_decode_with_every_codec() {
        let who = Identity {
            producer_id: 7,
            producer_epoch: 2,
            base_sequence: 40,
        };
        let big = vec![b'x'; 100_000];
        let extra = [Header {
            key: b"src",
            value: Some(b"t/0/5"),
        }];
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = BatchBuilder::default();
            // Timestamps need not rise within a batch.
            b.add(&record(1_000, Some(b"k"), Some(&big)), &extra);
            b.add(&record(900, None, None), &[]);
            b.add(&record(-1, Some(b""), Some(b"v")), &extra);
            assert_eq!(b.len(), 3);
            let sealed = b.seal(who, codec);
            assert!(b.is_empty());
            let mut all = batches(&sealed);
            let batch = all.next().unwrap().unwrap();
            assert!(all.next().is_none());
            let h = &batch.header;
            assert_eq!(h.compression().unwrap(), codec);
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (7, 2, 40)
            );
            assert_eq!((h.record_count, h.last_offset_delta), (3, 2));
            assert_eq!((h.base_timestamp, h.max_timestamp), (1_000, 1_000));
            assert_eq!(h.timestamp_type(), TimestampType::Create);
            // Each record's sequence number: the batch's base plus its delta.
            let origin = h.origin(2);
            assert_eq!((origin.producer_id, origin.sequence), (7, 42));
            let mut scratch = Vec::new();
            let got: Vec<_> = batch
                .records(&mut scratch)
                .unwrap()
                .map(|r| r.unwrap())
                .map(|r| {
                    let headers: Vec<_> = r.headers.iter().map(|h| (h.key, h.value)).collect();
                    (
                        r.offset,
                        r.timestamp,
                        r.key,
                        r.value.map(<[u8]>::len),
                        headers,
                    )
                })
                .collect();
            let h = |v: Option<&'static [u8]>| vec![(&b"h"[..], None), (&b"src"[..], v)];
            assert_eq!(
                got,
                vec![
                    (0, 1_000, Some(&b"k"[..]), Some(100_000), h(Some(b"t/0/5"))),
                    (1, 900, None, None, vec![(&b"h"[..], None)]),
                    (2, -1, Some(&b""[..]), Some(1), h(Some(b"t/0/5"))),
                ],
                "{codec:?}"
            );
        }
    }
}
