//! Failover: three relay instances on one PostgreSQL and one Redis behind HAProxy (running
//! `deploy/haproxy.cfg` as shipped), N clients connected through it. One instance is killed
//! with SIGKILL; right after, a sender connected to a surviving instance sends every client
//! one message. Measured: from the kill until each client has that message, the clients
//! reconnecting on the core's schedule (1 s, 2 s, 4 s …, each ±20 %).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::SinkExt;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::accounts::{enrol_many, Account};
use crate::relay_process::{Database, RelayProcess};
use crate::wire::{self, PayloadTemplate};

/// Options of `privcomm-bench failover`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Clients connected through the balancer.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// PostgreSQL the instances share (a fresh schema).
    #[arg(long)]
    pub postgres: String,
    /// Redis the instances share.
    #[arg(long)]
    pub redis: String,
}

/// What one failover measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Clients.
    pub clients: usize,
    /// Clients that were connected to the killed instance.
    pub on_killed_instance: usize,
    /// From the kill until every client had its message, seconds.
    pub all_delivering_s: f64,
    /// The same for the clients of the killed instance: median, 99th percentile.
    pub killed_p50_s: f64,
    /// 99th percentile.
    pub killed_p99_s: f64,
    /// The clients of the surviving instances: the slowest.
    pub survivors_max_s: f64,
}

/// HAProxy with the shipped configuration in front of three instances.
struct Balancer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(relays: [&str; 3]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
        let mut command = Command::new("haproxy");
        command
            .arg("-db")
            .arg("-f")
            .arg(config)
            .env("PRIVCOMM_LB_BIND", format!("127.0.0.1:{port}"))
            .env("PRIVCOMM_LB_STATS_SOCKET", dir.path().join("admin.sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (i, base) in relays.iter().enumerate() {
            command.env(
                format!("PRIVCOMM_RELAY{}", i + 1),
                base.trim_start_matches("http://"),
            );
        }
        let child = command.spawn().context("starting haproxy")?;
        Ok(Self {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The core's reconnect delay before attempt `attempt`, with its jitter.
fn core_delay(attempt: u32) -> Duration {
    let jitter = privcomm_core::client::JITTER;
    let factor = rand::rng().random_range((1.0 - jitter)..=(1.0 + jitter));
    privcomm_core::client::base_delay(attempt).mul_f64(factor)
}

/// One client: stays connected through the balancer (reconnecting on the core's schedule),
/// acks what it gets, and reports the first message stamped after `since` arrives.
async fn client(
    ws_url: String,
    account: Account,
    since: watch::Receiver<Option<u64>>,
    connected: mpsc::Sender<()>,
    arrived: mpsc::Sender<u64>,
) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    let mut announced = false;
    loop {
        let mut socket = match wire::connect(&ws_url, &account.token).await {
            Ok(socket) => socket,
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(core_delay(attempt)).await;
                continue;
            }
        };
        attempt = 0;
        if !announced {
            wire::wait_queue_empty(&mut socket).await?;
            let _ = connected.send(()).await;
            announced = true;
        }
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let frame = wire::parse(text.as_str())?;
            if frame.kind != "encrypted_message" {
                continue;
            }
            if let Some(id) = &frame.id {
                socket
                    .send(Message::Text(wire::ack_frame(id).into()))
                    .await?;
            }
            let stamp = frame.payload.as_deref().and_then(wire::stamp_of);
            let after = *since.borrow();
            if let (Some(stamp), Some(after)) = (stamp, after) {
                if stamp >= after {
                    let _ = arrived.send(wire::now_nanos()).await;
                    return Ok(());
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(core_delay(attempt)).await;
    }
}

/// Runs the failover once.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let database = Database::Postgres {
        url: args.postgres.clone(),
    };
    let first =
        RelayProcess::spawn_instance(&database, args.clients + 100, Some(&args.redis)).await?;
    let mut instances = vec![first];
    for name in ["b", "c"] {
        let peer = instances[0].spawn_peer(name).await?;
        instances.push(peer);
    }
    let result = measure(args, &mut instances).await;
    let mut instances = instances.into_iter();
    let first = instances.next();
    for peer in instances {
        peer.stop().await?;
    }
    if let Some(first) = first {
        first.stop().await?;
    }
    result
}

async fn measure(args: &Args, instances: &mut [RelayProcess]) -> anyhow::Result<Report> {
    let balancer = Balancer::start([&instances[0].base, &instances[1].base, &instances[2].base])?;
    // Two good health checks a second apart before the balancer sends anything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ws_url = format!("ws://127.0.0.1:{}/ws", balancer.port);
    let mut accounts = enrol_many(&instances[0], args.clients + 1, 32).await?;
    let sender_account = accounts.pop().context("a sender account")?;
    let (since_tx, since_rx) = watch::channel(None);
    let (connected_tx, mut connected_rx) = mpsc::channel(args.clients);
    let (arrived_tx, mut arrived_rx) = mpsc::channel(args.clients);
    let ids: Vec<Uuid> = accounts.iter().map(|a| a.user_id).collect();
    let mut tasks = Vec::new();
    for account in accounts {
        tasks.push(tokio::spawn(client(
            ws_url.clone(),
            account,
            since_rx.clone(),
            connected_tx.clone(),
            arrived_tx.clone(),
        )));
    }
    for _ in 0..args.clients {
        tokio::time::timeout(Duration::from_secs(120), connected_rx.recv())
            .await
            .context("clients connecting")?;
    }
    let mut per_instance = Vec::new();
    for instance in instances.iter() {
        per_instance.push(instance.metric("privcomm_ws_connections").await? as usize);
    }
    let (victim, on_killed) = per_instance
        .iter()
        .copied()
        .enumerate()
        .max_by_key(|(_, n)| *n)
        .context("three instances")?;
    let survivor = &instances[(victim + 1) % 3];
    let mut sender = wire::connect(&survivor.ws_url(), &sender_account.token).await?;
    wire::wait_queue_empty(&mut sender).await?;

    let killed_at = wire::now_nanos();
    instances[victim].kill_now();
    let _ = since_tx.send(Some(killed_at));
    let template = Arc::new(PayloadTemplate::new(64));
    for to in &ids {
        let frame = wire::send_frame(*to, Uuid::new_v4(), &template.stamped(wire::now_nanos()));
        sender.feed(Message::Text(frame.into())).await?;
    }
    sender.flush().await?;
    let mut arrivals = Vec::with_capacity(args.clients);
    while arrivals.len() < args.clients {
        match tokio::time::timeout(Duration::from_secs(120), arrived_rx.recv()).await {
            Ok(Some(at)) => arrivals.push(at.saturating_sub(killed_at)),
            _ => bail!(
                "{} of {} clients never got their message",
                args.clients - arrivals.len(),
                args.clients
            ),
        }
    }
    for task in tasks {
        task.await.context("client task")??;
    }
    drop(sender);
    // The clients of the killed instance are the slowest ones: they reconnected.
    arrivals.sort_unstable();
    let (survivors, killed) = arrivals.split_at(args.clients - on_killed.min(args.clients));
    let mut histogram = Histogram::<u64>::new(3)?;
    for nanos in killed {
        histogram.record(*nanos)?;
    }
    let secs = |nanos: u64| nanos as f64 / 1e9;
    Ok(Report {
        clients: args.clients,
        on_killed_instance: on_killed,
        all_delivering_s: secs(arrivals.last().copied().unwrap_or(0)),
        killed_p50_s: secs(histogram.value_at_quantile(0.5)),
        killed_p99_s: secs(histogram.value_at_quantile(0.99)),
        survivors_max_s: secs(survivors.last().copied().unwrap_or(0)),
    })
}
