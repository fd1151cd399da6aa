//! What one ring slot holds, and the size-bounded writer that serializes into it.

/// A string of at most `N` bytes stored inline, so filling a slot never allocates.
#[derive(Clone, Copy)]
pub(crate) struct InlineStr<const N: usize> {
    len: u16,
    bytes: [u8; N],
}

impl<const N: usize> InlineStr<N> {
    pub(crate) const fn new() -> Self {
        Self {
            len: 0,
            bytes: [0; N],
        }
    }

    /// Copies `value` in; the caller has checked `value.len() <= N`.
    #[inline]
    pub(crate) fn set(&mut self, value: &str) {
        debug_assert!(value.len() <= N && N <= u16::MAX as usize);
        self.bytes[..value.len()].copy_from_slice(value.as_bytes());
        self.len = value.len() as u16;
    }

    #[inline]
    pub(crate) fn as_str(&self) -> &str {
        // Only ever set from a `&str`, so the bytes are valid UTF-8; the check is a cheap
        // scan of at most N bytes and keeps this crate free of `unsafe`.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

/// How the payload bytes in a slot were produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// Written by evstream from a `Serialize` value: valid JSON by construction.
    Json,
    /// Handed over pre-serialized by the caller: checked by the shipper, and sent to the dead
    /// letter queue if it is not valid JSON.
    Raw,
}

/// What a slot's `data` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// A payload recorded in binary by `publish` (see [`super::tape`]): the drain writes
    /// its JSON.
    Tape,
    /// Bytes handed over by `publish_raw`.
    Raw,
}

/// One pre-allocated ring slot.
pub(crate) struct EventSlot {
    pub(crate) event_type: InlineStr<{ super::MAX_EVENT_TYPE_LEN }>,
    pub(crate) correlation_id: InlineStr<{ super::MAX_CORRELATION_ID_LEN }>,
    /// When `publish` was called, in the clock's ticks (see [`super::clock`]).
    pub(crate) ticks: u64,
    pub(crate) body: Body,
    /// Schema version of the payload (the envelope's `version`, `v<N>`).
    pub(crate) version: u32,
    /// Nanoseconds the `publish` call took, for sampled calls; 0 otherwise.
    pub(crate) publish_ns: u32,
    /// The tape, or raw payload bytes; capacity `slot_bytes` from the start. The drain swaps
    /// raw bytes out whole and writes a tape's JSON into a buffer of its own.
    pub(crate) data: Vec<u8>,
}

impl EventSlot {
    pub(crate) fn with_capacity(slot_bytes: usize) -> Self {
        Self {
            event_type: InlineStr::new(),
            correlation_id: InlineStr::new(),
            ticks: 0,
            body: Body::Raw,
            version: 1,
            publish_ns: 0,
            data: Vec::with_capacity(slot_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory the configuration docs announce per slot: `slot_bytes` plus about 256.
    #[test]
    fn a_slot_costs_its_payload_buffer_plus_at_most_256_bytes() {
        assert!(std::mem::size_of::<EventSlot>() <= 256);
    }

    #[test]
    fn inline_str_round_trips() {
        let mut s = InlineStr::<8>::new();
        assert_eq!(s.as_str(), "");
        s.set("héllo");
        assert_eq!(s.as_str(), "héllo");
        s.set("ab");
        assert_eq!(s.as_str(), "ab");
    }
}
