//! Hashing for maps keyed by `CacheKey`. The key is already a blake3 digest, uniform in every
//! bit, so hashing it again with SipHash (the std and moka default) only costs time, and a full
//! cache's admission hashes every eviction candidate (BENCHMARKS.md has the figures).

use super::key::CacheKey;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

/// Eight bytes of the digest stand for the key: any eight are as good as the whole.
impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

/// Builds `KeyHash`es that mix what they are given with a seed drawn per process, so bucket
/// positions cannot be predicted from outside even though the mixing itself is public.
#[derive(Clone)]
pub struct KeyHasher {
    seed: u64,
}

impl KeyHasher {
    pub fn new() -> KeyHasher {
        KeyHasher {
            seed: RandomState::new().hash_one(0u64),
        }
    }
}

impl Default for KeyHasher {
    fn default() -> KeyHasher {
        KeyHasher::new()
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = KeyHash;

    fn build_hasher(&self) -> KeyHash {
        KeyHash { state: self.seed }
    }
}

/// One multiply-xorshift round (SplitMix64's finaliser) per eight bytes written.
pub struct KeyHash {
    state: u64,
}

impl Hasher for KeyHash {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let mut z = self.state ^ n;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.state = z ^ (z >> 31);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_by_their_digest_and_the_seed() {
        let hasher = KeyHasher::new();
        let key = |first: u8, last: u8| {
            let mut bytes = [7u8; 32];
            bytes[0] = first;
            bytes[31] = last;
            CacheKey(bytes)
        };
        // Stable within a process, different for different digests.
        assert_eq!(hasher.hash_one(key(1, 0)), hasher.hash_one(key(1, 0)));
        assert_ne!(hasher.hash_one(key(1, 0)), hasher.hash_one(key(2, 0)));
        // Only the leading eight bytes are hashed; equality still compares all 32.
        assert_eq!(hasher.hash_one(key(1, 0)), hasher.hash_one(key(1, 9)));
        assert_ne!(key(1, 0), key(1, 9));
        // Another process (another seed) places the same key elsewhere.
        assert_ne!(
            hasher.hash_one(key(1, 0)),
            KeyHasher::new().hash_one(key(1, 0))
        );
        // Low bits spread: 1,024 keys differing in one byte fill most of 1,024 buckets.
        let buckets: std::collections::HashSet<u64> = (0..1024u32)
            .map(|i| {
                let mut bytes = [0u8; 32];
                bytes[..4].copy_from_slice(&i.to_le_bytes());
                hasher.hash_one(CacheKey(bytes)) & 1023
            })
            .collect();
        assert!(buckets.len() > 600, "{} buckets", buckets.len());
    }
}
