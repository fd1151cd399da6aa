//! Dead letters over every partition of a stream: listed, and replayed once their cause is
//! fixed. What `evstream dlq list` and `evstream dlq replay` do; [`dlq`] has the
//! steps on one dead-letter stream.
//!
//! Each partition has its own dead-letter stream (`<partition key>:dlq`) on the server that
//! holds it, and an entry id is unique only within one: with partitions, ids in
//! [`Selection::ids`] are given as `<dlq key>/<id>` (as [`DlqListing::dlq`] and
//! [`ReplayOutcome::dlq`] name them); without, a bare id does too.
//!
//! ```no_run
//! # async fn run() -> Result<(), evstream::DlqError> {
//! use evstream::ops::dlq::Selection;
//! use evstream::ops::replay;
//!
//! let mut config = evstream::Config::default();
//! config.redis.partitions = Some(3);
//! let selection = Selection { reasons: vec!["handler_error".into()], ..Selection::default() };
//! let summary = replay::replay_dead_letters(&config, &selection, 1000, false).await?;
//! println!("{} replayed, {} refused", summary.replayed, summary.refused);
//! if let Some(error) = &summary.error {
//!     eprintln!("stopped half-way: {error}");
//! }
//! # Ok(()) }
//! ```

use serde::Serialize;

use super::dlq::{self, Order, Replayed, Scan, Selection};
use crate::config::Config;
use crate::error::DlqError;
use crate::partitions::{connect, CALL_TIMEOUT};
use crate::schema::Registry;

/// The dead letters of one partition (of the stream, without partitions).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DlqListing {
    /// The dead-letter stream's key.
    pub dlq: String,
    /// What the scan found in it.
    #[serde(flatten)]
    pub scan: Scan,
}

impl DlqListing {
    /// The ids asked for that are not in this dead-letter stream, as `<dlq key>/<id>`.
    pub fn missing(&self) -> impl Iterator<Item = String> + '_ {
        self.scan
            .missing
            .iter()
            .map(|id| format!("{}/{id}", self.dlq))
    }
}

/// Reads the dead letters `selection` selects in every partition's dead-letter stream, in
/// `order`, at most `count` of each. Partitions none of [`Selection::ids`] names are left
/// out.
pub async fn list_dead_letters(
    config: &Config,
    selection: &Selection,
    order: Order,
    count: usize,
) -> Result<Vec<DlqListing>, DlqError> {
    let parts = config.partition_configs();
    let mut listed = Vec::new();
    for part in &parts {
        let dlq = crate::keys::dead_letters(&part.redis.stream);
        let Some(selection) = for_partition(selection, &dlq, parts.len() > 1)? else {
            continue; // the ids name other partitions' dead letters
        };
        let (mut connection, _) = connect(part, &redis::AsyncConnectionConfig::new()).await?;
        let scan = dlq::scan(
            &mut connection,
            &dlq,
            &selection,
            order,
            count,
            CALL_TIMEOUT,
        )
        .await
        .map_err(|source| DlqError::Read {
            dlq: dlq.clone(),
            source,
        })?;
        listed.push(DlqListing { dlq, scan });
    }
    Ok(listed)
}

/// What a replay did with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReplayOutcome {
    /// The dead-letter stream's key.
    pub dlq: String,
    /// The dead letter's entry id in it.
    pub id: String,
    /// Its `dlq_reason`.
    pub reason: String,
    /// What was done; none in a dry run.
    #[serde(flatten)]
    pub replayed: Option<Replayed>,
}

/// What a replay over every partition did.
#[derive(Debug, Default, Serialize)]
#[non_exhaustive]
pub struct ReplaySummary {
    /// Whether nothing was changed (the selection only).
    pub dry_run: bool,
    /// Dead letters selected (in [`outcomes`](Self::outcomes)).
    pub selected: usize,
    /// Appended back to their stream.
    pub replayed: usize,
    /// Refused at the replay (their schema problem, or what the replay script said).
    pub refused: usize,
    /// Gone meanwhile (replayed or trimmed by someone else).
    pub gone: usize,
    /// Whether more dead letters matched than the limit allowed.
    pub truncated: bool,
    /// Each selected dead letter, oldest first within each partition.
    pub outcomes: Vec<ReplayOutcome>,
    /// Matched, but refused before any replay (the first 1,000 per stream named).
    pub not_replayable: Vec<ReplayOutcome>,
    /// Matched and refused before any replay, named above or not.
    pub not_replayable_count: u64,
    /// Ids asked for that are in no dead-letter stream, as `<dlq key>/<id>`.
    #[serde(skip)]
    pub missing: Vec<String>,
    /// What stopped the replay half-way, if something did (what was replayed before stays;
    /// the partitions after it were not looked at).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_error"
    )]
    pub error: Option<DlqError>,
}

impl ReplaySummary {
    /// Whether some selected dead letters were left where they are and need a person's
    /// look: refused at the replay or before it.
    pub fn has_refusals(&self) -> bool {
        self.refused > 0 || self.not_replayable_count > 0
    }
}

fn serialize_error<S: serde::Serializer>(
    error: &Option<DlqError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match error {
        Some(error) => serializer.collect_str(error),
        None => serializer.serialize_none(),
    }
}

/// Replays the dead letters `selection` selects (only those [`dlq::replay`] would not refuse:
/// [`Selection::replayable_only`] is set here), oldest first, at most `limit` of each
/// partition, each back into its own partition; with `dry_run`, only selects them.
///
/// A shipper's dead letter refused by the schema registry is checked against the registry
/// first and refused again while it still fails. Connecting to a partition's server fails
/// the whole call; a Redis error while replaying stops the replay and is returned in
/// [`ReplaySummary::error`], with what was done before.
pub async fn replay_dead_letters(
    config: &Config,
    selection: &Selection,
    limit: usize,
    dry_run: bool,
) -> Result<ReplaySummary, DlqError> {
    let parts = config.partition_configs();
    let mut summary = ReplaySummary {
        dry_run,
        ..ReplaySummary::default()
    };
    // A shipper's schema refusals are checked against the registry before they go back
    // (read once: it is one key for every partition).
    let registry: Result<Registry, String> =
        match connect(config, &redis::AsyncConnectionConfig::new()).await {
            Ok((mut connection, _)) => crate::schema::load(&mut connection)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
    let replay = Replay {
        limit,
        dry_run,
        registry,
    };
    for part in &parts {
        let stream = &part.redis.stream;
        let dlq = crate::keys::dead_letters(stream);
        let Some(selection) = for_partition(selection, &dlq, parts.len() > 1)? else {
            continue;
        };
        let selection = Selection {
            replayable_only: true,
            ..selection
        };
        let (mut connection, _) = connect(part, &redis::AsyncConnectionConfig::new()).await?;
        let done = replay
            .partition(&mut connection, stream, &dlq, &selection, &mut summary)
            .await;
        if let Err(source) = done {
            summary.error = Some(DlqError::Replay {
                dlq,
                stream: stream.clone(),
                source,
            });
            break;
        }
    }
    summary.selected = summary.outcomes.len();
    for outcome in &summary.outcomes {
        match outcome.replayed {
            Some(Replayed::Appended(_)) => summary.replayed += 1,
            Some(Replayed::Refused(_)) => summary.refused += 1,
            Some(Replayed::Gone) => summary.gone += 1,
            None => {}
        }
    }
    Ok(summary)
}

/// How [`replay_dead_letters`] replays, the same for every partition.
struct Replay {
    /// At most this many dead letters of each partition.
    limit: usize,
    /// Select only.
    dry_run: bool,
    /// To check a shipper's schema refusals against (or why it could not be read).
    registry: Result<Registry, String>,
}

impl Replay {
    /// One partition's part of [`replay_dead_letters`], noted in `summary`.
    async fn partition(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
        stream: &str,
        dlq: &str,
        selection: &Selection,
        summary: &mut ReplaySummary,
    ) -> Result<(), crate::OpsError> {
        // Oldest first: replayed events keep their order among themselves.
        let scan = dlq::scan(
            connection,
            dlq,
            selection,
            Order::OldestFirst,
            self.limit,
            CALL_TIMEOUT,
        )
        .await?;
        summary.truncated |= scan.truncated;
        summary.not_replayable_count += scan.not_replayable_count;
        summary
            .missing
            .extend(scan.missing.iter().map(|id| format!("{dlq}/{id}")));
        for refused in &scan.not_replayable {
            summary.not_replayable.push(ReplayOutcome {
                dlq: dlq.to_owned(),
                id: refused.id.clone(),
                reason: refused.reason.clone(),
                replayed: Some(Replayed::Refused(refused.why.clone())),
            });
        }
        for letter in &scan.letters {
            let problem = match &self.registry {
                Ok(registry) => letter.schema_problem(registry),
                Err(error) if letter.needs_schema_check() => Some(format!(
                    "the schema registry could not be read to check it: {error}"
                )),
                Err(_) => None,
            };
            let replayed = if let Some(why) = problem {
                Some(Replayed::Refused(why))
            } else if self.dry_run {
                None
            } else {
                Some(dlq::replay(connection, stream, dlq, &letter.id, CALL_TIMEOUT).await?)
            };
            summary.outcomes.push(ReplayOutcome {
                dlq: dlq.to_owned(),
                id: letter.id.clone(),
                reason: letter.reason().to_owned(),
                replayed,
            });
        }
        Ok(())
    }
}

/// `selection` for the dead-letter stream `dlq`, with only the ids meant for it (given as
/// `<dlq key>/<id>`, or bare when the stream has one dead-letter stream); none when ids
/// were given and none is meant for it.
fn for_partition(
    selection: &Selection,
    dlq: &str,
    partitioned: bool,
) -> Result<Option<Selection>, DlqError> {
    let mut mine = Vec::new();
    for id in &selection.ids {
        match id.rsplit_once('/') {
            Some((key, id)) if key == dlq => mine.push(id.to_owned()),
            Some(_) => {}
            None if partitioned => return Err(DlqError::AmbiguousId { id: id.clone() }),
            None => mine.push(id.clone()),
        }
    }
    if mine.is_empty() && !selection.ids.is_empty() {
        return Ok(None);
    }
    Ok(Some(Selection {
        ids: mine,
        ..selection.clone()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_go_to_the_dead_letter_stream_they_name() {
        let selection = Selection {
            ids: vec!["events:{0}:dlq/1-0".into(), "events:{1}:dlq/2-0".into()],
            ..Selection::default()
        };
        let mine = for_partition(&selection, "events:{1}:dlq", true).unwrap();
        assert_eq!(mine.unwrap().ids, ["2-0"]);
        assert!(for_partition(&selection, "events:{2}:dlq", true)
            .unwrap()
            .is_none());
        let bare = Selection {
            ids: vec!["1-0".into()],
            ..Selection::default()
        };
        assert_eq!(
            for_partition(&bare, "events:dlq", false)
                .unwrap()
                .unwrap()
                .ids,
            ["1-0"]
        );
        assert!(matches!(
            for_partition(&bare, "events:{0}:dlq", true),
            Err(DlqError::AmbiguousId { .. })
        ));
        let all = for_partition(&Selection::default(), "events:dlq", false).unwrap();
        assert_eq!(all, Some(Selection::default()));
    }
}
