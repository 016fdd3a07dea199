//! BYTES as JSON: each element a JSON string (flat or nested arrays), read into the serialized
//! form of `tensor::strings` and written back from it.

use crate::tensor::{strings, DataType};

/// BYTES data: strings, flat or nested, each element's UTF-8 bytes as sent (escapes resolved).
pub(super) fn parse(json: &str, expected: usize) -> Result<Vec<u8>, String> {
    fn walk(
        value: &serde_json::Value,
        out: &mut Vec<u8>,
        count: &mut usize,
        expected: usize,
    ) -> Result<(), String> {
        match value {
            serde_json::Value::Array(items) => items
                .iter()
                .try_for_each(|item| walk(item, out, count, expected)),
            serde_json::Value::String(text) => {
                if *count == expected {
                    return Err(format!("more than the {expected} elements the shape holds"));
                }
                strings::push(out, text.as_bytes())?;
                *count += 1;
                Ok(())
            }
            other => Err(format!(
                "element {count} ({other}) is not a string; BYTES needs strings"
            )),
        }
    }
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let mut out = Vec::with_capacity(json.len() + expected * strings::LENGTH_PREFIX);
    let mut count = 0;
    walk(&value, &mut out, &mut count, expected)?;
    if count != expected {
        return Err(format!(
            "{count} elements for a shape that holds {expected}"
        ));
    }
    Ok(out)
}

/// Whether `data` can be written as JSON without loss: numbers always, BYTES when every
/// element is UTF-8 (JSON strings cannot hold other bytes).
pub fn is_text(dtype: DataType, data: &[u8]) -> bool {
    dtype != DataType::Bytes
        || strings::elements(data).all(|e| e.is_ok_and(|e| std::str::from_utf8(e).is_ok()))
}

pub(super) fn write(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'[');
    for (index, element) in strings::elements(data).map_while(Result::ok).enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(element));
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_read_into_their_serialized_form_and_back() {
        // (JSON data, elements, the words or a fragment of the error)
        type Case<'a> = (&'a str, usize, Result<&'a [&'a str], &'a str>);
        let cases: &[Case] = &[
            (r#"["a", "bé"]"#, 2, Ok(&["a", "bé"])),
            (r#"[["x"], ["\u00e9\n"]]"#, 2, Ok(&["x", "é\n"])),
            (r#"[""]"#, 1, Ok(&[""])),
            ("[1]", 1, Err("element 0 (1) is not a string")),
            (r#"["a","b"]"#, 1, Err("more than the 1")),
            (r#"["a"]"#, 2, Err("1 elements for a shape that holds 2")),
            (r#"["a"#, 1, Err("not JSON")),
        ];
        for (json, expected, want) in cases {
            let got = crate::kserve::json::parse(json, DataType::Bytes, *expected);
            match want {
                Ok(words) => {
                    let bytes = got.unwrap();
                    let encoded = strings::encode(words.iter().map(|w| w.as_bytes())).unwrap();
                    assert_eq!(bytes, encoded, "{json}");
                    let mut text = Vec::new();
                    crate::kserve::json::write(&mut text, DataType::Bytes, &bytes);
                    let again = crate::kserve::json::parse(
                        std::str::from_utf8(&text).unwrap(),
                        DataType::Bytes,
                        *expected,
                    );
                    assert_eq!(again.as_ref(), Ok(&bytes), "{json}");
                }
                Err(fragment) => {
                    let message = got.unwrap_err();
                    assert!(
                        message.contains(fragment),
                        "{json}: `{message}` lacks `{fragment}`"
                    );
                }
            }
        }
        let binary = strings::encode([&b"\xff"[..]]).unwrap();
        assert!(!is_text(DataType::Bytes, &binary));
        assert!(is_text(
            DataType::Bytes,
            &strings::encode([&b"ok"[..]]).unwrap()
        ));
        assert!(is_text(DataType::Fp32, &[0xff; 4]));
    }
}
