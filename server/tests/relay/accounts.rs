//! Issue 16: proving the number, recovering after a lost phone, and the registration lock,
//! against a real relay (SQLite and PostgreSQL), and the webhook code sender against an
//! HTTP receiver run here.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use privcomm_protocol::ws::ServerFrame;
use privcomm_protocol::Base64String;
use privcomm_server::codes::inbox::signature_is_valid;
use privcomm_server::codes::SIGNATURE_HEADER;
use serde_json::{json, Value};

use crate::common::{random_number, ChildRelay, Db, Device, Endpoint, TestDb, TestRelay};

fn code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("")
}

/// Registers `device` with whatever code and lock token it holds; the relay's answer.
async fn try_register(relay: &Endpoint, device: &Device) -> (u16, Value) {
    let nonce = device.challenge(relay).await;
    let body = serde_json::to_value(device.register_request(&nonce)).expect("json");
    relay.post("/api/v1/register", &body, None).await
}

/// A code that is not `code`.
fn other_than(code: &str) -> String {
    if code == "000000" { "000001" } else { "000000" }.to_owned()
}

/// Acceptance 1: without the code sent to the number nobody registers it; its owner does.
async fn only_the_owner_of_a_number_registers_it(db: Db) {
    let relay = TestRelay::start(db).await;
    let mut owner = Device::new(2);

    // No code was ever sent.
    owner.code = "123456".into();
    let (status, body) = try_register(&relay, &owner).await;
    assert_eq!((status, code(&body)), (403, "invalid_code"), "{body}");
    owner.code = "12ab".into();
    let (status, body) = try_register(&relay, &owner).await;
    assert_eq!((status, code(&body)), (403, "invalid_code"), "{body}");

    // Three wrong guesses void the code; the right one is then refused too.
    owner.verify(&relay).await;
    let sent = owner.code.clone();
    owner.code = other_than(&sent);
    for expected in [
        (403, "invalid_code"),
        (403, "invalid_code"),
        (410, "code_expired"),
    ] {
        let (status, body) = try_register(&relay, &owner).await;
        assert_eq!((status, code(&body)), expected, "{body}");
    }
    owner.code = sent;
    let (status, body) = try_register(&relay, &owner).await;
    assert_eq!((status, code(&body)), (410, "code_expired"), "{body}");

    // Nobody else's request replaces or spends the owner's code: an attacker asking for a
    // code to the same number gets a session of their own, and guessing in it costs the
    // owner nothing.
    owner.verify(&relay).await;
    let mut attacker = Device::with_number(&owner.number, 0);
    let (status, body) = attacker.request_code(&relay).await;
    assert_eq!(status, 202, "{body}");
    attacker.session = body["session"].as_str().expect("session").to_owned();
    assert_ne!(attacker.session, owner.session);
    let _ = relay.code_for(&owner.number).await; // the owner's phone got it; not the attacker
    for guess in ["111111", "222222", "333333", "444444"] {
        attacker.code = guess.into();
        let (status, _) = try_register(&relay, &attacker).await;
        assert!(matches!(status, 403 | 410));
    }
    // Nor does a guess in the owner's session without its session id.
    let mut stranger = Device::with_number(&owner.number, 0);
    stranger.code = owner.code.clone();
    stranger.session = "0".repeat(32);
    let (status, body) = try_register(&relay, &stranger).await;
    assert_eq!((status, code(&body)), (403, "invalid_code"), "{body}");

    // A code lives ten minutes.
    owner.verify(&relay).await;
    relay.clock.advance(Duration::from_secs(601));
    let (status, body) = try_register(&relay, &owner).await;
    assert_eq!((status, code(&body)), (410, "code_expired"), "{body}");

    // With a fresh code the owner registers, once: the code is used up.
    owner.verify(&relay).await;
    let (status, body) = try_register(&relay, &owner).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = try_register(&relay, &owner).await;
    assert_eq!((status, code(&body)), (410, "code_expired"), "{body}");

    // The verification answer does not tell registered numbers from others.
    let (registered, _) = owner.request_code(&relay).await;
    let (unknown, _) = Device::new(0).request_code(&relay).await;
    assert_eq!((registered, unknown), (202, 202));
    // Numbers are checked: E.164 only.
    for bad in ["4155550123", "+0155550123", "+1 415 555 0123", "+1415", ""] {
        let (status, body) = relay
            .post("/api/v1/verification", &json!({ "number": bad }), None)
            .await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_phone_number"),
            "{bad}"
        );
    }
    let (status, body) = relay
        .post(
            "/api/v1/verification",
            &json!({ "number": random_number(), "locale": "<b>x</b>" }),
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    relay.finish().await;
}

/// The per-number limits hold, whoever asks: a second code within the minute is refused
/// with the time to wait; other numbers are not affected.
async fn codes_for_one_number_are_limited(db: Db) {
    let relay = TestRelay::start_with(db, |config| {
        config.verification_per_number_per_minute = 1;
        config.verification_per_number_per_day = 5;
    })
    .await;
    let device = Device::new(0);
    let (status, _) = device.request_code(&relay).await;
    assert_eq!(status, 202);
    let (status, body) = device.request_code(&relay).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    assert!(
        body["retry_after"]
            .as_u64()
            .is_some_and(|s| (1..=60).contains(&s)),
        "{body}"
    );
    let (status, _) = Device::new(0).request_code(&relay).await;
    assert_eq!(status, 202, "another number");
    relay.finish().await;
}

/// A relay without a code sender registers nobody, and says why.
async fn without_a_code_sender_nobody_registers(db: Db) {
    let relay = TestRelay::start_with(db, |config| config.code_sender = None).await;
    let (status, body) = Device::new(0).request_code(&relay).await;
    assert_eq!(
        (status, code(&body)),
        (503, "verification_unavailable"),
        "{body}"
    );
    relay.finish().await;
}

/// Acceptance 2, the relay's part: Bob loses his phone and registers his number on a new
/// one. He keeps his user id; his old device is disconnected and its token refused; what
/// was waiting for the old device is dropped; Alice finds his new identity key and her
/// next message reaches the new device.
async fn a_lost_phone_moves_the_account_to_a_new_one(db: Db) {
    let relay = TestRelay::start(db).await;
    let (alice, old_bob) = Device::pair(&relay).await;
    let mut alice_ws = alice.online(&relay).await;
    for i in 0..3u8 {
        crate::common::send_and_confirm(&mut alice_ws, old_bob.id(), &[i; 32]).await;
    }
    let mut old_ws = old_bob.connect(&relay).await;
    for _ in 0..3 {
        assert!(matches!(
            old_ws.frame().await,
            ServerFrame::EncryptedMessage { .. }
        ));
    }

    let mut new_bob = Device::with_number(&old_bob.number, 5);
    if new_bob.registration_id == old_bob.registration_id {
        new_bob.registration_id = new_bob.registration_id % 0x3FFF + 1;
    }
    let new_id = new_bob.register(&relay).await;
    assert_eq!(new_id, old_bob.id(), "the account keeps its user id");
    new_bob.login(&relay).await;

    // The old device: disconnected, and its token no longer works anywhere.
    assert_eq!(old_ws.expect_close().await, Some(4409));
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(old_bob.bearer()))
            .await,
        401
    );
    let refused = tokio_tungstenite::connect_async(crate::common::ws_request(
        &relay.ws_url(),
        old_bob.bearer(),
    ))
    .await;
    assert!(refused.is_err(), "the old token opens no WebSocket");
    // Nor can the old identity log in again.
    let mut stale = old_bob;
    stale.user_id = Some(new_id);
    let nonce = stale.challenge(&relay).await;
    let body = serde_json::to_value(stale.token_request(&nonce)).expect("json");
    let (status, _) = relay.post("/auth/token", &body, None).await;
    assert_eq!(status, 401);

    // Alice's lookup finds the new identity and a one-time prekey of the new device.
    let (status, bundle) = relay
        .get(
            &format!("/keys/{}", new_bob.phone_hash),
            Some(alice.bearer()),
        )
        .await;
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(
        bundle["identity_key"],
        json!(Base64String::encode(
            new_bob.identity.identity_key().serialize()
        ))
    );
    assert!(bundle["one_time_prekey"].is_object());

    // A message encrypted for the old phone's registration is refused as stale, on the
    // WebSocket and over REST; one for the new registration goes through.
    let old_registration = stale.registration_id;
    alice_ws
        .send(&privcomm_protocol::ws::ClientFrame::Send {
            to: new_id,
            id: uuid::Uuid::new_v4(),
            payload: Base64String::encode(b"for the old phone"),
            registration_id: Some(old_registration),
        })
        .await;
    match alice_ws.frame().await {
        ServerFrame::Error { code, .. } => {
            assert_eq!(code, privcomm_protocol::ErrorCode::StaleRecipient)
        }
        other => panic!("expected stale_recipient, got {other:?}"),
    }
    let rest = privcomm_protocol::rest::SendMessageRequest {
        to: new_id,
        id: uuid::Uuid::new_v4(),
        payload: Base64String::encode(b"for the old phone"),
        registration_id: Some(old_registration),
    };
    let (status, body) = relay
        .post("/api/v1/messages", &rest, Some(alice.bearer()))
        .await;
    assert_eq!((status, code(&body)), (410, "stale_recipient"), "{body}");
    let fresh = privcomm_protocol::rest::SendMessageRequest {
        registration_id: Some(new_bob.registration_id),
        id: uuid::Uuid::new_v4(),
        ..rest
    };
    let (status, body) = relay
        .post("/api/v1/messages", &fresh, Some(alice.bearer()))
        .await;
    assert_eq!(status, 202, "{body}");

    // What the old device had not acknowledged is gone; only the new message waits.
    let mut new_ws = new_bob.connect(&relay).await;
    let pending = new_ws.drain().await;
    assert_eq!(
        pending.len(),
        1,
        "only the message for the new registration"
    );
    assert_eq!(pending[0].1, b"for the old phone");
    crate::common::send_and_confirm(&mut alice_ws, new_id, b"to the new phone").await;
    match new_ws.frame().await {
        ServerFrame::EncryptedMessage { payload, .. } => {
            assert_eq!(payload.decode("p").unwrap(), b"to the new phone")
        }
        other => panic!("expected the message, got {other:?}"),
    }
    alice_ws.close().await;
    new_ws.close().await;
    relay.finish().await;
}

/// Acceptance 3, the relay's part: with a registration lock a new device needs the PIN's
/// token as well as the code; wrong tokens are counted and limited; after 7 days without
/// the account being seen, the code alone suffices again.
async fn a_registration_lock_holds_until_the_account_is_inactive(db: Db) {
    let relay = TestRelay::start(db).await;
    let owner = Device::enrol(&relay, 0).await;
    let token = vec![7u8; 32];
    let lock = json!({ "token": Base64String::encode(&token) });
    assert_eq!(
        relay
            .put("/api/v1/account/registration-lock", &lock, None)
            .await
            .0,
        401,
        "setting a lock needs a token"
    );
    let (status, body) = relay
        .put(
            "/api/v1/account/registration-lock",
            &json!({ "token": Base64String::encode([1u8; 16]) }),
            Some(owner.bearer()),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let (status, body) = relay
        .put(
            "/api/v1/account/registration-lock",
            &lock,
            Some(owner.bearer()),
        )
        .await;
    assert_eq!(status, 204, "{body}");

    // The code alone is refused, with the time until the lock lapses; the code stays valid.
    let mut thief = Device::with_number(&owner.number, 0);
    thief.verify(&relay).await;
    let (status, body) = try_register(&relay, &thief).await;
    assert_eq!(
        (status, code(&body)),
        (423, "registration_locked"),
        "{body}"
    );
    let lapses = body["retry_after"].as_u64().expect("retry_after");
    assert!((7 * 86_400..=8 * 86_400).contains(&lapses), "{lapses}");
    // Wrong tokens are counted: after five a day, no more tries for the day.
    thief.lock = Some(vec![8u8; 32]);
    for _ in 0..5 {
        let (status, body) = try_register(&relay, &thief).await;
        assert_eq!(
            (status, code(&body)),
            (423, "registration_locked"),
            "{body}"
        );
    }
    let (status, body) = try_register(&relay, &thief).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    thief.lock = Some(token.clone());
    let (status, body) = try_register(&relay, &thief).await;
    assert_eq!(
        (status, code(&body)),
        (429, "rate_limited"),
        "even the right token, within the day: {body}"
    );
    relay.clock.advance(Duration::from_secs(86_401));
    // Nobody connected meanwhile; a day of the 7 has passed.

    // The owner's new phone, with the PIN: registered, and the lock stays.
    let mut new_phone = Device::with_number(&owner.number, 0);
    new_phone.verify(&relay).await;
    new_phone.lock = Some(token.clone());
    let (status, body) = try_register(&relay, &new_phone).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(owner.bearer()))
            .await,
        401,
        "the old phone's token"
    );
    let mut again = Device::with_number(&owner.number, 0);
    again.verify(&relay).await;
    let (status, body) = try_register(&relay, &again).await;
    assert_eq!(
        (status, code(&body)),
        (423, "registration_locked"),
        "{body}"
    );

    // Seven whole days after the last day the account was seen, the code alone is enough.
    relay.clock.advance(Duration::from_secs(8 * 86_400 + 60));
    again.verify(&relay).await;
    let (status, body) = try_register(&relay, &again).await;
    assert_eq!(status, 201, "{body}");
    // That removed the lock: the next new phone needs no PIN either.
    let mut later = Device::with_number(&owner.number, 0);
    later.verify(&relay).await;
    let (status, body) = try_register(&relay, &later).await;
    assert_eq!(status, 201, "{body}");

    // Removing a lock needs a token, and works.
    later.user_id = serde_json::from_value(body["user_id"].clone()).ok();
    later.login(&relay).await;
    let (status, _) = relay
        .put(
            "/api/v1/account/registration-lock",
            &lock,
            Some(later.bearer()),
        )
        .await;
    assert_eq!(status, 204);
    let status = relay
        .http
        .delete(relay.url("/api/v1/account/registration-lock"))
        .bearer_auth(later.bearer())
        .send()
        .await
        .expect("sent")
        .status();
    assert_eq!(status.as_u16(), 204);
    let mut last = Device::with_number(&owner.number, 0);
    last.verify(&relay).await;
    let (status, body) = try_register(&relay, &last).await;
    assert_eq!(status, 201, "{body}");
    relay.finish().await;
}

crate::on_both_backends!(
    only_the_owner_of_a_number_registers_it,
    codes_for_one_number_are_limited,
    without_a_code_sender_nobody_registers,
    a_lost_phone_moves_the_account_to_a_new_one,
    a_registration_lock_holds_until_the_account_is_inactive,
);

/// What the gateway under test does with each post.
#[derive(Clone, Copy)]
enum Gateway {
    /// 500 for the first `n` posts, then 200.
    FailFirst(usize),
    /// Never answers within the relay's timeout.
    Hang,
}

#[derive(Clone)]
struct Received {
    posts: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    mode: Gateway,
}

async fn gateway(State(state): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let count = {
        let mut posts = state.posts.lock().expect("lock");
        posts.push((headers, body));
        posts.len()
    };
    match state.mode {
        Gateway::FailFirst(n) if count <= n => StatusCode::INTERNAL_SERVER_ERROR,
        Gateway::FailFirst(_) => StatusCode::OK,
        Gateway::Hang => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK
        }
    }
}

/// An operator's SMS gateway on loopback; returns its URL and what it received.
async fn start_gateway(mode: Gateway) -> (String, Arc<Mutex<Vec<(HeaderMap, Bytes)>>>) {
    let posts = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/sms", post(gateway))
        .with_state(Received {
            posts: posts.clone(),
            mode,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/sms"), posts)
}

const GATEWAY_SECRET: &str = "gateway-secret-gateway-secret-0123456789";

/// Relay settings that send codes to the gateway at `url`, 300 ms per attempt.
fn gateway_settings(url: &str) -> [(&str, &str); 4] {
    [
        ("PRIVCOMM_CODE_SENDER", "webhook"),
        ("PRIVCOMM_CODE_WEBHOOK_URL", url),
        ("PRIVCOMM_CODE_WEBHOOK_SECRET", GATEWAY_SECRET),
        ("PRIVCOMM_CODE_WEBHOOK_TIMEOUT_MS", "300"),
    ]
}

/// Acceptance 5: the webhook sender posts a signed body, retries a failing gateway, gives
/// up on one that does not answer within its timeout, and logs neither codes nor numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_sender_signs_retries_and_times_out() {
    let storage = TestDb::new(Db::Sqlite).await;

    // A gateway that fails twice, then takes the code.
    let (url, posts) = start_gateway(Gateway::FailFirst(2)).await;
    let settings = gateway_settings(&url);
    let mut relay = ChildRelay::start_with(&storage, "debug", &settings, None).await;
    let mut device = Device::new(0);
    let (status, body) = device.request_code(&relay).await;
    assert_eq!(status, 202, "{body}");
    let received = posts.lock().expect("lock").clone();
    assert_eq!(received.len(), 3, "two failures, then delivered");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut posted_code = String::new();
    for (headers, body) in &received {
        let signature = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .expect("signed");
        assert!(signature_is_valid(
            GATEWAY_SECRET.as_bytes(),
            signature,
            body,
            now
        ));
        assert!(!signature_is_valid(b"another-secret", signature, body, now));
        let posted: Value = serde_json::from_slice(body).expect("JSON body");
        assert_eq!(posted["number"], json!(device.number));
        assert_eq!(posted["locale"], json!("en"));
        posted_code = posted["code"].as_str().expect("code").to_owned();
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
    }
    // The posted code registers the number, in the session the relay answered with.
    device.session = body["session"].as_str().expect("session").to_owned();
    device.code = posted_code.clone();
    let (status, body) = try_register(&relay, &device).await;
    assert_eq!(status, 201, "{body}");
    let logs = relay.log_text();
    assert!(
        logs.contains("the code gateway refused a code"),
        "retries are logged"
    );
    assert!(!logs.contains(&posted_code), "a log line holds the code");
    assert!(
        !logs.contains(&device.number),
        "a log line holds the number"
    );
    assert!(!logs.contains(device.number.trim_start_matches('+')));
    assert!(relay.terminate().await.success());

    // A gateway that keeps failing: three attempts, then `code_delivery_failed`, and the
    // code that was posted is worth nothing.
    let (url, posts) = start_gateway(Gateway::FailFirst(usize::MAX)).await;
    let settings = gateway_settings(&url);
    let mut relay = ChildRelay::start_with(&storage, "debug", &settings, None).await;
    let mut device = Device::new(0);
    let (status, body) = device.request_code(&relay).await;
    assert_eq!(
        (status, code(&body)),
        (502, "code_delivery_failed"),
        "{body}"
    );
    let received = posts.lock().expect("lock").clone();
    assert_eq!(received.len(), 3);
    let posted: Value = serde_json::from_slice(&received[2].1).expect("JSON");
    device.code = posted["code"].as_str().expect("code").to_owned();
    let (status, body) = try_register(&relay, &device).await;
    assert_eq!((status, code(&body)), (403, "invalid_code"), "{body}");
    assert!(!relay.log_text().contains(device.code.as_str()));
    assert!(relay.terminate().await.success());

    // A gateway that hangs: each attempt ends at the timeout.
    let (url, posts) = start_gateway(Gateway::Hang).await;
    let settings = gateway_settings(&url);
    let relay = ChildRelay::start_with(&storage, "debug", &settings, None).await;
    let device = Device::new(0);
    let started = Instant::now();
    let (status, body) = device.request_code(&relay).await;
    let took = started.elapsed();
    assert_eq!(
        (status, code(&body)),
        (502, "code_delivery_failed"),
        "{body}"
    );
    assert_eq!(posts.lock().expect("lock").len(), 3);
    // Three 300 ms attempts and two back-offs (250 + 500 ms), not three 5 s hangs.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let logs = relay.log_text();
    assert!(
        logs.contains("no answer within 300 ms"),
        "timeouts are logged"
    );
    assert!(!logs.contains(&device.number));
    drop(relay);

    // Misconfigured senders are refused at start, with the reason.
    let printed = ChildRelay::refused_start(
        &storage,
        &[
            ("PRIVCOMM_CODE_SENDER", "webhook"),
            ("PRIVCOMM_CODE_WEBHOOK_URL", "http://sms.example/hook"),
            ("PRIVCOMM_CODE_WEBHOOK_SECRET", GATEWAY_SECRET),
        ],
    )
    .await;
    assert!(printed.contains("must use https"), "{printed}");
    let printed = ChildRelay::refused_start(&storage, &[("PRIVCOMM_CODE_SENDER", "stdout")]).await;
    assert!(printed.contains("PRIVCOMM_DEV_MODE"), "{printed}");
    storage.cleanup().await;
}

/// The `stdout` sender in development mode prints the code as one JSON line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_stdout_sender_prints_codes() {
    let storage = TestDb::new(Db::Sqlite).await;
    let relay = ChildRelay::start_with(
        &storage,
        "info",
        &[
            ("PRIVCOMM_CODE_SENDER", "stdout"),
            ("PRIVCOMM_DEV_MODE", "1"),
        ],
        None,
    )
    .await;
    let mut device = Device::new(0);
    let (status, body) = device.request_code(&relay).await;
    assert_eq!(status, 202, "{body}");
    let line = relay
        .log_text()
        .lines()
        .find(|l| l.contains("\"DEV\""))
        .map(str::to_owned)
        .expect("the code line");
    device.session = body["session"].as_str().expect("session").to_owned();
    let printed: Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(printed["fields"]["number"], json!(device.number));
    device.code = printed["fields"]["code"].as_str().expect("code").to_owned();
    let (status, body) = try_register(&relay, &device).await;
    assert_eq!(status, 201, "{body}");
    drop(relay);
    storage.cleanup().await;
}
