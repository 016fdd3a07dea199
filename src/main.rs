//! The `tollgate` command: `serve` runs the gateway, `check-config` validates a config file,
//! `hash-key` prints the blake3 hash a config stores instead of an API key.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use tollgate::config::{self, Config};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A KServe V2 inference gateway with a prediction cache, dynamic batching and cost metering.
#[derive(Parser)]
#[command(name = "tollgate", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve KServe V2 over HTTP and gRPC until SIGINT or SIGTERM.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Logs as text (coloured only on a terminal) or as one JSON object a line.
        #[arg(long, value_enum, env = "TOLLGATE_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
    },
    /// Validate a config file without loading any model.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the blake3 hash of an API key or admin token, as `api_key_blake3` and
    /// `admin_token_blake3` want it. Reads the key from standard input when none is given; one
    /// trailing newline is not part of the key (`echo key | b3sum` would hash it).
    HashKey {
        /// The key itself; prefer standard input, which keeps it out of the shell's history.
        key: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// The config file (see config.toml for every key).
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
    /// Overrides server.http_addr: an IP:port such as 127.0.0.1:8000 (port 0 picks one).
    #[arg(long, value_parser = address)]
    http_addr: Option<SocketAddr>,
    /// Overrides server.grpc_addr: an IP:port such as 127.0.0.1:8001.
    #[arg(long, value_parser = address)]
    grpc_addr: Option<SocketAddr>,
}

fn address(text: &str) -> Result<SocketAddr, String> {
    config::parse_socket_addr(text)
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(&self.config)?;
        if let Some(address) = self.http_addr {
            config.server.http_addr = address;
        }
        if let Some(address) = self.grpc_addr {
            config.server.grpc_addr = address;
        }
        Ok(config)
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli) {
        eprintln!("tollgate: {}", report(&error));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: many errors already print their
/// source, and repeating it ("No such file (os error 2): No such file (os error 2)") hides
/// what was being done.
fn report(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { config } => {
            let loaded = config.load()?;
            println!(
                "{}: valid ({} model(s))",
                config.config.display(),
                loaded.models.len()
            );
            Ok(())
        }
        Command::HashKey { key } => {
            let key = match key {
                Some(key) => key,
                None => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("cannot read the key from standard input")?;
                    text
                }
            };
            let key = key
                .strip_suffix("\r\n")
                .or_else(|| key.strip_suffix('\n'))
                .unwrap_or(&key);
            anyhow::ensure!(!key.is_empty(), "the key is empty");
            println!("{}", blake3::hash(key.as_bytes()).to_hex());
            Ok(())
        }
        Command::Serve { config, log_format } => {
            let config = config.load()?;
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = config.server.worker_threads {
                runtime.worker_threads(threads);
            }
            let runtime = runtime
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async {
                let format = match log_format {
                    LogFormat::Text => tollgate::telemetry::LogFormat::Text,
                    LogFormat::Json => tollgate::telemetry::LogFormat::Json,
                };
                let telemetry = &config.telemetry;
                let export = (!telemetry.otlp_endpoint.trim().is_empty()).then(|| {
                    tollgate::telemetry::otlp::Export {
                        endpoint: telemetry.otlp_endpoint.clone(),
                        sample_ratio: telemetry.trace_sample_ratio,
                        service_name: telemetry.service_name.clone(),
                    }
                });
                tollgate::telemetry::init_logging(format, export.as_ref())
                    .map_err(anyhow::Error::msg)?;
                let signals = tollgate::shutdown::OsSignals::install()
                    .context("cannot install the SIGINT/SIGTERM handlers")?;
                let server = tollgate::server::Server::start(config).await?;
                signals.wait().await;
                tracing::info!("shutting down: draining in-flight requests");
                server.stop().await;
                // Off the runtime's threads: the export it waits for runs on them.
                let _ = tokio::task::spawn_blocking(tollgate::telemetry::otlp::flush).await;
                Ok::<_, anyhow::Error>(())
            })
        }
    }
}
