//! The bit array under the doorkeeper's Bloom filter: two probes per key, read from digest
//! bytes that nothing else of the cache uses.

use super::key::CacheKey;
use std::sync::atomic::{AtomicU64, Ordering};

/// Two probe positions of a key. The key is a blake3 digest, so any of its bytes are as good as
/// a hash.
#[derive(Clone, Copy)]
pub struct Probes([u64; 2]);

impl Probes {
    /// Bytes 8..24 (the map hasher reads 0..8).
    pub fn doorkeeper(key: &CacheKey) -> Probes {
        Probes([word_at(key, 8), word_at(key, 16)])
    }
}

fn word_at(key: &CacheKey, offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&key.0[offset..offset + 8]);
    u64::from_le_bytes(word)
}

pub const MIN_BITS: u64 = 1 << 16;
pub const MAX_BITS: u64 = 1 << 27;

pub struct Bits {
    words: Box<[AtomicU64]>,
    /// Bit positions are taken modulo this power of two.
    mask: u64,
}

impl Bits {
    /// A bit for every 32 bytes of a tier of `max_bytes` (several per entry at a few hundred
    /// bytes an entry), a power of two within 8 KiB and 16 MiB of array.
    pub fn for_capacity(max_bytes: u64) -> Bits {
        let bits = (max_bytes / 32)
            .clamp(MIN_BITS, MAX_BITS)
            .next_power_of_two();
        Bits {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits - 1,
        }
    }

    pub fn len(&self) -> u64 {
        self.mask + 1
    }

    /// Keys the array takes before about one absent key in twenty reads as present (two probes
    /// at an eighth of the bits set per key): how much the filter lets in before it starts over.
    pub fn comfortable_keys(&self) -> u64 {
        self.len() / 8
    }

    #[cfg(test)]
    pub fn contains(&self, probes: Probes) -> bool {
        probes.0.iter().all(|&hash| {
            let (word, bit) = self.position(hash);
            word.load(Ordering::Relaxed) & bit != 0
        })
    }

    /// Sets both probes; says whether both were set already.
    pub fn test_and_set(&self, probes: Probes) -> bool {
        let mut was_set = true;
        for hash in probes.0 {
            let (word, bit) = self.position(hash);
            // A plain load first: a set bit needs no write to a line other threads read.
            let set = word.load(Ordering::Relaxed) & bit != 0
                || word.fetch_or(bit, Ordering::Relaxed) & bit != 0;
            was_set &= set;
        }
        was_set
    }

    /// Racing sets may survive or be lost; the doorkeeper says why that is harmless.
    pub fn clear(&self) {
        for word in self.words.iter() {
            word.store(0, Ordering::Relaxed);
        }
    }

    fn position(&self, hash: u64) -> (&AtomicU64, u64) {
        let bit = hash & self.mask;
        (&self.words[(bit / 64) as usize], 1u64 << (bit % 64))
    }
}

/// Keys and a false-positive count for the filter's tests.
#[cfg(test)]
pub mod testing {
    use super::CacheKey;

    pub fn key(n: u64) -> CacheKey {
        CacheKey(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    /// Keys never added that a false-positive count asks about.
    pub const PROBES: usize = 10_000;

    /// How many of `PROBES` keys never added (numbered from a million up) `contains` claims.
    pub fn false_positives(contains: impl Fn(&CacheKey) -> bool) -> usize {
        (0..PROBES as u64)
            .filter(|n| contains(&key(1_000_000 + n)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_two_within_bounds() {
        for (max_bytes, bits) in [
            (0, MIN_BITS),
            (64 * 1024, MIN_BITS),
            (16 << 20, 1 << 19),
            (100 << 20, 1 << 22),
            (1 << 40, MAX_BITS),
        ] {
            let array = Bits::for_capacity(max_bytes);
            assert_eq!(array.len(), bits, "max_bytes {max_bytes}");
            assert_eq!(array.words.len() as u64 * 64, bits);
        }
    }

    #[test]
    fn a_set_key_is_contained_until_cleared() {
        let array = Bits::for_capacity(0);
        let key = testing::key(1);
        let probes = Probes::doorkeeper(&key);
        assert!(!array.contains(probes));
        assert!(!array.test_and_set(probes));
        assert!(array.contains(probes));
        assert!(array.test_and_set(probes));
        array.clear();
        assert!(!array.contains(probes));
    }
}
