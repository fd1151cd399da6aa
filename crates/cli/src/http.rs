//! `/metrics` (Prometheus text) and `/health` (JSON) for the long-running commands.
//!
//! A few lines of HTTP/1.1 on tokio's listener rather than hyper: two fixed `GET` routes, one
//! request per connection, answers a scraper or a load balancer reads; hyper and its helpers
//! would add dozens of crates to every build for that. Requests are bounded (8 KiB of head,
//! 5 s) so a slow or hostile client cannot hold memory or a task for long.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use evstream::consume::ConsumeStats;
use evstream::ops::{Health, OpsState};
use evstream::publish::CaptureMonitor;
use evstream::ship::ShipperMonitor;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::args::MetricsArgs;

/// Where `/metrics` is served when `--metrics-addr` is not given.
pub(crate) const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// What this process can report; absent parts are left out of `/health`.
#[derive(Default, Clone)]
pub(crate) struct Sources {
    /// One ops loop per partition of the stream (one without partitions).
    pub(crate) ops: Vec<Arc<OpsState>>,
    pub(crate) capture: Option<CaptureMonitor>,
    pub(crate) shipper: Option<ShipperMonitor>,
    pub(crate) consumer: Option<(String, Arc<ConsumeStats>)>,
}

impl Sources {
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

    pub(crate) fn health(&self) -> Health {
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

/// The process's Prometheus recorder, installed on first use.
pub(crate) fn recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            evstream::telemetry::LATENCY_BUCKETS,
        )
        .context("invalid histogram buckets")?
        // Series of consumers removed from their group stop being updated; drop them.
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(Duration::from_secs(600)),
        )
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    evstream::telemetry::describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Binds `--metrics-addr` (or the default), starts serving on the current runtime, and
/// returns the address, or `None` for `--metrics-addr off`. An address that is not loopback
/// needs `--metrics-public`; `--metrics-token-file` makes every request need the token.
pub(crate) async fn start(
    args: &MetricsArgs,
    sources: Sources,
) -> anyhow::Result<Option<SocketAddr>> {
    let token = match &args.metrics_token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --metrics-token-file {}", path.display()))?;
            let token = token.trim().to_owned();
            anyhow::ensure!(
                token.len() >= 16,
                "the token in {} is shorter than 16 characters; use a long random one \
                 (e.g. `openssl rand -hex 32`)",
                path.display()
            );
            Some(token)
        }
        None => None,
    };
    let listener = match args.metrics_addr.as_deref() {
        Some("off") => return Ok(None),
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.with_context(|| {
                format!("cannot serve /metrics on {addr} (--metrics-addr; \"off\" disables it)")
            })?;
            if !listener.local_addr()?.ip().is_loopback() {
                anyhow::ensure!(
                    args.metrics_public,
                    "--metrics-addr {addr} is reachable from the network; /metrics and /health \
                     show stream, group and consumer names. Add --metrics-public to mean it \
                     (and --metrics-token-file to require a bearer token), or bind 127.0.0.1"
                );
                if token.is_none() {
                    eprintln!(
                        "evstream: warning: /metrics and /health on {addr} answer anyone who can \
                         reach it (no --metrics-token-file)"
                    );
                }
            }
            listener
        }
        None => match TcpListener::bind(DEFAULT_METRICS_ADDR).await {
            Ok(listener) => listener,
            // Another evstream on this host has the default port: take a free one, say which.
            Err(_) => TcpListener::bind("127.0.0.1:0")
                .await
                .context("cannot bind a loopback port for /metrics")?,
        },
    };
    let handle = recorder()?;
    let local = listener.local_addr()?;
    let sources = Arc::new((sources, token));
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    // At most this many requests at once: a flood cannot take the process's file
    // descriptors, which the shipper and consumers need.
    let permits = Arc::new(tokio::sync::Semaphore::new(64));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (handle, sources) = (handle.clone(), Arc::clone(&sources));
            tokio::spawn(async move {
                let (sources, token) = &*sources;
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    answer(stream, &handle, sources, token.as_deref()),
                )
                .await;
                drop(permit);
            });
        }
    });
    Ok(Some(local))
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
                    && value.trim().strip_prefix("Bearer ").is_some_and(|given| {
                        constant_time_eq(given.trim().as_bytes(), token.as_bytes())
                    })
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

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
