//! Acceptance 5 and 6, against the real binary: nothing but the opaque payload is stored, logs
//! hold no payloads or secrets, kill -9 loses nothing, SIGTERM closes sockets with 1001.

use privcomm_protocol::ws::ServerFrame;
use privcomm_protocol::Base64String;
use serde_json::Value;

use crate::common::{send_and_confirm, ChildRelay, Db, Device, TestDb};

async fn stored_bytes_are_the_opaque_payload_and_logs_hold_no_secrets(db: Db) {
    let storage = TestDb::new(db).await;
    let relay = ChildRelay::start(&storage, "debug").await;
    let alice = Device::enrol(&relay, 2).await;
    let bob = Device::enrol(&relay, 2).await;
    let marker = format!("PLAINTEXT-MARKER-{}", uuid::Uuid::new_v4());
    let mut payload = marker.clone().into_bytes();
    payload.extend_from_slice(&[0, 255, 7, 42]);

    let mut ws = alice.online(&relay).await;
    let server_id = send_and_confirm(&mut ws, bob.id(), &payload).await;
    let (_, bundle) = relay
        .get(&format!("/keys/{}", bob.phone_hash), Some(alice.bearer()))
        .await;
    assert_eq!(bundle["user_id"], serde_json::json!(bob.id()));

    // Read the relay's storage directly: the stored bytes are exactly the payload.
    let store = privcomm_server::store::open(
        &privcomm_server::Config {
            database_url: storage.url.clone(),
            ..privcomm_server::Config::with_defaults(storage.dir.path())
        }
        .effective_database_url(),
        privcomm_server::store::StoreSettings::default(),
        std::sync::Arc::new(
            privcomm_server::pepper::Pepper::load(None, storage.dir.path()).expect("pepper"),
        ),
    )
    .await
    .expect("open relay storage");
    let pending = store
        .pending_messages(bob.id(), 0, 10)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, server_id);
    assert_eq!(
        pending[0].payload, payload,
        "stored bytes equal the opaque payload"
    );
    store.close().await;

    let mut bob_ws = bob.connect(&relay).await;
    let ServerFrame::EncryptedMessage {
        id, payload: got, ..
    } = bob_ws.frame().await
    else {
        panic!("expected the message");
    };
    assert_eq!(got.decode("p").unwrap(), payload);
    assert!(matches!(bob_ws.frame().await, ServerFrame::QueueEmpty));
    bob_ws.ack(id).await;
    send_and_confirm(&mut bob_ws, alice.id(), b"reply").await;
    ws.close().await;
    bob_ws.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let logs = relay.log_text();
    assert!(
        logs.contains("finished processing request"),
        "logs were captured"
    );
    let secrets = [
        marker.clone(),
        Base64String::encode(&payload).0,
        alice.bearer().to_owned(),
        bob.bearer().to_owned(),
        alice.phone_hash.clone(),
        bob.phone_hash.clone(),
        Base64String::encode(alice.identity.identity_key().serialize()).0,
    ];
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a log line leaks a payload, token, key or phone hash"
        );
    }
    // Every line logged inside a request carries its request id, and every line in a span
    // names the relay instance.
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line).expect("JSON log line");
        if let Some(span) = v.get("span") {
            assert!(
                span["instance"].as_str().is_some_and(|id| !id.is_empty()),
                "{line}"
            );
            if span["name"] == "request" {
                assert!(
                    span["request_id"].as_str().is_some_and(|id| id.len() == 36),
                    "{line}"
                );
            }
        }
    }
    drop(relay);
    storage.cleanup().await;
}

async fn kill_9_with_queued_messages_loses_nothing(db: Db) {
    let storage = TestDb::new(db).await;
    let mut relay = ChildRelay::start(&storage, "info").await;
    let (alice, bob) = Device::pair(&relay).await;
    let mut ws = alice.online(&relay).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(send_and_confirm(&mut ws, bob.id(), format!("queued {i}").as_bytes()).await);
    }
    relay.kill_hard();

    let relay = ChildRelay::start(&storage, "info").await;
    // Tokens survive the restart (the JWT secret is kept in the data dir).
    let mut bob_ws = bob.connect(&relay).await;
    let got: Vec<_> = bob_ws.drain().await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        got, ids,
        "every confirmed message survives kill -9, in order"
    );
    bob_ws.close().await;
    drop(relay);
    storage.cleanup().await;
}

async fn sigterm_closes_sockets_with_1001_and_keeps_messages(db: Db) {
    let storage = TestDb::new(db).await;
    let mut relay = ChildRelay::start(&storage, "info").await;
    let (alice, bob) = Device::pair(&relay).await;
    let mut ws = alice.online(&relay).await;
    let id = send_and_confirm(&mut ws, bob.id(), b"before shutdown").await;
    let status = relay.terminate().await;
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert_eq!(ws.expect_close().await, Some(1001));
    let relay = ChildRelay::start(&storage, "info").await;
    let mut bob_ws = bob.connect(&relay).await;
    let ServerFrame::EncryptedMessage { id: got, .. } = bob_ws.frame().await else {
        panic!("expected the stored message");
    };
    assert_eq!(got, id);
    bob_ws.close().await;
    drop(relay);
    storage.cleanup().await;
}

crate::on_both_backends!(
    stored_bytes_are_the_opaque_payload_and_logs_hold_no_secrets,
    kill_9_with_queued_messages_loses_nothing,
    sigterm_closes_sockets_with_1001_and_keeps_messages,
);
