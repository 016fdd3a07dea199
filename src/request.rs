//! The protocol-neutral request and response every front end decodes into and encodes from.

use crate::tensor::Tensor;

use smol_str::SmolStr;
use std::sync::Arc;

/// The front end a request came through; a metric label as well, so it lives with them.
pub use crate::telemetry::Protocol;

#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    pub model: String,
    /// `None` asks for the model's newest version.
    pub version: Option<String>,
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Outputs to return; empty means all of them.
    pub outputs: Vec<String>,
    pub options: RequestOptions,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestOptions {
    /// 1 is the highest lane; `None` takes the model's default.
    pub priority: Option<u8>,
    /// May only shorten the model's `default_timeout_us`.
    pub timeout_us: Option<u64>,
    pub cache: CacheControl,
    /// `k=v,...` tags given as the `tags` parameter.
    pub tags: Option<String>,
    /// The front end keeps a `Recall` of a hit, so asks for one with the response.
    pub recall: bool,
    /// A deferred job's row: served in the deferred lane (the gateway sets it, never a wire).
    pub deferred: bool,
    /// The `variant` parameter: one of the model's `[[models.variants]]` answers, or the
    /// primary when it is `"primary"` or unset.
    pub variant: Option<String>,
}

/// What the caller allows the cache to do for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheControl {
    pub lookup: bool,
    pub store: bool,
}

impl Default for CacheControl {
    fn default() -> Self {
        CacheControl {
            lookup: true,
            store: true,
        }
    }
}

impl CacheControl {
    /// The request parameter `cache`: "default", "bypass" (neither) or "refresh" (skip the
    /// lookup, store the fresh answer).
    pub fn from_parameter(value: &str) -> Option<CacheControl> {
        match value {
            "default" => Some(CacheControl::default()),
            "bypass" => Some(CacheControl {
                lookup: false,
                store: false,
            }),
            "refresh" => Some(CacheControl {
                lookup: false,
                store: true,
            }),
            _ => None,
        }
    }
}

/// How a response was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// Answered by an identical request that was already running.
    Coalesced,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Bypass => "bypass",
        }
    }
}

#[derive(Debug, Clone)]
pub struct InferResponse {
    pub model: String,
    pub version: String,
    pub id: Option<String>,
    pub outputs: Outputs,
    pub served: Served,
}

/// A response's output tensors: the computed (or cached) set, shared with the cache entry
/// rather than copied for every answer, and which of them the caller asked for.
#[derive(Debug, Clone)]
pub struct Outputs {
    all: Arc<[Tensor]>,
    /// Positions in `all`, in answer order; `None` answers with all of them as stored.
    picked: Option<Vec<usize>>,
}

impl Outputs {
    /// The tensors of `all` named by `wanted`, in that order; names it lacks are skipped.
    pub fn pick<'a>(all: Arc<[Tensor]>, wanted: impl Iterator<Item = &'a str> + Clone) -> Outputs {
        // The common case, everything in stored order, needs no list of positions.
        if wanted.clone().eq(all.iter().map(|t| t.name.as_str())) {
            return Outputs { all, picked: None };
        }
        let picked = wanted
            .filter_map(|name| all.iter().position(|t| t.name == name))
            .collect();
        Outputs {
            all,
            picked: Some(picked),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tensor> + '_ {
        // Positions come from `pick`, which found each of them in `all`.
        (0..self.len()).map(move |i| match &self.picked {
            None => &self.all[i],
            Some(positions) => &self.all[positions[i]],
        })
    }

    pub fn len(&self) -> usize {
        self.picked.as_ref().map_or(self.all.len(), Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<Tensor>> for Outputs {
    fn from(tensors: Vec<Tensor>) -> Outputs {
        Outputs {
            all: tensors.into(),
            picked: None,
        }
    }
}

/// Per-request facts the front ends put into headers and response parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub request_id: String,
    pub cache: CacheStatus,
    /// Rows this request asked for.
    pub rows: usize,
    /// Rows in the batch that computed this answer (0 for a cache hit).
    pub batch_rows: usize,
    pub queue_us: u64,
    pub compute_us: u64,
    pub cost_usd: f64,
    pub saved_usd: f64,
    /// Time its batch waited for the model to be loaded again after an idle unload (0: none).
    pub cold_start_us: u64,
    /// The device that computed it ("cpu", "cuda:0"); shared with the model and usage record.
    pub device: SmolStr,
    /// Which of a model's variants answered (`"primary"` for the model itself); `None` for a
    /// model without variants.
    pub variant: Option<SmolStr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;
    use bytes::Bytes;

    fn tensors(names: &[&str]) -> Arc<[Tensor]> {
        names
            .iter()
            .map(|name| Tensor {
                name: name.to_string(),
                dtype: DataType::Uint8,
                shape: vec![1],
                data: Bytes::from(name.as_bytes().to_vec()),
            })
            .collect()
    }

    #[test]
    fn outputs_are_picked_by_name_in_the_order_asked() {
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            // (stored, wanted, answered)
            (&["a", "b"], &["a", "b"], &["a", "b"]),
            (&["a", "b"], &["b", "a"], &["b", "a"]),
            (&["a", "b", "c"], &["c"], &["c"]),
            (&["a", "b"], &["a", "missing"], &["a"]),
            (&["a"], &[], &[]),
        ];
        for (stored, wanted, answered) in cases {
            let all = tensors(stored);
            let outputs = Outputs::pick(all.clone(), wanted.iter().copied());
            let names: Vec<&str> = outputs.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(&names, answered, "{stored:?} picking {wanted:?}");
            assert_eq!(outputs.len(), answered.len());
            // Shared, not copied: the answer's bytes are the stored tensor's.
            let first = outputs
                .iter()
                .next()
                .map(|t| (t.name.clone(), t.data.as_ptr()));
            if let Some((name, bytes)) = first {
                let stored = all.iter().find(|t| t.name == name);
                assert_eq!(stored.map(|t| t.data.as_ptr()), Some(bytes));
            }
        }
    }
}
