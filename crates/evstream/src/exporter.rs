//! `/metrics` (Prometheus text) and `/health` (JSON) from any process: the `evstream`
//! command's long-running modes, and a trading engine that publishes through the library or
//! the C ABI, so the capture side's figures (ring depth, refusals, breaker, journal, publish
//! latency) can be scraped from the engine itself and `RingDepthHigh`, `EventsRefused`,
//! `BreakerOpen` and `JournalFull` fire for it.
//!
//! ```no_run
//! use evstream::exporter::{Exporter, ExporterOptions, Sources};
//! use evstream::{publish, ship, Config};
//!
//! let config = Config::default();
//! let (publisher, receiver) = publish::channel(&config)?;
//! let shipper = ship::spawn(&config, receiver)?;
//! // Loopback port 9464 (or a free one when it is taken), on a thread of its own.
//! let exporter = Exporter::spawn(
//!     &ExporterOptions::default(),
//!     Sources::engine(publisher.monitor(), shipper.monitor()),
//! )?;
//! println!("metrics on http://{}/metrics", exporter.addr());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The metrics are the [`metrics`] facade's, rendered by `metrics-exporter-prometheus`'s
//! recorder, which this module installs for the process on first use ([`prometheus`]). A
//! process that installed a recorder of its own already gets evstream's metrics there; it
//! serves them with its exporter, or reads [`CaptureHealth`] and [`ShipperHealth`] as values.
//!
//! The server is a few lines of HTTP/1.1 on tokio's listener rather than hyper: two fixed
//! `GET` routes, one request per connection, answers a scraper or a load balancer reads;
//! hyper and its helpers would add dozens of crates to every build for that. Requests are
//! bounded (8 KiB of head, 5 s, 64 at once), so a slow or hostile client cannot hold memory,
//! tasks or the file descriptors the shipper needs.
//!
//! [`CaptureHealth`]: crate::publish::CaptureHealth
//! [`ShipperHealth`]: crate::ship::ShipperHealth

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::consume::ConsumeStats;
use crate::error::ExporterError;
use crate::ops::{Health, OpsState};
use crate::publish::CaptureMonitor;
use crate::ship::ShipperMonitor;

/// Where `/metrics` is served when no address is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// Shortest accepted bearer token.
const MIN_TOKEN_LEN: usize = 16;

/// Histogram buckets of the order latencies IntelliSense measures (signal → order, order →
/// fill), in seconds: 10 µs to 60 s. Exchange latencies are milliseconds with a long tail.
pub const ORDER_LATENCY_BUCKETS: &[f64] = &[
    10e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Histogram buckets of IntelliSense's risk score (an order's notional over its symbol's
/// limit; its alert fires above 1).
pub const RISK_SCORE_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0];

/// Where and for whom to serve.
#[derive(Debug, Clone, Default)]
pub struct ExporterOptions {
    /// The address to bind, e.g. `127.0.0.1:9464`. `None`: [`DEFAULT_ADDR`], or a free
    /// loopback port when another process has it.
    pub addr: Option<String>,
    /// Allow an address that is not loopback (reachable from the network).
    pub public: bool,
    /// When set, every request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl ExporterOptions {
    /// Requires the bearer token read from `path` (surrounding whitespace removed; at least
    /// 16 characters).
    pub fn with_token_file(mut self, path: &Path) -> Result<Self, ExporterError> {
        let token = std::fs::read_to_string(path).map_err(|source| ExporterError::TokenFile {
            path: path.to_owned(),
            source,
        })?;
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(ExporterError::TokenTooShort {
                path: path.to_owned(),
            });
        }
        self.token = Some(token.to_owned());
        Ok(self)
    }
}

/// What a process can report; absent parts are left out of `/health`.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// One ops loop per partition of the stream (one without partitions).
    pub ops: Vec<Arc<OpsState>>,
    /// This process's capture ring, when it publishes.
    pub capture: Option<CaptureMonitor>,
    /// This process's shipper, when it ships.
    pub shipper: Option<ShipperMonitor>,
    /// This process's consumer and its group, when it consumes.
    pub consumer: Option<(String, Arc<ConsumeStats>)>,
}

impl Sources {
    /// A trading engine's: its ring and its shipper.
    pub fn engine(capture: CaptureMonitor, shipper: ShipperMonitor) -> Self {
        Self {
            capture: Some(capture),
            shipper: Some(shipper),
            ..Self::default()
        }
    }

    /// Copies the process-local counters into the metrics registry.
    fn refresh(&self) {
        if let Some(capture) = &self.capture {
            capture.health().record();
        }
        if let Some(shipper) = &self.shipper {
            shipper.health().record();
        }
        if let Some((group, stats)) = &self.consumer {
            stats.snapshot().record(group);
        }
    }

    /// The `/health` document of what this process has.
    pub fn health(&self) -> Health {
        let mut snapshots = self.ops.iter().map(|ops| ops.snapshot());
        let mut health = Health::assemble(
            snapshots.next().as_ref(),
            self.capture.as_ref().map(CaptureMonitor::health),
            self.shipper.as_ref().map(ShipperMonitor::health),
            self.consumer.as_ref().map(|(_, stats)| stats.snapshot()),
        );
        // Further partitions: the worst status, and every reason naming its partition.
        for (partition, ops) in snapshots.enumerate() {
            let part = Health::assemble(Some(&ops), None, None, None);
            health.status = health.status.max(part.status);
            let partition = partition + 1;
            health.reasons.extend(
                part.reasons
                    .into_iter()
                    .map(|reason| format!("partition {partition}: {reason}")),
            );
        }
        health
    }
}

/// The process's Prometheus recorder, installed on first use, with evstream's histogram
/// buckets and metric descriptions.
///
/// Fails when another recorder was installed first: evstream's metrics go to that one.
pub fn prometheus() -> Result<PrometheusHandle, ExporterError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let buckets = |builder: PrometheusBuilder, matcher: Matcher, buckets: &[f64]| {
        builder
            .set_buckets_for_metric(matcher, buckets)
            .map_err(|error| ExporterError::Recorder(error.to_string()))
    };
    let mut builder = PrometheusBuilder::new();
    // A `Full` matcher is tried before a `Suffix` one.
    builder = buckets(
        builder,
        Matcher::Full("evstream_intellisense_latency_seconds".to_owned()),
        ORDER_LATENCY_BUCKETS,
    )?;
    builder = buckets(
        builder,
        Matcher::Full("evstream_intellisense_risk_score".to_owned()),
        RISK_SCORE_BUCKETS,
    )?;
    builder = buckets(
        builder,
        Matcher::Suffix("_seconds".to_owned()),
        crate::telemetry::LATENCY_BUCKETS,
    )?;
    let handle = builder
        // Series of consumers removed from their group stop being updated; drop them.
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(Duration::from_secs(600)),
        )
        .install_recorder()
        .map_err(|error| ExporterError::Recorder(error.to_string()))?;
    crate::telemetry::describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// A bound listener, not serving yet: its address is known before [`Bound::serve`] runs.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    token: Option<String>,
    handle: PrometheusHandle,
}

/// Binds `options.addr` (or the default). An address that is not loopback needs
/// `options.public`, and without a token it is served with a warning in the log.
pub async fn bind(options: &ExporterOptions) -> Result<Bound, ExporterError> {
    let handle = prometheus()?;
    let listener = match options.addr.as_deref() {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ExporterError::Bind {
                    addr: addr.to_owned(),
                    source,
                })?;
            let local = listener
                .local_addr()
                .map_err(|source| ExporterError::Bind {
                    addr: addr.to_owned(),
                    source,
                })?;
            if !local.ip().is_loopback() {
                if !options.public {
                    return Err(ExporterError::NotLoopback {
                        addr: addr.to_owned(),
                    });
                }
                if options.token.is_none() {
                    tracing::warn!(
                        %addr,
                        "/metrics and /health answer anyone who can reach this address (no token)"
                    );
                }
            }
            listener
        }
        None => {
            match TcpListener::bind(DEFAULT_ADDR).await {
                Ok(listener) => listener,
                // Another evstream process on this host has the default port: take a free
                // one, and say which (Prometheus must be told, or this one goes unscraped).
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|source| {
                        ExporterError::Bind {
                            addr: "127.0.0.1:0".to_owned(),
                            source,
                        }
                    })?;
                    if let Ok(local) = listener.local_addr() {
                        tracing::warn!(
                            %local,
                            "{DEFAULT_ADDR} is in use (another evstream process?): /metrics \
                             and /health are on {local}; give each process its own metrics \
                             address so that Prometheus finds it"
                        );
                    }
                    listener
                }
                Err(source) => {
                    return Err(ExporterError::Bind {
                        addr: DEFAULT_ADDR.to_owned(),
                        source,
                    })
                }
            }
        }
    };
    Ok(Bound {
        listener,
        token: options.token.clone(),
        handle,
    })
}

impl Bound {
    /// The bound address (the port the system chose, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has an address")
    }

    /// Serves until the future is dropped. Each request runs in a task of its own on the
    /// current runtime.
    pub async fn serve(self, sources: Sources) {
        let Bound {
            listener,
            token,
            handle,
        } = self;
        let shared = Arc::new((sources, token, handle));
        let upkeep = {
            let shared = Arc::clone(&shared);
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    shared.2.run_upkeep();
                }
            }
        };
        let accept = async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(64));
            loop {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    return;
                };
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let (sources, token, handle) = &*shared;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        answer(stream, handle, sources, token.as_deref()),
                    )
                    .await;
                    drop(permit);
                });
            }
        };
        tokio::select! {
            () = upkeep => {}
            () = accept => {}
        }
    }
}

/// A server on a thread of its own, for a process without a tokio runtime (a trading
/// engine, the C ABI). Dropping it stops the server.
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    /// Binds and starts serving on a new thread; returns once the address is bound.
    pub fn spawn(options: &ExporterOptions, sources: Sources) -> Result<Self, ExporterError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ExporterError::Runtime)?;
        let bound = runtime.block_on(bind(options))?;
        let addr = bound.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("evstream-metrics".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = bound.serve(sources) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(ExporterError::Runtime)?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    sources: &Sources,
    token: Option<&str>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 8192 {
            return respond(&mut stream, 431, "text/plain", b"request head too large\n").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if let Some(token) = token {
        let authorized = line.lines().skip(1).any(|header| {
            header.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("authorization")
                    && bearer(value)
                        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
            })
        });
        if !authorized {
            return respond(&mut stream, 401, "text/plain", b"bearer token required\n").await;
        }
    }
    match (method, path) {
        ("GET", "/metrics") => {
            sources.refresh();
            let body = handle.render();
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
            )
            .await
        }
        ("GET", "/health") => {
            let health = sources.health();
            let body = serde_json::to_vec_pretty(&health).unwrap_or_default();
            respond(&mut stream, health.http_status(), "application/json", &body).await
        }
        ("GET", _) => respond(&mut stream, 404, "text/plain", b"try /metrics or /health\n").await,
        _ => respond(&mut stream, 405, "text/plain", b"only GET\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's case does not matter
/// (RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(" Bearer abc "), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
