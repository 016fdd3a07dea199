//! The batcher with a fake engine: timing under paused tokio time, priorities, expiry, load
//! shedding, callers who left, and that no row ever reaches the wrong caller.

use super::*;
use crate::backend::{BatchInput, Engine};
use bytes::Bytes;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use std::time::Duration;

/// Answers y = 2x + 1 for every FP32 element and records each batch's first value and rows.
/// With a gate, each run waits for a token first, so a test can hold the device busy.
#[derive(Clone, Default)]
struct Fake {
    runs: Arc<Mutex<Vec<(f32, usize)>>>,
    gate: Option<Arc<Mutex<std::sync::mpsc::Receiver<()>>>>,
    /// Each run takes at least this long (wall time).
    work: Duration,
    /// The thread each run happened on.
    threads: Arc<Mutex<Vec<Option<String>>>>,
    /// Runs started, counted before the gate.
    entered: Arc<AtomicUsize>,
}

impl Engine for Fake {
    fn run(&mut self, inputs: &[BatchInput]) -> Result<Vec<Tensor>, BackendError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            let _ = gate.lock().unwrap().recv();
        }
        std::thread::sleep(self.work);
        let thread = std::thread::current().name().map(str::to_string);
        self.threads.lock().unwrap().push(thread);
        let input = &inputs[0];
        let values: Vec<f32> = input
            .concatenated()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.runs.lock().unwrap().push((values[0], input.shape[0]));
        let out: Vec<u8> = values
            .iter()
            .flat_map(|v| (2.0 * v + 1.0).to_le_bytes())
            .collect();
        Ok(vec![Tensor {
            name: "y".into(),
            dtype: crate::tensor::DataType::Fp32,
            shape: input.shape.clone(),
            data: Bytes::from(out),
        }])
    }

    fn provider(&self) -> &str {
        "fake"
    }
}

fn settings(max_rows: usize, delay: Duration, max_queue_size: usize) -> BatcherSettings {
    BatcherSettings {
        model: "fake".into(),
        policy: Policy {
            max_batch_rows: max_rows,
            max_queue_delay: delay,
            preferred_sizes: Vec::new(),
            wait: crate::config::BatchWait::Fixed,
            deferred_rows: 8,
        },
        max_queue_size,
        batching: max_rows > 1,
        stats: Default::default(),
        idle_unload_after: None,
        instances: super::InstanceRange::fixed(64),
    }
}

fn job(rows: &[f32], width: usize, priority: u8, deadline: Option<Instant>) -> Job {
    Job {
        inputs: vec![Tensor {
            name: "x".into(),
            dtype: crate::tensor::DataType::Fp32,
            shape: vec![rows.len() / width, width],
            data: Bytes::from(
                rows.iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            ),
        }],
        rows: rows.len() / width,
        group: BatchGroup::of_open_dims(vec![width]),
        priority,
        deadline,
    }
}

fn values(output: &JobOutput) -> Vec<f32> {
    output.outputs[0]
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Lets spawned tasks and the actor run until `done` holds, without relying on wall time.
async fn settle(done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_micros(50));
    }
    panic!("condition never held");
}

#[tokio::test(start_paused = true)]
async fn a_lone_request_waits_for_the_queue_delay() {
    let fake = Fake::default();
    let handle = start(
        settings(8, Duration::from_millis(10), 16),
        Engines::Threads(vec![Box::new(fake.clone())]),
    );
    let started = Instant::now();
    let task = tokio::spawn({
        let handle = handle.clone();
        async move { handle.submit(job(&[1.0], 1, 2, None)).await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        fake.runs.lock().unwrap().is_empty(),
        "nothing runs before the delay"
    );
    let output = task.await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(10));
    assert_eq!(output.batch_rows, 1);
    assert_eq!(values(&output), vec![3.0]);
}

/// Eight callers in a closed loop (each sends again once answered) never fill a batch of 64:
/// with Triton's rule every batch waits the whole delay; the adaptive wait sends each batch
/// once all eight are in.
#[tokio::test(start_paused = true)]
async fn a_closed_loop_waits_the_delay_only_with_the_fixed_wait() {
    for wait in [
        crate::config::BatchWait::Fixed,
        crate::config::BatchWait::Adaptive,
    ] {
        let fake = Fake::default();
        let mut settings = settings(64, Duration::from_millis(20), 64);
        settings.policy.wait = wait;
        let handle = start(settings, Engines::Threads(vec![Box::new(fake.clone())]));
        let started = Instant::now();
        let callers: Vec<_> = (0..8)
            .map(|caller| {
                let handle = handle.clone();
                tokio::spawn(async move {
                    for round in 0..6 {
                        let value = (caller * 10 + round) as f32;
                        let output = handle.submit(job(&[value], 1, 2, None)).await.unwrap();
                        assert_eq!(values(&output), vec![2.0 * value + 1.0]);
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        let elapsed = started.elapsed();
        let runs = fake.runs.lock().unwrap().len();
        match wait {
            crate::config::BatchWait::Fixed => {
                assert!(
                    elapsed >= Duration::from_millis(120),
                    "{wait:?}: {elapsed:?}"
                );
                assert_eq!(runs, 6, "{wait:?}: every batch held all eight");
            }
            crate::config::BatchWait::Adaptive => {
                assert!(elapsed < Duration::from_millis(20), "{wait:?}: {elapsed:?}");
                assert!(runs <= 24, "{wait:?}: {runs} runs for 48 requests");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn requests_within_the_delay_share_one_batch_and_a_full_batch_does_not_wait() {
    let fake = Fake::default();
    let handle = start(
        settings(4, Duration::from_secs(3600), 16),
        Engines::Threads(vec![Box::new(fake.clone())]),
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let handle = handle.clone();
            tokio::spawn(async move { handle.submit(job(&[i as f32], 1, 2, None)).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let output = task.await.unwrap().unwrap();
        assert_eq!(output.batch_rows, 4);
        assert_eq!(values(&output), vec![2.0 * i as f32 + 1.0]);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a full batch is sent at once"
    );
    assert_eq!(fake.runs.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_expired_request_times_out_without_running() {
    let fake = Fake::default();
    let handle = start(
        settings(8, Duration::from_millis(50), 16),
        Engines::Threads(vec![Box::new(fake.clone())]),
    );
    let deadline = Some(Instant::now() + Duration::from_millis(1));
    let result = handle.submit(job(&[1.0], 1, 2, deadline)).await;
    assert!(
        matches!(result, Err(BatchError::TimedOut { .. })),
        "{result:?}"
    );
    assert!(fake.runs.lock().unwrap().is_empty());
    assert_eq!(handle.queued(), 0);
}

/// Holds the device with a first batch, so later requests queue up behind it.
fn gated() -> (Fake, std::sync::mpsc::Sender<()>) {
    let (open, gate) = std::sync::mpsc::channel();
    // Slow enough never to be known as short: a gated run inline on a test's own task would
    // wait for a token that task has yet to send.
    let fake = Fake {
        gate: Some(Arc::new(Mutex::new(gate))),
        work: inline::INLINE_MAX_COMPUTE,
        ..Fake::default()
    };
    (fake, open)
}

type Submission<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<JobOutput, BatchError>> + Send + 'a>>;

/// Submits and polls once, right here, so requests enter the queue in this exact order.
async fn enqueue(handle: &BatchHandle, job: Job) -> Submission<'_> {
    let mut submit: Submission = Box::pin(handle.submit(job));
    let first_poll = tokio::select! {
        biased;
        result = &mut submit => Some(result),
        _ = std::future::ready(()) => None,
    };
    assert!(
        first_poll.is_none(),
        "answered before the device was released: {first_poll:?}"
    );
    submit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_requests_overtake_queued_ones() {
    let (fake, open) = gated();
    let handle = start(
        settings(1, Duration::ZERO, 16),
        Engines::Threads(vec![Box::new(fake.clone())]),
    );
    let running = enqueue(&handle, job(&[0.0], 1, 3, None)).await;
    let handed_over = enqueue(&handle, job(&[1.0], 1, 3, None)).await;
    // One batch runs (held by the gate) and one waits in the hand-over slot.
    settle(|| handle.queued() == 0).await;
    let older_low = enqueue(&handle, job(&[2.0], 1, 3, None)).await;
    let urgent = enqueue(&handle, job(&[9.0], 1, 1, None)).await;
    for _ in 0..4 {
        open.send(()).unwrap();
    }
    for submission in [running, handed_over, older_low, urgent] {
        submission.await.unwrap();
    }
    let order: Vec<f32> = fake.runs.lock().unwrap().iter().map(|r| r.0).collect();
    let threads = fake.threads.lock().unwrap().clone();
    assert_eq!(
        order,
        vec![0.0, 1.0, 9.0, 2.0],
        "the priority 1 request ran before the older priority 3 one (threads {threads:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_admitted_requests_still_finish() {
    let (fake, open) = gated();
    let handle = start(
        settings(1, Duration::ZERO, 2),
        Engines::Threads(vec![Box::new(fake.clone())]),
    );
    let mut admitted = Vec::new();
    let mut refused = 0;
    for value in 0..10 {
        // Polled once, right here: the request is queued (or refused) before the next one.
        let mut submit: Submission = Box::pin(handle.submit(job(&[value as f32], 1, 2, None)));
        let first_poll = tokio::select! {
            biased;
            result = &mut submit => Some(result),
            _ = std::future::ready(()) => None,
        };
        match first_poll {
            None => admitted.push(submit),
            Some(Err(BatchError::QueueFull { limit: 2, .. })) => refused += 1,
            Some(other) => panic!("unexpected answer while the device is held: {other:?}"),
        }
    }
    // At most one running, one handed over and two queued are admitted; the rest are refused.
    assert!((6..=8).contains(&refused), "{refused} refused");
    for _ in 0..10 {
        open.send(()).unwrap();
    }
    for submit in admitted {
        assert!(submit.await.is_ok(), "an admitted request was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_who_left_cost_no_device_time() {
    let (fake, open) = gated();
    let handle = start(
        settings(1, Duration::ZERO, 16),
        Engines::Threads(vec![Box::new(fake.clone())]),
    );
    let running = enqueue(&handle, job(&[0.0], 1, 2, None)).await;
    let handed_over = enqueue(&handle, job(&[1.0], 1, 2, None)).await;
    settle(|| handle.queued() == 0).await;
    let queued = enqueue(&handle, job(&[2.0], 1, 2, None)).await;
    // Both leave: one waits in the hand-over slot, one in the queue.
    drop(handed_over);
    drop(queued);
    open.send(()).unwrap();
    running.await.unwrap();
    let last = enqueue(&handle, job(&[3.0], 1, 2, None)).await;
    open.send(()).unwrap();
    last.await.unwrap();
    let seen: Vec<f32> = fake.runs.lock().unwrap().iter().map(|r| r.0).collect();
    assert_eq!(seen, vec![0.0, 3.0], "the two abandoned requests never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_row_ever_reaches_the_wrong_caller() {
    let fake = Fake::default();
    let engines: Vec<Box<dyn Engine>> = vec![Box::new(fake.clone()), Box::new(fake.clone())];
    let handle = start(
        settings(16, Duration::from_micros(300), 4096),
        Engines::Threads(engines),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for caller in 0..300u32 {
        // A small xorshift keeps the inputs varied and the test reproducible.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let rows = 1 + (seed % 4) as usize;
        let width = 3;
        let input: Vec<f32> = (0..rows * width)
            .map(|i| caller as f32 * 100.0 + i as f32)
            .collect();
        let handle = handle.clone();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            let output = handle.submit(job(&input, width, 2, None)).await.unwrap();
            let expected: Vec<f32> = input.iter().map(|v| 2.0 * v + 1.0).collect();
            assert_eq!(
                values(&output),
                expected,
                "caller {caller} got someone else's rows"
            );
            assert_eq!(output.outputs[0].shape, vec![rows, width]);
            calls.fetch_add(1, Ordering::Relaxed);
            output.batch_rows
        }));
    }
    let mut largest = 0;
    for task in tasks {
        largest = largest.max(task.await.unwrap());
    }
    assert_eq!(calls.load(Ordering::Relaxed), 300);
    assert!(largest > 1, "concurrent callers were batched together");
}

/// Runs sequential requests of `rows` each and says, for each, whether it ran on the instance
/// thread.
async fn ran_on_worker(fake: &Fake, max_rows: usize, sizes: &[usize]) -> Vec<bool> {
    let handle = start(
        settings(max_rows, Duration::ZERO, 16),
        Engines::Threads(vec![Box::new(fake.clone())]),
    );
    for (i, &rows) in sizes.iter().enumerate() {
        let values_in = vec![i as f32; rows];
        let output = handle.submit(job(&values_in, 1, 2, None)).await.unwrap();
        assert_eq!(values(&output), vec![2.0 * i as f32 + 1.0; rows]);
    }
    let threads = fake.threads.lock().unwrap().clone();
    threads
        .iter()
        .map(|name| name.as_deref() == Some("fake-0"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_sizes_known_to_run_short_leave_the_instance_thread() {
    // The first run of a size is measured on the instance thread; once a size is known to run
    // short, runs that large or smaller happen on the runtime (the caller's thread, or the
    // actor's when batching), whether or not the model batches; a larger one goes back to the
    // thread until it too is known.
    for max_rows in [1, 4] {
        let sizes = [2, 2, 1, 3, 3];
        let where_ran = ran_on_worker(&Fake::default(), max_rows, &sizes).await;
        assert_eq!(
            where_ran,
            vec![true, false, false, true, false],
            "max rows {max_rows}"
        );
    }
    // A slow model never runs on the runtime, whatever the size.
    let slow = Fake {
        work: inline::INLINE_MAX_COMPUTE * 3,
        ..Fake::default()
    };
    for max_rows in [1, 4] {
        let fresh = Fake {
            runs: Arc::default(),
            threads: Arc::default(),
            ..slow.clone()
        };
        let where_ran = ran_on_worker(&fresh, max_rows, &[1, 1, 1]).await;
        assert_eq!(where_ran, vec![true; 3], "slow, max rows {max_rows}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_is_never_overtaken_inline() {
    let (mut fake, open) = gated();
    // This one must become known as short; its inline run happens on a helper task.
    fake.work = Duration::ZERO;
    let handle = start(
        settings(1, Duration::ZERO, 16),
        Engines::Threads(vec![Box::new(fake.clone())]),
    );
    // One measured run makes this size known as short.
    open.send(()).unwrap();
    handle.submit(job(&[0.0], 1, 2, None)).await.unwrap();
    // The next run holds the device (inline, here, on a helper task); a request submitted
    // meanwhile must queue, and must not run before the device is free.
    let holder = tokio::spawn({
        let handle = handle.clone();
        async move { handle.submit(job(&[1.0], 1, 2, None)).await }
    });
    settle(|| fake.entered.load(Ordering::SeqCst) == 2).await;
    let waiting = enqueue(&handle, job(&[2.0], 1, 2, None)).await;
    open.send(()).unwrap();
    open.send(()).unwrap();
    assert_eq!(values(&holder.await.unwrap().unwrap()), vec![3.0]);
    assert_eq!(values(&waiting.await.unwrap()), vec![5.0]);
    let runs: Vec<f32> = fake.runs.lock().unwrap().iter().map(|r| r.0).collect();
    assert_eq!(runs, vec![0.0, 1.0, 2.0], "served in arrival order");
}

/// Panics on the input 13, computes otherwise.
struct Fragile(Fake);

impl Engine for Fragile {
    fn run(&mut self, inputs: &[BatchInput]) -> Result<Vec<Tensor>, BackendError> {
        if inputs[0].concatenated()[..4] == 13f32.to_le_bytes() {
            panic!("the engine gave up on 13");
        }
        self.0.run(inputs)
    }

    fn provider(&self) -> &str {
        "fragile"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_panic_fails_its_batch_and_the_instance_goes_on() {
    let handle = start(
        settings(1, Duration::ZERO, 16),
        Engines::Threads(vec![Box::new(Fragile(Fake::default()))]),
    );
    let failed = handle.submit(job(&[13.0], 1, 2, None)).await.unwrap_err();
    assert!(
        failed
            .to_string()
            .contains("the engine panicked: the engine gave up on 13"),
        "{failed}"
    );
    let output = handle.submit(job(&[1.0], 1, 2, None)).await.unwrap();
    assert_eq!(values(&output), vec![3.0]);
    assert!(handle.is_running());
}
