//! One batch as one atomic, idempotent Redis call (`append.lua`), and its reply.
//!
//! Why a script and not `MULTI … EXEC` plus a read-back of a high-water mark: the check has to
//! happen *inside* Redis, at the moment the batch is applied. A batch retried after a timeout
//! may still be executed late from the old connection, and a batch may fail with an error reply
//! while the next one, already in flight, succeeds; with a server-side check both are harmless
//! (late copies are skipped, out-of-order batches are refused with a gap), with a client-side
//! read-back they can duplicate or reorder events. The cost is measured in `BENCHMARKS.md`.

use redis::{Cmd, FromRedisValue, Value};

use crate::envelope::EventIdGenerator;
use crate::publish::{CapturedEvent, PayloadKind};

/// The script's source.
pub(crate) const SCRIPT: &str = include_str!("append.lua");

/// Envelope `version` written until the schema registry supplies one.
const DEFAULT_VERSION: &str = "v1";

/// Redis keys one producer's batches touch.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) stream: String,
    pub(crate) dead_letters: String,
    pub(crate) high_water_mark: String,
}

impl Keys {
    pub(crate) fn new(stream: &str, producer_id: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            dead_letters: format!("{stream}:dlq"),
            high_water_mark: format!("{stream}:hwm:{producer_id}"),
        }
    }
}

/// Settings fixed for every batch of one shipper.
#[derive(Debug, Clone)]
pub(crate) struct AppendSettings {
    pub(crate) keys: Keys,
    pub(crate) producer_id: String,
    /// `MAXLEN ~` bound; 0 disables trimming.
    pub(crate) max_len: u64,
    pub(crate) high_water_mark_ttl_ms: u64,
}

/// A dead letter decided before sending: the reason code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Poison {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// What the shipper checks before sending.
#[derive(Debug, Clone, Default)]
pub(crate) struct Checks {
    /// With a list (strict mode), event types outside it are dead letters.
    pub(crate) known_types: Option<std::collections::HashSet<String>>,
    /// Schema validation mode.
    pub(crate) validation: crate::config::Validation,
    /// In `sample` mode, one event in this many is validated.
    pub(crate) sample_every: u64,
    /// Events seen, for sampling.
    pub(crate) seen: u64,
    /// The registry, once loaded (validation is skipped without one).
    pub(crate) registry: Option<std::sync::Arc<crate::schema::Registry>>,
    /// Sampled events that failed validation (shipped anyway).
    pub(crate) violations: u64,
}

impl Checks {
    /// Checks an event before it is sent. Payloads serialized by evstream are valid JSON by
    /// construction; raw payloads are parsed (without building a value) and refused if
    /// invalid. In strict mode, an unknown event type is refused. Then the schema, per
    /// `ship.validation`.
    pub(crate) fn check(&mut self, event: &CapturedEvent) -> Option<Poison> {
        let poison = self.check_type_and_json(event);
        if poison.is_some() {
            return poison;
        }
        self.check_schema(event)
    }

    fn check_schema(&mut self, event: &CapturedEvent) -> Option<Poison> {
        use crate::config::Validation;
        let registry = self.registry.as_ref()?;
        let strict = match self.validation {
            Validation::Off => return None,
            Validation::Strict => true,
            Validation::Sample => {
                self.seen += 1;
                if !self.seen.is_multiple_of(self.sample_every) {
                    return None;
                }
                false
            }
        };
        let data: serde_json::Value = serde_json::from_slice(event.data()).ok()?;
        let version = DEFAULT_VERSION[1..].parse().unwrap_or(1);
        let failure = registry
            .validate(event.event_type(), version, &data)
            .err()?;
        if strict {
            return Some(Poison {
                reason: failure.code(),
                message: failure.to_string(),
            });
        }
        self.violations += 1;
        if self.violations.is_power_of_two() {
            tracing::warn!(violations = self.violations, %failure, "sampled event does not match its schema (shipped anyway; ship.validation = \"sample\")");
        }
        None
    }

    fn check_type_and_json(&self, event: &CapturedEvent) -> Option<Poison> {
        if let Some(known) = &self.known_types {
            if !known.contains(event.event_type()) {
                return Some(Poison {
                    reason: "unknown_type",
                    message: format!(
                        "event type {:?} is not in ship.known_event_types (strict mode)",
                        event.event_type()
                    ),
                });
            }
        }
        check_json(event)
    }
}

fn check_json(event: &CapturedEvent) -> Option<Poison> {
    if event.kind() == PayloadKind::Raw {
        if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(event.data()) {
            return Some(Poison {
                reason: "invalid_json",
                message: format!("payload is not valid JSON: {error}"),
            });
        }
    }
    None
}

/// Builds the `EVALSHA` call for a batch. `poison[i]` marks event `i` as a dead letter.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    sha: &str,
    settings: &AppendSettings,
    keys: &Keys,
    producer_id: &str,
    ids: &EventIdGenerator,
    events: &[CapturedEvent],
    poison: &[Option<Poison>],
    accept_gap: bool,
    now_ns: u64,
) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha)
        .arg(3)
        .arg(&keys.stream)
        .arg(&keys.dead_letters)
        .arg(&keys.high_water_mark)
        .arg(producer_id)
        .arg(settings.max_len)
        .arg(settings.high_water_mark_ttl_ms)
        .arg(if accept_gap { "1" } else { "0" })
        .arg(now_ns);
    let mut id_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let mut dead = String::new();
    for (event, poison) in events.iter().zip(poison) {
        match poison {
            None => cmd.arg(""),
            Some(poison) => {
                dead.clear();
                dead.push_str(poison.reason);
                dead.push('\n');
                dead.push_str(&poison.message);
                cmd.arg(dead.as_str())
            }
        };
        let id = ids.event_id(event.timestamp_ns(), event.sequence());
        cmd.arg(&*id.hyphenated().encode_lower(&mut id_text))
            .arg(event.event_type())
            .arg(DEFAULT_VERSION)
            .arg(event.correlation_id())
            .arg(event.timestamp_ns())
            .arg(event.sequence())
            .arg(event.data());
    }
    cmd
}

/// What the script did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every event is in the stream or the dead-letter stream (`skipped` were already there).
    Handled { added: u64, dead: u64, skipped: u64 },
    /// Refused: the producer's mark is `mark`, below this batch's first sequence minus one.
    Gap { mark: u64 },
    /// Events up to sequence `mark` were handled; the next one was refused by both streams.
    Stopped {
        mark: u64,
        added: u64,
        dead: u64,
        skipped: u64,
        error: String,
    },
}

impl FromRedisValue for Outcome {
    fn from_redis_value(value: Value) -> Result<Self, redis::ParsingError> {
        let (status, _before, mark, added, dead, skipped, error): (
            i64,
            u64,
            u64,
            u64,
            u64,
            u64,
            String,
        ) = FromRedisValue::from_redis_value(value)?;
        Ok(match status {
            1 => Outcome::Handled {
                added,
                dead,
                skipped,
            },
            0 => Outcome::Gap { mark },
            _ => Outcome::Stopped {
                mark,
                added,
                dead,
                skipped,
                error,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evstream_testkit::RedisServer;

    fn events(sequences: std::ops::RangeInclusive<u64>) -> Vec<CapturedEvent> {
        sequences
            .map(|s| {
                CapturedEvent::from_parts(
                    s,
                    1_764_000_000_000_000_000 + s,
                    PayloadKind::Json,
                    "Tick",
                    "c",
                    format!("{{\"s\":{s}}}").into_bytes(),
                )
            })
            .collect()
    }

    fn append(
        connection: &mut redis::Connection,
        producer: &str,
        batch: &[CapturedEvent],
        accept_gap: bool,
    ) -> Outcome {
        let settings = AppendSettings {
            keys: Keys::new("s", producer),
            producer_id: producer.to_owned(),
            max_len: 0,
            high_water_mark_ttl_ms: 60_000,
        };
        let sha = redis::Script::new(SCRIPT).get_hash().to_owned();
        let poison = vec![None; batch.len()];
        let cmd = build(
            &sha,
            &settings,
            &settings.keys,
            producer,
            &EventIdGenerator::new(),
            batch,
            &poison,
            accept_gap,
            1,
        );
        cmd.query(connection).unwrap()
    }

    #[test]
    fn the_script_skips_retries_and_refuses_gaps_even_for_a_new_producer() {
        let redis = RedisServer::start().unwrap();
        let mut connection = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT)
            .exec(&mut connection)
            .unwrap();
        let handled = |added, skipped| Outcome::Handled {
            added,
            dead: 0,
            skipped,
        };

        // A new producer's second batch landing before its first is refused (regression:
        // without a mark it used to be accepted, and the first batch was then skipped).
        assert_eq!(
            append(&mut connection, "p", &events(4..=6), false),
            Outcome::Gap { mark: 0 }
        );
        assert_eq!(
            append(&mut connection, "p", &events(1..=3), false),
            handled(3, 0)
        );
        assert_eq!(
            append(&mut connection, "p", &events(1..=3), false),
            handled(0, 3),
            "retry"
        );
        assert_eq!(
            append(&mut connection, "p", &events(5..=6), false),
            Outcome::Gap { mark: 3 }
        );
        assert_eq!(
            append(&mut connection, "p", &events(3..=6), false),
            handled(3, 1),
            "overlap"
        );
        // A replay whose mark expired is accepted only when the shipper says so.
        assert_eq!(
            append(&mut connection, "q", &events(100..=101), false),
            Outcome::Gap { mark: 0 }
        );
        assert_eq!(
            append(&mut connection, "q", &events(100..=101), true),
            handled(2, 0)
        );
        assert_eq!(redis.command(&["XLEN", "s"]).unwrap().as_int(), Some(8));
        assert_eq!(
            redis
                .command(&["GET", "s:hwm:p"])
                .unwrap()
                .as_text()
                .as_deref(),
            Some("6")
        );
    }
}
