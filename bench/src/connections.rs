//! Connection scale: how many idle authenticated WebSockets one relay holds, and what each
//! costs in resident memory.
//!
//! Accounts are enrolled first; then the relay is restarted on the same data so the baseline
//! is a fresh process (memory freed by the enrolment traffic would otherwise be reused by the
//! connections and hide their cost). Every connection receives its `queue_empty`, so each is
//! fully set up (authenticated, registered, delivery state created) when memory is read.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::watch;

use crate::accounts::enrol_many;
use crate::relay_process::{rss_bytes, Database, RelayProcess};
use crate::wire;

/// Options of `privcomm-bench connections`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Connections to open (one process may hold about 20,000 files here).
    #[arg(long, default_value_t = 19_000)]
    pub connections: usize,
    /// Connections opened at a time.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Directory for the relay's SQLite data (default: /dev/shm, as nothing durable is
    /// measured here and enrolling thousands of accounts on disk is slow).
    #[arg(long, default_value = "/dev/shm")]
    pub data_dir: std::path::PathBuf,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Connections held at the end.
    pub connections: usize,
    /// The relay's own count of open WebSockets.
    pub relay_reports: f64,
    /// Relay RSS before any connection, KiB.
    pub relay_rss_before_kib: u64,
    /// Relay RSS with every connection open, KiB.
    pub relay_rss_after_kib: u64,
    /// (after − before) / connections, KiB.
    pub relay_kib_per_connection: f64,
    /// Generator RSS growth per connection, KiB (client side, for comparison).
    pub generator_kib_per_connection: f64,
    /// Seconds to open all connections.
    pub connect_seconds: f64,
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let database = Database::Sqlite {
        parent: args.data_dir.clone(),
    };
    let mut relay = RelayProcess::spawn(&database, args.connections + 100).await?;
    let result = measure(args, &mut relay).await;
    relay.stop().await?;
    result
}

async fn measure(args: &Args, relay: &mut RelayProcess) -> anyhow::Result<Report> {
    let accounts = enrol_many(relay, args.connections, 64).await?;
    relay.restart().await?;
    // Let the fresh process settle (pool connections, maintenance's first run).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = relay.rss_bytes()?;
    let me = std::process::id();
    let own_before = rss_bytes(me)?;

    let ws_url = relay.ws_url();
    let (hold_tx, hold_rx) = watch::channel(false);
    let started = Instant::now();
    let holders: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = stream::iter(accounts)
        .map(|account| {
            let ws_url = ws_url.clone();
            let mut hold = hold_rx.clone();
            async move {
                let mut socket = wire::connect(&ws_url, &account.token).await?;
                wire::wait_queue_empty(&mut socket).await?;
                // Keep reading (pings are answered while reading) until told to stop.
                Ok::<_, anyhow::Error>(tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            message = socket.next() => match message {
                                Some(Ok(_)) => {}
                                _ => bail!("the relay dropped an idle connection"),
                            },
                            _ = hold.changed() => return Ok(()),
                        }
                    }
                }))
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect()
        .await
        .context("opening connections")?;
    let connect_seconds = started.elapsed().as_secs_f64();
    // Let allocations from the connect burst settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = relay.rss_bytes()?;
    let own_after = rss_bytes(me)?;
    let relay_reports = relay.metric("privcomm_ws_connections").await?;
    let _ = hold_tx.send(true);
    for holder in holders {
        holder.await.context("connection task")??;
    }
    let n = args.connections.max(1) as f64;
    Ok(Report {
        connections: args.connections,
        relay_reports,
        relay_rss_before_kib: before / 1024,
        relay_rss_after_kib: after / 1024,
        relay_kib_per_connection: (after.saturating_sub(before)) as f64 / 1024.0 / n,
        generator_kib_per_connection: (own_after.saturating_sub(own_before)) as f64 / 1024.0 / n,
        connect_seconds,
    })
}
