//! JSON tensor data: numbers (flat or nested arrays) read straight into little-endian bytes,
//! and bytes written back out as JSON numbers, without building a JSON tree either way.

use super::decimal;
use crate::tensor::DataType;
use half::{bf16, f16};
use std::io::Write;

/// Reads every scalar in `json` (a JSON value already known to be well-formed) into the bytes
/// of `dtype`. Nesting is ignored: `[[1,2],[3]]` and `[1,2,3]` read the same, row-major.
/// Fails on the first element that is not a valid `dtype` value, or past `expected` elements.
pub fn parse(json: &str, dtype: DataType, expected: usize) -> Result<Vec<u8>, String> {
    let size = dtype
        .element_size()
        .ok_or_else(|| "BYTES (string) tensors are not supported yet".to_string())?;
    let mut out = Vec::with_capacity(expected * size);
    let bytes = json.as_bytes();
    let mut at = 0;
    let mut count = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'[' | b']' | b',' | b' ' | b'\n' | b'\r' | b'\t' => at += 1,
            b'"' => {
                return Err(format!(
                    "element {count} is a string; {dtype} needs numbers"
                ))
            }
            _ => {
                if count == expected {
                    return Err(format!("more than the {expected} elements the shape holds"));
                }
                // FP32, the common case, in one pass over the bytes; anything the fast path
                // declines is cut out as a token and read by the general code below.
                if dtype == DataType::Fp32 {
                    if let Some((value, end)) = fast_fp32(bytes, at) {
                        out.extend_from_slice(&value.to_le_bytes());
                        count += 1;
                        at = end;
                        continue;
                    }
                }
                let end = bytes[at..]
                    .iter()
                    .position(|&b| is_delimiter(b))
                    .map_or(bytes.len(), |p| at + p);
                let token = &json[at..end];
                push(&mut out, dtype, token)
                    .map_err(|why| format!("element {count} ({token}): {why}"))?;
                count += 1;
                at = end;
            }
        }
    }
    if count != expected {
        return Err(format!(
            "{count} elements for a shape that holds {expected}"
        ));
    }
    Ok(out)
}

/// The FP32 element at `bytes[at]` and where it ends, when the exact fast path reads it and
/// it ends where an element may (a delimiter or the end of the text); `None` leaves it to the
/// general parser.
pub(super) fn fast_fp32(bytes: &[u8], at: usize) -> Option<(f32, usize)> {
    let (value, end) = decimal::scan_f32(bytes, at)?;
    bytes
        .get(end)
        .is_none_or(|&b| is_delimiter(b))
        .then_some((value, end))
}

/// What ends a number in an array: the next element, the array's end, or whitespace.
fn is_delimiter(byte: u8) -> bool {
    matches!(byte, b',' | b']' | b' ' | b'\n' | b'\r' | b'\t')
}

/// JSON has no infinities, so a number that reads as one was too large for its type: answering
/// it would feed the model an infinity nobody sent (and write `null` back out).
fn finite<T: Into<f64> + Copy>(value: T, dtype: DataType) -> Result<T, String> {
    if value.into().is_finite() {
        Ok(value)
    } else {
        Err(format!("out of range for {dtype}"))
    }
}

/// Appends one element, read from its token as `dtype`.
pub(super) fn push(out: &mut Vec<u8>, dtype: DataType, token: &str) -> Result<(), String> {
    fn int<T: TryFrom<i128>>(token: &str, dtype: DataType) -> Result<T, String> {
        let value: i128 = token
            .parse()
            .map_err(|_| format!("not an integer, as {dtype} needs"))?;
        T::try_from(value).map_err(|_| format!("out of range for {dtype}"))
    }
    // Parsed straight into the target width: correctly rounded once (f64 then f32 can round
    // twice) and faster for FP32, the common case.
    fn float<T: std::str::FromStr>(token: &str) -> Result<T, String> {
        match token {
            "true" | "false" | "null" => Err("not a number".into()),
            _ => token.parse().map_err(|_| "not a number".to_string()),
        }
    }
    let double = |token: &str| match decimal::f64(token) {
        Some(value) => Ok(value),
        None => float::<f64>(token),
    };
    match dtype {
        DataType::Bool => out.push(match token {
            "true" | "1" => 1,
            "false" | "0" => 0,
            _ => return Err("not a boolean".into()),
        }),
        DataType::Uint8 => out.push(int::<u8>(token, dtype)?),
        DataType::Int8 => out.extend(int::<i8>(token, dtype)?.to_le_bytes()),
        DataType::Uint16 => out.extend(int::<u16>(token, dtype)?.to_le_bytes()),
        DataType::Int16 => out.extend(int::<i16>(token, dtype)?.to_le_bytes()),
        DataType::Uint32 => out.extend(int::<u32>(token, dtype)?.to_le_bytes()),
        DataType::Int32 => out.extend(int::<i32>(token, dtype)?.to_le_bytes()),
        DataType::Uint64 => out.extend(int::<u64>(token, dtype)?.to_le_bytes()),
        DataType::Int64 => out.extend(int::<i64>(token, dtype)?.to_le_bytes()),
        DataType::Fp16 => out.extend(finite(f16::from_f64(double(token)?), dtype)?.to_le_bytes()),
        DataType::Bf16 => out.extend(finite(bf16::from_f64(double(token)?), dtype)?.to_le_bytes()),
        // `parse` tried the fast path on every FP32 element before it got here.
        DataType::Fp32 => out.extend(finite(float::<f32>(token)?, dtype)?.to_le_bytes()),
        DataType::Fp64 => out.extend(finite(double(token)?, dtype)?.to_le_bytes()),
        DataType::Bytes => return Err("BYTES (string) tensors are not supported yet".into()),
    }
    Ok(())
}

/// Writes the elements of `data` as a flat JSON array. Non-finite floats become `null`, as
/// JSON has no spelling for them.
pub fn write(out: &mut Vec<u8>, dtype: DataType, data: &[u8]) {
    out.push(b'[');
    let size = dtype.element_size().unwrap_or(1);
    for (index, element) in data.chunks_exact(size).enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let _ = write_element(out, dtype, element);
    }
    out.push(b']');
}

fn write_element(out: &mut Vec<u8>, dtype: DataType, e: &[u8]) -> std::io::Result<()> {
    // serde_json writes floats in their shortest round-trip form and non-finite ones as null.
    fn float(out: &mut Vec<u8>, value: impl serde::Serialize) -> std::io::Result<()> {
        serde_json::to_writer(out, &value).map_err(std::io::Error::other)
    }
    let two = || [e[0], e[1]];
    let four = || [e[0], e[1], e[2], e[3]];
    let eight = || [e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]];
    match dtype {
        DataType::Bool => out.write_all(if e[0] != 0 { b"true" } else { b"false" }),
        DataType::Uint8 => write!(out, "{}", e[0]),
        DataType::Int8 => write!(out, "{}", e[0] as i8),
        DataType::Uint16 => write!(out, "{}", u16::from_le_bytes(two())),
        DataType::Int16 => write!(out, "{}", i16::from_le_bytes(two())),
        DataType::Uint32 => write!(out, "{}", u32::from_le_bytes(four())),
        DataType::Int32 => write!(out, "{}", i32::from_le_bytes(four())),
        DataType::Uint64 => write!(out, "{}", u64::from_le_bytes(eight())),
        DataType::Int64 => write!(out, "{}", i64::from_le_bytes(eight())),
        DataType::Fp16 => float(out, f16::from_le_bytes(two()).to_f32()),
        DataType::Bf16 => float(out, bf16::from_le_bytes(two()).to_f32()),
        DataType::Fp32 => float(out, f32::from_le_bytes(four())),
        DataType::Fp64 => float(out, f64::from_le_bytes(eight())),
        DataType::Bytes => out.write_all(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_into_little_endian_bytes() {
        let cases: &[(&str, DataType, usize, Result<Vec<u8>, &str>)] = &[
            ("[1, 2]", DataType::Uint8, 2, Ok(vec![1, 2])),
            ("[[1],[2]]", DataType::Int16, 2, Ok(vec![1, 0, 2, 0])),
            ("[-1]", DataType::Int8, 1, Ok(vec![255])),
            (
                "[1.5]",
                DataType::Fp32,
                1,
                Ok(1.5f32.to_le_bytes().to_vec()),
            ),
            (
                "[1e2]",
                DataType::Fp64,
                1,
                Ok(100f64.to_le_bytes().to_vec()),
            ),
            ("[true,false]", DataType::Bool, 2, Ok(vec![1, 0])),
            ("[1.0]", DataType::Fp16, 1, Ok(vec![0x00, 0x3c])),
            ("[300]", DataType::Uint8, 1, Err("out of range")),
            (
                "[1, 1e40]",
                DataType::Fp32,
                2,
                Err("element 1 (1e40): out of range for FP32"),
            ),
            ("[-1e39]", DataType::Fp32, 1, Err("out of range for FP32")),
            ("[70000]", DataType::Fp16, 1, Err("out of range for FP16")),
            ("[1e39]", DataType::Bf16, 1, Err("out of range for BF16")),
            ("[1e400]", DataType::Fp64, 1, Err("out of range for FP64")),
            (
                "[3.4e38]",
                DataType::Fp32,
                1,
                Ok(3.4e38f32.to_le_bytes().to_vec()),
            ),
            ("[1.5]", DataType::Int32, 1, Err("not an integer")),
            ("[\"a\"]", DataType::Fp32, 1, Err("is a string")),
            ("[1,2,3]", DataType::Fp32, 2, Err("more than the 2")),
            (
                "[1]",
                DataType::Fp32,
                2,
                Err("1 elements for a shape that holds 2"),
            ),
            ("[null]", DataType::Fp32, 1, Err("not a number")),
            ("[2]", DataType::Bool, 1, Err("not a boolean")),
        ];
        for (json, dtype, expected, want) in cases {
            let got = parse(json, *dtype, *expected);
            match want {
                Ok(bytes) => assert_eq!(got.as_ref(), Ok(bytes), "{json} as {dtype}"),
                Err(fragment) => {
                    let message = got.expect_err(json);
                    assert!(
                        message.contains(fragment),
                        "{json}: `{message}` lacks `{fragment}`"
                    );
                }
            }
        }
    }

    #[test]
    fn every_numeric_type_round_trips_through_json_text() {
        let samples: &[(DataType, &str)] = &[
            (DataType::Uint8, "[0,255]"),
            (DataType::Int8, "[-128,127]"),
            (DataType::Uint16, "[65535]"),
            (DataType::Int32, "[-2147483648,7]"),
            (DataType::Uint64, "[18446744073709551615]"),
            (DataType::Int64, "[-9223372036854775808]"),
            (DataType::Fp32, "[0.1,-2.5,3]"),
            (DataType::Fp64, "[0.1,1e-300]"),
            (DataType::Fp16, "[0.5,-2]"),
            (DataType::Bool, "[true,false]"),
        ];
        for (dtype, json) in samples {
            let count = json.matches(',').count() + 1;
            let bytes = parse(json, *dtype, count).unwrap();
            let mut text = Vec::new();
            write(&mut text, *dtype, &bytes);
            let again = parse(std::str::from_utf8(&text).unwrap(), *dtype, count).unwrap();
            assert_eq!(
                again,
                bytes,
                "{dtype}: {json} -> {}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn fp32_elements_read_as_the_standard_parser_reads_each_token() {
        // Short decimals take the one-pass path, long ones the general parser; both must agree
        // with `str::parse` whatever surrounds them.
        let tokens = [
            "1.5",
            "2e1",
            "-0.125",
            "0.12345678901234567",
            "16777217",
            "3",
            "-0",
            "1E-3",
            "9.25",
        ];
        let separators = [",", ", ", " ,\n", ",\t"];
        for (shift, separator) in separators.iter().enumerate() {
            let mut rotated = tokens.to_vec();
            rotated.rotate_left(shift);
            let json = format!("[ [{}] ]", rotated.join(separator));
            let want: Vec<u8> = rotated
                .iter()
                .flat_map(|t| t.parse::<f32>().unwrap().to_le_bytes())
                .collect();
            assert_eq!(
                parse(&json, DataType::Fp32, rotated.len()),
                Ok(want),
                "{json}"
            );
        }
        for bad in ["[1.5x]", "[--1]", "[1e]", "[1.5.5]"] {
            assert!(parse(bad, DataType::Fp32, 1).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn non_finite_floats_are_written_as_null() {
        let mut text = Vec::new();
        write(&mut text, DataType::Fp32, &f32::NAN.to_le_bytes());
        assert_eq!(text, b"[null]");
    }
}
