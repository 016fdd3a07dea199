//! The core tensor type every layer below `api/` works with: a name, a datatype, a shape and
//! little-endian row-major bytes, whatever wire encoding they arrived in.

use bytes::Bytes;
use std::fmt;

/// KServe V2 datatypes. `Bytes` (strings) is recognised so errors can name it, but no layer
/// below the front ends handles it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Bf16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The protocol's spelling, e.g. `FP32`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Size of one element in bytes; `None` for variable-length BYTES.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }

    /// A stable one-byte tag used in cache keys and the cache's binary value encoding.
    pub fn tag(self) -> u8 {
        self as u8
    }

    pub fn from_tag(tag: u8) -> Option<DataType> {
        DataType::ALL.get(tag as usize).copied()
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dense tensor. `data` is shared, so slicing rows out of a batch output costs no copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<usize>,
    pub data: Bytes,
}

impl Tensor {
    /// Number of elements the shape describes, or `None` on overflow.
    pub fn element_count(shape: &[usize]) -> Option<usize> {
        shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Bytes in one row (everything after the first dimension).
    pub fn row_bytes(&self) -> usize {
        let per_row: usize = self.shape.iter().skip(1).product();
        per_row * self.dtype.element_size().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datatype_round_trips_through_its_name_and_tag() {
        for dtype in DataType::ALL {
            assert_eq!(DataType::parse(dtype.as_str()), Some(dtype));
            assert_eq!(DataType::from_tag(dtype.tag()), Some(dtype));
        }
        assert_eq!(DataType::parse("FLOAT32"), None);
    }

    #[test]
    fn element_count_detects_overflow() {
        assert_eq!(Tensor::element_count(&[2, 3, 4]), Some(24));
        assert_eq!(Tensor::element_count(&[]), Some(1));
        assert_eq!(Tensor::element_count(&[usize::MAX, 2]), None);
    }
}
