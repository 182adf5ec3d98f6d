//! The Prometheus text exposition format 0.0.4: metric families (a name, a
//! HELP line, a TYPE line, samples with labels) encoded into the text a
//! scraper reads.
//!
//! Pure: no I/O, no clock. Never decides what is measured.

use std::fmt::Write as _;

/// A family's TYPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One sample: label pairs and a value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    /// A sample without labels.
    pub fn plain(value: f64) -> Sample {
        Sample {
            labels: Vec::new(),
            value,
        }
    }
}

/// A metric family: every sample shares the name, HELP and TYPE.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The full name, `kafka_store_…` (counters end in `_total`).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// The family with one unlabelled sample.
    pub fn single(name: &'static str, help: &'static str, kind: Kind, value: f64) -> Family {
        Family {
            samples: vec![Sample::plain(value)],
            ..Family::new(name, help, kind)
        }
    }
}

/// The exposition text of `families`, in the order given.
pub fn encode(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for s in &f.samples {
            out.push_str(f.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", value(s.value));
        }
    }
    out
}

/// HELP text: backslash and line feed escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: backslash, double quote and line feed escaped.
fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as Go's ParseFloat reads it: integers without a
/// fraction, `NaN`, `+Inf`, `-Inf`.
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_and_type_and_escaped_labels() {
        let mut lag = Family::new(
            "kafka_store_partition_lag_records",
            "records \\ not yet\narchived",
            Kind::Gauge,
        );
        lag.samples.push(Sample {
            labels: vec![("topic", "a\"b\\c\nd".into()), ("partition", "3".into())],
            value: 42.0,
        });
        let files = Family::single(
            "kafka_store_committed_files_total",
            "files",
            Kind::Counter,
            7.0,
        );
        assert_eq!(
            encode(&[lag, files]),
            "# HELP kafka_store_partition_lag_records records \\\\ not yet\\narchived\n\
             # TYPE kafka_store_partition_lag_records gauge\n\
             kafka_store_partition_lag_records{topic=\"a\\\"b\\\\c\\nd\",partition=\"3\"} 42\n\
             # HELP kafka_store_committed_files_total files\n\
             # TYPE kafka_store_committed_files_total counter\n\
             kafka_store_committed_files_total 7\n"
        );
    }

    #[test]
    fn values_are_written_as_prometheus_reads_them() {
        let table = [
            (0.0, "0"),
            (12.0, "12"),
            (-3.0, "-3"),
            (1.5, "1.5"),
            (1_700_000_000.25, "1700000000.25"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (1e20, "100000000000000000000"),
        ];
        for (v, want) in table {
            assert_eq!(value(v), want, "{v}");
        }
    }

    #[test]
    fn a_family_without_samples_still_says_what_it_is() {
        let f = Family::new("kafka_store_x", "x", Kind::Gauge);
        assert_eq!(
            encode(&[f]),
            "# HELP kafka_store_x x\n# TYPE kafka_store_x gauge\n"
        );
    }
}
