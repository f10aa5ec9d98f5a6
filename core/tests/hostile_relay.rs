//! A broken or hostile relay: garbage and truncated frames, a frame for an unknown message,
//! an undecryptable delivery, a bundle with a forged signature, 500s. The client must not
//! crash or damage its store; each case is a typed error or an event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use privcomm_core::{Client, ClientEvent, CoreError, MemorySecretStore, MessageState};
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
    assert_eq!(client.register("+4930111111").await.unwrap(), USER);
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
    // Sending to a peer without a session or phone number fails that message, typed.
    let id = client.send_text(STRANGER, "hello?").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ClientEvent::MessageStateChanged {
                id: got,
                state: MessageState::Failed,
            })) if got == id => break,
            Ok(Ok(_)) => {}
            other => panic!("expected the message to fail, got {other:?}"),
        }
    }
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
    let history = client.history(STRANGER, None, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].state, MessageState::Failed);
    client.close().await;
}
