//! KServe V2 datatypes: converting generated values to JSON or raw little-endian bytes, and decoding outputs for verification.

use anyhow::{bail, Result};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    Bytes,
}

impl DType {
    pub fn parse(s: &str) -> Result<DType> {
        Ok(match s {
            "BOOL" => DType::Bool,
            "UINT8" => DType::U8,
            "UINT16" => DType::U16,
            "UINT32" => DType::U32,
            "UINT64" => DType::U64,
            "INT8" => DType::I8,
            "INT16" => DType::I16,
            "INT32" => DType::I32,
            "INT64" => DType::I64,
            "FP16" => DType::F16,
            "FP32" => DType::F32,
            "FP64" => DType::F64,
            "BYTES" => DType::Bytes,
            other => bail!("unsupported datatype {other:?}"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::U8 => "UINT8",
            DType::U16 => "UINT16",
            DType::U32 => "UINT32",
            DType::U64 => "UINT64",
            DType::I8 => "INT8",
            DType::I16 => "INT16",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::F16 => "FP16",
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::Bytes => "BYTES",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::F32 | DType::F64)
    }
}

/// Element values before they are shaped into a datatype; ints stay ints so INT64 from .npy keeps full precision.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Float(Vec<f64>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Float(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::Bool(v) => v.len(),
        }
    }

    fn as_f64(&self, i: usize) -> f64 {
        match self {
            Values::Float(v) => v[i],
            Values::Int(v) => v[i] as f64,
            Values::Bool(v) => f64::from(u8::from(v[i])),
        }
    }

    fn as_i64(&self, i: usize) -> i64 {
        match self {
            Values::Float(v) => v[i] as i64,
            Values::Int(v) => v[i],
            Values::Bool(v) => i64::from(v[i]),
        }
    }

    fn as_bool(&self, i: usize) -> bool {
        match self {
            Values::Float(v) => v[i] != 0.0,
            Values::Int(v) => v[i] != 0,
            Values::Bool(v) => v[i],
        }
    }
}

/// Raw row-major little-endian bytes, the layout shared by the binary HTTP extension and gRPC raw contents.
pub fn to_raw(dtype: DType, values: &Values) -> Result<Vec<u8>> {
    let n = values.len();
    let mut out = Vec::with_capacity(n * 8);
    for i in 0..n {
        match dtype {
            DType::Bool => out.push(u8::from(values.as_bool(i))),
            DType::U8 => out.push(values.as_i64(i) as u8),
            DType::U16 => out.extend((values.as_i64(i) as u16).to_le_bytes()),
            DType::U32 => out.extend((values.as_i64(i) as u32).to_le_bytes()),
            DType::U64 => out.extend((values.as_i64(i) as u64).to_le_bytes()),
            DType::I8 => out.extend((values.as_i64(i) as i8).to_le_bytes()),
            DType::I16 => out.extend((values.as_i64(i) as i16).to_le_bytes()),
            DType::I32 => out.extend((values.as_i64(i) as i32).to_le_bytes()),
            DType::I64 => out.extend(values.as_i64(i).to_le_bytes()),
            DType::F16 => out.extend(f32_to_f16(values.as_f64(i) as f32).to_le_bytes()),
            DType::F32 => out.extend((values.as_f64(i) as f32).to_le_bytes()),
            DType::F64 => out.extend(values.as_f64(i).to_le_bytes()),
            DType::Bytes => bail!("BYTES inputs are not supported by the generator"),
        }
    }
    Ok(out)
}

/// JSON `data` array holding exactly the values the raw encoding carries, so both protocols hit the same cache key.
pub fn to_json(dtype: DType, values: &Values) -> Result<Value> {
    let n = values.len();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let v = match dtype {
            DType::Bool => Value::Bool(values.as_bool(i)),
            DType::F16 => json_f64(f16_to_f32(f32_to_f16(values.as_f64(i) as f32)) as f64),
            DType::F32 => json_f64((values.as_f64(i) as f32) as f64),
            DType::F64 => json_f64(values.as_f64(i)),
            DType::U64 => Value::from(values.as_i64(i) as u64),
            DType::Bytes => bail!("BYTES inputs are not supported by the generator"),
            // Narrow ints go through the same wrapping cast as the raw path.
            _ => Value::from(narrow_int(dtype, values.as_i64(i))),
        };
        out.push(v);
    }
    Ok(Value::Array(out))
}

fn narrow_int(dtype: DType, v: i64) -> i64 {
    match dtype {
        DType::U8 => i64::from(v as u8),
        DType::U16 => i64::from(v as u16),
        DType::U32 => i64::from(v as u32),
        DType::I8 => i64::from(v as i8),
        DType::I16 => i64::from(v as i16),
        DType::I32 => i64::from(v as i32),
        _ => v,
    }
}

fn json_f64(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// One output element as seen by the verifier.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Num(f64),
    Str(String),
}

/// Decodes a raw output buffer; returns an error string when the length does not fit the datatype.
pub fn decode_raw(dtype: DType, raw: &[u8]) -> Result<Vec<Scalar>, String> {
    if dtype == DType::Bytes {
        return decode_bytes_elements(raw);
    }
    let size = match dtype {
        DType::Bool | DType::U8 | DType::I8 => 1,
        DType::U16 | DType::I16 | DType::F16 => 2,
        DType::U32 | DType::I32 | DType::F32 => 4,
        _ => 8,
    };
    if !raw.len().is_multiple_of(size) {
        return Err(format!(
            "{} bytes is not a whole number of {}",
            raw.len(),
            dtype.name()
        ));
    }
    let out = raw
        .chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(c);
            let num = match dtype {
                DType::Bool | DType::U8 => f64::from(b[0]),
                DType::I8 => f64::from(b[0] as i8),
                DType::U16 => f64::from(u16::from_le_bytes([b[0], b[1]])),
                DType::I16 => f64::from(i16::from_le_bytes([b[0], b[1]])),
                DType::F16 => f64::from(f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
                DType::U32 => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                DType::I32 => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                DType::F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                DType::U64 => u64::from_le_bytes(b) as f64,
                DType::I64 => i64::from_le_bytes(b) as f64,
                _ => f64::from_le_bytes(b),
            };
            Scalar::Num(num)
        })
        .collect();
    Ok(out)
}

/// BYTES tensors are a sequence of 4-byte little-endian lengths each followed by that many bytes.
fn decode_bytes_elements(mut raw: &[u8]) -> Result<Vec<Scalar>, String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        if raw.len() < 4 {
            return Err("truncated BYTES length prefix".into());
        }
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        let rest = &raw[4..];
        if rest.len() < len {
            return Err("truncated BYTES element".into());
        }
        out.push(Scalar::Str(
            String::from_utf8_lossy(&rest[..len]).into_owned(),
        ));
        raw = &rest[len..];
    }
    Ok(out)
}

/// Flattens a JSON `data` field (tolerating nesting, which some servers emit).
pub fn decode_json(data: &Value, out: &mut Vec<Scalar>) -> Result<(), String> {
    match data {
        Value::Array(items) => {
            for item in items {
                decode_json(item, out)?;
            }
        }
        Value::Number(n) => out.push(Scalar::Num(n.as_f64().unwrap_or(f64::NAN))),
        Value::Bool(b) => out.push(Scalar::Num(f64::from(u8::from(*b)))),
        Value::String(s) => out.push(Scalar::Str(s.clone())),
        other => return Err(format!("unexpected output element {other}")),
    }
    Ok(())
}

/// IEEE 754 binary16 from binary32 with round-to-nearest-even (no `half` dependency for two small functions).
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rem = m & ((1u32 << shift) - 1);
        let mut k = m >> shift;
        if rem > half || (rem == half && k & 1 == 1) {
            k += 1;
        }
        return sign | k as u16;
    }
    let mut h = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    // A carry out of the mantissa correctly bumps the exponent (possibly to infinity).
    if rem > 0x1000 || (rem == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

pub fn f16_to_f32(h: u16) -> f32 {
    let negative = h & 0x8000 != 0;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let magnitude = match exp {
        0 => man as f32 * (1.0 / 16_777_216.0),
        0x1f => f32::from_bits(0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(((exp + 127 - 15) << 23) | (man << 13)),
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trips_representable_values() {
        for v in [
            0.0f32,
            1.0,
            -2.5,
            15.984375,
            65504.0,
            6.1035156e-5,
            5.9604645e-8,
        ] {
            assert_eq!(f16_to_f32(f32_to_f16(v)), v, "{v}");
        }
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(1e6), 0x7c00);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
    }

    #[test]
    fn raw_and_json_agree() {
        let vals = Values::Float(vec![0.5, 3.25, 15.0]);
        let raw = to_raw(DType::F32, &vals).unwrap();
        assert_eq!(raw.len(), 12);
        let back = decode_raw(DType::F32, &raw).unwrap();
        let mut from_json = Vec::new();
        decode_json(&to_json(DType::F32, &vals).unwrap(), &mut from_json).unwrap();
        assert_eq!(back, from_json);
        let ints = Values::Int(vec![-1, 300]);
        assert_eq!(
            to_raw(DType::I16, &ints).unwrap(),
            vec![0xff, 0xff, 0x2c, 0x01]
        );
        assert_eq!(
            to_json(DType::U8, &ints).unwrap(),
            serde_json::json!([255, 44])
        );
    }

    #[test]
    fn bytes_elements_decode_and_reject_truncation() {
        let raw = [3, 0, 0, 0, b'c', b'a', b't', 1, 0, 0, 0, b'x'];
        assert_eq!(
            decode_raw(DType::Bytes, &raw).unwrap(),
            vec![Scalar::Str("cat".into()), Scalar::Str("x".into())]
        );
        assert!(decode_raw(DType::Bytes, &raw[..6]).is_err());
        assert!(decode_raw(DType::F32, &[0, 0, 0]).is_err());
    }
}
