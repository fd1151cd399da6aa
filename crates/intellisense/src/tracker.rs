//! The correlation tracker: what this consumer knows of each order's life, in bounded memory.
//!
//! Each correlation id maps to the timestamps and order details seen so far. An entry leaves
//! when its order is complete (created and filled), when it is older than the TTL,
//! or, when the tracker is at its cap, the least recently inserted one to make room; the last
//! two are counted as evictions (orders whose other half never reached this consumer).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// FNV-1a from a per-process random offset: correlation ids are short strings, for which it
/// costs a fraction of SipHash (the tracker's lookups were 5 % of a consumer's CPU with
/// SipHash). The random start keeps collisions from being computed in advance by whoever
/// writes correlation ids (not a cryptographic guarantee); the tracker is capped either way.
#[derive(Debug)]
struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Builds [`Fnv1a`] hashers from one random offset per table.
#[derive(Debug, Clone)]
struct Seeded(u64);

impl Default for Seeded {
    fn default() -> Self {
        let random = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        Self(0xcbf2_9ce4_8422_2325 ^ random)
    }
}

impl BuildHasher for Seeded {
    type Hasher = Fnv1a;

    fn build_hasher(&self) -> Fnv1a {
        Fnv1a(self.0)
    }
}

type States = HashMap<String, (u64, OrderState), Seeded>;

/// What is known of one order's life.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderState {
    /// Instrument, once known (from market data or the order).
    pub symbol: Option<String>,
    /// Time of the last market data update or signal, ns since the epoch.
    pub signal_ns: Option<u64>,
    /// Time of `OrderCreated`.
    pub created_ns: Option<u64>,
    /// Time of the first `OrderFilled`.
    pub filled_ns: Option<u64>,
    /// Whether the order's half was written to Redis for pairing: another consumer may then
    /// have handled a fill of it, so a fill paired here counts only if Redis says it is the
    /// first (`HSETNX`).
    pub created_in_redis: bool,
}

/// Bounded map of correlation id → [`OrderState`].
#[derive(Debug)]
pub struct Tracker {
    /// State and the generation that inserted it.
    states: States,
    /// Insertion order: instant, generation, key. Pairs of removed keys go stale and are
    /// skipped when popped, or dropped when they outnumber the live ones.
    order: VecDeque<(Instant, u64, String)>,
    generation: u64,
    capacity: usize,
    ttl: Duration,
    evicted: u64,
    /// Orders evicted since [`take_evicted_orders`](Self::take_evicted_orders) was last
    /// called, for the caller to check against Redis.
    evicted_orders: Vec<String>,
    /// Hashes of the correlations completed recently (within the TTL), oldest first: a
    /// later partial fill of a completed order is recognised, not taken for a new order.
    completed: HashMap<u64, Instant, Seeded>,
    completed_order: VecDeque<(Instant, u64)>,
}

impl Tracker {
    /// A tracker holding at most `capacity` correlations, each for at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            states: States::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl,
            evicted: 0,
            evicted_orders: Vec::new(),
            completed: HashMap::default(),
            completed_order: VecDeque::new(),
            generation: 0,
        }
    }

    /// Forgets a completed order and remembers it as completed for the TTL (at most
    /// `capacity` of them): [`was_completed`](Self::was_completed) then says so.
    pub fn complete(&mut self, correlation_id: &str, now: Instant) {
        self.remove(correlation_id);
        let hash = self.completed.hasher().hash_one(correlation_id);
        if self.completed.insert(hash, now).is_none() {
            self.completed_order.push_back((now, hash));
        }
        while self.completed_order.len() > self.capacity
            || self
                .completed_order
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) >= self.ttl)
        {
            let Some((at, hash)) = self.completed_order.pop_front() else {
                break;
            };
            if self.completed.get(&hash) == Some(&at) {
                self.completed.remove(&hash);
            }
        }
    }

    /// Whether `correlation_id` completed within the TTL. Kept as a 64-bit hash: a collision
    /// (about one in 2^64 / capacity) would ignore one event's pairing, never double one.
    pub fn was_completed(&self, correlation_id: &str) -> bool {
        let hash = self.completed.hasher().hash_one(correlation_id);
        self.completed.contains_key(&hash)
    }

    /// The correlation ids of the orders (an order without its fill, or a fill without its
    /// order) evicted unfinished since the last call. Another consumer of the group may have
    /// completed them through Redis: the caller checks there before counting them unmatched.
    pub fn take_evicted_orders(&mut self) -> Vec<String> {
        std::mem::take(&mut self.evicted_orders)
    }

    /// The state of `correlation_id`, created empty if unknown.
    pub fn entry(&mut self, correlation_id: &str, now: Instant) -> &mut OrderState {
        self.expire(now);
        if !self.states.contains_key(correlation_id) {
            while self.states.len() >= self.capacity {
                self.evict_oldest();
            }
            self.generation += 1;
            self.order
                .push_back((now, self.generation, correlation_id.to_owned()));
            self.states.insert(
                correlation_id.to_owned(),
                (self.generation, OrderState::default()),
            );
        }
        &mut self
            .states
            .get_mut(correlation_id)
            .expect("inserted above")
            .1
    }

    /// The state of `correlation_id`, if held (expired states may still be returned until
    /// the next [`entry`](Self::entry) call).
    pub fn get(&self, correlation_id: &str) -> Option<&OrderState> {
        self.states.get(correlation_id).map(|(_, state)| state)
    }

    /// Forgets a completed order (not an eviction).
    pub fn remove(&mut self, correlation_id: &str) {
        self.states.remove(correlation_id);
        if self.order.len() > 2 * self.states.len() + 1024 {
            let states = &self.states;
            self.order.retain(|(_, generation, key)| {
                states.get(key).is_some_and(|(g, _)| g == generation)
            });
        }
    }

    /// Correlations held.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Correlations dropped unfinished (TTL or cap) so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.order.front() {
            if now.duration_since(*at) < self.ttl {
                break;
            }
            let (_, generation, key) = self.order.pop_front().expect("front exists");
            if self.states.get(&key).is_some_and(|(g, _)| *g == generation) {
                self.evict(key);
            }
        }
    }

    /// Drops an unfinished state, counting it, and noting it when it is an order's.
    fn evict(&mut self, key: String) {
        if let Some((_, state)) = self.states.remove(&key) {
            self.evicted += 1;
            if state.created_ns.is_some() != state.filled_ns.is_some() {
                self.evicted_orders.push(key);
            }
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((_, generation, key)) = self.order.pop_front() {
            // Only the pair that inserted the current state counts.
            if self.states.get(&key).is_some_and(|(g, _)| *g == generation) {
                self.evict(key);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_and_ttl_bound_the_tracker_and_evictions_are_counted() {
        let start = Instant::now();
        let mut tracker = Tracker::new(2, Duration::from_secs(5));
        tracker.entry("a", start).created_ns = Some(1);
        tracker.entry("b", start).created_ns = Some(2);
        tracker.entry("c", start).created_ns = Some(3);
        assert_eq!(tracker.len(), 2);
        assert_eq!(tracker.evicted(), 1, "a made room for c");
        assert_eq!(tracker.entry("b", start).created_ns, Some(2));
        tracker.remove("b");
        assert_eq!(tracker.evicted(), 1, "completing is not evicting");
        tracker.entry("d", start + Duration::from_secs(6));
        assert_eq!(tracker.len(), 1, "c expired");
        assert_eq!(tracker.evicted(), 2);
        assert_eq!(tracker.take_evicted_orders(), ["a", "c"]);
        assert!(tracker.take_evicted_orders().is_empty());
    }

    #[test]
    fn completed_orders_are_remembered_for_the_ttl_and_the_capacity() {
        let start = Instant::now();
        let mut tracker = Tracker::new(2, Duration::from_secs(5));
        tracker.entry("a", start).created_ns = Some(1);
        tracker.complete("a", start);
        assert!(tracker.was_completed("a") && !tracker.was_completed("b"));
        assert_eq!((tracker.len(), tracker.evicted()), (0, 0));
        tracker.complete("b", start);
        tracker.complete("c", start);
        assert!(
            !tracker.was_completed("a"),
            "capacity 2: the oldest is forgotten"
        );
        tracker.complete("d", start + Duration::from_secs(6));
        assert!(
            !tracker.was_completed("b") && !tracker.was_completed("c"),
            "TTL"
        );
        assert!(tracker.was_completed("d"));
    }
}
