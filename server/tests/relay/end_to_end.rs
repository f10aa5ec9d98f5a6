//! Acceptance 1: register → challenge → token → bundle → send → receive → ack → gone, with a
//! real libsignal session built from the relay's bundle.

use libsignal_protocol::{
    message_decrypt, message_encrypt, process_prekey_bundle, CiphertextMessage,
    GenericSignedPreKey, IdentityKey, InMemSignalProtocolStore, KyberPreKeyStore, PreKeyBundle,
    PreKeySignalMessage, PreKeyStore, ProtocolAddress, PublicKey, SignedPreKeyStore,
};
use privcomm_protocol::rest::{PreKeyBundleResponse, SendMessageResponse};
use privcomm_protocol::ws::ServerFrame;
use privcomm_protocol::Base64String;

use crate::common::{now, send_and_confirm, Db, Device, TestRelay};

fn bundle_from(resp: &PreKeyBundleResponse) -> PreKeyBundle {
    let b = |s: &Base64String| s.decode("field").expect("b64");
    PreKeyBundle::new(
        resp.registration_id,
        Device::device_id(),
        resp.one_time_prekey.as_ref().map(|k| {
            (
                k.key_id.into(),
                PublicKey::deserialize(&b(&k.public_key)).expect("otpk"),
            )
        }),
        resp.signed_prekey.key_id.into(),
        PublicKey::deserialize(&b(&resp.signed_prekey.public_key)).expect("spk"),
        b(&resp.signed_prekey.signature),
        resp.kyber_prekey.key_id.into(),
        libsignal_protocol::kem::PublicKey::deserialize(&b(&resp.kyber_prekey.public_key))
            .expect("kyber"),
        b(&resp.kyber_prekey.signature),
        IdentityKey::decode(&b(&resp.identity_key)).expect("identity"),
    )
    .expect("bundle")
}

async fn signal_store_for(device: &Device) -> InMemSignalProtocolStore {
    let mut store =
        InMemSignalProtocolStore::new(device.identity, device.registration_id).expect("store");
    store
        .save_signed_pre_key(
            device.signed_prekey.id().expect("id"),
            &device.signed_prekey,
        )
        .await
        .expect("spk");
    store
        .save_kyber_pre_key(device.kyber_prekey.id().expect("id"), &device.kyber_prekey)
        .await
        .expect("kyber");
    for k in &device.one_time_prekeys {
        store
            .save_pre_key(k.id().expect("id"), k)
            .await
            .expect("otpk");
    }
    store
}

async fn full_path_delivers_and_deletes(db: Db) {
    let relay = TestRelay::start(db).await;
    let alice = Device::enrol(&relay, 5).await;
    let bob = Device::enrol(&relay, 5).await;

    // Alice fetches Bob's bundle and builds a real Signal session from it.
    let (status, body) = relay
        .get(&format!("/keys/{}", bob.phone_hash), Some(alice.bearer()))
        .await;
    assert_eq!(status, 200, "{body}");
    let bundle: PreKeyBundleResponse = serde_json::from_value(body).expect("bundle json");
    assert_eq!(bundle.user_id, bob.id());
    assert!(bundle.one_time_prekey.is_some());
    let bob_address = ProtocolAddress::new(bob.id().to_string(), Device::device_id());
    let alice_address = ProtocolAddress::new(alice.id().to_string(), Device::device_id());
    let mut alice_store = signal_store_for(&alice).await;
    let mut rng = rand::rng();
    process_prekey_bundle(
        &bob_address,
        &mut alice_store.session_store,
        &mut alice_store.identity_store,
        &bundle_from(&bundle),
        now(),
        &mut rng,
    )
    .await
    .expect("session from relay bundle");
    let ciphertext = message_encrypt(
        b"Hello, Bob!",
        &bob_address,
        &mut alice_store.session_store,
        &mut alice_store.identity_store,
        now(),
        &mut rng,
    )
    .await
    .expect("encrypt");
    let payload = ciphertext.serialize().to_vec();

    // Alice sends over her WebSocket; the relay confirms it stored it.
    let mut alice_ws = alice.online(&relay).await;
    let server_id = send_and_confirm(&mut alice_ws, bob.id(), &payload).await;
    let pending = relay
        .store()
        .pending_messages(bob.id(), 0, 10)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 1);

    // Bob connects, receives, decrypts, acks.
    let mut bob_ws = bob.connect(&relay).await;
    let ServerFrame::EncryptedMessage {
        id,
        sender,
        payload: got,
        timestamp,
    } = bob_ws.frame().await
    else {
        panic!("expected a message");
    };
    assert_eq!((id, sender), (server_id, alice.id()));
    assert!(timestamp > 0);
    let mut bob_store = signal_store_for(&bob).await;
    let message = PreKeySignalMessage::try_from(got.decode("payload").expect("b64").as_slice())
        .expect("prekey msg");
    let plaintext = message_decrypt(
        &CiphertextMessage::PreKeySignalMessage(message),
        &alice_address,
        &mut bob_store.session_store,
        &mut bob_store.identity_store,
        &mut bob_store.pre_key_store,
        &bob_store.signed_pre_key_store,
        &mut bob_store.kyber_pre_key_store,
        &mut rng,
    )
    .await
    .expect("decrypt");
    assert_eq!(plaintext, b"Hello, Bob!");
    assert!(matches!(bob_ws.frame().await, ServerFrame::QueueEmpty));
    bob_ws.ack(id).await;

    // The ack deletes it: poll storage briefly (the ack is processed asynchronously).
    let mut gone = false;
    for _ in 0..100 {
        if relay
            .store()
            .pending_messages(bob.id(), 0, 10)
            .await
            .expect("pending")
            .is_empty()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "acked message must be deleted from storage");

    // The REST send path delivers live to the connected recipient as well.
    let client_id = uuid::Uuid::new_v4();
    let body = serde_json::json!({"to": bob.id(), "id": client_id, "payload": Base64String::encode(b"second")});
    let (status, resp) = relay
        .post("/api/v1/messages", &body, Some(alice.bearer()))
        .await;
    assert_eq!(status, 202, "{resp}");
    let resp: SendMessageResponse = serde_json::from_value(resp).expect("send response");
    let ServerFrame::EncryptedMessage { id, payload, .. } = bob_ws.frame().await else {
        panic!("expected the REST-sent message live");
    };
    assert_eq!(id, resp.id);
    assert_eq!(payload.decode("p").expect("b64"), b"second");
    // Sent again with the same client id: stored once, same server id.
    let (status, again) = relay
        .post("/api/v1/messages", &body, Some(alice.bearer()))
        .await;
    assert_eq!(status, 202);
    assert_eq!(again["id"], serde_json::json!(resp.id));
    bob_ws
        .expect_silence(std::time::Duration::from_millis(300))
        .await;
    bob_ws.ack(id).await;

    let (_, metrics) = relay.get("/metrics", None).await;
    let metrics = metrics.as_str().expect("text").to_owned();
    assert!(
        metrics.contains("privcomm_messages_stored_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("privcomm_ws_connections 2"), "{metrics}");
    alice_ws.close().await;
    bob_ws.close().await;
    relay.finish().await;
}

crate::on_both_backends!(full_path_delivers_and_deletes);
