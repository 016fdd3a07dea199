//! Short JSON decimals read without the general float parser: the exact fast path for the
//! numbers tensors usually carry (a few significant digits, a small power of ten), and `None`
//! for everything else, which the caller then hands to `str::parse`.
//!
//! Why it is exact: when the significant digits fit the float's mantissa and the power of ten
//! is itself exactly representable, both operands are exact and IEEE 754 rounds the one
//! multiplication or division correctly (Clinger, 1990). That is the same result `str::parse`
//! gives, at a fraction of the cost on a hot path that reads every element of every JSON
//! tensor.

/// Exactly representable powers of ten: up to 10^10 in f32 (5^10 < 2^24), 10^22 in f64.
const POW10_F32: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
const POW10_F64: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
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
/// conservative). Stopping there keeps a miss cheap: clients often send floats in 17-digit
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
    let integer_start = at;
    while let Some(&byte @ b'0'..=b'9') = bytes.get(at) {
        count += 1;
        if count > max_digits {
            return None;
        }
        digits = digits * 10 + u64::from(byte - b'0');
        at += 1;
    }
    if at == integer_start {
        return None;
    }
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let fraction_start = at;
        while let Some(&byte @ b'0'..=b'9') = bytes.get(at) {
            count += 1;
            if count > max_digits {
                return None;
            }
            digits = digits * 10 + u64::from(byte - b'0');
            exponent -= 1;
            at += 1;
        }
        if at == fraction_start {
            return None;
        }
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

fn to_f32(d: Decimal) -> Option<f32> {
    if d.digits > 1 << 24 {
        return None;
    }
    let power = *POW10_F32.get(d.exponent.unsigned_abs() as usize)?;
    let magnitude = if d.exponent < 0 {
        d.digits as f32 / power
    } else {
        d.digits as f32 * power
    };
    Some(if d.negative { -magnitude } else { magnitude })
}

/// The f32 of the number at `bytes[start]` and where it ends, when the fast path applies: a
/// tensor's elements are read in one pass, without first cutting out each token.
pub fn scan_f32(bytes: &[u8], start: usize) -> Option<(f32, usize)> {
    // 2^24 has 8 digits: no 9-digit mantissa can pass `to_f32`'s check.
    let (decimal, end) = scan(bytes, start, 8)?;
    Some((to_f32(decimal)?, end))
}

/// The f32 a JSON number denotes, when the fast path applies.
pub fn f32(token: &str) -> Option<f32> {
    to_f32(split(token.as_bytes(), 8)?)
}

/// The f64 a JSON number denotes, when the fast path applies.
pub fn f64(token: &str) -> Option<f64> {
    // 2^53 has 16 digits.
    let d = split(token.as_bytes(), 16)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whenever the fast path answers, its answer is bit for bit `str::parse`'s.
    fn agrees(token: &str) -> bool {
        let fast32 = f32(token);
        let fast64 = f64(token);
        let ok32 = fast32.is_none_or(|v| token.parse::<f32>().map(f32::to_bits) == Ok(v.to_bits()));
        let ok64 = fast64.is_none_or(|v| token.parse::<f64>().map(f64::to_bits) == Ok(v.to_bits()));
        ok32 && ok64
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
