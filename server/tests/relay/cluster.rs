//! Several relay instances on one PostgreSQL database and one Redis (issue 18): wake-ups
//! over the bus, one live connection per user across instances, rescans while Redis is
//! down, limits that hold across instances. Each test starts its own Redis server.

use std::sync::Arc;
use std::time::Duration;

use privcomm_protocol::ws::ServerFrame;
use privcomm_server::codes::inbox::CodeInbox;
use privcomm_server::{Config, ManualClock, RelayServer};

use crate::common::{
    send_and_confirm, send_numbered, test_config, Db, Device, Endpoint, TestDb, WsClient,
};
use crate::support::redis_server::RedisServer;

/// Instances of one cluster, their database, Redis and code inbox.
struct Cluster {
    relays: Vec<RelayServer>,
    endpoints: Vec<Endpoint>,
    db: TestDb,
    redis: RedisServer,
    _codes: Arc<CodeInbox>,
}

/// The settings every instance shares (secrets, database, Redis); each gets its own name.
fn cluster_config(db: &TestDb, redis: &RedisServer, codes: &CodeInbox, name: &str) -> Config {
    let mut config = test_config(db);
    codes.configure(&mut config);
    config.redis_url = Some(redis.url());
    config.instance_id = Some(name.to_owned());
    config.jwt_secret = Some("cluster-test-jwt-secret-0123456789abcdef".into());
    config.phone_pepper = Some("cluster-test-phone-pepper-0123456789abcdef".into());
    // No ping-cycle rescans unless a test wants them: deliveries are counted by path.
    config.ping_interval_secs = 600;
    config
}

impl Cluster {
    async fn start(instances: usize, adjust: impl Fn(&mut Config)) -> Self {
        let db = TestDb::new(Db::Postgres).await;
        let redis = RedisServer::start();
        let codes = Arc::new(CodeInbox::start().await.expect("code inbox"));
        let clock = ManualClock::new();
        let mut relays = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..instances {
            let name = ["a", "b", "c", "d"][i];
            let mut config = cluster_config(&db, &redis, &codes, name);
            adjust(&mut config);
            let relay = RelayServer::start(config, Arc::new(clock.clone()))
                .await
                .expect("an instance starts");
            endpoints.push(Endpoint::with_codes(relay.base_url(), codes.clone()));
            relays.push(relay);
        }
        let cluster = Self {
            relays,
            endpoints,
            db,
            redis,
            _codes: codes,
        };
        for i in 0..instances {
            cluster.wait_for_bus(i, "connected").await;
        }
        cluster
    }

    /// Waits (up to 20 s) until instance `i`'s `/health` reports the bus as `state`.
    async fn wait_for_bus(&self, i: usize, state: &str) {
        for _ in 0..200 {
            let (_, health) = self.endpoints[i].get("/health", None).await;
            if health["bus"] == state {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("instance {i}: the bus never became {state}");
    }

    async fn finish(self) {
        for relay in self.relays {
            relay.shutdown().await.expect("clean shutdown");
        }
        self.db.cleanup().await;
        drop(self.redis);
    }
}

/// Deliveries instance `endpoint` counted for `path`.
async fn delivered_by(endpoint: &Endpoint, path: &str) -> u64 {
    let (_, text) = endpoint.get("/metrics", None).await;
    let text = text.as_str().expect("metrics text").to_owned();
    text.lines()
        .filter(|line| line.starts_with("privcomm_messages_delivered_by_path_total{"))
        .filter(|line| line.contains(&format!("path=\"{path}\"")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Reads `count` messages, acking each; returns their numbers (`send_numbered`) in order.
async fn receive_numbered(ws: &mut WsClient, count: usize) -> Vec<usize> {
    let mut numbers = Vec::with_capacity(count);
    while numbers.len() < count {
        match ws.frame().await {
            ServerFrame::EncryptedMessage { id, payload, .. } => {
                numbers.push(number_of(&payload.decode("payload").expect("b64")));
                ws.ack(id).await;
            }
            ServerFrame::QueueEmpty => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    numbers
}

fn number_of(payload: &[u8]) -> usize {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|text| text.strip_prefix("message "))
        .and_then(|n| n.parse().ok())
        .expect("a numbered message")
}

/// Acceptance 1: Alice on A, Bob on B (C idle): 1,000 messages each way arrive once, in
/// order, and by the bus (the per-path metric, not timing, says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_between_instances_arrive_once_in_order_by_the_bus() {
    const COUNT: usize = 1000;
    let cluster = Cluster::start(3, |_| {}).await;
    let (a, b) = (&cluster.endpoints[0], &cluster.endpoints[1]);
    let (alice, bob) = (Device::enrol(a, 0).await, Device::enrol(b, 0).await);
    let mut alice_ws = alice.online(a).await;
    let mut bob_ws = bob.online(b).await;

    send_numbered(&mut alice_ws, bob.id(), COUNT).await;
    let got = receive_numbered(&mut bob_ws, COUNT).await;
    assert_eq!(
        got,
        (0..COUNT).collect::<Vec<_>>(),
        "Alice to Bob, in order"
    );
    send_numbered(&mut bob_ws, alice.id(), COUNT).await;
    let got = receive_numbered(&mut alice_ws, COUNT).await;
    assert_eq!(
        got,
        (0..COUNT).collect::<Vec<_>>(),
        "Bob to Alice, in order"
    );
    bob_ws.expect_silence(Duration::from_millis(300)).await;
    alice_ws.expect_silence(Duration::from_millis(300)).await;

    for (endpoint, name) in [(a, "A"), (b, "B")] {
        assert_eq!(
            delivered_by(endpoint, "bus").await,
            COUNT as u64,
            "instance {name} delivered every message after a wake-up from the bus"
        );
        for path in ["push", "rescan", "backlog"] {
            assert_eq!(delivered_by(endpoint, path).await, 0, "{name}: {path}");
        }
    }
    let store = cluster.relays[0].state().store.clone();
    let mut empty = false;
    for _ in 0..50 {
        empty = store.pending_total().await.expect("count") == 0;
        if empty {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(empty, "every message was acked and deleted");
    alice_ws.close().await;
    bob_ws.close().await;
    cluster.finish().await;
}

/// Acceptance 2: Bob, connected to B, connects to C: B closes with 4409; C delivers every
/// message Bob did not ack on B, none he did, and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_on_another_instance_displaces_the_old_one_without_redelivering_acks() {
    const COUNT: usize = 600;
    const ACKED_ON_B: usize = 300;
    let cluster = Cluster::start(3, |_| {}).await;
    let (a, b, c) = (
        &cluster.endpoints[0],
        &cluster.endpoints[1],
        &cluster.endpoints[2],
    );
    let alice = Device::enrol(a, 0).await;
    let bob = Device::enrol(b, 0).await;
    let mut alice_ws = alice.online(a).await;
    send_numbered(&mut alice_ws, bob.id(), COUNT).await;

    for round in 0..3 {
        let mut on_b = bob.connect(b).await;
        let mut acked = Vec::new();
        while acked.len() < ACKED_ON_B.min(COUNT) {
            if let ServerFrame::EncryptedMessage { id, .. } = on_b.frame().await {
                // Acked and not waited for: the acks are still being written when C
                // takes over.
                on_b.ack(id).await;
                acked.push(id);
            }
        }
        let mut on_c = bob.connect(c).await;
        assert_eq!(
            on_b.expect_close().await,
            Some(4409),
            "round {round}: B closes"
        );
        let mut from_c = Vec::new();
        loop {
            match on_c.frame().await {
                ServerFrame::EncryptedMessage { id, .. } => {
                    from_c.push(id);
                    on_c.ack(id).await;
                }
                ServerFrame::QueueEmpty => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut unique = from_c.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            from_c.len(),
            "round {round}: C sends nothing twice"
        );
        let again: Vec<_> = from_c.iter().filter(|id| acked.contains(id)).collect();
        assert!(
            again.is_empty(),
            "round {round}: {} messages acked on B were delivered again by C",
            again.len()
        );
        assert_eq!(
            from_c.len() + acked.len(),
            COUNT,
            "round {round}: nothing lost"
        );
        on_c.close().await;
        if round < 2 {
            // C acked everything: the next round starts from a full mailbox again.
            send_numbered(&mut alice_ws, bob.id(), COUNT).await;
        }
    }
    alice_ws.close().await;
    cluster.finish().await;
}

/// An instance that shuts down (a drain) releases its users over the bus before the bus
/// stops: their presence keys are gone, so their next connection elsewhere has no one to
/// wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_instance_releases_its_users_before_its_bus_stops() {
    let mut cluster = Cluster::start(2, |_| {}).await;
    let b = &cluster.endpoints[1];
    let bob = Device::enrol(b, 0).await;
    let mut on_b = bob.online(b).await;
    let key = format!("privcomm:{{{}}}:at", bob.id());
    assert!(
        cluster.redis.get(&key).is_some_and(|value| value
            .split_once(' ')
            .is_some_and(|(_, h)| h.starts_with("b."))),
        "B names itself as Bob's holder"
    );
    let drained = cluster.relays.remove(1);
    let (shutdown, closed) = tokio::join!(drained.shutdown(), on_b.expect_close());
    shutdown.expect("clean shutdown");
    assert_eq!(closed, Some(1001));
    assert_eq!(
        cluster.redis.get(&key),
        None,
        "B released Bob on its way out"
    );
    cluster.endpoints.remove(1);
    cluster.finish().await;
}

/// Acceptance 5: Redis stops mid-exchange and starts again: nothing is lost; while it is
/// down delivery goes on by rescan (and `/health` says `degraded`), then by the bus again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_goes_on_by_rescan_while_redis_is_down() {
    const EACH: usize = 100;
    let cluster = Cluster::start(2, |config| config.ping_interval_secs = 1).await;
    let (a, b) = (&cluster.endpoints[0], &cluster.endpoints[1]);
    let (alice, bob) = (Device::enrol(a, 0).await, Device::enrol(b, 0).await);
    let mut alice_ws = alice.online(a).await;
    let mut bob_ws = bob.online(b).await;

    send_numbered(&mut alice_ws, bob.id(), EACH).await;
    let mut got = receive_numbered(&mut bob_ws, EACH).await;
    let by_bus_before = delivered_by(b, "bus").await;
    assert!(
        by_bus_before > 0,
        "the bus carries wake-ups while Redis is up"
    );

    cluster.redis.stop();
    cluster.wait_for_bus(0, "disconnected").await;
    cluster.wait_for_bus(1, "disconnected").await;
    let (status, health) = b.get("/health", None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("degraded")));
    let rescans_before = delivered_by(b, "rescan").await;
    send_numbered(&mut alice_ws, bob.id(), EACH).await;
    got.extend(
        receive_numbered(&mut bob_ws, EACH)
            .await
            .iter()
            .map(|n| n + EACH),
    );
    assert_eq!(
        delivered_by(b, "rescan").await - rescans_before,
        EACH as u64,
        "with Redis down every message arrives by rescan"
    );
    assert_eq!(delivered_by(b, "bus").await, by_bus_before);

    cluster.redis.start_again();
    cluster.wait_for_bus(0, "connected").await;
    cluster.wait_for_bus(1, "connected").await;
    let by_bus_again = delivered_by(b, "bus").await;
    send_numbered(&mut alice_ws, bob.id(), EACH).await;
    got.extend(
        receive_numbered(&mut bob_ws, EACH)
            .await
            .iter()
            .map(|n| n + 2 * EACH),
    );
    assert_eq!(
        got,
        (0..3 * EACH).collect::<Vec<_>>(),
        "nothing lost, in order"
    );
    assert!(
        delivered_by(b, "bus").await - by_bus_again >= (EACH / 2) as u64,
        "once Redis is back, the bus carries the wake-ups again"
    );
    bob_ws.expect_silence(Duration::from_millis(300)).await;
    alice_ws.close().await;
    bob_ws.close().await;
    cluster.finish().await;
}

/// Bob's channel and presence key.
fn bob_keys(bob: &Device) -> (String, String) {
    let channel = format!("privcomm:{{{}}}", bob.id());
    let presence = format!("{channel}:at");
    (channel, presence)
}

/// Waits for the next message on `ws`: the connection is alive and delivering.
async fn expect_message(ws: &mut WsClient, what: &str) {
    match ws.frame().await {
        ServerFrame::EncryptedMessage { id, .. } => ws.ack(id).await,
        other => panic!("{what}: expected a message, got {other:?}"),
    }
}

/// A claim event that arrives late (from a connection older than the one it reaches)
/// closes nothing; one newer than the connection closes it. Before claims were stamped,
/// any claim from another instance closed the user's connection here, however old: its
/// newest one, after which the core does not reconnect (4409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_claim_closes_nothing_and_a_newer_one_closes_the_older_connection() {
    let cluster = Cluster::start(2, |_| {}).await;
    let (a, b) = (&cluster.endpoints[0], &cluster.endpoints[1]);
    let (alice, bob) = (Device::enrol(a, 0).await, Device::enrol(b, 0).await);
    let mut alice_ws = alice.online(a).await;
    let mut bob_ws = bob.online(b).await;
    let (channel, _) = bob_keys(&bob);

    // The claim of a connection long before B's (stamps are microseconds), delivered late.
    let late = "c gone.0000aaaa/1 1";
    assert_eq!(cluster.redis.publish(&channel, late), 1, "B listens");
    send_and_confirm(&mut alice_ws, bob.id(), b"after the late claim").await;
    expect_message(&mut bob_ws, "a late claim leaves B's connection open").await;

    // A claim an hour from now is newer than B's.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let newer = format!("c gone.0000aaaa/2 {}", now + 3_600_000_000);
    cluster.redis.publish(&channel, &newer);
    assert_eq!(bob_ws.expect_close().await, Some(4409), "a newer claim");
    alice_ws.close().await;
    cluster.finish().await;
}

/// Registering on a new device closes the old device's connection on every instance;
/// that displacement, arriving again late, leaves the new device's connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_displacement_leaves_the_new_devices_connection_open() {
    let cluster = Cluster::start(2, |_| {}).await;
    let (a, b) = (&cluster.endpoints[0], &cluster.endpoints[1]);
    let alice = Device::enrol(a, 0).await;
    let old_bob = Device::enrol(b, 0).await;
    let mut alice_ws = alice.online(a).await;
    let mut old_ws = old_bob.online(b).await;

    let mut new_bob = Device::with_number(&old_bob.number, 5);
    if new_bob.registration_id == old_bob.registration_id {
        new_bob.registration_id = new_bob.registration_id % 0x3FFF + 1;
    }
    new_bob.register(a).await;
    new_bob.login(a).await;
    assert_eq!(
        old_ws.expect_close().await,
        Some(4409),
        "registered on A, the old device's connection on B closes"
    );
    let mut new_ws = new_bob.online(b).await;
    let (channel, _) = bob_keys(&old_bob);
    // Generation 0 (the first registration) is displaced.
    assert_eq!(cluster.redis.publish(&channel, "d 0"), 1);
    send_and_confirm(&mut alice_ws, new_bob.id(), b"for the new phone").await;
    expect_message(&mut new_ws, "the new device's connection stays open").await;
    alice_ws.close().await;
    new_ws.close().await;
    cluster.finish().await;
}

/// Claims made while Redis is down reach no one: Bob connects to A, then to B, and both
/// serve. Once Redis is back, the instances settle the claims, and only the connection
/// made last stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_redis_is_back_a_user_keeps_only_the_connection_made_last() {
    let cluster = Cluster::start(2, |_| {}).await;
    let (a, b) = (&cluster.endpoints[0], &cluster.endpoints[1]);
    let (alice, bob) = (Device::enrol(a, 0).await, Device::enrol(a, 0).await);
    let mut alice_ws = alice.online(a).await;

    cluster.redis.stop();
    cluster.wait_for_bus(0, "disconnected").await;
    cluster.wait_for_bus(1, "disconnected").await;
    let mut first = bob.online(a).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut second = bob.online(b).await;
    first.expect_silence(Duration::from_millis(300)).await;

    cluster.redis.start_again();
    cluster.wait_for_bus(0, "connected").await;
    cluster.wait_for_bus(1, "connected").await;
    assert_eq!(
        first.expect_close().await,
        Some(4409),
        "the connection made first closes"
    );
    send_and_confirm(&mut alice_ws, bob.id(), b"to the connection made last").await;
    expect_message(&mut second, "the connection made last stays").await;
    let (_, presence) = bob_keys(&bob);
    assert!(
        cluster
            .redis
            .get(&presence)
            .is_some_and(|value| value.contains(" b.")),
        "B holds Bob"
    );
    alice_ws.close().await;
    second.close().await;
    cluster.finish().await;
}

/// Acceptance 6 (limits): the registration rate limit of a client network holds across
/// instances (counted in Redis), not per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registration_limit_holds_across_instances() {
    let cluster = Cluster::start(3, |config| config.register_per_hour = 2).await;
    for endpoint in &cluster.endpoints[..2] {
        Device::enrol(endpoint, 0).await;
    }
    let c = &cluster.endpoints[2];
    let mut third = Device::new(0);
    third.verify(c).await;
    let nonce = third.challenge(c).await;
    let body = serde_json::to_value(third.register_request(&nonce)).expect("json");
    let (status, body) = c.post("/api/v1/register", &body, None).await;
    assert_eq!(
        status, 429,
        "a third registration from one network, on a third instance: {body}"
    );
    assert_eq!(body["error"], "rate_limited");
    cluster.finish().await;
}

/// Start-up refuses a cluster instance without the secrets every instance must share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_redis_and_no_shared_jwt_secret_refuses_to_start() {
    let db = TestDb::new(Db::Sqlite).await;
    let mut config = test_config(&db);
    config.redis_url = Some("redis://127.0.0.1:1".into());
    config.phone_pepper = Some("cluster-test-phone-pepper-0123456789abcdef".into());
    let error = RelayServer::start(config.clone(), Arc::new(ManualClock::new()))
        .await
        .err()
        .expect("refused");
    let text = format!("{error:#}");
    assert!(text.contains("PRIVCOMM_JWT_SECRET"), "{text}");
    config.jwt_secret = Some("cluster-test-jwt-secret-0123456789abcdef".into());
    config.phone_pepper = None;
    let error = RelayServer::start(config, Arc::new(ManualClock::new()))
        .await
        .err()
        .expect("refused");
    assert!(format!("{error:#}").contains("PRIVCOMM_PHONE_PEPPER"));
}
