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

/// What a slot's payload is, and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// A payload recorded in binary by `publish` (see [`super::tape`]), in the slot's own
    /// `inline` bytes: the drain writes its JSON.
    InlineTape,
    /// The same, too long for `inline`, in `data`.
    Tape,
    /// Bytes handed over by `publish_raw`, in `data`.
    Raw,
}

/// Bytes of tape a slot holds in itself. A typed order, fill or quote (tens of bytes unless
/// its strings are long) is recorded there, so its `publish` writes the slot's own cache
/// lines only: the ring's slot array is one allocation (on huge pages where the kernel has
/// them), where `data` is one of tens of thousands of heap blocks, each on a 4 KiB page that
/// is rarely in the TLB (see `evstream_ring`'s `pages`).
pub(crate) const INLINE_TAPE: usize = 128;

/// Up to `N` bytes stored inline.
pub(crate) struct InlineBytes<const N: usize> {
    len: u16,
    bytes: [u8; N],
}

impl<const N: usize> InlineBytes<N> {
    const fn new() -> Self {
        Self {
            len: 0,
            bytes: [0; N],
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Appends `bytes` if they fit; says whether they did.
    #[inline(always)]
    fn try_push(&mut self, bytes: &[u8]) -> bool {
        let at = usize::from(self.len);
        match self.bytes.get_mut(at..at + bytes.len()) {
            Some(room) => {
                copy_short(room, bytes);
                self.len = (at + bytes.len()) as u16;
                true
            }
            None => false,
        }
    }
}

/// `dst.copy_from_slice(src)` without a `memcpy` call for short slices: two fixed-size (so
/// inlined) copies that overlap in the middle. The slice form of `json::append`, which does
/// the same on a `Vec` (where it cannot take a slice of the spare capacity without `unsafe`).
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    #[inline(always)]
    fn overlapping<const K: usize>(dst: &mut [u8], src: &[u8]) {
        let n = src.len();
        dst[..K].copy_from_slice(&src[..K]);
        dst[n - K..n].copy_from_slice(&src[n - K..]);
    }
    match src.len() {
        0 => {}
        1 => dst[0] = src[0],
        2..=3 => overlapping::<2>(dst, src),
        4..=7 => overlapping::<4>(dst, src),
        8..=15 => overlapping::<8>(dst, src),
        16..=32 => overlapping::<16>(dst, src),
        33..=64 => overlapping::<32>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// Writes a slot's tape: into its `inline` bytes while they last, then into `data`.
pub(crate) struct SlotTape<'a> {
    slot: &'a mut EventSlot,
}

impl super::tape::TapeOut for SlotTape<'_> {
    #[inline]
    fn clear(&mut self) {
        self.slot.body = Body::InlineTape;
        self.slot.inline.len = 0;
    }

    #[inline]
    fn extend(&mut self, bytes: &[u8]) {
        let slot = &mut *self.slot;
        if slot.body == Body::InlineTape && slot.inline.try_push(bytes) {
            return;
        }
        self.spill().extend_from_slice(bytes);
    }

    #[inline(always)]
    fn write_parts(&mut self, fixed: &[u8], strings: &[&str]) {
        let total = fixed.len() + strings.iter().map(|s| s.len()).sum::<usize>();
        if total <= INLINE_TAPE {
            self.clear();
            let slot = &mut *self.slot;
            let mut fits = slot.inline.try_push(fixed);
            for s in strings {
                fits &= slot.inline.try_push(s.as_bytes());
            }
            debug_assert!(fits, "{total} bytes fit {INLINE_TAPE}");
        } else {
            let slot = &mut *self.slot;
            slot.body = Body::Tape;
            slot.data.write_parts(fixed, strings);
        }
    }

    fn spill(&mut self) -> &mut Vec<u8> {
        let slot = &mut *self.slot;
        if slot.body == Body::InlineTape {
            slot.data.clear();
            slot.data.extend_from_slice(slot.inline.as_slice());
            slot.body = Body::Tape;
        }
        &mut slot.data
    }
}

/// One pre-allocated ring slot.
pub(crate) struct EventSlot {
    pub(crate) event_type: InlineStr<{ super::MAX_EVENT_TYPE_LEN }>,
    pub(crate) correlation_id: InlineStr<{ super::MAX_CORRELATION_ID_LEN }>,
    /// When `publish` was called, in the clock's ticks (see [`super::clock`]).
    pub(crate) ticks: u64,
    pub(crate) body: Body,
    /// A short tape (see [`INLINE_TAPE`]).
    pub(crate) inline: InlineBytes<INLINE_TAPE>,
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
            inline: InlineBytes::new(),
            version: 1,
            publish_ns: 0,
            data: Vec::with_capacity(slot_bytes),
        }
    }

    /// Starts this slot's tape (an empty one, in the slot's own bytes).
    #[inline]
    pub(crate) fn tape(&mut self) -> SlotTape<'_> {
        let mut tape = SlotTape { slot: self };
        super::tape::TapeOut::clear(&mut tape);
        tape
    }

    /// The recorded tape, for a slot whose body is a tape.
    #[inline]
    pub(crate) fn tape_bytes(&self) -> &[u8] {
        match self.body {
            Body::InlineTape => self.inline.as_slice(),
            Body::Tape | Body::Raw => &self.data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory the configuration docs announce per slot: `slot_bytes` plus 384 (the
    /// ring's slot, stamp included, is a multiple of 128 bytes).
    #[test]
    fn a_slot_costs_its_payload_buffer_plus_at_most_384_bytes() {
        assert!(std::mem::size_of::<EventSlot>() + 16 <= 384);
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
