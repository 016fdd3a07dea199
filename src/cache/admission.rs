//! The doorkeeper in front of a full memory tier: an answer computed for the first time is not
//! stored until its key is seen a second time.
//!
//! Once the tier is full, every insert evicts, and moka's TinyLFU admission turns most first
//! sightings away anyway, but only after paying for the insert: the entry, its place in the
//! access and write orders, its timer, then its removal. With inputs that never repeat, that
//! was most of what a miss cost. This filter makes the same decision for a few bit tests.
//! While the tier has room, everything is stored, so a first repeat is a hit, unless the model
//! asks for `cache_min_uses = 2`: then the doorkeeper decides whether or not there is room.

use super::bits::{Bits, Probes};
use super::key::CacheKey;
use std::sync::atomic::{AtomicU64, Ordering};

/// A two-probe Bloom filter of recently seen keys, cleared after a window of first sightings.
pub struct Doorkeeper {
    bits: Bits,
    /// First sightings since the last clear.
    marked: AtomicU64,
    /// Cleared after this many first sightings: at one eighth of its bits the filter answers
    /// "seen" wrongly for about one key in twenty, which only hands that key to moka's own
    /// admission.
    window: u64,
}

impl Doorkeeper {
    /// Sized to remember several times as many keys as a tier of `max_bytes` holds.
    pub fn for_capacity(max_bytes: u64) -> Doorkeeper {
        let bits = Bits::for_capacity(max_bytes);
        Doorkeeper {
            window: bits.comfortable_keys(),
            bits,
            marked: AtomicU64::new(0),
        }
    }

    /// Marks `key` as seen and says whether it had been seen before, within the window.
    pub fn seen_before(&self, key: &CacheKey) -> bool {
        let seen = self.bits.test_and_set(Probes::doorkeeper(key));
        if !seen && self.marked.fetch_add(1, Ordering::Relaxed) + 1 >= self.window {
            self.clear();
        }
        seen
    }

    /// Whether `key` was seen within the window, without marking it (for tests: the request
    /// path only ever asks `seen_before`).
    #[cfg(test)]
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.bits.contains(Probes::doorkeeper(key))
    }

    /// Forgets every key. Racing marks may survive or be lost: either only changes whether one
    /// key waits for one more sighting.
    fn clear(&self) {
        self.marked.store(0, Ordering::Relaxed);
        self.bits.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::bits::testing::{false_positives, key, PROBES};

    #[test]
    fn a_key_is_new_once_and_seen_after() {
        let doorkeeper = Doorkeeper::for_capacity(1 << 20);
        assert!(!doorkeeper.seen_before(&key(1)));
        assert!(doorkeeper.seen_before(&key(1)));
        assert!(doorkeeper.seen_before(&key(1)));
        assert!(!doorkeeper.seen_before(&key(2)));
    }

    #[test]
    fn false_positives_stay_rare_within_a_window() {
        let doorkeeper = Doorkeeper::for_capacity(0);
        let window = doorkeeper.window;
        // Fill most of one window with distinct keys, then probe keys never marked.
        for n in 0..window - 1 {
            doorkeeper.seen_before(&key(n));
        }
        let wrong = false_positives(|key| doorkeeper.contains(key));
        // About 5 % at a full window; a filter that said "seen" to most keys fails here.
        assert!(wrong < PROBES * 8 / 100, "{wrong} of {PROBES}");
    }

    #[test]
    fn a_full_window_is_forgotten() {
        let doorkeeper = Doorkeeper::for_capacity(0);
        assert!(!doorkeeper.seen_before(&key(u64::MAX)));
        // Wrongly "seen" keys do not count towards the window, so mark until it clears.
        let mut n = 0;
        while doorkeeper.marked.load(Ordering::Relaxed) != 0 {
            doorkeeper.seen_before(&key(n));
            n += 1;
            assert!(n <= 2 * doorkeeper.window, "never cleared");
        }
        assert!(n >= doorkeeper.window - 1, "cleared after {n} marks");
        assert!(!doorkeeper.contains(&key(u64::MAX)), "forgotten");
    }
}
