//! A consumer for every partition of a stream, counting together and stopped together.

use std::future::Future;
use std::sync::Arc;

use super::{ConsumeReport, ConsumeStats, Consumer, Handler};
use crate::config::Config;
use crate::error::{ConsumeError, PartitionError};

/// One [`Consumer`] per partition of the stream (one without partitions, see
/// [`Config::partition_configs`]), all of the same name and group, counting into one
/// [`ConsumeStats`], each run on a task of its own until one shutdown.
///
/// ```no_run
/// use evstream::consume::{Effects, Envelope, Handler, HandlerError, PartitionedConsumer};
///
/// struct Count(u64);
/// impl Handler for Count {
///     fn handle(&mut self, _: &Envelope, _: &mut Effects) -> Result<(), HandlerError> {
///         self.0 += 1;
///         Ok(())
///     }
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = evstream::Config::default();
/// config.redis.partitions = Some(4);
/// let consumers = PartitionedConsumer::new(&config, "worker-1", |_partition| Count(0))?
///     .with_schemas_from_redis();
/// let report = consumers.run(tokio::time::sleep(std::time::Duration::from_secs(60))).await?;
/// println!("{} processed over 4 partitions", report.processed);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PartitionedConsumer<H> {
    /// Each partition's key and consumer, in partition order.
    consumers: Vec<(String, Consumer<H>)>,
    /// The counters every consumer adds to.
    stats: Arc<ConsumeStats>,
}

impl<H: Handler> PartitionedConsumer<H> {
    /// A consumer named `name` in `config.consume.group` on every partition of
    /// `config.redis.stream`, each with the handler `handler` makes for its partition's
    /// configuration. Nothing connects until [`run`](Self::run).
    pub fn new(
        config: &Config,
        name: &str,
        mut handler: impl FnMut(&Config) -> H,
    ) -> Result<Self, ConsumeError> {
        let stats = Arc::new(ConsumeStats::default());
        let consumers = config
            .partition_configs()
            .iter()
            .map(|part| {
                let consumer = Consumer::new(part, name, handler(part))?;
                Ok((
                    part.redis.stream.clone(),
                    consumer.with_stats(Arc::clone(&stats)),
                ))
            })
            .collect::<Result<_, ConsumeError>>()?;
        Ok(Self { consumers, stats })
    }

    /// [`Consumer::with_schemas_from_redis`] for every partition's consumer.
    pub fn with_schemas_from_redis(self) -> Self {
        self.map(Consumer::with_schemas_from_redis)
    }

    /// Applies `configure` to every partition's consumer (e.g. to give each
    /// [`Consumer::with_schemas`]).
    pub fn map(mut self, mut configure: impl FnMut(Consumer<H>) -> Consumer<H>) -> Self {
        self.consumers = self
            .consumers
            .into_iter()
            .map(|(stream, consumer)| (stream, configure(consumer)))
            .collect();
        self
    }

    /// Like [`map`](Self::map), for a `configure` that can fail: the first error is returned.
    pub fn try_map<E>(
        mut self,
        mut configure: impl FnMut(Consumer<H>) -> Result<Consumer<H>, E>,
    ) -> Result<Self, E> {
        self.consumers = self
            .consumers
            .into_iter()
            .map(|(stream, consumer)| Ok((stream, configure(consumer)?)))
            .collect::<Result<_, E>>()?;
        Ok(self)
    }

    /// The counters of every partition's consumer together, readable while they run.
    pub fn stats(&self) -> Arc<ConsumeStats> {
        Arc::clone(&self.stats)
    }

    /// The partitions' keys, in partition order.
    pub fn streams(&self) -> impl Iterator<Item = &str> {
        self.consumers.iter().map(|(stream, _)| stream.as_str())
    }
}

impl<H: Handler + Send + Sync + 'static> PartitionedConsumer<H> {
    /// Runs every partition's consumer on a task of its own until `shutdown` completes; then
    /// stops them all (each finishes as [`Consumer::run`] says), waits for every one and
    /// returns the counters of all. A consumer's task that ends by a panic is an error, once
    /// the others stopped.
    pub async fn run<F: Future>(self, shutdown: F) -> Result<ConsumeReport, PartitionError> {
        crate::partitions::run_each(
            self.consumers,
            |consumer, stop| consumer.run(stop),
            shutdown,
            "the consumer",
        )
        .await?;
        Ok(self.stats.snapshot())
    }
}
