//! The protocol's typed tensor contents (`InferTensorContents`), read into the same
//! little-endian bytes that raw contents carry, so both forms hash and batch alike.

use super::proto;
use crate::tensor::DataType;
use bytes::{BufMut, Bytes, BytesMut};

/// Typed contents as little-endian bytes. The protocol widens small integers to 32 bits on
/// the wire; each value must still fit the declared datatype.
pub fn typed_to_bytes(
    dtype: DataType,
    contents: &proto::InferTensorContents,
) -> Result<Bytes, String> {
    fn narrow<T: TryFrom<W>, W: Copy + std::fmt::Display>(
        values: &[W],
        dtype: DataType,
        put: impl Fn(&mut BytesMut, T),
    ) -> Result<Bytes, String> {
        let mut out = BytesMut::with_capacity(values.len() * dtype.element_size().unwrap_or(1));
        for (index, &value) in values.iter().enumerate() {
            let narrowed = T::try_from(value)
                .map_err(|_| format!("element {index} ({value}) is out of range for {dtype}"))?;
            put(&mut out, narrowed);
        }
        Ok(out.freeze())
    }
    let c = contents;
    match dtype {
        DataType::Bool => Ok(c
            .bool_contents
            .iter()
            .map(|&b| b as u8)
            .collect::<Vec<u8>>()
            .into()),
        DataType::Int8 => narrow(&c.int_contents, dtype, |o, v: i8| o.put_i8(v)),
        DataType::Int16 => narrow(&c.int_contents, dtype, |o, v: i16| o.put_i16_le(v)),
        DataType::Int32 => narrow(&c.int_contents, dtype, |o, v: i32| o.put_i32_le(v)),
        DataType::Int64 => narrow(&c.int64_contents, dtype, |o, v: i64| o.put_i64_le(v)),
        DataType::Uint8 => narrow(&c.uint_contents, dtype, |o, v: u8| o.put_u8(v)),
        DataType::Uint16 => narrow(&c.uint_contents, dtype, |o, v: u16| o.put_u16_le(v)),
        DataType::Uint32 => narrow(&c.uint_contents, dtype, |o, v: u32| o.put_u32_le(v)),
        DataType::Uint64 => narrow(&c.uint64_contents, dtype, |o, v: u64| o.put_u64_le(v)),
        DataType::Fp32 => Ok(c
            .fp32_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()),
        DataType::Fp64 => Ok(c
            .fp64_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()),
        DataType::Fp16 | DataType::Bf16 => Err(format!(
            "{dtype} has no typed contents field; send raw_input_contents"
        )),
        DataType::Bytes => {
            Ok(crate::tensor::strings::encode(c.bytes_contents.iter().map(|b| b.as_ref()))?.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_contents_become_the_same_bytes_as_raw() {
        let contents = proto::InferTensorContents {
            fp32_contents: vec![1.0, 2.5],
            ..Default::default()
        };
        let expected: Vec<u8> = [1.0f32, 2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            typed_to_bytes(DataType::Fp32, &contents).unwrap(),
            Bytes::from(expected)
        );
        let ints = proto::InferTensorContents {
            int_contents: vec![-1, 300],
            ..Default::default()
        };
        assert_eq!(
            typed_to_bytes(DataType::Int16, &ints).unwrap().as_ref(),
            &[255, 255, 44, 1]
        );
        let message = typed_to_bytes(DataType::Int8, &ints).unwrap_err();
        assert!(message.contains("out of range for INT8"), "{message}");
        let words = proto::InferTensorContents {
            bytes_contents: vec![b"hi".to_vec().into(), Vec::new().into()],
            ..Default::default()
        };
        assert_eq!(
            typed_to_bytes(DataType::Bytes, &words).unwrap().as_ref(),
            &[2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]
        );
    }
}
