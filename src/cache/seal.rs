//! The envelope of every value in Redis: a tag that binds it to its key, so that a value
//! written by anyone else, copied from another key or corrupted is a miss, never an answer.
//! With `cache.redis_secret_env` set the tag is a MAC (blake3 keyed by the fleet's secret);
//! without one it is a hash of key and value, which catches corruption and misplaced values
//! but not a forger who can write to Redis.

use crate::config::RedisSecret;
use bytes::Bytes;

const MAGIC: &[u8; 3] = b"TGS";
const VERSION: u8 = 1;
const TAG_BYTES: usize = 32;
const HEADER_BYTES: usize = MAGIC.len() + 2 + TAG_BYTES;
const MAC_CONTEXT: &str = "tollgate 2026-12 redis value mac v1";
const HASH_CONTEXT: &str = "tollgate 2026-12 redis value integrity v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Hashed = 1,
    Keyed = 2,
}

pub enum Seal {
    Keyed([u8; 32]),
    Hashed,
}

/// Why a value read back is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Not an envelope of this version: another program's value or an older layout.
    Format,
    /// Sealed the other way (a hashed value where a secret is configured, or the reverse).
    Mode,
    /// The tag does not match: forged, corrupted, or stored under another key.
    Tag,
}

impl Rejected {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Format => "format",
            Rejected::Mode => "mode",
            Rejected::Tag => "tag",
        }
    }
}

impl Seal {
    pub fn new(secret: Option<&RedisSecret>) -> Seal {
        match secret {
            Some(secret) => Seal::Keyed(blake3::derive_key(MAC_CONTEXT, &secret.0)),
            None => Seal::Hashed,
        }
    }

    fn mode(&self) -> Mode {
        match self {
            Seal::Keyed(_) => Mode::Keyed,
            Seal::Hashed => Mode::Hashed,
        }
    }

    fn tag(&self, key: &[u8], payload: &[u8]) -> blake3::Hash {
        let mut hasher = match self {
            Seal::Keyed(secret) => blake3::Hasher::new_keyed(secret),
            Seal::Hashed => blake3::Hasher::new_derive_key(HASH_CONTEXT),
        };
        // The key's length first, so no key/payload split can be shifted into another.
        hasher.update(&(key.len() as u64).to_le_bytes());
        hasher.update(key);
        hasher.update(payload);
        hasher.finalize()
    }

    pub fn seal(&self, key: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.mode() as u8);
        out.extend_from_slice(self.tag(key, payload).as_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The payload of a value stored under `key`, if its tag holds.
    pub fn open(&self, key: &[u8], mut value: Bytes) -> Result<Bytes, Rejected> {
        if value.len() < HEADER_BYTES || &value[..3] != MAGIC || value[3] != VERSION {
            return Err(Rejected::Format);
        }
        if value[4] != self.mode() as u8 {
            return Err(Rejected::Mode);
        }
        let payload = value.split_off(HEADER_BYTES);
        let mut stored = [0u8; TAG_BYTES];
        stored.copy_from_slice(&value[HEADER_BYTES - TAG_BYTES..]);
        // blake3::Hash compares in constant time.
        if self.tag(key, &payload) != blake3::Hash::from_bytes(stored) {
            return Err(Rejected::Tag);
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(secret: &str) -> Seal {
        Seal::new(Some(&RedisSecret(secret.as_bytes().to_vec())))
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_its_seal() {
        let payload = b"prediction bytes";
        // Writer, reader, the key read under, and the outcome.
        type Case<'a> = (&'a Seal, &'a Seal, &'a [u8], Result<(), Rejected>);
        let cases: &[Case] = &[
            (&keyed("s"), &keyed("s"), b"k1", Ok(())),
            (&Seal::Hashed, &Seal::Hashed, b"k1", Ok(())),
            (&keyed("s"), &keyed("s"), b"k2", Err(Rejected::Tag)),
            (&Seal::Hashed, &Seal::Hashed, b"k2", Err(Rejected::Tag)),
            (&keyed("s"), &keyed("other"), b"k1", Err(Rejected::Tag)),
            (&Seal::Hashed, &keyed("s"), b"k1", Err(Rejected::Mode)),
            (&keyed("s"), &Seal::Hashed, b"k1", Err(Rejected::Mode)),
        ];
        for (index, (writer, reader, read_key, expected)) in cases.iter().enumerate() {
            let sealed = Bytes::from(writer.seal(b"k1", payload));
            let opened = reader.open(read_key, sealed);
            match (opened, expected) {
                (Ok(bytes), Ok(())) => assert_eq!(&bytes[..], payload, "case {index}"),
                (Err(got), Err(want)) => assert_eq!(got, *want, "case {index}"),
                (got, want) => panic!("case {index}: {got:?} != {want:?}"),
            }
        }
    }

    #[test]
    fn any_flipped_byte_is_rejected() {
        for seal in [keyed("s"), Seal::Hashed] {
            let sealed = seal.seal(b"key", b"0123456789");
            for at in 0..sealed.len() {
                let mut bent = sealed.clone();
                bent[at] ^= 0x10;
                assert!(seal.open(b"key", Bytes::from(bent)).is_err(), "byte {at}");
            }
            assert!(seal
                .open(b"key", Bytes::from(sealed[..20].to_vec()))
                .is_err());
        }
    }
}
