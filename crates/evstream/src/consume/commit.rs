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
    /// Every argument of every effect, back to back (one buffer, reused batch after batch).
    bytes: Vec<u8>,
    /// Per effect: where its arguments start in `bytes`, their end offsets, and whether its
    /// reply is wanted.
    effects: Vec<(usize, Vec<usize>, bool)>,
    /// Effects with a wanted reply.
    wanted: usize,
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
    /// (`<stream>:consume:<group>`), only if the entry is applied. Counters of a whole batch
    /// are summed inside Redis and written with one `HINCRBY` per name.
    pub fn count(&mut self, name: &str, delta: i64) -> &mut Self {
        match self.counters.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total += delta,
            None => self.counters.push((name.to_owned(), delta)),
        }
        self
    }

    /// Number of commands added.
    pub fn len(&self) -> usize {
        self.effects.len()
    }

    /// Whether no command was added.
    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }

    fn push(&mut self, command: &mut Cmd, reply: bool) -> &mut Self {
        let start = self.bytes.len();
        let mut ends = Vec::with_capacity(command.args_iter().len());
        for arg in command.args_iter() {
            match arg {
                redis::Arg::Simple(bytes) => self.bytes.extend_from_slice(bytes),
                // A cursor argument only exists in SCAN-like commands, meaningless here.
                _ => self.bytes.push(b'0'),
            }
            ends.push(self.bytes.len());
        }
        self.effects.push((start, ends, reply));
        self.wanted += usize::from(reply);
        self
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.effects.clear();
        self.wanted = 0;
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

/// One commit being built: the `EVALSHA` call with its records, in order.
#[derive(Debug)]
pub(crate) struct CommitBuilder {
    cmd: Cmd,
    /// Wanted replies per record.
    wanted: Vec<usize>,
}

impl CommitBuilder {
    pub(crate) fn new(sha: &str, stream: &str, counters: &str, group: &str) -> Self {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha).arg(2).arg(stream).arg(counters).arg(group);
        Self {
            cmd,
            wanted: Vec::new(),
        }
    }

    /// Adds an entry (or, with `id` empty, effects of no entry) with its effects.
    pub(crate) fn record(&mut self, id: &str, effects: &Effects) {
        let mut number = itoa::Buffer::new();
        self.cmd.arg(id).arg(number.format(effects.effects.len()));
        for (start, ends, reply) in &effects.effects {
            let mut start = *start;
            self.cmd
                .arg(number.format(ends.len()))
                .arg(if *reply { "1" } else { "0" });
            for &end in ends {
                self.cmd.arg(&effects.bytes[start..end]);
                start = end;
            }
        }
        self.cmd.arg(number.format(effects.counters.len()));
        for (name, delta) in &effects.counters {
            self.cmd.arg(name.as_str()).arg(number.format(*delta));
        }
        self.wanted.push(effects.wanted);
    }

    /// The call, and the number of replies wanted per record (for [`parse_reply`]).
    pub(crate) fn finish(self) -> (Cmd, Vec<usize>) {
        (self.cmd, self.wanted)
    }
}

/// One record's result: status (1 applied, 0 skipped, 2 applied with a failed effect), the
/// wanted replies, and the failed effect's error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordResult {
    pub(crate) status: u8,
    pub(crate) replies: Vec<Value>,
    pub(crate) error: String,
}

/// Parses the script's flat reply; `wanted[i]` is the number of replies record `i` asked for.
pub(crate) fn parse_reply(
    value: Value,
    wanted: &[usize],
) -> Result<Vec<RecordResult>, super::decode::ReplyShapeError> {
    let bad = |detail: String| super::decode::ReplyShapeError {
        command: "commit script",
        detail,
    };
    let Value::Array(items) = value else {
        return Err(bad(format!("expected an array, got {value:?}")));
    };
    let mut items = items.into_iter();
    let statuses = match items.next() {
        Some(Value::BulkString(statuses)) => statuses,
        Some(Value::SimpleString(statuses)) => statuses.into_bytes(),
        // An empty concatenation comes back as an empty bulk string; no records.
        _ => Vec::new(),
    };
    if statuses.len() != wanted.len() {
        return Err(bad(format!(
            "{} statuses for {} records",
            statuses.len(),
            wanted.len()
        )));
    }
    let failures = statuses.iter().filter(|&&s| s == b'2').count();
    let mut errors = Vec::with_capacity(failures);
    for _ in 0..failures {
        errors.push(match items.next() {
            Some(Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            other => return Err(bad(format!("expected an error text, got {other:?}"))),
        });
    }
    let mut errors = errors.into_iter();
    let mut results = Vec::with_capacity(statuses.len());
    for (&status, &wanted) in statuses.iter().zip(wanted) {
        let status = status.wrapping_sub(b'0');
        let mut result = RecordResult {
            status,
            replies: Vec::new(),
            error: if status == 2 {
                errors.next().unwrap_or_default()
            } else {
                String::new()
            },
        };
        if status != 0 {
            for _ in 0..wanted {
                let reply = match items.next() {
                    Some(Value::Int(-1)) => items.next().unwrap_or(Value::Nil),
                    Some(Value::Int(n)) if n >= 0 => {
                        Value::Array(items.by_ref().take(n as usize).collect())
                    }
                    other => return Err(bad(format!("expected a reply marker, got {other:?}"))),
                };
                result.replies.push(reply);
            }
        }
        results.push(result);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn records_encode_effects_and_counters_in_order() {
        let mut effects = Effects::default();
        effects
            .apply(redis::cmd("HSET").arg("k").arg("f").arg(7))
            .apply_with_reply(redis::cmd("HGET").arg("k").arg("f"))
            .count("orders", 1)
            .count("orders", 2);
        let mut builder = CommitBuilder::new("sha", "events", "events:consume:g", "g");
        builder.record("1-0", &effects);
        let (cmd, wanted) = builder.finish();
        let args: Vec<String> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8(b.to_vec()).unwrap(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            args,
            [
                "EVALSHA",
                "sha",
                "2",
                "events",
                "events:consume:g",
                "g",
                "1-0",
                "2",
                "4",
                "0",
                "HSET",
                "k",
                "f",
                "7",
                "3",
                "1",
                "HGET",
                "k",
                "f",
                "1",
                "orders",
                "3"
            ]
        );
        assert_eq!(wanted, vec![1]);
    }

    #[test]
    fn the_flat_reply_is_split_per_record() {
        // Three records: applied with two wanted replies (a value and an array), skipped
        // (wants one, gets none), applied with a failed effect (wants one, gets a nil).
        let reply = Value::Array(vec![
            bulk("102"),
            bulk("HSET: WRONGTYPE"),
            Value::Int(-1),
            bulk("v"),
            Value::Int(2),
            bulk("a"),
            Value::Nil,
            Value::Int(-1),
            Value::Nil,
        ]);
        let results = parse_reply(reply, &[2, 1, 1]).unwrap();
        assert_eq!(results[0].status, 1);
        assert_eq!(
            results[0].replies,
            vec![bulk("v"), Value::Array(vec![bulk("a"), Value::Nil])]
        );
        assert_eq!((results[1].status, results[1].replies.len()), (0, 0));
        assert_eq!(results[2].status, 2);
        assert_eq!(results[2].error, "HSET: WRONGTYPE");
        assert_eq!(results[2].replies, vec![Value::Nil]);
        assert!(parse_reply(Value::Array(vec![bulk("1")]), &[0, 0]).is_err());
    }
}
