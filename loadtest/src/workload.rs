//! What gets sent: model metadata, deterministic distinct input sets (generated or from .npy), and the Zipf/uniform index picker.

use crate::npy::NpyArray;
use crate::rng::{derive_seed, Rng};
use crate::tensor::{DType, Values};
use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: String,
    #[serde(default)]
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ModelMeta {
    #[serde(default)]
    pub inputs: Vec<TensorSpec>,
    #[serde(default)]
    pub outputs: Vec<TensorSpec>,
}

/// One input tensor of one pre-built request.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub values: Values,
}

pub struct Workload {
    /// `requests[i]` is the full input set for distinct index i.
    pub requests: Vec<Vec<InputTensor>>,
    pub rows_per_request: usize,
}

/// Concrete shape for a metadata shape: a dynamic batch dim becomes `batch_rows`, other dynamic dims become 1.
pub fn resolve_shape(shape: &[i64], batch_rows: usize) -> Vec<i64> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| match (i, d < 0) {
            (0, true) => batch_rows as i64,
            (_, true) => 1,
            _ => d,
        })
        .collect()
}

fn element_count(shape: &[i64]) -> usize {
    shape.iter().map(|&d| d.max(0) as usize).product()
}

/// Rows a request carries: the first dimension, or one for a scalar.
pub fn rows_of(shape: &[i64]) -> usize {
    shape.first().map_or(1, |&d| d.max(0) as usize)
}

fn generate(dtype: DType, n: usize, rng: &mut Rng) -> Result<Values> {
    Ok(match dtype {
        // Multiples of 1/64 in [0, 16) are exact in FP16/32/64, so every protocol sends identical numbers.
        d if d.is_float() => Values::Float((0..n).map(|_| rng.below(1024) as f64 / 64.0).collect()),
        DType::Bool => Values::Bool((0..n).map(|_| rng.below(2) == 1).collect()),
        DType::Bytes => bail!("BYTES inputs cannot be generated; use a numeric model or --npy"),
        _ => Values::Int((0..n).map(|_| rng.below(16) as i64).collect()),
    })
}

/// Builds `distinct` input sets; each depends only on (seed, input, index), so a larger --distinct extends a smaller one.
pub fn generated(
    meta: &ModelMeta,
    distinct: usize,
    batch_rows: usize,
    seed: u64,
) -> Result<Workload> {
    if meta.inputs.is_empty() {
        bail!("model metadata lists no inputs");
    }
    let specs = resolved_specs(meta, batch_rows)?;
    let mut requests = Vec::with_capacity(distinct);
    for i in 0..distinct {
        let mut set = Vec::with_capacity(specs.len());
        for (j, (spec, dtype, shape)) in specs.iter().enumerate() {
            let mut rng = Rng::new(derive_seed(&[seed, j as u64, i as u64]));
            let values = generate(*dtype, element_count(shape), &mut rng)?;
            set.push(InputTensor {
                name: spec.name.clone(),
                dtype: *dtype,
                shape: shape.clone(),
                values,
            });
        }
        requests.push(set);
    }
    Ok(Workload {
        requests,
        rows_per_request: rows_of(&specs[0].2),
    })
}

fn resolved_specs(
    meta: &ModelMeta,
    batch_rows: usize,
) -> Result<Vec<(&TensorSpec, DType, Vec<i64>)>> {
    meta.inputs
        .iter()
        .map(|s| {
            let dtype = DType::parse(&s.datatype).with_context(|| format!("input {:?}", s.name))?;
            Ok((s, dtype, resolve_shape(&s.shape, batch_rows)))
        })
        .collect()
}

/// Feeds the model's first input from .npy rows (request i takes rows i*B.. wrapping); other inputs are generated.
pub fn from_npy(
    meta: &ModelMeta,
    npy: &NpyArray,
    distinct: usize,
    batch_rows: usize,
    seed: u64,
) -> Result<Workload> {
    let mut work = generated(meta, distinct, batch_rows, seed)?;
    let Some(first) = work.requests.first().and_then(|r| r.first()) else {
        bail!("no requests to fill");
    };
    let rows = rows_of(&first.shape);
    let per_row = first
        .shape
        .iter()
        .skip(1)
        .map(|&d| d.max(0) as usize)
        .product::<usize>();
    if npy.row_len() != per_row {
        bail!(
            "npy rows hold {} elements but input {:?} (shape {:?}) needs {per_row} per row",
            npy.row_len(),
            first.name,
            first.shape
        );
    }
    let total_rows = npy.rows();
    if total_rows == 0 {
        bail!("npy file has no rows");
    }
    for (i, set) in work.requests.iter_mut().enumerate() {
        let picks = (0..rows).map(|r| (i * rows + r) % total_rows);
        set[0].values = take_rows(&npy.values, per_row, picks);
    }
    Ok(work)
}

fn take_rows(src: &Values, per_row: usize, rows: impl Iterator<Item = usize>) -> Values {
    let idx: Vec<usize> = rows.flat_map(|r| r * per_row..(r + 1) * per_row).collect();
    match src {
        Values::Float(v) => Values::Float(idx.iter().map(|&k| v[k]).collect()),
        Values::Int(v) => Values::Int(idx.iter().map(|&k| v[k]).collect()),
        Values::Bool(v) => Values::Bool(idx.iter().map(|&k| v[k]).collect()),
    }
}

/// Zipf(s) over ranks 1..=n via a cumulative table; index 0 is rank 1 (the most popular).
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 1..=n {
            acc += (k as f64).powf(-s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    #[cfg(test)]
    pub fn probability(&self, index: usize) -> f64 {
        let prev = if index == 0 { 0.0 } else { self.cdf[index - 1] };
        self.cdf[index] - prev
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        // Rounding can leave the last entry a hair under 1.0; clamp rather than index past the end.
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// Chooses which distinct request to send next.
#[derive(Debug, Clone)]
pub enum Picker {
    Uniform(u64),
    Zipf(Zipf),
    /// In order across all workers: clones share the position.
    Sequential(u64, std::sync::Arc<std::sync::atomic::AtomicU64>),
}

impl Picker {
    pub fn new(n: usize, s: f64) -> Picker {
        if s == 0.0 {
            Picker::Uniform(n as u64)
        } else {
            Picker::Zipf(Zipf::new(n, s))
        }
    }

    pub fn sequential(n: usize) -> Picker {
        Picker::Sequential(n as u64, Default::default())
    }

    pub fn pick(&self, rng: &mut Rng) -> usize {
        match self {
            Picker::Uniform(n) => rng.below(*n) as usize,
            Picker::Zipf(z) => z.sample(rng),
            Picker::Sequential(n, next) => {
                (next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n) as usize
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frequencies(p: &Picker, n: usize, samples: usize) -> Vec<f64> {
        let mut rng = Rng::new(1234);
        let mut counts = vec![0usize; n];
        for _ in 0..samples {
            counts[p.pick(&mut rng)] += 1;
        }
        counts.iter().map(|&c| c as f64 / samples as f64).collect()
    }

    #[test]
    fn zipf_top_ranks_match_theory() {
        let (n, samples) = (1000, 400_000);
        for s in [0.8, 1.1] {
            let z = Zipf::new(n, s);
            let freq = frequencies(&Picker::Zipf(z.clone()), n, samples);
            for (rank, &f) in freq.iter().take(5).enumerate() {
                let p = z.probability(rank);
                assert!((f - p).abs() / p < 0.05, "s={s} rank {rank}: {f} vs {p}");
            }
            assert!(freq[0] > freq[1] && freq[1] > freq[4]);
        }
    }

    #[test]
    fn zipf_zero_is_uniform() {
        let n = 50;
        for p in [Picker::new(n, 0.0), Picker::Zipf(Zipf::new(n, 0.0))] {
            for f in frequencies(&p, n, 200_000) {
                assert!((f - 0.02).abs() < 0.002, "{f}");
            }
        }
    }

    #[test]
    fn sequential_picks_go_round_in_order_across_clones() {
        let picker = Picker::sequential(3);
        let other = picker.clone();
        let mut rng = Rng::new(1);
        let picks: Vec<usize> = (0..7)
            .map(|i| if i % 2 == 0 { &picker } else { &other }.pick(&mut rng))
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn resolves_dynamic_dims() {
        assert_eq!(resolve_shape(&[-1, 4], 8), vec![8, 4]);
        assert_eq!(resolve_shape(&[-1, -1, 3], 2), vec![2, 1, 3]);
        assert_eq!(resolve_shape(&[1, 4], 8), vec![1, 4]);
        assert_eq!(rows_of(&[]), 1);
    }

    fn meta() -> ModelMeta {
        serde_json::from_str(
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]},
                          {"name":"m","datatype":"INT64","shape":[-1,1]}],
                "outputs":[{"name":"y","datatype":"FP32","shape":[-1,1]}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn generation_is_deterministic_and_distinct() {
        let a = generated(&meta(), 20, 2, 9).unwrap();
        let b = generated(&meta(), 30, 2, 9).unwrap();
        assert_eq!(a.rows_per_request, 2);
        assert_eq!(a.requests[..], b.requests[..20]);
        assert_eq!(a.requests[3][0].shape, vec![2, 3]);
        assert_eq!(a.requests[3][0].values.len(), 6);
        assert_ne!(a.requests[0], a.requests[1]);
        assert_ne!(
            a.requests[0],
            generated(&meta(), 1, 2, 10).unwrap().requests[0]
        );
    }

    #[test]
    fn npy_rows_fill_first_input() {
        let npy = NpyArray {
            shape: vec![3, 3],
            values: Values::Float((0..9).map(f64::from).collect()),
        };
        let w = from_npy(&meta(), &npy, 2, 2, 1).unwrap();
        assert_eq!(
            w.requests[0][0].values,
            Values::Float(vec![0., 1., 2., 3., 4., 5.])
        );
        assert_eq!(
            w.requests[1][0].values,
            Values::Float(vec![6., 7., 8., 0., 1., 2.])
        );
        let wrong = NpyArray {
            shape: vec![3, 2],
            values: Values::Float(vec![0.0; 6]),
        };
        assert!(from_npy(&meta(), &wrong, 2, 1, 1).is_err());
    }
}
