//! `sluice-target`: serve the example API, run a fault-injecting proxy in
//! front of any HTTP API, or compare the example API's database with a CSV
//! file.
//!
//! Exit codes: 0 on success (for `compare`, an exact match), 1 when
//! `compare` finds differences, 2 on errors.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use sluice_target::{
    compare_csv, CompareOptions, FaultPlan, Outage, ProxyConfig, TargetConfig,
    DEFAULT_RETRY_AFTER_SECS,
};
use tracing::info;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    version,
    about = "Example HTTP API for sluice: SQLite storage and seeded faults"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Forward requests to another HTTP API, injecting faults, until SIGINT
    /// or SIGTERM.
    Proxy(ProxyArgs),
    /// Compare the stored resources with the rows of a CSV file.
    Compare(CompareArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// SQLite database file, created when missing.
    #[arg(long)]
    db: PathBuf,
    #[command(flatten)]
    faults: FaultArgs,
}

#[derive(Args)]
struct ProxyArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8081")]
    addr: SocketAddr,
    /// Base URL of the API to forward to, such as http://127.0.0.1:8090.
    #[arg(long, value_name = "URL")]
    upstream: String,
    #[command(flatten)]
    faults: FaultArgs,
}

/// Fault options shared by `serve` and `proxy`.
#[derive(Args)]
struct FaultArgs {
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Probability (0 to 1) of responding with 500.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    rate_500: f64,
    /// Probability (0 to 1) of responding with 503.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    rate_503: f64,
    /// Probability (0 to 1) of responding with 429 and Retry-After.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    rate_429: f64,
    /// Retry-After value sent with each 429, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_RETRY_AFTER_SECS)]
    retry_after: u64,
    /// Probability (0 to 1) of stalling a request. `serve` then responds
    /// with 503 without serving it, while `proxy` forwards it and sends the
    /// upstream's response after the stall.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    rate_stall: f64,
    /// Time a stalled request waits before its response, such as 5s or
    /// 1500ms.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    stall_for: Duration,
    /// Probability (0 to 1) of resetting the TCP connection without a
    /// response.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    rate_reset: f64,
    /// Probability (0 to 1) of serving a request, committing its write, and
    /// then resetting the TCP connection instead of responding.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    rate_lost_response: f64,
    /// Start of the outage window, measured from the first request.
    #[arg(long, value_name = "DURATION", requires = "outage_for", value_parser = humantime::parse_duration)]
    outage_after: Option<Duration>,
    /// Length of the outage window, in which every request gets 503.
    #[arg(long, value_name = "DURATION", requires = "outage_after", value_parser = humantime::parse_duration)]
    outage_for: Option<Duration>,
    /// Requests served at once; one more that arrives gets 503, like an
    /// API that sheds load.
    #[arg(long, value_name = "N")]
    max_in_flight: Option<usize>,
}

#[derive(Args)]
struct CompareArgs {
    /// SQLite database file written by `serve`.
    #[arg(long)]
    db: PathBuf,
    /// CSV file with a header row.
    #[arg(long)]
    file: PathBuf,
    /// Path template of each row's resource, such as '/airports/{iata}'.
    #[arg(long)]
    path: String,
    /// Value that stands for JSON null, such as NA.
    #[arg(long, value_name = "TOKEN")]
    null: Option<String>,
    /// Field delimiter: one ASCII character, or \t (or "tab") for a tab.
    #[arg(long, default_value = ",", value_parser = parse_delimiter)]
    delimiter: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).map(|()| ExitCode::SUCCESS),
        Command::Proxy(args) => proxy(args).map(|()| ExitCode::SUCCESS),
        Command::Compare(args) => compare(&args),
    };
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::from(2)
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    let config = TargetConfig {
        addr: args.addr,
        db_path: args.db,
        faults: args.faults.plan(),
    };

    let runtime = tokio::runtime::Runtime::new().context("failed to start the Tokio runtime")?;
    runtime.block_on(async {
        let db = config.db_path.display().to_string();
        info!(db, faults = %config.faults, "starting");
        let target = sluice_target::start(config).await?;

        // Tests and scripts wait for this exact line on stdout.
        println!("listening on {}", target.url());

        let signal = wait_for_signal().await?;
        info!(signal, "stopping");
        let stats = target.shutdown().await;
        info!(
            requests = stats.requests,
            writes = stats.writes,
            faults = %stats.faults,
            "stopped"
        );
        Ok(())
    })
}

fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    init_logging();
    let config = ProxyConfig {
        addr: args.addr,
        upstream: args.upstream,
        faults: args.faults.plan(),
    };

    let runtime = tokio::runtime::Runtime::new().context("failed to start the Tokio runtime")?;
    runtime.block_on(async {
        info!(upstream = config.upstream, faults = %config.faults, "starting");
        let proxy = sluice_target::start_proxy(config).await?;

        // Tests and scripts wait for this exact line on stdout.
        println!("listening on {}", proxy.url());

        let signal = wait_for_signal().await?;
        info!(signal, "stopping");
        let stats = proxy.shutdown().await;
        info!(
            requests = stats.requests,
            forwarded = stats.forwarded,
            faults = %stats.faults,
            "stopped"
        );
        Ok(())
    })
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

impl FaultArgs {
    fn plan(&self) -> FaultPlan {
        let outage = match (self.outage_after, self.outage_for) {
            (Some(after), Some(duration)) => Some(Outage { after, duration }),
            _ => None,
        };
        FaultPlan {
            seed: self.seed,
            rate_500: self.rate_500,
            rate_503: self.rate_503,
            rate_429: self.rate_429,
            retry_after_secs: self.retry_after,
            rate_stall: self.rate_stall,
            stall_for: self.stall_for,
            rate_reset: self.rate_reset,
            rate_lost_response: self.rate_lost_response,
            outage,
            max_in_flight: self.max_in_flight,
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut interrupt = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;
    let name = tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    Ok(name)
}

fn compare(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let opts = CompareOptions {
        path_template: args.path.clone(),
        null_token: args.null.clone(),
        delimiter: args.delimiter,
    };
    let comparison = compare_csv(&args.db, &args.file, &opts)?;
    println!("{comparison}");
    Ok(if comparison.is_exact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn parse_rate(text: &str) -> anyhow::Result<f64> {
    let rate: f64 = text
        .parse()
        .with_context(|| format!("{text:?} is not a number"))?;
    if !(0.0..=1.0).contains(&rate) {
        bail!("{rate} is out of range; use a probability from 0 to 1");
    }
    Ok(rate)
}

fn parse_delimiter(text: &str) -> anyhow::Result<u8> {
    match text {
        "\\t" | "tab" => return Ok(b'\t'),
        _ => {}
    }
    match text.as_bytes() {
        [byte] if byte.is_ascii() => Ok(*byte),
        _ => bail!("delimiter {text:?} is not one ASCII character; use for example , or ; or tab"),
    }
}
