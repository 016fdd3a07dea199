//! Which keys may be in the memory tier: a Bloom filter of the keys stored there, so that a miss
//! on a key never stored skips moka's lookup (its table probe, the read it records and the
//! housekeeping those records set off). With inputs that never repeat, that lookup was about a
//! third of what the cache added to a miss.
//!
//! A Bloom filter cannot forget, so evicted and expired keys leave their bits behind and the
//! filter answers "maybe" more and more often. Once it has taken in as many keys since its last
//! rebuild as it was sized for (or as the tier held at that rebuild, if more), it is rebuilt from
//! the keys the tier holds now, into a second array, and the two swap.
//!
//! It must never say "absent" for a stored key: that key would be computed again although its
//! answer is stored. Two rules keep it so.
//! - A key is added after its insert into moka, and to both arrays.
//! - A rebuild clears the spare array, then walks the tier's keys into it, then makes it
//!   current. An add that reached the spare before the clear belongs to a key inserted before
//!   the walk began, which the walk finds; an add after the clear is in the spare already.
//!
//! A lookup that read which array is current just before a swap reads the old one, which still
//! takes every add until the next rebuild clears it.

use super::bits::{Bits, Probes};
use super::key::CacheKey;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

pub struct Presence {
    arrays: [Bits; 2],
    /// The array lookups read; the other one is rebuilt.
    current: AtomicUsize,
    rebuilding: AtomicBool,
    /// Keys added since the last rebuild, and how many make the next one due.
    added: AtomicU64,
    rebuild_after: AtomicU64,
}

impl Presence {
    pub fn for_capacity(max_bytes: u64) -> Presence {
        let arrays = [Bits::for_capacity(max_bytes), Bits::for_capacity(max_bytes)];
        let sized_for = arrays[0].comfortable_keys();
        Presence {
            arrays,
            current: AtomicUsize::new(0),
            rebuilding: AtomicBool::new(false),
            added: AtomicU64::new(0),
            rebuild_after: AtomicU64::new(sized_for),
        }
    }

    /// The keys it was sized for: about one absent key in twenty is a "maybe" at that load.
    fn sized_for(&self) -> u64 {
        self.arrays[0].comfortable_keys()
    }

    /// False only for a key that is not in the memory tier.
    pub fn may_contain(&self, key: &CacheKey) -> bool {
        self.arrays[self.current.load(Ordering::SeqCst)].contains(Probes::presence(key))
    }

    /// Records a key just inserted into the memory tier. True once a rebuild is due.
    pub fn add(&self, key: &CacheKey) -> bool {
        let probes = Probes::presence(key);
        for array in &self.arrays {
            array.test_and_set(probes);
        }
        self.added.fetch_add(1, Ordering::Relaxed) + 1 >= self.rebuild_after.load(Ordering::Relaxed)
    }

    /// Starts a rebuild unless one runs. Until `finish_rebuild`, the caller feeds every key
    /// of the memory tier to `rebuild_with`.
    pub fn begin_rebuild(&self) -> bool {
        if self.rebuilding.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.arrays[1 - self.current.load(Ordering::SeqCst)].clear();
        true
    }

    pub fn rebuild_with(&self, key: &CacheKey) {
        self.arrays[1 - self.current.load(Ordering::SeqCst)].test_and_set(Probes::presence(key));
    }

    /// Swaps the rebuilt array in. `held` is how many keys it was rebuilt from: the next rebuild
    /// waits for at least as many adds, so rebuilding costs a bounded amount per insert even when
    /// the tier holds more keys than the filter was sized for.
    pub fn finish_rebuild(&self, held: u64) {
        self.current
            .store(1 - self.current.load(Ordering::SeqCst), Ordering::SeqCst);
        self.added.store(0, Ordering::Relaxed);
        self.rebuild_after
            .store(held.max(self.sized_for()), Ordering::Relaxed);
        self.rebuilding.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::bits::testing::{false_positives, key, PROBES};

    #[test]
    fn an_added_key_is_present_and_new_keys_mostly_absent() {
        let presence = Presence::for_capacity(0);
        let load = presence.sized_for() - 1;
        for n in 0..load {
            assert!(!presence.add(&key(n)), "not due before {load} adds");
        }
        assert!((0..load).all(|n| presence.may_contain(&key(n))));
        let wrong = false_positives(|key| presence.may_contain(key));
        // About 5 % at the load it is sized for; a filter that said "maybe" to most fails here.
        assert!(wrong < PROBES * 8 / 100, "{wrong} of {PROBES}");
        assert!(presence.add(&key(load)), "due at {}", presence.sized_for());
    }

    #[test]
    fn a_rebuild_forgets_keys_the_tier_no_longer_holds() {
        let presence = Presence::for_capacity(0);
        for n in 0..1_000 {
            presence.add(&key(n));
        }
        assert!(presence.begin_rebuild());
        assert!(!presence.begin_rebuild(), "one rebuild at a time");
        // The tier still holds the even keys only.
        for n in (0..1_000).step_by(2) {
            presence.rebuild_with(&key(n));
        }
        presence.finish_rebuild(500);
        assert!((0..1_000).step_by(2).all(|n| presence.may_contain(&key(n))));
        let kept = (1..1_000)
            .step_by(2)
            .filter(|&n| presence.may_contain(&key(n)))
            .count();
        assert!(kept < 25, "{kept} of 500 evicted keys still present");
    }

    #[test]
    fn keys_added_while_a_rebuild_runs_survive_the_swap() {
        let presence = Presence::for_capacity(0);
        presence.add(&key(1));
        assert!(presence.begin_rebuild());
        // Stored during the rebuild, after the tier's keys were read (so not fed to it).
        presence.add(&key(2));
        presence.rebuild_with(&key(1));
        presence.finish_rebuild(1);
        assert!(presence.may_contain(&key(1)));
        assert!(presence.may_contain(&key(2)));
        // A lookup that read the index just before the swap reads the old array: adds reach it.
        presence.add(&key(3));
        assert!(presence
            .arrays
            .iter()
            .all(|array| array.contains(Probes::presence(&key(3)))));
        // And a later rebuild starts from a clean spare array.
        assert!(presence.begin_rebuild());
        presence.finish_rebuild(0);
        assert!(!presence.may_contain(&key(1)));
    }

    #[test]
    fn the_next_rebuild_waits_for_as_many_adds_as_the_tier_held() {
        let presence = Presence::for_capacity(0);
        let held = presence.sized_for() * 3;
        assert!(presence.begin_rebuild());
        presence.finish_rebuild(held);
        assert!((0..held - 1).all(|n| !presence.add(&key(n))));
        assert!(presence.add(&key(held)));
    }
}
