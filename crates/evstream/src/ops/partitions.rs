//! An ops loop for every partition of a stream, stopped together.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{OpsLoop, OpsSnapshot, OpsState};
use crate::config::Config;
use crate::error::{OpsError, PartitionError};
use crate::publish::CaptureMonitor;
use crate::ship::ShipperMonitor;

/// One [`OpsLoop`] per partition of the stream (one without partitions, see
/// [`Config::partition_configs`]): each watches, trims and alerts on its own key, on the
/// server that holds it.
///
/// ```no_run
/// use evstream::ops::PartitionedOpsLoop;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = evstream::Config::default();
/// config.redis.partitions = Some(4);
/// let loops = PartitionedOpsLoop::new(&config)?;
/// let states = loops.states(); // one per partition, for /health and /metrics
/// loops.run(tokio::time::sleep(std::time::Duration::from_secs(3600))).await?;
/// # drop(states);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PartitionedOpsLoop {
    /// Each partition's key and loop, in partition order.
    loops: Vec<(String, OpsLoop)>,
}

impl PartitionedOpsLoop {
    /// A loop over every partition of `config.redis.stream` with `config.ops`.
    pub fn new(config: &Config) -> Result<Self, OpsError> {
        let loops = config
            .partition_configs()
            .iter()
            .map(|part| Ok((part.redis.stream.clone(), OpsLoop::new(part)?)))
            .collect::<Result<_, OpsError>>()?;
        Ok(Self { loops })
    }

    /// [`OpsLoop::observe_only`] for every partition's loop.
    pub fn observe_only(mut self) -> Self {
        self.loops = self
            .loops
            .into_iter()
            .map(|(stream, ops)| (stream, ops.observe_only()))
            .collect();
        self
    }

    /// [`OpsLoop::with_capture`] for the first partition's loop (this process's ring is
    /// one, whichever partition it feeds).
    pub fn with_capture(mut self, capture: CaptureMonitor) -> Self {
        self.map_first(|ops| ops.with_capture(capture));
        self
    }

    /// [`OpsLoop::with_shipper`] for the first partition's loop (this process's shipper is
    /// one, whichever partitions it ships to).
    pub fn with_shipper(mut self, shipper: ShipperMonitor) -> Self {
        self.map_first(|ops| ops.with_shipper(shipper));
        self
    }

    fn map_first(&mut self, configure: impl FnOnce(OpsLoop) -> OpsLoop) {
        if !self.loops.is_empty() {
            let (stream, ops) = self.loops.remove(0);
            self.loops.insert(0, (stream, configure(ops)));
        }
    }

    /// Every partition's shared state, in partition order, readable while the loops run.
    pub fn states(&self) -> Vec<Arc<OpsState>> {
        self.loops.iter().map(|(_, ops)| ops.state()).collect()
    }

    /// The partitions' keys, in partition order.
    pub fn streams(&self) -> impl Iterator<Item = &str> {
        self.loops.iter().map(|(stream, _)| stream.as_str())
    }

    /// Runs every partition's loop on a task of its own until `shutdown` completes; then
    /// stops them all and waits for every one. A loop's task that ends by a panic is an
    /// error, once the others stopped.
    pub async fn run<F: Future>(self, shutdown: F) -> Result<(), PartitionError> {
        crate::partitions::run_each(
            self.loops,
            |ops, stop| ops.run(stop),
            shutdown,
            "the ops loop",
        )
        .await?;
        Ok(())
    }

    /// One pass of every partition's loop, one partition after the other: each observes,
    /// acts and evaluates the alert rules once. Returns the snapshots, in partition order.
    pub async fn run_once(self) -> Vec<OpsSnapshot> {
        let mut snapshots = Vec::with_capacity(self.loops.len());
        for (_, ops) in self.loops {
            let state = ops.state();
            let watched = Arc::clone(&state);
            ops.run(async move {
                while watched.snapshot().evaluations == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            snapshots.push(state.snapshot());
        }
        snapshots
    }
}
