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

/// Bytes an event's envelope adds to its `data` in a command: field names, the event id,
/// numbers, the producer id, and room for a typical event type and correlation id. Only
/// sizes buffers; a larger event grows them.
const ENVELOPE_BYTES: usize = 256;

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

/// One batch to append, as both ways of appending (script, transaction) take it.
#[derive(Clone, Copy)]
pub(crate) struct BatchInput<'a> {
    pub(crate) settings: &'a AppendSettings,
    /// The keys of the batch's producer (a replayed journal's may differ from ours).
    pub(crate) keys: &'a Keys,
    pub(crate) producer_id: &'a str,
    pub(crate) ids: &'a EventIdGenerator,
    pub(crate) events: &'a [CapturedEvent],
    /// `poison[i]` marks event `i` as a dead letter.
    pub(crate) poison: &'a [Option<Poison>],
    /// Accept a gap before this batch (and a missing mark).
    pub(crate) accept_gap: bool,
    /// `dlq_at_ns` of the batch's dead letters.
    pub(crate) now_ns: u64,
}

/// Builds the `EVALSHA` call for a batch.
pub(crate) fn build(sha: &str, input: &BatchInput<'_>) -> Cmd {
    let BatchInput {
        settings,
        keys,
        producer_id,
        ids,
        events,
        poison,
        accept_gap,
        now_ns,
    } = *input;
    // Sized up front: growing a buffer of a whole batch's payloads by doubling copies it
    // about twice over (measured: a fifth of the shipper's CPU went to that).
    let data_bytes: usize = events.iter().map(|e| e.data().len() + ENVELOPE_BYTES).sum();
    let mut cmd = Cmd::with_capacity(11 + 8 * events.len(), 512 + data_bytes);
    cmd.arg("EVALSHA")
        .arg(sha)
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

/// One batch as a `WATCH`ed transaction: the other way to append exactly once, without Lua.
///
/// One attempt: `WATCH` the producer's high-water mark and read it (one round trip), decide
/// on the client what the script decides in Redis (skip what is at or below the mark; refuse
/// a gap), then `MULTI`, one `XADD` per event (the stream, or the dead-letter stream for
/// poison), the trim, `SET` of the new mark, `EXEC` (a second round trip). `EXEC` applies
/// nothing if the mark changed after the `WATCH`, which happens only when an earlier attempt
/// of the same batch, given up on after a timeout, was executed late: the attempt then reads
/// the mark again and skips what that one appended. The same guarantees as the script (no
/// duplicate, each producer's order kept), with Redis running plain `XADD`s: about half the
/// Redis CPU per event of the script, whose Lua calls convert every argument twice (measured
/// in `BENCHMARKS.md`). The cost: a batch is not pipelined behind the previous one of the
/// same producer (the `WATCH` of one would be consumed by the `EXEC` of the other), so one
/// batch per shipper is in flight.
#[derive(Debug)]
pub(crate) struct Transaction {
    keys: Keys,
    accept_gap: bool,
    max_len: u64,
    ttl_ms: u64,
    /// Per event: its sequence and whether it is a dead letter.
    entries: Vec<(u64, bool)>,
    /// The transaction of every entry (the common case: nothing of the batch is there yet):
    /// the entries' `XADD`s, in order, then the trim and the mark.
    full: redis::Pipeline,
    dlq_at_ns: u64,
}

/// Attempts in a row that may find the mark moved before the attempt gives up.
const MAX_WATCH_CONFLICTS: usize = 3;

/// Builds the transaction of a batch.
pub(crate) fn build_transaction(input: &BatchInput<'_>) -> Transaction {
    let BatchInput {
        settings,
        keys,
        producer_id,
        ids,
        events,
        poison,
        accept_gap,
        now_ns,
    } = *input;
    let mut id_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let mut full = redis::pipe();
    full.atomic().ignore_errors();
    let entries = events
        .iter()
        .zip(poison)
        .map(|(event, poison)| {
            let key = if poison.is_some() {
                &keys.dead_letters
            } else {
                &keys.stream
            };
            // Sized up front, as in `build`.
            let mut cmd = Cmd::with_capacity(
                27,
                key.len() + event.data().len() + ENVELOPE_BYTES + DEAD_LETTER_BYTES,
            );
            let id = ids.event_id(event.timestamp_ns(), event.sequence());
            cmd.arg("XADD")
                .arg(key)
                .arg("*")
                .arg("event_id")
                .arg(&*id.hyphenated().encode_lower(&mut id_text))
                .arg("event_type")
                .arg(event.event_type())
                .arg("version")
                .arg(DEFAULT_VERSION)
                .arg("correlation_id")
                .arg(event.correlation_id())
                .arg("timestamp_ns")
                .arg(event.timestamp_ns())
                .arg("producer_id")
                .arg(producer_id)
                .arg("sequence")
                .arg(event.sequence())
                .arg("data")
                .arg(event.data());
            if let Some(poison) = poison {
                dead_letter_fields(&mut cmd, poison.reason, &poison.message, now_ns);
            }
            full.add_command(cmd);
            (event.sequence(), poison.is_some())
        })
        .collect();
    let mut transaction = Transaction {
        keys: keys.clone(),
        accept_gap,
        max_len: settings.max_len,
        ttl_ms: settings.high_water_mark_ttl_ms,
        entries,
        full,
        dlq_at_ns: now_ns,
    };
    let mut full = std::mem::take(&mut transaction.full);
    transaction.finish(&mut full, 0);
    transaction.full = full;
    transaction
}

/// Room for the dead-letter fields, kept in every `XADD`'s buffer so that one never grows.
const DEAD_LETTER_BYTES: usize = 128;

fn dead_letter_fields(cmd: &mut Cmd, reason: &str, message: &str, at_ns: u64) {
    cmd.arg("dlq_reason")
        .arg(reason)
        .arg("dlq_stage")
        .arg("ship")
        .arg("dlq_error")
        .arg(message)
        .arg("dlq_at_ns")
        .arg(at_ns);
}

impl Transaction {
    fn first_sequence(&self) -> u64 {
        self.entries.first().map_or(0, |e| e.0)
    }

    /// The `XADD` of entry `index`.
    fn entry_command(&self, index: usize) -> &Cmd {
        self.full
            .cmd_iter()
            .nth(index)
            .expect("the full transaction holds every entry's XADD")
    }

    /// `MULTI`, the entries from index `from` on, the trim, the new mark, `EXEC`: a copy of
    /// the full transaction's tail, for a retry that finds part of the batch appended.
    fn pipeline(&self, from: usize) -> redis::Pipeline {
        let mut pipe = redis::Pipeline::with_capacity(self.entries.len() - from + 2);
        pipe.atomic().ignore_errors();
        for cmd in self.full.cmd_iter().take(self.entries.len()).skip(from) {
            pipe.add_command(cmd.clone());
        }
        self.finish(&mut pipe, from);
        pipe
    }

    /// Adds the trim and the new mark after the `XADD`s of the entries from `from` on.
    fn finish(&self, pipe: &mut redis::Pipeline, from: usize) {
        let entries = &self.entries[from..];
        if self.max_len > 0 && entries.iter().any(|e| !e.1) {
            pipe.cmd("XTRIM")
                .arg(&self.keys.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len)
                .ignore();
        }
        if let Some((last, _)) = entries.last() {
            pipe.cmd("SET")
                .arg(&self.keys.high_water_mark)
                .arg(*last)
                .arg("PX")
                .arg(self.ttl_ms)
                .ignore();
        }
    }

    /// One attempt; see the type's documentation.
    pub(crate) async fn run(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> redis::RedisResult<Outcome> {
        let first = self.first_sequence();
        let keys = &self.keys;
        for _ in 0..MAX_WATCH_CONFLICTS {
            let (mark, stream_type, dlq_type): (Option<u64>, String, String) = redis::pipe()
                .cmd("WATCH")
                .arg(&keys.high_water_mark)
                .ignore()
                .cmd("GET")
                .arg(&keys.high_water_mark)
                .cmd("TYPE")
                .arg(&keys.stream)
                .cmd("TYPE")
                .arg(&keys.dead_letters)
                .query_async(connection)
                .await?;
            let mark = match mark {
                Some(mark) => mark,
                // No mark (expired), and the shipper knows nothing earlier is coming.
                None if self.accept_gap => first.saturating_sub(1),
                // A new producer, whose sequences start at 1.
                None => 0,
            };
            let unwatch = |outcome| async {
                redis::cmd("UNWATCH")
                    .exec_async(&mut connection.clone())
                    .await
                    .map(|()| outcome)
            };
            for (key, kind) in [
                (&keys.stream, &stream_type),
                (&keys.dead_letters, &dlq_type),
            ] {
                if kind != "none" && kind != "stream" {
                    return unwatch(Outcome::Stopped {
                        mark,
                        added: 0,
                        dead: 0,
                        skipped: 0,
                        error: format!("key {key} holds a {kind}, not a stream"),
                    })
                    .await;
                }
            }
            if first > mark + 1 && !self.accept_gap {
                return unwatch(Outcome::Gap { mark }).await;
            }
            let from = self.entries.partition_point(|e| e.0 <= mark);
            let skipped = from as u64;
            if from == self.entries.len() {
                return unwatch(Outcome::Handled {
                    added: 0,
                    dead: 0,
                    skipped,
                })
                .await;
            }
            let partial;
            let pipe = if from == 0 {
                &self.full
            } else {
                partial = self.pipeline(from);
                &partial
            };
            let Some(replies) = pipe.query_async::<Option<Vec<Value>>>(connection).await? else {
                // The mark moved since the WATCH: a late earlier attempt landed. Look again.
                continue;
            };
            let (mut added, mut dead) = (0, 0);
            for ((index, (_, is_dead)), reply) in
                self.entries.iter().enumerate().skip(from).zip(replies)
            {
                match reply {
                    Value::ServerError(error) => {
                        // The key changed type between the check and EXEC: the mark is past
                        // this entry already, so it is dead-lettered now, outside the
                        // transaction.
                        let cmd = self.entry_command(index);
                        self.rescue(connection, cmd, &error.to_string()).await?;
                        dead += 1;
                    }
                    _ if *is_dead => dead += 1,
                    _ => added += 1,
                }
            }
            return Ok(Outcome::Handled {
                added,
                dead,
                skipped,
            });
        }
        Err(redis::RedisError::from(std::io::Error::other(format!(
            "the high-water mark {} kept moving during {MAX_WATCH_CONFLICTS} attempts",
            keys.high_water_mark
        ))))
    }

    /// Writes an entry that Redis refused inside the transaction to the dead-letter stream.
    async fn rescue(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
        refused: &Cmd,
        error: &str,
    ) -> redis::RedisResult<()> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.keys.dead_letters).arg("*");
        // The refused XADD's fields, after `XADD <key> *`, up to the event's own fields.
        for arg in refused.args_iter().skip(3).take(16) {
            if let redis::Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        dead_letter_fields(&mut cmd, "redis_rejected", error, self.dlq_at_ns);
        let result = cmd.query_async::<Value>(connection).await;
        if let Err(error) = &result {
            tracing::error!(%error, "an entry Redis refused could not be dead-lettered either; it is lost");
        }
        result.map(drop)
    }
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

    /// Appends through the script (`transaction` false) or the WATCHed transaction.
    fn append(
        redis: &RedisServer,
        transaction: bool,
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
        let poison = vec![None; batch.len()];
        let client = redis::Client::open(redis.url()).unwrap();
        let ids = EventIdGenerator::new();
        let input = BatchInput {
            settings: &settings,
            keys: &settings.keys,
            producer_id: producer,
            ids: &ids,
            events: batch,
            poison: &poison,
            accept_gap,
            now_ns: 1,
        };
        if transaction {
            let tx = build_transaction(&input);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            return runtime.block_on(async {
                let mut connection = client.get_multiplexed_async_connection().await.unwrap();
                tx.run(&mut connection).await.unwrap()
            });
        }
        let mut connection = client.get_connection().unwrap();
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT)
            .exec(&mut connection)
            .unwrap();
        let sha = redis::Script::new(SCRIPT).get_hash().to_owned();
        let cmd = build(&sha, &input);
        cmd.query(&mut connection).unwrap()
    }

    #[test]
    fn the_script_skips_retries_and_refuses_gaps_even_for_a_new_producer() {
        skips_retries_and_refuses_gaps(false);
    }

    #[test]
    fn the_transaction_skips_retries_and_refuses_gaps_even_for_a_new_producer() {
        skips_retries_and_refuses_gaps(true);
    }

    #[test]
    fn the_transaction_refuses_a_key_of_the_wrong_type_without_writing() {
        let redis = RedisServer::start().unwrap();
        redis.command(&["SET", "s", "not a stream"]).unwrap();
        let outcome = append(&redis, true, "p", &events(1..=2), false);
        assert!(
            matches!(&outcome, Outcome::Stopped { error, .. } if error.contains("holds a string")),
            "{outcome:?}"
        );
        assert_eq!(
            redis.command(&["EXISTS", "s:hwm:p"]).unwrap().as_int(),
            Some(0)
        );
    }

    #[test]
    fn a_late_transaction_of_a_retried_batch_applies_nothing() {
        let redis = RedisServer::start().unwrap();
        let batch = events(1..=3);
        // The first attempt: WATCHed and queued, its EXEC held back (a timeout on our side).
        let mut late = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let run = |connection: &mut redis::Connection, args: &[&str]| -> redis::Value {
            let mut cmd = redis::cmd(args[0]);
            for arg in &args[1..] {
                cmd.arg(*arg);
            }
            cmd.query(connection).unwrap()
        };
        run(&mut late, &["WATCH", "s:hwm:p"]);
        run(&mut late, &["MULTI"]);
        run(&mut late, &["XADD", "s", "*", "sequence", "1"]);
        run(&mut late, &["SET", "s:hwm:p", "3"]);
        // The retry lands first...
        assert_eq!(
            append(&redis, true, "p", &batch, false),
            Outcome::Handled {
                added: 3,
                dead: 0,
                skipped: 0
            }
        );
        // ...then the late EXEC: the mark moved after its WATCH, so it applies nothing.
        assert_eq!(run(&mut late, &["EXEC"]), redis::Value::Nil);
        assert_eq!(redis.command(&["XLEN", "s"]).unwrap().as_int(), Some(3));
    }

    fn skips_retries_and_refuses_gaps(transaction: bool) {
        let redis = RedisServer::start().unwrap();
        let append = |producer, batch: &[CapturedEvent], accept_gap| {
            append(&redis, transaction, producer, batch, accept_gap)
        };
        let handled = |added, skipped| Outcome::Handled {
            added,
            dead: 0,
            skipped,
        };

        // A new producer's second batch landing before its first is refused (regression:
        // without a mark it used to be accepted, and the first batch was then skipped).
        assert_eq!(append("p", &events(4..=6), false), Outcome::Gap { mark: 0 });
        assert_eq!(append("p", &events(1..=3), false), handled(3, 0));
        assert_eq!(append("p", &events(1..=3), false), handled(0, 3), "retry");
        assert_eq!(append("p", &events(5..=6), false), Outcome::Gap { mark: 3 });
        assert_eq!(append("p", &events(3..=6), false), handled(3, 1), "overlap");
        // A replay whose mark expired is accepted only when the shipper says so.
        assert_eq!(
            append("q", &events(100..=101), false),
            Outcome::Gap { mark: 0 }
        );
        assert_eq!(append("q", &events(100..=101), true), handled(2, 0));
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
