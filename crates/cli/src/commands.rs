//! One module per subcommand, and the dispatch to them.

mod bench;
mod consume;
mod demo;
mod dlq;
mod ops;
mod report;
mod schema;
mod status;

use std::process::ExitCode;

use anyhow::Context;
use evstream::Config;

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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = config.redis.client()?;
        let connection = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("connecting to Redis at {url} took longer than 5 s"))?
        .with_context(|| {
            if url.starts_with("rediss://") {
                format!(
                    "cannot connect to Redis at {url} over TLS (check --tls-ca: the CA that \
                     signed the server's certificate; --tls-cert and --tls-key if the server \
                     requires client certificates)"
                )
            } else {
                format!("cannot connect to Redis at {url}; is it running? (--redis-url)")
            }
        })?;
        Ok(work(connection).await)
    })
}

/// Runs one task per partition, each given a future that completes when it should stop,
/// until `stop` completes; then stops them all and waits for them. `what` names a task in
/// errors.
pub(crate) async fn run_partitions<T, Fut>(
    tasks: impl IntoIterator<Item = T>,
    start: impl Fn(T, std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
    stop: impl std::future::Future,
    what: &str,
) -> anyhow::Result<()>
where
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running: Vec<_> = tasks
        .into_iter()
        .map(|task| {
            let mut stopped = stop_rx.clone();
            tokio::spawn(start(
                task,
                Box::pin(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                }),
            ))
        })
        .collect();
    stop.await;
    let _ = stop_tx.send(true);
    for task in running {
        task.await.with_context(|| format!("{what} failed"))?;
    }
    Ok(())
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
