//! `kafka-store cat`: one archive file's records as JSON lines, for people
//! and scripts. Bytes are a JSON string when they are valid UTF-8, else an
//! object `{"base64": "..."}`, so the two can never be confused.
//!
//! Reads one file; checks it fully (the reader verifies sync markers, block
//! sizes and the header summary).

use std::io::{Read, Write};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::avro::Reader;
use crate::record::{OwnedRecord, TimestampType};

fn bytes(b: &Option<Vec<u8>>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        },
    }
}

/// The JSON object of one record.
pub fn record_json(r: &OwnedRecord) -> Value {
    json!({
        "offset": r.offset,
        "timestamp": r.timestamp,
        "timestamp_type": match r.timestamp_type {
            TimestampType::Create => "create",
            TimestampType::LogAppend => "log_append",
        },
        "key": bytes(&r.key),
        "value": bytes(&r.value),
        "headers": r.headers.iter().map(|(k, v)| json!({ "key": k, "value": bytes(v) })).collect::<Vec<_>>(),
    })
}

/// Prints every record of the Avro file read from `input`; `what` names it in errors.
pub fn cat(input: impl Read, what: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut reader = Reader::new(input).with_context(|| format!("cannot read {what}"))?;
    while let Some(record) = reader
        .next_record()
        .with_context(|| format!("cannot read {what}"))?
    {
        serde_json::to_writer(&mut *out, &record_json(&record)).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_a_string_and_other_bytes_are_base64() {
        let r = OwnedRecord {
            offset: 7,
            timestamp: -1,
            timestamp_type: TimestampType::LogAppend,
            key: None,
            value: Some(vec![0xff, 0x00]),
            headers: vec![("h".into(), Some(b"v".to_vec())), ("n".into(), None)],
        };
        assert_eq!(
            record_json(&r).to_string(),
            r#"{"headers":[{"key":"h","value":"v"},{"key":"n","value":null}],"key":null,"offset":7,"timestamp":-1,"timestamp_type":"log_append","value":{"base64":"/wA="}}"#
        );
    }
}
