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

/// The envelope's `version` text, `v<N>`, written into `out` (a buffer reused event after
/// event: nothing allocated per event).
fn version_text(version: u32, out: &mut String) -> &str {
    out.clear();
    out.push('v');
    out.push_str(itoa::Buffer::new().format(version));
    out
}

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
            dead_letters: crate::keys::dead_letters(stream),
            high_water_mark: crate::keys::high_water_mark(stream, producer_id),
        }
    }

    /// Where the transaction's guard parks the stream and the dead-letter stream while a
    /// refused batch's `EXEC` runs (same hash tag, so same cluster slot).
    fn parked(&self) -> [String; 2] {
        [
            crate::keys::parked(&self.stream),
            crate::keys::parked(&self.dead_letters),
        ]
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
        let failure = registry
            .validate(event.event_type(), event.version(), &data)
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
    let mut version = String::with_capacity(11);
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
            .arg(version_text(event.version(), &mut version))
            .arg(event.correlation_id())
            .arg(event.timestamp_ns())
            .arg(event.sequence())
            .arg(event.data());
    }
    cmd
}

/// One batch as a guarded transaction: the other way to append exactly once, with plain
/// `XADD`s and batches pipelined like the script's.
///
/// One attempt is one `MULTI`/`EXEC`: `guard.lua` (is the producer's mark where this batch
/// continues from? if not, it parks the stream and the dead-letter stream so that the
/// following `XADD`s fail), one `XADD` per event (the stream, or the dead-letter stream for
/// poison), the trim, `unguard.lua` (puts parked streams back; otherwise moves the mark). The
/// decision is taken inside Redis at the moment the batch applies, so batches are pipelined
/// on one connection (in order), a late `EXEC` of an attempt given up on applies nothing, and
/// a batch sent after one that failed is refused like the script's gap. When the guard finds
/// the mark inside the batch (a retry after part of it was acknowledged to someone else's
/// attempt), the rest is sent again from there. An ACL tightened while shippers run can make
/// either script fail on its own, so every reply of the `EXEC` is read: the unguard moves the
/// mark only from the value the guard checked (never back), a parked key is never overwritten,
/// and an attempt whose unguard does not confirm the move has its entries deleted again and
/// fails (see `guard.lua`, `unguard.lua`). The same guarantees as the script (no
/// duplicate, each producer's order kept) for less Redis CPU per event: the script's Lua
/// converts every argument twice (measured in `BENCHMARKS.md`); here Lua runs twice per batch
/// on a handful of arguments.
#[derive(Debug)]
pub(crate) struct Transaction {
    keys: Keys,
    /// Where parked streams go: the stream's and the dead-letter stream's.
    parked: [String; 2],
    accept_gap: bool,
    max_len: u64,
    ttl_ms: u64,
    /// Per event: its sequence and whether it is a dead letter.
    entries: Vec<(u64, bool)>,
    /// The transaction of every entry (the common case: nothing of the batch is there yet):
    /// the guard, the entries' `XADD`s in order, the trim and the unguard.
    full: redis::Pipeline,
    dlq_at_ns: u64,
}

/// Attempts in a row that may find the mark inside the batch before the attempt gives up.
const MAX_GUARD_RETRIES: usize = 3;

/// The guard and unguard scripts, sent whole (`EVAL`): an `EVALSHA` refused inside `EXEC`
/// after a `SCRIPT FLUSH` would let the `XADD`s apply unguarded.
const GUARD: &str = include_str!("guard.lua");
const UNGUARD: &str = include_str!("unguard.lua");

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
    let mut transaction = Transaction {
        keys: keys.clone(),
        parked: keys.parked(),
        accept_gap,
        max_len: settings.max_len,
        ttl_ms: settings.high_water_mark_ttl_ms,
        entries: Vec::with_capacity(events.len()),
        full: redis::Pipeline::with_capacity(events.len() + 3),
        dlq_at_ns: now_ns,
    };
    let mut full = std::mem::take(&mut transaction.full);
    full.atomic().ignore_errors();
    let first = events.first().map_or(0, CapturedEvent::sequence);
    transaction.guard(&mut full, first.saturating_sub(1));
    let mut id_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let mut version = String::with_capacity(11);
    for (event, poison) in events.iter().zip(poison) {
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
            .arg(version_text(event.version(), &mut version))
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
        transaction
            .entries
            .push((event.sequence(), poison.is_some()));
    }
    transaction.finish(&mut full, 0, first.saturating_sub(1));
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

/// What the guard decided.
enum Guard {
    Go,
    /// The mark is elsewhere; parked, so nothing applied.
    Moved {
        mark: u64,
    },
    /// A key holds another type; parked, so nothing applied.
    WrongType {
        mark: u64,
        detail: String,
    },
    /// The batch must not apply, but the user may not park the streams (`detail` says what
    /// is missing): the `XADD`s applied, or failed on streams an earlier attempt left parked.
    Unpermitted {
        detail: String,
    },
    /// The batch must not apply, but a parked copy of a stream sits beside the live stream
    /// (never overwritten; `detail` says what to do): the `XADD`s applied.
    Blocked {
        detail: String,
    },
}

/// What the unguard did.
#[derive(Debug, PartialEq, Eq)]
enum Unguard {
    /// Put the parked streams back: the guard refused the batch.
    Restored,
    /// Moved the mark from where the batch continues to its last sequence: the batch applied.
    Moved,
    /// Found nothing parked and the mark elsewhere (`mark`): the `XADD`s applied unguarded.
    Unguarded { mark: String },
}

impl Transaction {
    fn first_sequence(&self) -> u64 {
        self.entries.first().map_or(0, |e| e.0)
    }

    /// The keys both scripts take.
    fn script_keys(&self, cmd: &mut Cmd, script: &str) {
        cmd.arg(script)
            .arg(5)
            .arg(&self.keys.stream)
            .arg(&self.keys.dead_letters)
            .arg(&self.keys.high_water_mark)
            .arg(&self.parked[0])
            .arg(&self.parked[1]);
    }

    /// Adds the guard: go on only if the mark is `expected`.
    fn guard(&self, pipe: &mut redis::Pipeline, expected: u64) {
        let mut cmd = redis::cmd("EVAL");
        self.script_keys(&mut cmd, GUARD);
        cmd.arg(expected)
            .arg(if self.accept_gap { "1" } else { "0" });
        pipe.add_command(cmd);
    }

    /// The `XADD` of entry `index`.
    fn entry_command(&self, index: usize) -> &Cmd {
        self.full
            .cmd_iter()
            .nth(index + 1)
            .expect("the full transaction holds every entry's XADD after the guard")
    }

    /// The guard (from `expected`), the entries from index `from` on, the trim and the
    /// unguard: a copy of the full transaction's tail, for a retry that finds part of the
    /// batch appended.
    fn pipeline(&self, from: usize, expected: u64) -> redis::Pipeline {
        let mut pipe = redis::Pipeline::with_capacity(self.entries.len() - from + 3);
        pipe.atomic().ignore_errors();
        self.guard(&mut pipe, expected);
        for cmd in self
            .full
            .cmd_iter()
            .skip(1 + from)
            .take(self.entries.len() - from)
        {
            pipe.add_command(cmd.clone());
        }
        self.finish(&mut pipe, from, expected);
        pipe
    }

    /// Whether the transaction of the entries from `from` on trims the stream.
    fn trims(&self, from: usize) -> bool {
        self.max_len > 0 && self.entries[from..].iter().any(|e| !e.1)
    }

    /// Adds the trim and the unguard after the `XADD`s of the entries from `from` on (the
    /// guard checked for the mark `expected`). Their replies are kept: the unguard's says
    /// whether the batch applied.
    fn finish(&self, pipe: &mut redis::Pipeline, from: usize, expected: u64) {
        if self.trims(from) {
            pipe.cmd("XTRIM")
                .arg(&self.keys.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len);
        }
        if let Some((last, _)) = self.entries[from..].last() {
            pipe.add_command(self.unguard(*last, expected));
        }
    }

    /// The unguard: put parked streams back, or move the mark from `expected` to `last`.
    fn unguard(&self, last: u64, expected: u64) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        self.script_keys(&mut cmd, UNGUARD);
        cmd.arg(last)
            .arg(self.ttl_ms)
            .arg(expected)
            .arg(if self.accept_gap { "1" } else { "0" });
        cmd
    }

    /// One attempt; see the type's documentation.
    ///
    /// Every reply of the `EXEC` is read. The batch counts as applied only when the unguard
    /// says it moved the mark; whatever else happened (the guard failed or could not park, the
    /// unguard failed), the entries the `XADD`s added are deleted again, the error is logged
    /// and returned, and the shipper retries the batch.
    pub(crate) async fn run(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> redis::RedisResult<Outcome> {
        let first = self.first_sequence();
        let last = self.entries.last().map_or(0, |e| e.0);
        let (mut from, mut expected) = (0, first.saturating_sub(1));
        for _ in 0..MAX_GUARD_RETRIES {
            let partial;
            let pipe = if from == 0 {
                &self.full
            } else {
                partial = self.pipeline(from, expected);
                &partial
            };
            let mut replies: Vec<Value> = pipe.query_async(connection).await?;
            // The guard, the entries' `XADD`s, the trim (if any) and the unguard.
            let trims = self.trims(from);
            let queued = self.entries.len() - from + 2 + usize::from(trims);
            if replies.len() != queued {
                return Err(failure(format!(
                    "the batch's EXEC answered {} replies, not the {queued} queued; nothing of \
                     it counts",
                    replies.len(),
                )));
            }
            let unguard = parse_unguard(replies.pop());
            if trims {
                if let Some(Value::ServerError(error)) = replies.pop() {
                    tracing::warn!(stream = %self.keys.stream, %error, "XTRIM inside a batch failed; the stream is not trimmed");
                }
            }
            let mut replies = replies.into_iter();
            let guard = parse_guard(replies.next());
            let entries: Vec<Value> = replies.collect();
            if let Ok((_, note)) = &guard {
                if !note.is_empty() {
                    tracing::warn!(stream = %self.keys.stream, %note, "the batch's guard repaired the streams");
                }
            }
            let guard = guard.map(|(guard, _)| guard);
            match (guard, unguard) {
                (guard @ (Ok(Guard::Go) | Err(_)), Ok(Unguard::Moved)) => {
                    // Applied, in order: the unguard found the mark where the batch continues.
                    if let Err(error) = guard {
                        tracing::error!(stream = %self.keys.stream, %error, "the batch's guard failed, yet the batch applied in order");
                    }
                    let (mut added, mut dead) = (0, 0);
                    for ((index, (_, is_dead)), reply) in
                        self.entries.iter().enumerate().skip(from).zip(entries)
                    {
                        match reply {
                            Value::ServerError(error) => {
                                // Refused by Redis though the guard let it through (an entry
                                // Redis will not take): the mark is past it already, so it is
                                // dead-lettered now, outside the transaction.
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
                        skipped: from as u64,
                    });
                }
                (Ok(Guard::WrongType { mark, detail }), Ok(Unguard::Restored)) => {
                    return Ok(Outcome::Stopped {
                        mark,
                        added: 0,
                        dead: 0,
                        skipped: 0,
                        error: detail,
                    })
                }
                (Ok(Guard::Moved { mark }), Ok(Unguard::Restored)) if mark >= last => {
                    // All of it landed before (an earlier attempt's answer was lost).
                    return Ok(Outcome::Handled {
                        added: 0,
                        dead: 0,
                        skipped: self.entries.len() as u64,
                    });
                }
                (Ok(Guard::Moved { mark }), Ok(Unguard::Restored))
                    if mark < first.saturating_sub(1) && !self.accept_gap =>
                {
                    return Ok(Outcome::Gap { mark });
                }
                (Ok(Guard::Moved { mark }), Ok(Unguard::Restored)) => {
                    // Part of it landed: send the rest, from the mark.
                    from = self.entries.partition_point(|e| e.0 <= mark);
                    expected = mark;
                    continue;
                }
                (guard, unguard) => {
                    let error = self.undo(connection, from, &entries, guard, unguard).await;
                    tracing::error!(stream = %self.keys.stream, %error, "batch not appended; will retry");
                    return Err(failure(error));
                }
            }
        }
        Err(failure(format!(
            "the high-water mark {} kept moving during {MAX_GUARD_RETRIES} attempts",
            self.keys.high_water_mark
        )))
    }

    /// After an attempt whose unguard did not confirm it: deletes what the attempt's `XADD`s
    /// added (their replies name the entries exactly) and says what went wrong. Outside the
    /// `EXEC`, so a consumer may have read such an entry in between; consumers skip an
    /// `event_id` seen before, and the retry appends the batch once.
    async fn undo(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
        from: usize,
        entries: &[Value],
        guard: Result<Guard, String>,
        unguard: Result<Unguard, String>,
    ) -> String {
        let guard = match guard {
            Ok(Guard::Go) => "the guard let the batch through".to_owned(),
            Ok(Guard::Moved { mark }) => format!("the guard refused the batch (mark {mark})"),
            Ok(Guard::WrongType { detail, .. }) => format!("the guard refused the batch: {detail}"),
            Ok(Guard::Unpermitted { detail } | Guard::Blocked { detail }) => {
                format!("the guard refused the batch but could not park the streams: {detail}")
            }
            Err(error) => format!("the guard failed: {error}"),
        };
        let unguard = match unguard {
            Ok(Unguard::Restored) => "the unguard put the parked streams back".to_owned(),
            Ok(Unguard::Moved) => "the unguard moved the mark".to_owned(),
            Ok(Unguard::Unguarded { mark }) => {
                format!("the unguard left the mark at {mark:?}, where this batch does not continue")
            }
            Err(error) => format!(
                "the unguard failed, so the mark did not move (streams it could not put back \
                 stay parked until the next batch's guard puts them back): {error}"
            ),
        };
        let mut added: [Vec<&[u8]>; 2] = [Vec::new(), Vec::new()];
        for ((_, is_dead), reply) in self.entries.iter().skip(from).zip(entries) {
            if let Value::BulkString(id) = reply {
                added[usize::from(*is_dead)].push(id);
            }
        }
        let mut removed = String::new();
        for (key, ids) in [&self.keys.stream, &self.keys.dead_letters]
            .into_iter()
            .zip(&added)
        {
            if ids.is_empty() {
                continue;
            }
            let deleted = redis::cmd("XDEL")
                .arg(key)
                .arg(ids)
                .query_async::<u64>(connection)
                .await;
            removed.push_str(&match deleted {
                Ok(count) => format!("; deleted the {count} entries it had added to {key}"),
                Err(error) => format!(
                    "; COULD NOT DELETE the {} entries it added to {key} ({error}): remove \
                     them by hand, they may duplicate events (XDEL {key} {})",
                    ids.len(),
                    ids.iter()
                        .map(|id| String::from_utf8_lossy(id))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            });
        }
        format!("{guard}; {unguard}{removed}; nothing of the batch counts as appended")
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

/// Runs the guard's refusing path on `keys` once, in one `MULTI`/`EXEC`: parks both streams
/// (an impossible mark is asked for) and puts them back, changing nothing. Called on every new
/// connection of a transaction shipper: an ACL that lets the `XADD`s through but not a
/// command the scripts need would otherwise show only inside a batch's `EXEC`, where the
/// `XADD`s apply while the guard fails.
pub(crate) async fn probe_guard(
    connection: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
) -> redis::RedisResult<()> {
    let probe = Transaction {
        keys: keys.clone(),
        parked: keys.parked(),
        accept_gap: false,
        max_len: 0,
        ttl_ms: 1,
        entries: vec![(u64::MAX, false)],
        full: redis::Pipeline::new(),
        dlq_at_ns: 0,
    };
    let mut check = redis::pipe();
    check.atomic().ignore_errors();
    probe.guard(&mut check, u64::MAX);
    check.add_command(probe.unguard(u64::MAX, u64::MAX));
    let mut replies: Vec<Value> = check.query_async(connection).await?;
    let unguard = parse_unguard(replies.pop());
    let refused = |error: String| {
        failure(format!(
            "ship.append = \"transaction\" cannot run its guard on {}: {error}; the \
             publisher needs +eval and, inside it, +get +set +type +exists +rename +del +xdel \
             on the stream, its dead letters, its marks and their :evstream-parked keys \
             (docs/security.md)",
            keys.stream
        ))
    };
    match parse_guard(replies.pop()) {
        Err(error) | Ok((Guard::Unpermitted { detail: error }, _)) => return Err(refused(error)),
        Ok((Guard::Blocked { detail }, _)) => {
            // Batches the guard lets through still ship; refused ones fail loudly.
            tracing::error!(stream = %keys.stream, %detail, "a parked copy of the stream needs an operator");
        }
        Ok((_, note)) if !note.is_empty() => {
            tracing::warn!(stream = %keys.stream, %note, "the guard repaired the streams");
        }
        Ok(_) => {}
    }
    match unguard {
        Ok(_) => Ok(()),
        Err(error) => Err(refused(error)),
    }
}

/// An error that is none of Redis's own replies.
fn failure(message: String) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::other(message))
}

/// Reads the guard's reply `{status, mark, detail, note}`; an error reply (the guard did not
/// run, or stopped) as its text.
fn parse_guard(reply: Option<Value>) -> Result<(Guard, String), String> {
    let reply = reply.ok_or_else(|| "no reply".to_owned())?;
    if let Value::ServerError(error) = &reply {
        return Err(error.to_string());
    }
    let (status, mark, detail, note): (i64, u64, String, String) =
        FromRedisValue::from_redis_value(reply).map_err(|e| format!("unexpected reply: {e}"))?;
    let guard = match status {
        1 => Guard::Go,
        0 => Guard::Moved { mark },
        2 => Guard::WrongType { mark, detail },
        4 => Guard::Blocked { detail },
        _ => Guard::Unpermitted { detail },
    };
    Ok((guard, note))
}

/// Reads the unguard's reply `{status, mark}`; an error reply as its text.
fn parse_unguard(reply: Option<Value>) -> Result<Unguard, String> {
    let reply = reply.ok_or_else(|| "no reply".to_owned())?;
    if let Value::ServerError(error) = &reply {
        return Err(error.to_string());
    }
    let (status, mark): (i64, String) =
        FromRedisValue::from_redis_value(reply).map_err(|e| format!("unexpected reply: {e}"))?;
    Ok(match status {
        0 => Unguard::Restored,
        1 => Unguard::Moved,
        _ => Unguard::Unguarded { mark },
    })
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

    /// Appends through the script (`transaction` false) or the guarded transaction.
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
        let ids = EventIdGenerator::for_producer(producer, 0);
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
        assert_eq!(
            redis.command(&["GET", "s"]).unwrap().as_text().as_deref(),
            Some("not a stream"),
            "the key is left as it was"
        );
    }

    #[test]
    fn a_late_transaction_of_a_retried_batch_applies_nothing() {
        let redis = RedisServer::start().unwrap();
        redis
            .command(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"])
            .unwrap();
        let batch = events(1..=3);
        // The first attempt: queued whole, its EXEC held back (a timeout on our side).
        let settings = AppendSettings {
            keys: Keys::new("s", "p"),
            producer_id: "p".to_owned(),
            max_len: 0,
            high_water_mark_ttl_ms: 60_000,
        };
        let poison = vec![None; batch.len()];
        let ids = EventIdGenerator::for_producer("p", 0);
        let first_attempt = build_transaction(&BatchInput {
            settings: &settings,
            keys: &settings.keys,
            producer_id: "p",
            ids: &ids,
            events: &batch,
            poison: &poison,
            accept_gap: false,
            now_ns: 1,
        });
        // A raw connection: the EXEC's reply holds errors, which the client library would turn
        // into one error of the whole reply.
        use std::io::{Read, Write};
        let mut late = std::net::TcpStream::connect(redis.addr()).unwrap();
        let mut queued = redis::cmd("MULTI").get_packed_command();
        for cmd in first_attempt.full.cmd_iter() {
            queued.extend(cmd.get_packed_command());
        }
        late.write_all(&queued).unwrap();
        let expected = format!("+OK\r\n{}", "+QUEUED\r\n".repeat(5));
        let mut answer = vec![0; expected.len()];
        late.read_exact(&mut answer).unwrap();
        assert_eq!(String::from_utf8_lossy(&answer), expected);
        // The retry lands first...
        assert_eq!(
            append(&redis, true, "p", &batch, false),
            Outcome::Handled {
                added: 3,
                dead: 0,
                skipped: 0
            }
        );
        // ...then the late EXEC: its guard finds the mark moved and parks the streams, so
        // its XADDs fail; its unguard puts them back, group and all.
        late.write_all(&redis::cmd("EXEC").get_packed_command())
            .unwrap();
        late.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut reply = Vec::new();
        let replies = loop {
            let mut chunk = [0; 4096];
            let n = late.read(&mut chunk).unwrap();
            reply.extend_from_slice(&chunk[..n]);
            if let Ok(redis::Value::Array(replies)) = redis::parse_redis_value(&reply) {
                break replies;
            }
        };
        assert!(
            matches!(&replies[0], redis::Value::Array(guard) if guard.first() == Some(&redis::Value::Int(0))),
            "{replies:?}"
        );
        assert!(
            replies[1..4]
                .iter()
                .all(|r| matches!(r, redis::Value::ServerError(e) if e.code() == "WRONGTYPE")),
            "{replies:?}"
        );
        assert_eq!(redis.command(&["XLEN", "s"]).unwrap().as_int(), Some(3));
        assert_eq!(
            redis
                .command(&["GET", "s:hwm:p"])
                .unwrap()
                .as_text()
                .as_deref(),
            Some("3")
        );
        let groups = redis.command(&["XINFO", "GROUPS", "s"]).unwrap();
        assert!(
            matches!(&groups, evstream_testkit::Reply::Array(Some(g)) if g.len() == 1),
            "the group came back with the stream: {groups:?}"
        );
        assert_eq!(
            redis
                .command(&[
                    "EXISTS",
                    "s:evstream-parked",
                    "s:dlq:evstream-parked",
                    "s:dlq"
                ])
                .unwrap()
                .as_int(),
            Some(0),
            "nothing parked is left"
        );
    }

    #[test]
    fn the_guard_probe_changes_nothing_and_reports_a_missing_permission() {
        let redis = RedisServer::start().unwrap();
        redis.command(&["XADD", "s", "*", "f", "v"]).unwrap();
        let keys = Keys::new("s", "p");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = redis::Client::open(redis.url()).unwrap();
        runtime.block_on(async {
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            probe_guard(&mut connection, &keys).await.unwrap();
        });
        assert_eq!(redis.command(&["XLEN", "s"]).unwrap().as_int(), Some(1));
        assert_eq!(
            redis
                .command(&["EXISTS", "s:hwm:p", "s:dlq", "s:evstream-parked"])
                .unwrap()
                .as_int(),
            Some(0)
        );
        // A publisher allowed to append but not to rename: refused at connection time, not
        // discovered inside a batch.
        redis
            .command(&[
                "ACL", "SETUSER", "pub", "on", ">pw", "~s*", "+@all", "-rename",
            ])
            .unwrap();
        let url = redis.url().replacen("redis://", "redis://pub:pw@", 1);
        let client = redis::Client::open(url).unwrap();
        let error = runtime.block_on(async {
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            probe_guard(&mut connection, &keys).await.unwrap_err()
        });
        assert!(
            error.to_string().contains("cannot run its guard"),
            "{error}"
        );
        assert_eq!(redis.command(&["XLEN", "s"]).unwrap().as_int(), Some(1));
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

    /// Appends `batch` through the guarded transaction as the user of `url`.
    fn try_append(url: &str, batch: &[CapturedEvent]) -> redis::RedisResult<Outcome> {
        let settings = AppendSettings {
            keys: Keys::new("s", "p"),
            producer_id: "p".to_owned(),
            max_len: 0,
            high_water_mark_ttl_ms: 60_000,
        };
        let poison = vec![None; batch.len()];
        let ids = EventIdGenerator::for_producer("p", 0);
        let tx = build_transaction(&BatchInput {
            settings: &settings,
            keys: &settings.keys,
            producer_id: "p",
            ids: &ids,
            events: batch,
            poison: &poison,
            accept_gap: false,
            now_ns: 1,
        });
        let client = redis::Client::open(url).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            tx.run(&mut connection).await
        })
    }

    /// The sequences in stream `key`, in stream order.
    fn sequences(redis: &RedisServer, key: &str) -> Vec<u64> {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        let entries: Vec<(String, std::collections::HashMap<String, String>)> =
            redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query(&mut connection)
                .unwrap();
        entries
            .into_iter()
            .map(|(_, fields)| fields["sequence"].parse().unwrap())
            .collect()
    }

    fn mark(redis: &RedisServer) -> Option<String> {
        redis.command(&["GET", "s:hwm:p"]).unwrap().as_text()
    }

    fn group_count(redis: &RedisServer) -> usize {
        match redis.command(&["XINFO", "GROUPS", "s"]) {
            Ok(evstream_testkit::Reply::Array(Some(groups))) => groups.len(),
            _ => 0,
        }
    }

    /// A publisher user `pub` with every command but those in `denied`.
    fn publisher(redis: &RedisServer, denied: &[&str]) -> String {
        let mut args = vec!["ACL", "SETUSER", "pub", "reset", "on", ">pw", "~*", "+@all"];
        args.extend_from_slice(denied);
        redis.command(&args).unwrap();
        redis.url().replacen("redis://", "redis://pub:pw@", 1)
    }

    #[test]
    fn issue_18_a_stream_left_parked_by_a_failed_unguard_is_put_back_not_overwritten() {
        let redis = RedisServer::start().unwrap();
        redis
            .command(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"])
            .unwrap();
        let url = redis.url();
        assert!(matches!(
            try_append(&url, &events(1..=3)),
            Ok(Outcome::Handled { added: 3, .. })
        ));
        // What an unguard that failed leaves: the stream parked, a string in its place.
        redis
            .command(&["RENAME", "s", "s:evstream-parked"])
            .unwrap();
        redis.command(&["SET", "s", "evstream-parked"]).unwrap();
        // A retry of the landed batch: the guard must refuse it, and park to do so.
        let retry = try_append(&url, &events(1..=3));
        let next = try_append(&url, &events(4..=6));
        assert_eq!(
            redis.command(&["TYPE", "s"]).unwrap().as_text().as_deref(),
            Some("stream"),
            "the stream is a stream again (retry: {retry:?}, next: {next:?})"
        );
        assert_eq!(group_count(&redis), 1, "its group survived");
        assert_eq!(sequences(&redis, "s"), (1..=6).collect::<Vec<_>>());
        assert_eq!(mark(&redis).as_deref(), Some("6"));
        assert_eq!(
            redis
                .command(&["EXISTS", "s:evstream-parked", "s:dlq:evstream-parked"])
                .unwrap()
                .as_int(),
            Some(0)
        );
    }

    #[test]
    fn issue_18_a_parked_copy_beside_the_live_stream_is_never_overwritten() {
        let redis = RedisServer::start().unwrap();
        let url = redis.url();
        try_append(&url, &events(1..=3)).unwrap();
        // A parked copy that nobody put back, beside a live stream (recreated since).
        redis
            .command(&["XADD", "s:evstream-parked", "*", "f", "orphan"])
            .unwrap();
        let retry = try_append(&url, &events(1..=3));
        assert_eq!(
            redis
                .command(&["XLEN", "s:evstream-parked"])
                .unwrap()
                .as_int(),
            Some(1),
            "the parked copy is kept (retry: {retry:?})"
        );
        let error = retry.expect_err("a refused batch that could not be parked fails");
        assert!(
            error
                .to_string()
                .contains("s:evstream-parked exists beside"),
            "{error}"
        );
        assert_eq!(sequences(&redis, "s"), vec![1, 2, 3], "nothing duplicated");
        assert_eq!(mark(&redis).as_deref(), Some("3"));
        // Batches the guard lets through still ship.
        assert!(matches!(
            try_append(&url, &events(4..=6)),
            Ok(Outcome::Handled { added: 3, .. })
        ));
        assert_eq!(sequences(&redis, "s"), (1..=6).collect::<Vec<_>>());
    }

    #[test]
    fn issue_18_a_guard_that_may_no_longer_rename_neither_duplicates_nor_moves_the_mark_back() {
        let redis = RedisServer::start().unwrap();
        redis
            .command(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"])
            .unwrap();
        let url = publisher(&redis, &[]);
        try_append(&url, &events(1..=3)).unwrap();
        try_append(&url, &events(4..=6)).unwrap();
        // The ACL tightened while the shipper runs; then a retry of a landed batch, which
        // the guard must refuse by parking the stream.
        publisher(&redis, &["-rename"]);
        let retry = try_append(&url, &events(1..=3));
        assert_eq!(
            sequences(&redis, "s"),
            (1..=6).collect::<Vec<_>>(),
            "nothing duplicated (retry: {retry:?})"
        );
        assert_eq!(
            mark(&redis).as_deref(),
            Some("6"),
            "the mark never moves back"
        );
        let error = retry.expect_err("fails loudly");
        assert!(error.to_string().contains("+rename"), "{error}");
        assert_eq!(group_count(&redis), 1);
        // Granted again: the next batch continues from the mark.
        publisher(&redis, &[]);
        assert!(matches!(
            try_append(&url, &events(7..=9)),
            Ok(Outcome::Handled { added: 3, .. })
        ));
        assert_eq!(sequences(&redis, "s"), (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn issue_18_an_unguard_that_may_no_longer_delete_leaves_the_stream_and_its_groups() {
        let redis = RedisServer::start().unwrap();
        redis
            .command(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"])
            .unwrap();
        let url = publisher(&redis, &[]);
        try_append(&url, &events(1..=3)).unwrap();
        // The guard could still park (RENAME, SET), the unguard could not put back (DEL).
        publisher(&redis, &["-del"]);
        let retry = try_append(&url, &events(1..=3));
        let next = try_append(&url, &events(4..=6));
        assert_eq!(
            redis.command(&["TYPE", "s"]).unwrap().as_text().as_deref(),
            Some("stream"),
            "retry: {retry:?}, next: {next:?}"
        );
        assert_eq!(group_count(&redis), 1, "the group survived");
        assert_eq!(sequences(&redis, "s"), (1..=6).collect::<Vec<_>>());
        assert_eq!(mark(&redis).as_deref(), Some("6"));
        assert!(retry.is_err(), "the refused retry fails loudly: {retry:?}");
        assert!(
            matches!(next, Ok(Outcome::Handled { added: 3, .. })),
            "{next:?}"
        );
        assert_eq!(
            redis
                .command(&["EXISTS", "s:evstream-parked", "s:dlq:evstream-parked"])
                .unwrap()
                .as_int(),
            Some(0)
        );
    }
}
