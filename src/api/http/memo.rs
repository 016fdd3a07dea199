//! The body memo: an infer body that comes again byte for byte, after a cache hit, is answered
//! from that hit's `Recall` without being decoded, validated or keyed once more. Decoding JSON
//! numbers is most of what a hit costs, and on large tensors by far the most.
//!
//! It is a table of slots, each holding at most one body's recall: a body's fingerprint picks
//! its slot, and a newer body in the same slot replaces the older one. The fingerprint is a fast
//! keyed hash that only tells most other bodies apart cheaply, so a body that was never
//! remembered costs one pass of it. Before a slot answers, a keyed blake3 digest of the body
//! must match as well: two bodies that share a fingerprint, by chance or by design, never share
//! an answer. The memo holds no answers: a recall whose answer has left the cache is simply
//! not answered from, and the body is decoded as usual.

use super::infer::OutputEncoding;
use crate::config::MAX_BODY_MEMO_ENTRIES;
use crate::gateway::Recall;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What makes two infer requests over HTTP the same before decoding: the route's model and
/// version, the length of the JSON part when binary tensors follow, and the body.
pub struct BodyId<'a> {
    pub model: &'a str,
    pub version: Option<&'a str>,
    pub header_length: Option<usize>,
    pub body: &'a [u8],
}

impl BodyId<'_> {
    /// Hands every field to `sink` in one fixed order; the fingerprint and the digest both
    /// read a body this way, so they can never disagree about what identifies it.
    fn feed(&self, sink: &mut impl FieldSink) {
        sink.field(self.model.as_bytes());
        match self.version {
            Some(version) => sink.field(version.as_bytes()),
            None => sink.number(u64::MAX),
        }
        sink.number(self.header_length.map_or(u64::MAX, |n| n as u64));
        sink.field(self.body);
    }
}

/// Where `BodyId::feed` writes: each sink keeps fields from running into each other.
trait FieldSink {
    fn field(&mut self, bytes: &[u8]);
    fn number(&mut self, value: u64);
}

impl FieldSink for blake3::Hasher {
    fn field(&mut self, bytes: &[u8]) {
        // Length first, so no field can run into the next.
        self.update(&(bytes.len() as u64).to_le_bytes());
        self.update(bytes);
    }

    fn number(&mut self, value: u64) {
        self.update(&value.to_le_bytes());
    }
}

/// foldhash: fast and seeded, not collision resistant, and not meant to be: the digest decides.
impl FieldSink for foldhash::quality::FoldHasher<'_> {
    fn field(&mut self, bytes: &[u8]) {
        // The length ends each field, so "ab" + "c" and "a" + "bc" differ.
        self.write(bytes);
        self.write_usize(bytes.len());
    }

    fn number(&mut self, value: u64) {
        self.write_u64(value);
    }
}

/// A remembered body: what answers it again, and how its caller wanted the outputs.
pub struct Remembered {
    fingerprint: u64,
    digest: [u8; 32],
    pub recall: Arc<Recall>,
    pub encoding: OutputEncoding,
}

pub struct BodyMemo {
    /// Each slot's fingerprint, apart from the slot: a body never remembered is turned away
    /// by one plain load from this dense array, with no lock taken and no pointer followed.
    fingerprints: Box<[AtomicU64]>,
    slots: Box<[Mutex<Option<Arc<Remembered>>>]>,
    /// Slot count less one (a power of two).
    mask: usize,
    fingerprint: foldhash::quality::FixedState,
    digest_key: [u8; 32],
}

impl BodyMemo {
    /// A table of at least `entries` slots; `None` for 0, which turns the memo off.
    pub fn new(entries: usize) -> Option<BodyMemo> {
        if entries == 0 {
            return None;
        }
        let slots = entries.clamp(1, MAX_BODY_MEMO_ENTRIES).next_power_of_two();
        // Secrets of this process, so nobody outside can aim bodies at one slot or digest.
        let random = std::collections::hash_map::RandomState::new();
        let fingerprint =
            foldhash::quality::FixedState::with_seed(random.hash_one(0x7011_6a7e_u64));
        let digest_key = *blake3::hash(&random.hash_one(1u64).to_le_bytes()).as_bytes();
        Some(BodyMemo {
            fingerprints: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            slots: (0..slots).map(|_| Mutex::new(None)).collect(),
            mask: slots - 1,
            fingerprint,
            digest_key,
        })
    }

    /// The fingerprint of `id`, to look it up now and to remember it later.
    pub fn fingerprint(&self, id: &BodyId<'_>) -> u64 {
        let mut hash = self.fingerprint.build_hasher();
        id.feed(&mut hash);
        hash.finish()
    }

    /// What was remembered for exactly these bytes, if anything still is.
    pub fn find(&self, fingerprint: u64, id: &BodyId<'_>) -> Option<Arc<Remembered>> {
        let index = fingerprint as usize & self.mask;
        if self.fingerprints[index].load(Ordering::Relaxed) != fingerprint {
            return None;
        }
        // The slot may have changed since: its entry carries its own fingerprint.
        let remembered = self.slot(index).clone()?;
        (remembered.fingerprint == fingerprint && remembered.digest == self.digest(id))
            .then_some(remembered)
    }

    /// Remembers how a hit on `id` was answered, in place of whatever its slot held.
    pub fn remember(
        &self,
        fingerprint: u64,
        id: &BodyId<'_>,
        recall: Arc<Recall>,
        encoding: OutputEncoding,
    ) {
        let remembered = Arc::new(Remembered {
            fingerprint,
            digest: self.digest(id),
            recall,
            encoding,
        });
        let index = fingerprint as usize & self.mask;
        let mut slot = self.slot(index);
        *slot = Some(remembered);
        self.fingerprints[index].store(fingerprint, Ordering::Relaxed);
    }

    fn slot(&self, index: usize) -> std::sync::MutexGuard<'_, Option<Arc<Remembered>>> {
        // Nothing can panic while a slot is held, but a poisoned slot is still just a slot.
        self.slots[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn digest(&self, id: &BodyId<'_>) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.digest_key);
        id.feed(&mut hasher);
        *hasher.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests;
