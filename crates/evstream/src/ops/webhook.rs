//! The webhook sink: one HTTP/1.1 `POST` of a JSON body per notification.
//!
//! Written on tokio's `TcpStream` rather than with an HTTP client crate: one request shape,
//! `Connection: close`, a status line to read; hyper and its helpers would add dozens of
//! crates to every build for that. Only `http://`: point the webhook at a local relay (or use
//! the Prometheus rules in `deploy/prometheus/alerts.yml` with Alertmanager) for TLS.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where notifications are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    path: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Self, &'static str> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err("must start with http:// (https is not supported; use a local relay)");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("must not carry credentials; put a token in the path instead");
        }
        let bad_port = "has an invalid port";
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or("has an unclosed [")?;
            match after.strip_prefix(':') {
                Some(port) => (host, port.parse().map_err(|_| bad_port)?),
                None if after.is_empty() => (host, 80),
                None => return Err(bad_port),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().map_err(|_| bad_port)?),
                None => (authority, 80),
            }
        };
        if host.is_empty()
            || path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("must be http://host[:port][/path]");
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// Posts `body` (JSON); `Ok` on a 2xx answer within `timeout`.
    pub async fn post(&self, body: &[u8], timeout: Duration) -> Result<(), String> {
        tokio::time::timeout(timeout, self.post_inner(body))
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }

    async fn post_inner(&self, body: &[u8]) -> Result<(), String> {
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.host, self.port))?;
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: evstream/{}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.port,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let mut answer = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        // The status line is all we need.
        while !answer.contains(&b'\n') && answer.len() < 4096 {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("cannot read the answer: {e}"))?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&answer);
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| "no HTTP status line in the answer".to_owned())?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("answered HTTP {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let ok = Endpoint::parse("http://alerts.internal:9000/hooks/evstream").unwrap();
        assert_eq!(
            (ok.host.as_str(), ok.port, ok.path.as_str()),
            ("alerts.internal", 9000, "/hooks/evstream")
        );
        let bare = Endpoint::parse("http://127.0.0.1").unwrap();
        assert_eq!((bare.port, bare.path.as_str()), (80, "/"));
        let v6 = Endpoint::parse("http://[::1]:81/x").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 81));
        assert!(Endpoint::parse("https://example.com/").is_err());
        assert!(Endpoint::parse("http://user:pw@example.com/").is_err());
        assert!(Endpoint::parse("http://host:notaport/").is_err());
        assert!(Endpoint::parse("http:///path").is_err());
    }
}
