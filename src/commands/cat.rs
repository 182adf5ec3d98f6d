//! `kafka-store cat`: one archive file's records as JSON lines, for people
//! and scripts. Bytes are a JSON string when they are valid UTF-8, else an
//! object `{"base64": "..."}`, so the two can never be confused.
//!
//! Reads one file; checks it fully (the reader verifies sync markers, block
//! sizes and the header summary).

use std::io::{Read, Write};

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};

use super::source::open_store;
use crate::cli::{CatArgs, usage};
use crate::exit::Exit;
use crate::format::avro::Reader;
use crate::format::names::ObjectKey;
use crate::format::record::{OwnedRecord, TimestampType};

/// Prints one file's records: a store's object, or a local file.
pub fn run(args: &CatArgs) -> anyhow::Result<Exit> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let object = &args.object;
    match &args.source {
        None => {
            let path = object.strip_prefix("file://").unwrap_or(object);
            let file = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
            cat(std::io::BufReader::new(file), path, &mut out)?;
        }
        Some(source) => {
            let store = open_store(source)?;
            let name = object
                .strip_prefix(&store.url())
                .unwrap_or(object)
                .trim_start_matches('/');
            let key = ObjectKey::parse(name).ok_or_else(|| {
                usage(format!(
                    "cat: {object:?} is not an archive object name (topic/000000/00000000000000000000.avro)"
                ))
            })?;
            let url = store.object_url(&key);
            cat(store.open(&key)?, &url, &mut out)?;
        }
    }
    out.flush()?;
    Ok(Exit::Ok)
}

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
fn record_json(r: &OwnedRecord) -> Value {
    json!({
        "offset": r.offset,
        "timestamp": r.timestamp,
        "timestamp_type": match r.timestamp_type {
            TimestampType::Create => "create",
            TimestampType::LogAppend => "log_append",
        },
        "key": bytes(&r.key),
        "value": bytes(&r.value),
        "headers": r.headers.iter().map(|(k, v)| json!({ "key": bytes(&Some(k.clone())), "value": bytes(v) })).collect::<Vec<_>>(),
    })
}

/// Prints every record of the Avro file read from `input`; `what` names it in errors.
fn cat(input: impl Read, what: &str, out: &mut dyn Write) -> anyhow::Result<()> {
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
            headers: vec![
                (b"h".to_vec(), Some(b"v".to_vec())),
                (b"n".to_vec(), None),
                (b"\xfe".to_vec(), None),
            ],
        };
        assert_eq!(
            record_json(&r).to_string(),
            r#"{"headers":[{"key":"h","value":"v"},{"key":"n","value":null},{"key":{"base64":"/g=="},"value":null}],"key":null,"offset":7,"timestamp":-1,"timestamp_type":"log_append","value":{"base64":"/wA="}}"#
        );
    }
}
