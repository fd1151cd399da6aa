//! Effects, and the one atomic call (`commit.lua`) that acknowledges a batch with them.

use redis::{Cmd, Value};

/// The script's source.
pub(crate) const SCRIPT: &str = include_str!("commit.lua");

/// Redis writes a handler wants applied with an entry's acknowledgement, exactly once.
///
/// Give each command as a [`redis::Cmd`]; they run inside the commit script, in order, only
/// if this commit is the one that acknowledges the entry. Commands must be deterministic
/// writes or reads (no blocking commands, no `EVAL`). In Redis Cluster the keys must share
/// the stream's hash tag.
///
/// ```
/// use evstream::consume::Effects;
///
/// let mut effects = Effects::default();
/// effects.apply(redis::cmd("HSET").arg("events:order:o-1").arg("created_ns").arg(42));
/// // The reply of this one comes back in the entry's `Outcome::replies`.
/// effects.apply_with_reply(redis::cmd("HGET").arg("events:order:o-1").arg("filled_ns"));
/// effects.count("orders", 1);
/// assert_eq!(effects.len(), 2);
/// ```
#[derive(Debug, Default)]
pub struct Effects {
    /// Encoded effects: argument count, reply flag, arguments.
    encoded: Vec<Vec<u8>>,
    commands: usize,
    counters: Vec<(String, i64)>,
}

impl Effects {
    /// Adds a command whose reply is not needed.
    pub fn apply(&mut self, command: &mut Cmd) -> &mut Self {
        self.push(command, false)
    }

    /// Adds a command whose reply the handler gets back in [`Outcome::replies`].
    pub fn apply_with_reply(&mut self, command: &mut Cmd) -> &mut Self {
        self.push(command, true)
    }

    /// Adds `delta` to the counter `name` of the group's counters hash
    /// (`<stream>:consume:<group>`), only if the entry is applied.
    pub fn count(&mut self, name: &str, delta: i64) -> &mut Self {
        match self.counters.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total += delta,
            None => self.counters.push((name.to_owned(), delta)),
        }
        self
    }

    /// Number of commands added.
    pub fn len(&self) -> usize {
        self.commands
    }

    /// Whether no command was added.
    pub fn is_empty(&self) -> bool {
        self.commands == 0
    }

    fn push(&mut self, command: &mut Cmd, reply: bool) -> &mut Self {
        let start = self.encoded.len();
        self.encoded.push(Vec::new());
        self.encoded.push(if reply { b"1".to_vec() } else { b"0".to_vec() });
        for arg in command.args_iter() {
            match arg {
                redis::Arg::Simple(bytes) => self.encoded.push(bytes.to_vec()),
                // A cursor argument only exists in SCAN-like commands, meaningless here.
                _ => self.encoded.push(b"0".to_vec()),
            }
        }
        let argc = self.encoded.len() - start - 2;
        self.encoded[start] = argc.to_string().into_bytes();
        self.commands += 1;
        self
    }

    pub(crate) fn clear(&mut self) {
        self.encoded.clear();
        self.commands = 0;
        self.counters.clear();
    }
}

/// What the commit did for one handled entry, given back to
/// [`Handler::on_commit`](super::Handler::on_commit).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Outcome {
    /// The event.
    pub event_id: uuid::Uuid,
    /// The stream entry id.
    pub stream_id: String,
    /// Whether this commit acknowledged the entry and applied its effects. `false` means
    /// another consumer (or an earlier try of this commit) had already done it: the effects
    /// were skipped.
    pub applied: bool,
    /// Replies of the effects added with [`Effects::apply_with_reply`], in order (empty
    /// when not applied).
    pub replies: Vec<Value>,
}

/// One commit being built: the records of `commit.lua`, in order.
#[derive(Debug, Default)]
pub(crate) struct CommitBuilder {
    args: Vec<Vec<u8>>,
    records: usize,
}

impl CommitBuilder {
    /// Adds an entry (or, with `id` empty, the batch's own effects) with its effects.
    pub(crate) fn record(&mut self, id: &str, effects: &Effects) {
        self.args.push(id.as_bytes().to_vec());
        self.args.push(effects.commands.to_string().into_bytes());
        self.args.extend(effects.encoded.iter().cloned());
        self.args
            .push(effects.counters.len().to_string().into_bytes());
        for (name, delta) in &effects.counters {
            self.args.push(name.as_bytes().to_vec());
            self.args.push(delta.to_string().into_bytes());
        }
        self.records += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The `EVALSHA` call.
    pub(crate) fn command(&self, sha: &str, stream: &str, counters: &str, group: &str) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha).arg(2).arg(stream).arg(counters).arg(group);
        for arg in &self.args {
            cmd.arg(arg.as_slice());
        }
        cmd
    }
}

/// One record's result: status (1 applied, 0 skipped, 2 applied with a failed effect), the
/// wanted replies, and the failed effect's error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordResult {
    pub(crate) status: i64,
    pub(crate) replies: Vec<Value>,
    pub(crate) error: String,
}

/// Parses the script's reply.
pub(crate) fn parse_reply(value: Value) -> Result<Vec<RecordResult>, super::decode::ReplyShapeError> {
    let bad = |detail: String| super::decode::ReplyShapeError {
        command: "commit script",
        detail,
    };
    let Value::Array(records) = value else {
        return Err(bad(format!("expected an array, got {value:?}")));
    };
    records
        .into_iter()
        .map(|record| {
            let Value::Array(parts) = record else {
                return Err(bad(format!("expected a record, got {record:?}")));
            };
            let mut parts = parts.into_iter();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(Value::Int(status)), Some(replies), error) => Ok(RecordResult {
                    status,
                    replies: match replies {
                        Value::Array(replies) => replies,
                        _ => Vec::new(),
                    },
                    error: match error {
                        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                        _ => String::new(),
                    },
                }),
                other => Err(bad(format!("a record of unexpected shape: {other:?}"))),
            }
        })
        .collect()
}
