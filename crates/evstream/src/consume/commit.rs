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
    /// Counter increments: the first `counters_used` slots are this record's; the others
    /// keep their strings for reuse.
    counters: Vec<(String, i64)>,
    counters_used: usize,
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
        let used = &mut self.counters[..self.counters_used];
        if let Some((_, total)) = used.iter_mut().find(|(n, _)| n == name) {
            *total += delta;
            return self;
        }
        // Reuse a slot (and its string) left from an earlier batch: no allocation per entry.
        match self.counters.get_mut(self.counters_used) {
            Some(slot) => {
                slot.0.clear();
                slot.0.push_str(name);
                slot.1 = delta;
            }
            None => self.counters.push((name.to_owned(), delta)),
        }
        self.counters_used += 1;
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
        self.counters_used = 0;
    }

    fn counters(&self) -> &[(String, i64)] {
        &self.counters[..self.counters_used]
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

/// One commit being built: the `EVALSHA` call's records, in order (see `commit.lua` for the
/// layout of its arguments).
#[derive(Debug)]
pub(crate) struct CommitBuilder {
    head: Cmd,
    /// Counter names, and the distinct sets of increments (by name number, from 1).
    names: Vec<String>,
    profiles: Vec<Vec<(usize, i64)>>,
    /// Per record: its stream entry id and its profile number (0: none), as arguments
    /// (one buffer, not a string per record).
    records: Cmd,
    /// Number of records.
    count: usize,
    /// The effects section, built as records come.
    effects: Cmd,
    /// Wanted replies per record.
    wanted: Vec<usize>,
}

impl CommitBuilder {
    pub(crate) fn new(sha: &str, stream: &str, counters: &str, group: &str) -> Self {
        let mut head = redis::cmd("EVALSHA");
        head.arg(sha).arg(2).arg(stream).arg(counters).arg(group);
        Self {
            head,
            names: Vec::new(),
            profiles: Vec::new(),
            records: Cmd::new(),
            count: 0,
            effects: Cmd::new(),
            wanted: Vec::new(),
        }
    }

    /// Adds an entry (or, with `id` empty, effects of no entry) with its effects.
    pub(crate) fn record(&mut self, id: &str, effects: &Effects) {
        let profile = self.profile(effects.counters());
        let mut number = itoa::Buffer::new();
        self.records.arg(id).arg(number.format(profile));
        self.count += 1;
        self.wanted.push(effects.wanted);
        if effects.effects.is_empty() {
            return;
        }
        self.effects
            .arg(number.format(self.count))
            .arg(number.format(effects.effects.len()));
        for (start, ends, reply) in &effects.effects {
            let mut start = *start;
            self.effects
                .arg(number.format(ends.len()))
                .arg(if *reply { "1" } else { "0" });
            for &end in ends {
                self.effects.arg(&effects.bytes[start..end]);
                start = end;
            }
        }
    }

    /// The profile number of a record's counters (0 for none), added if new.
    fn profile(&mut self, counters: &[(String, i64)]) -> usize {
        if counters.is_empty() {
            return 0;
        }
        let names = &self.names;
        let same = |profile: &Vec<(usize, i64)>| {
            profile.len() == counters.len()
                && profile
                    .iter()
                    .zip(counters)
                    .all(|(&(n, d), (name, delta))| names[n - 1] == *name && d == *delta)
        };
        if let Some(found) = self.profiles.iter().position(same) {
            return found + 1;
        }
        let profile = counters
            .iter()
            .map(|(name, delta)| {
                let n = match self.names.iter().position(|n| n == name) {
                    Some(n) => n + 1,
                    None => {
                        self.names.push(name.clone());
                        self.names.len()
                    }
                };
                (n, *delta)
            })
            .collect();
        self.profiles.push(profile);
        self.profiles.len()
    }

    /// The call, and the number of replies wanted per record (for [`parse_reply`]).
    pub(crate) fn finish(self) -> (Cmd, Vec<usize>) {
        let mut cmd = self.head;
        let mut number = itoa::Buffer::new();
        cmd.arg(number.format(self.names.len()));
        for name in &self.names {
            cmd.arg(name.as_str());
        }
        cmd.arg(number.format(self.profiles.len()));
        for profile in &self.profiles {
            cmd.arg(number.format(profile.len()));
            for &(name, delta) in profile {
                cmd.arg(number.format(name)).arg(number.format(delta));
            }
        }
        cmd.arg(number.format(self.count));
        for arg in self.records.args_iter().chain(self.effects.args_iter()) {
            if let redis::Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        (cmd, self.wanted)
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
        let mut first = Effects::default();
        first
            .apply(redis::cmd("HSET").arg("k").arg("f").arg(7))
            .apply_with_reply(redis::cmd("HGET").arg("k").arg("f"))
            .count("orders", 1)
            .count("orders", 2);
        // The same counters as the first (one profile for both), no effects.
        let mut second = Effects::default();
        second.count("orders", 3);
        // Reused after `clear`: its old counter slot is overwritten, not kept.
        let mut third = Effects::default();
        third.count("stale", 9);
        third.clear();
        third.count("fills", 1).count("orders", -1);
        let mut builder = CommitBuilder::new("sha", "events", "events:consume:g", "g");
        builder.record("1-0", &first);
        builder.record("2-0", &second);
        builder.record("3-0", &third);
        builder.record("4-0", &Effects::default());
        let (cmd, wanted) = builder.finish();
        let args: Vec<String> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8(b.to_vec()).unwrap(),
                _ => unreachable!(),
            })
            .collect();
        let expected = [
            "EVALSHA",
            "sha",
            "2",
            "events",
            "events:consume:g",
            "g",
            // counter names
            "2",
            "orders",
            "fills",
            // profiles: orders+3; fills+1 orders-1
            "2",
            "1",
            "1",
            "3",
            "2",
            "2",
            "1",
            "1",
            "-1",
            // records: id, profile
            "4",
            "1-0",
            "1",
            "2-0",
            "1",
            "3-0",
            "2",
            "4-0",
            "0",
            // effects of record 1
            "1",
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
        ];
        assert_eq!(args, expected);
        assert_eq!(wanted, vec![1, 0, 0, 0]);
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
