//! Cache keys: blake3-256 over everything that determines an answer. Unlike Triton's key, the
//! datatype and shape are part of it, so equal bytes read as different tensors never collide.
//!
//! # Layout (v3)
//!
//! The key is computed in two steps, so that the tensor bytes, which dominate the cost, are
//! hashed exactly as a bare `blake3::hash` would hash them:
//!
//! 1. **Fields → fields key.** Everything except the tensor bytes is encoded into one byte
//!    string: model, resolved version, tenant (a 0/1 tag, then the name), the input count and,
//!    for every input sorted by name, its name, datatype tag, rank, dims and byte length.
//!    Strings are length-prefixed and every integer is an unsigned LEB128 varint, so the string
//!    splits back into its fields one way only. It becomes a 32-byte blake3 key:
//!    - up to `SHORT_FIELDS` (30) bytes, the fields *are* the key, written out as
//!      `[VERSION, len, fields…, 0…]` (a typical single-input request encodes to 20-30 bytes);
//!    - longer, `blake3::keyed_hash(DOMAIN, fields)` with the top bit of byte 0 set.
//!
//!    Byte 0 tells the two apart (`VERSION` < 0x80 ≤ a hashed key's), the length byte makes
//!    the short form injective, and blake3 makes the hashed one collision resistant (255 bits).
//! 2. **Bytes.** `key = blake3::keyed_hash(fields_key, data_0 ‖ data_1 ‖ …)`, the inputs'
//!    bytes in the same sorted order, read in place from the tensors (never copied). Their
//!    lengths are fixed by the fields, so the concatenation is unambiguous.
//!
//! Why this shape: keyed mode costs the same as plain hashing, and its key is the chaining
//! value every chunk and parent node starts from, so it carries the fields into the hash of
//! the bytes without hashing them in front of the bytes. Step 2 runs on blake3's wide SIMD
//! path from chunk 0, and a typical request pays no compression beyond a bare hash of its
//! bytes (longer fields pay one per 64 bytes). v2 hashed the bytes to a digest, then the fields
//! and the digest (0.78x of a bare hash at 4 KiB); always hashing the fields, even short ones,
//! costs one compression (~55 ns here), which measured only about 0.9x.
//!
//! Collisions: distinct fields give distinct fields keys (except by a blake3 collision), and a
//! keyed hash under two different keys starts every chunk and parent node from a different
//! chaining value, so equal keys need a collision in blake3's compression function. The keys
//! are public; they separate inputs, they are not secrets. One input or many follow the same
//! layout, so there is no separate single-input format to keep apart.

use crate::tensor::Tensor;
use std::fmt;

/// `Hash` is in `hasher`: the digest's first eight bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CacheKey(pub [u8; 32]);

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

impl CacheKey {
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

/// Bump both of these whenever the hashed layout changes, so old shared-tier (Redis) entries
/// are never misread: `VERSION` leads every short fields key and `DOMAIN` keys the hash of
/// longer fields. (v2 and older hashed in blake3's plain mode; v3's keyed mode flag alone keeps
/// it apart from them.) A test checks that the two name the same version.
const VERSION: u8 = 3;
const DOMAIN: &[u8; blake3::KEY_LEN] = b"tollgate.cache.key.v3.fields.key";

/// The longest fields that are used as the fields key as they are: 32 bytes less the version
/// and length bytes.
const SHORT_FIELDS: usize = blake3::KEY_LEN - 2;

/// Set in byte 0 of every hashed fields key; never in a short one, whose byte 0 is `VERSION`.
const HASHED: u8 = 0x80;
const _: () = assert!(VERSION < HASHED);

/// What identifies an answer: the model and its resolved version, an optional tenant scope and
/// the inputs. Outputs are not part of it: the whole output set is cached and each caller takes
/// the outputs it asked for.
pub struct KeyParts<'a> {
    pub model: &'a str,
    pub version: &'a str,
    pub tenant: Option<&'a str>,
    pub inputs: &'a [Tensor],
}

pub fn compute(parts: &KeyParts<'_>) -> CacheKey {
    match parts.inputs {
        // The common case gets no allocation for sorting and a one-shot hash of the bytes.
        [input] => {
            let fields_key = fields_key(parts, std::slice::from_ref(&input));
            CacheKey(*blake3::keyed_hash(&fields_key, &input.data).as_bytes())
        }
        // Sorted by name so the key does not depend on the order a client listed its inputs in.
        inputs => {
            let mut sorted: Vec<&Tensor> = inputs.iter().collect();
            sorted.sort_by(|a, b| a.name.cmp(&b.name));
            let mut hasher = blake3::Hasher::new_keyed(&fields_key(parts, &sorted));
            for input in &sorted {
                hasher.update(&input.data);
            }
            CacheKey(*hasher.finalize().as_bytes())
        }
    }
}

/// Step 1: encode every field but the tensor bytes and turn them into a blake3 key.
fn fields_key(parts: &KeyParts<'_>, sorted: &[&Tensor]) -> [u8; blake3::KEY_LEN] {
    let mut fields = Fields::new();
    fields.string(parts.model);
    fields.string(parts.version);
    match parts.tenant {
        Some(tenant) => {
            fields.varint(1);
            fields.string(tenant);
        }
        None => fields.varint(0),
    }
    fields.varint(sorted.len() as u64);
    for tensor in sorted {
        fields.string(&tensor.name);
        fields.varint(u64::from(tensor.dtype.tag()));
        fields.varint(tensor.shape.len() as u64);
        for &dim in &tensor.shape {
            fields.varint(dim as u64);
        }
        fields.varint(tensor.data.len() as u64);
    }
    fields.finish()
}

/// The streaming hasher that fields too long for the buffer spill into, made on first use.
fn spill(hasher: &mut Option<Box<blake3::Hasher>>) -> &mut blake3::Hasher {
    hasher.get_or_insert_with(|| Box::new(blake3::Hasher::new_keyed(DOMAIN)))
}

/// Room for the fields of most requests; longer ones spill into a streaming hasher.
const FIELDS_BUF: usize = 128;

/// The longest LEB128 encoding of a `u64`.
const MAX_VARINT: usize = 10;

/// The encoded fields, gathered in a stack buffer: a typical request's fields become the key
/// as they are, and longer ones are hashed with one call rather than many small
/// `Hasher::update` calls, which cost more than the hashing itself. Whether or not they spill,
/// the bytes hashed are the same, so the key is too.
struct Fields {
    buf: [u8; FIELDS_BUF],
    len: usize,
    spill: Option<Box<blake3::Hasher>>,
}

impl Fields {
    fn new() -> Self {
        Fields {
            buf: [0; FIELDS_BUF],
            len: 0,
            spill: None,
        }
    }

    /// Length-prefixed, so ("ab","c") and ("a","bc") encode differently.
    #[inline]
    fn string(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    /// Unsigned LEB128: seven bits a byte, low first, the top bit set on all but the last.
    #[inline]
    fn varint(&mut self, mut value: u64) {
        if FIELDS_BUF - self.len < MAX_VARINT {
            self.flush();
        }
        // Written in place; in bounds because there is room for the longest varint now.
        let mut at = self.len;
        while value >= 0x80 {
            self.buf[at] = (value as u8) | 0x80;
            value >>= 7;
            at += 1;
        }
        self.buf[at] = value as u8;
        self.len = at + 1;
    }

    #[inline]
    fn bytes(&mut self, bytes: &[u8]) {
        if bytes.len() > FIELDS_BUF - self.len {
            self.flush();
        }
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            // Longer than the whole buffer: straight to the streaming hasher.
            None => {
                spill(&mut self.spill).update(bytes);
            }
        }
    }

    /// Hands what is buffered to the streaming hasher, leaving the buffer empty.
    fn flush(&mut self) {
        let len = std::mem::take(&mut self.len);
        spill(&mut self.spill).update(&self.buf[..len]);
    }

    fn finish(self) -> [u8; blake3::KEY_LEN] {
        let rest = &self.buf[..self.len];
        let hashed = match self.spill {
            // Short: the fields themselves, behind the version and their length; no hashing.
            None if rest.len() <= SHORT_FIELDS => {
                let mut key = [0u8; blake3::KEY_LEN];
                key[0] = VERSION;
                key[1] = rest.len() as u8;
                key[2..2 + rest.len()].copy_from_slice(rest);
                return key;
            }
            None => blake3::keyed_hash(DOMAIN, rest),
            Some(mut hasher) => hasher.update(rest).finalize(),
        };
        let mut key = *hashed.as_bytes();
        key[0] |= HASHED;
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;
    use bytes::Bytes;

    fn tensor(name: &str, dtype: DataType, shape: &[usize], data: &[u8]) -> Tensor {
        Tensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            data: Bytes::copy_from_slice(data),
        }
    }

    fn key(model: &str, version: &str, tenant: Option<&str>, inputs: &[Tensor]) -> CacheKey {
        compute(&KeyParts {
            model,
            version,
            tenant,
            inputs,
        })
    }

    #[test]
    fn everything_that_changes_an_answer_changes_the_key() {
        let bytes = [0u8, 0, 128, 63, 0, 0, 0, 64];
        let base = [tensor("x", DataType::Fp32, &[1, 2], &bytes)];
        let reference = key("m", "1", None, &base);
        let variants: Vec<(&str, CacheKey)> = vec![
            ("model", key("n", "1", None, &base)),
            ("version", key("m", "2", None, &base)),
            ("tenant", key("m", "1", Some("t"), &base)),
            (
                "dtype with equal bytes",
                key(
                    "m",
                    "1",
                    None,
                    &[tensor("x", DataType::Int32, &[1, 2], &bytes)],
                ),
            ),
            (
                "shape with equal bytes",
                key(
                    "m",
                    "1",
                    None,
                    &[tensor("x", DataType::Fp32, &[2, 1], &bytes)],
                ),
            ),
            (
                "input name",
                key(
                    "m",
                    "1",
                    None,
                    &[tensor("y", DataType::Fp32, &[1, 2], &bytes)],
                ),
            ),
            (
                "data",
                key(
                    "m",
                    "1",
                    None,
                    &[tensor("x", DataType::Fp32, &[1, 2], &[1; 8])],
                ),
            ),
        ];
        for (what, variant) in variants {
            assert_ne!(
                variant, reference,
                "changing the {what} must change the key"
            );
        }
        assert_eq!(
            key("m", "1", None, &base),
            reference,
            "keys are deterministic"
        );
    }

    #[test]
    fn input_order_does_not_matter() {
        let a = tensor("a", DataType::Uint8, &[1], &[1]);
        let b = tensor("b", DataType::Uint8, &[1], &[2]);
        assert_eq!(
            key("m", "1", None, &[a.clone(), b.clone()]),
            key("m", "1", None, &[b, a])
        );
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        assert_ne!(key("ab", "c", None, &[]), key("a", "bc", None, &[]));
    }

    /// The v3 layout written out the plain way (a growing `Vec`, fixed helper order), so the
    /// buffered encoder and the single-input shortcut are checked against the documented format.
    fn reference(model: &str, version: &str, tenant: Option<&str>, inputs: &[Tensor]) -> CacheKey {
        fn varint(out: &mut Vec<u8>, mut value: u64) {
            loop {
                let low = (value & 0x7f) as u8;
                value >>= 7;
                if value == 0 {
                    out.push(low);
                    return;
                }
                out.push(low | 0x80);
            }
        }
        fn string(out: &mut Vec<u8>, s: &str) {
            varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        let mut sorted: Vec<&Tensor> = inputs.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut fields = Vec::new();
        string(&mut fields, model);
        string(&mut fields, version);
        match tenant {
            Some(t) => {
                varint(&mut fields, 1);
                string(&mut fields, t);
            }
            None => varint(&mut fields, 0),
        }
        varint(&mut fields, sorted.len() as u64);
        for t in &sorted {
            string(&mut fields, &t.name);
            varint(&mut fields, t.dtype.tag() as u64);
            varint(&mut fields, t.shape.len() as u64);
            for &d in &t.shape {
                varint(&mut fields, d as u64);
            }
            varint(&mut fields, t.data.len() as u64);
        }
        let mut fields_key = [0u8; 32];
        if fields.len() <= 30 {
            fields_key[0] = 3;
            fields_key[1] = fields.len() as u8;
            fields_key[2..2 + fields.len()].copy_from_slice(&fields);
        } else {
            fields_key =
                *blake3::keyed_hash(b"tollgate.cache.key.v3.fields.key", &fields).as_bytes();
            fields_key[0] |= 0x80;
        }
        let data: Vec<u8> = sorted.iter().flat_map(|t| t.data.iter().copied()).collect();
        CacheKey(*blake3::keyed_hash(&fields_key, &data).as_bytes())
    }

    #[test]
    fn matches_the_documented_layout() {
        let long = "m".repeat(300);
        let x = tensor("x", DataType::Fp32, &[1, 2], &[7; 8]);
        let big = tensor("big", DataType::Uint8, &[1, 5000], &[3; 5000]);
        let y = tensor("y", DataType::Int64, &[1, 128, 1], &[9; 1024]);
        let xy = vec![y.clone(), x.clone()];
        let all = vec![big.clone(), y, x.clone()];
        let cases: Vec<(&str, &str, Option<&str>, Vec<Tensor>)> = vec![
            ("no inputs", "1", None, vec![]),
            ("one input", "1", None, vec![x.clone()]),
            ("tenant", "1", Some("acme"), vec![x.clone()]),
            ("empty tenant", "1", Some(""), vec![x.clone()]),
            ("two inputs", "1", None, xy),
            ("three inputs", "7", Some("t"), all.clone()),
            ("over a chunk", "1", None, vec![big]),
            (&long, "1", None, vec![x]),
            (&long, &long, Some(&long), all),
        ];
        for (model, version, tenant, inputs) in &cases {
            let expected = reference(model, version, *tenant, inputs);
            let what = format!("model {model:.20}, {} inputs", inputs.len());
            assert_eq!(key(model, version, *tenant, inputs), expected, "{what}");
        }
    }

    #[test]
    fn fields_that_spill_past_the_buffer_hash_the_same_bytes() {
        // Every length around the stack buffer's size, so the fields end just before, at and
        // after it, and strings that straddle it or are longer than it on their own.
        let x = tensor("x", DataType::Fp32, &[1, 2], &[7; 8]);
        for n in (FIELDS_BUF - 24)..(FIELDS_BUF + 8) {
            let model = "m".repeat(n);
            let name = "n".repeat(n);
            let named = tensor(&name, DataType::Fp32, &[1, 2], &[7; 8]);
            for inputs in [vec![x.clone()], vec![named.clone()], vec![named, x.clone()]] {
                assert_eq!(
                    key(&model, "1", Some("t"), &inputs),
                    reference(&model, "1", Some("t"), &inputs),
                    "model of {n} bytes"
                );
            }
        }
        let huge = "h".repeat(3 * FIELDS_BUF);
        assert_eq!(
            key(&huge, &huge, Some(&huge), std::slice::from_ref(&x)),
            reference(&huge, &huge, Some(&huge), &[x])
        );
    }

    #[test]
    fn varints_are_leb128() {
        let cases: [(u64, &[u8]); 6] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (value, expected) in cases {
            let mut fields = Fields::new();
            fields.varint(value);
            assert_eq!(&fields.buf[..fields.len], expected, "varint({value})");
        }
    }

    /// Requests that differ in any way, including ones built to make the concatenated bytes or
    /// the encoded fields line up, must all get different keys.
    #[test]
    fn distinct_requests_never_share_a_key() {
        // FP32 tensors of `n` bytes of 1s.
        let f = |name: &str, shape: &[usize], n: usize| {
            tensor(name, DataType::Fp32, shape, &vec![1; n])
        };
        let bytes = |name: &str, n: usize| tensor(name, DataType::Bytes, &[1], &vec![1; n]);
        let long = "a-long-model-name-for-hashing";
        let cases: Vec<(&str, Option<&str>, Vec<Tensor>)> = vec![
            // Single vs multi input over the same concatenated bytes.
            ("m", None, vec![f("x", &[1, 2], 8)]),
            ("m", None, vec![f("x", &[1, 1], 4), f("y", &[1, 1], 4)]),
            ("m", None, vec![f("x", &[1, 2], 8), f("y", &[1, 0], 0)]),
            ("m", None, vec![f("x", &[1, 0], 0), f("y", &[1, 2], 8)]),
            ("m", None, vec![f("x", &[1, 1], 4), f("z", &[1, 1], 4)]),
            // The same bytes split differently between two inputs.
            ("m", None, vec![f("x", &[1, 2], 8), f("y", &[1, 1], 4)]),
            ("m", None, vec![f("x", &[1, 1], 4), f("y", &[1, 2], 8)]),
            // Tenant vs none, an empty tenant, and a tenant next to a shifted model name.
            ("m", Some("t"), vec![f("x", &[1, 2], 8)]),
            ("m", Some(""), vec![f("x", &[1, 2], 8)]),
            ("mt", None, vec![f("x", &[1, 2], 8)]),
            ("m", Some("x"), vec![]),
            ("m", None, vec![]),
            // Dims that differ: order, rank, and values across a varint byte boundary.
            ("m", None, vec![f("x", &[2, 1], 8)]),
            ("m", None, vec![f("x", &[2], 8)]),
            ("m", None, vec![f("x", &[1, 1, 2], 8)]),
            ("m", None, vec![f("x", &[1, 127], 8)]),
            ("m", None, vec![f("x", &[1, 128], 8)]),
            ("m", None, vec![f("x", &[1, 0, 1], 8)]),
            ("m", None, vec![f("x", &[128], 8)]),
            // Same bytes and shape read as another datatype.
            (
                "m",
                None,
                vec![tensor("x", DataType::Int32, &[1, 2], &[1; 8])],
            ),
            (
                "m",
                None,
                vec![tensor("x", DataType::Uint8, &[1, 2], &[1; 8])],
            ),
            // BYTES tensors of one shape splitting the same bytes differently: only the byte
            // lengths tell these apart.
            ("m", None, vec![bytes("s", 4), bytes("t", 8)]),
            ("m", None, vec![bytes("s", 8), bytes("t", 4)]),
            // Fields long enough to be hashed, and the same bytes under a short fields key.
            (long, Some("t"), vec![f("x", &[1, 2], 8)]),
            (long, None, vec![f("x", &[1, 2], 8)]),
        ];
        let keys: Vec<CacheKey> = cases
            .iter()
            .map(|(model, tenant, inputs)| key(model, "1", *tenant, inputs))
            .collect();
        for i in 0..keys.len() {
            for j in (i + 1)..keys.len() {
                assert_ne!(keys[i], keys[j], "case {i} and case {j} share a key");
            }
        }
    }

    #[test]
    fn every_input_order_gives_the_same_key() {
        let a = tensor("a", DataType::Fp32, &[1, 1], &[1; 4]);
        let b = tensor("b", DataType::Int64, &[1, 2], &[2; 16]);
        let c = tensor("c", DataType::Uint8, &[1, 3], &[3; 3]);
        let expected = key("m", "1", Some("t"), &[a.clone(), b.clone(), c.clone()]);
        for order in [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let all = [&a, &b, &c];
            let inputs: Vec<Tensor> = order.iter().map(|&i| all[i].clone()).collect();
            assert_eq!(key("m", "1", Some("t"), &inputs), expected, "{order:?}");
        }
    }

    #[test]
    fn short_and_hashed_fields_keys_stay_apart() {
        // Model names from 0 to 40 bytes take the fields from well under SHORT_FIELDS to well
        // over it, so both forms and the boundary between them are covered.
        let x = tensor("x", DataType::Fp32, &[1, 2], &[7; 8]);
        let mut keys = Vec::new();
        let (mut short, mut hashed) = (0, 0);
        for n in 0..=40 {
            let model = "m".repeat(n);
            let inputs = [x.clone()];
            let parts = KeyParts {
                model: &model,
                version: "1",
                tenant: None,
                inputs: &inputs,
            };
            let fields_key = fields_key(&parts, &[&x]);
            if fields_key[0] == VERSION {
                short += 1;
                let len = usize::from(fields_key[1]);
                assert!(len <= SHORT_FIELDS, "model of {n} bytes");
                assert!(fields_key[2 + len..].iter().all(|&b| b == 0), "zero padded");
            } else {
                hashed += 1;
                assert_ne!(fields_key[0] & HASHED, 0, "model of {n} bytes");
            }
            let key = key(&model, "1", None, &inputs);
            assert_eq!(
                key,
                reference(&model, "1", None, &inputs),
                "model of {n} bytes"
            );
            keys.push(key);
        }
        assert!(short > 0 && hashed > 0, "{short} short, {hashed} hashed");
        for i in 0..keys.len() {
            for j in (i + 1)..keys.len() {
                assert_ne!(keys[i], keys[j], "models of {i} and {j} bytes share a key");
            }
        }
    }

    #[test]
    fn version_and_domain_agree() {
        let domain = std::str::from_utf8(DOMAIN).expect("DOMAIN is ASCII");
        assert!(
            domain.contains(&format!(".v{VERSION}.")),
            "bump VERSION and DOMAIN together: {domain} vs {VERSION}"
        );
    }

    /// Pins the v3 layout. If this fails, the hashed layout changed: bump `DOMAIN` (so shared
    /// tier entries written by the old layout are never read as the new one) and update it. The
    /// first pins a short fields key, the second a hashed one.
    #[test]
    fn layout_is_pinned() {
        let bytes = [0, 0, 128, 63, 0, 0, 0, 64];
        let input = [tensor("input", DataType::Fp32, &[1, 2], &bytes)];
        assert_eq!(
            key("digits", "1", None, &input).to_hex(),
            "a6d2d37665ee0ad75354198d3c63a3ca2ee3bc380cbee56c314a07d46b08e41b"
        );
        assert_eq!(
            key("digits", "1", Some("a tenant with a long name"), &input).to_hex(),
            "9fe89d2899cf1890607ab8f7039b1c4ea8e3bd32a14b1dacb42c4ca4aaa6de84"
        );
    }
}
