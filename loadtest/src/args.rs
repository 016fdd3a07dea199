//! Hand-rolled command-line parsing (no clap, to keep the dependency tree small); errors exit with code 2.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
tollgate-loadtest: load generator for KServe V2 / Open Inference Protocol servers

USAGE:
  tollgate-loadtest --target HOST:PORT --model M (--concurrency C | --rate R) [options]

REQUIRED:
  --target HOST:PORT        server address (HTTP port, or gRPC port with --protocol grpc)
  --model M                 model name
  --concurrency C           closed loop: C workers sending back-to-back
  --rate R                  open loop: R requests/s on a fixed schedule (exclusive with --concurrency)
  --job N                   instead: submit N requests as one deferred job (Tollgate's
                            POST /v1/batches), wait for it and report (exclusive with both)

OPTIONS:
  --model-version V         send to /versions/V
  --protocol P              http (JSON, default) | http-binary | grpc
  --arrivals A              open-loop arrivals: poisson (default) | constant
  --duration D              measured period after warm-up (default 30s; 10m cap with only --requests)
  --requests N              stop after N measured requests
  --warmup D                warm-up whose results are discarded (default 0s)
  --distinct N              distinct request bodies (default 100; .npy: rows / batch-rows)
  --zipf S                  Zipf exponent for picking bodies; 0 = uniform (default 0)
  --sequential              send the bodies in order, 0 to N-1 and round again, instead of
                            picking at random (each body once per pass: cache fills, warm-ups)
  --seed K                  seed for inputs and picks (default 42)
  --batch-rows B            rows per request for a dynamic first dim (default 1)
  --npy FILE                feed the first input from rows of a .npy file
  --verify FILE             JSON {\"output\": NAME, \"expected\": [per distinct index]}
  --metrics-url URL         Prometheus endpoint scraped before and after the run
  --json FILE               write all figures as JSON
  --timeout D               per-request timeout (default 10s)
  --header 'NAME: VALUE'    sent with every request (HTTP header, gRPC metadata); repeatable
  --api-key KEY             the same as --header 'authorization: Bearer KEY'
                            (or set TOLLGATE_API_KEY, which keeps the key out of the process list)
  --no-progress             no live progress line on stderr
  -h, --help                this text

Durations take ms, s, m or h suffixes (a bare number is seconds).

EXIT STATUS:
  0 when most requests succeeded; 2 for a bad command line; 3 when --verify found mismatches;
  4 when most requests failed (a missing API key, a wrong model, an overloaded server).
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    HttpBinary,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    Poisson,
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    Closed {
        concurrency: usize,
    },
    Open {
        rate: f64,
        arrivals: Arrivals,
    },
    /// One deferred job of this many requests.
    Job {
        requests: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub target: String,
    pub model: String,
    pub model_version: Option<String>,
    pub protocol: Protocol,
    pub load: Load,
    pub duration: Duration,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub distinct: Option<usize>,
    pub zipf: f64,
    pub sequential: bool,
    pub seed: u64,
    pub batch_rows: usize,
    pub json: Option<PathBuf>,
    pub npy: Option<PathBuf>,
    pub verify: Option<PathBuf>,
    pub metrics_url: Option<String>,
    pub timeout: Duration,
    pub progress: bool,
    /// Lower-case names and their values, sent with every request and metadata call.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Config>),
    Help,
}

#[derive(Debug, PartialEq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ArgError> {
    Err(ArgError(msg.into()))
}

pub fn parse_duration(text: &str) -> Result<Duration, ArgError> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 1e9 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => err(format!("invalid duration {text:?} (try 30s, 500ms, 2m)")),
    }
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, ArgError> {
    v.parse()
        .or_else(|_| err(format!("{flag} expects a number, got {v:?}")))
}

/// Accepts `HOST:PORT` (an `http://` prefix is tolerated so URLs pasted from docs still work).
fn parse_target(v: &str) -> Result<String, ArgError> {
    let t = v.strip_prefix("http://").unwrap_or(v).trim_end_matches('/');
    if v.starts_with("https://") {
        return err("TLS targets are not supported; give HOST:PORT of a plain-text listener");
    }
    match t.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && port.parse::<u16>().is_ok() && !t.contains('/') =>
        {
            Ok(t.to_string())
        }
        _ => err(format!("--target expects HOST:PORT, got {v:?}")),
    }
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ArgError> {
    let mut target = None;
    let mut model = None;
    let mut model_version = None;
    let mut protocol = Protocol::Http;
    let mut concurrency: Option<usize> = None;
    let mut rate: Option<f64> = None;
    let mut job: Option<u64> = None;
    let mut arrivals = None;
    let mut duration = None;
    let mut requests = None;
    let mut warmup = Duration::ZERO;
    let mut distinct = None;
    let mut zipf = 0.0f64;
    let mut sequential = false;
    let mut seed = 42u64;
    let mut batch_rows = 1usize;
    let (mut json, mut npy, mut verify, mut metrics_url) = (None, None, None, None);
    let mut timeout = Duration::from_secs(10);
    let mut progress = true;
    let mut headers = Vec::new();
    let mut api_key = None;

    let args: Vec<String> = args.into_iter().collect();
    // Help wins over any other mistake on the line.
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        // Both `--flag value` and `--flag=value` are accepted.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "--no-progress" || flag == "--sequential" {
            if inline.is_some() {
                return err(format!("{flag} takes no value"));
            }
            if flag == "--sequential" {
                sequential = true;
            } else {
                progress = false;
            }
            continue;
        }
        if !flag.starts_with("--") {
            return err(format!("unexpected argument {arg:?}"));
        }
        let value = match inline.or_else(|| it.next()) {
            Some(v) => v,
            None => return err(format!("{flag} needs a value")),
        };
        let v = value.as_str();
        match flag.as_str() {
            "--target" => target = Some(parse_target(v)?),
            "--model" => model = Some(v.to_string()),
            "--model-version" => model_version = Some(v.to_string()),
            "--protocol" => {
                protocol = match v {
                    "http" => Protocol::Http,
                    "http-binary" => Protocol::HttpBinary,
                    "grpc" => Protocol::Grpc,
                    _ => {
                        return err(format!(
                            "--protocol must be http, http-binary or grpc, got {v:?}"
                        ))
                    }
                }
            }
            "--concurrency" => concurrency = Some(number(&flag, v)?),
            "--rate" => rate = Some(number(&flag, v)?),
            "--job" => job = Some(number(&flag, v)?),
            "--arrivals" => {
                arrivals = Some(match v {
                    "poisson" => Arrivals::Poisson,
                    "constant" => Arrivals::Constant,
                    _ => return err(format!("--arrivals must be poisson or constant, got {v:?}")),
                })
            }
            "--duration" => duration = Some(parse_duration(v)?),
            "--requests" => requests = Some(number::<u64>(&flag, v)?),
            "--warmup" => warmup = parse_duration(v)?,
            "--distinct" => distinct = Some(number::<usize>(&flag, v)?),
            "--zipf" => zipf = number(&flag, v)?,
            "--seed" => seed = number(&flag, v)?,
            "--batch-rows" => batch_rows = number(&flag, v)?,
            "--json" => json = Some(PathBuf::from(v)),
            "--npy" => npy = Some(PathBuf::from(v)),
            "--verify" => verify = Some(PathBuf::from(v)),
            "--metrics-url" => metrics_url = Some(v.to_string()),
            "--timeout" => timeout = parse_duration(v)?,
            "--header" => headers.push(parse_header(v)?),
            "--api-key" => api_key = Some(v.to_string()),
            _ => return err(format!("unknown flag {flag}")),
        }
    }

    let Some(target) = target else {
        return err("--target HOST:PORT is required");
    };
    let Some(model) = model.filter(|m| !m.is_empty()) else {
        return err("--model is required");
    };
    let load =
        match (concurrency, rate) {
            _ if job.is_some() && (concurrency.is_some() || rate.is_some()) => {
                return err("--job excludes --concurrency and --rate")
            }
            (None, None) => match job {
                Some(0) => return err("--job must be at least 1 request"),
                Some(requests) => Load::Job { requests },
                None => return err(
                    "one of --concurrency (closed loop), --rate (open loop) or --job is required",
                ),
            },
            (Some(_), Some(_)) => return err("--concurrency and --rate are mutually exclusive"),
            (Some(c), None) => {
                if arrivals.is_some() {
                    return err("--arrivals only applies to --rate");
                }
                if !(1..=100_000).contains(&c) {
                    return err("--concurrency must be between 1 and 100000");
                }
                Load::Closed { concurrency: c }
            }
            (None, Some(r)) => {
                if !(r.is_finite() && r > 0.0 && r <= 10_000_000.0) {
                    return err("--rate must be a positive number of requests per second");
                }
                Load::Open {
                    rate: r,
                    arrivals: arrivals.unwrap_or(Arrivals::Poisson),
                }
            }
        };
    // A run is always bounded in time: --requests alone gets a generous cap rather than none.
    let duration = match (duration, requests) {
        (Some(d), _) => d,
        (None, Some(_)) => Duration::from_secs(600),
        (None, None) => Duration::from_secs(30),
    };
    if duration.is_zero() {
        return err("--duration must be positive");
    }
    if requests == Some(0) {
        return err("--requests must be at least 1");
    }
    if distinct == Some(0) || distinct.is_some_and(|d| d > 10_000_000) {
        return err("--distinct must be between 1 and 10000000");
    }
    if !(zipf.is_finite() && zipf >= 0.0) {
        return err("--zipf must be a non-negative number");
    }
    if sequential && zipf > 0.0 {
        return err("--sequential and --zipf exclude each other");
    }
    if batch_rows == 0 {
        return err("--batch-rows must be at least 1");
    }
    if timeout.is_zero() {
        return err("--timeout must be positive");
    }
    if let Some(url) = &metrics_url {
        if !url.starts_with("http://") || url.parse::<hyper::Uri>().is_err() {
            return err(format!("--metrics-url must be an http:// URL, got {url:?}"));
        }
    }
    if let Some(key) = api_key.or_else(|| std::env::var("TOLLGATE_API_KEY").ok()) {
        if headers.iter().any(|(name, _)| name == "authorization") {
            return err("give --api-key or an authorization --header, not both");
        }
        headers.push(parse_header(&format!("authorization: Bearer {key}"))?);
    }
    Ok(Command::Run(Box::new(Config {
        target,
        model,
        model_version,
        protocol,
        load,
        duration,
        requests,
        warmup,
        distinct,
        zipf,
        sequential,
        seed,
        batch_rows,
        json,
        npy,
        verify,
        metrics_url,
        timeout,
        progress,
        headers,
    })))
}

/// `NAME: VALUE`, with a name and value that both HTTP and gRPC metadata can carry.
fn parse_header(text: &str) -> Result<(String, String), ArgError> {
    let Some((name, value)) = text.split_once(':') else {
        return err(format!("--header expects 'NAME: VALUE', got {text:?}"));
    };
    let name = name.trim().to_ascii_lowercase();
    let value = value.trim().to_string();
    if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return err(format!("--header: {name:?} is not a header name"));
    }
    if name.ends_with("-bin") {
        return err("--header: binary (-bin) metadata is not supported");
    }
    if value.is_empty() || hyper::header::HeaderValue::from_str(&value).is_err() {
        return err(format!(
            "--header: the value of {name} is empty or not printable ASCII"
        ));
    }
    Ok((name, value))
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
