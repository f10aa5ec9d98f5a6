//! The protocol actor and the secret stores, driven from async code.

use std::sync::Arc;

use privcomm_core::actor::ProtocolHandle;
use privcomm_core::secret_store::join_session_keyring;
use privcomm_core::{CoreError, KeyringSecretStore, MemorySecretStore, SecretStore};
use privcomm_protocol::PhoneHash;
use uuid::Uuid;

fn phone_hash() -> PhoneHash {
    PhoneHash::parse(&"ab".repeat(32)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_is_send_and_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let secrets: Arc<dyn SecretStore> = Arc::new(MemorySecretStore::new());
    let handle = ProtocolHandle::spawn(path.clone(), secrets.clone()).unwrap();
    handle
        .call(|e| e.create_account(&phone_hash(), 5))
        .await
        .unwrap();
    let user = Uuid::new_v4();
    handle.call(move |e| e.set_user_id(user)).await.unwrap();

    // Many tasks on other threads share the handle.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let h = handle.clone();
            tokio::spawn(async move { h.call(|e| e.one_time_prekey_count()).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 5);
    }
    handle.rotate_data_key().await.unwrap();
    handle.close().await.unwrap();
    assert!(matches!(
        handle.call(|e| e.user_id()).await,
        Err(CoreError::Closed)
    ));

    let reopened = ProtocolHandle::spawn(path.clone(), secrets).unwrap();
    assert_eq!(reopened.call(|e| e.user_id()).await.unwrap(), Some(user));
    // A panicking job is contained; the actor keeps serving.
    let panicked = reopened
        .call(|_| -> Result<(), CoreError> { panic!("boom") })
        .await;
    assert!(matches!(panicked, Err(CoreError::Closed)));
    assert_eq!(
        reopened.call(|e| e.one_time_prekey_count()).await.unwrap(),
        5
    );
    reopened.close().await.unwrap();

    // Opening with the wrong secrets fails at spawn, typed.
    let wrong = ProtocolHandle::spawn(path, Arc::new(MemorySecretStore::new()));
    assert!(matches!(wrong, Err(CoreError::MissingKey)));
}

#[test]
fn kernel_keyring_store_round_trips_secrets() {
    join_session_keyring().expect("a session keyring");
    let store = KeyringSecretStore::new(format!("privcomm-test-{}", Uuid::new_v4()));
    let name = "wrap-key";
    assert!(store.get(name).unwrap().is_none());
    store.set(name, &[1, 2, 3, 250]).unwrap();
    assert_eq!(
        store.get(name).unwrap().as_deref().map(|v| v.as_slice()),
        Some(&[1u8, 2, 3, 250][..])
    );
    store.set(name, &[9; 32]).unwrap();
    assert_eq!(store.get(name).unwrap().unwrap().as_slice(), &[9u8; 32]);
    store.delete(name).unwrap();
    assert!(store.get(name).unwrap().is_none());
    store.delete(name).unwrap();
}

#[test]
fn store_opens_with_the_kernel_keyring() {
    join_session_keyring().expect("a session keyring");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let secrets = KeyringSecretStore::new(format!("privcomm-test-{}", Uuid::new_v4()));
    let mut engine = privcomm_core::SignalEngine::open(&path, &secrets).unwrap();
    engine.create_account(&phone_hash(), 1).unwrap();
    let name = engine.store().secret_name();
    drop(engine);
    let engine = privcomm_core::SignalEngine::open(&path, &secrets).unwrap();
    assert!(engine.has_account());
    drop(engine);
    secrets.delete(&name).unwrap();
    assert!(matches!(
        privcomm_core::SignalEngine::open(&path, &secrets),
        Err(CoreError::MissingKey)
    ));
}
