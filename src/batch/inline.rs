//! Short runs on the calling thread. For a small model the hand-offs to an instance's thread
//! and back cost more than the run itself (BENCHMARKS.md), so a batch known to be short runs
//! where it is: on the actor's task when it forms, or on the caller's when nothing batches.
//!
//! "Known to be short" is learned per model and per size: the largest batch, in input bytes,
//! that has run in under `INLINE_MAX_COMPUTE`, lowered below any size that ran longer. A batch
//! no larger than that, on an instance that is idle at that moment, may run inline; any other
//! goes to an instance thread, as does every batch of a model not measured yet. So a run
//! inline is never larger than runs of this model already seen to be short.

use super::instance::{Claimed, Instance, ModelRuns};
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Runs that took this long or longer teach that their size does not run inline: they would
/// hold a runtime thread that every connection shares.
pub(crate) const INLINE_MAX_COMPUTE: Duration = Duration::from_micros(200);

/// The largest batch, in input bytes, this model has run in under `INLINE_MAX_COMPUTE`, and
/// how many batches handed to its instances have not finished: a batch runs inline only when
/// none has, or it would overtake one formed before it.
#[derive(Default)]
pub(crate) struct ShortRuns {
    /// 0 until a short run is seen.
    largest: AtomicUsize,
    handed_over: AtomicUsize,
    /// Told when an instance is done with a batch: a deferred batch waits for that.
    freed: tokio::sync::Notify,
}

impl ShortRuns {
    fn allows(&self, bytes: usize) -> bool {
        bytes > 0
            && bytes <= self.largest.load(Ordering::Relaxed)
            && self.handed_over.load(Ordering::Acquire) == 0
    }

    /// A batch goes to the instances' channel.
    pub(crate) fn handing_over(&self) {
        self.handed_over.fetch_add(1, Ordering::AcqRel);
    }

    /// An instance is done with a batch it was handed (run, failed, or all its callers gone).
    pub(crate) fn handed_over_done(&self) {
        self.handed_over.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }

    /// Batches handed to the instances and not finished (queued for one, or running).
    pub(crate) fn outstanding(&self) -> usize {
        self.handed_over.load(Ordering::Acquire)
    }

    /// Resolves when an instance is next done with a batch.
    pub(crate) async fn freed(&self) {
        self.freed.notified().await;
    }

    /// Learns from one run: a short one raises the bound to its size, a long one lowers it
    /// below its size.
    pub(crate) fn observe(&self, bytes: usize, compute: Duration) {
        if compute < INLINE_MAX_COMPUTE {
            self.largest.fetch_max(bytes, Ordering::Relaxed);
        } else {
            self.largest
                .fetch_min(bytes.saturating_sub(1), Ordering::Relaxed);
        }
    }
}

/// The instances of one model whose engines compute on the calling thread.
#[derive(Clone)]
pub(crate) struct Local {
    instances: Arc<[Arc<Instance>]>,
    runs: Arc<ModelRuns>,
}

impl Local {
    pub(crate) fn new(instances: &[Arc<Instance>], runs: Arc<ModelRuns>) -> Local {
        Local {
            instances: instances
                .iter()
                .filter(|i| i.computes_here())
                .cloned()
                .collect(),
            runs,
        }
    }

    /// An idle instance for a batch of `bytes` input bytes, if a batch that large is known to
    /// run short on this model and no batch handed to its instances is still outstanding.
    pub(crate) fn claim(&self, bytes: usize) -> Option<Claimed<'_>> {
        if !self.runs.short().allows(bytes) {
            return None;
        }
        // An unloaded session is loaded on its instance's thread, never on the runtime's.
        self.instances
            .iter()
            .find_map(|instance| instance.try_claim().filter(Claimed::is_loaded))
    }

    pub(crate) fn runs(&self) -> &ModelRuns {
        &self.runs
    }
}

/// The input bytes of the members' tensors together.
pub(crate) fn input_bytes<'a>(members: impl IntoIterator<Item = &'a [Tensor]>) -> usize {
    members
        .into_iter()
        .flat_map(|inputs| inputs.iter().map(|t| t.data.len()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_follows_what_ran_short() {
        let short = ShortRuns::default();
        let fast = Duration::from_micros(20);
        let slow = INLINE_MAX_COMPUTE * 2;
        // (a run observed: its bytes and compute time), then bytes asked about, allowed?
        type Step = (Option<(usize, Duration)>, usize, bool);
        let steps: &[Step] = &[
            (None, 256, false),
            (Some((256, fast)), 256, true),
            (None, 257, false),
            (None, 0, false),
            (Some((4096, fast)), 4096, true),
            (None, 1024, true),
            (Some((2048, slow)), 2048, false),
            (None, 2047, true),
            (None, 4096, false),
            (Some((3000, fast)), 3000, true),
        ];
        for (index, (observed, asked, allowed)) in steps.iter().enumerate() {
            if let Some((bytes, compute)) = observed {
                short.observe(*bytes, *compute);
            }
            assert_eq!(short.allows(*asked), *allowed, "step {index}");
        }
        // Nothing runs inline while a batch handed to an instance is outstanding.
        short.handing_over();
        assert!(!short.allows(1024));
        short.handed_over_done();
        assert!(short.allows(1024));
    }
}
