//! Drives the load: closed loop (C workers back-to-back) or open loop (a fixed arrival schedule), with warm-up and a hard stop.

use crate::args::{Arrivals, Load};
use crate::protocol::Client;
use crate::rng::{derive_seed, Rng};
use crate::stats::{ReplyInfo, Stats};
use crate::verify::Verifier;
use crate::workload::Picker;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Open-loop requests beyond this many in flight are dropped and counted, so a stalled server cannot exhaust memory.
pub const MAX_OUTSTANDING: usize = 10_000;
/// Bounds histogram memory (each is ~190 KiB) however many workers run.
const MAX_SHARDS: usize = 64;

pub struct Plan {
    pub load: Load,
    pub warmup: Duration,
    pub duration: Duration,
    pub max_requests: Option<u64>,
    pub timeout: Duration,
    pub seed: u64,
    pub rows_per_request: u64,
    pub progress: bool,
}

pub struct RunResult {
    pub stats: Stats,
    /// From the end of warm-up until every measured request finished (or the hard stop).
    pub elapsed: Duration,
}

struct Shared {
    client: Client,
    picker: Picker,
    verifier: Option<Arc<Verifier>>,
    timeout: Duration,
    rows: u64,
    max_requests: Option<u64>,
    tickets: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicUsize,
    shards: Vec<Mutex<Stats>>,
}

enum Done {
    Ok {
        info: ReplyInfo,
        verified: bool,
    },
    Failed {
        kind: String,
        info: Option<ReplyInfo>,
    },
}

impl Shared {
    /// Claims one measured request under --requests; false once the budget is spent.
    fn take_ticket(&self) -> bool {
        match self.max_requests {
            Some(max) => self.tickets.fetch_add(1, Relaxed) < max,
            None => true,
        }
    }

    fn record(&self, shard: usize, done: &Done, latency: Duration) {
        let mut s = self.shards[shard % self.shards.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match done {
            Done::Ok { info, verified } => {
                s.record_ok(latency, self.rows, info);
                s.verified += u64::from(*verified);
            }
            Done::Failed { kind, info } => {
                s.record_error(kind);
                if let Some(info) = info {
                    s.record_info(info);
                }
            }
        }
    }

    /// The deadline is fixed by the caller from the (intended) send time, so a request that waited for a
    /// busy client runtime before it even started still times out on schedule.
    async fn exchange(&self, index: usize, lane: usize, deadline: Instant) -> Done {
        let result = tokio::time::timeout_at(deadline, self.client.send(index, lane)).await;
        let done = match result {
            Err(_) => Done::Failed {
                kind: "timeout".into(),
                info: None,
            },
            Ok(Err(kind)) => Done::Failed { kind, info: None },
            Ok(Ok(reply)) => match (reply.output, &self.verifier) {
                (Some(Err(_)), _) => Done::Failed {
                    kind: "decode".into(),
                    info: Some(reply.info),
                },
                (Some(Ok(values)), Some(v)) => match v.check(index, &values) {
                    Some(false) => Done::Failed {
                        kind: "mismatch".into(),
                        info: Some(reply.info),
                    },
                    checked => Done::Ok {
                        info: reply.info,
                        verified: checked.is_some(),
                    },
                },
                _ => Done::Ok {
                    info: reply.info,
                    verified: false,
                },
            },
        };
        self.done.fetch_add(1, Relaxed);
        if matches!(done, Done::Failed { .. }) {
            self.failed.fetch_add(1, Relaxed);
        }
        done
    }
}

pub async fn run(
    client: Client,
    picker: Picker,
    verifier: Option<Arc<Verifier>>,
    plan: Plan,
) -> RunResult {
    let shard_count = match plan.load {
        Load::Closed { concurrency } => concurrency.min(MAX_SHARDS),
        Load::Open { .. } => MAX_SHARDS,
        // A job is submitted by `job`, never run here.
        Load::Job { .. } => 1,
    };
    let sh = Arc::new(Shared {
        client,
        picker,
        verifier,
        timeout: plan.timeout,
        rows: plan.rows_per_request,
        max_requests: plan.max_requests,
        tickets: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        shards: (0..shard_count).map(|_| Mutex::new(Stats::new())).collect(),
    });
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let end = measure_start + plan.duration;
    // Every request has its own timeout, so this only trips if the runtime itself is starved.
    let hard_stop = end + plan.timeout + Duration::from_secs(1);

    let finished = Arc::new(AtomicBool::new(false));
    let progress = plan.progress.then(|| {
        tokio::spawn(progress_loop(
            sh.clone(),
            finished.clone(),
            start,
            measure_start,
            end,
        ))
    });

    let abandoned = match plan.load {
        Load::Closed { concurrency } => {
            closed_loop(&sh, concurrency, plan.seed, measure_start, end, hard_stop).await
        }
        Load::Job { .. } => 0,
        Load::Open { rate, arrivals } => {
            open_loop(&sh, rate, arrivals, plan.seed, start, measure_start, end).await;
            drain(&sh, hard_stop).await
        }
    };
    let elapsed = Instant::now().saturating_duration_since(measure_start);
    finished.store(true, Relaxed);
    if let Some(p) = progress {
        let _ = p.await;
    }

    let mut stats = Stats::new();
    for shard in &sh.shards {
        stats.merge(&shard.lock().unwrap_or_else(|p| p.into_inner()));
    }
    if abandoned > 0 {
        *stats.errors.entry("abandoned".into()).or_insert(0) += abandoned;
    }
    RunResult { stats, elapsed }
}

/// Returns how many requests were still in flight at the hard stop.
async fn closed_loop(
    sh: &Arc<Shared>,
    concurrency: usize,
    seed: u64,
    measure_start: Instant,
    end: Instant,
    hard_stop: Instant,
) -> u64 {
    let mut workers = tokio::task::JoinSet::new();
    for id in 0..concurrency {
        let sh = sh.clone();
        workers.spawn(async move {
            let mut rng = Rng::new(derive_seed(&[seed, 0xC1, id as u64]));
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let measured = sent >= measure_start;
                if measured && !sh.take_ticket() {
                    break;
                }
                let index = sh.picker.pick(&mut rng);
                sh.in_flight.fetch_add(1, Relaxed);
                let done = sh.exchange(index, id, sent + sh.timeout).await;
                sh.in_flight.fetch_sub(1, Relaxed);
                if measured {
                    sh.record(id, &done, sent.elapsed());
                }
                // A refused connection fails instantly; pausing keeps a dead target from pinning the CPU.
                if matches!(&done, Done::Failed { kind, .. } if kind == "connect") {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
    }
    let all = async { while workers.join_next().await.is_some() {} };
    if tokio::time::timeout_at(hard_stop, all).await.is_err() {
        let stuck = sh.in_flight.load(Relaxed) as u64;
        workers.abort_all();
        return stuck;
    }
    0
}

async fn open_loop(
    sh: &Arc<Shared>,
    rate: f64,
    arrivals: Arrivals,
    seed: u64,
    start: Instant,
    measure_start: Instant,
    end: Instant,
) {
    let mut rng = Rng::new(derive_seed(&[seed, 0x0B]));
    let gap = move |rng: &mut Rng| match arrivals {
        Arrivals::Poisson => Duration::from_secs_f64(rng.exponential(rate)),
        Arrivals::Constant => Duration::from_secs_f64(1.0 / rate),
    };
    let mut intended = start;
    let mut seq = 0usize;
    'schedule: while intended < end {
        // Timers tick in milliseconds, so send everything already due in one burst rather than falling behind.
        let now = Instant::now();
        while intended <= now && intended < end {
            let measured = intended >= measure_start;
            if measured && !sh.take_ticket() {
                break 'schedule;
            }
            // Pick before the overflow check so the index sequence does not depend on the server's speed.
            let index = sh.picker.pick(&mut rng);
            if sh.in_flight.load(Relaxed) >= MAX_OUTSTANDING {
                sh.failed.fetch_add(1, Relaxed);
                if measured {
                    sh.record(
                        seq,
                        &Done::Failed {
                            kind: "client_overflow".into(),
                            info: None,
                        },
                        Duration::ZERO,
                    );
                }
            } else {
                // Counted at dispatch, not when the task first runs, so the cap holds even if the runtime lags.
                sh.in_flight.fetch_add(1, Relaxed);
                let sh = sh.clone();
                let due = intended;
                tokio::spawn(async move {
                    let done = sh.exchange(index, seq, due + sh.timeout).await;
                    // Latency counts from the intended send time, so queueing behind a slow server is not hidden.
                    if measured {
                        sh.record(seq, &done, due.elapsed());
                    }
                    sh.in_flight.fetch_sub(1, Relaxed);
                });
            }
            seq = seq.wrapping_add(1);
            intended += gap(&mut rng);
        }
        tokio::time::sleep_until(intended.min(end)).await;
    }
}

/// Waits for spawned open-loop requests; returns how many were still running at the hard stop.
async fn drain(sh: &Shared, hard_stop: Instant) -> u64 {
    loop {
        let left = sh.in_flight.load(Relaxed);
        if left == 0 {
            return 0;
        }
        if Instant::now() >= hard_stop {
            return left as u64;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn progress_loop(
    sh: Arc<Shared>,
    finished: Arc<AtomicBool>,
    start: Instant,
    measure_start: Instant,
    end: Instant,
) {
    let mut last = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while !finished.load(Relaxed) {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
        }
        let now = Instant::now();
        let phase = if now < measure_start {
            "warmup"
        } else if now < end {
            "measure"
        } else {
            "drain"
        };
        let done = sh.done.load(Relaxed);
        let line = format!(
            "\r\x1b[2K[{:>6.1}s] {phase:<7} done {done} ({}/s)  errors {}  in-flight {}",
            now.duration_since(start).as_secs_f64(),
            done - last,
            sh.failed.load(Relaxed),
            sh.in_flight.load(Relaxed),
        );
        last = done;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }
    let _ = std::io::stderr().write_all(b"\r\x1b[2K");
}
