//! `privcomm-bench`: the benchmarks of docs/BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p privcomm-bench -- throughput --rate 5000
//! cargo run --release -p privcomm-bench -- connections --connections 19000
//! cargo run --release -p privcomm-bench -- offline --messages 10000
//! cargo run --release -p privcomm-bench -- e2e --rate 1000
//! cargo run --release -p privcomm-bench -- failover --postgres postgres://… --redis redis://…
//! ```
//!
//! The relay under test runs in its own process (this executable, `relay` subcommand), so
//! its CPU and memory are measured apart from the generator's.

mod accounts;
mod connections;
mod e2e;
mod failover;
mod offline;
mod relay_process;
mod report;
mod throughput;
mod wire;

use clap::{Parser, Subcommand};

/// Client options for a benchmark's receiving client: one sender's whole run (10,000
/// messages and more) must be stored, so the per-peer receive quota is lifted.
pub(crate) fn unlimited_receiving() -> privcomm_core::ClientOptions {
    privcomm_core::ClientOptions {
        receive_quota: privcomm_core::ReceiveQuota {
            messages: u32::MAX,
            bytes: u64::MAX,
            ..privcomm_core::ReceiveQuota::default()
        },
        ..privcomm_core::ClientOptions::default()
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "privcomm-bench",
    about = "Benchmarks of the Privcomm relay and core"
)]
struct Cli {
    /// Print the result as one JSON line.
    #[arg(long, global = true)]
    json: bool,
    /// Worker threads of the load generator's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Relay throughput and delivery latency between online pairs.
    Throughput(throughput::Args),
    /// Idle authenticated connections one relay holds, and memory per connection.
    Connections(connections::Args),
    /// Queueing for an offline user, then the core's drain when it connects.
    Offline(offline::Args),
    /// Client end to end: `send_text` on Alice to Bob's received event.
    E2e(e2e::Args),
    /// Time until every client is delivering again after one of three instances behind
    /// HAProxy is killed.
    Failover(failover::Args),
    /// Runs the relay (as `privcomm-server` would); used by the other commands.
    #[command(hide = true)]
    Relay {
        /// Arguments of `privcomm-server`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Relay { args } = &cli.command {
        return run_relay(args);
    }
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match &cli.command {
            Command::Throughput(args) => {
                for round in throughput::run(args).await? {
                    report::print(&round, cli.json)?;
                }
                Ok(())
            }
            Command::Connections(args) => report::print(&connections::run(args).await?, cli.json),
            Command::Offline(args) => report::print(&offline::run(args).await?, cli.json),
            Command::E2e(args) => report::print(&e2e::run(args).await?, cli.json),
            Command::Failover(args) => report::print(&failover::run(args).await?, cli.json),
            Command::Relay { .. } => Ok(()),
        }
    })
}

fn run_relay(args: &[String]) -> anyhow::Result<()> {
    use clap::Parser as _;
    let config = privcomm_server::Config::try_parse_from(
        std::iter::once("privcomm-server".to_owned()).chain(args.iter().cloned()),
    )?;
    privcomm_server::logging::init(&config.log);
    // The same runtime as the `privcomm-server` binary's `#[tokio::main]`.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(privcomm_server::app::run_until_signal(config))
}
