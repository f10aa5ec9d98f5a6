//! Acceptance 4: every kind of bad input gets its documented error and the relay keeps serving.

use std::time::Duration;

use privcomm_protocol::limits::MAX_PAYLOAD_BYTES;
use privcomm_protocol::ws::{ClientFrame, ServerFrame};
use privcomm_protocol::{Base64String, ErrorCode};
use privcomm_server::tokens::TokenIssuer;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{send_and_confirm, ws_request, Db, Device, Incoming, TestRelay, WsClient};

fn code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<none>")
}

async fn auth_failures_are_rejected_without_hints(db: Db) {
    let relay = TestRelay::start(db).await;
    let mut alice = Device::enrol(&relay, 1).await;
    let mallory = Device::new(0);

    // Replayed nonce: the second use of the same signed request fails.
    let nonce = alice.challenge(&relay).await;
    let req = serde_json::to_value(alice.token_request(&nonce)).unwrap();
    assert_eq!(relay.post("/auth/token", &req, None).await.0, 200);
    let (status, body) = relay.post("/auth/token", &req, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));

    // Forged signature (someone else's key over Alice's nonce).
    let nonce = alice.challenge(&relay).await;
    let mut req = alice.token_request(&nonce);
    req.signature = Base64String::encode(mallory.sign(&privcomm_protocol::signing::auth_message(
        &nonce,
        &alice.phone_hash,
    )));
    let (status, body) = relay.post("/auth/token", &req, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    // The failed attempt burnt the nonce: a correct signature over it no longer works.
    let req = serde_json::to_value(alice.token_request(&nonce)).unwrap();
    assert_eq!(relay.post("/auth/token", &req, None).await.0, 401);

    // Unknown user: the same 401, and the challenge looked the same as for a known user.
    let stranger = Device::new(0);
    let nonce = stranger.challenge(&relay).await;
    assert_eq!(nonce.len(), 32);
    let req = serde_json::to_value(stranger.token_request(&nonce)).unwrap();
    let (status, body) = relay.post("/auth/token", &req, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));

    // A nonce issued for another phone hash does not work.
    let nonce = stranger.challenge(&relay).await;
    let req = serde_json::to_value(alice.token_request(&nonce)).unwrap();
    assert_eq!(relay.post("/auth/token", &req, None).await.0, 401);

    // An expired nonce does not work.
    let nonce = alice.challenge(&relay).await;
    relay.clock.advance(Duration::from_secs(61));
    let req = serde_json::to_value(alice.token_request(&nonce)).unwrap();
    assert_eq!(relay.post("/auth/token", &req, None).await.0, 401);

    // Expired token: refused on REST and on the WebSocket upgrade.
    let token = alice.login(&relay).await;
    assert_eq!(
        relay.status_of("/api/v1/prekeys/count", Some(&token)).await,
        200
    );
    relay.clock.advance(Duration::from_secs(31 * 60));
    let (status, body) = relay.get("/api/v1/prekeys/count", Some(&token)).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let ws = tokio_tungstenite::connect_async(ws_request(&relay.ws_url(), &token)).await;
    assert!(ws.is_err(), "expired token must not open a WebSocket");

    // A valid token in the query string is refused: URLs end up in proxies' logs.
    let fresh = alice.login(&relay).await;
    match tokio_tungstenite::connect_async(format!("{}?token={fresh}", relay.ws_url())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .expect("JSON body");
            assert_eq!(body["error"], "unauthorized");
            assert!(body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("Authorization header"));
        }
        other => panic!("a token in the URL must be refused with 401, got {other:?}"),
    }
    let ws = tokio_tungstenite::connect_async(ws_request(&relay.ws_url(), &fresh)).await;
    assert!(ws.is_ok(), "the same token in the header opens a WebSocket");
    drop(ws);

    // No token, garbage token, a token signed with another secret.
    assert_eq!(relay.status_of("/api/v1/prekeys/count", None).await, 401);
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some("not.a.jwt"))
            .await,
        401
    );
    let foreign = TokenIssuer::new(&[9u8; 32], 1800)
        .issue(alice.id(), relay.clock_secs())
        .unwrap();
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(&foreign))
            .await,
        401
    );

    // A well-signed token for a user that does not exist cannot open a WebSocket.
    let secret = std::fs::read(relay.db.dir.path().join("jwt_secret")).expect("secret file");
    let ghost = TokenIssuer::new(&secret, 1800)
        .issue(Uuid::new_v4(), relay.clock_secs())
        .unwrap();
    let ws = tokio_tungstenite::connect_async(ws_request(&relay.ws_url(), &ghost)).await;
    assert!(
        ws.is_err(),
        "a token for an unknown user must not open a WebSocket"
    );

    // Registering a taken number without the code sent to it (the usurper cannot read
    // Alice's texts), even with a valid fresh nonce and signature.
    alice.login(&relay).await;
    let mut usurper = Device::with_number(&alice.number, 0);
    usurper.code = "000000".into();
    let nonce = usurper.challenge(&relay).await;
    let req = serde_json::to_value(usurper.register_request(&nonce)).unwrap();
    let (status, body) = relay.post("/api/v1/register", &req, None).await;
    assert_eq!((status, code(&body)), (403, "invalid_code"));
    // Alice still logs in with her own key.
    alice.login(&relay).await;

    let (status, body) = relay.get("/health", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("healthy")));
    relay.finish().await;
}

async fn registration_input_is_validated(db: Db) {
    let relay = TestRelay::start(db).await;
    let device = Device::new(2);

    // Replayed registration nonce.
    let nonce = device.challenge(&relay).await;
    let mut other = Device::new(0);
    let req = serde_json::to_value(other.register_request(&nonce)).unwrap();
    let (status, body) = relay.post("/api/v1/register", &req, None).await;
    assert_eq!(
        (status, code(&body)),
        (401, "invalid_nonce"),
        "nonce bound to another phone hash"
    );
    other.phone_hash = device.phone_hash.clone();
    let req = serde_json::to_value(device.register_request(&nonce)).unwrap();
    let (status, body) = relay.post("/api/v1/register", &req, None).await;
    assert_eq!(
        (status, code(&body)),
        (401, "invalid_nonce"),
        "nonce already consumed"
    );

    // Forged registration signature.
    let nonce = device.challenge(&relay).await;
    let mut req = device.register_request(&nonce);
    req.signature = Base64String::encode(other.sign(b"something else"));
    let (status, body) = relay.post("/api/v1/register", &req, None).await;
    assert_eq!((status, code(&body)), (400, "bad_signature"));

    // Signed prekey signed by another identity.
    let nonce = device.challenge(&relay).await;
    let mut req = device.register_request(&nonce);
    req.signed_prekey.signature =
        Base64String::encode(other.sign(&req.signed_prekey.public_key.decode("k").unwrap()));
    let (status, body) = relay.post("/api/v1/register", &req, None).await;
    assert_eq!((status, code(&body)), (400, "bad_signature"));

    // Bad base64, bad key, bad phone hash, malformed JSON, wrong shape, wrong content type.
    let nonce = device.challenge(&relay).await;
    let mut req = serde_json::to_value(device.register_request(&nonce)).unwrap();
    req["identity_key"] = json!("%%%not base64%%%");
    let (status, body) = relay.post("/api/v1/register", &req, None).await;
    assert_eq!((status, code(&body)), (400, "invalid_base64"));
    req["identity_key"] = json!(Base64String::encode([5u8; 10]));
    let (status, body) = relay.post("/api/v1/register", &req, None).await;
    assert_eq!((status, code(&body)), (400, "invalid_key"));
    req["phone_hash"] = json!("ABC");
    let (status, body) = relay.post("/api/v1/register", &req, None).await;
    assert_eq!((status, code(&body)), (400, "invalid_phone_hash"));
    let (status, body) = relay
        .post_raw("/api/v1/register", "{\"phone_hash\": ", None)
        .await;
    assert_eq!((status, code(&body)), (400, "malformed_json"));
    let (status, body) = relay
        .post_raw("/api/v1/register", "{\"phone_hash\": 5}", None)
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"));
    let resp = relay
        .http
        .post(relay.url("/auth/challenge"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let (status, body) = relay
        .post("/auth/challenge", &json!({"phone_hash": "xyz"}), None)
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_phone_hash"));

    // Unknown endpoints answer JSON too.
    let (status, body) = relay.get("/nope", None).await;
    assert_eq!((status, code(&body)), (404, "not_found"));

    // After all that, a correct registration works.
    let mut device = device;
    device.register(&relay).await;
    assert_eq!(relay.status_of("/health", None).await, 200);
    relay.finish().await;
}

async fn message_input_is_validated_and_connection_stays_usable(db: Db) {
    let relay = TestRelay::start(db).await;
    let (alice, bob) = Device::pair(&relay).await;

    // REST: oversize, bad base64, malformed JSON, unknown recipient, no token.
    let too_big = Base64String::encode(vec![0u8; MAX_PAYLOAD_BYTES + 1]);
    let body = json!({"to": bob.id(), "id": Uuid::new_v4(), "payload": too_big});
    let (status, resp) = relay
        .post("/api/v1/messages", &body, Some(alice.bearer()))
        .await;
    assert_eq!((status, code(&resp)), (413, "payload_too_large"));
    let exactly = json!({"to": bob.id(), "id": Uuid::new_v4(), "payload": Base64String::encode(vec![1u8; MAX_PAYLOAD_BYTES])});
    assert_eq!(
        relay
            .post("/api/v1/messages", &exactly, Some(alice.bearer()))
            .await
            .0,
        202
    );
    let body = json!({"to": bob.id(), "id": Uuid::new_v4(), "payload": "***"});
    let (status, resp) = relay
        .post("/api/v1/messages", &body, Some(alice.bearer()))
        .await;
    assert_eq!((status, code(&resp)), (400, "invalid_base64"));
    let (status, resp) = relay
        .post_raw("/api/v1/messages", "{\"to\":", Some(alice.bearer()))
        .await;
    assert_eq!((status, code(&resp)), (400, "malformed_json"));
    let body = json!({"to": Uuid::new_v4(), "id": Uuid::new_v4(), "payload": "AAAA"});
    let (status, resp) = relay
        .post("/api/v1/messages", &body, Some(alice.bearer()))
        .await;
    assert_eq!((status, code(&resp)), (404, "not_found"));
    assert_eq!(relay.post("/api/v1/messages", &body, None).await.0, 401);

    // WebSocket: each bad frame gets an error frame and the connection keeps working.
    let mut ws = alice.online(&relay).await;
    let expect_error = |frame: ServerFrame, want: ErrorCode| match frame {
        ServerFrame::Error { code, .. } => assert_eq!(code, want),
        other => panic!("expected {want} error, got {other:?}"),
    };
    ws.send_raw("{not json").await;
    expect_error(ws.frame().await, ErrorCode::MalformedJson);
    ws.send_raw(r#"{"type":"subscribe","id":1}"#).await;
    expect_error(ws.frame().await, ErrorCode::UnknownFrameType);
    ws.send_raw(r#"{"type":"send","to":"nope"}"#).await;
    expect_error(ws.frame().await, ErrorCode::InvalidRequest);
    let id = Uuid::new_v4();
    ws.send(&ClientFrame::Send {
        to: bob.id(),
        id,
        payload: Base64String("@@@".into()),
        registration_id: None,
    })
    .await;
    match ws.frame().await {
        ServerFrame::Error {
            code,
            id: Some(failed),
            ..
        } => {
            assert_eq!((code, failed), (ErrorCode::InvalidBase64, id));
        }
        other => panic!("expected invalid_base64, got {other:?}"),
    }
    ws.send(&ClientFrame::Send {
        to: bob.id(),
        id: Uuid::new_v4(),
        payload: too_big.clone(),
        registration_id: None,
    })
    .await;
    expect_error(ws.frame().await, ErrorCode::PayloadTooLarge);
    ws.send(&ClientFrame::Send {
        to: Uuid::new_v4(),
        id: Uuid::new_v4(),
        payload: Base64String::encode(b"x"),
        registration_id: None,
    })
    .await;
    expect_error(ws.frame().await, ErrorCode::NotFound);
    // Still usable.
    send_and_confirm(&mut ws, bob.id(), b"after the errors").await;

    // Another user's token cannot acknowledge (delete) Bob's messages.
    let pending = relay
        .store()
        .pending_messages(bob.id(), 0, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
    ws.ack(pending[0].id).await;
    send_and_confirm(&mut ws, bob.id(), b"sync point").await;
    assert_eq!(
        relay
            .store()
            .pending_messages(bob.id(), 0, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    ws.close().await;
    relay.finish().await;
}

async fn rate_limits_answer_429(db: Db) {
    let relay = TestRelay::start_with(db, |c| c.token_per_minute = 2).await;
    let mut alice = Device::enrol(&relay, 0).await; // uses one token request
    alice.login(&relay).await; // the second
    let nonce = alice.challenge(&relay).await;
    let req = serde_json::to_value(alice.token_request(&nonce)).unwrap();
    let resp = relay
        .http
        .post(relay.url("/auth/token"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "rate_limited");
    // Other endpoints are unaffected.
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(alice.bearer()))
            .await,
        200
    );
    relay.finish().await;
}

async fn unknown_frame_from_fresh_connection_does_not_close_it(db: Db) {
    let relay = TestRelay::start(db).await;
    let alice = Device::enrol(&relay, 0).await;
    let mut ws = WsClient::connect(&relay.ws_url(), alice.bearer()).await;
    ws.send_raw(r#"{"type":"hello"}"#).await;
    let mut saw_error = false;
    for _ in 0..2 {
        match ws.next().await {
            Incoming::Frame(ServerFrame::Error { code, .. }) => {
                assert_eq!(code, ErrorCode::UnknownFrameType);
                saw_error = true;
            }
            Incoming::Frame(ServerFrame::QueueEmpty) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_error);
    send_and_confirm(&mut ws, alice.id(), b"note to self").await;
    ws.close().await;
    relay.finish().await;
}

crate::on_both_backends!(
    auth_failures_are_rejected_without_hints,
    registration_input_is_validated,
    message_input_is_validated_and_connection_stays_usable,
    rate_limits_answer_429,
    unknown_frame_from_fresh_connection_does_not_close_it,
);
