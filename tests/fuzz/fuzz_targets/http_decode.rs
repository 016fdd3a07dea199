//! Any body, with or without a binary-extension header length: the HTTP decoder answers, never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first two bytes choose a header length (0xFFFF: none); the rest is the body.
    let (length, body) = match input {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => (u16::MAX, input),
    };
    let header_length = (length != u16::MAX).then_some(usize::from(length));
    let body = bytes::Bytes::copy_from_slice(body);
    let _ = tollgate::api::http::infer::decode("m", None, &body, header_length);
});
