//! The core tensor type every layer below `api/` works with: a name, a datatype, a shape and
//! little-endian row-major bytes, whatever wire encoding they arrived in.

pub mod strings;

use bytes::Bytes;
use std::fmt;

/// KServe V2 datatypes. `Bytes` elements are strings of any length (see `strings` for how their
/// data is laid out).
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

    /// Checks that `data` is exactly what `shape` of `dtype` holds: a fixed number of bytes, or
    /// for BYTES that many whole elements.
    pub fn check_data(dtype: DataType, shape: &[usize], data: &[u8]) -> Result<(), String> {
        let count = Tensor::element_count(shape)
            .ok_or_else(|| format!("shape {shape:?} has more elements than fit in memory"))?;
        match dtype.element_size() {
            None => strings::check(data, count, usize::MAX),
            Some(size) => match count.checked_mul(size) {
                Some(expected) if expected == data.len() => Ok(()),
                Some(expected) => Err(format!(
                    "shape {shape:?} of {dtype} needs {expected} bytes, got {}",
                    data.len()
                )),
                None => Err(format!("shape {shape:?} has more bytes than fit in memory")),
            },
        }
    }

    /// Where each of the first dimension's rows starts in `data`, and where the last ends:
    /// `shape[0] + 1` offsets.
    pub fn row_offsets(&self) -> Result<Vec<usize>, String> {
        let rows = self.shape.first().copied().unwrap_or(1);
        let per_row: usize = self.shape.iter().skip(1).product();
        match self.dtype.element_size() {
            Some(size) => Ok((0..=rows).map(|row| row * per_row * size).collect()),
            None => {
                let elements = strings::offsets(&self.data)?;
                (0..=rows)
                    .map(|row| elements.get(row * per_row).copied())
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| format!("`{}` holds fewer elements than its shape", self.name))
            }
        }
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

    #[test]
    fn data_is_checked_against_the_shape_and_rows_are_found() {
        let words = strings::encode([&b"a"[..], b"bc", b"", b"def"]).unwrap();
        // (datatype, shape, data, a fragment of the error or none)
        type Case<'a> = (DataType, &'a [usize], &'a [u8], Option<&'a str>);
        let cases: &[Case] = &[
            (DataType::Fp32, &[2], &[0; 8], None),
            (DataType::Fp32, &[2], &[0; 7], Some("needs 8 bytes, got 7")),
            (DataType::Bytes, &[2, 2], &words, None),
            (
                DataType::Bytes,
                &[3],
                &words,
                Some("more than the 3 elements"),
            ),
            (DataType::Bytes, &[1], &[1, 0, 0], Some("element 0")),
        ];
        for (dtype, shape, data, want) in cases {
            match (Tensor::check_data(*dtype, shape, data), want) {
                (Ok(()), None) => {}
                (Err(message), Some(fragment)) => assert!(message.contains(fragment), "{message}"),
                (got, _) => panic!("{dtype} {shape:?}: {got:?}"),
            }
        }
        let tensor = |dtype, shape: Vec<usize>, data: &[u8]| Tensor {
            name: "t".into(),
            dtype,
            shape,
            data: Bytes::copy_from_slice(data),
        };
        let rows = tensor(DataType::Bytes, vec![2, 2], &words).row_offsets();
        assert_eq!(rows, Ok(vec![0, 11, 22]));
        let rows = tensor(DataType::Int16, vec![3, 2], &[0; 12]).row_offsets();
        assert_eq!(rows, Ok(vec![0, 4, 8, 12]));
    }
}
