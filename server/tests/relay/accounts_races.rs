//! Issue 16 review findings, each performed: parallel guesses cannot exceed the tries a
//! code or a registration lock allows, an account in use keeps its lock, and a connection
//! of a device the number moved away from is closed even when another relay instance did
//! the move.

use std::time::Duration;

use privcomm_protocol::Base64String;
use serde_json::{json, Value};

use crate::common::{Db, Device, Endpoint, TestRelay};

fn code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("")
}

/// Registers `device` with its code, session and lock token; the relay's answer.
async fn try_register(relay: &Endpoint, device: &Device) -> (u16, Value) {
    let nonce = device.challenge(relay).await;
    let body = serde_json::to_value(device.register_request(&nonce)).expect("json");
    relay.post("/api/v1/register", &body, None).await
}

/// Twelve wrong codes at once in one session: at most the 3 tries a code has are answered
/// as tries; the right code is then refused as well.
async fn parallel_code_guesses_get_three_tries(db: Db) {
    let relay = TestRelay::start(db).await;
    let mut owner = Device::new(0);
    owner.verify(&relay).await;
    let right = owner.code.clone();
    let mut guesses = Vec::new();
    for i in 0..12u32 {
        let mut guesser = Device::with_number(&owner.number, 0);
        guesser.session = owner.session.clone();
        guesser.code = format!(
            "{:06}",
            (right.parse::<u32>().unwrap_or(0) + 1 + i) % 1_000_000
        );
        let nonce = guesser.challenge(&relay).await;
        let body = serde_json::to_value(guesser.register_request(&nonce)).expect("json");
        let endpoint = Endpoint::new(relay.base.clone());
        guesses.push(tokio::spawn(async move {
            endpoint.post("/api/v1/register", &body, None).await
        }));
    }
    let mut wrong = 0;
    for guess in guesses {
        let (status, body) = guess.await.expect("task");
        match (status, code(&body)) {
            (403, "invalid_code") => wrong += 1,
            (410, "code_expired") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        wrong <= 2,
        "{wrong} guesses answered as wrong codes: more than 3 tries"
    );
    let (status, body) = try_register(&relay, &owner).await;
    assert_eq!((status, code(&body)), (410, "code_expired"), "{body}");
    relay.finish().await;
}

/// Twelve wrong lock tokens at once, with the right code: at most 5 are compared.
async fn parallel_pin_guesses_get_five_tries(db: Db) {
    let relay = TestRelay::start(db).await;
    let owner = Device::enrol(&relay, 0).await;
    let lock = json!({ "token": Base64String::encode([7u8; 32]) });
    let (status, _) = relay
        .put(
            "/api/v1/account/registration-lock",
            &lock,
            Some(owner.bearer()),
        )
        .await;
    assert_eq!(status, 204);
    let mut thief = Device::with_number(&owner.number, 0);
    thief.verify(&relay).await;
    let mut guesses = Vec::new();
    for i in 0..12u8 {
        let mut guesser = Device::with_number(&owner.number, 0);
        guesser.code = thief.code.clone();
        guesser.session = thief.session.clone();
        guesser.lock = Some(vec![100 + i; 32]);
        let nonce = guesser.challenge(&relay).await;
        let body = serde_json::to_value(guesser.register_request(&nonce)).expect("json");
        let endpoint = Endpoint::new(relay.base.clone());
        guesses.push(tokio::spawn(async move {
            endpoint.post("/api/v1/register", &body, None).await
        }));
    }
    let mut compared = 0;
    for guess in guesses {
        let (status, body) = guess.await.expect("task");
        match (status, code(&body)) {
            (423, "registration_locked") => compared += 1,
            (429, "rate_limited") => {}
            // The right code's try is taken and given back around each comparison: under
            // this many at once a few may find the tries all taken.
            (410, "code_expired") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        compared <= 5,
        "{compared} lock tokens compared: more than 5"
    );
    // Whatever the interleaving, the day's tries are spent now.
    let mut next = Device::with_number(&owner.number, 0);
    next.verify(&relay).await;
    next.lock = Some(vec![7u8; 32]);
    let (status, body) = try_register(&relay, &next).await;
    if compared == 5 {
        assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    }
    relay.finish().await;
}

/// An account that stays connected is in use: its lock does not lapse however long ago it
/// connected; once it is gone for 7 days, it does.
async fn a_connected_account_keeps_its_lock(db: Db) {
    let relay = TestRelay::start(db).await;
    let owner = Device::enrol(&relay, 0).await;
    let lock = json!({ "token": Base64String::encode([7u8; 32]) });
    let (status, _) = relay
        .put(
            "/api/v1/account/registration-lock",
            &lock,
            Some(owner.bearer()),
        )
        .await;
    assert_eq!(status, 204);
    let ws = owner.online(&relay).await;
    relay.clock.advance(Duration::from_secs(9 * 86_400));
    let mut thief = Device::with_number(&owner.number, 0);
    thief.verify(&relay).await;
    let (status, body) = try_register(&relay, &thief).await;
    assert_eq!(
        (status, code(&body)),
        (423, "registration_locked"),
        "{body}"
    );
    ws.close().await;
    // Gone: the lock counts from the day it was last seen (the connection's start here,
    // nine days ago), so it has lapsed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = try_register(&relay, &thief).await;
    assert_eq!(status, 201, "{body}");
    relay.finish().await;
}

/// A number moved to a new device by another relay instance (the store changed under this
/// one, its registry untouched): the old connection is closed at its next ping.
async fn a_connection_of_a_moved_number_is_closed_at_the_next_ping(db: Db) {
    let relay = TestRelay::start_with(db, |config| config.ping_interval_secs = 1).await;
    let (_alice, bob) = Device::pair(&relay).await;
    let mut ws = bob.online(&relay).await;
    // What another instance's registration does in storage.
    let mut new_bob = Device::with_number(&bob.number, 0);
    let (status, body) = new_bob.request_code(&relay).await;
    assert_eq!(status, 202, "{body}");
    new_bob.session = body["session"].as_str().expect("session").to_owned();
    new_bob.code = relay.code_for(&new_bob.number).await;
    let pepper = &relay.server().state().pepper;
    let phone_hash = privcomm_protocol::PhoneHash::parse(&new_bob.phone_hash).expect("hash");
    let phone_key = pepper.phone_key(&phone_hash);
    let nonce = new_bob.challenge(&relay).await;
    let request = new_bob.register_request(&nonce);
    let (_, user) = privcomm_server::routes::register::validate(&request, pepper).expect("valid");
    let proof = privcomm_server::store::CodeProof {
        session_key: pepper.session_key(&new_bob.session),
        code_hash: pepper.code_hash(&phone_key, &new_bob.code),
        phone_key,
    };
    use privcomm_server::Clock as _;
    relay
        .store()
        .replace_identity(
            bob.id(),
            &user,
            relay.clock.now_ms(),
            privcomm_server::store::LockChange::Clear,
            &proof,
        )
        .await
        .expect("moved");
    let closed = tokio::time::timeout(Duration::from_secs(10), ws.expect_close())
        .await
        .expect("closed within a few pings");
    assert_eq!(closed, Some(4409));
    relay.finish().await;
}

crate::on_both_backends!(
    parallel_code_guesses_get_three_tries,
    parallel_pin_guesses_get_five_tries,
    a_connected_account_keeps_its_lock,
    a_connection_of_a_moved_number_is_closed_at_the_next_ping,
);
