//! Relay throughput: N online sender → receiver pairs over real WebSockets. Every message
//! takes the full path: stored durably (`sent`), pushed to the receiver, acked, deleted.
//! Senders keep at most `window` messages in flight; at a fixed offered rate each one sends
//! on its own schedule and latency counts from the scheduled time (a late send is not
//! forgiven), at `--rate 0` they send as fast as the window allows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use futures_util::{FutureExt, SinkExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::accounts::{enrol_many, Account};
use crate::relay_process::{cpu_seconds, postgres_cpu_seconds, Database, RelayProcess};
use crate::report::{latency_summary, LatencySummary};
use crate::wire::{self, PayloadTemplate, Socket};

/// Options of `privcomm-bench throughput`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Sender → receiver pairs (2 × pairs connections).
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Offered messages per second over all senders; 0 sends as fast as the windows allow.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Messages each sender may have sent but not yet seen `sent` for.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 256)]
    pub payload: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Use PostgreSQL at this URL (a fresh schema) instead of SQLite.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Directory for the relay's SQLite data (default: the system temp dir, on disk here).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Measured runs against one relay process, each with fresh accounts (a relay that
    /// slows as its tables grow shows it in the later rounds).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Run the relay as a cluster instance on this Redis (needs `--postgres`).
    #[arg(long)]
    pub redis: Option<String>,
    /// Two instances on `--postgres` and `--redis`: senders connect to the first,
    /// receivers to the second, so every message crosses the bus.
    #[arg(long, default_value_t = false)]
    pub cross_instance: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// Relay instances: 1, or 2 with senders on one and receivers on the other.
    pub instances: usize,
    /// Whether the relay ran with Redis (the cluster's bus and rate limits).
    pub redis: bool,
    /// Which run against the same relay process (1 = the first).
    pub round: usize,
    /// Pairs.
    pub pairs: usize,
    /// Offered rate (0 = unbounded).
    pub offered_per_sec: u64,
    /// Window per sender.
    pub window: usize,
    /// Messages delivered per second in the measured window.
    pub delivered_per_sec: f64,
    /// Messages sent per second in the measured window.
    pub sent_per_sec: f64,
    /// Relay CPU, in cores (1.0 = one core busy), over the window.
    pub relay_cpu_cores: f64,
    /// Generator CPU, in cores, over the window.
    pub generator_cpu_cores: f64,
    /// CPU of this machine's PostgreSQL processes, in cores, over the window (PostgreSQL
    /// runs only).
    pub database_cpu_cores: Option<f64>,
    /// That CPU per delivered message, in microseconds (PostgreSQL runs only).
    pub database_cpu_us_per_message: Option<f64>,
    /// Relay CPU per delivered message, in microseconds.
    pub relay_cpu_us_per_message: f64,
    /// Delivery latency: scheduled send → `encrypted_message` read by the receiver.
    pub latency: LatencySummary,
    /// Group commits per second at the relay over the window.
    pub commits_per_sec: f64,
    /// Mean duration of one group commit, ms.
    pub mean_commit_ms: f64,
    /// Mean writes (stores + acks) per group commit.
    pub mean_writes_per_commit: f64,
    /// Messages sent in the whole run.
    pub sent_total: u64,
    /// Messages delivered in the whole run.
    pub delivered_total: u64,
    /// `error` frames received.
    pub errors: u64,
    /// Messages still stored at the relay after the run (0: every one acked and deleted).
    pub left_at_relay: f64,
    /// Deliveries by how the receivers' relay found them (`push`, `bus`, `rescan`, …),
    /// over the whole run.
    pub delivered_by_path: std::collections::BTreeMap<String, f64>,
}

#[derive(Default)]
struct Counters {
    measuring: AtomicBool,
    sent: AtomicU64,
    sent_in_window: AtomicU64,
    delivered: AtomicU64,
    delivered_in_window: AtomicU64,
    errors: AtomicU64,
}

/// Runs the benchmark: `args.rounds` measured runs against one relay process.
pub async fn run(args: &Args) -> anyhow::Result<Vec<Report>> {
    let database = Database::from_args(args.postgres.clone(), args.data_dir.clone());
    if (args.redis.is_some() || args.cross_instance) && args.postgres.is_none() {
        bail!("--redis and --cross-instance need --postgres (instances share one database)");
    }
    if args.cross_instance && args.redis.is_none() {
        bail!("--cross-instance needs --redis");
    }
    let rounds = args.rounds.max(1);
    let max_connections = (args.pairs * 2 + 100) * rounds;
    let relay =
        RelayProcess::spawn_instance(&database, max_connections, args.redis.as_deref()).await?;
    let receivers_relay = if args.cross_instance {
        match relay.spawn_peer("b").await {
            Ok(peer) => Some(peer),
            Err(e) => {
                relay.stop().await?;
                return Err(e);
            }
        }
    } else {
        None
    };
    let relays = Relays {
        senders: &relay,
        receivers: receivers_relay.as_ref().unwrap_or(&relay),
        all: std::iter::once(&relay)
            .chain(receivers_relay.as_ref())
            .collect(),
    };
    let mut reports = Vec::with_capacity(rounds);
    let mut failure = None;
    for round in 1..=rounds {
        match measure(args, &relays, database.label(), round).await {
            Ok(report) => reports.push(report),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(peer) = receivers_relay {
        peer.stop().await?;
    }
    relay.stop().await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}

/// The relay instances of a run: where senders and receivers connect (the same one unless
/// `--cross-instance`), and all of them (CPU and commit figures are their sums).
struct Relays<'a> {
    senders: &'a RelayProcess,
    receivers: &'a RelayProcess,
    all: Vec<&'a RelayProcess>,
}

impl Relays<'_> {
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.all.iter().map(|relay| relay.cpu_seconds()).sum()
    }
}

async fn measure(
    args: &Args,
    relays: &Relays<'_>,
    database: &'static str,
    round: usize,
) -> anyhow::Result<Report> {
    let relay = relays.senders;
    let on_postgres = args.postgres.is_some();
    let accounts = enrol_many(relay, args.pairs * 2, 32).await?;
    // Accounts alternate sender, receiver (paired below).
    let urls = [relays.senders.ws_url(), relays.receivers.ws_url()];
    let sockets: Vec<(Account, Socket)> = stream::iter(accounts.into_iter().enumerate())
        .map(|(i, account)| {
            let ws_url = urls[i % 2].clone();
            async move {
                let mut socket = wire::connect(&ws_url, &account.token).await?;
                wire::wait_queue_empty(&mut socket).await?;
                anyhow::Ok((account, socket))
            }
        })
        .buffered(32)
        .try_collect()
        .await?;

    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (finish_tx, finish_rx) = watch::channel(false);
    let template = Arc::new(PayloadTemplate::new(args.payload));
    let per_sender_rate = (args.rate > 0).then(|| args.rate as f64 / args.pairs as f64);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut sockets = sockets.into_iter();
    while let (Some((_, sender)), Some((receiver_account, receiver))) =
        (sockets.next(), sockets.next())
    {
        senders.push(tokio::spawn(send_loop(
            sender,
            receiver_account.user_id,
            per_sender_rate,
            args.window,
            template.clone(),
            counters.clone(),
            stop_rx.clone(),
        )));
        receivers.push(tokio::spawn(receive_loop(
            receiver,
            counters.clone(),
            finish_rx.clone(),
        )));
    }

    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let me = std::process::id();
    let commits0 = CommitStats::read(&relays.all).await?;
    let (relay_cpu0, own_cpu0) = (relays.cpu_seconds()?, cpu_seconds(me)?);
    let db_cpu0 = postgres_cpu_seconds();
    let started = Instant::now();
    counters.measuring.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    counters.measuring.store(false, Ordering::Release);
    let elapsed = started.elapsed().as_secs_f64();
    let (relay_cpu1, own_cpu1) = (relays.cpu_seconds()?, cpu_seconds(me)?);
    let db_cpu1 = postgres_cpu_seconds();
    let commits = CommitStats::read(&relays.all).await?.since(&commits0);

    // Stop sending, wait for everything in flight to arrive, then stop the receivers.
    let _ = stop_tx.send(true);
    for sender in senders {
        sender.await.context("sender task")??;
    }
    let sent_total = counters.sent.load(Ordering::Acquire);
    let deadline = Instant::now() + Duration::from_secs(60);
    while counters.delivered.load(Ordering::Acquire) < sent_total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Acks of the last deliveries still have to be committed.
    let mut left_at_relay = f64::NAN;
    for _ in 0..250 {
        left_at_relay = relay.metric("privcomm_queue_depth").await?;
        if left_at_relay == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered_by_path = relays
        .receivers
        .metric_by("privcomm_messages_delivered_by_path_total", "path")
        .await?;
    let _ = finish_tx.send(true);
    let mut latencies = Histogram::<u64>::new(3)?;
    for receiver in receivers {
        latencies.add(receiver.await.context("receiver task")??)?;
    }
    let delivered_total = counters.delivered.load(Ordering::Acquire);
    if delivered_total < sent_total {
        bail!(
            "{} of {sent_total} messages never arrived",
            sent_total - delivered_total
        );
    }
    let delivered_in_window = counters.delivered_in_window.load(Ordering::Acquire) as f64;
    let per_message_us = |cpu_seconds: f64| cpu_seconds / delivered_in_window.max(1.0) * 1e6;
    let database_cpu = on_postgres.then_some(db_cpu1 - db_cpu0);
    Ok(Report {
        database,
        instances: relays.all.len(),
        redis: args.redis.is_some(),
        round,
        pairs: args.pairs,
        offered_per_sec: args.rate,
        window: args.window,
        delivered_per_sec: delivered_in_window / elapsed,
        sent_per_sec: counters.sent_in_window.load(Ordering::Acquire) as f64 / elapsed,
        relay_cpu_cores: (relay_cpu1 - relay_cpu0) / elapsed,
        generator_cpu_cores: (own_cpu1 - own_cpu0) / elapsed,
        database_cpu_cores: database_cpu.map(|cpu| cpu / elapsed),
        database_cpu_us_per_message: database_cpu.map(per_message_us),
        relay_cpu_us_per_message: per_message_us(relay_cpu1 - relay_cpu0),
        latency: latency_summary(&latencies),
        commits_per_sec: commits.count / elapsed,
        mean_commit_ms: commits.seconds / commits.count.max(1.0) * 1e3,
        mean_writes_per_commit: commits.writes / commits.count.max(1.0),
        sent_total,
        delivered_total,
        errors: counters.errors.load(Ordering::Acquire),
        left_at_relay,
        delivered_by_path,
    })
}

/// The relay's group-commit counters.
struct CommitStats {
    count: f64,
    seconds: f64,
    writes: f64,
}

impl CommitStats {
    /// The sums over `relays`.
    async fn read(relays: &[&RelayProcess]) -> anyhow::Result<Self> {
        let mut stats = Self {
            count: 0.0,
            seconds: 0.0,
            writes: 0.0,
        };
        for relay in relays {
            stats.count += relay
                .metric("privcomm_write_batch_duration_seconds_count")
                .await?;
            stats.seconds += relay
                .metric("privcomm_write_batch_duration_seconds_sum")
                .await?;
            stats.writes += relay.metric("privcomm_write_batch_size_sum").await?;
        }
        Ok(stats)
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            count: self.count - earlier.count,
            seconds: self.seconds - earlier.seconds,
            writes: self.writes - earlier.writes,
        }
    }
}

fn stamp_of_instant(at: tokio::time::Instant) -> u64 {
    u64::try_from(
        at.into_std()
            .saturating_duration_since(wire::epoch())
            .as_nanos(),
    )
    .unwrap_or(0)
}

async fn send_loop(
    socket: Socket,
    to: Uuid,
    rate: Option<f64>,
    window: usize,
    template: Arc<PayloadTemplate>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (mut sink, mut stream) = socket.split();
    let mut ticker = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
        t
    });
    let mut due: VecDeque<u64> = VecDeque::new();
    let mut in_flight = 0usize;
    let mut stopping = false;
    loop {
        let mut wrote = false;
        while in_flight < window && !stopping {
            let stamp = if ticker.is_some() {
                match due.pop_front() {
                    Some(stamp) => stamp,
                    None => break,
                }
            } else {
                wire::now_nanos()
            };
            // Random, as the core's outbox ids are: the relay's index of them sees no order.
            let id = Uuid::new_v4();
            let frame = wire::send_frame(to, id, &template.stamped(stamp));
            sink.feed(Message::Text(frame.into())).await?;
            in_flight += 1;
            counters.sent.fetch_add(1, Ordering::Relaxed);
            if counters.measuring.load(Ordering::Relaxed) {
                counters.sent_in_window.fetch_add(1, Ordering::Relaxed);
            }
            wrote = true;
        }
        if wrote {
            sink.flush().await?;
        }
        if stopping && in_flight == 0 {
            return Ok(());
        }
        tokio::select! {
            biased;
            incoming = stream.next() => {
                let Some(first) = incoming else { bail!("the relay closed the connection") };
                let mut next = Some(first);
                while let Some(message) = next {
                    if let Message::Text(text) = message? {
                        let frame = wire::parse(text.as_str())?;
                        match frame.kind.as_ref() {
                            "sent" => in_flight = in_flight.saturating_sub(1),
                            "error" => {
                                in_flight = in_flight.saturating_sub(1);
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                    next = stream.next().now_or_never().flatten();
                }
            }
            at = next_tick(&mut ticker), if !stopping => {
                due.push_back(stamp_of_instant(at));
            }
            _ = stop.changed(), if !stopping => stopping = true,
        }
    }
}

async fn next_tick(ticker: &mut Option<tokio::time::Interval>) -> tokio::time::Instant {
    match ticker {
        Some(ticker) => ticker.tick().await,
        None => std::future::pending().await,
    }
}

async fn receive_loop(
    socket: Socket,
    counters: Arc<Counters>,
    mut finish: watch::Receiver<bool>,
) -> anyhow::Result<Histogram<u64>> {
    let (mut sink, mut stream) = socket.split();
    let mut latencies = Histogram::<u64>::new(3)?;
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let Some(first) = incoming else { bail!("the relay closed the connection") };
                let mut next = Some(first);
                let mut acks = 0;
                while let Some(message) = next {
                    if let Message::Text(text) = message? {
                        let frame = wire::parse(text.as_str())?;
                        if frame.kind == "encrypted_message" {
                            let id = frame.id.context("delivery without id")?;
                            let stamp = frame
                                .payload
                                .as_deref()
                                .and_then(wire::stamp_of)
                                .context("delivery without a stamp")?;
                            if counters.measuring.load(Ordering::Relaxed) {
                                latencies.record(wire::since(stamp).as_nanos().max(1) as u64)?;
                                counters.delivered_in_window.fetch_add(1, Ordering::Relaxed);
                            }
                            counters.delivered.fetch_add(1, Ordering::Relaxed);
                            sink.feed(Message::Text(wire::ack_frame(&id).into())).await?;
                            acks += 1;
                        }
                    }
                    next = stream.next().now_or_never().flatten();
                }
                if acks > 0 {
                    sink.flush().await?;
                }
            }
            _ = finish.changed() => return Ok(latencies),
        }
    }
}
