//! What a hostile peer or a hostile relay can do to a client, each attack performed end to
//! end against a real relay: rewriting history with reused message ids, out-of-range
//! durations, reading lengths, forcing session resets with junk, flooding from a blocked
//! peer, and what the device keeps over time.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::mitm::Mitm;
use common::relay;
use privcomm_core::client::envelope::Envelope;
use privcomm_core::client::{padding, phone};
use privcomm_core::net::RelayApi;
use privcomm_core::{
    Client, ClientEvent, ClientOptions, ConnectionState, CoreError, ManualClock, MemorySecretStore,
    MessageState, ReceiveQuota, SecretStore, SignalEngine,
};
use privcomm_protocol::rest::SendMessageRequest;
use privcomm_protocol::{Base64String, PhoneHash};
use serde_json::{json, Value};
use tokio::sync::broadcast::Receiver;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

async fn client_with(
    dir: &Path,
    name: &str,
    url: &str,
    number: &str,
    options: ClientOptions,
) -> Client {
    let client = Client::open_with(
        dir.join(name),
        url,
        Arc::new(MemorySecretStore::new()),
        options,
    )
    .await
    .unwrap();
    common::register(&client, url, number).await;
    client
}

async fn client(dir: &Path, name: &str, url: &str, number: &str) -> Client {
    client_with(dir, name, url, number, ClientOptions::default()).await
}

/// Waits for events until `done` says so, failing after `WAIT`.
async fn until(events: &mut Receiver<ClientEvent>, done: impl FnMut(&ClientEvent) -> bool) {
    common::until(events, WAIT, done).await
}

/// Waits until the text `id` is announced.
async fn received(events: &mut Receiver<ClientEvent>, id: Uuid) {
    until(
        events,
        |e| matches!(e, ClientEvent::MessageReceived(m) if m.id == id),
    )
    .await
}

/// Has the relay in the middle make up `count` blobs "from" `sender` and waits until the
/// client reported each as undecryptable.
async fn inject_junk(mitm: &Mitm, events: &mut Receiver<ClientEvent>, sender: Uuid, count: u8) {
    for n in 0..count {
        assert!(mitm.inject(&junk_from(sender, n)));
    }
    let mut failed = 0;
    until(events, |e| {
        if *e == (ClientEvent::DecryptionFailed { peer: sender }) {
            failed += 1;
        }
        failed == count
    })
    .await;
}

/// Polls `check` until it holds, failing after `WAIT` with `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A hand-driven account (a hostile peer): its own Signal engine, talking REST to the
/// relay, able to send any envelope it likes.
struct RawPeer {
    engine: SignalEngine,
    api: RelayApi,
    token: String,
    user_id: Uuid,
    _secrets: Arc<MemorySecretStore>,
}

impl RawPeer {
    async fn register(dir: &Path, name: &str, url: &str, number: &str) -> Self {
        let secrets = Arc::new(MemorySecretStore::new());
        let mut engine = SignalEngine::open(
            &dir.join(format!("{name}.db")),
            secrets.as_ref() as &dyn SecretStore,
        )
        .unwrap();
        let hash = phone::phone_hash(number).unwrap();
        engine
            .create_account(&PhoneHash::parse(&hash).unwrap(), 10)
            .unwrap();
        let api = RelayApi::new(url).unwrap();
        let e164 = phone::normalize(number).unwrap();
        let session = api.request_verification(&e164, None).await.unwrap().session;
        let code = common::code_for(url, number).await;
        let nonce = api.challenge(&hash).await.unwrap();
        let mut request = engine.registration_request(&nonce).unwrap();
        request.verification_code = code;
        request.verification_session = session;
        let user_id = api.register(&request).await.unwrap().user_id;
        engine.set_user_id(user_id).unwrap();
        let nonce = api.challenge(&hash).await.unwrap();
        let token = api
            .token(&engine.token_request(&nonce).unwrap())
            .await
            .unwrap()
            .token;
        Self {
            engine,
            api,
            token,
            user_id,
            _secrets: secrets,
        }
    }

    /// Claims `number`'s bundle (and one of its one-time prekeys) and starts a session.
    async fn resolve(&mut self, number: &str) -> Uuid {
        let bundle = self
            .api
            .bundle(&self.token, &phone::phone_hash(number).unwrap())
            .await
            .unwrap();
        let peer = bundle.user_id;
        self.engine.process_bundle(peer, &bundle).unwrap();
        peer
    }

    /// Encrypts `envelope` (padded, as clients do) for `to` and hands it to the relay.
    async fn send(&mut self, to: Uuid, envelope: &Envelope) {
        let payload = self
            .engine
            .encrypt(to, &padding::pad(&envelope.encode()))
            .unwrap();
        self.api
            .send_message(
                &self.token,
                &SendMessageRequest {
                    to,
                    id: Uuid::new_v4(),
                    payload: Base64String::encode(payload),
                    registration_id: None,
                },
            )
            .await
            .unwrap();
    }
}

fn text(id: Uuid, body: &str) -> Envelope {
    Envelope::Text {
        id,
        body: body.into(),
        sent_at: 1_700_000_000_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reusing_message_ids_rewrites_nothing_and_is_counted() {
    let relay = relay().await;
    let url = relay.server.base_url();
    let dir = tempfile::tempdir().unwrap();
    // Alice talks through a relay that records what it sees.
    let mitm = Mitm::start(&url).await;
    let alice = client(dir.path(), "alice", &mitm.url, "+4930100001").await;
    let bob = client(dir.path(), "bob", &url, "+4930100002").await;
    let mut mallory = RawPeer::register(dir.path(), "mallory", &url, "+4930100003").await;
    let mut bob_events = bob.events();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930100002").await.unwrap();
    let mallory_id = bob.resolve_peer("+4930100003").await.unwrap();
    assert_eq!(mallory_id, mallory.user_id);

    // Bob owes Mallory $10; Alice says hello. Mallory knows both ids (she received the
    // first; the second is the kind of id she must never be able to use).
    let owed = bob.send_text(mallory_id, "I owe you $10").await.unwrap();
    let hello = alice.send_text(bob_id, "hello bob").await.unwrap();
    let alice_id = alice.user_id().await.unwrap().unwrap();
    received(&mut bob_events, hello).await;

    mallory.resolve("+4930100002").await;
    mallory.send(bob_id, &text(owed, "I owe you $10,000")).await;
    mallory
        .send(bob_id, &text(hello, "Alice's message, rewritten"))
        .await;
    let honest = Uuid::now_v7();
    mallory.send(bob_id, &text(honest, "hi bob")).await;
    received(&mut bob_events, honest).await;

    let dropped = bob.dropped_messages().await.unwrap();
    assert_eq!(dropped.forged_id, 2, "{dropped:?}");
    let mine = bob.message(owed).await.unwrap().unwrap();
    assert_eq!(
        (mine.body.as_str(), mine.outgoing, mine.peer),
        ("I owe you $10", true, mallory_id)
    );
    // The conversation with Alice still opens, unchanged.
    let with_alice = bob.history(alice_id, None, 100).await.unwrap();
    assert_eq!(with_alice.len(), 1);
    assert_eq!(
        (with_alice[0].id, with_alice[0].body.as_str()),
        (hello, "hello bob")
    );
    let with_mallory: Vec<String> = bob
        .history(mallory_id, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    // Newest first: Mallory's texts claim an old time.
    assert_eq!(with_mallory, ["I owe you $10", "hi bob"]);

    // The relay never saw the message id: the `send` frame's id is another random value.
    let sends: Vec<Value> = mitm
        .client_frames()
        .into_iter()
        .filter(|f| f["type"] == "send")
        .collect();
    assert!(!sends.is_empty());
    assert!(
        sends.iter().all(|f| f["id"] != json!(hello)),
        "the relay saw the message id"
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_lifetimes_out_of_range_neither_panic_nor_hang_connect() {
    let relay = relay().await;
    let url = relay.server.base_url();
    let dir = tempfile::tempdir().unwrap();
    let mitm = Mitm::start(&url).await;
    let secrets_of_alice: Arc<MemorySecretStore> = Arc::new(MemorySecretStore::new());
    let alice = Client::open(
        dir.path().join("alice"),
        &mitm.url,
        secrets_of_alice.clone(),
    )
    .await
    .unwrap();
    // Codes come from the relay behind the proxy.
    common::register(&alice, &url, "+4930200001").await;

    // u64::MAX would overflow `Instant + Duration`; 0 would renew in a loop.
    for expires_in in [json!(u64::MAX), json!(0)] {
        mitm.clear_rewrites();
        mitm.rewrite("/auth/token", "expires_in", expires_in.clone());
        let before = token_calls(&mitm);
        tokio::time::timeout(WAIT, alice.connect())
            .await
            .expect("connect returns")
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(alice.connection_state(), ConnectionState::Connected);
        // At most the login and one renewal (renewals are at least 30 s apart).
        let calls = token_calls(&mitm) - before;
        assert!(
            calls <= 2,
            "{calls} token requests with expires_in {expires_in}"
        );
        alice.disconnect().await;
    }

    // Values that are no u64 at all: every login fails, and the connection keeps retrying
    // on its backoff schedule until the relay behaves. (A reopened client has no token
    // cached, so it must log in.)
    alice.close().await;
    drop(alice);
    for (i, bad) in [json!(-1), json!(1.5), json!("forever")]
        .into_iter()
        .enumerate()
    {
        mitm.clear_rewrites();
        mitm.rewrite("/auth/token", "expires_in", bad.clone());
        let alice = Client::open(
            dir.path().join("alice"),
            &mitm.url,
            secrets_of_alice.clone(),
        )
        .await
        .unwrap();
        let mut events = alice.events();
        let connecting = {
            let alice = alice.clone();
            tokio::spawn(async move { alice.connect().await })
        };
        until(&mut events, |e| {
            matches!(
                e,
                ClientEvent::ConnectionStateChanged(ConnectionState::Reconnecting {
                    attempt: 1,
                    ..
                })
            )
        })
        .await;
        assert!(!connecting.is_finished(), "expires_in {bad}: still trying");
        assert!(token_calls(&mitm) > 0, "case {i}");
        mitm.clear_rewrites();
        tokio::time::timeout(WAIT, connecting)
            .await
            .expect("connect returns once the relay behaves")
            .unwrap()
            .unwrap();
        alice.close().await;
    }
}

fn token_calls(mitm: &Mitm) -> usize {
    mitm.requests()
        .iter()
        .filter(|p| *p == "/auth/token")
        .count()
}

/// The decoded payloads of the `send` frames the client wrote, in order.
fn sent_payloads(mitm: &Mitm) -> Vec<Vec<u8>> {
    mitm.client_frames()
        .into_iter()
        .filter(|f| f["type"] == "send")
        .map(|f| {
            serde_json::from_value::<Base64String>(f["payload"].clone())
                .unwrap()
                .decode("payload")
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_of_different_lengths_look_alike_to_the_relay() {
    let relay = relay().await;
    let url = relay.server.base_url();
    let dir = tempfile::tempdir().unwrap();
    let mitm = Mitm::start(&url).await;
    let alice = client(dir.path(), "alice", &mitm.url, "+4930300001").await;
    let bob = client(dir.path(), "bob", &url, "+4930300002").await;
    let mut alice_events = alice.events();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930300002").await.unwrap();
    // Until Bob's receipt arrives, Alice's messages carry the session's prekey header.
    let first = alice.send_text(bob_id, "warm up").await.unwrap();
    until(&mut alice_events, |e| {
        *e == ClientEvent::MessageStateChanged {
            id: first,
            state: MessageState::Delivered,
        }
    })
    .await;
    let before = sent_payloads(&mitm).len();
    for len in [1, 100, 159] {
        let id = alice.send_text(bob_id, &"x".repeat(len)).await.unwrap();
        until(&mut alice_events, |e| {
            *e == ClientEvent::MessageStateChanged {
                id,
                state: MessageState::Sent,
            }
        })
        .await;
    }
    let payloads = sent_payloads(&mitm);
    let lengths: Vec<usize> = payloads[before..before + 3].iter().map(Vec::len).collect();
    assert!(
        lengths.iter().all(|&l| l == lengths[0]),
        "ciphertext lengths {lengths:?}"
    );
    // A long text lands in a larger bucket, with Padmé's bounded overhead.
    let long = alice.send_text(bob_id, &"y".repeat(5000)).await.unwrap();
    until(&mut alice_events, |e| {
        *e == ClientEvent::MessageStateChanged {
            id: long,
            state: MessageState::Sent,
        }
    })
    .await;
    let long_len = sent_payloads(&mitm).last().unwrap().len();
    assert!(
        (5000..5000 * 112 / 100 + 200).contains(&long_len),
        "{long_len}"
    );
    alice.close().await;
    bob.close().await;
}

/// An `encrypted_message` frame the relay makes up, claiming `sender`.
fn junk_from(sender: Uuid, n: u8) -> Value {
    let mut blob = vec![2u8];
    blob.extend((0..80).map(|i| i ^ n));
    json!({
        "type": "encrypted_message",
        "id": Uuid::new_v4(),
        "sender": sender,
        "payload": Base64String::encode(blob),
        "timestamp": 1,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_claiming_a_sender_does_not_reset_the_session() {
    let relay = relay().await;
    let url = relay.server.base_url();
    let dir = tempfile::tempdir().unwrap();
    let mitm = Mitm::start(&url).await;
    let alice = client(dir.path(), "alice", &url, "+4930400001").await;
    // Bob's relay is hostile.
    let bob = client(dir.path(), "bob", &mitm.url, "+4930400002").await;
    let mut bob_events = bob.events();
    let mut alice_events = alice.events();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930400002").await.unwrap();
    let alice_id = alice.user_id().await.unwrap().unwrap();
    let first = alice.send_text(bob_id, "one").await.unwrap();
    received(&mut bob_events, first).await;

    // A few blobs claiming Alice: each is reported and dropped; the session stays.
    inject_junk(&mitm, &mut bob_events, alice_id, 4).await;
    let second = alice.send_text(bob_id, "two").await.unwrap();
    received(&mut bob_events, second).await;
    // Bob answers on the same session: a plain Signal message, no new bundle fetched.
    let reply = bob.send_text(alice_id, "back").await.unwrap();
    received(&mut alice_events, reply).await;
    let whisper = 2u8;
    let payloads = sent_payloads(&mitm);
    assert!(
        payloads.iter().all(|p| p[0] == whisper),
        "Bob kept his session"
    );
    assert!(!mitm.requests().iter().any(|p| p.starts_with("/keys/")));
    assert_eq!(bob.dropped_messages().await.unwrap().undecryptable, 4);

    // A long run renews the session, and still loses nothing: Alice's next message, sent
    // on her old session, decrypts from the retired state; Bob's next one starts afresh.
    inject_junk(&mitm, &mut bob_events, alice_id, 10).await;
    let third = alice.send_text(bob_id, "three").await.unwrap();
    received(&mut bob_events, third).await;
    let again = bob.send_text(alice_id, "renewed").await.unwrap();
    received(&mut alice_events, again).await;
    let bodies: Vec<String> = bob
        .history(alice_id, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["renewed", "three", "back", "two", "one"]);
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_peers_flood_is_acked_and_leaves_nothing() {
    const FLOOD: usize = 1000;
    let relay = relay().await;
    let url = relay.server.base_url();
    let dir = tempfile::tempdir().unwrap();
    let alice = client(dir.path(), "alice", &url, "+4930500001").await;
    let bob = client(dir.path(), "bob", &url, "+4930500002").await;
    let mut alice_events = alice.events();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930500002").await.unwrap();
    let alice_id = bob.resolve_peer("+4930500001").await.unwrap();
    assert!(bob.block_peer(alice_id).await.unwrap());
    assert!(!bob.block_peer(alice_id).await.unwrap());
    assert_eq!(bob.blocked_peers().await.unwrap(), [alice_id]);
    assert!(matches!(
        bob.send_text(alice_id, "hi").await,
        Err(CoreError::PeerBlocked { peer }) if peer == alice_id
    ));

    let mut sent = HashSet::new();
    for i in 0..FLOOD {
        sent.insert(alice.send_text(bob_id, &format!("spam {i}")).await.unwrap());
    }
    until(&mut alice_events, |e| {
        if let ClientEvent::MessageStateChanged {
            id,
            state: MessageState::Sent,
        } = e
        {
            sent.remove(id);
        }
        sent.is_empty()
    })
    .await;
    eventually("every blocked message is dropped", || async {
        bob.dropped_messages().await.unwrap().blocked == FLOOD as u64
    })
    .await;
    let store = relay.server.state().store.clone();
    eventually("the relay holds nothing for Bob", || async {
        store.pending_total().await.unwrap() == 0
    })
    .await;
    assert!(bob.history(alice_id, None, 1000).await.unwrap().is_empty());
    assert!(bob
        .conversations()
        .await
        .unwrap()
        .iter()
        .all(|c| c.peer != alice_id));
    // Not one receipt: Alice cannot even tell the flood arrived.
    assert_eq!(bob.outbox_len().await.unwrap(), 0);

    assert!(bob.unblock_peer(alice_id).await.unwrap());
    let mut bob_events = bob.events();
    let after = alice.send_text(bob_id, "sorry").await.unwrap();
    received(&mut bob_events, after).await;
    assert_eq!(bob.history(alice_id, None, 1000).await.unwrap().len(), 1);
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_store_more_than_its_quota() {
    let relay = relay().await;
    let url = relay.server.base_url();
    let dir = tempfile::tempdir().unwrap();
    let alice = client(dir.path(), "alice", &url, "+4930600001").await;
    let quota = ReceiveQuota {
        messages: 5,
        ..ReceiveQuota::default()
    };
    let options = ClientOptions {
        receive_quota: quota,
        ..ClientOptions::default()
    };
    let bob = client_with(dir.path(), "bob", &url, "+4930600002", options).await;
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930600002").await.unwrap();
    let alice_id = alice.user_id().await.unwrap().unwrap();
    for i in 0..8 {
        alice.send_text(bob_id, &format!("m{i}")).await.unwrap();
    }
    eventually("the rest is dropped over quota", || async {
        bob.dropped_messages().await.unwrap().over_quota == 3
    })
    .await;
    let stored = bob.history(alice_id, None, 100).await.unwrap();
    assert_eq!(stored.len(), 5);
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processed_ids_and_stale_prekeys_are_pruned_on_schedule() {
    const DAY_MS: i64 = 24 * 60 * 60 * 1000;
    let relay = relay().await;
    let url = relay.server.base_url();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let options = ClientOptions {
        clock: clock.clone(),
        ..ClientOptions::default()
    };
    let bob = client_with(dir.path(), "bob", &url, "+4930700002", options).await;
    let alice = client(dir.path(), "alice", &url, "+4930700001").await;
    let mut bob_events = bob.events();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    let fresh = bob.storage_usage().await.unwrap();
    assert_eq!(fresh.stale_one_time_prekeys, 0);

    // Alice's session uses one of Bob's one-time prekeys; three more are claimed by
    // accounts that never write (three of them: the relay hands one caller one key an
    // hour).
    let bob_id = alice.resolve_peer("+4930700002").await.unwrap();
    for i in 0..3 {
        let mut claimer = RawPeer::register(
            dir.path(),
            &format!("claimer{i}"),
            &url,
            &format!("+493070001{i}"),
        )
        .await;
        claimer.resolve("+4930700002").await;
    }
    for i in 0..3 {
        alice.send_text(bob_id, &format!("m{i}")).await.unwrap();
    }
    let mut got = 0;
    until(&mut bob_events, |e| {
        got += usize::from(matches!(e, ClientEvent::MessageReceived(_)));
        got == 3
    })
    .await;
    let used = bob.storage_usage().await.unwrap();
    assert_eq!(used.processed_ids, 3);
    assert_eq!(used.one_time_prekeys, fresh.one_time_prekeys - 1);

    // Upkeep runs on every connect: the three claimed keys are found stale, kept for now.
    bob.disconnect().await;
    bob.connect().await.unwrap();
    let marked = bob.storage_usage().await.unwrap();
    assert_eq!(marked.stale_one_time_prekeys, 3, "{marked:?}");
    assert_eq!(marked.processed_ids, 3);

    // A month on, processed ids can no longer be redelivered: gone. The stale keys stay
    // until their grace period ends.
    clock.advance_ms(32 * DAY_MS);
    bob.disconnect().await;
    bob.connect().await.unwrap();
    let month = bob.storage_usage().await.unwrap();
    assert_eq!(month.processed_ids, 0, "{month:?}");
    assert_eq!(month.stale_one_time_prekeys, 3);

    clock.advance_ms(36 * DAY_MS);
    bob.disconnect().await;
    bob.connect().await.unwrap();
    let later = bob.storage_usage().await.unwrap();
    assert_eq!(later.stale_one_time_prekeys, 0, "{later:?}");
    assert_eq!(later.one_time_prekeys, marked.one_time_prekeys - 3);
    // The history itself is never pruned.
    assert_eq!(later.messages, 3);
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_naming_an_unknown_peer_fail_the_same_way_at_the_call() {
    let relay = relay().await;
    let url = relay.server.base_url();
    let dir = tempfile::tempdir().unwrap();
    // Before registering: NoAccount, and nothing stored.
    let fresh = Client::open(
        dir.path().join("fresh"),
        &url,
        Arc::new(MemorySecretStore::new()),
    )
    .await
    .unwrap();
    let stranger = Uuid::new_v4();
    assert!(matches!(
        fresh.send_text(stranger, "hi").await,
        Err(CoreError::NoAccount)
    ));
    assert!(matches!(
        fresh.safety_number(stranger).await,
        Err(CoreError::NoAccount)
    ));
    assert_eq!(fresh.outbox_len().await.unwrap(), 0);

    let alice = client(dir.path(), "alice", &url, "+4930800001").await;
    alice.connect().await.unwrap();
    let unknown = |r: &Result<_, CoreError>| matches!(r, Err(CoreError::UnknownPeer { peer }) if *peer == stranger);
    assert!(unknown(&alice.send_text(stranger, "hi").await.map(|_| ())));
    assert!(unknown(&alice.safety_number(stranger).await.map(|_| ())));
    assert!(unknown(
        &alice.verify_peer(stranger, vec![1, 2, 3]).await.map(|_| ())
    ));
    assert!(unknown(&alice.start_call(stranger).await.map(|_| ())));
    assert_eq!(alice.outbox_len().await.unwrap(), 0);
    assert!(alice.history(stranger, None, 10).await.unwrap().is_empty());
    assert!(matches!(
        alice.history(stranger, None, 0).await,
        Err(CoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        alice.history(stranger, None, 1001).await,
        Err(CoreError::InvalidArgument(_))
    ));
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_in_one_millisecond_keep_their_order() {
    let relay = relay().await;
    let url = relay.server.base_url();
    let dir = tempfile::tempdir().unwrap();
    let alice = client(dir.path(), "alice", &url, "+4930900001").await;
    let bob = client(dir.path(), "bob", &url, "+4930900002").await;
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930900002").await.unwrap();
    let alice_id = alice.user_id().await.unwrap().unwrap();
    let mut sent = Vec::new();
    for i in 0..200 {
        sent.push(alice.send_text(bob_id, &format!("{i}")).await.unwrap());
    }
    let mine: Vec<Uuid> = alice
        .history(bob_id, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|m| m.id)
        .collect();
    assert_eq!(mine, sent);
    eventually("Bob has them all", || async {
        bob.history(alice_id, None, 1000).await.unwrap().len() == sent.len()
    })
    .await;
    let theirs: Vec<Uuid> = bob
        .history(alice_id, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|m| m.id)
        .collect();
    assert_eq!(theirs, sent);
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_during_a_burst_announces_every_stored_message_once() {
    const BURST: usize = 300;
    let relay = relay().await;
    let url = relay.server.base_url();
    let dir = tempfile::tempdir().unwrap();
    let alice = client(dir.path(), "alice", &url, "+4930910001").await;
    let secrets: Arc<MemorySecretStore> = Arc::new(MemorySecretStore::new());
    let bob = Client::open(dir.path().join("bob"), &url, secrets.clone())
        .await
        .unwrap();
    common::register(&bob, &url, "+4930910002").await;
    alice.connect().await.unwrap();
    let bob_id = alice.resolve_peer("+4930910002").await.unwrap();
    let alice_id = alice.user_id().await.unwrap().unwrap();
    for i in 0..BURST {
        alice
            .send_text(bob_id, &format!("burst {i}"))
            .await
            .unwrap();
    }
    eventually("the burst waits at the relay", || async {
        alice.outbox_len().await.unwrap() == 0
    })
    .await;

    let mut events = bob.events();
    bob.connect().await.unwrap();
    // Close as soon as the first message is announced, mid-burst.
    let mut announced = Vec::new();
    until(&mut events, |e| {
        if let ClientEvent::MessageReceived(m) = e {
            announced.push(m.id);
        }
        !announced.is_empty()
    })
    .await;
    bob.close().await;
    while let Ok(event) = events.try_recv() {
        if let ClientEvent::MessageReceived(m) = event {
            announced.push(m.id);
        }
    }
    drop(bob);

    // Reopened, the rest arrives and is announced; nothing twice, nothing stored unheard.
    let bob = Client::open(dir.path().join("bob"), &url, secrets.clone())
        .await
        .unwrap();
    let mut events = bob.events();
    bob.connect().await.unwrap();
    until(&mut events, |e| {
        if let ClientEvent::MessageReceived(m) = e {
            announced.push(m.id);
        }
        announced.len() >= BURST
    })
    .await;
    let unique: HashSet<Uuid> = announced.iter().copied().collect();
    assert_eq!(unique.len(), announced.len(), "announced twice");
    let stored: HashSet<Uuid> = bob
        .history(alice_id, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(stored.len(), BURST);
    assert_eq!(stored, unique);
    alice.close().await;
    bob.close().await;
}
