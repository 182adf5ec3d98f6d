//! The Kafka record as the archive sees it: shared by the Kafka decoder (which
//! borrows records out of fetched batches) and the Avro writer/reader.
//!
//! Owns only plain data types; never does I/O or decoding.

/// How the broker assigned a record's timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Set by the producer (`CreateTime`).
    Create,
    /// Set by the broker when it appended the batch (`LogAppendTime`).
    LogAppend,
}

/// One record header, borrowed from a fetched batch. Kafka header keys are
/// strings in every official client, but the wire carries bytes, and the
/// archive keeps them byte-exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// One Kafka record, borrowed from a fetched (and decompressed) batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: i64,
    /// Milliseconds since the epoch (for `LogAppend`, the batch's max timestamp).
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<Header<'a>>,
}

/// An owned record: what `cat`, `verify` and the tests read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Header keys as Kafka carried them (bytes; almost always UTF-8).
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Record<'_> {
    /// An owned copy.
    pub fn to_owned_record(&self) -> OwnedRecord {
        OwnedRecord {
            offset: self.offset,
            timestamp: self.timestamp,
            timestamp_type: self.timestamp_type,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self
                .headers
                .iter()
                .map(|h| (h.key.to_vec(), h.value.map(<[u8]>::to_vec)))
                .collect(),
        }
    }
}

impl OwnedRecord {
    /// A borrowed view, for what writes records (the Avro writer, a batch).
    pub fn as_record(&self) -> Record<'_> {
        Record {
            offset: self.offset,
            timestamp: self.timestamp,
            timestamp_type: self.timestamp_type,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: k,
                    value: v.as_deref(),
                })
                .collect(),
        }
    }
}
