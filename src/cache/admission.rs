//! The doorkeeper in front of a full memory tier: an answer computed for the first time is not
//! stored until its key is seen a second time.
//!
//! Once the tier is full, every insert evicts, and moka's TinyLFU admission turns most first
//! sightings away anyway, but only after paying for the insert: the entry, its place in the
//! access and write orders, its timer, then its removal. With inputs that never repeat, that
//! was most of what a miss cost. This filter makes the same decision for a few bit tests.
//! While the tier has room, everything is stored, so a first repeat is a hit.

use super::key::CacheKey;
use std::sync::atomic::{AtomicU64, Ordering};

/// A two-probe Bloom filter of recently seen keys, cleared after a window of first sightings.
pub struct Doorkeeper {
    words: Box<[AtomicU64]>,
    /// Bit positions are taken modulo this power of two.
    bit_mask: u64,
    /// First sightings since the last clear.
    marked: AtomicU64,
    /// Cleared after this many first sightings: at one eighth of its bits the filter answers
    /// "seen" wrongly for about one key in twenty, which only hands that key to moka's own
    /// admission.
    window: u64,
}

const MIN_BITS: u64 = 1 << 16;
const MAX_BITS: u64 = 1 << 27;

impl Doorkeeper {
    /// Sized to remember several times as many keys as a tier of `max_bytes` holds at a few
    /// hundred bytes an entry (a bit for every 32 bytes, within 8 KiB and 16 MiB of filter).
    pub fn for_capacity(max_bytes: u64) -> Doorkeeper {
        let bits = (max_bytes / 32)
            .clamp(MIN_BITS, MAX_BITS)
            .next_power_of_two();
        Doorkeeper {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            bit_mask: bits - 1,
            marked: AtomicU64::new(0),
            window: bits / 8,
        }
    }

    /// Marks `key` as seen and says whether it had been seen before, within the window.
    pub fn seen_before(&self, key: &CacheKey) -> bool {
        // The key is a blake3 digest: any of its bytes are as good as a hash. The map hasher
        // uses the first eight, so the probes use the next sixteen.
        let first = self.test_and_set(word_at(key, 8));
        let second = self.test_and_set(word_at(key, 16));
        let seen = first && second;
        if !seen && self.marked.fetch_add(1, Ordering::Relaxed) + 1 >= self.window {
            self.clear();
        }
        seen
    }

    /// Whether `key` was seen, without marking it.
    #[cfg(test)]
    fn contains(&self, key: &CacheKey) -> bool {
        [word_at(key, 8), word_at(key, 16)].iter().all(|hash| {
            let bit = hash & self.bit_mask;
            self.words[(bit / 64) as usize].load(Ordering::Relaxed) & (1u64 << (bit % 64)) != 0
        })
    }

    fn test_and_set(&self, hash: u64) -> bool {
        let bit = hash & self.bit_mask;
        let mask = 1u64 << (bit % 64);
        let word = &self.words[(bit / 64) as usize];
        // A plain load first: a set bit needs no write to a line other threads read.
        word.load(Ordering::Relaxed) & mask != 0
            || word.fetch_or(mask, Ordering::Relaxed) & mask != 0
    }

    /// Forgets every key. Racing marks may survive or be lost: either only changes whether one
    /// key waits for one more sighting.
    fn clear(&self) {
        self.marked.store(0, Ordering::Relaxed);
        for word in self.words.iter() {
            word.store(0, Ordering::Relaxed);
        }
    }
}

fn word_at(key: &CacheKey, offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&key.0[offset..offset + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> CacheKey {
        CacheKey(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn a_key_is_new_once_and_seen_after() {
        let doorkeeper = Doorkeeper::for_capacity(1 << 20);
        assert!(!doorkeeper.seen_before(&key(1)));
        assert!(doorkeeper.seen_before(&key(1)));
        assert!(doorkeeper.seen_before(&key(1)));
        assert!(!doorkeeper.seen_before(&key(2)));
    }

    #[test]
    fn sizes_are_powers_of_two_within_bounds() {
        for (max_bytes, bits) in [
            (0, MIN_BITS),
            (64 * 1024, MIN_BITS),
            (16 << 20, 1 << 19),
            (100 << 20, 1 << 22),
            (1 << 40, MAX_BITS),
        ] {
            let doorkeeper = Doorkeeper::for_capacity(max_bytes);
            assert_eq!(doorkeeper.bit_mask + 1, bits, "max_bytes {max_bytes}");
            assert_eq!(doorkeeper.words.len() as u64 * 64, bits);
        }
    }

    #[test]
    fn false_positives_stay_rare_within_a_window() {
        let doorkeeper = Doorkeeper::for_capacity(0);
        let window = doorkeeper.window;
        // Fill most of one window with distinct keys, then probe keys never marked.
        for n in 0..window - 1 {
            doorkeeper.seen_before(&key(n));
        }
        let probes = 10_000u64;
        let wrong = (0..probes)
            .filter(|n| doorkeeper.contains(&key(1_000_000 + n)))
            .count();
        // About 5 % at a full window; a filter that said "seen" to most keys fails here.
        assert!(wrong < (probes as usize) * 8 / 100, "{wrong} of {probes}");
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
