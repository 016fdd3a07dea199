//! Where a model's instances take whole batches from the actor and run them: a thread per
//! instance for an engine that computes (so runs not known to be short never touch the async
//! executor), a task per instance for one that only waits on the network.

use super::actor::Batch;
use super::instance::{Claimed, Instance, Ran};
use super::scale::Scale;
use super::{BatchError, BatcherSettings, JobOutput, Pending};
use crate::telemetry::trace;
use crate::tensor::Tensor;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One instance's thread: which it is, and the gate that says whether it may run.
pub(crate) struct Slot {
    pub index: usize,
    pub instance: Arc<Instance>,
    pub scale: Arc<Scale>,
}

pub(crate) fn spawn_thread(
    settings: Arc<BatcherSettings>,
    slot: Slot,
    batches: Arc<Mutex<mpsc::Receiver<Batch>>>,
) {
    let Slot {
        index,
        instance,
        scale,
    } = slot;
    let name = format!("{}-{index}", settings.model);
    let spawned = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || loop {
            if !scale.is_active(index) {
                // Stopped by the load: its session goes until it is started again.
                if let Some(mut claimed) = instance.claim() {
                    claimed.unload();
                }
                if !scale.wait_until_active(index) {
                    break;
                }
                if let Some(mut claimed) = instance.claim() {
                    if let Err(error) = claimed.preload() {
                        tracing::warn!(model = %settings.model, %error, "an added instance could not load; its first batch tries again");
                    }
                }
            }
            // Whoever holds the lock waits for the next batch; the others wait for the lock.
            let next = match batches.lock() {
                Ok(mut receiver) => receiver.blocking_recv(),
                Err(_) => None,
            };
            let Some(batch) = next else { break };
            let Some(claimed) = instance.claim() else {
                break;
            };
            run_batch(&settings, claimed, batch, Source::HandedOver);
        });
    if let Err(error) = spawned {
        tracing::error!(%error, thread = %name, "cannot start a model instance thread");
    }
}

pub(crate) fn spawn_task(
    settings: Arc<BatcherSettings>,
    instance: Arc<Instance>,
    batches: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>,
) {
    tokio::spawn(async move {
        loop {
            let next = batches.lock().await.recv().await;
            let Some(batch) = next else { break };
            let Some(members) = live(batch) else {
                instance.handed_over_done();
                continue;
            };
            let started = Instant::now();
            let (inputs, rows) = parts(&members);
            let span = members[0].span.clone();
            let run = tracing::Instrument::instrument(instance.run_async(&inputs, &rows), span);
            let ran = trace::scope(members[0].trace.clone(), run).await;
            instance.handed_over_done();
            answer(&settings, &instance, members, started, ran);
        }
    });
}

/// Where a batch came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Taken from the instances' channel: counted as outstanding until run.
    HandedOver,
    /// Run by the actor itself (`inline`).
    Inline,
}

/// Runs a batch on a claimed instance and answers its members: on an instance's thread, or on
/// the actor's task for a short one (`inline`).
pub(crate) fn run_batch(
    settings: &BatcherSettings,
    mut claimed: Claimed<'_>,
    batch: Batch,
    source: Source,
) {
    let Some(members) = live(batch) else {
        if source == Source::HandedOver {
            claimed.release().handed_over_done();
        }
        return;
    };
    let started = Instant::now();
    let (inputs, rows) = parts(&members);
    let ran = {
        let _span = members[0].span.enter();
        claimed.run(&inputs, &rows)
    };
    // Free the engine (and count the batch done) before answering: an answered caller may
    // come straight back for it.
    let instance = claimed.release();
    if source == Source::HandedOver {
        instance.handed_over_done();
    }
    answer(settings, instance, members, started, ran);
}

/// The members still waiting: callers who left while the batch waited cost no device time.
fn live(batch: Batch) -> Option<Vec<Pending>> {
    let members: Vec<_> = batch
        .members
        .into_iter()
        .filter(|m| !m.reply.is_closed())
        .collect();
    (!members.is_empty()).then_some(members)
}

fn parts(members: &[Pending]) -> (Vec<&[Tensor]>, Vec<usize>) {
    (
        members.iter().map(|m| m.job.inputs.as_slice()).collect(),
        members.iter().map(|m| m.job.rows).collect(),
    )
}

fn answer(
    settings: &BatcherSettings,
    instance: &Instance,
    members: Vec<Pending>,
    started: Instant,
    ran: Result<Ran, BatchError>,
) {
    match ran {
        Ok(ran) => {
            let compute_us = ran.compute.as_micros() as u64;
            let cold_start_us = ran.cold_start.map_or(0, |d| d.as_micros() as u64);
            for (member, outputs) in members.into_iter().zip(ran.per_member) {
                let queue = started.duration_since(member.enqueued);
                instance.queue_waits().record(queue.as_secs_f64());
                let _ = member.reply.send(Ok(JobOutput {
                    outputs,
                    batch_rows: ran.batch_rows,
                    queue_us: queue.as_micros() as u64,
                    compute_us,
                    cold_start_us,
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
