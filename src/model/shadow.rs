//! Shadow evaluation of a variant: the same inputs as a primary request, run on the variant off
//! the request path, and its answer compared with the primary's, row by row. A row agrees when
//! its label does: the first integer output, or else the argmax of the first float output of
//! rank 2; float outputs also give their largest absolute and relative error and their cosine
//! similarity with the primary's.

use crate::tensor::{DataType, Tensor};
use std::sync::Mutex;

/// What the shadowed rows of one variant came to, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Agreement {
    /// Rows compared.
    pub samples: u64,
    /// Rows whose label matched the primary's.
    pub agreed: u64,
    pub max_abs_error: f64,
    pub max_rel_error: f64,
    cosine_sum: f64,
    cosine_rows: u64,
}

impl Agreement {
    pub fn ratio(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.agreed as f64 / self.samples as f64)
    }

    pub fn mean_cosine(&self) -> Option<f64> {
        (self.cosine_rows > 0).then(|| self.cosine_sum / self.cosine_rows as f64)
    }

    fn add(&mut self, other: &Agreement) {
        self.samples += other.samples;
        self.agreed += other.agreed;
        self.max_abs_error = self.max_abs_error.max(other.max_abs_error);
        self.max_rel_error = self.max_rel_error.max(other.max_rel_error);
        self.cosine_sum += other.cosine_sum;
        self.cosine_rows += other.cosine_rows;
    }
}

#[derive(Debug, Default)]
pub struct ShadowStats {
    total: Mutex<Agreement>,
}

impl ShadowStats {
    pub fn record(&self, compared: &Agreement) {
        self.total
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .add(compared);
    }

    pub fn snapshot(&self) -> Agreement {
        *self
            .total
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Compares a variant's outputs with the primary's for `rows` rows; `None` when they share no
/// output to judge a label by, or the shapes differ.
pub fn compare(primary: &[Tensor], variant: &[Tensor], rows: usize) -> Option<Agreement> {
    if rows == 0 {
        return None;
    }
    let pairs: Vec<(&Tensor, &Tensor)> = primary
        .iter()
        .filter_map(|p| Some((p, variant.iter().find(|v| v.name == p.name)?)))
        .filter(|(p, v)| p.dtype == v.dtype && p.shape == v.shape)
        .collect();
    let mut result = Agreement {
        samples: rows as u64,
        ..Agreement::default()
    };
    let labels = pairs
        .iter()
        .find(|(p, _)| is_integer(p.dtype))
        .and_then(|(p, v)| Some((integers(p)?, integers(v)?)))
        .or_else(|| {
            let (p, v) = pairs
                .iter()
                .find(|(p, _)| floats(p).is_some() && p.shape.len() == 2)?;
            Some((argmax(&floats(p)?, rows), argmax(&floats(v)?, rows)))
        })?;
    if labels.0.len() < rows || labels.1.len() < rows {
        return None;
    }
    result.agreed = (0..rows).filter(|&r| labels.0[r] == labels.1[r]).count() as u64;
    for (p, v) in &pairs {
        let (Some(a), Some(b)) = (floats(p), floats(v)) else {
            continue;
        };
        let width = a.len() / rows;
        for r in 0..rows {
            let (x, y) = (
                &a[r * width..(r + 1) * width],
                &b[r * width..(r + 1) * width],
            );
            let (mut dot, mut xx, mut yy) = (0.0, 0.0, 0.0);
            for (&x, &y) in x.iter().zip(y) {
                let abs = (x - y).abs();
                result.max_abs_error = result.max_abs_error.max(abs);
                if x.abs() > f64::EPSILON {
                    result.max_rel_error = result.max_rel_error.max(abs / x.abs());
                }
                dot += x * y;
                xx += x * x;
                yy += y * y;
            }
            if xx > 0.0 && yy > 0.0 {
                result.cosine_sum += dot / (xx.sqrt() * yy.sqrt());
                result.cosine_rows += 1;
            }
        }
    }
    Some(result)
}

fn is_integer(dtype: DataType) -> bool {
    matches!(
        dtype,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64
    )
}

fn integers(tensor: &Tensor) -> Option<Vec<i64>> {
    let data = &tensor.data;
    Some(match tensor.dtype {
        DataType::Int64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        DataType::Int32 => data
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
            .collect(),
        DataType::Uint8 => data.iter().map(|&b| i64::from(b)).collect(),
        DataType::Int8 => data.iter().map(|&b| i64::from(b as i8)).collect(),
        _ => return None,
    })
}

fn floats(tensor: &Tensor) -> Option<Vec<f64>> {
    let data = &tensor.data;
    Some(match tensor.dtype {
        DataType::Fp32 => data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))))
            .collect(),
        DataType::Fp64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        _ => return None,
    })
}

fn argmax(values: &[f64], rows: usize) -> Vec<i64> {
    let width = values.len() / rows.max(1);
    (0..rows)
        .map(|r| {
            let row = &values[r * width..(r + 1) * width];
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(-1, |(i, _)| i as i64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn tensor(name: &str, dtype: DataType, shape: Vec<usize>, data: Vec<u8>) -> Tensor {
        Tensor {
            name: name.into(),
            dtype,
            shape,
            data: Bytes::from(data),
        }
    }

    fn labels(values: &[i64]) -> Tensor {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensor("label", DataType::Int64, vec![values.len()], data)
    }

    fn scores(rows: &[[f32; 2]]) -> Tensor {
        let data = rows
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        tensor("scores", DataType::Fp32, vec![rows.len(), 2], data)
    }

    #[test]
    fn labels_agree_row_by_row_and_floats_give_their_errors() {
        let primary = [
            labels(&[1, 2, 3, 4]),
            scores(&[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 4.0]]),
        ];
        let variant = [
            labels(&[1, 2, 0, 4]),
            scores(&[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 4.0]]),
        ];
        let got = compare(&primary, &variant, 4).unwrap();
        assert_eq!((got.samples, got.agreed), (4, 3));
        assert_eq!(got.ratio(), Some(0.75));
        assert!((got.max_abs_error - 1.0).abs() < 1e-12);
        assert!((got.max_rel_error - 0.5).abs() < 1e-12);
        assert!(
            (got.mean_cosine().unwrap() - 1.0).abs() < 1e-12,
            "same directions"
        );
    }

    #[test]
    fn without_an_integer_output_the_argmax_of_scores_is_the_label() {
        let primary = [scores(&[[1.0, 0.0], [0.0, 2.0]])];
        let variant = [scores(&[[0.9, 0.1], [0.6, 0.4]])];
        let got = compare(&primary, &variant, 2).unwrap();
        assert_eq!((got.samples, got.agreed), (2, 1));
        let unrelated = [tensor("other", DataType::Fp32, vec![2, 2], vec![0; 16])];
        assert_eq!(compare(&primary, &unrelated, 2), None, "nothing to compare");
    }
}
