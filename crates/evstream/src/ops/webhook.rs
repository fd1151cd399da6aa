//! The webhook sink: one HTTP/1.1 `POST` of a JSON body per notification, over `http://` or
//! `https://`.
//!
//! The client is `ureq` (blocking, run on tokio's blocking pool: a notification every few
//! seconds at most) on the rustls that Redis TLS already uses, with the ring provider. An
//! `https://` receiver's certificate is checked against `ops.webhook_ca_file` when it is set
//! (a private PKI), else against the system's root certificates, as `redis.tls_ca` does for
//! Redis. No proxy from the environment and no redirects: the receiver is the URL given.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use super::config::WebhookUrl;
use crate::error::ConfigError;

/// Where notifications are posted: a checked `http(s)://host[:port][/path]`, and the client
/// that posts there.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The checked URL, taken apart.
    target: WebhookUrl,
    /// The client; `None` from [`parse`](Self::parse), which checks the URL only.
    agent: Option<ureq::Agent>,
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target
    }
}

impl Eq for Endpoint {}

impl Endpoint {
    /// Parses `http://host[:port][/path]` or `https://…`; checks the URL only.
    pub fn parse(url: &str) -> Result<Self, &'static str> {
        Ok(Self {
            target: WebhookUrl::parse(url)?,
            agent: None,
        })
    }

    /// `ops.webhook_url` ready to post to, trusting the CA certificates (PEM) of
    /// `ops.webhook_ca_file` for `https://` when it is given, else the system's roots.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, ConfigError> {
        let endpoint = Self::parse(url).map_err(|reason| ConfigError::Invalid {
            field: "ops.webhook_url",
            value: url.to_owned(),
            reason,
        })?;
        let roots = match (endpoint.target.tls, ca_file) {
            (false, None) => None,
            (false, Some(ca_file)) => {
                return Err(ConfigError::Invalid {
                    field: "ops.webhook_ca_file",
                    value: ca_file.display().to_string(),
                    reason: "is for an https:// ops.webhook_url only",
                })
            }
            (true, Some(ca_file)) => Some(ca_certificates(ca_file)?),
            (true, None) => Some(system_roots()?),
        };
        Ok(endpoint.with_roots(roots))
    }

    fn with_roots(mut self, roots: Option<Vec<Certificate<'static>>>) -> Self {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            // Notifications are minutes apart: a kept connection would mostly be one the
            // receiver has closed meanwhile, and a POST on it fails (ureq does not retry a
            // POST). One connection per notification, as before ureq.
            .max_idle_connections(0)
            .user_agent(format!("evstream/{}", env!("CARGO_PKG_VERSION")));
        if let Some(roots) = roots {
            config = config.tls_config(
                TlsConfig::builder()
                    .provider(TlsProvider::Rustls)
                    .root_certs(RootCerts::Specific(Arc::new(roots)))
                    .unversioned_rustls_crypto_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .build(),
            );
        }
        self.agent = Some(config.build().into());
        self
    }

    /// `host:port`, for messages.
    fn authority(&self) -> String {
        if self.target.host.contains(':') {
            format!("[{}]:{}", self.target.host, self.target.port)
        } else {
            format!("{}:{}", self.target.host, self.target.port)
        }
    }

    fn url(&self) -> String {
        let scheme = if self.target.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority(), self.target.path)
    }

    /// Posts `body` (JSON); `Ok` on a 2xx answer within `timeout`.
    pub async fn post(&self, body: &[u8], timeout: Duration) -> Result<(), String> {
        let Some(agent) = self.agent.clone() else {
            return Err(
                "no HTTP client: Endpoint::parse checks a URL only, use Endpoint::new".to_owned(),
            );
        };
        let (url, body) = (self.url(), body.to_vec());
        let request = tokio::task::spawn_blocking(move || {
            agent
                .post(&url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("Content-Type", "application/json")
                .send(&body[..])
                .map(|answer| answer.status().as_u16())
        });
        // ureq keeps the deadline; this one only guards against a stuck blocking pool.
        let status = tokio::time::timeout(timeout + Duration::from_millis(500), request)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
            .map_err(|e| format!("the webhook task failed: {e}"))?
            .map_err(|e| self.describe(e, timeout))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("answered HTTP {status}"))
        }
    }

    /// One line saying what went wrong and, for TLS, what to check.
    fn describe(&self, error: ureq::Error, timeout: Duration) -> String {
        let authority = self.authority();
        let tls = match &error {
            ureq::Error::Rustls(tls) => Some(tls),
            ureq::Error::Io(io) => io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
            _ => None,
        };
        if let Some(tls) = tls {
            let hint = match tls {
                rustls::Error::InvalidCertificate(_) => {
                    "; is the receiver's certificate signed by the CA of ops.webhook_ca_file \
                     (or, without it, by one the system trusts), and does it name the URL's host?"
                }
                _ => "",
            };
            return format!("TLS with {authority} failed: {tls}{hint}");
        }
        match error {
            ureq::Error::Timeout(_) => format!("no answer within {timeout:?}"),
            ureq::Error::Io(io) => format!("talking to {authority} failed: {io}"),
            ureq::Error::HostNotFound => format!("cannot connect to {authority}: host not found"),
            ureq::Error::ConnectionFailed => {
                format!("cannot connect to {authority}: connection failed")
            }
            other => format!("{authority}: {other}"),
        }
    }
}

/// The certificates of `ops.webhook_ca_file`.
fn ca_certificates(path: &Path) -> Result<Vec<Certificate<'static>>, ConfigError> {
    let what = "the webhook's CA certificate (ops.webhook_ca_file)";
    let pem = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    let invalid = |reason| ConfigError::Invalid {
        field: "ops.webhook_ca_file",
        value: path.display().to_string(),
        reason,
    };
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(certificate)) => certificates.push(certificate),
            Ok(_) => {}
            Err(_) => return Err(invalid("is not valid PEM")),
        }
    }
    if certificates.is_empty() {
        return Err(invalid("holds no PEM certificate"));
    }
    Ok(certificates)
}

/// The system's root certificates (the same loader as Redis TLS).
fn system_roots() -> Result<Vec<Certificate<'static>>, ConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let roots: Vec<_> = found
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    if roots.is_empty() {
        return Err(ConfigError::Invalid {
            field: "ops.webhook_url",
            value: "https://…".to_owned(),
            reason: "the system has no root certificates to check the receiver with; set \
                     ops.webhook_ca_file",
        });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let ok = Endpoint::parse("http://alerts.internal:9000/hooks/evstream").unwrap();
        assert_eq!(
            (
                ok.target.host.as_str(),
                ok.target.port,
                ok.target.path.as_str()
            ),
            ("alerts.internal", 9000, "/hooks/evstream")
        );
        let bare = Endpoint::parse("http://127.0.0.1").unwrap();
        assert_eq!((bare.target.port, bare.target.path.as_str()), (80, "/"));
        let v6 = Endpoint::parse("http://[::1]:81/x").unwrap();
        assert_eq!((v6.target.host.as_str(), v6.target.port), ("::1", 81));
        assert_eq!(v6.url(), "http://[::1]:81/x");
        let tls = Endpoint::parse("https://example.com/").unwrap();
        assert_eq!((tls.target.tls, tls.target.port), (true, 443));
        assert!(Endpoint::parse("ftp://example.com/").is_err());
        assert!(Endpoint::parse("http://user:pw@example.com/").is_err());
        assert!(Endpoint::parse("http://host:notaport/").is_err());
        assert!(Endpoint::parse("http:///path").is_err());
    }

    #[test]
    fn a_ca_file_is_for_https_and_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("evstream-webhook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = Endpoint::new("http://127.0.0.1/", Some(&empty)).unwrap_err();
        assert!(
            error.to_string().contains("https:// ops.webhook_url only"),
            "{error}"
        );
        let error = Endpoint::new("https://127.0.0.1/", Some(&empty)).unwrap_err();
        assert!(
            error.to_string().contains("holds no PEM certificate"),
            "{error}"
        );
        let error = Endpoint::new("https://127.0.0.1/", Some(&dir.join("absent.pem"))).unwrap_err();
        assert!(error.to_string().contains("ops.webhook_ca_file"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
