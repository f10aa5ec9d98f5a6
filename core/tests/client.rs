//! The public `Client` end to end against a real relay on an ephemeral port.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

mod common;
#[path = "../../server/tests/support/pg_cluster.rs"]
mod pg_cluster;
#[path = "../../server/tests/support/redis_server.rs"]
mod redis_server;

use common::{relay, relay_binary, until, ChildRelay, Relay};
use privcomm_core::{Client, ClientEvent, ConnectionState, MemorySecretStore, MessageState};
use uuid::Uuid;

async fn client(dir: &std::path::Path, name: &str, url: &str, number: &str) -> Client {
    let client = Client::open(dir.join(name), url, Arc::new(MemorySecretStore::new()))
        .await
        .unwrap();
    common::register(&client, url, number).await;
    client
}

/// The whole history with `peer`, newest first, a page at a time.
async fn history_all(
    client: &Client,
    peer: Uuid,
) -> Result<Vec<privcomm_core::StoredMessage>, privcomm_core::CoreError> {
    let mut all: Vec<privcomm_core::StoredMessage> = Vec::new();
    loop {
        let cursor = all.last().map(|m| privcomm_core::HistoryCursor {
            sent_at: m.sent_at,
            id: m.id,
        });
        let page = client.history(peer, cursor, 1000).await?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

/// Collects `count` received texts from `peer`, in arrival order, and the delivered ids.
struct Tally {
    received: Vec<String>,
    delivered: HashSet<Uuid>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_exchange_arrives_in_order_exactly_once_and_is_delivered() {
    const COUNT: usize = 1000;
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let url = relay.server.base_url();
    let alice = client(dir.path(), "alice", &url, "+4930111111").await;
    let bob = client(dir.path(), "bob", &url, "+4930222222").await;
    let mut alice_events = alice.events();
    let mut bob_events = bob.events();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    assert_eq!(alice.connection_state(), ConnectionState::Connected);
    let bob_id = alice.resolve_peer("+49 30 222222").await.unwrap();
    let alice_id = bob.resolve_peer("+4930111111").await.unwrap();
    assert_eq!(Some(bob_id), bob.user_id().await.unwrap());

    let mut alice_sent = Vec::new();
    let mut bob_sent = Vec::new();
    for i in 0..COUNT {
        alice_sent.push(
            alice
                .send_text(bob_id, &format!("a→b {i:04}"))
                .await
                .unwrap(),
        );
        bob_sent.push(
            bob.send_text(alice_id, &format!("b→a {i:04}"))
                .await
                .unwrap(),
        );
    }

    let mut tallies: HashMap<&str, Tally> = HashMap::new();
    for (name, events, sent) in [
        ("alice", &mut alice_events, &alice_sent),
        ("bob", &mut bob_events, &bob_sent),
    ] {
        let mut tally = Tally {
            received: Vec::new(),
            delivered: HashSet::new(),
        };
        let sent: HashSet<Uuid> = sent.iter().copied().collect();
        until(events, Duration::from_secs(120), |event| {
            match event {
                ClientEvent::MessageReceived(m) => tally.received.push(m.body.clone()),
                ClientEvent::MessageStateChanged {
                    id,
                    state: MessageState::Delivered,
                } if sent.contains(id) => {
                    tally.delivered.insert(*id);
                }
                _ => {}
            }
            tally.received.len() >= COUNT && tally.delivered.len() >= COUNT
        })
        .await;
        tallies.insert(name, tally);
    }
    let expect = |prefix: &str| {
        (0..COUNT)
            .map(|i| format!("{prefix} {i:04}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tallies["bob"].received,
        expect("a→b"),
        "in order, each once"
    );
    assert_eq!(tallies["alice"].received, expect("b→a"));
    // Nothing extra arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alice_events
        .try_recv()
        .map_or(true, |e| !matches!(e, ClientEvent::MessageReceived(_))));
    // History agrees.
    let history = history_all(&bob, alice_id).await.unwrap();
    assert_eq!(history.iter().filter(|m| !m.outgoing).count(), COUNT);
    assert_eq!(
        history
            .iter()
            .filter(|m| m.outgoing && m.state == MessageState::Delivered)
            .count(),
        COUNT
    );
    assert_eq!(alice.outbox_len().await.unwrap(), 0);
    alice.close().await;
    bob.close().await;
    relay.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_gets_everything_once_and_sender_sees_delivered() {
    const COUNT: usize = 500;
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let url = relay.server.base_url();
    let alice = client(dir.path(), "alice", &url, "+4930111111").await;
    let bob = client(dir.path(), "bob", &url, "+4930222222").await;
    let mut alice_events = alice.events();
    alice.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930222222").await.unwrap();
    let mut sent = HashSet::new();
    for i in 0..COUNT {
        sent.insert(
            alice
                .send_text(bob_id, &format!("while you were out {i:03}"))
                .await
                .unwrap(),
        );
    }
    // Everything reaches the relay while Bob is offline.
    let mut at_relay = HashSet::new();
    until(&mut alice_events, Duration::from_secs(60), |event| {
        if let ClientEvent::MessageStateChanged {
            id,
            state: MessageState::Sent,
        } = event
        {
            at_relay.insert(*id);
        }
        at_relay.len() == COUNT
    })
    .await;
    assert_eq!(alice.outbox_len().await.unwrap(), 0);

    let mut bob_events = bob.events();
    bob.connect().await.unwrap();
    let mut received = Vec::new();
    until(&mut bob_events, Duration::from_secs(60), |event| {
        if let ClientEvent::MessageReceived(m) = event {
            received.push(m.body.clone());
        }
        received.len() == COUNT
    })
    .await;
    assert_eq!(
        received,
        (0..COUNT)
            .map(|i| format!("while you were out {i:03}"))
            .collect::<Vec<_>>()
    );
    let mut delivered = HashSet::new();
    until(&mut alice_events, Duration::from_secs(60), |event| {
        if let ClientEvent::MessageStateChanged {
            id,
            state: MessageState::Delivered,
        } = event
        {
            assert!(sent.contains(id));
            delivered.insert(*id);
        }
        delivered.len() == COUNT
    })
    .await;
    // Reconnecting Bob brings nothing twice.
    bob.disconnect().await;
    bob.connect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(event) = bob_events.try_recv() {
        assert!(
            !matches!(event, ClientEvent::MessageReceived(_)),
            "a message arrived twice"
        );
    }
    alice.close().await;
    bob.close().await;
    relay.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_while_offline_survives_restart() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let url = relay.server.base_url();
    let secrets = Arc::new(MemorySecretStore::new());
    let alice = Client::open(dir.path().join("alice"), &url, secrets.clone())
        .await
        .unwrap();
    common::register(&alice, &url, "+4930111111").await;
    let bob = client(dir.path(), "bob", &url, "+4930222222").await;
    let bob_id = alice.resolve_peer("+4930222222").await.unwrap();
    // Not connected: queued only.
    let id = alice.send_text(bob_id, "written offline").await.unwrap();
    assert_eq!(
        alice.message(id).await.unwrap().unwrap().state,
        MessageState::Queued
    );
    alice.close().await;

    let alice = Client::open(dir.path().join("alice"), &url, secrets)
        .await
        .unwrap();
    assert_eq!(alice.outbox_len().await.unwrap(), 1);
    let mut bob_events = bob.events();
    bob.connect().await.unwrap();
    alice.connect().await.unwrap();
    let mut got = None;
    until(&mut bob_events, Duration::from_secs(30), |event| {
        if let ClientEvent::MessageReceived(m) = event {
            got = Some(m.clone());
        }
        got.is_some()
    })
    .await;
    let got = got.unwrap();
    assert_eq!((got.id, got.body.as_str()), (id, "written offline"));
    alice.close().await;
    bob.close().await;
    relay.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn reconnects_back_off_1_2_4_8_16_30_30_seconds() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let url = relay.server.base_url();
    let secrets = Arc::new(MemorySecretStore::new());
    let alice = Client::open(dir.path().join("alice"), &url, secrets.clone())
        .await
        .unwrap();
    common::register(&alice, &url, "+4930111111").await;
    alice.close().await;
    relay.server.shutdown().await.unwrap();

    // The relay is gone; time is simulated from here on.
    let alice = Client::open(dir.path().join("alice"), &url, secrets)
        .await
        .unwrap();
    let mut events = alice.events();
    tokio::time::pause();
    let connecting = tokio::spawn({
        let alice = alice.clone();
        async move { alice.connect().await }
    });
    // A paused clock jumps ahead whenever the runtime idles, so a tokio timeout cannot guard
    // this loop; a real-time watchdog does.
    let (finished, watchdog) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            watchdog.recv_timeout(Duration::from_secs(120))
        {
            eprintln!("backoff test stuck for two minutes");
            std::process::exit(1);
        }
    });
    let mut delays = Vec::new();
    while delays.len() < 7 {
        match events.recv().await {
            Ok(ClientEvent::ConnectionStateChanged(ConnectionState::Reconnecting {
                attempt,
                in_ms,
            })) => {
                assert_eq!(attempt as usize, delays.len() + 1);
                delays.push(in_ms);
            }
            Ok(_) => {}
            Err(e) => panic!("event stream failed: {e}"),
        }
    }
    let _ = finished.send(());
    for (in_ms, base_secs) in delays.iter().zip([1u64, 2, 4, 8, 16, 30, 30]) {
        let base = base_secs as f64 * 1000.0;
        let jitter = privcomm_core::client::JITTER;
        assert!(
            (*in_ms as f64) >= base * (1.0 - jitter) - 1.0
                && (*in_ms as f64) <= base * (1.0 + jitter) + 1.0,
            "delay {in_ms} ms for a {base_secs} s step: {delays:?}"
        );
    }
    assert!(!connecting.is_finished(), "connect() waits for the relay");
    connecting.abort();
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_prekeys_are_topped_up_after_connecting() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let url = relay.server.base_url();
    let bob = client(dir.path(), "bob", &url, "+4930222222").await;
    let bob_id = bob.user_id().await.unwrap().unwrap();
    let store = relay.server.state().store.clone();
    assert_eq!(store.count_one_time_prekeys(bob_id).await.unwrap(), 100);
    // Others start 90 sessions with Bob while he is away.
    for i in 0..90 {
        let other = client(
            dir.path(),
            &format!("other{i}"),
            &url,
            &format!("+49301{i:06}"),
        )
        .await;
        other.resolve_peer("+4930222222").await.unwrap();
        other.close().await;
    }
    assert_eq!(store.count_one_time_prekeys(bob_id).await.unwrap(), 10);
    bob.connect().await.unwrap();
    assert_eq!(store.count_one_time_prekeys(bob_id).await.unwrap(), 100);
    bob.close().await;
    relay.server.shutdown().await.unwrap();
}

/// Collects the bodies `client` receives, in arrival order, until it has `count`.
fn collect_arrivals(client: &Client, count: usize) -> tokio::task::JoinHandle<Vec<String>> {
    let mut events = client.events();
    tokio::spawn(async move {
        let mut bodies = Vec::new();
        while bodies.len() < count {
            match events.recv().await {
                Ok(ClientEvent::MessageReceived(m)) => bodies.push(m.body),
                Ok(_) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
        bodies
    })
}

/// Alice and Bob each send the other the texts numbered `range` (`a 0000` …, `b 0000` …).
async fn send_both_ways(
    alice: &Client,
    bob: &Client,
    bob_id: Uuid,
    alice_id: Uuid,
    range: std::ops::Range<usize>,
) {
    for i in range {
        alice.send_text(bob_id, &format!("a {i:04}")).await.unwrap();
        bob.send_text(alice_id, &format!("b {i:04}")).await.unwrap();
    }
}

/// Waits (at most a minute) until `events` has reported `count` received messages.
async fn until_received(events: &mut tokio::sync::broadcast::Receiver<ClientEvent>, count: usize) {
    let mut seen = 0;
    until(events, Duration::from_secs(60), |event| {
        if matches!(event, ClientEvent::MessageReceived(_)) {
            seen += 1;
        }
        seen >= count
    })
    .await;
}

/// Waits for both directions to arrive whole, in order, and checks the histories.
async fn expect_exchange(
    arrivals: [(tokio::task::JoinHandle<Vec<String>>, &str); 2],
    histories: [(&Client, Uuid); 2],
    count: usize,
) {
    for (task, prefix) in arrivals {
        let bodies = tokio::time::timeout(Duration::from_secs(240), task)
            .await
            .expect("everything arrives")
            .expect("collector");
        assert_eq!(
            bodies,
            (0..count)
                .map(|i| format!("{prefix} {i:04}"))
                .collect::<Vec<_>>()
        );
    }
    for (me, peer) in histories {
        let history = history_all(me, peer).await.unwrap();
        let incoming: HashSet<Uuid> = history
            .iter()
            .filter(|m| !m.outgoing)
            .map(|m| m.id)
            .collect();
        assert_eq!(incoming.len(), count, "each message stored once");
    }
}

/// What an interruption may need to bring Bob back.
struct BobSetup {
    dir: std::path::PathBuf,
    url: String,
    secrets: Arc<MemorySecretStore>,
}

/// Alice and Bob exchange `count` numbered texts each way; after `pause_at` of them,
/// `interrupt` disturbs things. Afterwards both histories must hold every message once.
async fn exchange_with_interruption<F, Fut>(count: usize, pause_at: usize, interrupt: F)
where
    F: FnOnce(Relay, Client, Client, BobSetup) -> Fut,
    Fut: std::future::Future<Output = (Relay, Client, Client)>,
{
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let url = relay.server.base_url();
    let alice = client(dir.path(), "alice", &url, "+4930111111").await;
    let bob_secrets = Arc::new(MemorySecretStore::new());
    let bob = Client::open(dir.path().join("bob"), &url, bob_secrets.clone())
        .await
        .unwrap();
    common::register(&bob, &url, "+4930222222").await;
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930222222").await.unwrap();
    let alice_id = bob.resolve_peer("+4930111111").await.unwrap();
    let alice_arrivals = collect_arrivals(&alice, count);
    send_both_ways(&alice, &bob, bob_id, alice_id, 0..pause_at).await;
    let setup = BobSetup {
        dir: dir.path().join("bob"),
        url: url.clone(),
        secrets: bob_secrets,
    };
    let (relay, alice, bob) = interrupt(relay, alice, bob, setup).await;
    send_both_ways(&alice, &bob, bob_id, alice_id, pause_at..count).await;
    // Alice was never interrupted: her arrivals are checked in order. Bob's app restarted,
    // so his side is checked in his stored history (each once, in the sender's order).
    let alice_got = tokio::time::timeout(Duration::from_secs(240), alice_arrivals)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        alice_got,
        (0..count).map(|i| format!("b {i:04}")).collect::<Vec<_>>()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let mut incoming: Vec<_> = history_all(&bob, alice_id)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| !m.outgoing)
            .collect();
        if incoming.len() >= count || tokio::time::Instant::now() > deadline {
            // Equal millisecond timestamps are ordered by text, which is numbered.
            incoming.sort_by(|x, y| (x.sent_at, &x.body).cmp(&(y.sent_at, &y.body)));
            let bodies: Vec<String> = incoming.into_iter().map(|m| m.body).collect();
            assert_eq!(
                bodies,
                (0..count).map(|i| format!("a {i:04}")).collect::<Vec<_>>()
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    alice.close().await;
    bob.close().await;
    relay.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reopened_mid_stream_loses_and_duplicates_nothing() {
    exchange_with_interruption(2000, 700, |relay, alice, bob, setup| async move {
        // Bob's app is closed and opened again while messages are in flight both ways.
        bob.close().await;
        let bob = Client::open(setup.dir, &setup.url, setup.secrets)
            .await
            .unwrap();
        bob.connect().await.unwrap();
        (relay, alice, bob)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_mid_exchange_loses_and_duplicates_nothing() {
    const COUNT: usize = 2000;
    let binary = tokio::task::spawn_blocking(relay_binary).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let codes = common::child_codes(port).await;
    let relay = ChildRelay::start(&binary, data.path(), port, &codes);
    ChildRelay::wait_ready(port).await;
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let alice = client(dir.path(), "alice", &url, "+4930111111").await;
    let bob = client(dir.path(), "bob", &url, "+4930222222").await;
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930222222").await.unwrap();
    let alice_id = bob.resolve_peer("+4930111111").await.unwrap();
    let mut bob_events = bob.events();
    let bob_arrivals = collect_arrivals(&bob, COUNT);
    let alice_arrivals = collect_arrivals(&alice, COUNT);
    send_both_ways(&alice, &bob, bob_id, alice_id, 0..COUNT / 2).await;
    // Kill -9 while deliveries are under way, then restart on the same data dir and port.
    until_received(&mut bob_events, 200).await;
    relay.kill_hard();
    let _relay = ChildRelay::start(&binary, data.path(), port, &codes);
    ChildRelay::wait_ready(port).await;
    send_both_ways(&alice, &bob, bob_id, alice_id, COUNT / 2..COUNT).await;
    expect_exchange(
        [(bob_arrivals, "a"), (alice_arrivals, "b")],
        [(&bob, alice_id), (&alice, bob_id)],
        COUNT,
    )
    .await;
    alice.close().await;
    bob.close().await;
}

/// Issue 17, acceptance 2: the relay's PostgreSQL is stopped and started again in the
/// middle of a 2,000-message exchange. Sends and deliveries fail while it is down (503,
/// connections closed with "try again later"); the clients reconnect and resend, and every
/// message arrives exactly once, in order. The relay keeps running throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restarted_mid_exchange_loses_and_duplicates_nothing() {
    const COUNT: usize = 2000;
    let cluster = tokio::task::spawn_blocking(pg_cluster::PgCluster::start)
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = common::relay_config(data.path());
    config.database_url = Some(cluster.url(""));
    let server = common::start_relay(config).await;
    let url = server.base_url();
    let dir = tempfile::tempdir().unwrap();
    let alice = client(dir.path(), "alice", &url, "+4930111111").await;
    let bob = client(dir.path(), "bob", &url, "+4930222222").await;
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930222222").await.unwrap();
    let alice_id = bob.resolve_peer("+4930111111").await.unwrap();
    let mut bob_events = bob.events();
    let mut alice_events = alice.events();
    let bob_arrivals = collect_arrivals(&bob, COUNT);
    let alice_arrivals = collect_arrivals(&alice, COUNT);
    send_both_ways(&alice, &bob, bob_id, alice_id, 0..COUNT / 2).await;
    until_received(&mut bob_events, 200).await;
    tokio::task::block_in_place(|| cluster.stop());
    // The outage reaches the clients: the relay closes their connections.
    until(&mut alice_events, Duration::from_secs(60), |event| {
        matches!(
            event,
            ClientEvent::ConnectionStateChanged(ConnectionState::Reconnecting { .. })
        )
    })
    .await;
    // Writes go on while it is down: the clients queue them.
    send_both_ways(&alice, &bob, bob_id, alice_id, COUNT / 2..COUNT * 3 / 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| cluster.start_again());
    send_both_ways(&alice, &bob, bob_id, alice_id, COUNT * 3 / 4..COUNT).await;
    expect_exchange(
        [(bob_arrivals, "a"), (alice_arrivals, "b")],
        [(&bob, alice_id), (&alice, bob_id)],
        COUNT,
    )
    .await;
    // Every delivery was acknowledged and deleted; the relay never stopped serving.
    let store = server.state().store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.pending_total().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mailboxes empty once the acks are written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = reqwest::get(format!("{url}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    alice.close().await;
    bob.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_burst_arrives_once_in_order_and_coalesced_receipts_deliver_it() {
    const COUNT: usize = 600;
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let url = relay.server.base_url();
    let alice = client(dir.path(), "alice", &url, "+4930111111").await;
    let bob = client(dir.path(), "bob", &url, "+4930222222").await;
    let alice_id = alice.user_id().await.unwrap().unwrap();
    let mut alice_events = alice.events();
    alice.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930222222").await.unwrap();
    let mut sent = Vec::new();
    for i in 0..COUNT {
        sent.push(
            alice
                .send_text(bob_id, &format!("burst {i:03}"))
                .await
                .unwrap(),
        );
    }
    let mut at_relay = HashSet::new();
    until(&mut alice_events, Duration::from_secs(60), |event| {
        if let ClientEvent::MessageStateChanged {
            id,
            state: MessageState::Sent,
        } = event
        {
            at_relay.insert(*id);
        }
        at_relay.len() == COUNT
    })
    .await;
    // Alice goes away too, so Bob's receipts wait at the relay where they can be counted.
    alice.disconnect().await;

    let mut bob_events = bob.events();
    bob.connect().await.unwrap();
    let mut received = Vec::new();
    until(&mut bob_events, Duration::from_secs(60), |event| {
        if let ClientEvent::MessageReceived(m) = event {
            received.push((m.id, m.body.clone()));
        }
        received.len() == COUNT
    })
    .await;
    assert_eq!(
        received.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        sent,
        "in order, each once"
    );
    assert_eq!(
        received
            .iter()
            .map(|(_, body)| body.clone())
            .collect::<Vec<_>>(),
        (0..COUNT)
            .map(|i| format!("burst {i:03}"))
            .collect::<Vec<_>>()
    );
    let store = relay.server.state().store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while bob.outbox_len().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "receipts reach the relay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Texts that arrived together are answered together: far fewer receipts than texts.
    let receipts = store
        .pending_messages(alice_id, 0, 10 * COUNT)
        .await
        .unwrap()
        .len();
    assert!(
        (1..COUNT / 2).contains(&receipts),
        "{receipts} receipts for {COUNT} texts"
    );

    alice.connect().await.unwrap();
    let mut delivered = HashSet::new();
    until(&mut alice_events, Duration::from_secs(60), |event| {
        if let ClientEvent::MessageStateChanged {
            id,
            state: MessageState::Delivered,
        } = event
        {
            delivered.insert(*id);
        }
        delivered.len() == COUNT
    })
    .await;
    assert_eq!(delivered, sent.iter().copied().collect::<HashSet<_>>());
    let history = history_all(&alice, bob_id).await.unwrap();
    assert_eq!(history.len(), COUNT);
    assert!(history
        .iter()
        .all(|m| m.outgoing && m.state == MessageState::Delivered));
    let incoming = history_all(&bob, alice_id).await.unwrap();
    assert_eq!(incoming.len(), COUNT, "each stored once");
    // Every delivery and every receipt was acked: the relay holds nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.pending_total().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay queue drains"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice.close().await;
    bob.close().await;
    relay.server.shutdown().await.unwrap();
}

/// Issue 16, acceptance 2: Bob loses his phone. His new phone verifies the number and
/// registers: same user id; the old phone's token is refused; Alice's next message to him
/// is refused by the relay as meant for the old phone, so her client fetches his new keys
/// and raises `IdentityChanged`; once she accepts them, the two talk again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_phone_registers_again_and_contacts_see_the_new_identity() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let url = relay.server.base_url();
    let alice = client(dir.path(), "alice", &url, "+4930444401").await;
    let old_bob = client(dir.path(), "bob-old", &url, "+4930444402").await;
    alice.connect().await.unwrap();
    old_bob.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930444402").await.unwrap();
    let alice_id = old_bob.resolve_peer("+4930444401").await.unwrap();
    let mut old_events = old_bob.events();
    alice.send_text(bob_id, "before").await.unwrap();
    until(
        &mut old_events,
        Duration::from_secs(30),
        |e| matches!(e, ClientEvent::MessageReceived(m) if m.body == "before"),
    )
    .await;

    // The new phone: a new store, the same number.
    let new_bob = Client::open(
        dir.path().join("bob-new"),
        &url,
        Arc::new(MemorySecretStore::new()),
    )
    .await
    .unwrap();
    let registered = common::register(&new_bob, &url, "+4930444402").await;
    assert_eq!(registered, bob_id, "the account keeps its user id");
    // The old phone is disconnected, and what it still holds opens nothing.
    until(&mut old_events, Duration::from_secs(30), |e| {
        matches!(e, ClientEvent::ConnectedElsewhere)
    })
    .await;
    let refused = old_bob.set_registration_lock("1234").await;
    assert!(
        matches!(
            refused,
            Err(privcomm_core::CoreError::Relay { status: 401, .. })
        ),
        "{refused:?}"
    );
    old_bob.close().await;

    let mut new_events = new_bob.events();
    new_bob.connect().await.unwrap();
    let mut alice_events = alice.events();
    let id = alice.send_text(bob_id, "are you there?").await.unwrap();
    until(
        &mut alice_events,
        Duration::from_secs(30),
        |e| matches!(e, ClientEvent::IdentityChanged { peer } if *peer == bob_id),
    )
    .await;
    alice.accept_identity(bob_id).await.unwrap();
    until(&mut new_events, Duration::from_secs(30), |e| {
        matches!(e, ClientEvent::MessageReceived(m) if m.body == "are you there?" && m.peer == alice_id)
    })
    .await;
    until(&mut alice_events, Duration::from_secs(30), |e| {
        matches!(e, ClientEvent::MessageStateChanged { id: got, state: MessageState::Delivered } if *got == id)
    })
    .await;
    // And back.
    let back = new_bob.resolve_peer("+4930444401").await.unwrap();
    assert_eq!(back, alice_id);
    new_bob.send_text(alice_id, "yes, new phone").await.unwrap();
    until(
        &mut alice_events,
        Duration::from_secs(30),
        |e| matches!(e, ClientEvent::MessageReceived(m) if m.body == "yes, new phone"),
    )
    .await;
    alice.close().await;
    new_bob.close().await;
}

/// Issue 16, acceptance 3 through the core: with a registration lock set, a new phone
/// with the right code but no PIN gets `RegistrationLocked` (with the time until it
/// lapses), a wrong PIN the same, and the right PIN registers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_lock_needs_the_pin_on_a_new_phone() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let url = relay.server.base_url();
    let owner = client(dir.path(), "owner", &url, "+4930555501").await;
    let owner_id = owner.user_id().await.unwrap().unwrap();
    assert!(matches!(
        owner.set_registration_lock("12").await,
        Err(privcomm_core::CoreError::InvalidArgument(_))
    ));
    owner.set_registration_lock("4711").await.unwrap();

    let phone = Client::open(
        dir.path().join("new-phone"),
        &url,
        Arc::new(MemorySecretStore::new()),
    )
    .await
    .unwrap();
    phone.request_verification("+4930555501").await.unwrap();
    let code = common::code_for(&url, "+4930555501").await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    assert!(matches!(
        phone.register("+4930555501", wrong, None).await,
        Err(privcomm_core::CoreError::InvalidCode)
    ));
    match phone.register("+4930555501", &code, None).await {
        Err(privcomm_core::CoreError::RegistrationLocked { retry_after_secs }) => {
            assert!(retry_after_secs > 6 * 86_400, "{retry_after_secs}")
        }
        other => panic!("expected RegistrationLocked, got {other:?}"),
    }
    assert!(matches!(
        phone.register("+4930555501", &code, Some("1174")).await,
        Err(privcomm_core::CoreError::RegistrationLocked { .. })
    ));
    assert_eq!(
        phone
            .register("+4930555501", &code, Some("4711"))
            .await
            .unwrap(),
        owner_id
    );
    owner.close().await;
    phone.close().await;
}

/// HAProxy running `deploy/haproxy.cfg` in front of three relay ports, killed when dropped.
struct Balancer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(relays: [u16; 3]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
        let mut command = std::process::Command::new("haproxy");
        command
            .arg("-db")
            .arg("-f")
            .arg(config)
            .env("PRIVCOMM_LB_BIND", format!("127.0.0.1:{port}"))
            .env("PRIVCOMM_LB_STATS_SOCKET", dir.path().join("admin.sock"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (i, relay) in relays.iter().enumerate() {
            command.env(
                format!("PRIVCOMM_RELAY{}", i + 1),
                format!("127.0.0.1:{relay}"),
            );
        }
        let child = command
            .spawn()
            .expect("haproxy runs (scripts/setup.sh installs it)");
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A value of the relay at `port`'s `/metrics` (the sum over label sets).
async fn relay_metric(port: u16, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Issue 18, acceptance 4: two clients through HAProxy in front of three relay instances
/// (one PostgreSQL, one Redis) exchange 2,000 messages; the instance holding Bob is killed
/// with SIGKILL mid-way. Both reconnect through the balancer; every message arrives
/// exactly once, in order, and the mailboxes are empty at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_behind_the_balancer_loses_and_duplicates_nothing() {
    const COUNT: usize = 2000;
    let binary = tokio::task::spawn_blocking(relay_binary).await.unwrap();
    let database = tokio::task::spawn_blocking(pg_cluster::PgCluster::start)
        .await
        .unwrap();
    let redis = tokio::task::spawn_blocking(redis_server::RedisServer::start)
        .await
        .unwrap();
    let ports = [
        common::free_port(),
        common::free_port(),
        common::free_port(),
    ];
    let balancer = Balancer::start(ports);
    let url = format!("http://127.0.0.1:{}", balancer.port);
    let codes = common::child_codes(balancer.port).await;
    let mut env: Vec<(&str, String)> = codes.env().into_iter().collect();
    env.extend([
        ("PRIVCOMM_DATABASE_URL", database.url("")),
        ("PRIVCOMM_REDIS_URL", redis.url()),
        (
            "PRIVCOMM_JWT_SECRET",
            "balancer-test-jwt-secret-0123456789abcdef".into(),
        ),
        (
            "PRIVCOMM_PHONE_PEPPER",
            "balancer-test-phone-pepper-0123456789abcdef".into(),
        ),
        ("PRIVCOMM_TRUSTED_PROXIES", "127.0.0.1/32".into()),
    ]);
    let data: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut relays: Vec<Option<ChildRelay>> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut env = env.clone();
        env.push(("PRIVCOMM_INSTANCE_ID", format!("relay{}", i + 1)));
        relays.push(Some(ChildRelay::start_with(
            &binary,
            data[i].path(),
            *port,
            "warn",
            &env,
            std::process::Stdio::null(),
        )));
    }
    for port in ports {
        ChildRelay::wait_ready(port).await;
    }
    // The balancer sees them all up (two good checks, a second apart).
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dir = tempfile::tempdir().unwrap();
    let alice = client(dir.path(), "alice", &url, "+4930111111").await;
    let bob = client(dir.path(), "bob", &url, "+4930222222").await;
    bob.connect().await.unwrap();
    let mut bob_at = None;
    for _ in 0..100 {
        for (i, port) in ports.iter().enumerate() {
            if relay_metric(*port, "privcomm_ws_connections").await == Some(1.0) {
                bob_at = Some(i);
            }
        }
        if bob_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bob_at = bob_at.expect("Bob is connected to one instance");
    alice.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930222222").await.unwrap();
    let alice_id = bob.resolve_peer("+4930111111").await.unwrap();
    let mut bob_events = bob.events();
    let bob_arrivals = collect_arrivals(&bob, COUNT);
    let alice_arrivals = collect_arrivals(&alice, COUNT);
    send_both_ways(&alice, &bob, bob_id, alice_id, 0..COUNT / 2).await;
    until_received(&mut bob_events, 200).await;
    relays[bob_at].take().expect("running").kill_hard();
    send_both_ways(&alice, &bob, bob_id, alice_id, COUNT / 2..COUNT).await;
    expect_exchange(
        [(bob_arrivals, "a"), (alice_arrivals, "b")],
        [(&bob, alice_id), (&alice, bob_id)],
        COUNT,
    )
    .await;
    let survivor = ports[(bob_at + 1) % 3];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while relay_metric(survivor, "privcomm_queue_depth").await != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mailboxes empty once the acks are written"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    alice.close().await;
    bob.close().await;
    drop(relays);
    drop(balancer);
}
