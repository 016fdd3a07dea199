//! A model instance's thread: takes whole batches from the actor and runs them on its
//! instance, so long blocking runs never touch the async executor.

use super::actor::Batch;
use super::instance::{Claimed, Instance};
use super::{BatchError, BatcherSettings, JobOutput};
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

/// Runs a batch on a claimed instance and answers its members; also used by the actor when it
/// runs a short model's batch itself.
pub(crate) fn run_batch(settings: &BatcherSettings, mut instance: Claimed<'_>, batch: Batch) {
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
    let ran = {
        let _span = members[0].span.enter();
        instance.run(&inputs, &rows)
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
