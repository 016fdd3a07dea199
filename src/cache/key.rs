//! Cache keys: blake3-256 over everything that determines an answer. Unlike Triton's key, the
//! datatype and shape are part of it, so equal bytes read as different tensors never collide.

use crate::tensor::Tensor;
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
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

/// Bumped whenever the hashed layout changes, so old shared-tier entries are never misread.
const DOMAIN: &[u8] = b"tollgate.cache.key.v2";

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
    let mut hasher = blake3::Hasher::new();
    hasher.update(DOMAIN);
    field(&mut hasher, parts.model.as_bytes());
    field(&mut hasher, parts.version.as_bytes());
    match parts.tenant {
        Some(tenant) => {
            hasher.update(&[1]);
            field(&mut hasher, tenant.as_bytes());
        }
        None => {
            hasher.update(&[0]);
        }
    }
    // Sorted by name so the key does not depend on the order a client listed its inputs in.
    let mut inputs: Vec<&Tensor> = parts.inputs.iter().collect();
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    hasher.update(&(inputs.len() as u64).to_le_bytes());
    for tensor in inputs {
        field(&mut hasher, tensor.name.as_bytes());
        hasher.update(&[tensor.dtype.tag()]);
        hasher.update(&(tensor.shape.len() as u64).to_le_bytes());
        for dim in &tensor.shape {
            hasher.update(&(*dim as u64).to_le_bytes());
        }
        // The bytes get a hasher of their own, starting on a chunk boundary, so blake3 hashes
        // them on its wide SIMD path; the outer hash takes their length and digest. Either way
        // the caller's buffer is read in place, never copied.
        hasher.update(&(tensor.data.len() as u64).to_le_bytes());
        hasher.update(blake3::hash(&tensor.data).as_bytes());
    }
    CacheKey(*hasher.finalize().as_bytes())
}

/// Length-prefixed, so ("ab","c") and ("a","bc") hash differently.
fn field(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
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
}
