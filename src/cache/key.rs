//! Cache keys: blake3-256 over everything that determines an answer. Unlike Triton's key, the
//! datatype and shape are part of it, so equal bytes read as different tensors never collide.
//!
//! # Layout (v4)
//!
//! blake3's key-derivation mode (`Hasher::new_derive_key`) under the context string `CONTEXT`,
//! over the fields, then the tensor bytes. The fields are model, resolved version, tenant
//! (a 0/1 tag, then the name), the input count and, for every input sorted by name, its name,
//! datatype tag, rank, dims and byte length. Strings are length-prefixed and every integer is
//! an unsigned LEB128 varint, so the fields split back one way only; the bytes follow in the
//! same sorted order, read in place from the tensors (never copied), and their lengths are
//! fixed by the fields, so the whole input is unambiguous. The context string keeps these keys
//! apart from any other use of blake3 and names the layout's version: a new layout takes a new
//! context, and old entries of the shared (Redis) tier then simply miss. The keys separate
//! inputs; they are not secrets.

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

/// Globally unique and fixed for a layout, as blake3's key derivation wants its context.
const CONTEXT: &str = "tollgate 2026-12 prediction cache key v4";

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
    let mut hasher = blake3::Hasher::new_derive_key(CONTEXT);
    match parts.inputs {
        // The common case needs no allocation for sorting.
        [input] => {
            write_fields(&mut hasher, parts, std::slice::from_ref(&input));
            hasher.update(&input.data);
        }
        // Sorted by name so the key does not depend on the order a client listed its inputs in.
        inputs => {
            let mut sorted: Vec<&Tensor> = inputs.iter().collect();
            sorted.sort_by(|a, b| a.name.cmp(&b.name));
            write_fields(&mut hasher, parts, &sorted);
            for input in &sorted {
                hasher.update(&input.data);
            }
        }
    }
    CacheKey(*hasher.finalize().as_bytes())
}

fn write_fields(hasher: &mut blake3::Hasher, parts: &KeyParts<'_>, sorted: &[&Tensor]) {
    let mut fields = Fields::new(hasher);
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
    fields.flush();
}

/// Room for the fields of most requests.
const FIELDS_BUF: usize = 128;

/// The longest LEB128 encoding of a `u64`.
const MAX_VARINT: usize = 10;

/// The encoded fields, gathered in a stack buffer and handed to the hasher in one call: many
/// small `Hasher::update` calls cost more than the hashing itself.
struct Fields<'h> {
    buf: [u8; FIELDS_BUF],
    len: usize,
    hasher: &'h mut blake3::Hasher,
}

impl<'h> Fields<'h> {
    fn new(hasher: &'h mut blake3::Hasher) -> Self {
        Fields {
            buf: [0; FIELDS_BUF],
            len: 0,
            hasher,
        }
    }

    /// Length-prefixed, so ("ab","c") and ("a","bc") encode differently.
    fn string(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    /// Unsigned LEB128: seven bits a byte, low first, the top bit set on all but the last.
    fn varint(&mut self, mut value: u64) {
        if FIELDS_BUF - self.len < MAX_VARINT {
            self.flush();
        }
        // In bounds: there is room for the longest varint now.
        let mut at = self.len;
        while value >= 0x80 {
            self.buf[at] = (value as u8) | 0x80;
            value >>= 7;
            at += 1;
        }
        self.buf[at] = value as u8;
        self.len = at + 1;
    }

    fn bytes(&mut self, bytes: &[u8]) {
        if bytes.len() > FIELDS_BUF - self.len {
            self.flush();
        }
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            // Longer than the whole buffer: straight to the hasher.
            None => {
                self.hasher.update(bytes);
            }
        }
    }

    /// Hands what is buffered to the hasher, leaving the buffer empty.
    fn flush(&mut self) {
        let len = std::mem::take(&mut self.len);
        self.hasher.update(&self.buf[..len]);
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

    /// The documented layout written the plain way (the fields into one vector, then the
    /// derive-key hash of the fields followed by the bytes), so the buffered encoder and the
    /// single-input shortcut are checked against it.
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
        let mut hasher = blake3::Hasher::new_derive_key("tollgate 2026-12 prediction cache key v4");
        hasher.update(&fields);
        for t in &sorted {
            hasher.update(&t.data);
        }
        CacheKey(*hasher.finalize().as_bytes())
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
            let mut hasher = blake3::Hasher::new();
            let mut fields = Fields::new(&mut hasher);
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
            // Long fields, and the same bytes under short ones.
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

    /// Pins the v4 layout. If this fails, the hashed layout changed: bump `CONTEXT` (so shared
    /// tier entries written by the old layout are never read as the new one) and update it.
    #[test]
    fn layout_is_pinned() {
        let bytes = [0, 0, 128, 63, 0, 0, 0, 64];
        let input = [tensor("input", DataType::Fp32, &[1, 2], &bytes)];
        assert_eq!(
            key("digits", "1", None, &input).to_hex(),
            "0f7386442b5931961a24cbc10c504f72ce66ce5ead21c88e0c77c28162cf0e35"
        );
        assert_eq!(
            key("digits", "1", Some("a tenant with a long name"), &input).to_hex(),
            "a33104527fb5d34d4bd378ee9256e6067d1fff56989b66b32674d628e8dbc64b"
        );
    }
}
