//! The REST and WebSocket clients against a real relay on an ephemeral port: registration,
//! login, bundles, a Signal session built from the relay's bundle, delivery and acks, and the
//! relay's errors as typed errors.

mod common;

use common::{code_for, random_phone_hash, relay};
use privcomm_core::net::{RelayApi, RelaySocket, SocketEvent};
use privcomm_core::{CoreError, MemorySecretStore, SignalEngine};
use privcomm_protocol::rest::PreKeyUploadRequest;
use privcomm_protocol::ws::{ClientFrame, ServerFrame};
use privcomm_protocol::{Base64String, ErrorCode, PhoneHash};
use uuid::Uuid;

struct Account {
    engine: SignalEngine,
    phone_hash: String,
    user_id: Uuid,
    token: String,
}

/// A random E.164 number.
fn random_number() -> String {
    use rand::Rng;
    format!(
        "+1{:013}",
        rand::rng().random_range(0..10_000_000_000_000u64)
    )
}

async fn enrol(api: &RelayApi, url: &str, dir: &std::path::Path, name: &str) -> Account {
    let secrets = MemorySecretStore::new();
    let mut engine = SignalEngine::open(&dir.join(format!("{name}.db")), &secrets).unwrap();
    let number = random_number();
    let phone_hash = privcomm_core::client::phone::phone_hash(&number).unwrap();
    engine
        .create_account(&PhoneHash::parse(&phone_hash).unwrap(), 20)
        .unwrap();
    let session = api
        .request_verification(&number, None)
        .await
        .unwrap()
        .session;
    let nonce = api.challenge(&phone_hash).await.unwrap();
    let mut request = engine.registration_request(&nonce).unwrap();
    request.verification_code = code_for(url, &number).await;
    request.verification_session = session;
    let registered = api.register(&request).await.unwrap();
    engine.set_user_id(registered.user_id).unwrap();
    let nonce = api.challenge(&phone_hash).await.unwrap();
    let token = api
        .token(&engine.token_request(&nonce).unwrap())
        .await
        .unwrap();
    assert_eq!(token.user_id, registered.user_id);
    Account {
        engine,
        phone_hash,
        user_id: registered.user_id,
        token: token.token,
    }
}

async fn next_frame(socket: &mut RelaySocket) -> ServerFrame {
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await {
            Ok(Ok(SocketEvent::Frame(frame))) => return frame,
            Ok(Ok(SocketEvent::Heartbeat)) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_session_send_receive_ack() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let api = RelayApi::new(&relay.server.base_url()).unwrap();
    assert_eq!(api.health().await.unwrap().status, "healthy");
    let mut alice = enrol(&api, &relay.server.base_url(), dir.path(), "alice").await;
    let mut bob = enrol(&api, &relay.server.base_url(), dir.path(), "bob").await;
    assert_eq!(api.prekey_count(&bob.token).await.unwrap(), 20);

    // Alice builds a session from the relay's bundle and sends over her WebSocket.
    let bundle = api.bundle(&alice.token, &bob.phone_hash).await.unwrap();
    alice.engine.process_bundle(bob.user_id, &bundle).unwrap();
    assert_eq!(api.prekey_count(&bob.token).await.unwrap(), 19);
    let mut alice_ws = RelaySocket::connect(&api.ws_url(), &alice.token)
        .await
        .unwrap();
    assert_eq!(next_frame(&mut alice_ws).await, ServerFrame::QueueEmpty);
    let mut sent = Vec::new();
    for i in 0..20 {
        let payload = alice
            .engine
            .encrypt(bob.user_id, format!("hello {i}").as_bytes())
            .unwrap();
        let id = Uuid::new_v4();
        alice_ws
            .send(&ClientFrame::Send {
                to: bob.user_id,
                id,
                payload: Base64String::encode(payload),
                registration_id: None,
            })
            .await
            .unwrap();
        match next_frame(&mut alice_ws).await {
            ServerFrame::Sent { id: got, .. } => assert_eq!(got, id),
            other => panic!("expected sent, got {other:?}"),
        }
        sent.push(id);
    }

    // Bob receives, decrypts into his history exactly once, then acks.
    let mut bob_ws = RelaySocket::connect(&api.ws_url(), &bob.token)
        .await
        .unwrap();
    let mut received = Vec::new();
    loop {
        match next_frame(&mut bob_ws).await {
            ServerFrame::EncryptedMessage {
                id,
                sender,
                payload,
                timestamp,
            } => {
                assert_eq!(sender, alice.user_id);
                let payload = payload.decode("payload").unwrap();
                let text = bob
                    .engine
                    .decrypt_with(sender, &payload, |store, plain| {
                        assert!(store.mark_processed(id, timestamp)?);
                        Ok(String::from_utf8(plain.to_vec()).unwrap())
                    })
                    .unwrap();
                received.push(text);
                bob_ws.send(&ClientFrame::Ack { id }).await.unwrap();
            }
            ServerFrame::QueueEmpty => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        received,
        (0..20).map(|i| format!("hello {i}")).collect::<Vec<_>>()
    );

    // Prekey top-up goes through the authenticated upload.
    let more = bob.engine.generate_one_time_prekeys(5).unwrap();
    let count = api
        .upload_prekeys(
            &bob.token,
            &PreKeyUploadRequest {
                one_time_prekeys: more,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(count, 24);
    alice_ws.close().await;
    bob_ws.close().await;
    relay.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_errors_are_typed() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let api = RelayApi::new(&relay.server.base_url()).unwrap();
    let alice = enrol(&api, &relay.server.base_url(), dir.path(), "alice").await;

    // Registering a taken number without the code texted to it.
    let nonce = api.challenge(&alice.phone_hash).await.unwrap();
    let mut request = alice.engine.registration_request(&nonce).unwrap();
    request.verification_code = "000000".into();
    let again = api.register(&request).await;
    assert!(matches!(again, Err(CoreError::InvalidCode)), "{again:?}");
    // A number that is not E.164 is refused as invalid input.
    let bad = api.request_verification("4930111111", None).await;
    assert!(matches!(bad, Err(CoreError::InvalidArgument(_))), "{bad:?}");
    // A bad token, on REST and on the WebSocket upgrade.
    let bad = api.prekey_count("not-a-token").await;
    assert!(matches!(
        bad,
        Err(CoreError::Relay {
            status: 401,
            code: Some(ErrorCode::Unauthorized),
            ..
        })
    ));
    let ws = RelaySocket::connect(&api.ws_url(), "not-a-token").await;
    assert!(
        matches!(ws, Err(CoreError::Relay { status: 401, .. })),
        "{:?}",
        ws.err()
    );
    // Unknown user.
    let missing = api.bundle(&alice.token, &random_phone_hash()).await;
    assert!(matches!(
        missing,
        Err(CoreError::Relay {
            status: 404,
            code: Some(ErrorCode::NotFound),
            ..
        })
    ));
    // Not a phone hash: refused before anything is sent.
    assert!(matches!(
        api.bundle(&alice.token, "../health").await,
        Err(CoreError::InvalidArgument(_))
    ));
    // Bad relay URLs.
    assert!(matches!(
        RelayApi::new("ftp://example.org"),
        Err(CoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        RelayApi::new("not a url"),
        Err(CoreError::InvalidArgument(_))
    ));
    relay.server.shutdown().await.unwrap();

    // Nobody listening: a network error, not a panic.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let api = RelayApi::new(&format!("http://127.0.0.1:{port}")).unwrap();
    assert!(matches!(api.health().await, Err(CoreError::Network(_))));
    assert!(matches!(
        RelaySocket::connect(&api.ws_url(), "t").await,
        Err(CoreError::Network(_))
    ));
}

#[test]
fn ws_url_follows_the_base_scheme() {
    assert_eq!(
        RelayApi::new("http://127.0.0.1:8000")
            .unwrap()
            .ws_url()
            .as_str(),
        "ws://127.0.0.1:8000/ws"
    );
    assert_eq!(
        RelayApi::new("https://relay.example/")
            .unwrap()
            .ws_url()
            .as_str(),
        "wss://relay.example/ws"
    );
}
