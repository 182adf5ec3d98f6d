//! The `/metrics` responder: one thread, std only. A tiny HTTP/1.1 server
//! over a `TcpListener`: it reads a request line (at most `MAX_REQUEST`
//! bytes, within `REQUEST_TIMEOUT`), answers `200` with the exposition
//! text for `GET /metrics`, `404` for any other path, `405` for another
//! method, and closes the connection.
//!
//! Sockets are non-blocking while any connection is open, so a client that
//! sends nothing, or a byte a second, or never reads the answer holds one
//! slot until its deadline and never delays the others; at most
//! `MAX_CONNECTIONS` are open (the oldest is dropped for a new one). It only
//! reads what the pipeline keeps in atomics and short locks (through
//! `render`): it never blocks the pipeline.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::cancel::Cancel;

/// The longest request head read (the rest of a request is never needed).
const MAX_REQUEST: usize = 8 << 10;
/// How long a client may take to send its request line and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 32;
/// How often open connections are looked at.
const TICK: Duration = Duration::from_millis(5);
/// How often the listener is looked at while no connection is open.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Binding `metrics.listen` failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (check metrics.listen)")]
pub struct ListenError {
    pub addr: String,
    #[source]
    pub cause: io::Error,
}

/// A bound listener, ready to serve.
pub struct Responder {
    listener: TcpListener,
}

impl Responder {
    pub fn bind(addr: &str) -> Result<Responder, ListenError> {
        let listener = TcpListener::bind(addr).map_err(|cause| ListenError {
            addr: addr.to_string(),
            cause,
        })?;
        Ok(Responder { listener })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel` is set; `render` makes the body of a scrape.
    pub fn run(self, render: impl Fn() -> String, cancel: &Cancel) {
        if let Err(e) = self.listener.set_nonblocking(true) {
            log::error!("metrics: cannot serve: {e}");
            return;
        }
        let mut open: Vec<Conn> = Vec::new();
        while !cancel.is_set() {
            let idle = open.is_empty();
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if open.len() == MAX_CONNECTIONS {
                        open.remove(0);
                    }
                    if let Some(c) = Conn::new(stream) {
                        open.push(c);
                    }
                }
                // Idle: wait for a connection, looking at the flag.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && idle => {
                    cancel.sleep(IDLE_POLL);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    log::debug!("metrics: accept failed: {e}");
                }
            }
            let now = Instant::now();
            open.retain_mut(|c| c.step(&render, now));
            if !open.is_empty() {
                std::thread::sleep(TICK);
            }
        }
    }
}

/// What a connection is doing.
enum State {
    Reading(Vec<u8>),
    Writing(Vec<u8>, usize),
}

struct Conn {
    stream: TcpStream,
    deadline: Instant,
    state: State,
}

impl Conn {
    fn new(stream: TcpStream) -> Option<Conn> {
        stream.set_nonblocking(true).ok()?;
        Some(Conn {
            stream,
            deadline: Instant::now() + REQUEST_TIMEOUT,
            state: State::Reading(Vec::new()),
        })
    }

    /// Moves the exchange on without blocking; false when it is over.
    fn step(&mut self, render: &impl Fn() -> String, now: Instant) -> bool {
        if now >= self.deadline {
            return false;
        }
        if let State::Reading(buf) = &mut self.state {
            let mut chunk = [0u8; 1024];
            loop {
                match self.stream.read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
                if buf.len() >= MAX_REQUEST {
                    break;
                }
            }
            let Some(line) = request_line(buf) else {
                return true;
            };
            let answer = answer(line, render);
            self.state = State::Writing(answer, 0);
        }
        if let State::Writing(bytes, at) = &mut self.state {
            while *at < bytes.len() {
                match self.stream.write(&bytes[*at..]) {
                    Ok(0) => return false,
                    Ok(n) => *at += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            let _ = self.stream.flush();
            return false;
        }
        true
    }
}

/// The request line once it is complete (or the head is too long, which
/// is answered as a bad request).
fn request_line(buf: &[u8]) -> Option<&[u8]> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => Some(&buf[..end]),
        None if buf.len() >= MAX_REQUEST => Some(b""),
        None => None,
    }
}

/// The whole answer to a request line.
fn answer(line: &[u8], render: &impl Fn() -> String) -> Vec<u8> {
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, body, kind) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "not found: try /metrics\n".into(),
            "text/plain",
        ),
        _ if parts.next().is_some() => (
            "405 Method Not Allowed",
            "only GET /metrics\n".into(),
            "text/plain",
        ),
        _ => ("400 Bad Request", "bad request\n".into(), "text/plain"),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(line: &str) -> String {
        let a = answer(line.as_bytes(), &|| "m 1\n".to_string());
        let text = String::from_utf8(a).unwrap();
        text.lines().next().unwrap().to_string()
    }

    #[test]
    fn requests_are_answered_by_path_and_method() {
        let table = [
            ("GET /metrics HTTP/1.1\r", "HTTP/1.1 200 OK"),
            ("GET /metrics?x=1 HTTP/1.0", "HTTP/1.1 200 OK"),
            ("HEAD /metrics HTTP/1.1", "HTTP/1.1 200 OK"),
            ("GET / HTTP/1.1", "HTTP/1.1 404 Not Found"),
            ("GET /metricsx HTTP/1.1", "HTTP/1.1 404 Not Found"),
            ("POST /metrics HTTP/1.1", "HTTP/1.1 405 Method Not Allowed"),
            ("", "HTTP/1.1 400 Bad Request"),
            ("garbage", "HTTP/1.1 400 Bad Request"),
        ];
        for (line, want) in table {
            assert_eq!(status(line), want, "{line:?}");
        }
    }

    #[test]
    fn a_scrape_gets_the_text_with_its_length() {
        let a = String::from_utf8(answer(b"GET /metrics HTTP/1.1", &|| "m 1\n".into())).unwrap();
        assert!(a.contains("content-length: 4\r\n"), "{a}");
        assert!(a.contains("version=0.0.4"), "{a}");
        assert!(a.ends_with("\r\n\r\nm 1\n"), "{a}");
    }

    #[test]
    fn the_request_line_ends_at_a_line_feed_or_the_size_cap() {
        assert_eq!(
            request_line(b"GET / HTTP/1.1\r\nHost"),
            Some(&b"GET / HTTP/1.1\r"[..])
        );
        assert_eq!(request_line(b"GET / HT"), None);
        assert_eq!(request_line(&vec![b'a'; MAX_REQUEST]), Some(&b""[..]));
    }
}
