//! A bounded memory of recently applied event ids.
//!
//! The commit script already makes each stream entry's effects exactly-once (see
//! `commit.lua`); this set catches the same *event* arriving as a second entry, which the
//! pending list cannot see: a group destroyed and re-created from `0`, or an entry copied
//! back from the dead letter queue. Its size is capped and entries expire, so it never grows
//! without bound, and nothing is rewritten per event.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Hashes a UUID's 16 bytes with two multiply-xorshift rounds: a few nanoseconds where
/// SipHash cost 4 % of the consumer's CPU. A mix is needed, not just some bits: evstream's
/// own event ids differ only in a counter's low bits (see `publish`), and the hash table
/// uses both the top and the bottom bits of the hash. Not keyed: the ids come from the
/// engine's producers, and a producer that crafted collisions would only slow this capped
/// set down.
#[derive(Debug, Default)]
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

#[derive(Debug)]
pub(crate) struct RecentIds {
    ids: HashSet<Uuid, BuildHasherDefault<UuidHasher>>,
    /// Handled, their commit not known yet (in flight).
    held: HashSet<Uuid, BuildHasherDefault<UuidHasher>>,
    /// Insertion order, for expiry and for eviction at the cap.
    order: VecDeque<(Instant, Uuid)>,
    capacity: usize,
    ttl: Duration,
}

impl RecentIds {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            ids: HashSet::with_capacity_and_hasher(capacity.min(1 << 20), Default::default()),
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
            held: HashSet::default(),
            capacity,
            ttl,
        }
    }

    pub(crate) fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains(id)
    }

    /// Marks `id` as handled, its commit not known yet.
    pub(crate) fn hold(&mut self, id: Uuid) {
        self.held.insert(id);
    }

    /// Whether `id` was handled and its commit is not known yet.
    pub(crate) fn is_held(&self, id: &Uuid) -> bool {
        self.held.contains(id)
    }

    /// Forgets that `id` is held (its commit's outcome is known: [`insert`](Self::insert)
    /// it if it was applied).
    pub(crate) fn release(&mut self, id: &Uuid) {
        self.held.remove(id);
    }

    /// Remembers `id`, forgetting expired ids and, past the capacity, the oldest.
    pub(crate) fn insert(&mut self, id: Uuid, now: Instant) {
        if self.capacity == 0 || !self.ids.insert(id) {
            return;
        }
        self.order.push_back((now, id));
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
            recent.insert(*id, start);
        }
        assert_eq!(recent.len(), 3);
        assert!(!recent.contains(&ids[0]), "oldest evicted at the cap");
        assert!(recent.contains(&ids[3]));
        recent.insert(ids[4], start + Duration::from_secs(11));
        assert_eq!(recent.len(), 1, "expired ids are forgotten");
        assert!(recent.contains(&ids[4]));
    }
}
