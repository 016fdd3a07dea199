//! A model instance's thread: takes whole batches from the actor and runs them on its
//! instance, so long blocking runs never touch the async executor.

use super::actor::Batch;
use super::instance::{Claimed, Instance};
use super::{BatchError, BatcherSettings, JobOutput};
use crate::backend::BackendError;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub(crate) fn spawn(
    settings: Arc<BatcherSettings>,
    index: usize,
    instance: Arc<Instance>,
    batches: Arc<Mutex<mpsc::Receiver<Batch>>>,
) {
    let name = format!("{}-{index}", settings.model);
    let spawned = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || loop {
            // Whoever holds the lock waits for the next batch; the others wait for the lock.
            let next = match batches.lock() {
                Ok(mut receiver) => receiver.blocking_recv(),
                Err(_) => None,
            };
            let Some(batch) = next else { break };
            run_batch(&settings, instance.claim(), batch);
        });
    if let Err(error) = spawned {
        tracing::error!(%error, thread = %name, "cannot start a model instance thread");
    }
}

/// Runs a batch on a claimed instance and answers its members.
fn run_batch(settings: &BatcherSettings, mut instance: Claimed<'_>, batch: Batch) {
    // Callers who left while the batch waited for this worker cost no device time.
    let members: Vec<_> = batch
        .members
        .into_iter()
        .filter(|m| !m.reply.is_closed())
        .collect();
    if members.is_empty() {
        return;
    }
    let started = Instant::now();
    let inputs: Vec<&[crate::tensor::Tensor]> =
        members.iter().map(|m| m.job.inputs.as_slice()).collect();
    let rows: Vec<usize> = members.iter().map(|m| m.job.rows).collect();
    // An engine that panics fails this batch, not the instance: the thread goes on taking
    // batches, and the members get an error rather than a caller waiting on a dead thread.
    let ran = {
        let _span = members[0].span.enter();
        std::panic::catch_unwind(AssertUnwindSafe(|| instance.run(&inputs, &rows))).unwrap_or_else(
            |panic| {
                Err(BatchError::Backend(BackendError::Execution(format!(
                    "the engine panicked: {}",
                    panic_message(panic.as_ref())
                ))))
            },
        )
    };
    // Free the engine before answering: an answered caller may come straight back for it.
    let queue_waits = instance.queue_waits();
    drop(instance);
    match ran {
        Ok(ran) => {
            let compute_us = ran.compute.as_micros() as u64;
            for (member, outputs) in members.into_iter().zip(ran.per_member) {
                let queue = started.duration_since(member.enqueued);
                queue_waits.record(queue.as_secs_f64());
                let _ = member.reply.send(Ok(JobOutput {
                    outputs,
                    batch_rows: ran.batch_rows,
                    queue_us: queue.as_micros() as u64,
                    compute_us,
                }));
            }
        }
        Err(error) => {
            tracing::warn!(model = %settings.model, %error, "batch failed");
            for member in members {
                let _ = member
                    .reply
                    .send(Err::<JobOutput, BatchError>(error.clone()));
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}
