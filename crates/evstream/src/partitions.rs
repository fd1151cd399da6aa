//! What every command over a stream's partitions shares: a connection to the server that
//! holds a partition, and one task per partition stopped together.
//!
//! A partitioned stream (`redis.partitions`) is one key per partition, each with its own
//! dead letters, marks and counters, and on Redis Cluster each on the primary holding its
//! slot ([`Config::partition_configs`]). The shipper, [`status`](crate::status), the
//! [dead-letter listing and replay](crate::ops::replay), the
//! [consumers](crate::consume::PartitionedConsumer) and the
//! [ops loops](crate::ops::PartitionedOpsLoop) go over every partition through here, and so
//! does `evstream_intellisense::read_partitions` (the report), with [`connect`].

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::config::Config;
use crate::error::PartitionError;

/// How long connecting to a partition's server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The deadline of each Redis call of a command over the partitions (status, dead-letter
/// listing and replay).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the server holding `part`'s stream (a partition's configuration, see
/// [`Config::partition_configs`]), made within [`CONNECT_TIMEOUT`] (plus the time Sentinel or
/// the cluster may take to name the server), and the client that made it (it names the
/// server).
pub async fn connect(
    part: &Config,
    settings: &redis::AsyncConnectionConfig,
) -> Result<(MultiplexedConnection, redis::Client), PartitionError> {
    let url = crate::redis::redact_url(&part.redis.url);
    let connector = part.redis.connector()?;
    let connecting = async {
        let client = connector.client().await?;
        let connection = client
            .get_multiplexed_async_connection_with_config(settings)
            .await?;
        Ok::<_, redis::RedisError>((connection, client))
    };
    // The sentinels or cluster nodes are asked first: their budget comes on top.
    let deadline = CONNECT_TIMEOUT + connector.lookup_budget();
    match tokio::time::timeout(deadline, connecting).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(source)) => Err(PartitionError::Connect { url, source }),
        Err(_) => Err(PartitionError::ConnectTimeout {
            url,
            timeout: deadline,
        }),
    }
}

/// Spawns `start(task, stop)` for every `(stream, task)`, each given a future that completes
/// when it should stop; once `shutdown` completes, stops them all and waits for every one.
/// Returns their outputs in order, or the first failure (`what` names a task in it).
pub(crate) async fn run_each<T, Fut>(
    tasks: impl IntoIterator<Item = (String, T)>,
    start: impl Fn(T, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    shutdown: impl Future,
    what: &'static str,
) -> Result<Vec<Fut::Output>, PartitionError>
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running: Vec<_> = tasks
        .into_iter()
        .map(|(stream, task)| {
            let mut stopped = stop_rx.clone();
            let handle = tokio::spawn(start(
                task,
                Box::pin(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                }),
            ));
            (stream, handle)
        })
        .collect();
    shutdown.await;
    let _ = stop_tx.send(true);
    let mut outputs = Vec::with_capacity(running.len());
    let mut failure = None;
    for (stream, handle) in running {
        match handle.await {
            Ok(output) => outputs.push(output),
            Err(source) => {
                failure.get_or_insert(PartitionError::TaskFailed {
                    task: what,
                    stream,
                    source,
                });
            }
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(outputs),
    }
}
