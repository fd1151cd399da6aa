//! What becomes of one entry of a batch: its [`Verdict`], decided by [`Consumer::classify`]
//! from the entry (deleted, delivered too often, undecodable), the event's schema, the
//! handler's reader schema and choice, the recent event ids and the handler's result.

use super::decode::{self, Fields, RawEntry};
use super::dedupe::Seen;
use super::handler::{Accept, Handler, HandlerError, Reads};
use super::{Consumer, Effects, Envelope};

/// What becomes of one entry; see [`Consumer::classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Deleted from the stream (trimmed) while pending: acknowledged, counted
    /// `deleted_pending`.
    Deleted,
    /// Handled: acknowledged with the handler's effects, if this consumer's `XACK` is the
    /// first (counted `processed`, and `unvalidated` for a type the registry does not know).
    Apply {
        /// The event's id (held in the recent ids until the commit's outcome is known).
        event_id: uuid::Uuid,
        /// Handed over without validation: a type the registry does not know.
        unvalidated: bool,
    },
    /// Not for this handler (or for another group only): acknowledged unhandled, counted
    /// under `counter` (`skipped`, `replays_for_other_groups`).
    Skip {
        /// The counter of the group's hash.
        counter: &'static str,
    },
    /// The same event applied before, in another entry: acknowledged without effect.
    Duplicate,
    /// The same event is in the commit in flight: left pending (a claim brings it back once
    /// it is known whether that event was applied).
    LeavePending,
    /// Failed before its last delivery: left pending for a retry (counted
    /// `failed_attempts`).
    Retry {
        /// The dead-letter reason it would get.
        reason: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Failed at its last delivery, or delivered more often than `consume.max_deliveries`:
    /// written to the dead letters and acknowledged.
    DeadLetter {
        /// The `dlq_reason`.
        reason: &'static str,
        /// The `dlq_error`.
        message: String,
    },
}

impl<H: Handler> Consumer<H> {
    /// Decides what becomes of `entry`: decodes it into `event` and, when the handler is to
    /// see it, runs the handler, whose Redis writes go into `effects`.
    pub(super) fn classify(
        &mut self,
        entry: &RawEntry,
        event: &mut Envelope,
        effects: &mut Effects,
    ) -> Verdict {
        let Some(fields) = &entry.fields else {
            return Verdict::Deleted;
        };
        if entry.deliveries > self.config.max_deliveries {
            // Delivered more often than allowed without ever failing here: earlier
            // consumers died on it. Do not hand it to the handler again.
            let message = format!(
                "delivered {} times (consume.max_deliveries = {}) without being acknowledged",
                entry.deliveries, self.config.max_deliveries
            );
            return Verdict::DeadLetter {
                reason: "max_deliveries",
                message,
            };
        }
        match self.deliver(entry, fields, event, effects) {
            Ok(verdict) => verdict,
            Err((reason, message)) if entry.deliveries >= self.config.max_deliveries => {
                Verdict::DeadLetter { reason, message }
            }
            Err((reason, message)) => Verdict::Retry { reason, message },
        }
    }

    /// The verdict on a decodable entry, or why it failed (reason code and message).
    fn deliver(
        &mut self,
        entry: &RawEntry,
        fields: &Fields,
        event: &mut Envelope,
        effects: &mut Effects,
    ) -> Result<Verdict, (&'static str, String)> {
        // With a registry, `read_as_handler` parses (and so checks) the JSON itself.
        decode::decode_into(
            event,
            &entry.id,
            fields,
            entry.deliveries,
            self.config.max_data_bytes,
            self.schemas.registry().is_none(),
        )
        .map_err(|error| (error.code(), error.to_string()))?;
        let reading = self.read_as_handler(event)?;
        if reading == Reading::NotRead {
            // A type this handler does not read: not validated, so a type nobody registered
            // does not stop the groups that do not care about it.
            return Ok(Verdict::Skip { counter: "skipped" });
        }
        if event
            .replay_for_group
            .as_ref()
            .is_some_and(|group| *group != self.config.group)
        {
            // A dead letter of another group put back for that group only: this group
            // processed the original entry already.
            return Ok(Verdict::Skip {
                counter: "replays_for_other_groups",
            });
        }
        match self.recent.seen(&event.event_id) {
            Seen::Held => return Ok(Verdict::LeavePending),
            Seen::Applied => return Ok(Verdict::Duplicate),
            Seen::No => {}
        }
        match self.handler.accepts(&event.event_type, event.version) {
            Accept::Skip => Ok(Verdict::Skip { counter: "skipped" }),
            Accept::UnknownVersion => Err((
                "unknown_version",
                format!(
                    "{} version v{} is not known to this consumer",
                    event.event_type, event.version
                ),
            )),
            Accept::Handle => {
                catch_panic(|| self.handler.handle(event, effects))
                    .map_err(|error| ("handler_error", error.to_string()))?;
                self.recent.hold(event.event_id);
                Ok(Verdict::Apply {
                    event_id: event.event_id,
                    unvalidated: reading == Reading::Unvalidated,
                })
            }
        }
    }

    /// Brings `event` to a version the handler reads ([`Handler::reads`]): validated and
    /// migrated up to the newest version it reads, or a newer version read as that one (see
    /// [`Registry::read_as`](crate::schema::Registry::read_as)). A type the registry lacks is handed over as it is (counted
    /// `unvalidated`) unless `consume.strict_schemas` is set.
    fn read_as_handler(&self, event: &mut Envelope) -> Result<Reading, (&'static str, String)> {
        let reads = self.handler.reads(&event.event_type);
        let range = match &reads {
            Reads::Nothing => return Ok(Reading::NotRead),
            Reads::Latest => None,
            Reads::Versions(range) => Some(range),
        };
        let unread = |event: &Envelope| {
            let version = event.version;
            let range = range.filter(|range| !range.contains(&version))?;
            Some((
                "unknown_version",
                format!(
                    "{} v{version} is not read by this handler (it reads v{} to v{})",
                    event.event_type,
                    range.start(),
                    range.end()
                ),
            ))
        };
        let Some(registry) = self.schemas.registry() else {
            // No registry in use: handed over as it is, as before there were registries.
            return unread(event).map_or(Ok(Reading::Handle), Err);
        };
        let Some(latest) = registry.latest(&event.event_type) else {
            if self.config.strict_schemas {
                return Err((
                    "unknown_type",
                    format!(
                        "event type {:?} has no registered schema and consume.strict_schemas is \
                         on: register it (evstream schema push) or turn strict_schemas off",
                        event.event_type
                    ),
                ));
            }
            // `decode_into` left the JSON check to the registry, which has nothing to say.
            serde_json::from_str::<serde::de::IgnoredAny>(&event.data)
                .map_err(|e| ("invalid_json", format!("data is not valid JSON: {e}")))?;
            return unread(event).map_or(Ok(Reading::Unvalidated), Err);
        };
        let failed = |failure: crate::schema::SchemaFailure| (failure.code(), failure.to_string());
        let mut data: serde_json::Value = serde_json::from_str(&event.data)
            .map_err(|e| ("invalid_json", format!("data is not valid JSON: {e}")))?;
        let target = range.map_or(latest, |range| (*range.end()).min(latest));
        if event.version > target {
            // Newer than the handler reads: its data, unchanged, read as `target`.
            registry
                .read_as(&event.event_type, event.version, target, &data)
                .map_err(failed)?;
            event.version = target;
        } else {
            let version = registry
                .upgrade_to(&event.event_type, event.version, target, &mut data)
                .map_err(failed)?;
            if version != event.version {
                event.data = data.to_string();
                event.version = version;
            }
        }
        unread(event).map_or(Ok(Reading::Handle), Err)
    }
}

/// What [`Consumer::read_as_handler`] made of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Validated (when a registry is in use) and in a version the handler reads.
    Handle,
    /// Of a type the registry does not know: handed over without validation, counted.
    Unvalidated,
    /// Of a type the handler does not read: acknowledged unhandled.
    NotRead,
}

/// Runs a handler call, turning a panic into an error: a poison entry that makes the handler
/// panic is retried and dead-lettered like any failure instead of killing the consumer (and,
/// after a restart, the next one).
fn catch_panic(call: impl FnOnce() -> Result<(), HandlerError>) -> Result<(), HandlerError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(format!("the handler panicked: {message}").into())
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::Config;

    /// A handler whose choices the test sets, counting its calls.
    struct Scripted {
        reads: Reads,
        accept: Accept,
        outcome: fn() -> Result<(), HandlerError>,
        handled: usize,
    }

    impl Handler for Scripted {
        fn reads(&self, _: &str) -> Reads {
            self.reads.clone()
        }

        fn accepts(&self, _: &str, _: u32) -> Accept {
            self.accept
        }

        fn handle(&mut self, _: &Envelope, effects: &mut Effects) -> Result<(), HandlerError> {
            self.handled += 1;
            effects.apply(redis::cmd("INCR").arg("seen_by_handler"));
            (self.outcome)()
        }
    }

    const EVENT_ID: &str = "0192f0c1-8a2b-7c3d-8e4f-5a6b7c8d9e0f";

    fn consumer(outcome: fn() -> Result<(), HandlerError>) -> Consumer<Scripted> {
        let handler = Scripted {
            reads: Reads::Latest,
            accept: Accept::Handle,
            outcome,
            handled: 0,
        };
        // Nothing connects: classification needs no Redis.
        Consumer::new(&Config::default(), "verdicts", handler).unwrap()
    }

    fn ok() -> Result<(), HandlerError> {
        Ok(())
    }

    fn fails() -> Result<(), HandlerError> {
        Err("no such order".into())
    }

    fn panics() -> Result<(), HandlerError> {
        panic!("boom")
    }

    fn entry(deliveries: u64, extra: &[(&str, &str)], data: &str) -> RawEntry {
        let mut pairs = vec![
            ("event_id", EVENT_ID),
            ("event_type", "OrderCreated"),
            ("version", "v2"),
            ("correlation_id", "ord-1"),
            ("timestamp_ns", "1764000000000000000"),
            ("producer_id", "engine-1:x"),
            ("sequence", "42"),
            ("data", data),
        ];
        pairs.extend_from_slice(extra);
        RawEntry {
            id: "1-0".to_owned(),
            fields: Some(Fields::from_pairs(
                pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
            )),
            deliveries,
        }
    }

    fn good(deliveries: u64) -> RawEntry {
        entry(deliveries, &[], r#"{"orderId":"1"}"#)
    }

    fn classify<H: Handler>(consumer: &mut Consumer<H>, entry: &RawEntry) -> Verdict {
        consumer.classify(entry, &mut Envelope::default(), &mut Effects::default())
    }

    #[test]
    fn a_handled_event_is_applied_then_waits_then_is_a_duplicate() {
        let mut consumer = consumer(ok);
        let id = uuid::Uuid::parse_str(EVENT_ID).unwrap();
        let mut effects = Effects::default();
        let verdict = consumer.classify(&good(1), &mut Envelope::default(), &mut effects);
        assert_eq!(
            verdict,
            Verdict::Apply {
                event_id: id,
                unvalidated: false
            }
        );
        assert_eq!(consumer.handler.handled, 1);
        assert!(!effects.is_empty(), "the handler's effects are kept");
        // Its commit in flight: the same event in another entry waits for the outcome.
        assert_eq!(classify(&mut consumer, &good(1)), Verdict::LeavePending);
        consumer.recent.settle(id, true, Instant::now());
        assert_eq!(classify(&mut consumer, &good(1)), Verdict::Duplicate);
        assert_eq!(consumer.handler.handled, 1, "never handled twice");
    }

    #[test]
    fn a_deleted_entry_is_acknowledged() {
        let mut consumer = consumer(ok);
        let deleted = RawEntry {
            id: "1-0".to_owned(),
            fields: None,
            deliveries: 3,
        };
        assert_eq!(classify(&mut consumer, &deleted), Verdict::Deleted);
    }

    #[test]
    fn an_entry_delivered_too_often_is_dead_lettered_unhandled() {
        let mut consumer = consumer(ok);
        let max = consumer.config.max_deliveries;
        let verdict = classify(&mut consumer, &good(max + 1));
        assert!(
            matches!(
                verdict,
                Verdict::DeadLetter {
                    reason: "max_deliveries",
                    ..
                }
            ),
            "{verdict:?}"
        );
        assert_eq!(consumer.handler.handled, 0);
    }

    #[test]
    fn a_failure_is_retried_until_the_last_delivery() {
        let mut consumer = consumer(fails);
        let max = consumer.config.max_deliveries;
        let verdict = classify(&mut consumer, &good(1));
        assert_eq!(
            verdict,
            Verdict::Retry {
                reason: "handler_error",
                message: "no such order".to_owned()
            }
        );
        let verdict = classify(&mut consumer, &good(max));
        assert_eq!(
            verdict,
            Verdict::DeadLetter {
                reason: "handler_error",
                message: "no such order".to_owned()
            }
        );
    }

    #[test]
    fn a_panicking_handler_is_a_failure() {
        let mut consumer = consumer(panics);
        let verdict = classify(&mut consumer, &good(1));
        let Verdict::Retry { reason, message } = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(reason, "handler_error");
        assert!(message.contains("panicked: boom"), "{message}");
    }

    #[test]
    fn an_undecodable_entry_is_a_failure() {
        let mut consumer = consumer(ok);
        let verdict = classify(&mut consumer, &entry(1, &[], "{not json"));
        assert!(
            matches!(
                verdict,
                Verdict::Retry {
                    reason: "invalid_json",
                    ..
                }
            ),
            "{verdict:?}"
        );
        assert_eq!(consumer.handler.handled, 0);
    }

    #[test]
    fn what_the_handler_does_not_take_is_skipped_or_retried() {
        let mut consumer = consumer(ok);
        consumer.handler.reads = Reads::Nothing;
        assert_eq!(
            classify(&mut consumer, &good(1)),
            Verdict::Skip { counter: "skipped" }
        );
        consumer.handler.reads = Reads::Latest;
        consumer.handler.accept = Accept::Skip;
        assert_eq!(
            classify(&mut consumer, &good(1)),
            Verdict::Skip { counter: "skipped" }
        );
        consumer.handler.accept = Accept::UnknownVersion;
        let verdict = classify(&mut consumer, &good(1));
        assert!(
            matches!(
                verdict,
                Verdict::Retry {
                    reason: "unknown_version",
                    ..
                }
            ),
            "{verdict:?}"
        );
        consumer.handler.reads = Reads::Versions(1..=1);
        consumer.handler.accept = Accept::Handle;
        let verdict = classify(&mut consumer, &good(1));
        assert!(
            matches!(
                verdict,
                Verdict::Retry {
                    reason: "unknown_version",
                    ..
                }
            ),
            "no registry: v2 is outside what the handler reads: {verdict:?}"
        );
        assert_eq!(consumer.handler.handled, 0);
    }

    #[test]
    fn a_replay_for_another_group_is_skipped() {
        let mut consumer = consumer(ok);
        let other = entry(
            1,
            &[(decode::FIELD_REPLAY_FOR_GROUP, "someone-else")],
            r#"{"orderId":"1"}"#,
        );
        assert_eq!(
            classify(&mut consumer, &other),
            Verdict::Skip {
                counter: "replays_for_other_groups"
            }
        );
        let group = consumer.config.group.clone();
        let ours = entry(
            1,
            &[(decode::FIELD_REPLAY_FOR_GROUP, group.as_str())],
            r#"{"orderId":"1"}"#,
        );
        assert!(matches!(
            classify(&mut consumer, &ours),
            Verdict::Apply { .. }
        ));
    }
}
