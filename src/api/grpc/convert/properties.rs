//! Properties of the gRPC decoder over generated input: no message makes it panic, and a
//! tensor sent as raw contents or as typed contents decodes to the same bytes.

use super::*;
use crate::tensor::{strings, DataType};
use proptest::prelude::*;
use prost::Message;

/// A tensor as typed contents can carry it: booleans 0 or 1, any other bit pattern, BYTES
/// elements of any bytes (each with its length before it).
fn tensor() -> impl Strategy<Value = (DataType, Vec<usize>, Vec<u8>)> {
    (
        proptest::sample::select(DataType::ALL.to_vec()),
        proptest::collection::vec(1usize..5, 1..4),
    )
        .prop_flat_map(|(dtype, shape)| {
            let count = shape.iter().product::<usize>();
            let data = match dtype.element_size() {
                None => {
                    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), count)
                        .prop_map(|elements| {
                            strings::encode(elements.iter().map(Vec::as_slice)).unwrap_or_default()
                        })
                        .boxed()
                }
                Some(size) => proptest::collection::vec(any::<u8>(), count * size)
                    .prop_map(move |mut data| {
                        if dtype == DataType::Bool {
                            data.iter_mut().for_each(|b| *b &= 1);
                        }
                        data
                    })
                    .boxed(),
            };
            (Just(dtype), Just(shape), data)
        })
}

fn message(dtype: DataType, shape: &[usize]) -> proto::ModelInferRequest {
    proto::ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![proto::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: dtype.as_str().into(),
            shape: shape.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The first `N` bytes of an element (its chunks are exactly that long).
fn array<const N: usize>(element: &[u8]) -> [u8; N] {
    std::array::from_fn(|i| element[i])
}

/// The typed contents a client fills for `data` (each element in its field's wider type).
fn typed(dtype: DataType, data: &[u8]) -> proto::InferTensorContents {
    let mut contents = proto::InferTensorContents::default();
    if dtype == DataType::Bytes {
        contents.bytes_contents = strings::elements(data)
            .map_while(Result::ok)
            .map(Bytes::copy_from_slice)
            .collect();
        return contents;
    }
    let size = dtype.element_size().unwrap_or(1);
    for e in data.chunks_exact(size) {
        match dtype {
            DataType::Bool => contents.bool_contents.push(e[0] != 0),
            DataType::Int8 => contents.int_contents.push(i32::from(e[0] as i8)),
            DataType::Int16 => contents
                .int_contents
                .push(i32::from(i16::from_le_bytes([e[0], e[1]]))),
            DataType::Int32 => contents.int_contents.push(i32::from_le_bytes(array(e))),
            DataType::Int64 => contents.int64_contents.push(i64::from_le_bytes(array(e))),
            DataType::Uint8 => contents.uint_contents.push(u32::from(e[0])),
            DataType::Uint16 => contents
                .uint_contents
                .push(u32::from(u16::from_le_bytes([e[0], e[1]]))),
            DataType::Uint32 => contents.uint_contents.push(u32::from_le_bytes(array(e))),
            DataType::Uint64 => contents.uint64_contents.push(u64::from_le_bytes(array(e))),
            DataType::Fp32 => contents.fp32_contents.push(f32::from_le_bytes(array(e))),
            DataType::Fp64 => contents.fp64_contents.push(f64::from_le_bytes(array(e))),
            // The protocol has no typed field for these: they travel raw only.
            DataType::Fp16 | DataType::Bf16 | DataType::Bytes => {}
        }
    }
    contents
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_message_makes_the_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(message) = proto::ModelInferRequest::decode(bytes.as_slice()) {
            let _ = request(message);
        }
    }

    #[test]
    fn no_changed_message_makes_the_decoder_panic(
        (dtype, shape, data) in tensor(),
        flip in any::<(usize, u8)>(),
        shape_edit in any::<(usize, i64)>(),
    ) {
        let mut valid = message(dtype, &shape);
        valid.raw_input_contents = vec![data.clone().into()];
        let mut bytes = valid.encode_to_vec();
        let at = flip.0 % bytes.len();
        bytes[at] = flip.1;
        if let Ok(message) = proto::ModelInferRequest::decode(bytes.as_slice()) {
            let _ = request(message);
        }
        // Any dimension at all, huge and negative ones included.
        let mut odd = valid.clone();
        let dims = odd.inputs[0].shape.len();
        odd.inputs[0].shape[shape_edit.0 % dims] = shape_edit.1;
        let _ = request(odd);
    }

    #[test]
    fn raw_contents_decode_to_the_same_bytes((dtype, shape, data) in tensor()) {
        let mut raw = message(dtype, &shape);
        raw.raw_input_contents = vec![data.clone().into()];
        let decoded = request(raw).map_err(|u| TestCaseError::fail(u.error.to_string()))?;
        prop_assert_eq!(decoded.inputs[0].data.as_ref(), data.as_slice());
        prop_assert_eq!(&decoded.inputs[0].shape, &shape);
    }

    #[test]
    fn typed_contents_decode_to_the_same_bytes((dtype, shape, data) in tensor()) {
        prop_assume!(!matches!(dtype, DataType::Fp16 | DataType::Bf16));
        let mut sent = message(dtype, &shape);
        sent.inputs[0].contents = Some(typed(dtype, &data));
        let decoded = request(sent).map_err(|u| TestCaseError::fail(u.error.to_string()))?;
        prop_assert_eq!(decoded.inputs[0].data.as_ref(), data.as_slice());
    }
}
