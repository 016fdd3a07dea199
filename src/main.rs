//! The `tollgate` command: `serve` runs the gateway, `check-config` validates a config file.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::PathBuf;
use tollgate::config::Config;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage:
  tollgate serve [--config FILE] [--http-addr HOST:PORT] [--grpc-addr HOST:PORT]
  tollgate check-config [--config FILE]

The config file defaults to config.toml. See README.md.";

struct Arguments {
    command: String,
    config: PathBuf,
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
}

fn parse_arguments() -> anyhow::Result<Arguments> {
    let mut raw = std::env::args().skip(1);
    let command = match raw.next() {
        Some(c) if c == "--help" || c == "-h" => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        Some(c) if c == "--version" => {
            println!("tollgate {}", env!("CARGO_PKG_VERSION"));
            std::process::exit(0);
        }
        Some(c) => c,
        None => bail!("a command is needed\n{USAGE}"),
    };
    let mut arguments = Arguments {
        command,
        config: PathBuf::from("config.toml"),
        http_addr: None,
        grpc_addr: None,
    };
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => arguments.config = PathBuf::from(value()?),
            "--http-addr" => {
                arguments.http_addr = Some(
                    value()?
                        .parse()
                        .context("--http-addr: expected HOST:PORT")?,
                )
            }
            "--grpc-addr" => {
                arguments.grpc_addr = Some(
                    value()?
                        .parse()
                        .context("--grpc-addr: expected HOST:PORT")?,
                )
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(arguments)
}

fn load(arguments: &Arguments) -> anyhow::Result<Config> {
    let mut config = Config::load(&arguments.config)?;
    if let Some(address) = arguments.http_addr {
        config.server.http_addr = address;
    }
    if let Some(address) = arguments.grpc_addr {
        config.server.grpc_addr = address;
    }
    Ok(config)
}

fn main() {
    if let Err(error) = run() {
        eprintln!("tollgate: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let arguments = parse_arguments()?;
    match arguments.command.as_str() {
        "check-config" => {
            let config = load(&arguments)?;
            println!(
                "{}: valid ({} model(s))",
                arguments.config.display(),
                config.models.len()
            );
            Ok(())
        }
        "serve" => {
            let config = load(&arguments)?;
            tollgate::telemetry::init_logging();
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = config.server.worker_threads {
                runtime.worker_threads(threads);
            }
            let runtime = runtime
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async {
                let signals = tollgate::shutdown::OsSignals::install()
                    .context("cannot install the SIGINT/SIGTERM handlers")?;
                let server = tollgate::server::Server::start(config).await?;
                signals.wait().await;
                tracing::info!("shutting down: draining in-flight requests");
                server.stop().await;
                Ok::<_, anyhow::Error>(())
            })
        }
        other => bail!("unknown command `{other}`\n{USAGE}"),
    }
}
