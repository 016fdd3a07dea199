//! tollgate-loadtest: drives a KServe V2 server over HTTP JSON, HTTP binary or gRPC and reports latency, throughput, cache and cost figures.

mod args;
mod job;
mod metrics_scrape;
mod npy;
mod protocol;
mod report;
mod rng;
mod runner;
mod stats;
mod tensor;
mod verify;
mod workload;

use anyhow::{bail, Context, Result};
use args::{Arrivals, Command, Config, Load, Protocol};
use protocol::{grpc, http, Client};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Mixed into the seed of the warm-up's inputs.
const WARMUP_STREAM: u64 = 0x5741_524d;

/// Open-loop gRPC traffic is spread over this many channels.
const OPEN_LOOP_GRPC_LANES: usize = 4;

fn main() -> ExitCode {
    let cfg = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(cfg)) => cfg,
        Err(e) => {
            eprintln!("error: {e}\nrun with --help for usage");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(*cfg)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> Result<ExitCode> {
    let http_client = http::new_client(cfg.timeout);
    let version = cfg.model_version.as_deref();
    let lanes = match cfg.load {
        Load::Closed { concurrency } => concurrency.div_ceil(16).clamp(1, 8),
        Load::Open { .. } => OPEN_LOOP_GRPC_LANES,
        Load::Job { .. } => 1,
    };
    let grpc_clients = if cfg.protocol == Protocol::Grpc {
        Some(grpc::connect(&cfg.target, lanes, cfg.timeout).await?)
    } else {
        None
    };
    let headers = http::header_map(&cfg.headers)?;
    let metadata = grpc::metadata_map(&cfg.headers)?;
    let mut http_options = http::HttpOptions {
        target: &cfg.target,
        model: &cfg.model,
        version,
        binary: cfg.protocol == Protocol::HttpBinary,
        decode_output: false,
        output_name: None,
        headers: &headers,
    };
    // gRPC targets may expose no HTTP port at all, so metadata comes over the same protocol as the load.
    let meta = match &grpc_clients {
        Some(clients) => grpc::fetch_metadata(&clients[0], &cfg.model, version, &metadata).await?,
        None => http::fetch_metadata(&http_client, &http_options, cfg.timeout).await?,
    };
    let Some(first) = meta.inputs.first() else {
        bail!("model {:?} lists no inputs in its metadata", cfg.model);
    };
    let rows = workload::rows_of(&workload::resolve_shape(&first.shape, cfg.batch_rows));
    if rows != cfg.batch_rows {
        eprintln!(
            "warning: input {:?} has fixed shape {:?}; sending {rows} rows per request, not {}",
            first.name, first.shape, cfg.batch_rows
        );
    }

    let npy = cfg.npy.as_deref().map(npy::read).transpose()?;
    let distinct = match (&npy, cfg.distinct) {
        (_, Some(d)) => d,
        (Some(a), None) => a.rows().div_ceil(rows.max(1)).max(1),
        (None, None) => 100,
    };
    let work = match &npy {
        Some(a) => workload::from_npy(&meta, a, distinct, cfg.batch_rows, cfg.seed)?,
        None => workload::generated(&meta, distinct, cfg.batch_rows, cfg.seed)?,
    };

    if let Load::Job { requests } = cfg.load {
        let picker = if cfg.sequential {
            workload::Picker::sequential(distinct)
        } else {
            workload::Picker::new(distinct, cfg.zipf)
        };
        let plan = job::JobPlan {
            target: &cfg.target,
            model: &cfg.model,
            version,
            requests,
            headers: &headers,
            limit: cfg.duration,
            seed: cfg.seed,
        };
        let done = job::run(&http_client, plan, &work, &picker).await?;
        return Ok(if done {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(4)
        });
    }
    let verifier = cfg
        .verify
        .as_deref()
        .map(verify::Verifier::load)
        .transpose()?
        .map(Arc::new);
    if let Some(v) = &verifier {
        if v.len() < distinct {
            eprintln!("warning: --verify covers {} of {distinct} distinct requests; the rest are not checked", v.len());
        }
    }
    let output_name = verifier.as_ref().and_then(|v| v.output.clone());
    let decode = verifier.is_some();

    let client = match grpc_clients {
        Some(clients) => Client::Grpc(grpc::prepare(
            clients,
            grpc::GrpcOptions {
                model: &cfg.model,
                version,
                decode_output: decode,
                output_name: output_name.as_deref(),
                metadata,
            },
            &work,
        )?),
        None => {
            http_options.decode_output = decode;
            http_options.output_name = output_name.as_deref();
            Client::Http(http::prepare(
                http_client.clone(),
                http_options,
                &meta,
                &work,
            )?)
        }
    };

    let metrics_uri = cfg
        .metrics_url
        .as_deref()
        .map(|u| u.parse::<hyper::Uri>().context("bad --metrics-url"))
        .transpose()?;
    let picker = if cfg.sequential {
        workload::Picker::sequential(distinct)
    } else {
        workload::Picker::new(distinct, cfg.zipf)
    };
    let plan = |duration, max_requests, seed, progress| runner::Plan {
        load: cfg.load,
        warmup: Duration::ZERO,
        duration,
        max_requests,
        timeout: cfg.timeout,
        seed,
        rows_per_request: work.rows_per_request as u64,
        progress: progress && cfg.progress && std::io::stderr().is_terminal(),
    };
    // The warm-up runs on its own and drains before the server's counters are read, so that
    // both sides count the same requests. Its inputs come from a seed of their own, as they
    // would from the stream's first draws.
    if !cfg.warmup.is_zero() {
        let warmup = plan(
            cfg.warmup,
            None,
            rng::derive_seed(&[cfg.seed, WARMUP_STREAM]),
            false,
        );
        runner::run(client.clone(), picker.clone(), None, warmup).await;
    }
    let before = match &metrics_uri {
        Some(uri) => scrape(&http_client, uri, cfg.timeout).await,
        None => None,
    };
    let measured = plan(cfg.duration, cfg.requests, cfg.seed, true);
    let result = runner::run(client, picker, verifier.clone(), measured).await;
    let server = match (&metrics_uri, &before) {
        (Some(uri), Some(before)) => scrape(&http_client, uri, cfg.timeout)
            .await
            .map(|after| metrics_scrape::delta(before, &after)),
        _ => None,
    };
    let summary = report::summarize(
        run_info(&cfg, distinct, work.rows_per_request),
        &result.stats,
        result.elapsed,
        decode,
        server,
    );
    print!("{}", report::render(&summary));
    if let Some(path) = &cfg.json {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    let mismatches = result.stats.errors.get("mismatch").copied().unwrap_or(0);
    let failed: u64 = result.stats.errors.values().sum();
    Ok(if decode && mismatches > 0 {
        ExitCode::from(3)
    } else if mostly_failed(result.stats.ok, failed) {
        let commonest = result.stats.errors.iter().max_by_key(|(_, n)| **n);
        let (kind, count) = commonest.map_or(("?", 0), |(k, n)| (k.as_str(), *n));
        eprintln!(
            "error: {failed} of {} requests failed (most often {kind}: {count}){}",
            failed + result.stats.ok,
            if kind == "http_401" || kind == "grpc_unauthenticated" {
                "; give the tenant's key with --api-key"
            } else {
                ""
            }
        );
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    })
}

/// A run in which at most half the requests got an answer measured failures, not the server.
fn mostly_failed(ok: u64, failed: u64) -> bool {
    failed > 0 && failed >= ok
}

/// A failed scrape only loses the server-side figures, so it warns instead of aborting the run.
async fn scrape(
    client: &http::HyperClient,
    uri: &hyper::Uri,
    timeout: std::time::Duration,
) -> Option<Vec<metrics_scrape::Sample>> {
    match http::get(client, uri.clone(), timeout).await {
        Ok(body) => Some(metrics_scrape::parse(&String::from_utf8_lossy(&body))),
        Err(e) => {
            eprintln!("warning: metrics scrape failed, server figures omitted: {e:#}");
            None
        }
    }
}

fn run_info(cfg: &Config, distinct: usize, rows: usize) -> report::RunInfo {
    let (mode, concurrency, rate, arrivals) = match cfg.load {
        Load::Closed { concurrency } => ("closed", Some(concurrency), None, None),
        Load::Job { .. } => ("job", None, None, None),
        Load::Open { rate, arrivals } => {
            let a = match arrivals {
                Arrivals::Poisson => "poisson",
                Arrivals::Constant => "constant",
            };
            ("open", None, Some(rate), Some(a.to_string()))
        }
    };
    report::RunInfo {
        target: cfg.target.clone(),
        model: cfg.model.clone(),
        model_version: cfg.model_version.clone(),
        protocol: match cfg.protocol {
            Protocol::Http => "http",
            Protocol::HttpBinary => "http-binary",
            Protocol::Grpc => "grpc",
        }
        .to_string(),
        mode: mode.to_string(),
        concurrency,
        rate,
        arrivals,
        warmup_s: cfg.warmup.as_secs_f64(),
        duration_s: cfg.duration.as_secs_f64(),
        max_requests: cfg.requests,
        distinct,
        zipf: cfg.zipf,
        sequential: cfg.sequential,
        seed: cfg.seed,
        rows_per_request: rows,
    }
}
