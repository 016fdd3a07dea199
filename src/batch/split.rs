//! Building a batch's inputs from its members and cutting the outputs back into each member's
//! rows. Inputs are gathered as shared parts (no copy here; the engine copies once into its
//! own buffer); outputs are sliced, which is free with `Bytes`.

use crate::backend::{BackendError, BatchInput};
use crate::tensor::Tensor;
use std::sync::Arc;

/// Gathers the members' inputs (each a list of tensors in model order) into batch inputs. With
/// one member the shape is kept as sent; with several, first dimensions are summed.
pub fn gather(members: &[&[Tensor]]) -> Vec<BatchInput> {
    let Some(first) = members.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(index, template)| {
            let mut shape = template.shape.clone();
            if members.len() > 1 {
                if let Some(batch_dim) = shape.first_mut() {
                    *batch_dim = members.iter().map(|m| m[index].shape[0]).sum();
                }
            }
            BatchInput {
                name: template.name.clone(),
                dtype: template.dtype,
                shape,
                parts: members.iter().map(|m| m[index].data.clone()).collect(),
            }
        })
        .collect()
}

/// Cuts every output into consecutive row ranges, one per member, in member order. A batch of
/// one hands its outputs over as they are. Each member's outputs are built straight into the
/// shared slice its answer (and the cache) will hold: one allocation per member.
pub fn scatter(outputs: Vec<Tensor>, rows: &[usize]) -> Result<Vec<Arc<[Tensor]>>, BackendError> {
    if rows.len() == 1 {
        return Ok(vec![outputs.into()]);
    }
    let total: usize = rows.iter().sum();
    if let Some(output) = outputs.iter().find(|o| o.shape.first() != Some(&total)) {
        return Err(BackendError::Execution(format!(
            "output `{}` has shape {:?}, which does not lead with the batch's {total} rows; set max_batch_size = 0 for this model",
            output.name, output.shape
        )));
    }
    let offsets = outputs
        .iter()
        .map(|output| {
            output
                .row_offsets()
                .map_err(|why| BackendError::Execution(format!("output `{}`: {why}", output.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut start_row = 0;
    let per_member = rows
        .iter()
        .map(|&member_rows| {
            let member = outputs
                .iter()
                .zip(&offsets)
                .map(|(output, offsets)| {
                    let mut shape = output.shape.clone();
                    if let Some(leading) = shape.first_mut() {
                        *leading = member_rows;
                    }
                    Tensor {
                        name: output.name.clone(),
                        dtype: output.dtype,
                        shape,
                        data: output
                            .data
                            .slice(offsets[start_row]..offsets[start_row + member_rows]),
                    }
                })
                .collect();
            start_row += member_rows;
            member
        })
        .collect();
    Ok(per_member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;
    use bytes::Bytes;

    fn rows_tensor(name: &str, first_value: u8, rows: usize, width: usize) -> Tensor {
        let data: Vec<u8> = (0..rows * width).map(|i| first_value + i as u8).collect();
        Tensor {
            name: name.into(),
            dtype: DataType::Uint8,
            shape: vec![rows, width],
            data: Bytes::from(data),
        }
    }

    #[test]
    fn gather_then_scatter_returns_each_member_its_own_rows() {
        let a = [rows_tensor("x", 0, 1, 3)];
        let b = [rows_tensor("x", 100, 2, 3)];
        let inputs = gather(&[&a, &b]);
        assert_eq!(inputs[0].shape, vec![3, 3]);
        let batch = Tensor {
            name: "y".into(),
            dtype: DataType::Uint8,
            shape: inputs[0].shape.clone(),
            data: Bytes::from(inputs[0].concatenated()),
        };
        let split = scatter(vec![batch], &[1, 2]).unwrap();
        assert_eq!(split[0][0].data, a[0].data);
        assert_eq!(split[1][0].data, b[0].data);
        assert_eq!(split[1][0].shape, vec![2, 3]);
    }

    #[test]
    fn string_rows_are_cut_at_their_own_lengths() {
        let words = |items: &[&str]| Tensor {
            name: "w".into(),
            dtype: DataType::Bytes,
            shape: vec![items.len()],
            data: Bytes::from(
                crate::tensor::strings::encode(items.iter().map(|w| w.as_bytes())).unwrap(),
            ),
        };
        let batch = words(&["a", "", "longer one"]);
        let split = scatter(vec![batch], &[2, 1]).unwrap();
        assert_eq!(split[0][0], words(&["a", ""]));
        assert_eq!(split[1][0], words(&["longer one"]));
    }

    #[test]
    fn an_output_without_the_batch_rows_is_an_error_for_everyone() {
        let output = rows_tensor("y", 0, 2, 1);
        let err = scatter(vec![output], &[1, 2]).unwrap_err();
        assert!(err.to_string().contains("max_batch_size"));
    }
}
