//! Plain HTTP/1.1 for tests: a `GET` client for `/metrics` and `/health`, and a sink that
//! records the bodies POSTed to it (an alert webhook's receiver).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `GET path` from `addr` (`host:port`); returns the status code and the body.
pub fn http_get(addr: &str, path: &str) -> io::Result<(u16, String)> {
    http_get_with_token(addr, path, None)
}

/// `GET path` with `Authorization: Bearer <token>` when a token is given.
pub fn http_get_with_token(
    addr: &str,
    path: &str,
    token: Option<&str>,
) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status line in {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_owned());
    Ok((status, body))
}

/// Records every body POSTed to it and answers `200 OK`; runs on a thread of its own until
/// dropped with the process.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    addr: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl WebhookSink {
    /// Listens on a free loopback port.
    pub fn start() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Ok(body) = read_post(stream) {
                    recorded
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(body);
                }
            }
        });
        Ok(Self { addr, bodies })
    }

    /// `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The bodies received so far, oldest first.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn read_post(stream: TcpStream) -> io::Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let body = read_request_body(&mut reader)?;
    let mut stream = stream;
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Reads one HTTP/1.1 request's head and returns its body (`Content-Length` bytes), for a
/// test's own server (over TLS, say). A connection closed before the head ends is an error.
pub fn read_request_body(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}
