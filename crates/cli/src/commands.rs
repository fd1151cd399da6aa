//! One module per subcommand, and the dispatch to them.

mod archive;
mod bench;
mod consume;
mod demo;
mod dlq;
mod history;
mod ops;
mod report;
mod schema;
mod status;
mod top;

use std::process::ExitCode;

use anyhow::Context;
use evstream::{Config, PartitionError};

use crate::args::{Cli, Command};

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.global.resolve()?;
    let given_url = cli.global.given_url(&config);
    match cli.command {
        Command::Demo(args) => demo::run(&config, given_url.as_deref(), &args),
        Command::Bench(args) => bench::run(&config, given_url.as_deref(), &args),
        Command::Consume(args) => consume::run(config, &args),
        Command::Report(args) => report::run(&config, &args),
        Command::Ops(args) => ops::run(config, &args),
        Command::Status(args) => status::run(&config, &args),
        Command::Top(args) => top::run(&config, &args),
        Command::Archive(args) => archive::run(config, &args),
        Command::Tail(args) => history::tail(&config, &args),
        Command::Trace(args) => history::trace(&config, &args),
        Command::Export(args) => history::export(&config, &args),
        Command::Schema { command } => schema::run(&config, command),
        Command::Dlq { command } => dlq::run(&config, command),
    }
}

/// Runs `work` with a connection to the configured Redis on a runtime of its own; connecting
/// has a 5 s deadline and its errors say what to check.
pub(crate) fn with_redis<T, F, Fut>(config: &Config, work: F) -> anyhow::Result<T>
where
    F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let url = evstream::redis::redact_url(&config.redis.url);
    block_on(async {
        let client = config.redis.client()?;
        let connection = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| connect_timed_out(&url))?
        .with_context(|| connect_failed(&url))?;
        Ok(work(connection).await)
    })?
}

/// Runs `work` on a runtime of its own (one thread).
pub(crate) fn block_on<F: std::future::Future>(work: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(work))
}

/// What a failed connection to `url` (password hidden) says to check.
fn connect_failed(url: &str) -> String {
    if url.starts_with("rediss://") {
        format!(
            "cannot connect to Redis at {url} over TLS (check --tls-ca: the CA that \
             signed the server's certificate; --tls-cert and --tls-key if the server \
             requires client certificates)"
        )
    } else {
        format!("cannot connect to Redis at {url}; is it running? (--redis-url)")
    }
}

fn connect_timed_out(url: &str) -> anyhow::Error {
    anyhow::anyhow!("connecting to Redis at {url} took longer than 5 s")
}

/// A library error of a command over partitions, worded with this binary's options.
pub(crate) fn partition_error(error: PartitionError) -> anyhow::Error {
    match error {
        PartitionError::Config(error) => error.into(),
        PartitionError::Connect { url, source } => {
            anyhow::Error::new(source).context(connect_failed(&url))
        }
        PartitionError::ConnectTimeout { url, .. } => connect_timed_out(&url),
        error => error.into(),
    }
}

/// How messages name the stream: `events`, or `events (3 partitions)`.
pub(crate) fn stream_name(config: &Config) -> String {
    match config.redis.partitions {
        Some(p) => format!("{} ({p} partitions)", config.redis.stream),
        None => config.redis.stream.clone(),
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this command");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
