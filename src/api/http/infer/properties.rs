//! Properties of the HTTP decoder over generated input: no body makes it panic, and a tensor
//! (strings included) written as JSON or as binary data decodes to the same bytes.

use super::*;
use crate::tensor::DataType;
use proptest::prelude::*;

/// Element bytes of `dtype` as a request can carry them: booleans 0 or 1, floats finite
/// (JSON has no spelling for the others), BYTES any text, with its length before it.
fn element(dtype: DataType) -> BoxedStrategy<Vec<u8>> {
    if dtype == DataType::Bytes {
        return any::<String>()
            .prop_map(|text| crate::tensor::strings::encode([text.as_bytes()]).unwrap_or_default())
            .boxed();
    }
    let size = dtype.element_size().unwrap_or(1);
    proptest::collection::vec(any::<u8>(), size)
        .prop_map(move |mut bytes| {
            let finite = match dtype {
                DataType::Bool => {
                    bytes[0] &= 1;
                    true
                }
                DataType::Fp16 => half::f16::from_le_bytes([bytes[0], bytes[1]]).is_finite(),
                DataType::Bf16 => half::bf16::from_le_bytes([bytes[0], bytes[1]]).is_finite(),
                DataType::Fp32 => f32::from_le_bytes(std::array::from_fn(|i| bytes[i])).is_finite(),
                DataType::Fp64 => f64::from_le_bytes(std::array::from_fn(|i| bytes[i])).is_finite(),
                _ => true,
            };
            if !finite {
                bytes.iter_mut().for_each(|b| *b = 0);
            }
            bytes
        })
        .boxed()
}

/// A tensor of any datatype: a shape of up to three dimensions, and its elements.
fn tensor() -> impl Strategy<Value = (DataType, Vec<usize>, Vec<u8>)> {
    (
        proptest::sample::select(DataType::ALL.to_vec()),
        proptest::collection::vec(1usize..5, 1..4),
    )
        .prop_flat_map(|(dtype, shape)| {
            let count = shape.iter().product::<usize>();
            (
                Just(dtype),
                Just(shape),
                proptest::collection::vec(element(dtype), count)
                    .prop_map(|elements| elements.concat()),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_body_makes_the_decoder_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        header_length in proptest::option::of(0usize..600),
    ) {
        let _ = decode("m", None, &Bytes::from(body), header_length);
    }

    #[test]
    fn no_near_valid_json_makes_the_decoder_panic(
        (dtype, shape, data) in tensor(),
        cut in 0usize..400,
        flip in any::<(usize, u8)>(),
    ) {
        // A valid request, then cut short or with one byte changed: the shapes of mistakes
        // clients make, which random bytes rarely reach.
        let mut body = json_body(dtype, &shape, &data).into_bytes();
        let mut changed = body.clone();
        let at = flip.0 % changed.len();
        changed[at] = flip.1;
        body.truncate(cut.min(body.len()));
        let _ = decode("m", None, &Bytes::from(body), None);
        let _ = decode("m", None, &Bytes::from(changed), None);
    }

    #[test]
    fn json_data_decodes_to_the_tensor_it_was_written_from((dtype, shape, data) in tensor()) {
        let body = json_body(dtype, &shape, &data);
        let (request, _) = decode("m", None, &Bytes::from(body.clone()), None)
            .map_err(|e| TestCaseError::fail(format!("{e}: {body}")))?;
        prop_assert_eq!(request.inputs.len(), 1);
        let input = &request.inputs[0];
        prop_assert_eq!(input.dtype, dtype);
        prop_assert_eq!(&input.shape, &shape);
        prop_assert_eq!(input.data.as_ref(), data.as_slice(), "{}", body);
    }

    #[test]
    fn binary_data_decodes_to_the_same_bytes((dtype, shape, data) in tensor()) {
        let header = serde_json::json!({"inputs": [{
            "name": "x", "datatype": dtype.as_str(), "shape": shape,
            "parameters": {"binary_data_size": data.len()},
        }]})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&data);
        let (request, _) = decode("m", None, &Bytes::from(body), Some(header.len()))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(request.inputs[0].data.as_ref(), data.as_slice());
        prop_assert_eq!(&request.inputs[0].shape, &shape);
    }
}

/// The request a JSON client sends for the tensor, its data written as the gateway writes its
/// own answers.
fn json_body(dtype: DataType, shape: &[usize], data: &[u8]) -> String {
    let mut values = Vec::new();
    crate::kserve::json::write(&mut values, dtype, data);
    let values = String::from_utf8(values).unwrap_or_default();
    format!(
        r#"{{"inputs":[{{"name":"x","datatype":"{}","shape":{:?},"data":{values}}}]}}"#,
        dtype.as_str(),
        shape
    )
}
