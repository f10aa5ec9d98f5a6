//! The offline path. Part one, the relay alone: one sender queues N opaque messages for a
//! user who is offline (store rate, per block of the queue to show whether it slows as the
//! queue grows), then that user connects with a raw client and drains them (no decryption).
//! Part two, the real core: Alice's `Client` sends N texts to Bob while his device is off;
//! Bob's `Client` connects and the clock runs until the last of them is decrypted, stored
//! and acked (its `MessageReceived` event; the ack follows on the socket at once), and until
//! the relay holds nothing any more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{FutureExt, SinkExt, StreamExt};
use privcomm_core::{Client, ClientEvent, MemorySecretStore, SecretStore};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::accounts::enrol_many;
use crate::relay_process::{Database, RelayProcess};
use crate::wire::{self, PayloadTemplate};

/// Options of `privcomm-bench offline`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Messages queued for the offline user.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Messages the raw sender keeps in flight.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Payload bytes per raw message.
    #[arg(long, default_value_t = 256)]
    pub payload: usize,
    /// Use PostgreSQL at this URL (a fresh schema) instead of SQLite.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Directory for the relay's SQLite data (default: the system temp dir, on disk here).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Skip part two (the core drain).
    #[arg(long)]
    pub relay_only: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// Messages queued.
    pub messages: usize,
    /// Raw store rate over the whole queue, messages/s (first send → last `sent`).
    pub store_per_sec: f64,
    /// Store rate of each tenth of the queue, messages/s, in order.
    pub store_per_sec_by_tenth: Vec<f64>,
    /// Raw drain: connect → last message read (acks sent as read), seconds.
    pub raw_drain_seconds: f64,
    /// Core: Alice's `send_text` of every message until her outbox is empty (all stored at
    /// the relay), messages/s.
    pub core_store_per_sec: Option<f64>,
    /// Core drain: `connect` → Bob's last `MessageReceived` (decrypted, stored, ack sent), s.
    pub core_drain_seconds: Option<f64>,
    /// Core drain until the relay holds nothing (every ack committed, receipts delivered), s.
    pub core_drain_relay_empty_seconds: Option<f64>,
}

/// Runs the benchmark.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let database = Database::from_args(args.postgres.clone(), args.data_dir.clone());
    let relay = RelayProcess::spawn(&database, 1000).await?;
    let result = measure(args, &relay, database.label()).await;
    relay.stop().await?;
    result
}

async fn measure(
    args: &Args,
    relay: &RelayProcess,
    database: &'static str,
) -> anyhow::Result<Report> {
    let n = args.messages.max(1);
    let accounts = enrol_many(relay, 2, 2).await?;
    let (sender, recipient) = (&accounts[0], &accounts[1]);
    let template = PayloadTemplate::new(args.payload);

    // Part one: queue for an offline user.
    let mut socket = wire::connect(&relay.ws_url(), &sender.token).await?;
    wire::wait_queue_empty(&mut socket).await?;
    let id_base = Uuid::new_v4().as_u128();
    let tenth = n.div_ceil(10);
    let mut block_ends = Vec::new();
    let (mut next, mut confirmed, mut in_flight) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    while confirmed < n {
        while in_flight < args.window && next < n {
            next += 1;
            let id = Uuid::from_u128(id_base.wrapping_add(next as u128));
            let frame = wire::send_frame(recipient.user_id, id, &template.stamped(0));
            socket.feed(Message::Text(frame.into())).await?;
            in_flight += 1;
        }
        socket.flush().await?;
        let Some(message) = socket.next().await else {
            bail!("the relay closed the sender's connection")
        };
        let mut message = Some(message);
        while let Some(m) = message {
            if let Message::Text(text) = m? {
                let frame = wire::parse(text.as_str())?;
                match frame.kind.as_ref() {
                    "sent" => {
                        in_flight -= 1;
                        confirmed += 1;
                        if confirmed % tenth == 0 || confirmed == n {
                            block_ends.push((confirmed, started.elapsed()));
                        }
                    }
                    "error" => bail!("the relay refused a message: {:?}", frame.code),
                    _ => {}
                }
            }
            message = socket.next().now_or_never().flatten();
        }
    }
    let store_seconds = started.elapsed().as_secs_f64();
    let mut store_per_sec_by_tenth = Vec::new();
    let mut previous = (0usize, Duration::ZERO);
    for &(count, at) in &block_ends {
        let span = (at - previous.1).as_secs_f64();
        if span > 0.0 {
            store_per_sec_by_tenth.push((count - previous.0) as f64 / span);
        }
        previous = (count, at);
    }
    drop(socket);

    // The raw drain: read everything, acking as it arrives.
    let started = Instant::now();
    let mut socket = wire::connect(&relay.ws_url(), &recipient.token).await?;
    let mut received = 0usize;
    while received < n {
        let Some(message) = socket.next().await else {
            bail!("the relay closed the recipient's connection")
        };
        let mut message = Some(message);
        let mut acks = 0;
        while let Some(m) = message {
            if let Message::Text(text) = m? {
                let frame = wire::parse(text.as_str())?;
                if frame.kind == "encrypted_message" {
                    let id = frame.id.context("delivery without id")?;
                    socket
                        .feed(Message::Text(wire::ack_frame(&id).into()))
                        .await?;
                    received += 1;
                    acks += 1;
                }
            }
            message = socket.next().now_or_never().flatten();
        }
        if acks > 0 {
            socket.flush().await?;
        }
    }
    let raw_drain_seconds = started.elapsed().as_secs_f64();
    drop(socket);

    let mut report = Report {
        database,
        messages: n,
        store_per_sec: n as f64 / store_seconds,
        store_per_sec_by_tenth,
        raw_drain_seconds,
        core_store_per_sec: None,
        core_drain_seconds: None,
        core_drain_relay_empty_seconds: None,
    };
    if !args.relay_only {
        core_drain(relay, n, &mut report).await?;
    }
    Ok(report)
}

/// Part two: the same through two real clients.
async fn core_drain(relay: &RelayProcess, n: usize, report: &mut Report) -> anyhow::Result<()> {
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
    let alice_id = relay.register(&alice, "+1 555 0199 001").await?;
    relay.register(&bob, "+1 555 0199 002").await?;
    alice.connect().await?;
    let peer = alice.resolve_peer("+1 555 0199 002").await?;

    let started = Instant::now();
    for i in 0..n {
        alice
            .send_text(peer, &format!("offline message {i}"))
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while alice.outbox_len().await? > 0 {
        if Instant::now() > deadline {
            bail!("Alice's outbox did not empty");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    report.core_store_per_sec = Some(n as f64 / started.elapsed().as_secs_f64());

    let mut events = bob.events();
    let started = Instant::now();
    bob.connect().await?;
    let mut received = 0usize;
    let wait = tokio::time::sleep(Duration::from_secs(600));
    tokio::pin!(wait);
    while received < n {
        tokio::select! {
            event = events.recv() => match event {
                Ok(ClientEvent::MessageReceived(_)) => received += 1,
                Ok(_) => {}
                // The events happened; this subscriber only missed hearing of them.
                Err(RecvError::Lagged(missed)) => received += usize::try_from(missed).unwrap_or(0),
                Err(RecvError::Closed) => bail!("Bob's client closed"),
            },
            _ = &mut wait => bail!("Bob received {received} of {n}"),
        }
    }
    report.core_drain_seconds = Some(started.elapsed().as_secs_f64());
    loop {
        if relay.metric("privcomm_queue_depth").await? == 0.0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the relay still holds messages");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    report.core_drain_relay_empty_seconds = Some(started.elapsed().as_secs_f64());
    // Counted a page at a time (a history page holds at most MAX_HISTORY_PAGE messages).
    let mut stored = 0;
    let mut cursor = None;
    loop {
        let page = bob
            .history(alice_id, cursor, privcomm_core::client::MAX_HISTORY_PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        cursor = Some(privcomm_core::HistoryCursor {
            sent_at: last.sent_at,
            id: last.id,
        });
        stored += page.len();
    }
    if stored < n {
        bail!("Bob's history holds {stored} of {n} messages");
    }
    alice.close().await;
    bob.close().await;
    Ok(())
}
