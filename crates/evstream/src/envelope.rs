//! The stream entry contract: the field names every evstream entry carries.
//!
//! Other programs (consumers in any language) depend on these names; see `docs/envelope.md`.
//! Changing one is a breaking change that needs a version bump.

/// UUIDv7, unique per event.
pub const FIELD_EVENT_ID: &str = "event_id";
/// Event type, e.g. `OrderCreated`.
pub const FIELD_EVENT_TYPE: &str = "event_type";
/// Schema version of `data`: `v1`, `v2`, …
pub const FIELD_VERSION: &str = "version";
/// Groups the events of one order's life; never truncated.
pub const FIELD_CORRELATION_ID: &str = "correlation_id";
/// Event time, wall-clock nanoseconds since the Unix epoch, in decimal.
pub const FIELD_TIMESTAMP_NS: &str = "timestamp_ns";
/// Stable id of the publishing process instance.
pub const FIELD_PRODUCER_ID: &str = "producer_id";
/// Per-producer sequence, consecutive over accepted events, in decimal.
pub const FIELD_SEQUENCE: &str = "sequence";
/// The JSON payload, byte for byte as serialized.
pub const FIELD_DATA: &str = "data";

/// All envelope fields, in the order evstream writes them.
pub const FIELDS: [&str; 8] = [
    FIELD_EVENT_ID,
    FIELD_EVENT_TYPE,
    FIELD_VERSION,
    FIELD_CORRELATION_ID,
    FIELD_TIMESTAMP_NS,
    FIELD_PRODUCER_ID,
    FIELD_SEQUENCE,
    FIELD_DATA,
];
