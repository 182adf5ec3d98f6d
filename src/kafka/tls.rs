//! TLS to a broker with rustls (its `ring` provider, as ureq's): the client
//! configuration built once from PEM (the CA to trust, else the built-in
//! webpki roots; an optional client certificate for mutual TLS), the
//! handshake over a connected `TcpStream`, host name (or IP address)
//! checked, and the stream a connection reads and writes either way.
//!
//! Never retries and never reads files: the caller brings the PEM bytes
//! and owns the connection. Failures name what to fix in the config.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConnection, RootCertStore, StreamOwned};

use super::error::KafkaError;
use crate::cancel::Cancel;

/// Which PEM file of the config a setup problem is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemFile {
    Ca,
    Cert,
    Key,
}

/// Why the TLS settings cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsSetupError {
    #[error("holds no PEM certificate")]
    NoCertificate(PemFile),
    #[error("holds no PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted)")]
    NoKey,
    #[error("is not usable: {1}")]
    Refused(PemFile, String),
}

impl TlsSetupError {
    /// The file the problem is in.
    pub fn file(&self) -> PemFile {
        match self {
            TlsSetupError::NoCertificate(f) | TlsSetupError::Refused(f, _) => *f,
            TlsSetupError::NoKey => PemFile::Key,
        }
    }
}

/// The TLS settings every connection of a client shares.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<rustls::ClientConfig>,
    /// Trust anchors from the CA file (None: the built-in roots).
    ca_certificates: Option<usize>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_certificates", &self.ca_certificates)
            .field(
                "client_certificate",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish()
    }
}

impl TlsConfig {
    /// Trusts the certificates of `ca` (PEM; the built-in webpki roots
    /// when None) and presents `client` (certificate chain and key, PEM)
    /// when given.
    pub fn new(ca: Option<&[u8]>, client: Option<(&[u8], &[u8])>) -> Result<Self, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        let ca_certificates = match ca {
            None => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                None
            }
            Some(pem) => {
                for cert in certificates(pem, PemFile::Ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsSetupError::Refused(PemFile::Ca, e.to_string()))?;
                }
                Some(roots.len())
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Refused(PemFile::Ca, e.to_string()))?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(cert, PemFile::Cert)?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsSetupError::NoKey)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsSetupError::Refused(PemFile::Key, e.to_string()))?
            }
        };
        Ok(TlsConfig {
            config: Arc::new(config),
            ca_certificates,
        })
    }
}

fn certificates(pem: &[u8], file: PemFile) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Refused(file, e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate(file));
    }
    Ok(certs)
}

/// A connection's byte stream: plain TCP or TLS over it. Reads keep the
/// socket's read timeout, so a read returns `WouldBlock`/`TimedOut` after
/// one slice and may be called again (rustls keeps a partial record).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The host of `host:port` as TLS checks it: a DNS name or an IP address.
pub fn server_name(addr: &str) -> Option<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

/// Runs the TLS handshake with `broker` over `tcp` (whose read timeout is
/// one slice) within `limit`, watching `cancel`.
pub fn handshake(
    config: &TlsConfig,
    broker: &str,
    mut tcp: TcpStream,
    limit: Duration,
    cancel: &Cancel,
) -> Result<Stream, KafkaError> {
    let refused = |why: String| KafkaError::Tls {
        broker: broker.to_string(),
        why,
    };
    let name = server_name(broker)
        .ok_or_else(|| refused("its host is not a valid TLS server name or IP address".into()))?;
    let mut conn =
        ClientConnection::new(config.config.clone(), name).map_err(|e| refused(e.to_string()))?;
    let started = Instant::now();
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if cancel.is_set() {
                    return Err(KafkaError::Interrupted);
                }
                if started.elapsed() > limit {
                    return Err(KafkaError::Timeout {
                        broker: broker.to_string(),
                        phase: "tls handshake",
                        millis: limit.as_millis(),
                    });
                }
            }
            Err(e) => {
                if let Some(why) = explain(&e) {
                    return Err(refused(why));
                }
                let source = if e.kind() == ErrorKind::UnexpectedEof {
                    io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "closed during the TLS handshake (is this a TLS listener? check kafka.security_protocol)",
                    )
                } else {
                    e
                };
                return Err(KafkaError::Io {
                    broker: broker.to_string(),
                    source: Arc::new(source),
                });
            }
        }
    }
    Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
}

/// What a TLS failure inside an I/O error means for the user, naming the
/// key to fix; None for an error that is not TLS's.
pub fn explain(e: &io::Error) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    let hint = match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                " (set kafka.ssl_ca_file to the CA that signed the broker's certificate)"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                " (connect by a host name or IP address the broker's certificate lists, in kafka.brokers and the broker's advertised listeners)"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                " (the broker's certificate has expired: renew it)"
            }
            _ => "",
        },
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::HandshakeFailure
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown,
        ) => {
            " (the broker wants a client certificate it trusts: set kafka.ssl_cert_file and kafka.ssl_key_file to one signed by a CA the broker trusts)"
        }
        rustls::Error::InvalidMessage(_) => {
            " (is this a TLS listener? check kafka.security_protocol)"
        }
        _ => "",
    };
    Some(format!("{tls}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address_is_its_server_name() {
        let cases = [
            ("127.0.0.1:9192", Some("127.0.0.1")),
            ("localhost:9192", Some("localhost")),
            ("kafka-1.example.com:9094", Some("kafka-1.example.com")),
            ("[::1]:9192", Some("::1")),
            ("bad_name!:9192", None),
        ];
        for (addr, want) in cases {
            let got = server_name(addr).map(|n| match n {
                ServerName::DnsName(d) => d.as_ref().to_string(),
                ServerName::IpAddress(ip) => std::net::IpAddr::from(ip).to_string(),
                _ => unreachable!(),
            });
            assert_eq!(got.as_deref(), want, "{addr}");
        }
    }

    #[test]
    fn pem_problems_name_their_file() {
        let not_pem = b"just text".as_slice();
        let cases = [
            (
                Some(not_pem),
                None,
                TlsSetupError::NoCertificate(PemFile::Ca),
                PemFile::Ca,
            ),
            (
                None,
                Some((not_pem, not_pem)),
                TlsSetupError::NoCertificate(PemFile::Cert),
                PemFile::Cert,
            ),
        ];
        for (ca, client, want, file) in cases {
            let got = TlsConfig::new(ca, client).err().unwrap();
            assert_eq!(got, want);
            assert_eq!(got.file(), file);
        }
        assert_eq!(TlsSetupError::NoKey.file(), PemFile::Key);
        let built_in = TlsConfig::new(None, None).unwrap();
        assert_eq!(
            format!("{built_in:?}"),
            "TlsConfig { ca_certificates: None, client_certificate: false }"
        );
    }

    #[test]
    fn tls_errors_are_explained_and_others_are_not() {
        let wrap = |e: rustls::Error| io::Error::new(ErrorKind::InvalidData, e);
        let unknown = wrap(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(explain(&unknown).unwrap().contains("kafka.ssl_ca_file"));
        let name = wrap(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        assert!(explain(&name).unwrap().contains("kafka.brokers"));
        let alert = wrap(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        assert!(explain(&alert).unwrap().contains("kafka.ssl_cert_file"));
        assert_eq!(explain(&io::Error::from(ErrorKind::ConnectionReset)), None);
    }
}
