//! A broken or hostile relay: garbage and truncated frames, a frame for an unknown message,
//! an undecryptable delivery, a bundle with a forged signature, 500s. The client must not
//! crash or damage its store; each case is a typed error or an event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::Device;
use futures_util::SinkExt;
use privcomm_core::client::envelope::Envelope;
use privcomm_core::{Client, ClientEvent, CoreError, MemorySecretStore};
use privcomm_protocol::rest::{PreKeyBundleResponse, RegisterRequest};
use privcomm_protocol::Base64String;
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Clone, Default)]
struct Seen {
    acks: Arc<Mutex<Vec<Uuid>>>,
    sends: Arc<Mutex<Vec<Value>>>,
}

const USER: Uuid = Uuid::from_u128(0x1111);
const STRANGER: Uuid = Uuid::from_u128(0x2222);
const UNDECRYPTABLE: Uuid = Uuid::from_u128(0x3333);

async fn hostile_socket(mut socket: WebSocket, seen: Seen) {
    let frames = [
        Message::Text("not json at all".into()),
        Message::Text(r#"{"type":"encrypted_message","id":"#.into()),
        Message::Text(r#"{"type":"mystery","x":1}"#.into()),
        Message::Binary(vec![0, 1, 2].into()),
        Message::Text(
            json!({"type":"sent","id":Uuid::new_v4(),"server_id":Uuid::new_v4()})
                .to_string()
                .into(),
        ),
        Message::Text(
            json!({"type":"error","code":"internal","message":"boom"})
                .to_string()
                .into(),
        ),
        Message::Text(
            json!({"type":"encrypted_message","id":UNDECRYPTABLE,"sender":STRANGER,
                   "payload":Base64String::encode([3u8, 1, 2, 3, 4]),"timestamp":1})
            .to_string()
            .into(),
        ),
        Message::Text(
            json!({"type":"encrypted_message","id":Uuid::new_v4(),"sender":STRANGER,
                   "payload":"%%% not base64","timestamp":1})
            .to_string()
            .into(),
        ),
    ];
    for frame in frames {
        if socket.send(frame).await.is_err() {
            return;
        }
    }
    while let Some(Ok(message)) = socket.recv().await {
        if let Message::Text(text) = message {
            let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            match value["type"].as_str() {
                Some("ack") => {
                    if let Some(id) = value["id"].as_str().and_then(|s| s.parse().ok()) {
                        seen.acks.lock().unwrap().push(id);
                    }
                }
                Some("send") => seen.sends.lock().unwrap().push(value),
                _ => {}
            }
        }
    }
}

async fn hostile_relay(seen: Seen) -> String {
    let app = Router::new()
        .route(
            "/auth/challenge",
            post(|| async { Json(json!({"nonce": Base64String::encode([7u8; 32]), "expires_in": 60})) }),
        )
        .route(
            "/api/v1/register",
            post(|| async { (StatusCode::CREATED, Json(json!({"status": "registered", "user_id": USER}))) }),
        )
        .route(
            "/auth/token",
            post(|| async { Json(json!({"token": "t0k3n", "expires_in": 1800, "user_id": USER})) }),
        )
        .route("/api/v1/prekeys/count", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "oops") }))
        .route(
            "/keys/{phone_hash}",
            get(|| async {
                // Well-formed keys, but the signatures are zeros.
                let key = |kind: u8, len: usize| {
                    let mut k = vec![9u8; len];
                    k[0] = kind;
                    Base64String::encode(k)
                };
                Json(json!({
                    "user_id": STRANGER, "registration_id": 7,
                    "identity_key": key(5, 33),
                    "signed_prekey": {"key_id": 1, "public_key": key(5, 33), "signature": Base64String::encode([0u8; 64])},
                    "kyber_prekey": {"key_id": 1, "public_key": key(8, 1569), "signature": Base64String::encode([0u8; 64])},
                    "one_time_prekey": null
                }))
            }),
        )
        .route(
            "/ws",
            get(move |upgrade: WebSocketUpgrade| {
                let seen = seen.clone();
                async move { upgrade.on_upgrade(move |socket| hostile_socket(socket, seen)) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_relay_cannot_crash_the_client_or_damage_its_store() {
    let seen = Seen::default();
    let url = hostile_relay(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = Arc::new(MemorySecretStore::new());
    let client = Client::open(dir.path().join("me"), &url, secrets.clone())
        .await
        .unwrap();
    assert_eq!(
        client
            .register("+4930111111", "000000", None)
            .await
            .unwrap(),
        USER
    );
    let mut events = client.events();
    // Prekey upkeep gets a 500: logged, the connection still comes up.
    client.connect().await.unwrap();

    // The undecryptable delivery is a typed event, and acked so it cannot wedge the queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut failed = Vec::new();
    while failed.len() < 2 {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ClientEvent::DecryptionFailed { peer })) => failed.push(peer),
            Ok(Ok(_)) => {}
            other => panic!("expected DecryptionFailed events, got {other:?}"),
        }
    }
    assert_eq!(failed, [STRANGER, STRANGER]);
    for _ in 0..100 {
        if seen.acks.lock().unwrap().contains(&UNDECRYPTABLE) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.acks.lock().unwrap().contains(&UNDECRYPTABLE));

    // A bundle with forged signatures is refused, typed.
    let resolved = client.resolve_peer("+4930222222").await;
    assert!(
        matches!(resolved, Err(CoreError::InvalidBundle(_))),
        "{resolved:?}"
    );
    // Sending to a peer without a session or phone number is refused at the call, typed,
    // and nothing is queued.
    let refused = client.send_text(STRANGER, "hello?").await;
    assert!(
        matches!(refused, Err(CoreError::UnknownPeer { peer }) if peer == STRANGER),
        "{refused:?}"
    );
    assert_eq!(client.outbox_len().await.unwrap(), 0);
    assert!(
        seen.sends.lock().unwrap().is_empty(),
        "nothing undecryptable was sent"
    );

    // The store is intact: close, reopen, read.
    client.close().await;
    let client = Client::open(dir.path().join("me"), &url, secrets)
        .await
        .unwrap();
    assert_eq!(client.user_id().await.unwrap(), Some(USER));
    assert!(client.history(STRANGER, None, 10).await.unwrap().is_empty());
    client.close().await;
}

/// What the batch relay hands out and sees.
#[derive(Clone, Default)]
struct Burst {
    /// The client's registration (its keys, for building sessions with it).
    registration: Arc<Mutex<Option<RegisterRequest>>>,
    /// Frames written at once when the client connects.
    frames: Arc<Mutex<Vec<Value>>>,
    seen: Seen,
}

async fn burst_socket(mut socket: WebSocket, burst: Burst) {
    let frames = burst.frames.lock().unwrap().clone();
    // Written in one go, so they wait on the client's socket together and are taken as a batch.
    for frame in frames {
        if socket
            .feed(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    if socket.flush().await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        match value["type"].as_str() {
            Some("ack") => {
                if let Some(id) = value["id"].as_str().and_then(|s| s.parse().ok()) {
                    burst.seen.acks.lock().unwrap().push(id);
                }
            }
            Some("send") => {
                let sent = json!({"type": "sent", "id": value["id"], "server_id": Uuid::new_v4()});
                burst.seen.sends.lock().unwrap().push(value);
                if socket
                    .send(Message::Text(sent.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            _ => {}
        }
    }
}

async fn burst_relay(burst: Burst) -> String {
    let registered = burst.registration.clone();
    let app = Router::new()
        .route(
            "/auth/challenge",
            post(|| async {
                Json(json!({"nonce": Base64String::encode([7u8; 32]), "expires_in": 60}))
            }),
        )
        .route(
            "/api/v1/register",
            post(move |Json(request): Json<RegisterRequest>| {
                let registered = registered.clone();
                async move {
                    *registered.lock().unwrap() = Some(request);
                    (
                        StatusCode::CREATED,
                        Json(json!({"status": "registered", "user_id": USER})),
                    )
                }
            }),
        )
        .route(
            "/auth/token",
            post(|| async { Json(json!({"token": "t0k3n", "expires_in": 1800, "user_id": USER})) }),
        )
        .route(
            "/api/v1/prekeys/count",
            get(|| async { Json(json!({"one_time_prekeys": 100})) }),
        )
        .route(
            "/ws",
            get(move |upgrade: WebSocketUpgrade| {
                let burst = burst.clone();
                async move { upgrade.on_upgrade(move |socket| burst_socket(socket, burst)) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The bundle the client registered, with one-time prekey `claim`.
fn bundle_of(registration: &RegisterRequest, claim: usize) -> PreKeyBundleResponse {
    PreKeyBundleResponse {
        user_id: USER,
        registration_id: registration.registration_id,
        identity_key: registration.identity_key.clone(),
        signed_prekey: registration.signed_prekey.clone(),
        kyber_prekey: registration.kyber_prekey.clone(),
        one_time_prekey: Some(registration.one_time_prekeys[claim].clone()),
    }
}

fn delivery(sender: Uuid, payload: Base64String) -> (Uuid, Value) {
    let id = Uuid::new_v4();
    let frame = json!({"type": "encrypted_message", "id": id, "sender": sender,
                       "payload": payload, "timestamp": 1});
    (id, frame)
}

fn text(device: &mut Device, body: &str, sent_at: i64) -> (Uuid, Base64String) {
    let id = Uuid::new_v4();
    let envelope = Envelope::Text {
        id,
        body: body.into(),
        sent_at,
    }
    .encode();
    let envelope = privcomm_core::client::padding::pad(&envelope);
    let payload = device.engine().encrypt(USER, &envelope).unwrap();
    (id, Base64String::encode(payload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deliveries_inside_a_burst_lose_and_duplicate_nothing_else() {
    let burst = Burst::default();
    let url = burst_relay(burst.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(
        dir.path().join("me"),
        &url,
        Arc::new(MemorySecretStore::new()),
    )
    .await
    .unwrap();
    assert_eq!(
        client
            .register("+4930111111", "000000", None)
            .await
            .unwrap(),
        USER
    );
    let registration = burst.registration.lock().unwrap().clone().unwrap();

    // Two real senders with sessions built from the client's registered keys.
    let mut alice = Device::create(dir.path(), "alice", 1);
    let mut carol = Device::create(dir.path(), "carol", 1);
    alice
        .engine()
        .process_bundle(USER, &bundle_of(&registration, 0))
        .unwrap();
    carol
        .engine()
        .process_bundle(USER, &bundle_of(&registration, 1))
        .unwrap();
    // Carol's first message is damaged in transit: it parses, but does not decrypt. Her
    // second starts the same session (same base key), so it only decrypts if the failed one
    // left nothing behind.
    let (_, damaged) = text(&mut carol, "carol 0", 0);
    let mut damaged = damaged.decode("payload").unwrap();
    if let Some(last) = damaged.last_mut() {
        *last ^= 0x55;
    }
    let (_, carol_ok) = text(&mut carol, "carol 1", 1);

    let mut frames = Vec::new();
    let mut delivered_ids = Vec::new();
    let mut expected = Vec::new();
    let mut alice_ids = Vec::new();
    let mut push = |frames: &mut Vec<Value>, (id, frame): (Uuid, Value)| {
        delivered_ids.push(id);
        frames.push(frame);
    };
    for i in 0..40 {
        match i {
            10 => push(
                &mut frames,
                delivery(carol.user_id, Base64String::encode(&damaged)),
            ),
            20 => {
                push(
                    &mut frames,
                    delivery(STRANGER, Base64String::encode([3u8, 1, 2, 3, 4])),
                );
                frames.push(json!({"type": "queue_empty"}));
            }
            30 => {
                let (id, mut frame) = delivery(STRANGER, Base64String::encode([0u8]));
                frame["payload"] = json!("%%% not base64");
                push(&mut frames, (id, frame));
                push(&mut frames, delivery(carol.user_id, carol_ok.clone()));
                expected.push("carol 1".to_string());
            }
            _ => {}
        }
        let body = format!("alice {i:02}");
        let (id, payload) = text(&mut alice, &body, 100 + i);
        alice_ids.push(id);
        push(&mut frames, delivery(alice.user_id, payload));
        expected.push(body);
    }
    *burst.frames.lock().unwrap() = frames;

    let mut events = client.events();
    client.connect().await.unwrap();
    let mut received = Vec::new();
    let mut failed = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.len() < expected.len() || failed.len() < 3 {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ClientEvent::MessageReceived(m))) => received.push(m.body),
            Ok(Ok(ClientEvent::DecryptionFailed { peer })) => failed.push(peer),
            Ok(Ok(_)) => {}
            other => panic!("expected the burst's events, got {other:?}"),
        }
    }
    assert_eq!(received, expected, "every good message once, in order");
    assert_eq!(failed, [carol.user_id, STRANGER, STRANGER]);

    // Everything is acked exactly once, the bad deliveries included.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen_len(&burst.seen.acks) < delivered_ids.len() && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut acks = burst.seen.acks.lock().unwrap().clone();
    acks.sort();
    delivered_ids.sort();
    assert_eq!(acks, delivered_ids);

    // The history holds each message once.
    let history = client.history(alice.user_id, None, 100).await.unwrap();
    let mut bodies: Vec<String> = history.into_iter().map(|m| m.body).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        (0..40).map(|i| format!("alice {i:02}")).collect::<Vec<_>>()
    );
    let carol_history = client.history(carol.user_id, None, 10).await.unwrap();
    assert_eq!(carol_history.len(), 1);
    assert_eq!(carol_history[0].body, "carol 1");

    // Alice's receipts, coalesced, name each of her messages exactly once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut receipted: Vec<Uuid> = Vec::new();
    let mut read = 0;
    while receipted.len() < alice_ids.len() && tokio::time::Instant::now() < deadline {
        let sends = burst.seen.sends.lock().unwrap().clone();
        for send in &sends[read..] {
            if send["to"].as_str() != Some(alice.user_id.to_string().as_str()) {
                continue;
            }
            let payload: Base64String = serde_json::from_value(send["payload"].clone()).unwrap();
            let plain = alice
                .engine()
                .decrypt(USER, &payload.decode("payload").unwrap())
                .unwrap();
            match Envelope::open(&plain).unwrap() {
                Envelope::Receipt { ids } => receipted.extend(ids),
                other => panic!("expected a receipt, got {other:?}"),
            }
        }
        read = sends.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receipted.sort();
    alice_ids.sort();
    assert_eq!(receipted, alice_ids);
    client.close().await;
}

fn seen_len(list: &Mutex<Vec<Uuid>>) -> usize {
    list.lock().unwrap().len()
}
