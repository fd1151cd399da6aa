//! A bounded memory of recently applied event ids.
//!
//! The commit script already makes each stream entry's effects exactly-once (see
//! `commit.lua`); this set catches the same *event* arriving as a second entry, which the
//! pending list cannot see: a group destroyed and re-created from `0`, or an entry copied
//! back from the dead letter queue. Its size is capped and entries expire, so it never grows
//! without bound, and nothing is rewritten per event.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Hashes a UUID's 16 bytes with two multiply-xorshift rounds from a per-process random
/// seed: a few nanoseconds where SipHash cost 4 % of the consumer's CPU. A mix is needed,
/// not just some bits: evstream's own event ids differ only in a counter's low bits (see
/// `publish`), and the hash table uses both the top and the bottom bits of the hash. The
/// seed keeps collisions from being computed in advance by whoever writes event ids (not a
/// cryptographic guarantee, as with any fast hasher; the set is capped either way).
#[derive(Debug)]
struct UuidHasher(u64);

impl Hasher for UuidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `Uuid` hashes as one 16-byte slice (after its length, written as a usize).
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            let mut h = (self.0 ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 32;
            self.0 = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        }
        self.0 ^= self.0 >> 29;
    }

    fn write_usize(&mut self, _length: usize) {}
}

/// Builds [`UuidHasher`]s from one random seed per table.
#[derive(Debug, Clone)]
struct Seeded(u64);

impl Default for Seeded {
    fn default() -> Self {
        Self(std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64))
    }
}

impl BuildHasher for Seeded {
    type Hasher = UuidHasher;

    fn build_hasher(&self) -> UuidHasher {
        UuidHasher(self.0)
    }
}

/// What [`RecentIds`] knows of an event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Nothing (never seen, or forgotten).
    No,
    /// Handled, its commit in flight.
    Held,
    /// Applied by a commit of this consumer.
    Applied,
}

#[derive(Debug)]
pub(crate) struct RecentIds {
    /// Held and applied ids (one table, one lookup per question).
    ids: HashMap<Uuid, Seen, Seeded>,
    /// Applied ids in the order they were applied, for expiry and for eviction at the cap.
    order: VecDeque<(Instant, Uuid)>,
    capacity: usize,
    ttl: Duration,
}

impl RecentIds {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            ids: HashMap::with_capacity_and_hasher(capacity.min(1 << 20), Default::default()),
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
            capacity,
            ttl,
        }
    }

    pub(crate) fn seen(&self, id: &Uuid) -> Seen {
        self.ids.get(id).copied().unwrap_or(Seen::No)
    }

    /// Marks `id` as handled, its commit in flight.
    pub(crate) fn hold(&mut self, id: Uuid) {
        self.ids.entry(id).or_insert(Seen::Held);
    }

    /// The commit of held `id` is known: remembers it if `applied` (forgetting expired ids
    /// and, past the capacity, the oldest), forgets it otherwise.
    pub(crate) fn settle(&mut self, id: Uuid, applied: bool, now: Instant) {
        if !applied || self.capacity == 0 {
            if self.ids.get(&id) == Some(&Seen::Held) {
                self.ids.remove(&id);
            }
            return;
        }
        match self.ids.insert(id, Seen::Applied) {
            Some(Seen::Applied) => return,
            Some(Seen::Held | Seen::No) | None => self.order.push_back((now, id)),
        }
        while let Some(&(at, oldest)) = self.order.front() {
            if self.order.len() <= self.capacity && now.duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&oldest);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_up_to_the_cap_and_until_the_ttl() {
        let start = Instant::now();
        let mut recent = RecentIds::new(3, Duration::from_secs(10));
        let ids: Vec<Uuid> = (0..5u128).map(Uuid::from_u128).collect();
        for id in &ids[..4] {
            recent.hold(*id);
            recent.settle(*id, true, start);
        }
        assert_eq!(recent.len(), 3);
        assert_eq!(recent.seen(&ids[0]), Seen::No, "oldest evicted at the cap");
        assert_eq!(recent.seen(&ids[3]), Seen::Applied);
        recent.settle(ids[4], true, start + Duration::from_secs(11));
        assert_eq!(recent.len(), 1, "expired ids are forgotten");
        assert_eq!(recent.seen(&ids[4]), Seen::Applied);
    }

    #[test]
    fn a_held_id_is_forgotten_unless_applied() {
        let now = Instant::now();
        let mut recent = RecentIds::new(10, Duration::from_secs(10));
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        recent.hold(a);
        recent.hold(b);
        assert_eq!((recent.seen(&a), recent.seen(&b)), (Seen::Held, Seen::Held));
        recent.settle(a, false, now);
        recent.settle(b, true, now);
        assert_eq!(
            (recent.seen(&a), recent.seen(&b)),
            (Seen::No, Seen::Applied)
        );
        // Off (capacity 0): held while in flight, never remembered.
        let mut off = RecentIds::new(0, Duration::from_secs(10));
        off.hold(a);
        assert_eq!(off.seen(&a), Seen::Held);
        off.settle(a, true, now);
        assert_eq!(off.seen(&a), Seen::No);
    }
}
