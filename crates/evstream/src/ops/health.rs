//! The `/health` document: what this process has (the ops loop's view of Redis, the ring,
//! the shipper, the consumer) and its overall status.

use serde::Serialize;

use super::alerts::{Alert, FiringAlert, Severity};
use super::trim::MemoryLevel;
use super::{unix_ms, OpsSnapshot};
use crate::consume::ConsumeReport;
use crate::publish::CaptureHealth;
use crate::ship::{BreakerState, ShipperHealth};

/// Overall state for `/health`, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// All well.
    Ok,
    /// Warnings firing, or a component reconnecting: still serving.
    Degraded,
    /// Redis unreachable, breaker open, journal full, or a critical alert: HTTP 503.
    Failing,
}

/// The `/health` document: what this process has, and its overall status.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Overall.
    pub status: HealthStatus,
    /// Why it is not `ok`, one line per reason.
    pub reasons: Vec<String>,
    /// The ops loop's view of Redis, when this process runs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisHealth>,
    /// The ring, when this process publishes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring: Option<CaptureHealth>,
    /// The shipper, when this process ships.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipper: Option<ShipperHealth>,
    /// The consumer, when this process consumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<ConsumeReport>,
    /// Alerts firing (from the ops loop).
    pub alerts: Vec<FiringAlert>,
}

/// Redis as the ops loop last saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RedisHealth {
    /// Whether the last poll succeeded.
    pub up: bool,
    /// The last error of the loop.
    pub last_error: Option<String>,
    /// Used memory in bytes.
    pub used_memory: Option<u64>,
    /// `maxmemory` in bytes (0: unbounded).
    pub maxmemory: Option<u64>,
    /// Memory against the thresholds.
    pub memory_level: Option<MemoryLevel>,
    /// `maxmemory-policy`.
    pub maxmemory_policy: Option<String>,
    /// Entries in the stream.
    pub stream_length: Option<u64>,
}

impl Health {
    /// Assembles the document from what this process has.
    pub fn assemble(
        ops: Option<&OpsSnapshot>,
        ring: Option<CaptureHealth>,
        shipper: Option<ShipperHealth>,
        consumer: Option<ConsumeReport>,
    ) -> Self {
        let mut failing = Vec::new();
        let mut degraded = Vec::new();
        let redis = ops.map(|ops| {
            let observation = ops.observation.as_ref();
            // Redis being unreachable is reported by its alert, below.
            let age_ms = unix_ms().saturating_sub(ops.last_evaluation_ms);
            if ops.evaluations > 0 && age_ms > 3 * ops.alert_interval_ms.max(1000) {
                failing.push(format!(
                    "the ops loop has not evaluated for {:.0} s (stalled or stopped)",
                    age_ms as f64 / 1000.0
                ));
            }
            RedisHealth {
                up: ops.redis_up,
                last_error: ops.last_error.clone(),
                used_memory: observation.map(|o| o.redis.used_memory),
                maxmemory: observation.map(|o| o.redis.maxmemory),
                memory_level: ops.memory_level,
                maxmemory_policy: observation.map(|o| o.redis.maxmemory_policy.clone()),
                stream_length: observation.and_then(|o| o.stream.as_ref().map(|s| s.length)),
            }
        });
        if let Some(shipper) = &shipper {
            if shipper.breaker == BreakerState::Open {
                failing.push("the shipper's circuit breaker is open".to_owned());
            } else if !shipper.redis_connected {
                degraded.push("the shipper is not connected to Redis".to_owned());
            }
            if shipper.journal_full {
                failing.push("the spill journal is full".to_owned());
            }
        }
        if let Some(consumer) = &consumer {
            if !consumer.connected {
                failing.push(format!(
                    "the consumer cannot reach Redis: {}",
                    consumer
                        .last_error
                        .as_deref()
                        .unwrap_or("not connected yet")
                ));
            }
        }
        let alerts = ops.map(|ops| ops.firing.clone()).unwrap_or_default();
        for alert in &alerts {
            if shipper.is_some() && matches!(alert.alert, Alert::BreakerOpen | Alert::JournalFull) {
                continue; // said above, from the shipper itself
            }
            let line = format!(
                "{} ({}): {}",
                alert.alert,
                alert.severity.as_str(),
                alert.message
            );
            match alert.severity {
                Severity::Critical => failing.push(line),
                Severity::Warning => degraded.push(line),
            }
        }
        failing.dedup();
        let status = if !failing.is_empty() {
            HealthStatus::Failing
        } else if !degraded.is_empty() {
            HealthStatus::Degraded
        } else {
            HealthStatus::Ok
        };
        failing.extend(degraded);
        Self {
            status,
            reasons: failing,
            redis,
            ring,
            shipper,
            consumer,
            alerts,
        }
    }

    /// 200 unless failing (503).
    pub fn http_status(&self) -> u16 {
        if self.status == HealthStatus::Failing {
            503
        } else {
            200
        }
    }
}
