//! A lean reader of the archiver's `XRANGE` replies, on a plain TCP connection of its own.
//!
//! Why by hand: redis-rs decodes every reply into its `Value` tree through a parser
//! combinator, about 27,000 instructions per 8-field entry, which was 59 % of the archiver's
//! time (callgrind, `BENCHMARKS.md`). This reads the same RESP2 bytes straight into the
//! entries. It speaks only what the archiver sends (`AUTH`, `SELECT`, then `MULTI`, `XRANGE`,
//! `XINFO STREAM`, `EXEC`) and only over plain TCP: a `rediss://` server, or anything this
//! reader does not understand, is read through redis-rs as before.

use std::io;

use redis::ConnectionAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::record::{Builder, Kind, Record};
use crate::redis::EntryId;

/// A RESP2 reply other than the entries (those are read into records directly).
#[derive(Debug)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// What the reader could not do: the connection failed (reconnect), or the server said
/// something unexpected (use redis-rs).
#[derive(Debug)]
pub(super) enum ReadError {
    Io(io::Error),
    Protocol(String),
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(error) => write!(f, "{error}"),
            Self::Protocol(what) => write!(f, "unexpected reply: {what}"),
        }
    }
}

fn protocol(what: impl Into<String>) -> ReadError {
    ReadError::Protocol(what.into())
}

/// A connection that reads batches of entries.
#[derive(Debug)]
pub(super) struct Reader {
    io: BufReader<TcpStream>,
    line: Vec<u8>,
    /// A field name being read (names are matched, not kept).
    name: Vec<u8>,
}

impl Reader {
    /// A connection to the server `client` names, authenticated and on its database; `None`
    /// when it is not plain TCP (TLS, a unix socket).
    pub(super) async fn connect(client: &redis::Client) -> Option<Result<Self, ReadError>> {
        let info = client.get_connection_info();
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        let connect = async {
            let stream = TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            let mut reader = Self {
                io: BufReader::with_capacity(1 << 16, stream),
                line: Vec::new(),
                name: Vec::new(),
            };
            if let Some(password) = settings.password() {
                let mut auth: Vec<&[u8]> = vec![b"AUTH"];
                if let Some(user) = settings.username() {
                    auth.push(user.as_bytes());
                }
                auth.push(password.as_bytes());
                reader.expect_ok(&auth).await?;
            }
            if settings.db() != 0 {
                let db = settings.db().to_string();
                reader.expect_ok(&[b"SELECT", db.as_bytes()]).await?;
            }
            Ok(reader)
        };
        Some(connect.await)
    }

    async fn expect_ok(&mut self, args: &[&[u8]]) -> Result<(), ReadError> {
        let mut out = Vec::new();
        command(&mut out, args);
        self.io.get_mut().write_all(&out).await?;
        match self.reply().await? {
            Reply::Status(ok) if ok == "OK" => Ok(()),
            other => Err(protocol(format!("{other:?}"))),
        }
    }

    /// The next `count` entries of `key` after `after`, as records of `kind` and
    /// `partition`, with the stream's `entries-added` and `last-generated-id`, in one
    /// `MULTI` (see the archiver's `read_batch`). A missing key reads as empty.
    pub(super) async fn read_batch(
        &mut self,
        key: &str,
        after: EntryId,
        count: usize,
        (kind, partition): (Kind, u16),
    ) -> Result<(u64, EntryId, Vec<Record>), ReadError> {
        let from = format!("({after}");
        let count = count.to_string();
        let mut out = Vec::with_capacity(256);
        command(&mut out, &[b"MULTI"]);
        command(
            &mut out,
            &[
                b"XRANGE",
                key.as_bytes(),
                from.as_bytes(),
                b"+",
                b"COUNT",
                count.as_bytes(),
            ],
        );
        command(&mut out, &[b"XINFO", b"STREAM", key.as_bytes()]);
        command(&mut out, &[b"EXEC"]);
        self.io.get_mut().write_all(&out).await?;
        for expected in ["OK", "QUEUED", "QUEUED"] {
            match self.reply().await? {
                Reply::Status(status) if status == expected => {}
                other => return Err(protocol(format!("{other:?}"))),
            }
        }
        if self.header(b'*').await? != Some(2) {
            return Err(protocol("EXEC did not return two replies"));
        }
        let entries = self.entries(kind, partition).await?;
        let (added, last) = match self.reply().await? {
            Reply::Error(e) if e.contains("no such key") => (0, EntryId::default()),
            Reply::Array(Some(info)) => stream_info(info)?,
            other => return Err(protocol(format!("XINFO STREAM: {other:?}"))),
        };
        Ok((added, last, entries))
    }

    /// An `XRANGE` reply, straight into records.
    async fn entries(&mut self, kind: Kind, partition: u16) -> Result<Vec<Record>, ReadError> {
        let n = self
            .header(b'*')
            .await?
            .ok_or_else(|| protocol("XRANGE: null"))?;
        let mut records = Vec::with_capacity(n);
        let mut name = std::mem::take(&mut self.name);
        for _ in 0..n {
            if self.header(b'*').await? != Some(2) {
                return Err(protocol("XRANGE: an entry is not [id, fields]"));
            }
            self.bulk_into(&mut name).await?;
            let id = std::str::from_utf8(&name)
                .ok()
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| protocol("XRANGE: an entry id"))?;
            let mut record = Builder::new(kind, partition, id);
            let fields = self.header(b'*').await?.unwrap_or(0);
            for _ in 0..fields / 2 {
                self.bulk_into(&mut name).await?;
                let mut value = Vec::new();
                self.bulk_into(&mut value).await?;
                let name = std::str::from_utf8(&name)
                    .map_err(|_| protocol("XRANGE: a field name is not UTF-8"))?;
                record.field(name, value);
            }
            records.push(record.finish());
        }
        self.name = name;
        Ok(records)
    }

    /// A line, without its `\r\n`.
    async fn line(&mut self) -> Result<&[u8], ReadError> {
        self.line.clear();
        self.io.read_until(b'\n', &mut self.line).await?;
        if !self.line.ends_with(b"\r\n") {
            return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let len = self.line.len() - 2;
        Ok(&self.line[..len])
    }

    /// The length of an array (`*`) or bulk string (`$`) header; `None` for a null one.
    async fn header(&mut self, kind: u8) -> Result<Option<usize>, ReadError> {
        let line = self.line().await?;
        match line.split_first() {
            Some((&k, rest)) if k == kind => {
                if rest == b"-1" {
                    return Ok(None);
                }
                let n = std::str::from_utf8(rest)
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| protocol("a length"))?;
                Ok(Some(n))
            }
            _ => Err(protocol(String::from_utf8_lossy(line).into_owned())),
        }
    }

    /// A bulk string's bytes into `out` (cleared first; a null one is empty), copied from the
    /// read buffer as it fills, without zeroing `out` first.
    async fn bulk_into(&mut self, out: &mut Vec<u8>) -> Result<(), ReadError> {
        out.clear();
        let Some(len) = self.header(b'$').await? else {
            return Ok(());
        };
        out.reserve_exact(len);
        let mut left = len + 2;
        while left > 0 {
            let buffered = self.io.fill_buf().await?;
            if buffered.is_empty() {
                return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            let take = buffered.len().min(left);
            let data = take.min(left.saturating_sub(2));
            out.extend_from_slice(&buffered[..data]);
            self.io.consume(take);
            left -= take;
        }
        Ok(())
    }

    /// Any reply, as a tree (the small ones).
    async fn reply(&mut self) -> Result<Reply, ReadError> {
        let mut stack: Vec<(Vec<Reply>, usize)> = Vec::new();
        loop {
            let (kind, text) = {
                let line = self.line().await?;
                let (kind, rest) = line
                    .split_first()
                    .ok_or_else(|| protocol("an empty line"))?;
                (*kind, String::from_utf8_lossy(rest).into_owned())
            };
            let number = || text.parse::<i64>().map_err(|_| protocol(text.clone()));
            let mut reply = match kind {
                b'+' => Reply::Status(text.clone()),
                b'-' => Reply::Error(text.clone()),
                b':' => Reply::Int(number()?),
                b'$' => match number()? {
                    -1 => Reply::Bulk(None),
                    len => {
                        let len = usize::try_from(len).map_err(|_| protocol("a length"))?;
                        let mut bytes = vec![0; len + 2];
                        self.io.read_exact(&mut bytes).await?;
                        bytes.truncate(len);
                        Reply::Bulk(Some(bytes))
                    }
                },
                b'*' => match number()? {
                    -1 => Reply::Array(None),
                    0 => Reply::Array(Some(Vec::new())),
                    len => {
                        let len = usize::try_from(len).map_err(|_| protocol("a length"))?;
                        stack.push((Vec::with_capacity(len), len));
                        continue;
                    }
                },
                _ => return Err(protocol(format!("{}{text}", char::from(kind)))),
            };
            // Complete every array this reply fills.
            loop {
                let Some((items, len)) = stack.last_mut() else {
                    return Ok(reply);
                };
                items.push(reply);
                if items.len() < *len {
                    break;
                }
                let (items, _) = stack.pop().expect("just looked at it");
                reply = Reply::Array(Some(items));
            }
        }
    }
}

/// `entries-added` and `last-generated-id` of an `XINFO STREAM` reply.
fn stream_info(info: Vec<Reply>) -> Result<(u64, EntryId), ReadError> {
    let mut added = 0;
    let mut last = EntryId::default();
    let mut pairs = info.into_iter();
    while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
        match (name, value) {
            (Reply::Bulk(Some(name)), Reply::Int(n)) if name == b"entries-added" => {
                added = u64::try_from(n).unwrap_or(0);
            }
            (Reply::Bulk(Some(name)), Reply::Bulk(Some(id))) if name == b"last-generated-id" => {
                last = std::str::from_utf8(&id)
                    .ok()
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| protocol("last-generated-id"))?;
            }
            _ => {}
        }
    }
    Ok((added, last))
}

/// Appends one command, as RESP, to `out`.
fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}
