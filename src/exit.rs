//! The exit codes, documented in `--help`, and the one mapping from an
//! error to its code and its one-line message. Decides nothing else.

use std::io;

use crate::cli::UsageError;
use crate::config::ConfigError;
use crate::index::IndexError;

/// How the process ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Success (output cut short by a closed pipe counts as success).
    Ok = 0,
    /// A runtime failure: Kafka, the store, the spool or MySQL failed; the
    /// error line says which.
    Failure = 1,
    /// A usage or configuration error; the error line names the option or key.
    Usage = 2,
    /// A data problem: a partition stopped (records deleted before they
    /// were archived, a corrupt batch), `ls` found a gap, or `verify` found
    /// a problem.
    Data = 3,
    /// `locate` found nothing archived there.
    NotFound = 4,
}

impl Exit {
    /// The code for an error: the typed errors in its chain decide.
    pub fn of(e: &anyhow::Error) -> Exit {
        for cause in e.chain() {
            if cause.is::<UsageError>() || cause.is::<ConfigError>() {
                return Exit::Usage;
            }
            if let Some(index) = cause.downcast_ref::<IndexError>() {
                return if index.is_unavailable() {
                    Exit::Failure
                } else {
                    Exit::Usage
                };
            }
            if cause
                .downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            {
                return Exit::Ok;
            }
        }
        Exit::Failure
    }
}

/// The error and its causes, on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_code() {
        let table: Vec<(anyhow::Error, Exit)> = vec![
            (UsageError("x".into()).into(), Exit::Usage),
            (
                anyhow::Error::new(ConfigError::Invalid {
                    key: "k".into(),
                    why: "w".into(),
                })
                .context("loading"),
                Exit::Usage,
            ),
            (IndexError::Table("t".into()).into(), Exit::Usage),
            (
                IndexError::Unavailable {
                    what: "w".into(),
                    why: "y".into(),
                }
                .into(),
                Exit::Failure,
            ),
            (
                anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("cat"),
                Exit::Ok,
            ),
            (anyhow::anyhow!("store down"), Exit::Failure),
        ];
        for (e, want) in table {
            assert_eq!(Exit::of(&e), want, "{e:#}");
        }
    }

    #[test]
    fn an_error_is_shown_on_one_line_with_its_causes() {
        let e = anyhow::anyhow!("inner\nsecond line").context("outer");
        assert_eq!(one_line(&e), "outer: inner second line");
    }

    /// Errors that name their cause in their message do not hand it on as
    /// a source too: the cause is shown once.
    #[test]
    fn a_cause_is_shown_once() {
        let disk_full = || io::Error::other("disk full");
        let errors: Vec<anyhow::Error> = vec![
            crate::store::StoreError::Io {
                what: "cannot write w".into(),
                cause: disk_full(),
            }
            .into(),
            ConfigError::Unreadable {
                path: "w".into(),
                cause: disk_full(),
            }
            .into(),
            crate::format::avro::AvroError::Io(disk_full()).into(),
        ];
        for e in errors {
            assert_eq!(one_line(&e).matches("disk full").count(), 1, "{e:#}");
        }
    }
}
