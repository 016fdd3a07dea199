//! What the cache stores for one answer, and its compact versioned binary form for the shared
//! tier. Anything that fails to decode is treated as a miss by the caller, never as an error.

use crate::tensor::{DataType, Tensor};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct CachedValue {
    /// Every output of the model for these inputs; responses share them instead of copying.
    pub outputs: Arc<[Tensor]>,
    /// What computing it cost, so a hit can report what it saved.
    pub cost_usd: f64,
    pub compute_us: u64,
    pub rows: u32,
    pub batch_rows: u32,
    pub queue_us: u64,
    /// Time its batch waited for the model's session to load again; only the request that
    /// computed it reports this, so it is not part of the binary form either.
    pub cold_start_us: u64,
    /// For purging one model and for per-model TTLs; not part of the binary form.
    pub model: Arc<str>,
    pub ttl: Duration,
}

impl CachedValue {
    /// Bytes this entry holds, which is what the memory tier is bounded by.
    pub fn weight(&self) -> u32 {
        let payload: usize = self
            .outputs
            .iter()
            .map(|t| t.data.len() + t.name.len() + t.shape.len() * 8 + 64)
            .sum();
        u32::try_from(payload + 128).unwrap_or(u32::MAX)
    }
}

const MAGIC: &[u8; 2] = b"TG";
const FORMAT_VERSION: u8 = 1;

pub fn encode(value: &CachedValue) -> Bytes {
    let mut out = BytesMut::with_capacity(value.weight() as usize);
    out.put_slice(MAGIC);
    out.put_u8(FORMAT_VERSION);
    out.put_f64_le(value.cost_usd);
    out.put_u64_le(value.compute_us);
    out.put_u64_le(value.queue_us);
    out.put_u32_le(value.rows);
    out.put_u32_le(value.batch_rows);
    out.put_u32_le(value.outputs.len() as u32);
    for tensor in value.outputs.iter() {
        out.put_u16_le(tensor.name.len() as u16);
        out.put_slice(tensor.name.as_bytes());
        out.put_u8(tensor.dtype.tag());
        out.put_u8(tensor.shape.len() as u8);
        for dim in &tensor.shape {
            out.put_u64_le(*dim as u64);
        }
        out.put_u64_le(tensor.data.len() as u64);
        out.put_slice(&tensor.data);
    }
    out.freeze()
}

/// Decodes a shared-tier value; `None` for anything malformed or of another format version.
pub fn decode(mut bytes: Bytes, model: Arc<str>, ttl: Duration) -> Option<CachedValue> {
    if bytes.len() < 3 || &bytes[..2] != MAGIC || bytes[2] != FORMAT_VERSION {
        return None;
    }
    bytes.advance(3);
    let cost_usd = take_f64(&mut bytes)?;
    let compute_us = take_u64(&mut bytes)?;
    let queue_us = take_u64(&mut bytes)?;
    let rows = take_u32(&mut bytes)?;
    let batch_rows = take_u32(&mut bytes)?;
    let count = take_u32(&mut bytes)? as usize;
    let mut outputs = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name_len = take_u16(&mut bytes)? as usize;
        let name = String::from_utf8(take_bytes(&mut bytes, name_len)?.to_vec()).ok()?;
        let dtype = DataType::from_tag(take_u8(&mut bytes)?)?;
        let rank = take_u8(&mut bytes)? as usize;
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(usize::try_from(take_u64(&mut bytes)?).ok()?);
        }
        let len = usize::try_from(take_u64(&mut bytes)?).ok()?;
        let data = take_bytes(&mut bytes, len)?;
        Tensor::check_data(dtype, &shape, &data).ok()?;
        outputs.push(Tensor {
            name,
            dtype,
            shape,
            data,
        });
    }
    if bytes.has_remaining() {
        return None;
    }
    Some(CachedValue {
        outputs: outputs.into(),
        cost_usd,
        compute_us,
        rows,
        batch_rows,
        queue_us,
        cold_start_us: 0,
        model,
        ttl,
    })
}

fn take_bytes(bytes: &mut Bytes, len: usize) -> Option<Bytes> {
    (bytes.remaining() >= len).then(|| bytes.split_to(len))
}
fn take_u8(bytes: &mut Bytes) -> Option<u8> {
    (bytes.remaining() >= 1).then(|| bytes.get_u8())
}
fn take_u16(bytes: &mut Bytes) -> Option<u16> {
    (bytes.remaining() >= 2).then(|| bytes.get_u16_le())
}
fn take_u32(bytes: &mut Bytes) -> Option<u32> {
    (bytes.remaining() >= 4).then(|| bytes.get_u32_le())
}
fn take_u64(bytes: &mut Bytes) -> Option<u64> {
    (bytes.remaining() >= 8).then(|| bytes.get_u64_le())
}
fn take_f64(bytes: &mut Bytes) -> Option<f64> {
    (bytes.remaining() >= 8).then(|| bytes.get_f64_le())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CachedValue {
        CachedValue {
            outputs: vec![
                Tensor {
                    name: "label".into(),
                    dtype: DataType::Int64,
                    shape: vec![2],
                    data: Bytes::from(vec![7u8; 16]),
                },
                Tensor {
                    name: "probabilities".into(),
                    dtype: DataType::Fp32,
                    shape: vec![2, 3],
                    data: Bytes::from(vec![1u8; 24]),
                },
            ]
            .into(),
            cost_usd: 1.25e-9,
            compute_us: 42,
            rows: 2,
            batch_rows: 8,
            queue_us: 7,
            cold_start_us: 0,
            model: Arc::from("digits"),
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn values_round_trip() {
        let value = sample();
        let decoded = decode(encode(&value), value.model.clone(), value.ttl);
        assert_eq!(decoded, Some(value));
    }

    #[test]
    fn damaged_values_are_misses_not_errors() {
        let good = encode(&sample());
        let mut cases: Vec<Bytes> = vec![
            Bytes::new(),
            Bytes::from_static(b"XX\x01"),
            Bytes::from_static(b"TG\x02"),
            good.slice(..good.len() - 1),
        ];
        let mut extra = good.to_vec();
        extra.push(0);
        cases.push(Bytes::from(extra));
        for damaged in cases {
            assert_eq!(decode(damaged, Arc::from("m"), Duration::ZERO), None);
        }
    }
}
