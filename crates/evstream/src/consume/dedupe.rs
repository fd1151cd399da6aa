//! A bounded memory of recently applied event ids.
//!
//! The commit script already makes each stream entry's effects exactly-once (see
//! `commit.lua`); this set catches the same *event* arriving as a second entry, which the
//! pending list cannot see: a group destroyed and re-created from `0`, or an entry copied
//! back from the dead letter queue. Its size is capped and entries expire, so it never grows
//! without bound, and nothing is rewritten per event.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use uuid::Uuid;

#[derive(Debug)]
pub(crate) struct RecentIds {
    ids: HashSet<Uuid>,
    /// Insertion order, for expiry and for eviction at the cap.
    order: VecDeque<(Instant, Uuid)>,
    capacity: usize,
    ttl: Duration,
}

impl RecentIds {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            ids: HashSet::with_capacity(capacity.min(1 << 20)),
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
            capacity,
            ttl,
        }
    }

    pub(crate) fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains(id)
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
