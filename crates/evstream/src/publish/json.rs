//! A compact JSON serializer, byte-identical to `serde_json`, generic over where its output
//! goes.
//!
//! [`Serializer`] is serde's side: it turns a `Serialize` value into a stream of JSON pieces
//! (structural bytes, strings, numbers) and hands each to a [`Sink`]. Two sinks exist:
//! [`JsonWriter`] writes the JSON text (on the shipper's thread), and the tape
//! [`Recorder`](super::tape::Recorder) copies the pieces in binary on the engine's thread,
//! to be replayed into a [`JsonWriter`] later. Both see the same calls, so the deferred JSON
//! is the JSON that would have been written in the call.
//!
//! Why not `serde_json::to_writer`? It escapes strings one byte at a time and drives the
//! output through many tiny `io::Write` calls. [`JsonWriter`] appends straight to a
//! `Vec<u8>`, scans strings eight bytes at a time for the three things JSON must escape, and
//! stops as soon as the output passes a size limit.
//!
//! The output is the same bytes `serde_json::to_vec` produces (same float formatting via
//! `zmij`, same integer formatting via `itoa`, same escapes, same map-key rules), which a
//! property test checks. Any `Serialize` type works, including `serde_json::Value`.

use std::fmt::{self, Display};

use serde::ser::{self, Impossible, Serialize};

/// Why serialization stopped.
#[derive(Debug)]
pub(crate) enum JsonError {
    /// The output passed the limit; nothing more was written.
    TooLarge,
    /// The value's `Serialize` reported an error, or used a map key JSON cannot express.
    /// (Boxed so that `Result<(), JsonError>` stays two registers wide: every serializer
    /// call returns one, and a wider error is returned through memory.)
    #[allow(clippy::box_collection)]
    Custom(Box<String>),
}

impl Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => f.write_str("payload exceeds the size limit"),
            Self::Custom(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for JsonError {}

impl ser::Error for JsonError {
    fn custom<T: Display>(message: T) -> Self {
        Self::Custom(Box::new(message.to_string()))
    }
}

type Result<T = ()> = std::result::Result<T, JsonError>;

/// Clears `out` and writes `value` as compact JSON, failing with [`JsonError::TooLarge`] as
/// soon as more than `max` bytes would be needed.
#[cfg(test)]
pub(crate) fn write_bounded<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    max: usize,
) -> Result {
    out.clear();
    value.serialize(&mut Serializer(JsonWriter { out, max }))?;
    if out.len() > max {
        return Err(JsonError::TooLarge);
    }
    Ok(())
}

/// Length of `value` as JSON (cold paths: an event near or past the size limit).
pub(crate) fn measure<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Same bytes as ours (see the tests), so the same length.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Where a [`Serializer`] puts the pieces of the JSON it produces.
///
/// Structural bytes (`{ } [ ] , : "`) come through [`byte`](Self::byte); non-finite floats
/// never reach the sink (the serializer writes `null`).
pub(crate) trait Sink {
    /// One structural byte: `{`, `}`, `[`, `]`, `,`, `:` or `"`.
    fn byte(&mut self, byte: u8) -> Result;
    /// `null`, `true` or `false`.
    fn literal(&mut self, literal: Literal) -> Result;
    /// A string, quoted and escaped.
    fn string(&mut self, value: &str) -> Result;
    /// A string that lives for the whole program (struct field names, enum variant names).
    #[inline(always)]
    fn static_string(&mut self, value: &'static str) -> Result {
        self.string(value)
    }
    /// A struct field's name with its separators: `"key":`, preceded by `,` unless first.
    #[inline(always)]
    fn field(&mut self, first: bool, key: &'static str) -> Result {
        if !first {
            self.byte(b',')?;
        }
        self.static_string(key)?;
        self.byte(b':')
    }
    /// Integers; every narrower integer type arrives widened.
    fn i64(&mut self, value: i64) -> Result;
    /// See [`i64`](Self::i64).
    fn u64(&mut self, value: u64) -> Result;
    /// See [`i64`](Self::i64).
    fn i128(&mut self, value: i128) -> Result;
    /// See [`i64`](Self::i64).
    fn u128(&mut self, value: u128) -> Result;
    /// A finite `f64`.
    fn f64(&mut self, value: f64) -> Result;
    /// A finite `f32` (formatted as an `f32`: fewer digits than the same value as `f64`).
    fn f32(&mut self, value: f32) -> Result;
    /// `Display` output as a quoted, escaped string.
    fn display<T: Display + ?Sized>(&mut self, value: &T) -> Result;
}

/// The three JSON words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Literal {
    Null,
    True,
    False,
}

impl Literal {
    pub(crate) fn text(self) -> &'static [u8] {
        match self {
            Self::Null => b"null",
            Self::True => b"true",
            Self::False => b"false",
        }
    }
}

/// The sink that writes JSON text into a `Vec<u8>`, stopping past `max` bytes.
pub(crate) struct JsonWriter<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) max: usize,
}

impl JsonWriter<'_> {
    /// Appends bytes unless that would pass the limit.
    #[inline(always)]
    fn push(&mut self, bytes: &[u8]) -> Result {
        if self.out.len() + bytes.len() > self.max {
            return Err(JsonError::TooLarge);
        }
        append(self.out, bytes);
        Ok(())
    }

    #[inline]
    fn integer<I: itoa::Integer>(&mut self, value: I) -> Result {
        let mut buffer = itoa::Buffer::new();
        self.push(buffer.format(value).as_bytes())
    }

    #[inline]
    fn float<F: zmij::Float>(&mut self, value: F) -> Result {
        let mut buffer = zmij::Buffer::new();
        self.push(buffer.format_finite(value).as_bytes())
    }
}

impl Sink for JsonWriter<'_> {
    #[inline(always)]
    fn byte(&mut self, byte: u8) -> Result {
        // Limit checked at the next push or at the end: a few structural bytes of slack.
        self.out.push(byte);
        Ok(())
    }

    #[inline]
    fn literal(&mut self, literal: Literal) -> Result {
        self.push(literal.text())
    }

    #[inline]
    fn string(&mut self, value: &str) -> Result {
        if self.out.len() + value.len() + 2 > self.max {
            return Err(JsonError::TooLarge);
        }
        self.out.reserve(value.len() + 2);
        self.out.push(b'"');
        write_escaped(self.out, value.as_bytes());
        self.out.push(b'"');
        if self.out.len() > self.max {
            return Err(JsonError::TooLarge);
        }
        Ok(())
    }

    fn i64(&mut self, value: i64) -> Result {
        self.integer(value)
    }
    fn u64(&mut self, value: u64) -> Result {
        self.integer(value)
    }
    fn i128(&mut self, value: i128) -> Result {
        self.integer(value)
    }
    fn u128(&mut self, value: u128) -> Result {
        self.integer(value)
    }
    fn f64(&mut self, value: f64) -> Result {
        self.float(value)
    }
    fn f32(&mut self, value: f32) -> Result {
        self.float(value)
    }

    fn display<T: Display + ?Sized>(&mut self, value: &T) -> Result {
        use fmt::Write;
        self.byte(b'"')?;
        let mut writer = EscapingWriter {
            sink: &mut *self,
            error: None,
        };
        if write!(writer, "{value}").is_err() {
            return Err(writer.error.unwrap_or_else(display_failed));
        }
        self.byte(b'"')
    }
}

pub(crate) fn display_failed() -> JsonError {
    JsonError::Custom(Box::new("a Display implementation failed".into()))
}

/// Bytes with bit 7 set in each lane where `word` has a byte below 0x20, `"` or `\`.
/// (Exact as a whole: non-zero if and only if some byte of `word` must be escaped.)
#[inline(always)]
fn needs_escape(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * b'"' as u64);
    let backslash = word ^ (ONES * b'\\' as u64);
    let is_quote = quote.wrapping_sub(ONES) & !quote;
    let is_backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | is_quote | is_backslash) & HIGH
}

/// Whether any byte of `bytes` must be escaped. Whole words at a time, branch-free inside
/// the loop; short strings (most keys) are checked with two overlapping loads, never a
/// byte loop or a copy through a stack buffer (which stalls on store forwarding).
#[inline(always)]
fn any_escape(bytes: &[u8]) -> bool {
    let n = bytes.len();
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    let half = |at: usize| {
        u64::from(u32::from_le_bytes(
            bytes[at..at + 4].try_into().unwrap_or([0; 4]),
        ))
    };
    match n {
        0 => false,
        1..=3 => {
            const FILL: u64 = u64::from_le_bytes([0, 0, 0, b'a', b'a', b'a', b'a', b'a']);
            let w =
                u64::from(bytes[0]) | u64::from(bytes[n / 2]) << 8 | u64::from(bytes[n - 1]) << 16;
            needs_escape(w | FILL) != 0
        }
        4..=7 => needs_escape(half(0) | half(n - 4) << 32) != 0,
        _ => {
            let mut found = 0;
            let mut at = 0;
            while at + 8 <= n {
                found |= needs_escape(word(at));
                at += 8;
            }
            // The last eight bytes, overlapping the previous word.
            found |= needs_escape(word(n - 8));
            found != 0
        }
    }
}

/// Appends `bytes` with JSON escapes, exactly as `serde_json` writes them.
#[inline(always)]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    if any_escape(bytes) {
        write_escaped_slow(out, bytes);
    } else {
        append(out, bytes);
    }
}

/// `out.extend_from_slice(bytes)` without a `memcpy` call for short slices: one or two
/// fixed-size (so inlined) copies that overlap, the second after truncating back.
#[inline(always)]
pub(crate) fn append(out: &mut Vec<u8>, bytes: &[u8]) {
    #[inline(always)]
    fn overlapping<const K: usize>(out: &mut Vec<u8>, bytes: &[u8]) {
        let start = out.len();
        let n = bytes.len();
        let head: &[u8; K] = bytes[..K].try_into().unwrap_or(&[0; K]);
        let tail: &[u8; K] = bytes[n - K..].try_into().unwrap_or(&[0; K]);
        out.extend_from_slice(head);
        out.truncate(start + n - K);
        out.extend_from_slice(tail);
    }
    match bytes.len() {
        0 => {}
        1 => out.push(bytes[0]),
        2..=3 => overlapping::<2>(out, bytes),
        4..=7 => overlapping::<4>(out, bytes),
        8..=15 => overlapping::<8>(out, bytes),
        16..=32 => overlapping::<16>(out, bytes),
        _ => out.extend_from_slice(bytes),
    }
}

#[cold]
fn write_escaped_slow(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(byte >> 4) as usize],
                HEX[(byte & 0xf) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Escapes `Display` output as it is produced, so `collect_str` needs no `String`.
struct EscapingWriter<'a, 'b> {
    sink: &'a mut JsonWriter<'b>,
    error: Option<JsonError>,
}

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.sink.out.len() + s.len() > self.sink.max {
            self.error = Some(JsonError::TooLarge);
            return Err(fmt::Error);
        }
        write_escaped(self.sink.out, s.as_bytes());
        Ok(())
    }
}

/// serde's side: drives a [`Sink`] with the pieces of a value's JSON.
pub(crate) struct Serializer<S>(pub(crate) S);

/// The ten integer methods of `serde::Serializer`, each widening into one sink call.
macro_rules! integers {
    ($self:ident, $v:ident => $body:ident) => {
        integers!(@each $self, $v, $body;
            serialize_i8: i8 => i64, serialize_i16: i16 => i64, serialize_i32: i32 => i64,
            serialize_i64: i64 => i64, serialize_i128: i128 => i128,
            serialize_u8: u8 => u64, serialize_u16: u16 => u64, serialize_u32: u32 => u64,
            serialize_u64: u64 => u64, serialize_u128: u128 => u128);
    };
    (@each $self:ident, $v:ident, $body:ident; $($method:ident: $ty:ty => $wide:ident),*) => {$(
        fn $method($self, $v: $ty) -> Result {
            $self.$body(|sink| sink.$wide($v.into()))
        }
    )*};
}

impl<S: Sink> Serializer<S> {
    #[inline(always)]
    fn direct(&mut self, write: impl FnOnce(&mut S) -> Result) -> Result {
        write(&mut self.0)
    }

    /// Writes `{"variant":` plus `open`, and returns the compound that closes both.
    fn open_variant(&mut self, variant: &'static str, open: u8) -> Result<Compound<'_, S>> {
        self.0.byte(b'{')?;
        self.0.static_string(variant)?;
        self.0.byte(b':')?;
        self.0.byte(open)?;
        let close = if open == b'[' { b']' } else { b'}' };
        Ok(Compound::variant(self, close))
    }

    #[inline]
    fn float64(&mut self, value: f64) -> Result {
        if value.is_finite() {
            self.0.f64(value)
        } else {
            self.0.literal(Literal::Null)
        }
    }
}

impl<'a, S: Sink> ser::Serializer for &'a mut Serializer<S> {
    type Ok = ();
    type Error = JsonError;
    type SerializeSeq = Compound<'a, S>;
    type SerializeTuple = Compound<'a, S>;
    type SerializeTupleStruct = Compound<'a, S>;
    type SerializeTupleVariant = Compound<'a, S>;
    type SerializeMap = Compound<'a, S>;
    type SerializeStruct = Compound<'a, S>;
    type SerializeStructVariant = Compound<'a, S>;

    fn serialize_bool(self, v: bool) -> Result {
        self.0
            .literal(if v { Literal::True } else { Literal::False })
    }
    integers!(self, v => direct);
    fn serialize_f32(self, v: f32) -> Result {
        if v.is_finite() {
            self.0.f32(v)
        } else {
            self.0.literal(Literal::Null)
        }
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> Result {
        self.float64(v)
    }
    fn serialize_char(self, v: char) -> Result {
        self.0.string(v.encode_utf8(&mut [0; 4]))
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Result {
        self.0.string(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result {
        // As serde_json: an array of numbers.
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for byte in v {
            seq.serialize_element(byte)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result {
        self.0.literal(Literal::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result {
        self.0.literal(Literal::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result {
        self.0.literal(Literal::Null)
    }
    #[inline]
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result {
        self.0.static_string(variant)
    }
    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result {
        self.0.byte(b'{')?;
        self.0.static_string(variant)?;
        self.0.byte(b':')?;
        value.serialize(&mut *self)?;
        self.0.byte(b'}')
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a, S>> {
        self.0.byte(b'[')?;
        Ok(Compound::new(self, b']'))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, S>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Compound<'a, S>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, S>> {
        self.open_variant(variant, b'[')
    }
    #[inline]
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a, S>> {
        self.0.byte(b'{')?;
        Ok(Compound::new(self, b'}'))
    }
    #[inline]
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Compound<'a, S>> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, S>> {
        self.open_variant(variant, b'{')
    }
    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result {
        self.0.display(value)
    }
}

/// An open array or object: writes separators and the closing bracket(s).
pub(crate) struct Compound<'a, S> {
    serializer: &'a mut Serializer<S>,
    first: bool,
    close: u8,
    /// Also close the `{"variant":` wrapper.
    close_variant: bool,
}

impl<'a, S: Sink> Compound<'a, S> {
    fn new(serializer: &'a mut Serializer<S>, close: u8) -> Self {
        Self {
            serializer,
            first: true,
            close,
            close_variant: false,
        }
    }

    fn variant(serializer: &'a mut Serializer<S>, close: u8) -> Self {
        Self {
            close_variant: true,
            ..Self::new(serializer, close)
        }
    }

    #[inline]
    fn separator(&mut self) -> Result {
        if !std::mem::take(&mut self.first) {
            self.serializer.0.byte(b',')?;
        }
        Ok(())
    }

    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.separator()?;
        value.serialize(&mut *self.serializer)
    }

    #[inline]
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        let first = std::mem::take(&mut self.first);
        self.serializer.0.field(first, key)?;
        value.serialize(&mut *self.serializer)
    }

    #[inline]
    fn finish(self) -> Result {
        self.serializer.0.byte(self.close)?;
        if self.close_variant {
            self.serializer.0.byte(b'}')?;
        }
        Ok(())
    }
}

/// serde's four sequence-like traits differ only in their names; one body serves them all.
macro_rules! sequence_like {
    ($($name:ident :: $method:ident),*) => {$(
        impl<S: Sink> ser::$name for Compound<'_, S> {
            type Ok = ();
            type Error = JsonError;
            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
                self.element(value)
            }
            #[inline]
            fn end(self) -> Result {
                self.finish()
            }
        }
    )*};
}

sequence_like!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl<S: Sink> ser::SerializeMap for Compound<'_, S> {
    type Ok = ();
    type Error = JsonError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        self.separator()?;
        key.serialize(MapKey {
            sink: &mut self.serializer.0,
        })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.serializer.0.byte(b':')?;
        value.serialize(&mut *self.serializer)
    }
    fn end(self) -> Result {
        self.finish()
    }
}

/// serde's two struct traits differ only in their names.
macro_rules! struct_like {
    ($($name:ident),*) => {$(
        impl<S: Sink> ser::$name for Compound<'_, S> {
            type Ok = ();
            type Error = JsonError;
            #[inline]
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result {
                self.field(key, value)
            }
            #[inline]
            fn end(self) -> Result {
                self.finish()
            }
        }
    )*};
}

struct_like!(SerializeStruct, SerializeStructVariant);

/// Map keys, with serde_json's rules: strings as they are; integers, booleans and finite
/// floats quoted; anything else is an error.
struct MapKey<'a, S> {
    sink: &'a mut S,
}

fn key_must_be_a_string() -> JsonError {
    JsonError::Custom(Box::new("key must be a string".into()))
}

fn float_key_must_be_finite() -> JsonError {
    JsonError::Custom(Box::new(
        "float key must be finite (got NaN or +/-inf)".into(),
    ))
}

impl<S: Sink> MapKey<'_, S> {
    fn quoted(self, write: impl FnOnce(&mut S) -> Result) -> Result {
        self.sink.byte(b'"')?;
        write(&mut *self.sink)?;
        self.sink.byte(b'"')
    }
}

/// The integer methods of [`MapKey`]: quoted numbers.
macro_rules! quoted_integers {
    ($($method:ident: $ty:ty => $wide:ident),*) => {$(
        fn $method(self, v: $ty) -> Result {
            self.quoted(|sink| sink.$wide(v.into()))
        }
    )*};
}

impl<S: Sink> ser::Serializer for MapKey<'_, S> {
    type Ok = ();
    type Error = JsonError;
    type SerializeSeq = Impossible<(), JsonError>;
    type SerializeTuple = Impossible<(), JsonError>;
    type SerializeTupleStruct = Impossible<(), JsonError>;
    type SerializeTupleVariant = Impossible<(), JsonError>;
    type SerializeMap = Impossible<(), JsonError>;
    type SerializeStruct = Impossible<(), JsonError>;
    type SerializeStructVariant = Impossible<(), JsonError>;

    fn serialize_str(self, v: &str) -> Result {
        self.sink.string(v)
    }
    fn serialize_char(self, v: char) -> Result {
        self.sink.string(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_bool(self, v: bool) -> Result {
        self.quoted(|s| s.literal(if v { Literal::True } else { Literal::False }))
    }
    quoted_integers!(
        serialize_i8: i8 => i64, serialize_i16: i16 => i64, serialize_i32: i32 => i64,
        serialize_i64: i64 => i64, serialize_i128: i128 => i128,
        serialize_u8: u8 => u64, serialize_u16: u16 => u64, serialize_u32: u32 => u64,
        serialize_u64: u64 => u64, serialize_u128: u128 => u128
    );
    fn serialize_f32(self, v: f32) -> Result {
        if !v.is_finite() {
            return Err(float_key_must_be_finite());
        }
        self.quoted(|s| s.f32(v))
    }
    fn serialize_f64(self, v: f64) -> Result {
        if !v.is_finite() {
            return Err(float_key_must_be_finite());
        }
        self.quoted(|s| s.f64(v))
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result {
        self.sink.static_string(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result {
        self.sink.display(value)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result {
        Err(key_must_be_a_string())
    }
    fn serialize_none(self) -> Result {
        Err(key_must_be_a_string())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result {
        Err(key_must_be_a_string())
    }
    fn serialize_unit(self) -> Result {
        Err(key_must_be_a_string())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result {
        Err(key_must_be_a_string())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result {
        Err(key_must_be_a_string())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(key_must_be_a_string())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(key_must_be_a_string())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    fn ours<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        write_bounded(&mut out, value, usize::MAX).unwrap();
        out
    }

    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(u8),
        Tuple(i32, String),
        Struct { a: Option<f64>, b: Vec<bool> },
    }

    #[derive(Serialize)]
    struct Unit;

    #[derive(Serialize)]
    struct Everything {
        shapes: Vec<Shape>,
        tuple: (u8, char, (), Unit),
        bytes: serde_bytes_like::Bytes,
        int_keys: BTreeMap<i64, &'static str>,
        bool_keys: BTreeMap<bool, u8>,
        nan: f64,
        inf: f32,
        tiny: f64,
        huge: u128,
        negative: i128,
        text: &'static str,
    }

    mod serde_bytes_like {
        pub(super) struct Bytes(pub(super) Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }

    #[test]
    fn every_serde_shape_matches_serde_json() {
        let value = Everything {
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(7),
                Shape::Tuple(-3, "x\"y".into()),
                Shape::Struct {
                    a: None,
                    b: vec![true, false],
                },
            ],
            tuple: (255, 'é', (), Unit),
            bytes: serde_bytes_like::Bytes(vec![0, 1, 255]),
            int_keys: [(-1, "a"), (2, "b")].into_iter().collect(),
            bool_keys: [(true, 1)].into_iter().collect(),
            nan: f64::NAN,
            inf: f32::INFINITY,
            tiny: 5e-324,
            huge: u128::MAX,
            negative: i128::MIN,
            text: "tab\tnl\ncr\rbs\\q\"ctl\u{1}\u{1f}del\u{7f}bell\u{8}ff\u{c} ünï 🎉",
        };
        assert_eq!(
            String::from_utf8(ours(&value)).unwrap(),
            serde_json::to_string(&value).unwrap()
        );
        let json = serde_json::json!({"a": [1, 2.5, null, {"b": "c"}], "d": -0.0, "e": 1e300});
        assert_eq!(ours(&json), serde_json::to_vec(&json).unwrap());
    }

    #[test]
    fn display_values_are_escaped_without_a_string() {
        struct Shown;
        impl Serialize for Shown {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(&format_args!("a\"b{}", 1))
            }
        }
        assert_eq!(ours(&Shown), serde_json::to_vec(&Shown).unwrap());
    }

    #[test]
    fn keys_json_cannot_express_are_errors() {
        let map: BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into_iter().collect();
        let mut out = Vec::new();
        let error = write_bounded(&mut out, &map, usize::MAX).unwrap_err();
        assert!(error.to_string().contains("key must be a string"));
        assert!(
            serde_json::to_vec(&map).is_err(),
            "serde_json refuses it too"
        );
    }

    #[test]
    fn stops_at_the_limit_without_writing_far_past_it() {
        let long = "x".repeat(10_000);
        let mut out = Vec::with_capacity(64);
        assert!(matches!(
            write_bounded(&mut out, &long, 100),
            Err(JsonError::TooLarge)
        ));
        assert!(
            out.len() <= 100 && out.capacity() == 64,
            "nothing big was copied"
        );
        let numbers: Vec<u64> = (0..1000).collect();
        assert!(matches!(
            write_bounded(&mut out, &numbers, 100),
            Err(JsonError::TooLarge)
        ));
        assert!(out.len() <= 101);
        let exact = "y".repeat(98);
        write_bounded(&mut out, &exact, 100).unwrap();
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn escape_scan_finds_each_special_byte_in_every_lane() {
        for lane in 0..8 {
            for special in (0u8..0x20).chain([b'"', b'\\']) {
                let mut word = [b'a'; 8];
                word[lane] = special;
                assert_ne!(
                    needs_escape(u64::from_le_bytes(word)),
                    0,
                    "{special:#x} at {lane}"
                );
            }
            for clean in [b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xc3, 0xff] {
                let mut word = [b'a'; 8];
                word[lane] = clean;
                assert_eq!(
                    needs_escape(u64::from_le_bytes(word)),
                    0,
                    "{clean:#x} at {lane}"
                );
            }
        }
    }

    /// Any JSON value: every kind, nested, with strings that need escapes.
    pub(in crate::publish) fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x7f]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_value_serializes_byte_identical_to_serde_json(value in json_value()) {
            prop_assert_eq!(ours(&value), serde_json::to_vec(&value).unwrap());
        }

        #[test]
        fn any_string_serializes_byte_identical_to_serde_json(text in any::<String>()) {
            prop_assert_eq!(ours(&text), serde_json::to_vec(&text).unwrap());
        }

        #[test]
        fn any_float_serializes_byte_identical_to_serde_json(x in any::<f64>(), y in any::<f32>()) {
            prop_assert_eq!(ours(&(x, y)), serde_json::to_vec(&(x, y)).unwrap());
        }
    }
}
