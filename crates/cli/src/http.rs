//! `/metrics` and `/health` for the long-running commands: `--metrics-addr`,
//! `--metrics-public` and `--metrics-token-file` turned into the library's
//! [`evstream::exporter`], served on the command's runtime.

use std::net::SocketAddr;

use anyhow::Context;
use evstream::exporter::{self, ExporterOptions};

pub(crate) use evstream::exporter::Sources;

use crate::args::MetricsArgs;

/// Binds `--metrics-addr` (or the default), starts serving on the current runtime, and
/// returns the address, or `None` for `--metrics-addr off`. An address that is not loopback
/// needs `--metrics-public`; `--metrics-token-file` makes every request need the token.
pub(crate) async fn start(
    args: &MetricsArgs,
    sources: Sources,
) -> anyhow::Result<Option<SocketAddr>> {
    let mut options = ExporterOptions {
        addr: args.metrics_addr.clone(),
        public: args.metrics_public,
        token: None,
    };
    if let Some(path) = &args.metrics_token_file {
        options = options
            .with_token_file(path)
            .context("--metrics-token-file")?;
    }
    if options.addr.as_deref() == Some("off") {
        return Ok(None);
    }
    let bound = exporter::bind(&options)
        .await
        .context("--metrics-addr (\"off\" disables /metrics and /health)")?;
    let local = bound.local_addr();
    tokio::spawn(bound.serve(sources));
    Ok(Some(local))
}
