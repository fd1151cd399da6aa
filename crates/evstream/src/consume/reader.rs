//! The connection that reads new entries (`XREADGROUP … BLOCK`), with a reply parser made
//! for it.
//!
//! Why not the redis crate's connection: its general RESP parser (built on `combine`)
//! turns every field of every entry into a `redis::Value` first; profiled, that was more
//! than a third of a consumer's CPU (`BENCHMARKS.md`, consumer-group throughput). The reader
//! here speaks the little of RESP2 that `XREADGROUP` needs, over plain TCP, and decodes a
//! reply straight into entries in one pass. TLS and Unix sockets keep the redis crate's
//! connection (the same results, at its speed).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, ConnectionAddr, RedisError, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::decode::{self, Fields, RawEntry};

/// The reading connection. Clones share it; one read at a time is in flight.
#[derive(Clone)]
pub(crate) enum Reader {
    /// Plain TCP: evstream's reader.
    Raw(Arc<Mutex<RawReader>>),
    /// TLS or a Unix socket: the redis crate's connection.
    Redis(MultiplexedConnection),
}

impl Reader {
    /// Opens the connection (authenticated, on the URL's database, named `name`) and
    /// returns it with its `CLIENT ID` (to unblock it at shutdown; `None` if not allowed).
    pub(crate) async fn open(
        client: &redis::Client,
        connect_timeout: Duration,
        response_timeout: Duration,
        name: &str,
    ) -> Result<(Self, Option<i64>), RedisError> {
        let info = client.get_connection_info();
        if let ConnectionAddr::Tcp(host, port) = info.addr() {
            let mut raw = tokio::time::timeout(
                connect_timeout,
                RawReader::connect(host, *port, response_timeout),
            )
            .await
            .map_err(|_| timed_out("connecting the reading connection"))??;
            let settings = info.redis_settings();
            if let Some(password) = settings.password() {
                let mut auth = redis::cmd("AUTH");
                if let Some(username) = settings.username() {
                    auth.arg(username);
                }
                raw.call(auth.arg(password)).await?;
            }
            if settings.db() != 0 {
                raw.call(redis::cmd("SELECT").arg(settings.db())).await?;
            }
            // Names are for operators only: a server that refuses them (an error reply) is
            // still usable. A lost or late reply is not: the connection is out of step.
            let broken = |error: &RedisError| error.is_io_error() || error.is_timeout();
            match raw
                .call(redis::cmd("CLIENT").arg("SETNAME").arg(name))
                .await
            {
                Err(error) if broken(&error) => return Err(error),
                _ => {}
            }
            let id = match raw.call(redis::cmd("CLIENT").arg("ID")).await {
                Ok(Value::Int(id)) => Some(id),
                Err(error) if broken(&error) => return Err(error),
                _ => None,
            };
            return Ok((Self::Raw(Arc::new(Mutex::new(raw))), id));
        }
        let mut connection = client
            .get_multiplexed_async_connection_with_config(
                &AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(response_timeout)),
            )
            .await?;
        let id = redis::cmd("CLIENT")
            .arg("ID")
            .query_async::<i64>(&mut connection)
            .await
            .ok();
        crate::redis::name_connection(&mut connection, name).await;
        Ok((Self::Redis(connection), id))
    }

    /// Sends an `XREADGROUP` for one stream and returns its entries (none on timeout).
    pub(crate) async fn read(&self, command: &Cmd) -> Result<Vec<RawEntry>, RedisError> {
        match self {
            Self::Raw(raw) => raw.lock().await.read(command).await,
            Self::Redis(connection) => {
                let reply: Value = command.query_async(&mut connection.clone()).await?;
                decode::read_reply(reply).map_err(decode::shape_error)
            }
        }
    }
}

/// A plain TCP connection speaking RESP2, for `XREADGROUP` and a few set-up commands.
pub(crate) struct RawReader {
    socket: TcpStream,
    /// Bytes received and not yet parsed.
    buffer: Vec<u8>,
    response_timeout: Duration,
}

/// Room added to the buffer before each socket read.
const READ_CHUNK: usize = 64 * 1024;

impl RawReader {
    async fn connect(host: &str, port: u16, response_timeout: Duration) -> std::io::Result<Self> {
        let socket = TcpStream::connect((host, port)).await?;
        socket.set_nodelay(true)?;
        Ok(Self {
            socket,
            buffer: Vec::with_capacity(READ_CHUNK),
            response_timeout,
        })
    }

    /// Sends `command` and waits for its whole reply; returns how long the reply is.
    async fn send_and_wait(&mut self, command: &Cmd) -> Result<usize, RedisError> {
        let wait = async {
            self.socket.write_all(&command.get_packed_command()).await?;
            loop {
                if let Some(length) = reply_length(&self.buffer)? {
                    return Ok::<_, RedisError>(length);
                }
                self.buffer.reserve(READ_CHUNK);
                if self.socket.read_buf(&mut self.buffer).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "Redis closed the reading connection",
                    )
                    .into());
                }
            }
        };
        tokio::time::timeout(self.response_timeout, wait)
            .await
            .map_err(|_| timed_out("waiting for a reply on the reading connection"))?
    }

    async fn read(&mut self, command: &Cmd) -> Result<Vec<RawEntry>, RedisError> {
        let length = self.send_and_wait(command).await?;
        let parsed = parse_read_reply(&self.buffer[..length]);
        self.buffer.drain(..length);
        parsed
    }

    /// A set-up command, its reply as a `Value` (through the redis crate's parser: these
    /// are few and small).
    async fn call(&mut self, command: &Cmd) -> Result<Value, RedisError> {
        let length = self.send_and_wait(command).await?;
        let parsed = redis::parse_redis_value(&self.buffer[..length]);
        self.buffer.drain(..length);
        parsed?.extract_error()
    }
}

fn timed_out(what: &str) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out")).into()
}

fn malformed(detail: &str) -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("malformed reply from Redis: {detail}"),
    )
    .into()
}

/// A cursor over one RESP2 reply.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// The next header line: its type byte and its text (without `\r\n`); `None` if the
    /// line is not complete yet.
    /// An empty line comes back with type byte 0, which no caller accepts.
    fn line(&mut self) -> Option<(u8, &'a [u8])> {
        let rest = self.bytes.get(self.at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        self.at += end + 2;
        match rest.get(1..end) {
            Some(text) => Some((rest[0], text)),
            None => Some((0, &[])),
        }
    }

    fn skip(&mut self, n: usize) -> Option<&'a [u8]> {
        let part = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(part)
    }
}

/// A header's number (`-1` or digits), parsed by hand: it is read for every field.
fn number(text: &[u8]) -> Result<i64, RedisError> {
    let bad = || malformed("a length that is not a number");
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(bad());
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return Err(bad());
        }
        value = value * 10 + i64::from(digit - b'0');
    }
    Ok(if negative { -value } else { value })
}

/// How long the first complete reply in `bytes` is; `None` if more bytes are needed. Walks
/// the headers and jumps over bulk payloads, so a large reply is scanned cheaply however many
/// reads it takes to arrive.
fn reply_length(bytes: &[u8]) -> Result<Option<usize>, RedisError> {
    let mut cursor = Cursor { bytes, at: 0 };
    let mut remaining: u64 = 1;
    while remaining > 0 {
        let Some((kind, text)) = cursor.line() else {
            return Ok(None);
        };
        remaining -= 1;
        match kind {
            b'*' => remaining += u64::try_from(number(text)?).unwrap_or(0),
            b'$' => {
                if let Ok(n) = usize::try_from(number(text)?) {
                    if cursor.skip(n + 2).is_none() {
                        return Ok(None);
                    }
                }
            }
            b'+' | b'-' | b':' => {}
            _ => return Err(malformed("an unknown type byte")),
        }
    }
    Ok(Some(cursor.at))
}

/// Decodes a complete `XREADGROUP` reply for one stream into its entries.
fn parse_read_reply(bytes: &[u8]) -> Result<Vec<RawEntry>, RedisError> {
    let mut cursor = Cursor { bytes, at: 0 };
    let incomplete = || malformed("a reply that ends too early");
    match cursor.line().ok_or_else(incomplete)? {
        (b'-', _) => {
            let error = redis::parse_redis_value(bytes)?.extract_error();
            return Err(error.err().unwrap_or_else(|| malformed("an error reply")));
        }
        (b'*', text) if number(text)? <= 0 => return Ok(Vec::new()),
        (b'*', _) => {}
        _ => return Err(malformed("expected an array of streams")),
    }
    // One stream: its name, then its entries.
    if array(&mut cursor)? != Some(2) {
        return Err(malformed("a stream that is not [name, entries]"));
    }
    bulk_bytes(&mut cursor)?;
    let count = array(&mut cursor)?.unwrap_or(0);
    let mut entries = Vec::with_capacity(count);
    // One entry's field names and values, reused from entry to entry.
    let mut parts: Vec<&[u8]> = Vec::new();
    for _ in 0..count {
        if array(&mut cursor)? != Some(2) {
            return Err(malformed("an entry that is not [id, fields]"));
        }
        let id = std::str::from_utf8(bulk_bytes(&mut cursor)?)
            .map_err(|_| malformed("an entry id that is not UTF-8"))?
            .to_owned();
        let fields = match array(&mut cursor)? {
            None => None,
            Some(n) if n % 2 == 1 => return Err(malformed("a field without a value")),
            Some(n) => {
                // Located first, so that the entry's buffer is allocated once, to size.
                parts.clear();
                for _ in 0..n {
                    parts.push(bulk_bytes(&mut cursor)?);
                }
                let size = parts.iter().map(|part| part.len()).sum();
                let mut pairs = Fields::with_capacity(n / 2, size);
                for pair in parts.chunks_exact(2) {
                    pairs.push(pair[0], pair[1]);
                }
                Some(pairs)
            }
        };
        entries.push(RawEntry {
            id,
            fields,
            deliveries: 1,
        });
    }
    Ok(entries)
}

/// For the fuzz target (`fuzzing::xreadgroup_reply`): the entries of the complete,
/// well-formed `XREADGROUP` reply `bytes` starts with, if it does.
pub(crate) fn decode_for_fuzzing(bytes: &[u8]) -> Option<usize> {
    let length = reply_length(bytes).ok()??;
    parse_read_reply(&bytes[..length])
        .ok()
        .map(|entries| entries.len())
}

/// An array's length; `None` for a nil (a pending entry deleted from the stream has nil
/// fields).
fn array(cursor: &mut Cursor<'_>) -> Result<Option<usize>, RedisError> {
    match cursor.line() {
        Some((b'*', text)) => Ok(usize::try_from(number(text)?).ok()),
        Some((b'$', b"-1")) => Ok(None),
        Some(_) => Err(malformed("expected an array")),
        None => Err(malformed("a reply that ends too early")),
    }
}

fn bulk_bytes<'a>(cursor: &mut Cursor<'a>) -> Result<&'a [u8], RedisError> {
    match cursor.line() {
        Some((b'$', text)) => {
            let n = usize::try_from(number(text)?).map_err(|_| malformed("a nil string"))?;
            let part = cursor
                .skip(n + 2)
                .ok_or_else(|| malformed("a reply that ends too early"))?;
            Ok(&part[..n])
        }
        Some((b'+', text)) => Ok(text),
        _ => Err(malformed("expected a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `XREADGROUP` reply: stream `events`, an entry with two fields (one value holding
    /// `\r\n`), and a deleted entry (nil fields).
    const REPLY: &[u8] = b"*1\r\n*2\r\n$6\r\nevents\r\n*2\r\n\
        *2\r\n$3\r\n1-0\r\n*4\r\n$1\r\na\r\n$4\r\nb\r\nc\r\n$4\r\ndata\r\n$0\r\n\r\n\
        *2\r\n$3\r\n2-0\r\n*-1\r\n";

    #[test]
    fn a_reply_is_complete_only_when_every_byte_is_there() {
        for cut in 0..REPLY.len() {
            assert_eq!(reply_length(&REPLY[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(reply_length(REPLY).unwrap(), Some(REPLY.len()));
        // What follows belongs to the next reply.
        let mut two = REPLY.to_vec();
        two.extend_from_slice(b"*-1\r\n");
        assert_eq!(reply_length(&two).unwrap(), Some(REPLY.len()));
        assert_eq!(reply_length(b"*-1\r\n").unwrap(), Some(5));
        assert_eq!(reply_length(b"-NOGROUP x\r\n").unwrap(), Some(12));
        assert!(reply_length(b"?what\r\n").is_err());
        // An empty line where a header belongs: refused, not a panic.
        assert!(reply_length(b"\r\n").is_err());
        assert!(reply_length(b"*2\r\n\r\n").is_err());
        assert!(parse_read_reply(b"*1\r\n\r\n").is_err());
    }

    #[test]
    fn entries_are_decoded_with_their_fields_in_order() {
        let entries = parse_read_reply(REPLY).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1-0");
        let fields: Vec<_> = entries[0].fields.as_ref().unwrap().iter().collect();
        assert_eq!(
            fields,
            [(&b"a"[..], &b"b\r\nc"[..]), (&b"data"[..], &b""[..])]
        );
        assert_eq!((entries[1].id.as_str(), &entries[1].fields), ("2-0", &None));
        assert!(parse_read_reply(b"*-1\r\n").unwrap().is_empty());
    }

    /// An entry as the tests write it: id, and fields (none for a deleted entry).
    type Written = (String, Option<Vec<(Vec<u8>, Vec<u8>)>>);

    fn encode(entries: &[Written]) -> Vec<u8> {
        let mut out = Vec::new();
        let bulk = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        };
        out.extend_from_slice(b"*1\r\n*2\r\n");
        bulk(&mut out, b"events");
        out.extend_from_slice(format!("*{}\r\n", entries.len()).as_bytes());
        for (id, fields) in entries {
            out.extend_from_slice(b"*2\r\n");
            bulk(&mut out, id.as_bytes());
            match fields {
                None => out.extend_from_slice(b"*-1\r\n"),
                Some(fields) => {
                    out.extend_from_slice(format!("*{}\r\n", fields.len() * 2).as_bytes());
                    for (name, value) in fields {
                        bulk(&mut out, name);
                        bulk(&mut out, value);
                    }
                }
            }
        }
        out
    }

    proptest::proptest! {
        /// Any entries, encoded as Redis would: complete only with every byte, decoded back
        /// to what was encoded.
        #[test]
        fn encoded_entries_decode_back(
            entries in proptest::collection::vec(
                (
                    "[0-9]{1,13}-[0-9]{1,3}",
                    proptest::option::of(proptest::collection::vec(
                        (
                            proptest::collection::vec(proptest::num::u8::ANY, 0..12),
                            proptest::collection::vec(proptest::num::u8::ANY, 0..40),
                        ),
                        0..6,
                    )),
                ),
                0..8,
            ),
            cut in 0usize..10_000,
        ) {
            let bytes = encode(&entries);
            proptest::prop_assert_eq!(reply_length(&bytes).unwrap(), Some(bytes.len()));
            let cut = cut % bytes.len();
            proptest::prop_assert_eq!(reply_length(&bytes[..cut]).unwrap(), None);
            let decoded = parse_read_reply(&bytes).unwrap();
            proptest::prop_assert_eq!(decoded.len(), entries.len());
            for (entry, (id, fields)) in decoded.iter().zip(&entries) {
                proptest::prop_assert_eq!(&entry.id, id);
                let expected = fields.as_ref().map(|fields| {
                    Fields::from_pairs(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
                });
                proptest::prop_assert_eq!(&entry.fields, &expected);
            }
        }

        /// A valid reply with one byte changed, or `\r\n` put in anywhere: an answer (often
        /// a refusal), never a panic.
        #[test]
        fn altered_replies_never_panic(
            entries in proptest::collection::vec(
                ("[0-9]{1,3}-[0-9]", proptest::option::of(proptest::collection::vec(
                    (proptest::collection::vec(proptest::num::u8::ANY, 0..4),
                     proptest::collection::vec(proptest::num::u8::ANY, 0..8)),
                    0..3,
                ))),
                1..4,
            ),
            at in 0usize..10_000,
            byte in proptest::num::u8::ANY,
            insert_line in proptest::bool::ANY,
        ) {
            let mut bytes = encode(&entries);
            let at = at % bytes.len();
            if insert_line {
                bytes.splice(at..at, b"\r\n".iter().copied());
            } else {
                bytes[at] = byte;
            }
            let _ = decode_for_fuzzing(&bytes);
        }

        /// Whatever a server (or something posing as one) sends: an answer, never a panic.
        #[test]
        fn any_bytes_are_refused_or_decoded_without_panicking(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            prefix in proptest::sample::select(vec![
                &b""[..],
                &b"*1\r\n*2\r\n"[..],
                &b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n"[..],
            ]),
        ) {
            let mut input = prefix.to_vec();
            input.extend_from_slice(&bytes);
            let _ = decode_for_fuzzing(&input);
        }
    }

    #[test]
    fn an_error_reply_keeps_its_code_and_a_bad_shape_is_refused() {
        let error = parse_read_reply(b"-NOGROUP No such key 'events'\r\n").unwrap_err();
        assert_eq!(error.code(), Some("NOGROUP"));
        let odd = b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*1\r\n$1\r\na\r\n";
        assert!(parse_read_reply(odd).unwrap_err().is_io_error());
        assert!(parse_read_reply(b":1\r\n").is_err());
    }
}
