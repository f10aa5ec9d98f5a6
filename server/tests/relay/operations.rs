//! Operations: health, metrics, TURN credentials, retention with a controlled clock,
//! configuration.

use std::time::Duration;

use hmac::{Hmac, Mac};
use privcomm_protocol::rest::TurnCredentialsResponse;
use privcomm_protocol::ws::ServerFrame;
use privcomm_protocol::Base64String;
use privcomm_server::maintenance;
use sha1::Sha1;

use crate::common::{send_and_confirm, Db, Device, TestRelay};

async fn health_reports_database_state(db: Db) {
    let relay = TestRelay::start(db).await;
    let (status, body) = relay.get("/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"status": "healthy", "database": "ok", "bus": "in_process"})
    );
    relay.store().close().await;
    let (status, body) = relay.get("/health", None).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unhealthy");
    relay.finish().await;
}

async fn metrics_count_the_message_path(db: Db) {
    let relay = TestRelay::start(db).await;
    let (alice, bob) = Device::pair(&relay).await;
    let mut ws = alice.online(&relay).await;
    send_and_confirm(&mut ws, bob.id(), b"one").await;
    send_and_confirm(&mut ws, bob.id(), b"two").await;
    let (_, text) = relay.get("/metrics", None).await;
    let text = text.as_str().expect("text").to_owned();
    assert!(text.contains("privcomm_messages_stored_total 2"), "{text}");
    assert!(text.contains("privcomm_queue_depth 2"), "{text}");
    assert!(text.contains("privcomm_ws_connections 1"), "{text}");
    assert!(
        text.contains("privcomm_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("route=\"/auth/token\""), "{text}");
    assert!(
        !text.contains(&bob.phone_hash),
        "metrics label routes, not paths"
    );
    let mut bob_ws = bob.connect(&relay).await;
    for _ in 0..2 {
        let ServerFrame::EncryptedMessage { id, .. } = bob_ws.frame().await else {
            panic!("message")
        };
        bob_ws.ack(id).await;
    }
    assert!(matches!(bob_ws.frame().await, ServerFrame::QueueEmpty));
    send_and_confirm(&mut bob_ws, alice.id(), b"sync").await;
    let (_, text) = relay.get("/metrics", None).await;
    let text = text.as_str().expect("text").to_owned();
    assert!(text.contains("privcomm_messages_acked_total 2"), "{text}");
    assert!(
        text.contains("privcomm_messages_delivered_total 3"),
        "{text}"
    ); // two to Bob, his reply to Alice
    ws.close().await;
    bob_ws.close().await;
    relay.finish().await;
}

async fn turn_credentials_follow_the_turn_rest_scheme(db: Db) {
    let relay = TestRelay::start_with(db, |c| {
        c.turn_secret = Some("coturn-shared-secret-of-32-bytes-at-least".into());
        c.turn_urls = vec![
            "turn:127.0.0.1:3478?transport=udp".into(),
            "turns:turn.example:5349".into(),
        ];
        c.turn_ttl = 600;
    })
    .await;
    let alice = Device::enrol(&relay, 0).await;
    let (status, body) = relay
        .get("/api/v1/turn-credentials", Some(alice.bearer()))
        .await;
    assert_eq!(status, 200, "{body}");
    let creds: TurnCredentialsResponse = serde_json::from_value(body).expect("json");
    assert_eq!(creds.ttl, 600);
    assert_eq!(creds.urls.len(), 2);
    let (expiry, random) = creds.username.split_once(':').expect("expiry:random");
    assert_eq!(random.len(), 32, "an opaque part, not the user id");
    assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(expiry.parse::<i64>().unwrap(), relay.clock_secs() + 600);
    let mut mac =
        <Hmac<Sha1> as Mac>::new_from_slice(b"coturn-shared-secret-of-32-bytes-at-least").unwrap();
    mac.update(creds.username.as_bytes());
    assert_eq!(
        creds.credential,
        Base64String::encode(mac.finalize().into_bytes()).0
    );
    assert_eq!(relay.status_of("/api/v1/turn-credentials", None).await, 401);
    relay.finish().await;

    let relay = TestRelay::start(db).await;
    let alice = Device::enrol(&relay, 0).await;
    let (status, body) = relay
        .get("/api/v1/turn-credentials", Some(alice.bearer()))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("turn_not_configured"))
    );
    relay.finish().await;
}

async fn retention_deletes_old_rows_on_schedule(db: Db) {
    let relay = TestRelay::start(db).await;
    let alice = Device::enrol(&relay, 0).await;
    let bob = Device::enrol(&relay, 3).await;
    let mut ws = alice.online(&relay).await;
    send_and_confirm(&mut ws, bob.id(), b"old message").await;
    ws.close().await;
    // Claim one prekey, leave a nonce unused.
    assert_eq!(
        relay
            .get(&format!("/keys/{}", bob.phone_hash), Some(alice.bearer()))
            .await
            .0,
        200
    );
    let _unused_nonce = alice.challenge(&relay).await;
    let state = relay.server().state();

    let report = maintenance::run_once(state).await.expect("maintenance");
    assert_eq!(
        (report.messages, report.used_prekeys, report.nonces),
        (0, 0, 0)
    );

    // Eight days on: the used prekey and the nonce go, the message and unused prekeys stay.
    relay.clock.advance(Duration::from_secs(8 * 24 * 3600));
    let report = maintenance::run_once(state).await.expect("maintenance");
    assert_eq!(
        (report.messages, report.used_prekeys, report.nonces),
        (0, 1, 1)
    );
    assert_eq!(
        relay
            .store()
            .count_one_time_prekeys(bob.id())
            .await
            .unwrap(),
        2
    );
    assert_eq!(relay.store().pending_total().await.unwrap(), 1);

    // Thirty-one days: the undelivered message is gone.
    relay.clock.advance(Duration::from_secs(23 * 24 * 3600));
    let report = maintenance::run_once(state).await.expect("maintenance");
    assert_eq!(report.messages, 1);
    assert_eq!(relay.store().pending_total().await.unwrap(), 0);
    assert_eq!(
        relay
            .store()
            .count_one_time_prekeys(bob.id())
            .await
            .unwrap(),
        2
    );
    relay.finish().await;
}

async fn resend_after_delivery_is_not_delivered_twice(db: Db) {
    let relay = TestRelay::start(db).await;
    let (alice, bob) = Device::pair(&relay).await;
    let client_id = uuid::Uuid::new_v4();
    let body = serde_json::json!({"to": bob.id(), "id": client_id, "payload": "AQID"});
    let (status, first) = relay
        .post("/api/v1/messages", &body, Some(alice.bearer()))
        .await;
    assert_eq!(status, 202);
    let mut bob_ws = bob.connect(&relay).await;
    let ServerFrame::EncryptedMessage { id, .. } = bob_ws.frame().await else {
        panic!("message")
    };
    assert!(matches!(bob_ws.frame().await, ServerFrame::QueueEmpty));
    bob_ws.ack(id).await;
    send_and_confirm(&mut bob_ws, alice.id(), b"sync").await;
    // Alice never saw the 202 (say) and retries: same server id, nothing new for Bob.
    let (status, again) = relay
        .post("/api/v1/messages", &body, Some(alice.bearer()))
        .await;
    assert_eq!(status, 202);
    assert_eq!(again["id"], first["id"]);
    bob_ws.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        relay.store().pending_total().await.unwrap(),
        1,
        "only Bob's own reply is pending"
    );
    bob_ws.close().await;
    relay.finish().await;
}

async fn jwt_secret_survives_restart(db: Db) {
    let mut relay = TestRelay::start(db).await;
    let alice = Device::enrol(&relay, 0).await;
    let server = relay.server.take().expect("running");
    server.shutdown().await.expect("shutdown");
    let mut config = crate::common::test_config(&relay.db);
    config.bind = "127.0.0.1:0".parse().unwrap();
    let server =
        privcomm_server::RelayServer::start(config, std::sync::Arc::new(relay.clock.clone()))
            .await
            .expect("restart");
    relay.endpoint = crate::common::Endpoint::new(server.base_url());
    relay.server = Some(server);
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(alice.bearer()))
            .await,
        200
    );
    relay.finish().await;
}

crate::on_both_backends!(
    health_reports_database_state,
    metrics_count_the_message_path,
    turn_credentials_follow_the_turn_rest_scheme,
    retention_deletes_old_rows_on_schedule,
    resend_after_delivery_is_not_delivered_twice,
    jwt_secret_survives_restart,
);

#[test]
fn help_documents_every_setting() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_privcomm-server"))
        .arg("--help")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf8");
    for var in [
        "PRIVCOMM_BIND",
        "PRIVCOMM_DATA_DIR",
        "PRIVCOMM_DATABASE_URL",
        "PRIVCOMM_JWT_SECRET",
        "PRIVCOMM_TURN_SECRET",
        "PRIVCOMM_TURN_URLS",
        "PRIVCOMM_MAX_CONNECTIONS",
    ] {
        assert!(help.contains(var), "--help lacks {var}");
    }
}
