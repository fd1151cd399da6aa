//! The ops loop's webhook over `https://`: a receiver whose certificate the configured CA
//! signed gets the notifications; one the CA did not sign is refused with a reason that says
//! what to check.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evstream::ops::webhook::Endpoint;
use evstream::ops::OpsLoop;
use evstream::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// An https receiver on a free loopback port with the certificate in `dir` (`server.pem`,
/// `server-key.pem`); records the bodies POSTed to it and answers `200 OK`.
struct TlsSink {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl TlsSink {
    fn start(dir: &Path) -> Self {
        let certificates: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("server.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("server-key.pem")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // A client that refuses the certificate ends the handshake: nothing recorded.
                let _ = serve(Arc::clone(&config), stream, &recorded);
            }
        });
        Self { port, bodies }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/hook", self.port)
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Reads one request, records its body, then answers: recorded before the client can see
/// the answer (recording after it raced the test's check, under load).
fn serve(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    recorded: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let connection = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let body = evstream_testkit::read_request_body(&mut BufReader::new(&mut tls))?;
    recorded
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    tls.flush()?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn certificates(ca_name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    evstream_testkit::write_certificates(dir.path(), ca_name).unwrap();
    dir
}

#[test]
fn an_https_webhook_signed_by_the_configured_ca_gets_the_post() {
    let pki = certificates("webhook test CA");
    let sink = TlsSink::start(pki.path());
    let endpoint = Endpoint::new(&sink.url(), Some(&pki.path().join("ca.pem"))).unwrap();
    runtime()
        .block_on(endpoint.post(br#"{"alert":"test"}"#, Duration::from_secs(5)))
        .unwrap();
    assert_eq!(sink.bodies(), vec![r#"{"alert":"test"}"#.to_owned()]);
}

#[test]
fn an_https_webhook_the_ca_did_not_sign_is_refused_with_the_reason() {
    let pki = certificates("webhook test CA");
    let other = certificates("some other CA");
    let sink = TlsSink::start(pki.path());
    let endpoint = Endpoint::new(&sink.url(), Some(&other.path().join("ca.pem"))).unwrap();
    let error = runtime()
        .block_on(endpoint.post(b"{}", Duration::from_secs(5)))
        .unwrap_err();
    assert!(
        error.contains(&format!("TLS with 127.0.0.1:{} failed", sink.port))
            && error.contains("invalid peer certificate")
            && error.contains("ops.webhook_ca_file"),
        "{error}"
    );
    assert!(sink.bodies().is_empty());
}

/// Through the ops loop and its configuration: Redis is unreachable (nothing listens on the
/// port), so `RedisUnreachable` fires and is posted over https.
#[test]
fn the_ops_loop_posts_its_alerts_to_an_https_webhook() {
    let pki = certificates("webhook test CA");
    let sink = TlsSink::start(pki.path());
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = Config::default();
    config.redis.url = format!("redis://127.0.0.1:{port}");
    config.ops.alert_interval_ms = 100;
    config.ops.webhook_url = Some(sink.url());
    config.ops.webhook_ca_file = Some(pki.path().join("ca.pem"));
    let ops = OpsLoop::new(&config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    runtime().block_on(ops.run(async {
        while sink.bodies().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }));
    let bodies = sink.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let notification: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(notification["alert"], "RedisUnreachable");
    assert_eq!(notification["state"], "firing");
}

#[test]
fn a_ca_file_needs_an_https_url() {
    let pki = certificates("webhook test CA");
    let mut config = Config::default();
    config.ops.webhook_url = Some("http://127.0.0.1:9/hook".to_owned());
    config.ops.webhook_ca_file = Some(pki.path().join("ca.pem"));
    let error = OpsLoop::new(&config).unwrap_err().to_string();
    assert!(error.contains("ops.webhook_ca_file"), "{error}");
}
