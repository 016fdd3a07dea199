//! Short JSON decimals read without the general float parser: the exact fast path for the
//! numbers tensors usually carry (a few significant digits, a small power of ten), and `None`
//! for everything else, which the caller then hands to `str::parse`.
//!
//! Why it is exact: when the significant digits fit the float's mantissa and the power of ten
//! is itself exactly representable, both operands are exact and IEEE 754 rounds the one
//! multiplication or division correctly (Clinger, 1990). That is the same result `str::parse`
//! gives, at a fraction of the cost on a hot path that reads every element of every JSON
//! tensor. An f32 quotient is taken as an f64 product with 10^-k instead of a division: a test
//! checks every such decimal that this rounds the same.

/// Exactly representable powers of ten: up to 10^10 in f32 (5^10 < 2^24), 10^22 in f64.
const POW10_F32: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
/// 10^-k in f64, each the nearest f64 (as the literal is).
const INV_POW10_F64: [f64; 11] = [
    1e0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10,
];
const POW10_F64: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Place values for the fraction digits `eight_digits` reads (a table: `pow` loops).
const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// value = (-1)^negative × digits × 10^exponent
struct Decimal {
    negative: bool,
    digits: u64,
    exponent: i32,
}

/// Reads the JSON number that starts at `bytes[start]`, stopping at the first byte that cannot
/// continue it; returns it and where it ends. `None` if no number starts there, or if it has
/// more than `max_digits` digits (leading zeros included, which only makes the test
/// conservative). Declining there keeps a miss cheap: clients often send floats in 17-digit
/// form, which only the general parser can round correctly.
fn scan(bytes: &[u8], start: usize, max_digits: usize) -> Option<(Decimal, usize)> {
    let mut at = start;
    let negative = bytes.get(at) == Some(&b'-');
    if negative {
        at += 1;
    }
    let mut digits: u64 = 0;
    let mut count = 0;
    let mut exponent: i32 = 0;
    // Appends a run of digits (at least one) to `digits`; how many it took.
    let mut run = |at: usize| -> Option<usize> {
        let taken = bytes[at.min(bytes.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        count += taken;
        if taken == 0 || count > max_digits {
            return None;
        }
        for &byte in &bytes[at..at + taken] {
            digits = digits * 10 + u64::from(byte - b'0');
        }
        Some(taken)
    };
    at += run(at)?;
    if bytes.get(at) == Some(&b'.') {
        let fraction = run(at + 1)?;
        exponent -= fraction as i32;
        at += 1 + fraction;
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1;
        let sign = match bytes.get(at) {
            Some(b'-') => {
                at += 1;
                -1
            }
            Some(b'+') => {
                at += 1;
                1
            }
            _ => 1,
        };
        let power_start = at;
        let mut power: i32 = 0;
        while let Some(&byte @ b'0'..=b'9') = bytes.get(at) {
            if at - power_start >= 4 {
                return None;
            }
            power = power * 10 + i32::from(byte - b'0');
            at += 1;
        }
        if at == power_start {
            return None;
        }
        exponent += sign * power;
    }
    Some((
        Decimal {
            negative,
            digits,
            exponent,
        },
        at,
    ))
}

/// A whole token as one number, or `None`.
fn split(token: &[u8], max_digits: usize) -> Option<Decimal> {
    match scan(token, 0, max_digits)? {
        (decimal, end) if end == token.len() => Some(decimal),
        _ => None,
    }
}

/// The decimal as an f32 when its digits fit the mantissa (2^24) and its power of ten is exact
/// in f32 (up to 10^10).
fn to_f32(d: Decimal) -> Option<f32> {
    if d.digits > 1 << 24 {
        return None;
    }
    let power = d.exponent.unsigned_abs() as usize;
    let magnitude = if d.exponent < 0 {
        // Through f64: the product of the digits and 10^-k, rounded once to f32, is the
        // correctly rounded quotient for every such decimal (`division_through_f64_is_exact`
        // checks them all), and a multiplication costs a fraction of a division.
        (d.digits as f64 * *INV_POW10_F64.get(power)?) as f32
    } else {
        d.digits as f32 * *POW10_F32.get(power)?
    };
    Some(if d.negative { -magnitude } else { magnitude })
}

/// The decimal as an f64 when its digits fit the mantissa (2^53) and its power of ten is exact
/// in f64 (up to 10^22).
fn to_f64(d: Decimal) -> Option<f64> {
    if d.digits > 1 << 53 {
        return None;
    }
    let power = *POW10_F64.get(d.exponent.unsigned_abs() as usize)?;
    let magnitude = if d.exponent < 0 {
        d.digits as f64 / power
    } else {
        d.digits as f64 * power
    };
    Some(if d.negative { -magnitude } else { magnitude })
}

/// The f32 of the number at `bytes[start]` and where it ends, when the fast path applies: a
/// tensor's elements are read in one pass, without first cutting out each token.
pub fn scan_f32(bytes: &[u8], start: usize) -> Option<(f32, usize)> {
    // 2^24 has 8 digits: no 9-digit mantissa can pass `to_f32`'s check.
    let (decimal, end) = match plain_decimal(bytes, start) {
        Some(found) => found,
        None => scan(bytes, start, 8)?,
    };
    Some((to_f32(decimal)?, end))
}

/// The usual tensor element, `-?digits(.digits)?` with at most 8 digits and no exponent, read
/// eight bytes at a time. `None` for anything else, including the last few bytes of the body;
/// `scan` then reads it byte by byte, so this only decides how fast, never what.
fn plain_decimal(bytes: &[u8], start: usize) -> Option<(Decimal, usize)> {
    let negative = bytes.get(start) == Some(&b'-');
    let integer_at = start + usize::from(negative);
    let (integer_digits, integer) = eight_digits(bytes, integer_at)?;
    if integer_digits == 0 || integer_digits == 8 {
        return None;
    }
    let mut at = integer_at + integer_digits;
    let mut decimal = Decimal {
        negative,
        digits: integer,
        exponent: 0,
    };
    if bytes.get(at) == Some(&b'.') {
        let (fraction_digits, fraction) = eight_digits(bytes, at + 1)?;
        if fraction_digits == 0 || integer_digits + fraction_digits > 8 {
            return None;
        }
        decimal.digits = integer * POW10_U64[fraction_digits] + fraction;
        decimal.exponent = -(fraction_digits as i32);
        at += 1 + fraction_digits;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        return None;
    }
    Some((decimal, at))
}

/// How many ASCII digits `bytes[at..]` starts with (up to 8) and their value, from one 8-byte
/// load; `None` if fewer than 8 bytes are left.
fn eight_digits(bytes: &[u8], at: usize) -> Option<(usize, u64)> {
    const LOW_SEVEN: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let chunk: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    // The first byte is the lowest: it holds the most significant digit.
    let word = u64::from_le_bytes(chunk);
    // Per byte, on seven bits so no carry crosses into the next byte: the high bit of
    // `from_zero` is set from '0' up, that of `past_nine` from ':' up; bytes over 0x7f are out.
    let seven = word & LOW_SEVEN;
    let from_zero = seven + 0x5050_5050_5050_5050;
    let past_nine = seven + 0x4646_4646_4646_4646;
    let digit = from_zero & !past_nine & !word & HIGH;
    let count = ((!digit & HIGH).trailing_zeros() / 8) as usize;
    if count == 0 {
        return Some((0, 0));
    }
    // Digit bytes are at least '0', so subtracting borrows only from the bytes after them,
    // which the shift then drops; the zero bytes shifted in read as leading zeros.
    let values = (word.wrapping_sub(0x3030_3030_3030_3030)) << (8 * (8 - count));
    // Pairs, then fours, then all eight, each step multiplying the upper part by its place.
    let pairs = ((values & 0x0f0f_0f0f_0f0f_0f0f).wrapping_mul(10 << 8 | 1)) >> 8;
    let fours = ((pairs & 0x00ff_00ff_00ff_00ff).wrapping_mul(100 << 16 | 1)) >> 16;
    let eight = ((fours & 0x0000_ffff_0000_ffff).wrapping_mul(10_000 << 32 | 1)) >> 32;
    Some((count, eight))
}

/// The f64 a JSON number denotes, when the fast path applies.
pub fn f64(token: &str) -> Option<f64> {
    // 2^53 has 16 digits.
    to_f64(split(token.as_bytes(), 16)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `to_f32` multiplies by 10^-k in f64 where the definition divides by 10^k in f32. Every
    /// digits (up to 2^24) and k (1 to 10) is checked in an optimised build; a debug build, a
    /// hundred times slower, checks the small digits and a stride through the rest.
    #[test]
    fn division_through_f64_is_exact() {
        let step = if cfg!(debug_assertions) { 997 } else { 1 };
        let digits = (0..1u64 << 16).chain(((1 << 16)..=1 << 24).step_by(step));
        for d in digits {
            for (k, power) in POW10_F32.iter().enumerate().skip(1) {
                let decimal = Decimal {
                    negative: false,
                    digits: d,
                    exponent: -(k as i32),
                };
                let divided = d as f32 / power;
                assert_eq!(
                    to_f32(decimal).map(f32::to_bits),
                    Some(divided.to_bits()),
                    "{d}e-{k}"
                );
            }
        }
    }

    /// A whole token as an f32, when the fast path applies (the reader itself goes through
    /// `scan_f32`, one element after another).
    fn f32(token: &str) -> Option<f32> {
        to_f32(split(token.as_bytes(), 8)?)
    }

    /// Whenever the fast path answers, its answer is bit for bit `str::parse`'s.
    fn agrees(token: &str) -> bool {
        let fast32 = f32(token);
        let fast64 = f64(token);
        let ok32 = fast32.is_none_or(|v| token.parse::<f32>().map(f32::to_bits) == Ok(v.to_bits()));
        let ok64 = fast64.is_none_or(|v| token.parse::<f64>().map(f64::to_bits) == Ok(v.to_bits()));
        // And the one-pass reader, eight bytes at a time, on the token inside a longer body.
        let body = format!("{token},1234567]");
        let one_pass = scan_f32(body.as_bytes(), 0)
            .filter(|&(_, end)| end == token.len())
            .map(|(v, _)| v.to_bits());
        let ok_one_pass = one_pass == fast32.map(f32::to_bits);
        ok32 && ok64 && ok_one_pass
    }

    #[test]
    fn the_fast_path_takes_short_decimals_and_declines_the_rest() {
        let cases: &[(&str, Option<f32>)] = &[
            ("0", Some(0.0)),
            ("-0", Some(-0.0)),
            ("16.0", Some(16.0)),
            ("0.578125", Some(0.578125)),
            ("-2.5", Some(-2.5)),
            ("1e2", Some(100.0)),
            ("1.5E-3", Some(0.0015)),
            ("25e+1", Some(250.0)),
            ("0.1", Some(0.1)),
            // Beyond the exact range: left to the general parser.
            ("16777217", None),
            ("1e11", None),
            ("1e-11", None),
            ("0.12345678901234567890", None),
            ("1e99999", None),
            // Not numbers at all.
            ("", None),
            ("-", None),
            ("1.", None),
            (".5", None),
            ("1e", None),
            ("1e+", None),
            ("true", None),
            ("null", None),
            ("nan", None),
            ("inf", None),
            ("1.5x", None),
        ];
        for (token, want) in cases {
            let got = f32(token);
            assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "{token:?}");
            assert!(agrees(token), "{token:?} disagrees with str::parse");
        }
        assert_eq!(f64("0.1"), Some(0.1));
        assert_eq!(f64("9007199254740993"), None);
        assert_eq!(f64("1e22"), Some(1e22));
        assert_eq!(f64("1e23"), None);
    }

    #[test]
    fn eight_bytes_at_a_time_reads_what_byte_by_byte_reads() {
        for (text, want) in [
            ("12345678", Some((8, 12_345_678))),
            ("1234567,", Some((7, 1_234_567))),
            ("0,000000", Some((1, 0))),
            ("09.25000", Some((2, 9))),
            (",1234567", Some((0, 0))),
            ("9\u{7f}999999", Some((1, 9))),
            ("1234567", None),
        ] {
            assert_eq!(eight_digits(text.as_bytes(), 0), want, "{text:?}");
        }
        // Every token, followed by every delimiter, near the end of the buffer or not: the
        // eight-byte reader and the byte reader agree on the value and on where it ends.
        let tokens = [
            "0",
            "-0",
            "7",
            "9.25",
            "-15.984375",
            "0.015625",
            "1234567",
            "12345678",
            "1.2345678",
            "12345.6789",
            "1e3",
            "2.5E-2",
            "0.00000001",
            "99999999",
            "-1.5",
            "10.0",
        ];
        for token in tokens {
            for tail in ["", ",", "]", " ,1.5", "]]       ", ",-2.25, 3.5, 4.75"] {
                let text = format!("{token}{tail}");
                let bytes = text.as_bytes();
                let slow = scan(bytes, 0, 8).and_then(|(d, end)| Some((to_f32(d)?, end)));
                let fast = scan_f32(bytes, 0);
                assert_eq!(
                    fast.map(|(v, end)| (v.to_bits(), end)),
                    slow.map(|(v, end)| (v.to_bits(), end)),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn random_decimals_agree_with_the_standard_parser_bit_for_bit() {
        // A fixed xorshift sequence: reproducible, no test-only dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let r = next();
            let digits = r % 10u64.pow(1 + (r >> 60) as u32 % 12);
            let text = digits.to_string();
            let point = (r >> 40) as usize % (text.len() + 1);
            let exponent = ((r >> 20) % 41) as i32 - 20;
            let sign = if r & 1 == 1 { "-" } else { "" };
            let mut token = format!("{sign}{}", &text[..point.max(1)]);
            if point > 0 && point < text.len() {
                token = format!("{token}.{}", &text[point..]);
            }
            if r & 2 == 2 {
                token = format!("{token}e{exponent}");
            }
            assert!(agrees(&token), "{token:?} disagrees with str::parse");
        }
        // Shortest forms of random floats, as serializers write them.
        for _ in 0..50_000 {
            let bits = next();
            let single = f32::from_bits(bits as u32);
            let double = f64::from_bits(bits);
            for token in [
                single.to_string(),
                double.to_string(),
                format!("{single:e}"),
            ] {
                assert!(agrees(&token), "{token:?} disagrees with str::parse");
            }
        }
    }
}
