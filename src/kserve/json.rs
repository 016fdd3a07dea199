//! JSON tensor data: numbers (flat or nested arrays) read straight into the little-endian bytes
//! of their datatype, and bytes written back out as JSON numbers, without a JSON tree either
//! way. Every float is read by `lexical-parse-float`, correctly rounded into its own width
//! (FP16 and BF16 included, where reading through f64 would round twice). BYTES elements are
//! JSON strings (`strings`).

mod strings;

use crate::tensor::DataType;
use half::{bf16, f16};
use lexical_parse_float::FromLexical;
use std::io::Write;
pub use strings::is_text;

/// Reads every scalar in `json` (a JSON value already known to be well-formed) into the bytes
/// of `dtype`. Nesting is ignored: `[[1,2],[3]]` and `[1,2,3]` read the same, row-major.
/// Fails on the first element that is not a valid `dtype` value, or past `expected` elements.
pub fn parse(json: &str, dtype: DataType, expected: usize) -> Result<Vec<u8>, String> {
    let Some(size) = dtype.element_size() else {
        return strings::parse(json, expected);
    };
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

/// What ends a number in an array: the next element, the array's end, or whitespace.
fn is_delimiter(byte: u8) -> bool {
    matches!(byte, b',' | b']' | b' ' | b'\n' | b'\r' | b'\t')
}

/// The end of the JSON number at `bytes[at]`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
/// lexical also reads forms JSON does not have (`NaN`, `inf`, `.5`, `+1`), which must not become
/// tensor values, so every number is delimited by JSON's grammar first.
pub fn number_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    let digits = |at: &mut usize| {
        let start = *at;
        while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        *at > start
    };
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    match bytes.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => {
            digits(&mut at);
        }
        _ => return None,
    }
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        if !digits(&mut at) {
            return None;
        }
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        if !digits(&mut at) {
            return None;
        }
    }
    Some(at)
}

fn is_json_number(token: &[u8]) -> bool {
    number_end(token, 0) == Some(token.len())
}

/// Appends one element, read from its token as `dtype`.
pub fn push(out: &mut Vec<u8>, dtype: DataType, token: &str) -> Result<(), String> {
    fn int<T: TryFrom<i128>>(token: &str, dtype: DataType) -> Result<T, String> {
        let value: i128 = token
            .parse()
            .map_err(|_| format!("not an integer, as {dtype} needs"))?;
        T::try_from(value).map_err(|_| format!("out of range for {dtype}"))
    }
    fn float<T: FromLexical>(token: &str) -> Result<T, String> {
        if !is_json_number(token.as_bytes()) {
            return Err("not a number".into());
        }
        T::from_lexical(token.as_bytes()).map_err(|_| "not a number".to_string())
    }
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
        DataType::Fp16 => {
            let value = f16::from_bits(half_width(token, float(token)?, Half::F16));
            out.extend(finite(value, dtype)?.to_le_bytes())
        }
        DataType::Bf16 => {
            let value = bf16::from_bits(half_width(token, float(token)?, Half::Bf16));
            out.extend(finite(value, dtype)?.to_le_bytes())
        }
        DataType::Fp32 => out.extend(finite(float::<f32>(token)?, dtype)?.to_le_bytes()),
        DataType::Fp64 => out.extend(finite(float::<f64>(token)?, dtype)?.to_le_bytes()),
        DataType::Bytes => return Err("a number where BYTES needs a string".into()),
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Half {
    F16,
    Bf16,
}

impl Half {
    /// A first guess, at most one step off: `half` converts f64 through f32 on CPUs with F16C
    /// (rounding twice) and its software path drops the low half of the f64's bits.
    fn guess(self, value: f64) -> u16 {
        match self {
            Half::F16 => f16::from_f64_const(value).to_bits(),
            Half::Bf16 => bf16::from_f64_const(value).to_bits(),
        }
    }

    fn to_f64(self, bits: u16) -> f64 {
        match self {
            Half::F16 => f16::from_bits(bits).to_f64(),
            Half::Bf16 => bf16::from_bits(bits).to_f64(),
        }
    }
}

/// The 16-bit float nearest to `token`, rounded once (ties to even). `wide` is the token read
/// as f64, correctly rounded; the nearest 16-bit value to it is one of the guess and its two
/// neighbours (adjacent magnitudes are adjacent bit patterns). Only when `wide` is exactly a
/// midpoint can the text itself lie on either side of it, since no f64 lies between the text
/// and `wide`; the text, compared with that midpoint, then decides.
fn half_width(token: &str, wide: f64, half: Half) -> u16 {
    const SIGN: u16 = 0x8000;
    let sign = if wide.is_sign_negative() { SIGN } else { 0 };
    let magnitude = wide.abs();
    let guess = half.guess(magnitude) & !SIGN;
    let candidates = [guess.saturating_sub(1), guess, guess.saturating_add(1)];
    // Infinity stands one step past the largest value, as if the exponent went on: a value
    // past the midpoint between the two rounds up to it (IEEE 754's overflow rule).
    let value_of = |bits: u16| {
        let value = half.to_f64(bits);
        if value.is_infinite() && bits > 1 {
            2.0 * half.to_f64(bits - 1) - half.to_f64(bits - 2)
        } else {
            value
        }
    };
    let distance = |bits: u16| {
        let value = value_of(bits);
        if value.is_finite() {
            (magnitude - value).abs()
        } else {
            f64::INFINITY
        }
    };
    let mut best = guess;
    for &candidate in &candidates {
        if distance(candidate) < distance(best) {
            best = candidate;
        }
    }
    if half.to_f64(best).is_nan() || distance(best) == 0.0 {
        return best | sign;
    }
    // The neighbour on the other side of `wide`, at the same distance only at a midpoint.
    let other = if value_of(best) < magnitude {
        best.saturating_add(1)
    } else {
        best.saturating_sub(1)
    };
    if other == best || distance(other) != distance(best) {
        return best | sign;
    }
    let (low, high) = (best.min(other), best.max(other));
    let chosen = match compare_decimal(token.trim_start_matches('-'), magnitude) {
        std::cmp::Ordering::Greater => high,
        std::cmp::Ordering::Less => low,
        std::cmp::Ordering::Equal if low.is_multiple_of(2) => low,
        std::cmp::Ordering::Equal => high,
    };
    chosen | sign
}

/// Compares a non-negative JSON number with a finite non-negative f64, exactly. The f64 is
/// written out in full (every binary fraction has a finite decimal one; 16-bit midpoints have
/// at most 134 fractional digits), and both are compared as digit strings.
fn compare_decimal(token: &str, value: f64) -> std::cmp::Ordering {
    let exact = format!("{value:.150}");
    let (a, b) = (decimal_digits(token), decimal_digits(&exact));
    if a.0.is_empty() || b.0.is_empty() {
        return (!a.0.is_empty()).cmp(&!b.0.is_empty());
    }
    a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0))
}

/// A decimal number's significant digits (no leading or trailing zeros) and where its point
/// sits relative to them: the value is 0.DIGITS × 10^point. Empty digits mean zero.
fn decimal_digits(text: &str) -> (Vec<u8>, i64) {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: Vec<u8> = whole.bytes().chain(fraction.bytes()).collect();
    let mut point = whole.len() as i64 + exponent;
    let leading = digits.iter().take_while(|&&d| d == b'0').count();
    digits.drain(..leading);
    point -= leading as i64;
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    (digits, point)
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

/// Writes the elements of `data` as a flat JSON array. Non-finite floats become `null`, as
/// JSON has no spelling for them; BYTES elements become strings, with any bytes that are not
/// UTF-8 replaced (callers that must not lose them ask `is_text` first).
pub fn write(out: &mut Vec<u8>, dtype: DataType, data: &[u8]) {
    if dtype == DataType::Bytes {
        return strings::write(out, data);
    }
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
        // (JSON data, datatype, elements, the bytes or a fragment of the error)
        type Case<'a> = (&'a str, DataType, usize, Result<Vec<u8>, &'a str>);
        let cases: &[Case] = &[
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
            ("[1e3]", DataType::Int32, 1, Err("not an integer")),
            ("[NaN]", DataType::Fp32, 1, Err("not a number")),
            ("[Infinity]", DataType::Fp64, 1, Err("not a number")),
            ("[.5]", DataType::Fp32, 1, Err("not a number")),
            ("[5.]", DataType::Fp32, 1, Err("not a number")),
            ("[+1]", DataType::Fp32, 1, Err("not a number")),
            ("[01]", DataType::Fp32, 1, Err("not a number")),
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
        // Correctly rounded, as `str::parse` reads each token, whatever surrounds it.
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

    /// Half-precision values are rounded once, from the decimal text (going through f32 or f64
    /// can round twice): each case sits just above or below the midpoint of two FP16 values.
    #[test]
    fn half_precision_is_rounded_once_from_the_text() {
        let cases: &[(&str, DataType, f64)] = &[
            // 1 + 2^-11 is the midpoint of 1 and 1 + 2^-10: ties go to even (1.0).
            ("1.00048828125", DataType::Fp16, 1.0),
            ("1.00048828125000001", DataType::Fp16, 1.0009765625),
            ("1.00048828124999999", DataType::Fp16, 1.0),
            ("65504", DataType::Fp16, 65504.0),
            // Eight digits are enough to fool a reading through f32.
            ("1.0004883", DataType::Fp16, 1.0009765625),
            ("-1.00048828125000001", DataType::Fp16, -1.0009765625),
            ("1.00048828125e0", DataType::Fp16, 1.0),
            ("100048828125000001e-17", DataType::Fp16, 1.0009765625),
            // 1.5 × 2^-24 is the midpoint of the two smallest subnormals: ties to even.
            (
                "8.940696716308594e-8",
                DataType::Fp16,
                1.1920928955078125e-7,
            ),
            // BF16: 1 + 2^-8 is the midpoint of 1 and 1 + 2^-7.
            ("1.00390625", DataType::Bf16, 1.0),
            ("1.00390625000000001", DataType::Bf16, 1.0078125),
        ];
        for (token, dtype, want) in cases {
            let bytes = parse(&format!("[{token}]"), *dtype, 1).unwrap();
            let got = match dtype {
                DataType::Fp16 => f16::from_le_bytes([bytes[0], bytes[1]]).to_f64(),
                _ => bf16::from_le_bytes([bytes[0], bytes[1]]).to_f64(),
            };
            assert_eq!(got, *want, "{token} as {dtype}");
        }
    }

    /// Every boundary between two adjacent FP16 values (and a stride through BF16's): text just
    /// below a midpoint rounds down, just above rounds up, and the midpoint itself to even.
    #[test]
    fn every_half_precision_boundary_rounds_the_right_way() {
        for (half, dtype, step) in [
            (Half::F16, DataType::Fp16, 1),
            (Half::Bf16, DataType::Bf16, 7),
        ] {
            let mut low = 0u16;
            while half.to_f64(low + 1).is_finite() {
                let (a, b) = (half.to_f64(low), half.to_f64(low + 1));
                let midpoint = (a + b) / 2.0;
                let even = if low.is_multiple_of(2) { low } else { low + 1 };
                for (token, want) in [
                    (format!("{:e}", midpoint - (b - a) * 1e-9), low),
                    (format!("{:e}", midpoint + (b - a) * 1e-9), low + 1),
                    (format!("{midpoint:.150}"), even),
                ] {
                    let bytes = parse(&format!("[{token}]"), dtype, 1).unwrap();
                    assert_eq!(
                        u16::from_le_bytes([bytes[0], bytes[1]]),
                        want,
                        "{token} as {dtype}"
                    );
                }
                low += step;
            }
        }
    }

    #[test]
    fn non_finite_floats_are_written_as_null() {
        let mut text = Vec::new();
        write(&mut text, DataType::Fp32, &f32::NAN.to_le_bytes());
        assert_eq!(text, b"[null]");
    }
}
