//! BYTES tensors in the protocol's own serialized form, which is how the core holds them: each
//! element is a 4-byte little-endian length followed by that many bytes, elements one after
//! another in row-major order. It is what the binary extension and gRPC raw contents carry, so
//! those pass through untouched, batches concatenate, and a cache key over it is unambiguous.

/// Bytes before each element's own.
pub const LENGTH_PREFIX: usize = 4;

/// The elements of serialized BYTES data, each checked against the data's end.
pub fn elements(data: &[u8]) -> Elements<'_> {
    Elements {
        rest: data,
        index: 0,
    }
}

pub struct Elements<'a> {
    rest: &'a [u8],
    index: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<&'a [u8], String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let index = self.index;
        let rest = std::mem::take(&mut self.rest);
        let Some((prefix, body)) = rest.split_first_chunk::<LENGTH_PREFIX>() else {
            return Some(Err(format!(
                "element {index}: {} bytes remain where a 4-byte length was due",
                rest.len()
            )));
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        if len > body.len() {
            return Some(Err(format!(
                "element {index}: its length says {len} bytes, but only {} remain",
                body.len()
            )));
        }
        let (element, rest) = body.split_at(len);
        self.rest = rest;
        self.index += 1;
        Some(Ok(element))
    }
}

/// Appends one element with its length.
pub fn push(out: &mut Vec<u8>, element: &[u8]) -> Result<(), String> {
    let len = u32::try_from(element.len()).map_err(|_| {
        format!(
            "a {}-byte element does not fit a BYTES length",
            element.len()
        )
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(element);
    Ok(())
}

/// Serializes whole elements.
pub fn encode<'a>(elements: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for element in elements {
        push(&mut out, element)?;
    }
    Ok(out)
}

/// Checks that `data` holds exactly `count` whole elements, none longer than `max_element`.
pub fn check(data: &[u8], count: usize, max_element: usize) -> Result<(), String> {
    let mut seen = 0;
    for element in elements(data) {
        let element = element?;
        if seen == count {
            return Err(format!("more than the {count} elements the shape holds"));
        }
        if element.len() > max_element {
            return Err(format!(
                "element {seen} is {} bytes, over the limit of {max_element} (server.max_element_bytes)",
                element.len()
            ));
        }
        seen += 1;
    }
    if seen != count {
        return Err(format!("{seen} elements for a shape that holds {count}"));
    }
    Ok(())
}

/// Where each element starts, and the end of the last: `count + 1` offsets.
pub fn offsets(data: &[u8]) -> Result<Vec<usize>, String> {
    let mut offsets = vec![0];
    let mut at = 0;
    for element in elements(data) {
        at += LENGTH_PREFIX + element?.len();
        offsets.push(at);
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes at all: framing is judged without a panic, and whatever holds whole
        /// elements re-encodes to itself.
        #[test]
        fn any_bytes_are_judged_without_a_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let read: Result<Vec<&[u8]>, String> = elements(&data).collect();
            prop_assert_eq!(offsets(&data).is_ok(), read.is_ok());
            if let Ok(read) = read {
                prop_assert_eq!(check(&data, read.len(), usize::MAX), Ok(()));
                prop_assert_eq!(encode(read).unwrap(), data);
            }
        }
    }

    #[test]
    fn elements_round_trip_and_bad_framing_is_named() {
        let data = encode([&b"ab"[..], b"", b"\xff\x00z"]).unwrap();
        assert_eq!(
            data,
            [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0, 3, 0, 0, 0, 0xff, 0, b'z']
        );
        let read: Vec<&[u8]> = elements(&data).collect::<Result<_, _>>().unwrap();
        assert_eq!(read, [&b"ab"[..], b"", b"\xff\x00z"]);
        assert_eq!(offsets(&data).unwrap(), [0, 6, 10, 17]);
        // (data, count, limit, an error fragment or none)
        let cases: &[(&[u8], usize, usize, Option<&str>)] = &[
            (&data, 3, 3, None),
            (
                &data,
                3,
                2,
                Some("element 2 is 3 bytes, over the limit of 2"),
            ),
            (&data, 2, 9, Some("more than the 2 elements")),
            (&data, 4, 9, Some("3 elements for a shape that holds 4")),
            (
                &data[..5],
                1,
                9,
                Some("element 0: its length says 2 bytes, but only 1 remain"),
            ),
            (
                &data[..8],
                2,
                9,
                Some("element 1: 2 bytes remain where a 4-byte length was due"),
            ),
            (&[], 0, 9, None),
        ];
        for (data, count, limit, want) in cases {
            let got = check(data, *count, *limit);
            match want {
                None => assert_eq!(got, Ok(()), "{data:?}"),
                Some(fragment) => {
                    let message = got.unwrap_err();
                    assert!(message.contains(fragment), "`{message}` lacks `{fragment}`");
                }
            }
        }
    }
}
