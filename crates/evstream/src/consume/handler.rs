//! What an application implements: the [`Handler`] of a consumer, the versions it reads
//! ([`Reads`]) and the events it takes ([`Accept`]).

use super::{Batch, Effects, Envelope, Outcome};

/// What a handler's failure carries: any error, shown in `dlq_error`.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Whether a handler takes events of a type and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Handle it.
    Handle,
    /// Not of interest to this handler: acknowledge without handling (counted as `skipped`).
    Skip,
    /// A type the handler knows in a version it does not: poison (`unknown_version`),
    /// retried, since a newer consumer may know it, then dead-lettered.
    UnknownVersion,
}

/// Which versions of an event type a handler reads: its reader schema, as in Avro and
/// Confluent's registry. With a schema registry, an older event is validated and migrated up
/// to the newest version the handler reads; a newer one is handed over *as* that version if
/// the type is registered as forward-compatible and its data passes that version's schema
/// (fields the reader does not know are left in `data`); anything else is poison
/// (`unreadable_version`). So pushing a new version never stops a running handler that does
/// not know it yet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reads {
    /// Not this type: its events are acknowledged unhandled (counted `skipped`) without
    /// validation, registered or not.
    Nothing,
    /// Whatever the registry's latest version is; every event is migrated to it. The default,
    /// for handlers that declare nothing; such a handler must know every version pushed.
    Latest,
    /// These versions; events are read as the newest of them. Without a registry (or for a
    /// type nobody registered) an event outside them is poison (`unknown_version`), retried
    /// since a newer consumer may read it.
    Versions(std::ops::RangeInclusive<u32>),
}

/// The application logic of a consumer.
pub trait Handler: Send {
    /// Which versions of `event_type` this handler reads; [`Reads::Nothing`] for a type it
    /// does not handle. Asked before any validation. Default: [`Reads::Latest`] for every
    /// type.
    fn reads(&self, event_type: &str) -> Reads {
        let _ = event_type;
        Reads::Latest
    }

    /// Whether to handle events of this type and version, as handed over (after migration,
    /// see [`reads`](Self::reads)). Default: all.
    fn accepts(&self, event_type: &str, version: u32) -> Accept {
        let _ = (event_type, version);
        Accept::Handle
    }

    /// Handles one event. Redis writes go into `effects` and are applied atomically with the
    /// entry's acknowledgement, exactly once. An error leaves the entry pending, to be retried
    /// and, after `max_deliveries`, dead-lettered; effects added before it are discarded.
    fn handle(&mut self, event: &Envelope, effects: &mut Effects) -> Result<(), HandlerError>;

    /// Called once per batch, after `handle` saw every entry of it and before the commit:
    /// effects that depend on the whole batch can still be added to each entry.
    fn end_batch(&mut self, batch: &mut Batch<'_>) {
        let _ = batch;
    }

    /// Called after each commit with what it did for every handled entry, in order: once
    /// per batch that reached [`end_batch`](Self::end_batch), batches in order. New entries
    /// are processed pipelined, one commit in flight: a batch's `on_commit` may come after
    /// the next batch's `handle` and `end_batch` calls (never later than that).
    fn on_commit(&mut self, outcomes: &[Outcome]) {
        let _ = outcomes;
    }

    /// Called after [`on_commit`](Self::on_commit): effects derived from the outcomes (results
    /// computed from the replies). They are written right away, in one atomic call, but not
    /// as part of any entry's acknowledgement: if that call fails they are lost (logged), never
    /// applied twice.
    fn flush(&mut self, effects: &mut Effects) {
        let _ = effects;
    }
}
