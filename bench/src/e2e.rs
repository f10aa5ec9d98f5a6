//! Client end to end: Alice's `send_text` → Bob's `MessageReceived`, both real `Client`s
//! (encrypted stores, Signal sessions, receipts flowing back) through the relay process, at a
//! fixed rate. Latency counts from the scheduled send time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use privcomm_core::{Client, ClientEvent, MemorySecretStore, SecretStore};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use crate::relay_process::{cpu_seconds, Database, RelayProcess};
use crate::report::{latency_summary, LatencySummary};

/// Options of `privcomm-bench e2e`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Messages per second from Alice to Bob.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring (sessions warm, caches full).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Directory for the relay's SQLite data (default: the system temp dir, on disk here).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Offered rate.
    pub rate: u64,
    /// Messages measured.
    pub measured: u64,
    /// `send_text` scheduled → Bob's `MessageReceived`.
    pub latency: LatencySummary,
    /// How long `send_text` itself took (queued durably, returned the id).
    pub send_text_call: LatencySummary,
    /// Relay CPU in cores over the measured window.
    pub relay_cpu_cores: f64,
    /// Both clients' CPU (this process) in cores over the measured window.
    pub clients_cpu_cores: f64,
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let database = Database::from_args(None, args.data_dir.clone());
    let relay = RelayProcess::spawn(&database, 100).await?;
    let result = measure(args, &relay).await;
    relay.stop().await?;
    result
}

async fn measure(args: &Args, relay: &RelayProcess) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let secrets = || -> Arc<dyn SecretStore> { Arc::new(MemorySecretStore::new()) };
    let alice = Client::open(dir.path().join("alice"), &relay.base, secrets()).await?;
    // One sender's whole run must land: the receive quota is lifted for the benchmark.
    let bob = Client::open_with(
        dir.path().join("bob"),
        &relay.base,
        secrets(),
        crate::unlimited_receiving(),
    )
    .await?;
    relay.register(&alice, "+1 555 0198 001").await?;
    relay.register(&bob, "+1 555 0198 002").await?;
    alice.connect().await?;
    bob.connect().await?;
    let peer = alice.resolve_peer("+1 555 0198 002").await?;

    // Bob's side: when each message arrived.
    let mut events = bob.events();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let arrivals = tokio::spawn(async move {
        let mut arrived: HashMap<Uuid, Instant> = HashMap::new();
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(ClientEvent::MessageReceived(message)) => {
                        arrived.insert(message.id, Instant::now());
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => bail!("the listener missed {missed} events"),
                    Err(RecvError::Closed) => return Ok(arrived),
                },
                _ = stop_rx.changed() => return Ok(arrived),
            }
        }
    });

    let total = ((args.warmup + args.duration) * args.rate as f64).round() as u64;
    let warmup = (args.warmup * args.rate as f64).round() as u64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut sent: Vec<(Uuid, Instant)> = Vec::with_capacity(total as usize);
    let mut call_times = Histogram::<u64>::new(3)?;
    let me = std::process::id();
    let mut window_start = None;
    for i in 0..total {
        let scheduled = ticker.tick().await.into_std();
        if i == warmup {
            window_start = Some((Instant::now(), relay.cpu_seconds()?, cpu_seconds(me)?));
        }
        let called = Instant::now();
        let id = alice
            .send_text(peer, &format!("end-to-end message {i}"))
            .await?;
        if i >= warmup {
            call_times.record(called.elapsed().as_nanos().max(1) as u64)?;
            sent.push((id, scheduled));
        }
    }
    let (t0, relay0, own0) = window_start.context("no measured window")?;

    // Everything must arrive.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = sent.last().map(|(id, _)| *id);
        let found = match last {
            Some(id) => bob.message(id).await?.is_some(),
            None => true,
        };
        if found || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (relay1, own1) = (relay.cpu_seconds()?, cpu_seconds(me)?);
    // The event follows the store commit that `message` saw.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);
    alice.close().await;
    bob.close().await;
    let arrived = arrivals.await.context("listener task")??;

    let mut latencies = Histogram::<u64>::new(3)?;
    for (id, scheduled) in &sent {
        let at = arrived
            .get(id)
            .with_context(|| format!("message {id} never arrived"))?;
        latencies.record(at.saturating_duration_since(*scheduled).as_nanos().max(1) as u64)?;
    }
    Ok(Report {
        rate: args.rate,
        measured: sent.len() as u64,
        latency: latency_summary(&latencies),
        send_text_call: latency_summary(&call_times),
        relay_cpu_cores: (relay1 - relay0) / elapsed,
        clients_cpu_cores: (own1 - own0) / elapsed,
    })
}
