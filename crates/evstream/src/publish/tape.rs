//! Deferred JSON: the engine's thread records what the serializer would write, in binary; the
//! shipper's thread replays the record into JSON text.
//!
//! Formatting is what costs in a `publish` call (a float alone is tens of nanoseconds), so
//! the call only copies: structural bytes as themselves, strings as length and bytes,
//! numbers as their eight (or four, or sixteen) bytes, and a struct field's name with its
//! separators as one op.
//! This is how low-latency loggers (NanoLog, Quill, quicklog) keep formatting off the hot
//! path. The replay drives the same [`JsonWriter`] the serializer would have, with the same
//! calls, so the JSON is byte-identical to formatting in the call (a property test checks
//! this against `serde_json`).
//!
//! The size limit is enforced at record time, exactly: the recorder keeps a lower and an
//! upper bound of the JSON's length. An event whose lower bound passes the limit is refused
//! at once (nothing big is copied); one whose upper bound passes it is measured exactly,
//! which only events near the limit pay for.

use std::fmt::{self, Display};

use serde::Serialize;

use super::events::{MarketDataUpdate, OrderCreated, OrderFilled, Side};
use super::json::{display_failed, JsonError, JsonWriter, Literal, Serializer, Sink};

type Result<T = ()> = std::result::Result<T, JsonError>;

// Opcodes. The structural bytes `{ } [ ] , : "` are their own opcodes.
const STR: u8 = 1;
const FIELD: u8 = 3;
const NEXT_FIELD: u8 = 4;
const I64: u8 = 5;
const U64: u8 = 6;
const I128: u8 = 7;
const U128: u8 = 8;
const F64: u8 = 9;
const F32: u8 = 10;
const NULL: u8 = 11;
const TRUE: u8 = 12;
const FALSE: u8 = 13;
// Typed events, each a whole tape of its own layout (see [`Binary`]).
const ORDER_CREATED: u8 = 14;
const ORDER_FILLED: u8 = 15;
const MARKET_DATA: u8 = 16;

/// Longest JSON text of one number, by type.
const I64_TEXT: usize = 20;
const I128_TEXT: usize = 40;
const F64_TEXT: usize = 24;
const F32_TEXT: usize = 16;

/// Whether a recorded payload is known to fit the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    /// Its JSON is at most the limit.
    Fits,
    /// Its JSON may pass the limit: measure it.
    Unsure,
}

/// Bytes a [`Recorder`] stages on the stack before copying them into the slot.
const STAGE: usize = 256;

/// Where a tape is written: a slot (its own bytes, then its buffer `Vec`), or a bare `Vec`
/// (the slot's buffer once a tape spilled, and the tests').
pub(crate) trait TapeOut {
    /// Empties the tape.
    fn clear(&mut self);
    /// Appends `bytes`.
    fn extend(&mut self, bytes: &[u8]);
    /// Replaces the tape with `fixed` followed by `strings`.
    fn write_parts(&mut self, fixed: &[u8], strings: &[&str]);
    /// The tape as a `Vec`, for writes that patch what they wrote (`Display` values).
    fn spill(&mut self) -> &mut Vec<u8>;
}

impl TapeOut for Vec<u8> {
    #[inline]
    fn clear(&mut self) {
        Vec::clear(self);
    }

    #[inline]
    fn extend(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    #[inline(always)]
    fn write_parts(&mut self, fixed: &[u8], strings: &[&str]) {
        Vec::clear(self);
        self.extend_from_slice(fixed);
        for s in strings {
            super::json::append(self, s.as_bytes());
        }
    }

    fn spill(&mut self) -> &mut Vec<u8> {
        self
    }
}

/// The [`Sink`] of the engine's thread: records into a slot's tape.
///
/// The recording is staged in a buffer on the stack and copied into the slot's tape in one
/// go (when the stage is full, and when the recorder is dropped): the slot's buffer was last
/// touched a lap of the ring ago and is in no cache, and tens of small writes to it cost far
/// more than one copy.
pub(crate) struct Recorder<'a, T: TapeOut> {
    tape: &'a mut T,
    staged: [u8; STAGE],
    staged_len: usize,
    /// Bounds of the JSON's length so far.
    lower: usize,
    upper: usize,
    max: usize,
}

impl<'a, T: TapeOut> Recorder<'a, T> {
    /// Starts a record in `tape`, clearing it.
    #[inline]
    pub(crate) fn new(tape: &'a mut T, max: usize) -> Self {
        tape.clear();
        Self {
            tape,
            staged: [0; STAGE],
            staged_len: 0,
            lower: 0,
            upper: 0,
            max,
        }
    }

    /// Whether the JSON is known to fit the limit (a lower bound past it failed earlier).
    #[inline]
    pub(crate) fn finish(&self) -> Fit {
        if self.upper <= self.max {
            Fit::Fits
        } else {
            Fit::Unsure
        }
    }

    /// Accounts for `lower..=upper` more bytes of JSON; refuses once the JSON cannot fit.
    #[inline(always)]
    fn grow(&mut self, lower: usize, upper: usize) -> Result {
        self.lower += lower;
        self.upper += upper;
        if self.lower > self.max {
            return Err(JsonError::TooLarge);
        }
        Ok(())
    }

    /// Appends `bytes` to the record.
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let at = self.staged_len;
        match self.staged.get_mut(at..at + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.staged_len = at + bytes.len();
            }
            None => self.put_past_the_stage(bytes),
        }
    }

    #[cold]
    fn put_past_the_stage(&mut self, bytes: &[u8]) {
        self.unstage();
        if bytes.len() <= STAGE {
            self.staged[..bytes.len()].copy_from_slice(bytes);
            self.staged_len = bytes.len();
        } else {
            self.tape.extend(bytes);
        }
    }

    /// Copies the staged bytes into the slot's tape.
    #[inline]
    fn unstage(&mut self) {
        self.tape.extend(&self.staged[..self.staged_len]);
        self.staged_len = 0;
    }

    /// Appends an opcode and its `N` bytes of operand.
    #[inline(always)]
    fn op<const N: usize>(&mut self, op: u8, operand: [u8; N]) {
        let at = self.staged_len;
        match self.staged.get_mut(at..at + 1 + N) {
            Some(room) => {
                room[0] = op;
                room[1..].copy_from_slice(&operand);
                self.staged_len = at + 1 + N;
            }
            None => {
                self.put_past_the_stage(&[op]);
                self.put_past_the_stage(&operand);
            }
        }
    }
}

impl<T: TapeOut> Drop for Recorder<'_, T> {
    fn drop(&mut self) {
        self.unstage();
    }
}

/// The JSON length of a string of `len` bytes: `len + 2` unescaped, six per byte at most.
#[inline(always)]
fn string_bounds(len: usize) -> (usize, usize) {
    (len + 2, len.saturating_mul(6).saturating_add(2))
}

impl<T: TapeOut> Sink for Recorder<'_, T> {
    #[inline(always)]
    fn byte(&mut self, byte: u8) -> Result {
        self.grow(1, 1)?;
        self.put(&[byte]);
        Ok(())
    }

    #[inline]
    fn literal(&mut self, literal: Literal) -> Result {
        let len = literal.text().len();
        self.grow(len, len)?;
        self.put(&[match literal {
            Literal::Null => NULL,
            Literal::True => TRUE,
            Literal::False => FALSE,
        }]);
        Ok(())
    }

    #[inline(always)]
    fn string(&mut self, value: &str) -> Result {
        let (lower, upper) = string_bounds(value.len());
        self.grow(lower, upper)?;
        let len = u32::try_from(value.len()).map_err(|_| JsonError::TooLarge)?;
        self.op(STR, len.to_le_bytes());
        self.put(value.as_bytes());
        Ok(())
    }

    /// `"key":` (after a `,` unless first) as one op. The name's bytes are copied: that
    /// measured faster than keeping references to the `&'static str` names beside the record
    /// (one more buffer, so one more cache line written per event).
    #[inline]
    fn field(&mut self, first: bool, key: &'static str) -> Result {
        let (lower, upper) = string_bounds(key.len());
        let separators = if first { 1 } else { 2 };
        self.grow(lower + separators, upper + separators)?;
        let len = u32::try_from(key.len()).map_err(|_| JsonError::TooLarge)?;
        self.op(if first { FIELD } else { NEXT_FIELD }, len.to_le_bytes());
        self.put(key.as_bytes());
        Ok(())
    }

    #[inline]
    fn i64(&mut self, value: i64) -> Result {
        self.grow(1, I64_TEXT)?;
        self.op(I64, value.to_le_bytes());
        Ok(())
    }

    #[inline(always)]
    fn u64(&mut self, value: u64) -> Result {
        self.grow(1, I64_TEXT)?;
        self.op(U64, value.to_le_bytes());
        Ok(())
    }

    fn i128(&mut self, value: i128) -> Result {
        self.grow(1, I128_TEXT)?;
        self.op(I128, value.to_le_bytes());
        Ok(())
    }

    fn u128(&mut self, value: u128) -> Result {
        self.grow(1, I128_TEXT)?;
        self.op(U128, value.to_le_bytes());
        Ok(())
    }

    #[inline(always)]
    fn f64(&mut self, value: f64) -> Result {
        self.grow(1, F64_TEXT)?;
        self.op(F64, value.to_le_bytes());
        Ok(())
    }

    #[inline]
    fn f32(&mut self, value: f32) -> Result {
        self.grow(1, F32_TEXT)?;
        self.op(F32, value.to_le_bytes());
        Ok(())
    }

    /// Formats now (the value is borrowed and gone after the call), into a string op.
    fn display<D: Display + ?Sized>(&mut self, value: &D) -> Result {
        use fmt::Write;
        self.unstage();
        let tape = self.tape.spill();
        tape.push(STR);
        let at = tape.len();
        tape.extend_from_slice(&[0; 4]);
        let mut writer = Bounded {
            tape: &mut *tape,
            room: self.max.saturating_sub(self.lower + 2),
            too_large: false,
        };
        if write!(writer, "{value}").is_err() {
            return Err(if writer.too_large {
                JsonError::TooLarge
            } else {
                display_failed()
            });
        }
        let len = tape.len() - at - 4;
        let patch = at..at + 4;
        let (lower, upper) = string_bounds(len);
        self.grow(lower, upper)?;
        let len = u32::try_from(len).map_err(|_| JsonError::TooLarge)?;
        self.tape.spill()[patch].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }
}

/// Appends `Display` output to a tape, failing once it could not fit the limit unescaped.
struct Bounded<'a> {
    tape: &'a mut Vec<u8>,
    room: usize,
    too_large: bool,
}

impl fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.len() > self.room {
            self.too_large = true;
            return Err(fmt::Error);
        }
        self.room -= s.len();
        self.tape.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A tape that does not read back as one the recorder wrote: a bug, never expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// Writes the JSON recorded in `tape` to the end of `out`.
pub(crate) fn replay(tape: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), Corrupt> {
    let mut json = JsonWriter {
        out,
        max: usize::MAX,
    };
    let mut reader = Reader { tape };
    while let Some(op) = reader.take::<1>() {
        let written = match op[0] {
            STR => {
                let len = reader.len()?;
                json.string(reader.text(len)?)
            }
            op @ (FIELD | NEXT_FIELD) => {
                let len = reader.len()?;
                let key = reader.text(len)?;
                if op == NEXT_FIELD {
                    json.byte(b',').map_err(|_| Corrupt)?;
                }
                json.string(key).map_err(|_| Corrupt)?;
                json.byte(b':')
            }
            I64 => json.i64(i64::from_le_bytes(reader.array()?)),
            U64 => json.u64(u64::from_le_bytes(reader.array()?)),
            I128 => json.i128(i128::from_le_bytes(reader.array()?)),
            U128 => json.u128(u128::from_le_bytes(reader.array()?)),
            F64 => json.f64(f64::from_le_bytes(reader.array()?)),
            F32 => json.f32(f32::from_le_bytes(reader.array()?)),
            NULL => json.literal(Literal::Null),
            TRUE => json.literal(Literal::True),
            FALSE => json.literal(Literal::False),
            byte @ (b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"') => json.byte(byte),
            ORDER_CREATED => return OrderCreated::replay(&mut reader)?.write(json),
            ORDER_FILLED => return OrderFilled::replay(&mut reader)?.write(json),
            MARKET_DATA => return MarketDataUpdate::replay(&mut reader)?.write(json),
            _ => return Err(Corrupt),
        };
        // The writer has no limit here, so it cannot fail.
        written.map_err(|_| Corrupt)?;
    }
    Ok(())
}

/// A typed event with a fixed binary layout: recorded with a handful of copies, no serde
/// calls, and replayed through its own `Serialize` (so its JSON is the derive's, exactly).
///
/// Layout: the opcode, the fixed-size fields, the strings' lengths (`u32`), the strings.
pub(crate) trait Binary<'t>: Serialize + Sized + 't {
    /// At least the length of the event's JSON, from the strings' lengths alone.
    fn json_upper(&self) -> usize;
    /// Replaces `tape` with the event's record.
    fn record(&self, tape: &mut impl TapeOut);
    /// Reads the event back (after its opcode); the strings borrow from the tape.
    fn replay(reader: &mut Reader<'t>) -> std::result::Result<Self, Corrupt>;

    /// Writes the event's JSON; the tape must hold nothing after it.
    fn write(&self, mut json: JsonWriter<'_>) -> std::result::Result<(), Corrupt> {
        self.serialize(&mut Serializer(&mut json))
            .map_err(|_| Corrupt)
    }
}

/// `JsonWriter` by reference, so a typed event can write into the caller's.
impl<T: Sink> Sink for &mut T {
    fn byte(&mut self, byte: u8) -> Result {
        (**self).byte(byte)
    }
    fn literal(&mut self, literal: Literal) -> Result {
        (**self).literal(literal)
    }
    fn string(&mut self, value: &str) -> Result {
        (**self).string(value)
    }
    fn static_string(&mut self, value: &'static str) -> Result {
        (**self).static_string(value)
    }
    fn field(&mut self, first: bool, key: &'static str) -> Result {
        (**self).field(first, key)
    }
    fn i64(&mut self, value: i64) -> Result {
        (**self).i64(value)
    }
    fn u64(&mut self, value: u64) -> Result {
        (**self).u64(value)
    }
    fn i128(&mut self, value: i128) -> Result {
        (**self).i128(value)
    }
    fn u128(&mut self, value: u128) -> Result {
        (**self).u128(value)
    }
    fn f64(&mut self, value: f64) -> Result {
        (**self).f64(value)
    }
    fn f32(&mut self, value: f32) -> Result {
        (**self).f32(value)
    }
    fn display<T2: Display + ?Sized>(&mut self, value: &T2) -> Result {
        (**self).display(value)
    }
}

/// The JSON's length bound for `strings` and `numbers` of an event whose field names and
/// punctuation take `fixed` bytes.
fn typed_upper(fixed: usize, strings: &[&str], numbers: usize) -> usize {
    strings
        .iter()
        .map(|s| string_bounds(s.len()).1)
        .sum::<usize>()
        + numbers * F64_TEXT
        + fixed
}

/// A string's length as recorded; longer ones cannot fit any limit, so are never recorded.
fn len32(s: &str) -> [u8; 4] {
    u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes()
}

/// Copies the fixed part (built on the stack: one copy) and the strings.
#[inline(always)]
fn record_parts<const N: usize>(tape: &mut impl TapeOut, fixed: [u8; N], strings: &[&str]) {
    tape.write_parts(&fixed, strings);
}

/// Concatenates byte arrays into one of the sum of their lengths, at compile time sizes.
macro_rules! concat_bytes {
    ($len:expr; $($part:expr),+ $(,)?) => {{
        let mut out = [0u8; $len];
        let mut at = 0;
        $(
            let part = $part;
            out[at..at + part.len()].copy_from_slice(&part);
            at += part.len();
        )+
        debug_assert_eq!(at, $len);
        out
    }};
}

impl<'t> Binary<'t> for OrderCreated<'t> {
    fn json_upper(&self) -> usize {
        // {"orderId":,"symbol":,"quantity":,"price":,"side":"SELL"}
        typed_upper(64, &[self.order_id, self.symbol], 2)
    }

    #[inline]
    fn record(&self, tape: &mut impl TapeOut) {
        let side = match self.side {
            Side::Buy => 0,
            Side::Sell => 1,
        };
        let fixed = concat_bytes!(26;
            [ORDER_CREATED, side],
            self.quantity.to_le_bytes(),
            self.price.to_le_bytes(),
            len32(self.order_id),
            len32(self.symbol),
        );
        record_parts(tape, fixed, &[self.order_id, self.symbol]);
    }

    fn replay(reader: &mut Reader<'t>) -> std::result::Result<Self, Corrupt> {
        let [side] = reader.array()?;
        let quantity = f64::from_le_bytes(reader.array()?);
        let price = f64::from_le_bytes(reader.array()?);
        let order_len = reader.len()?;
        let symbol_len = reader.len()?;
        Ok(OrderCreated {
            correlation_id: "",
            order_id: reader.text(order_len)?,
            symbol: reader.text(symbol_len)?,
            quantity,
            price,
            side: match side {
                0 => Side::Buy,
                1 => Side::Sell,
                _ => return Err(Corrupt),
            },
        })
    }
}

impl<'t> Binary<'t> for OrderFilled<'t> {
    fn json_upper(&self) -> usize {
        // {"orderId":,"fillId":,"quantity":,"price":}
        typed_upper(48, &[self.order_id, self.fill_id], 2)
    }

    #[inline]
    fn record(&self, tape: &mut impl TapeOut) {
        let fixed = concat_bytes!(25;
            [ORDER_FILLED],
            self.quantity.to_le_bytes(),
            self.price.to_le_bytes(),
            len32(self.order_id),
            len32(self.fill_id),
        );
        record_parts(tape, fixed, &[self.order_id, self.fill_id]);
    }

    fn replay(reader: &mut Reader<'t>) -> std::result::Result<Self, Corrupt> {
        let quantity = f64::from_le_bytes(reader.array()?);
        let price = f64::from_le_bytes(reader.array()?);
        let order_len = reader.len()?;
        let fill_len = reader.len()?;
        Ok(OrderFilled {
            correlation_id: "",
            order_id: reader.text(order_len)?,
            fill_id: reader.text(fill_len)?,
            quantity,
            price,
        })
    }
}

impl<'t> Binary<'t> for MarketDataUpdate<'t> {
    fn json_upper(&self) -> usize {
        // {"symbol":,"bid":,"ask":,"last":,"bidSize":,"askSize":,"exchangeTsNs":}
        typed_upper(80, &[self.symbol], 6)
    }

    #[inline]
    fn record(&self, tape: &mut impl TapeOut) {
        let fixed = concat_bytes!(53;
            [MARKET_DATA],
            self.bid.to_le_bytes(),
            self.ask.to_le_bytes(),
            self.last.to_le_bytes(),
            self.bid_size.to_le_bytes(),
            self.ask_size.to_le_bytes(),
            self.exchange_ts_ns.to_le_bytes(),
            len32(self.symbol),
        );
        record_parts(tape, fixed, &[self.symbol]);
    }

    fn replay(reader: &mut Reader<'t>) -> std::result::Result<Self, Corrupt> {
        let mut number = || reader.array().map(f64::from_le_bytes);
        let (bid, ask, last, bid_size, ask_size) =
            (number()?, number()?, number()?, number()?, number()?);
        let exchange_ts_ns = u64::from_le_bytes(reader.array()?);
        let symbol_len = reader.len()?;
        Ok(MarketDataUpdate {
            correlation_id: "",
            symbol: reader.text(symbol_len)?,
            bid,
            ask,
            last,
            bid_size,
            ask_size,
            exchange_ts_ns,
        })
    }
}

/// Reads a tape from the front.
pub(crate) struct Reader<'a> {
    tape: &'a [u8],
}

impl<'a> Reader<'a> {
    fn len(&mut self) -> std::result::Result<usize, Corrupt> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn text(&mut self, len: usize) -> std::result::Result<&'a str, Corrupt> {
        std::str::from_utf8(self.slice(len)?).map_err(|_| Corrupt)
    }

    #[inline(always)]
    fn take<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        let (head, rest) = self.tape.split_first_chunk::<N>()?;
        self.tape = rest;
        Some(head)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], Corrupt> {
        self.take::<N>().copied().ok_or(Corrupt)
    }

    #[inline(always)]
    fn slice(&mut self, len: usize) -> std::result::Result<&'a [u8], Corrupt> {
        if len > self.tape.len() {
            return Err(Corrupt);
        }
        let (head, rest) = self.tape.split_at(len);
        self.tape = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::super::json::tests::json_value;
    use super::super::json::Serializer;
    use super::super::slot::{EventSlot, INLINE_TAPE};
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;

    /// Records `value` into a ring slot and replays it, as `publish` and the drain do: short
    /// tapes in the slot's own bytes, longer ones spilled to its buffer on the way.
    fn deferred<T: Serialize + ?Sized>(value: &T, max: usize) -> Result<Vec<u8>> {
        let mut slot = EventSlot::with_capacity(64);
        let mut tape = slot.tape();
        let mut serializer = Serializer(Recorder::new(&mut tape, max));
        value.serialize(&mut serializer)?;
        drop(serializer);
        let mut out = Vec::new();
        replay(slot.tape_bytes(), &mut out).expect("a recorded tape replays");
        Ok(out)
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    enum Shape {
        Unit,
        Newtype(u8),
        Tuple(i32, String),
        Struct { a: Option<f64>, b: Vec<bool> },
    }

    /// Every shape serde has, in one struct.
    #[derive(Serialize)]
    struct Wide {
        f01: u8,
        f02: i16,
        f03: u32,
        f04: i64,
        f05: u128,
        f06: i128,
        f07: f32,
        f08: f64,
        f09: char,
        f10: bool,
        f11: (),
        f12: Option<u8>,
        f13: &'static str,
        f14: Shape,
        f15: Shape,
        f16: Shape,
        f17: Shape,
        f18: std::collections::BTreeMap<i32, f32>,
        #[serde(rename = "quote\"d")]
        f19: f64,
        f20: f32,
    }

    #[test]
    fn every_serde_shape_replays_as_serde_json_writes_it() {
        let wide = Wide {
            f01: 255,
            f02: -3,
            f03: u32::MAX,
            f04: i64::MIN,
            f05: u128::MAX,
            f06: i128::MIN,
            f07: 0.1,
            f08: f64::NAN,
            f09: 'é',
            f10: true,
            f11: (),
            f12: None,
            f13: "tab\tq\"",
            f14: Shape::Unit,
            f15: Shape::Newtype(7),
            f16: Shape::Tuple(-1, "x".into()),
            f17: Shape::Struct {
                a: Some(1e300),
                b: vec![false],
            },
            f18: [(-1, 2.5), (3, f32::INFINITY)].into_iter().collect(),
            f19: -0.0,
            f20: 1.0e-7,
        };
        assert_eq!(
            String::from_utf8(deferred(&wide, usize::MAX).unwrap()).unwrap(),
            serde_json::to_string(&wide).unwrap()
        );
    }

    #[test]
    fn records_longer_than_the_stage_replay_whole() {
        let long = "x\"y".repeat(200);
        let value = serde_json::json!({
            "a": long,
            "b": (0..100).map(|n| n as f64 * 0.5).collect::<Vec<_>>(),
            "c": ["s".repeat(STAGE - 3), "t".repeat(STAGE + 1)],
        });
        assert_eq!(
            deferred(&value, usize::MAX).unwrap(),
            serde_json::to_vec(&value).unwrap()
        );
    }

    #[test]
    fn display_values_are_recorded_formatted() {
        struct Shown;
        impl Serialize for Shown {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(&format_args!("a\"b{}", 1))
            }
        }
        assert_eq!(
            deferred(&Shown, usize::MAX).unwrap(),
            serde_json::to_vec(&Shown).unwrap()
        );
        assert!(matches!(deferred(&Shown, 4), Err(JsonError::TooLarge)));
    }

    #[test]
    fn a_payload_past_the_limit_is_refused_before_it_is_copied() {
        let long = "x".repeat(10_000);
        let mut tape = Vec::with_capacity(64);
        let mut serializer = Serializer(Recorder::new(&mut tape, 100));
        assert!(matches!(
            long.serialize(&mut serializer),
            Err(JsonError::TooLarge)
        ));
        drop(serializer);
        assert_eq!(tape.capacity(), 64, "nothing big was copied");
    }

    #[test]
    fn the_bounds_say_fits_only_when_it_does() {
        // Exactly at the limit: 98 + 2 quotes; the upper bound (escapes) passes it.
        let exact = "y".repeat(98);
        let mut tape = Vec::new();
        let mut serializer = Serializer(Recorder::new(&mut tape, 100));
        exact.serialize(&mut serializer).unwrap();
        assert_eq!(serializer.0.finish(), Fit::Unsure);
        drop(serializer);
        let mut serializer = Serializer(Recorder::new(&mut tape, 1000));
        exact.serialize(&mut serializer).unwrap();
        assert_eq!(serializer.0.finish(), Fit::Fits);
    }

    #[test]
    fn a_truncated_tape_is_corrupt_not_a_panic() {
        let mut tape = Vec::new();
        let mut serializer = Serializer(Recorder::new(&mut tape, usize::MAX));
        serde_json::json!({"a": [1.5, "b"]})
            .serialize(&mut serializer)
            .unwrap();
        drop(serializer);
        for len in 0..tape.len() {
            let mut out = Vec::new();
            let result = replay(&tape[..len], &mut out);
            // A cut between two ops replays what came before; a cut inside one is corrupt.
            assert!(result.is_ok() || result == Err(Corrupt));
        }
        assert_eq!(replay(&[0xff], &mut Vec::new()), Err(Corrupt));
        assert_eq!(replay(&[FIELD, 40, 0, 0, 0], &mut Vec::new()), Err(Corrupt));
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Order {
        order_id: String,
        symbol: String,
        quantity: f64,
        price: f32,
        filled: u64,
        delta: i32,
        tags: Vec<String>,
        parent: Option<String>,
    }

    fn order() -> impl Strategy<Value = Order> {
        (
            any::<String>(),
            "[ -~]{0,12}",
            any::<f64>(),
            any::<f32>(),
            any::<u64>(),
            any::<i32>(),
            prop::collection::vec(any::<String>(), 0..4),
            any::<Option<String>>(),
        )
            .prop_map(
                |(order_id, symbol, quantity, price, filled, delta, tags, parent)| Order {
                    order_id,
                    symbol,
                    quantity,
                    price,
                    filled,
                    delta,
                    tags,
                    parent,
                },
            )
    }

    /// Records a typed event in its binary layout and replays it.
    fn typed<'t, E: Binary<'t>>(event: &E) -> Vec<u8> {
        // Over a tape left by a longer event, as in a reused slot.
        let mut slot = EventSlot::with_capacity(64);
        let mut tape = slot.tape();
        tape.extend(&[0xff; INLINE_TAPE + 1]);
        event.record(&mut tape);
        let mut out = Vec::new();
        replay(slot.tape_bytes(), &mut out).expect("a recorded typed event replays");
        assert!(
            out.len() <= event.json_upper(),
            "the bound holds: {} > {}",
            out.len(),
            event.json_upper()
        );
        out
    }

    proptest! {
        /// The typed layouts give the JSON of the events' own `Serialize` (the derive), for
        /// any strings and any numbers, NaN and infinities included.
        #[test]
        fn typed_events_replay_byte_identical_to_serde_json(
            id in any::<String>(),
            symbol in any::<String>(),
            numbers in prop::array::uniform6(any::<f64>()),
            ts in any::<u64>(),
            sell in any::<bool>(),
        ) {
            let created = OrderCreated {
                correlation_id: "c",
                order_id: &id,
                symbol: &symbol,
                quantity: numbers[0],
                price: numbers[1],
                side: if sell { Side::Sell } else { Side::Buy },
            };
            prop_assert_eq!(typed(&created), serde_json::to_vec(&created).unwrap());
            let filled = OrderFilled {
                correlation_id: "c",
                order_id: &id,
                fill_id: &symbol,
                quantity: numbers[2],
                price: numbers[3],
            };
            prop_assert_eq!(typed(&filled), serde_json::to_vec(&filled).unwrap());
            let update = MarketDataUpdate {
                correlation_id: "",
                symbol: &symbol,
                bid: numbers[0],
                ask: numbers[1],
                last: numbers[2],
                bid_size: numbers[3],
                ask_size: numbers[4],
                exchange_ts_ns: ts,
            };
            prop_assert_eq!(typed(&update), serde_json::to_vec(&update).unwrap());
        }

        #[test]
        fn any_json_value_replays_byte_identical_to_serde_json(value in json_value()) {
            prop_assert_eq!(deferred(&value, usize::MAX).unwrap(), serde_json::to_vec(&value).unwrap());
        }

        #[test]
        fn any_struct_replays_byte_identical_to_serde_json(value in order()) {
            prop_assert_eq!(deferred(&value, usize::MAX).unwrap(), serde_json::to_vec(&value).unwrap());
        }

        /// Refused exactly when serde_json's output is longer than the limit.
        #[test]
        fn the_limit_is_exact(value in json_value(), max in 0usize..400) {
            let exact = serde_json::to_vec(&value).unwrap().len();
            let mut tape = Vec::new();
            let mut serializer = Serializer(Recorder::new(&mut tape, max));
            let recorded = value.serialize(&mut serializer);
            let fits = match recorded {
                Err(JsonError::TooLarge) => false,
                Err(other) => panic!("{other}"),
                Ok(()) => match serializer.0.finish() {
                    Fit::Fits => true,
                    Fit::Unsure => super::super::json::measure(&value) <= max,
                },
            };
            prop_assert_eq!(fits, exact <= max);
        }
    }
}
