//! SASL credentials and the client's side of one authentication, as the
//! tokens SaslAuthenticate carries: PLAIN (RFC 4616) and SCRAM-SHA-256/512
//! (`scram`). The connection sends them; this file only makes and checks
//! them.
//!
//! The password never reaches a log line, an error or a `Debug` output:
//! [`Password`] prints as `***`, and the errors name the step, not the
//! secret.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};

use super::scram::{ClientFirst, Hash, ScramError, ServerCheck};

/// A SASL mechanism kafka-store speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    /// Kafka's (and the config file's) name of the mechanism.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism of a name, as Kafka spells it.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Mechanism::Plain,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }
}

/// A secret that prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(secret: String) -> Self {
        Password(secret)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Who this client authenticates as, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslConfig {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Password,
}

/// What the client does after a server token.
pub enum Step {
    /// Send this token.
    Send(Vec<u8>),
    /// Authenticated.
    Done,
}

/// One authentication in progress.
pub enum Exchange<'a> {
    /// PLAIN: the one token is sent; the server's empty answer ends it.
    Plain,
    /// SCRAM: the client-first message is sent.
    ScramFirst(&'a SaslConfig, ClientFirst),
    /// SCRAM: the client-final message is sent.
    ScramFinal(ServerCheck),
}

impl<'a> Exchange<'a> {
    /// Starts authenticating as `sasl`: the exchange and its first token.
    pub fn start(sasl: &'a SaslConfig) -> (Self, Vec<u8>) {
        let hash = match sasl.mechanism {
            Mechanism::Plain => {
                let token = format!("\0{}\0{}", sasl.username, sasl.password.0);
                return (Exchange::Plain, token.into_bytes());
            }
            Mechanism::ScramSha256 => Hash::Sha256,
            Mechanism::ScramSha512 => Hash::Sha512,
        };
        let first = ClientFirst::new(hash, &sasl.username, &nonce());
        let token = first.message().into_bytes();
        (Exchange::ScramFirst(sasl, first), token)
    }

    /// Takes the server's token and says what comes next.
    pub fn next(&mut self, token: &[u8]) -> Result<Step, ScramError> {
        let text = std::str::from_utf8(token)
            .map_err(|_| ScramError::Malformed("the server's token is not UTF-8"))?;
        match self {
            Exchange::Plain => Ok(Step::Done),
            Exchange::ScramFirst(sasl, first) => {
                let (reply, check) = first.answer(&sasl.password.0, text)?;
                *self = Exchange::ScramFinal(check);
                Ok(Step::Send(reply.into_bytes()))
            }
            Exchange::ScramFinal(check) => check.verify(text).map(|()| Step::Done),
        }
    }
}

/// A fresh client nonce: 18 random bytes in base64 (printable, no comma).
fn nonce() -> String {
    let mut bytes = [0u8; 18];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source fails");
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mechanism: Mechanism) -> SaslConfig {
        SaslConfig {
            mechanism,
            username: "archiver".into(),
            password: Password::new("s3cret-pw".into()),
        }
    }

    #[test]
    fn mechanism_names_round_trip() {
        for m in [
            Mechanism::Plain,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
        ] {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("GSSAPI"), None);
        assert_eq!(Mechanism::from_name("plain"), None);
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let shown = format!("{:?}", config(Mechanism::Plain));
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn plain_sends_one_token() {
        let sasl = config(Mechanism::Plain);
        let (mut exchange, token) = Exchange::start(&sasl);
        assert_eq!(token, b"\0archiver\0s3cret-pw");
        assert!(matches!(exchange.next(b""), Ok(Step::Done)));
    }

    #[test]
    fn scram_starts_with_a_fresh_nonce() {
        let sasl = config(Mechanism::ScramSha512);
        let (_, a) = Exchange::start(&sasl);
        let (_, b) = Exchange::start(&sasl);
        let a = String::from_utf8(a).unwrap();
        assert!(a.starts_with("n,,n=archiver,r="), "{a}");
        assert_eq!(a.len(), "n,,n=archiver,r=".len() + 24);
        assert!(!a.contains("s3cret"));
        assert_ne!(a.into_bytes(), b);
    }
}
