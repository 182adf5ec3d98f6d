//! Fixtures for the tests of `auth`: an RSA key made once per test run with
//! the `openssl` CLI, key files holding it, and a tiny HTTP/1.1 server on
//! 127.0.0.1 standing in for token endpoints and the metadata server.
//!
//! Test-only (declared under `#[cfg(test)]`): never part of the build, and
//! never reaches a real Google endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use super::Credentials;

pub(super) const EMAIL: &str = "archiver@test-project.iam.gserviceaccount.com";
pub(super) const KID: &str = "0123456789abcdef0123456789abcdef01234567";

// ---- keys, made with the openssl CLI once per test run ----

pub(super) struct TestKey {
    /// PKCS#8 PEM, as in Google's key files.
    pub(super) pem: String,
    /// The same key as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`).
    pub(super) pkcs1_pem: String,
    /// RSAPublicKey DER, for ring's verifier.
    pub(super) public_der: Vec<u8>,
}

pub(super) fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI is needed to make test keys");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(super) fn test_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let (key, rsa, public) = (path("key.pem"), path("rsa.pem"), path("pub.der"));
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &key,
        ]);
        openssl(&["rsa", "-in", &key, "-traditional", "-out", &rsa]);
        openssl(&[
            "rsa",
            "-in",
            &key,
            "-RSAPublicKey_out",
            "-outform",
            "DER",
            "-out",
            &public,
        ]);
        TestKey {
            pem: std::fs::read_to_string(&key).unwrap(),
            pkcs1_pem: std::fs::read_to_string(&rsa).unwrap(),
            public_der: std::fs::read(&public).unwrap(),
        }
    })
}

pub(super) fn key_json(token_uri: &str, pem: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": KID,
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "123456789",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
}

pub(super) fn write_file(dir: &tempfile::TempDir, contents: &str) -> PathBuf {
    let path = dir.path().join("key.json");
    std::fs::write(&path, contents).unwrap();
    path
}

/// A key file whose token_uri is `token_uri`, loaded through from_config.
pub(super) fn service_account(dir: &tempfile::TempDir, token_uri: &str) -> Credentials {
    let path = write_file(dir, &key_json(token_uri, &test_key().pem).to_string());
    Credentials::from_config(path.to_str().unwrap()).unwrap()
}

/// Every line of the key's PEM body: none may appear in a message.
pub(super) fn assert_no_key_material(message: &str) {
    for line in test_key().pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!message.contains(line), "key material in {message}");
    }
}

// ---- a tiny HTTP/1.1 server ----

#[derive(Clone, Debug)]
pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl Request {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) struct Server {
    pub(super) url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub(super) fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub(super) fn last(&self) -> Request {
        self.requests.lock().unwrap().last().unwrap().clone()
    }
}

/// Serves `handle(request, number)` (numbered from 1) on 127.0.0.1, one
/// request per connection, until the test process ends.
pub(super) fn serve<F>(handle: F) -> Server
where
    F: Fn(&Request, usize) -> (u16, String) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Some(request) = read_request(&stream) else {
                continue;
            };
            let number = {
                let mut seen = seen.lock().unwrap();
                seen.push(request.clone());
                seen.len()
            };
            let (status, body) = handle(&request, number);
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Server { url, requests }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

pub(super) fn token_json(token: &str, expires_in: u64) -> String {
    format!(r#"{{"access_token":"{token}","expires_in":{expires_in},"token_type":"Bearer"}}"#)
}

pub(super) fn error_json(error: &str, description: &str) -> String {
    serde_json::json!({"error": error, "error_description": description}).to_string()
}

/// A plain agent; no proxy from the environment between us and 127.0.0.1.
pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .build()
        .new_agent()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

pub(super) fn form_field(body: &str, name: &str) -> Option<String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}
