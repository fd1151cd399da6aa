//! Dead letters read back, and replayed into the stream once their cause is fixed.
//!
//! The dead-letter stream (`<stream>:dlq`, fields in `docs/envelope.md`) keeps what the
//! shipper could not append and what consumers could not process. [`scan`] reads it with a
//! [`Selection`]; [`replay`] puts one dead letter back: its original fields are appended to
//! the stream and the dead letter is deleted, in one script, so that concurrent replays
//! cannot append it twice and a failure in between cannot lose it. The replayed entry keeps
//! its `event_id` and `sequence` and comes after entries appended since, out of its
//! producer's sequence order.
//!
//! A consumer's dead letter goes back for its group only: the entry carries
//! `replay_for_group` (its `dlq_group`), and the consumers of every other group, which
//! processed the original entry, acknowledge it without handling it. A shipper's dead letter
//! never reached the stream and goes back for every group.
//!
//! Refused ([`DeadLetter::not_replayable`], checked again by the script): `effect_failed`
//! records (their entry was processed; replaying would apply its other effects again), dead
//! letters some fields were left out of (too large), those missing an envelope field,
//! `invalid_json` ones of either stage (they would fail again), and a consumer's without
//! `dlq_group`.
//!
//! ```no_run
//! # async fn run() -> Result<(), evstream::OpsError> {
//! use std::time::Duration;
//! use evstream::ops::dlq::{self, Order, Replayed, Selection};
//!
//! let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
//! let mut connection = client.get_multiplexed_async_connection().await.unwrap();
//! let timeout = Duration::from_secs(5);
//! let selection = Selection { reasons: vec!["handler_error".into()], ..Selection::default() };
//! let scan = dlq::scan(&mut connection, "events:dlq", &selection, Order::OldestFirst, 1000, timeout).await?;
//! for letter in &scan.letters {
//!     if let Replayed::Appended(id) = dlq::replay(&mut connection, "events", "events:dlq", &letter.id, timeout).await? {
//!         println!("{} is back as {id}", letter.id);
//!     }
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;
use serde::Serialize;

use super::observe::text;
use crate::error::OpsError;

const REPLAY_SCRIPT: &str = include_str!("dlq_replay.lua");

/// Dead letters read per call while scanning.
const PAGE: usize = 200;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its entry id in the dead-letter stream.
    pub id: String,
    /// Every field in stored order (the original entry's and the `dlq_*` ones), values as
    /// text (bytes that are not UTF-8 shown as U+FFFD). Serialized as one JSON object, in
    /// this order.
    #[serde(serialize_with = "as_object")]
    pub fields: Vec<(String, String)>,
}

fn as_object<S: serde::Serializer>(
    fields: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(fields.iter().map(|(name, value)| (name, value)))
}

impl DeadLetter {
    /// The value of field `name`, if present.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `dlq_reason`, or "" if missing.
    pub fn reason(&self) -> &str {
        self.field("dlq_reason").unwrap_or_default()
    }

    /// `dlq_stage` (`ship` or `consume`), or "" if missing.
    pub fn stage(&self) -> &str {
        self.field("dlq_stage").unwrap_or_default()
    }

    /// Why [`replay`] would refuse this dead letter, if it would (the replay script checks
    /// the same, atomically).
    pub fn not_replayable(&self) -> Option<String> {
        if self.reason() == "effect_failed" {
            return Some(
                "effect_failed: the entry was processed and acknowledged, only one of its \
                 effects failed; replaying it would apply the others again"
                    .to_owned(),
            );
        }
        if self.field("dlq_data_bytes").is_some() || self.field("dlq_fields_dropped").is_some() {
            return Some(
                "fields were left out of this dead letter (too large or too many): the \
                 original entry cannot be rebuilt from it"
                    .to_owned(),
            );
        }
        if let Some(missing) = crate::envelope::FIELDS
            .iter()
            .filter(|&&name| name != crate::envelope::FIELD_CORRELATION_ID)
            .find(|&&name| self.field(name).is_none())
        {
            return Some(format!(
                "it has no {missing} field: the entry would fail again"
            ));
        }
        // Either stage: a consumer's goes back for its group, which gave up on it for the
        // same reason; a shipper's would reach every group.
        if self.reason() == "invalid_json" {
            return Some("its data is not JSON: it would be dead-lettered again".to_owned());
        }
        if self.stage() == "consume" && self.field("dlq_group").is_none_or(str::is_empty) {
            return Some(
                "it names no dlq_group: the groups that processed the original entry could \
                 not tell it apart"
                    .to_owned(),
            );
        }
        None
    }

    /// Whether this is a shipper's dead letter refused by its schema, to be checked
    /// ([`schema_problem`](Self::schema_problem)) before it goes back.
    pub fn needs_schema_check(&self) -> bool {
        self.stage() == "ship"
            && matches!(
                self.reason(),
                "unknown_type" | "unknown_version" | "invalid_schema"
            )
    }

    /// For a shipper's dead letter refused by its schema (`unknown_type`, `unknown_version`,
    /// `invalid_schema`): why it still fails `registry`, if it does. Replayed as it is, it
    /// would reach the stream unchecked.
    pub fn schema_problem(&self, registry: &crate::schema::Registry) -> Option<String> {
        if !self.needs_schema_check() {
            return None;
        }
        if registry.summary().is_empty() {
            return Some(
                "no schema registry in Redis to check it against (evstream schema push)".to_owned(),
            );
        }
        let version = self
            .field("version")
            .and_then(|v| v.strip_prefix('v'))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        let data: serde_json::Value = match serde_json::from_str(self.field("data")?) {
            Ok(data) => data,
            Err(error) => return Some(format!("its data is not JSON: {error}")),
        };
        registry
            .validate(self.field("event_type")?, version, &data)
            .err()
            .map(|failure| format!("it still fails the registry: {failure}"))
    }
}

/// Which dead letters a scan returns. Empty parts select everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these `dlq_reason`s.
    pub reasons: Vec<String>,
    /// Only this `dlq_stage`.
    pub stage: Option<String>,
    /// Only these entry ids of the dead-letter stream (read directly, not scanned).
    pub ids: Vec<String>,
    /// Only those [`replay`] would not refuse: a replay's limit then counts only letters it
    /// can put back, however many old refused ones lie before them.
    pub replayable_only: bool,
}

impl Selection {
    /// Whether the reasons and the stage select `letter` (not the ids, not replayability).
    fn matches(&self, letter: &DeadLetter) -> bool {
        (self.reasons.is_empty() || self.reasons.iter().any(|r| r == letter.reason()))
            && self.stage.as_deref().is_none_or(|s| s == letter.stage())
    }
}

/// Refused letters a scan names at most ([`Scan::not_replayable`]); the rest are counted.
const NOT_REPLAYABLE_NAMED: usize = 1000;

/// The order of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first: what just failed.
    NewestFirst,
    /// Oldest first: the order to replay in, so that replayed events keep theirs.
    OldestFirst,
}

/// A dead letter a scan left out because [`replay`] would refuse it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NotReplayable {
    /// Its entry id in the dead-letter stream.
    pub id: String,
    /// Its `dlq_reason` ("" if missing).
    pub reason: String,
    /// Why it is refused ([`DeadLetter::not_replayable`]).
    pub why: String,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Scan {
    /// The dead letters selected, at most the limit asked for.
    pub letters: Vec<DeadLetter>,
    /// Whether the scan stopped at the limit with more dead letters left unread.
    pub truncated: bool,
    /// Ids asked for ([`Selection::ids`]) that are not in the dead-letter stream.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Letters the selection matched but left out because [`replay`] would refuse them
    /// ([`Selection::replayable_only`]), with why (the first 1,000).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_replayable: Vec<NotReplayable>,
    /// How many letters were left out so, named above or not.
    pub not_replayable_count: u64,
}

impl Scan {
    /// `letter` if `selection` picks it; a letter left out only for being refused by
    /// [`replay`] is noted in [`not_replayable`](Self::not_replayable).
    fn consider(&mut self, selection: &Selection, letter: DeadLetter) -> Option<DeadLetter> {
        if !selection.matches(&letter) {
            return None;
        }
        if selection.replayable_only {
            if let Some(why) = letter.not_replayable() {
                self.not_replayable_count += 1;
                if self.not_replayable.len() < NOT_REPLAYABLE_NAMED {
                    self.not_replayable.push(NotReplayable {
                        reason: letter.reason().to_owned(),
                        id: letter.id,
                        why,
                    });
                }
                return None;
            }
        }
        Some(letter)
    }
}

/// Reads the dead letters of `dlq` that `selection` selects, in `order`, at most `limit`.
pub async fn scan(
    connection: &mut MultiplexedConnection,
    dlq: &str,
    selection: &Selection,
    order: Order,
    limit: usize,
    timeout: Duration,
) -> Result<Scan, OpsError> {
    let mut found = Scan::default();
    if !selection.ids.is_empty() {
        for id in &selection.ids {
            let what = format!("XRANGE {dlq} {id} {id}");
            let cmd = redis::cmd("XRANGE").arg(dlq).arg(id).arg(id).clone();
            let letters = entries(
                &what,
                crate::redis::call(connection, &what, &cmd, timeout).await?,
            )?;
            match letters.into_iter().find(|letter| letter.id == *id) {
                None => found.missing.push(id.clone()),
                Some(letter) => {
                    if let Some(letter) = found.consider(selection, letter) {
                        found.letters.push(letter);
                    }
                }
            }
        }
        if order == Order::NewestFirst {
            found.letters.sort_by(|a, b| compare_ids(&b.id, &a.id));
        } else {
            found.letters.sort_by(|a, b| compare_ids(&a.id, &b.id));
        }
        found.truncated = found.letters.len() > limit;
        found.letters.truncate(limit);
        return Ok(found);
    }
    // Pages from one end, each starting past the last id seen (exclusive range).
    let (command, mut from, to) = match order {
        Order::NewestFirst => ("XREVRANGE", "+".to_owned(), "-"),
        Order::OldestFirst => ("XRANGE", "-".to_owned(), "+"),
    };
    loop {
        let what = format!("{command} {dlq}");
        let cmd = redis::cmd(command)
            .arg(dlq)
            .arg(&from)
            .arg(to)
            .arg("COUNT")
            .arg(PAGE)
            .clone();
        let page = entries(
            &what,
            crate::redis::call(connection, &what, &cmd, timeout).await?,
        )?;
        let last_page = page.len() < PAGE;
        if let Some(last) = page.last() {
            from = format!("({}", last.id);
        }
        for letter in page {
            let Some(letter) = found.consider(selection, letter) else {
                continue;
            };
            if found.letters.len() == limit {
                found.truncated = true;
                return Ok(found);
            }
            found.letters.push(letter);
        }
        if last_page {
            return Ok(found);
        }
    }
}

/// What [`replay`] did with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Replayed {
    /// Appended to the stream with this new entry id, and deleted from the dead letters.
    Appended(String),
    /// No such dead letter (replayed or trimmed meanwhile, or a wrong id): nothing done.
    Gone,
    /// Left where it is, for this reason.
    Refused(String),
}

/// Puts dead letter `id` of `dlq` back into `stream` (see the module documentation).
pub async fn replay(
    connection: &mut MultiplexedConnection,
    stream: &str,
    dlq: &str,
    id: &str,
    timeout: Duration,
) -> Result<Replayed, OpsError> {
    let what = format!("replaying dead letter {id} of {dlq} into {stream}");
    let cmd = redis::cmd("EVAL")
        .arg(REPLAY_SCRIPT)
        .arg(2)
        .arg(dlq)
        .arg(stream)
        .arg(id)
        .clone();
    let reply: Vec<String> = crate::redis::call(connection, &what, &cmd, timeout).await?;
    match reply.as_slice() {
        [outcome, new_id] if outcome == "replayed" => Ok(Replayed::Appended(new_id.clone())),
        [outcome] if outcome == "gone" => Ok(Replayed::Gone),
        [outcome, why] if outcome == "refused" => Ok(Replayed::Refused(why.clone())),
        _ => Err(OpsError::Reply {
            what,
            detail: format!("{reply:?}"),
        }),
    }
}

/// Stream entries (`[[id, [field, value, …]], …]`) as dead letters.
fn entries(what: &str, value: Value) -> Result<Vec<DeadLetter>, OpsError> {
    let bad = |detail: &str| OpsError::Reply {
        what: what.to_owned(),
        detail: detail.to_owned(),
    };
    let Value::Array(items) = value else {
        return Err(bad("not an array"));
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(mut parts) = item else {
                return Err(bad("an entry that is not an array"));
            };
            let fields = parts.pop().unwrap_or(Value::Nil);
            let id = parts.pop().map(|v| text(&v)).unwrap_or_default();
            let fields = match fields {
                Value::Array(values) => values
                    .chunks(2)
                    .map(|pair| (text(&pair[0]), pair.get(1).map(text).unwrap_or_default()))
                    .collect(),
                Value::Map(map) => map.iter().map(|(k, v)| (text(k), text(v))).collect(),
                _ => return Err(bad("entry fields that are not an array")),
            };
            Ok(DeadLetter { id, fields })
        })
        .collect()
}

/// Orders stream entry ids (`ms-seq`) numerically.
fn compare_ids(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a).cmp(&parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_matches_reason_and_stage() {
        let letter = DeadLetter {
            id: "1-0".into(),
            fields: vec![
                ("event_type".into(), "OrderFilled".into()),
                ("dlq_reason".into(), "handler_error".into()),
                ("dlq_stage".into(), "consume".into()),
            ],
        };
        assert!(Selection::default().matches(&letter));
        let reasons = |r: &[&str]| Selection {
            reasons: r.iter().map(|s| s.to_string()).collect(),
            ..Selection::default()
        };
        assert!(reasons(&["invalid_json", "handler_error"]).matches(&letter));
        assert!(!reasons(&["invalid_json"]).matches(&letter));
        let stage = |s: &str| Selection {
            stage: Some(s.into()),
            ..Selection::default()
        };
        assert!(stage("consume").matches(&letter));
        assert!(!stage("ship").matches(&letter));
    }

    #[test]
    fn what_replay_refuses_is_known_before_it_runs() {
        let envelope: Vec<(String, String)> = crate::envelope::FIELDS
            .iter()
            .map(|&name| (name.to_owned(), "x".to_owned()))
            .collect();
        let letter = |extra: &[(&str, &str)], drop: Option<&str>| DeadLetter {
            id: "1-0".into(),
            fields: envelope
                .iter()
                .filter(|(name, _)| Some(name.as_str()) != drop)
                .cloned()
                .chain(
                    extra
                        .iter()
                        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
                )
                .collect(),
        };
        let consume = |reason| {
            vec![
                ("dlq_stage", "consume"),
                ("dlq_reason", reason),
                ("dlq_group", "g"),
            ]
        };
        assert_eq!(
            letter(&consume("handler_error"), None).not_replayable(),
            None
        );
        assert_eq!(
            letter(&consume("handler_error"), Some("correlation_id")).not_replayable(),
            None,
            "correlation_id may be absent"
        );
        let refused =
            |extra: &[(&str, &str)], drop| letter(extra, drop).not_replayable().unwrap_or_default();
        assert!(refused(&consume("effect_failed"), None).starts_with("effect_failed"));
        let mut too_large = consume("too_large");
        too_large.push(("dlq_data_bytes", "20000000"));
        assert!(refused(&too_large, Some("data")).contains("left out"));
        assert!(refused(&consume("missing_field"), Some("event_id")).contains("no event_id"));
        assert!(refused(
            &[("dlq_stage", "ship"), ("dlq_reason", "invalid_json")],
            None
        )
        .contains("not JSON"));
        // Issue 19: a consumer's too; its group would dead-letter it again.
        assert!(refused(&consume("invalid_json"), None).contains("not JSON"));
        assert!(refused(
            &[("dlq_stage", "consume"), ("dlq_reason", "handler_error")],
            None
        )
        .contains("dlq_group"));
        assert!(letter(
            &[("dlq_stage", "ship"), ("dlq_reason", "unknown_type")],
            None
        )
        .needs_schema_check());
    }

    #[test]
    fn entry_ids_sort_by_number_not_text() {
        let mut ids = vec!["10-0", "9-1", "9-10", "9-2"];
        ids.sort_by(|a, b| compare_ids(a, b));
        assert_eq!(ids, ["9-1", "9-2", "9-10", "10-0"]);
    }
}
