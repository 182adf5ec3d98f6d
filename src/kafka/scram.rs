//! The client side of SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC
//! 7677) on `ring`: the client-first message, the client-final message
//! with its proof, and the check of the server's signature, which proves
//! the server knows the password too.
//!
//! Pure: no I/O, no randomness (the caller brings the nonce). The password
//! never enters a message or an error; it is used as UTF-8 bytes without
//! SASLprep, as Kafka's own clients do.

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac, pbkdf2};

/// The hash of a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Hash::Sha256 => hmac::HMAC_SHA256,
            Hash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Hash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Hash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha512 => &digest::SHA512,
        }
    }
}

/// Why a SCRAM exchange failed on the client's side. No variant holds the
/// password or anything derived from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM server message: {0}")]
    Malformed(&'static str),
    #[error("the server's SCRAM nonce does not extend the client's")]
    Nonce,
    #[error("the server reports SCRAM error {0:?}")]
    Server(String),
    #[error(
        "the server's SCRAM signature is wrong (it does not hold this user's credentials: is it the broker meant?)"
    )]
    Signature,
}

/// The first step: what the client sent first, kept for the proof.
pub struct ClientFirst {
    hash: Hash,
    /// `n=user,r=nonce` (client-first-message-bare).
    bare: String,
    nonce: String,
}

/// What the server's final message must prove.
pub struct ServerCheck {
    key: hmac::Key,
    auth_message: String,
}

/// The GS2 header of a client without channel binding, and its base64.
const GS2_HEADER: &str = "n,,";
const GS2_HEADER_B64: &str = "biws";

impl ClientFirst {
    /// Starts an exchange for `user` with a printable `nonce` without commas.
    pub fn new(hash: Hash, user: &str, nonce: &str) -> Self {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        ClientFirst {
            hash,
            bare: format!("n={name},r={nonce}"),
            nonce: nonce.to_string(),
        }
    }

    /// The client-first message.
    pub fn message(&self) -> String {
        format!("{GS2_HEADER}{}", self.bare)
    }

    /// The client-final message answering `server_first`, and what the
    /// server's final message must then prove.
    pub fn answer(
        &self,
        password: &str,
        server_first: &str,
    ) -> Result<(String, ServerCheck), ScramError> {
        let first = parse_server_first(server_first)?;
        if !first.nonce.starts_with(&self.nonce) || first.nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let hash = self.hash;
        let mut salted = vec![0u8; hash.digest().output_len()];
        pbkdf2::derive(
            hash.pbkdf2(),
            first.iterations,
            &first.salt,
            password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(hash.hmac(), &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(hash.digest(), client_key.as_ref());
        let without_proof = format!("c={GS2_HEADER_B64},r={}", first.nonce);
        let auth_message = format!("{},{server_first},{without_proof}", self.bare);
        let signature = hmac::sign(
            &hmac::Key::new(hash.hmac(), stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        let check = ServerCheck {
            key: hmac::Key::new(hash.hmac(), server_key.as_ref()),
            auth_message,
        };
        Ok((
            format!("{without_proof},p={}", STANDARD.encode(proof)),
            check,
        ))
    }
}

impl ServerCheck {
    /// Checks the server-final message (`v=signature` or `e=error`).
    pub fn verify(&self, server_final: &str) -> Result<(), ScramError> {
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(ScramError::Server(error.to_string()));
        }
        let value = server_final
            .strip_prefix("v=")
            .map(|v| v.split(',').next().unwrap_or(v))
            .ok_or(ScramError::Malformed("the final message has no v="))?;
        let signature = STANDARD
            .decode(value)
            .map_err(|_| ScramError::Malformed("the signature is not base64"))?;
        hmac::verify(&self.key, self.auth_message.as_bytes(), &signature)
            .map_err(|_| ScramError::Signature)
    }
}

struct ServerFirst {
    nonce: String,
    salt: Vec<u8>,
    iterations: NonZeroU32,
}

fn parse_server_first(message: &str) -> Result<ServerFirst, ScramError> {
    if let Some(error) = message.strip_prefix("e=") {
        return Err(ScramError::Server(error.to_string()));
    }
    if message.starts_with("m=") {
        return Err(ScramError::Malformed(
            "a mandatory extension is not supported",
        ));
    }
    let mut parts = message.split(',');
    let mut next = |prefix: &str, what: &'static str| {
        parts
            .next()
            .and_then(|p| p.strip_prefix(prefix))
            .ok_or(ScramError::Malformed(what))
    };
    let nonce = next("r=", "the first message has no r= nonce")?.to_string();
    let salt = next("s=", "the first message has no s= salt")?;
    let iterations = next("i=", "the first message has no i= iteration count")?;
    let salt = STANDARD
        .decode(salt)
        .map_err(|_| ScramError::Malformed("the salt is not base64"))?;
    let iterations = iterations
        .parse::<NonZeroU32>()
        .map_err(|_| ScramError::Malformed("the iteration count is not a positive number"))?;
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3.
    #[test]
    fn the_rfc_7677_sha_256_exchange_is_reproduced() {
        let client = ClientFirst::new(Hash::Sha256, "user", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(client.message(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (client_final, check) = client.answer("pencil", server_first).unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        check
            .verify("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert_eq!(
            check.verify("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::Signature)
        );
        assert_eq!(
            check.verify("e=invalid-proof"),
            Err(ScramError::Server("invalid-proof".into()))
        );
    }

    /// A SCRAM server of the test's own, from the RFC's definitions: checks
    /// the client's proof and signs the exchange.
    fn server_round(hash: Hash, password: &str, wrong_password: &str) -> Result<(), ScramError> {
        let (salt, iterations) = (b"some salt".as_slice(), 4096);
        let client = ClientFirst::new(hash, "ar=chi,ver", "fyko+d2lbbFgONRv9qkxdawL");
        assert_eq!(
            client.message(),
            "n,,n=ar=3Dchi=2Cver,r=fyko+d2lbbFgONRv9qkxdawL"
        );
        let server_first = format!(
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s={},i={iterations}",
            STANDARD.encode(salt)
        );
        let (client_final, check) = client.answer(wrong_password, &server_first)?;

        let mut salted = vec![0u8; hash.digest().output_len()];
        pbkdf2::derive(
            hash.pbkdf2(),
            NonZeroU32::new(iterations).unwrap(),
            salt,
            password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(hash.hmac(), &salted);
        let stored_key = digest::digest(hash.digest(), hmac::sign(&salted, b"Client Key").as_ref());
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        let auth_message =
            format!("n=ar=3Dchi=2Cver,r=fyko+d2lbbFgONRv9qkxdawL,{server_first},{without_proof}");
        let signature = hmac::sign(
            &hmac::Key::new(hash.hmac(), stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let client_key: Vec<u8> = STANDARD
            .decode(proof)
            .unwrap()
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        if digest::digest(hash.digest(), &client_key).as_ref() != stored_key.as_ref() {
            return check.verify("e=invalid-proof");
        }
        let server_key = hmac::sign(&salted, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(hash.hmac(), server_key.as_ref()),
            auth_message.as_bytes(),
        );
        check.verify(&format!("v={}", STANDARD.encode(server_signature)))
    }

    #[test]
    fn a_sha_512_exchange_passes_a_server_that_knows_the_password() {
        for hash in [Hash::Sha256, Hash::Sha512] {
            assert_eq!(
                server_round(hash, "archiver-secret", "archiver-secret"),
                Ok(())
            );
            assert_eq!(
                server_round(hash, "archiver-secret", "archiver-secreT"),
                Err(ScramError::Server("invalid-proof".into())),
                "{hash:?}"
            );
        }
    }

    #[test]
    fn malformed_server_messages_are_refused() {
        let client = ClientFirst::new(Hash::Sha512, "u", "abc");
        let cases = [
            ("e=unknown-user", ScramError::Server("unknown-user".into())),
            (
                "m=ext,r=abcd,s=c2FsdA==,i=4096",
                ScramError::Malformed("a mandatory extension is not supported"),
            ),
            (
                "s=c2FsdA==,i=4096",
                ScramError::Malformed("the first message has no r= nonce"),
            ),
            (
                "r=abcd,i=4096",
                ScramError::Malformed("the first message has no s= salt"),
            ),
            (
                "r=abcd,s=c2FsdA==",
                ScramError::Malformed("the first message has no i= iteration count"),
            ),
            (
                "r=abcd,s=!!,i=4096",
                ScramError::Malformed("the salt is not base64"),
            ),
            (
                "r=abcd,s=c2FsdA==,i=0",
                ScramError::Malformed("the iteration count is not a positive number"),
            ),
            ("r=xbcd,s=c2FsdA==,i=4096", ScramError::Nonce),
            ("r=abc,s=c2FsdA==,i=4096", ScramError::Nonce),
        ];
        for (message, want) in cases {
            assert_eq!(client.answer("pw", message).err(), Some(want), "{message}");
        }
        let (_, check) = client.answer("pw", "r=abcd,s=c2FsdA==,i=1").unwrap();
        assert_eq!(
            check.verify("x=1"),
            Err(ScramError::Malformed("the final message has no v="))
        );
        assert_eq!(
            check.verify("v=***"),
            Err(ScramError::Malformed("the signature is not base64"))
        );
    }
}
