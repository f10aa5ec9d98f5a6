//! Acceptance of the client store and Signal engine: sessions over real SQLite files,
//! persistence, no plaintext at rest, tamper detection, key rotation, identity changes.

mod common;

use std::collections::HashSet;

use common::Device;
use privcomm_core::crypto::{DataKey, StoreKeys, WrapKey};
use privcomm_core::store::wrap_secret_name;
use privcomm_core::{
    CoreError, MemorySecretStore, MessageState, SecretStore, SignalEngine, StoredMessage,
};
use rand::seq::SliceRandom;
use uuid::Uuid;

/// A message's text and the payload it was encrypted to.
type Sealed = (String, Vec<u8>);

/// Encrypts `count` numbered messages from `from` to `to`.
fn encrypt_many(from: &mut Device, to: Uuid, tag: &str, count: usize) -> Vec<Sealed> {
    (0..count)
        .map(|i| {
            let text = format!("{tag}-secret-text-{i:04}");
            let payload = from.engine().encrypt(to, text.as_bytes()).expect("encrypt");
            (text, payload)
        })
        .collect()
}

/// Delivers messages shuffled, dropping every seventh; each must decrypt to its text and be
/// stored in the recipient's history. Returns the delivered ones.
fn deliver_shuffled(to: &mut Device, from: Uuid, messages: &[Sealed]) -> Vec<Sealed> {
    let mut delivered: Vec<_> = messages
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 7 != 3)
        .map(|(_, m)| m.clone())
        .collect();
    delivered.shuffle(&mut rand::rng());
    for (i, (text, payload)) in delivered.iter().enumerate() {
        let stored = to
            .engine()
            .decrypt_with(from, payload, |store, plain| {
                let message = StoredMessage {
                    id: Uuid::new_v4(),
                    peer: from,
                    outgoing: false,
                    body: String::from_utf8(plain.to_vec()).expect("utf8"),
                    sent_at: 1_700_000_000_000 + i as i64,
                    state: MessageState::Received,
                };
                store.save_message(&message)?;
                Ok(message.body)
            })
            .expect("every delivered message decrypts");
        assert_eq!(&stored, text);
    }
    delivered
}

fn converse(alice: &mut Device, bob: &mut Device, count: usize) -> (Vec<Sealed>, Vec<Sealed>) {
    let a_to_b = encrypt_many(alice, bob.user_id, "alice", count);
    let got_b = deliver_shuffled(bob, alice.user_id, &a_to_b);
    let b_to_a = encrypt_many(bob, alice.user_id, "bob", count);
    let got_a = deliver_shuffled(alice, bob.user_id, &b_to_a);
    (got_b, got_a)
}

fn pair(dir: &std::path::Path) -> (Device, Device) {
    let mut alice = Device::create(dir, "alice", 10);
    let mut bob = Device::create(dir, "bob", 10);
    let bundle = bob.bundle(Some(0));
    alice
        .engine()
        .process_bundle(bob.user_id, &bundle)
        .expect("session from bundle");
    (alice, bob)
}

#[test]
fn sessions_survive_shuffled_gappy_delivery_and_reject_replays() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = pair(dir.path());
    assert!(alice.engine().has_session(bob.user_id).unwrap());
    let (to_bob, to_alice) = converse(&mut alice, &mut bob, 100);
    assert!(!to_bob.is_empty() && !to_alice.is_empty());

    // Replays: the first (PreKey) message and a later one are refused, typed.
    for (_, payload) in [&to_bob[0], &to_bob[to_bob.len() / 2]] {
        let replay = bob.engine().decrypt(alice.user_id, payload);
        assert!(
            matches!(replay, Err(CoreError::DuplicateMessage)),
            "{replay:?}"
        );
    }
    let replay = alice.engine().decrypt(bob.user_id, &to_alice[0].1);
    assert!(
        matches!(replay, Err(CoreError::DuplicateMessage)),
        "{replay:?}"
    );

    // Garbage is a typed error, not a panic.
    for junk in [&b""[..], &[3u8, 1, 2, 3][..], &[2u8][..], &[9u8, 9][..]] {
        assert!(matches!(
            bob.engine().decrypt(alice.user_id, junk),
            Err(CoreError::InvalidMessage(_))
        ));
    }
    // Without a session: typed.
    let stranger = Uuid::new_v4();
    assert!(
        matches!(alice.engine().encrypt(stranger, b"x"), Err(CoreError::NoSession { peer }) if peer == stranger)
    );
}

#[test]
fn conversation_continues_after_reopening_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = pair(dir.path());
    converse(&mut alice, &mut bob, 20);
    alice.reopen();
    bob.reopen();
    converse(&mut alice, &mut bob, 20);
    // History survived too, newest first, paged.
    let page = bob
        .engine()
        .store()
        .messages(alice.user_id, None, 10)
        .unwrap();
    assert_eq!(page.len(), 10);
    let cursor = privcomm_core::HistoryCursor {
        sent_at: page[9].sent_at,
        id: page[9].id,
    };
    let next = bob
        .engine()
        .store()
        .messages(alice.user_id, Some(cursor), 1000)
        .unwrap();
    let total = page.len() + next.len();
    assert!(total >= 30, "both rounds of history are kept: {total}");
    assert!(page
        .windows(2)
        .all(|w| (w[0].sent_at, w[0].id) > (w[1].sent_at, w[1].id)));
    let conversations = bob.engine().store().conversations().unwrap();
    assert_eq!(conversations.len(), 1);
    assert_eq!(conversations[0].peer, alice.user_id);
}

fn file_bytes(path: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if let Ok(bytes) = std::fs::read(p) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn database_files_hold_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = pair(dir.path());
    let (to_bob, to_alice) = converse(&mut alice, &mut bob, 30);
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for (text, _) in to_bob.iter().chain(&to_alice) {
        needles.push(text.clone().into_bytes());
    }
    for device in [&mut alice, &mut bob] {
        needles.push(device.user_id.as_bytes().to_vec());
        needles.push(device.user_id.to_string().into_bytes());
        needles.push(device.user_id.simple().to_string().into_bytes());
        needles.push(device.phone_hash.clone().into_bytes());
        let keys = device.engine().registration_request(&[0; 32]).unwrap();
        for key in [
            &keys.identity_key,
            &keys.signed_prekey.public_key,
            &keys.kyber_prekey.public_key,
        ] {
            let raw = key.decode("k").unwrap();
            needles.push(raw[1..].to_vec()); // the key without its type byte
            needles.push(key.as_str().as_bytes().to_vec());
        }
        for otpk in keys.one_time_prekeys.iter().take(3) {
            needles.push(otpk.public_key.decode("k").unwrap()[1..].to_vec());
        }
    }
    for device in [&alice, &bob] {
        let bytes = file_bytes(&device.path);
        assert!(bytes.len() > 10_000, "the files were read");
        for needle in &needles {
            assert!(
                !contains(&bytes, needle),
                "plaintext found in {}",
                device.path.display()
            );
        }
    }
    // Closed and checkpointed, still nothing.
    alice.close();
    let bytes = file_bytes(&alice.path);
    for needle in &needles {
        assert!(!contains(&bytes, needle));
    }
}

fn raw_db(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("raw open")
}

#[test]
fn tampering_and_wrong_keys_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = pair(dir.path());
    let mut carol = Device::create(dir.path(), "carol", 2);
    let bundle = carol.bundle(None);
    alice
        .engine()
        .process_bundle(carol.user_id, &bundle)
        .unwrap();
    converse(&mut alice, &mut bob, 3);
    alice.close();

    // Flip one byte of a session row.
    let conn = raw_db(&alice.path);
    let rows: Vec<(Vec<u8>, Vec<u8>)> = conn
        .prepare("SELECT address_hash, sealed FROM sessions")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    let mut flipped = rows[0].1.clone();
    flipped[20] ^= 0x01;
    conn.execute(
        "UPDATE sessions SET sealed = ?1 WHERE address_hash = ?2",
        rusqlite::params![flipped, rows[0].0],
    )
    .unwrap();
    drop(conn);
    alice.reopen();
    let results = [
        alice.engine().encrypt(bob.user_id, b"x"),
        alice.engine().encrypt(carol.user_id, b"x"),
    ];
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(CoreError::Tampered { table: "sessions" }))),
        "{results:?}"
    );
    alice.close();

    // Restore it, then swap the two rows' ciphertexts: both fail.
    let conn = raw_db(&alice.path);
    conn.execute(
        "UPDATE sessions SET sealed = ?1 WHERE address_hash = ?2",
        rusqlite::params![rows[1].1, rows[0].0],
    )
    .unwrap();
    conn.execute(
        "UPDATE sessions SET sealed = ?1 WHERE address_hash = ?2",
        rusqlite::params![rows[0].1, rows[1].0],
    )
    .unwrap();
    drop(conn);
    alice.reopen();
    for peer in [bob.user_id, carol.user_id] {
        assert!(matches!(
            alice.engine().encrypt(peer, b"x"),
            Err(CoreError::Tampered { table: "sessions" })
        ));
    }
    alice.close();

    // Moving a message to another conversation is detected as well.
    let conn = raw_db(&bob.path);
    conn.execute("UPDATE messages SET peer_hash = zeroblob(32)", [])
        .unwrap();
    drop(conn);
    bob.reopen();
    assert!(bob
        .engine()
        .store()
        .messages(alice.user_id, None, 10)
        .unwrap()
        .is_empty());

    // A wrong wrapping secret, and none at all.
    let wrong = MemorySecretStore::new();
    let name = {
        let conn = raw_db(&alice.path);
        let id: Vec<u8> = conn
            .query_row("SELECT value FROM meta WHERE key = 'db_id'", [], |r| {
                r.get(0)
            })
            .unwrap();
        wrap_secret_name(&id)
    };
    wrong.set(&name, WrapKey::generate().as_bytes()).unwrap();
    assert!(matches!(
        SignalEngine::open(&alice.path, &wrong),
        Err(CoreError::WrongKey)
    ));
    assert!(matches!(
        SignalEngine::open(&alice.path, &MemorySecretStore::new()),
        Err(CoreError::MissingKey)
    ));
    // The right key still works: nothing was damaged by the failed attempts.
    alice.reopen();
    assert!(alice.engine().has_account());
}

#[test]
fn rotating_the_data_key_keeps_sessions_and_retires_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = pair(dir.path());
    converse(&mut alice, &mut bob, 10);
    let before_history = alice
        .engine()
        .store()
        .messages(bob.user_id, None, 100)
        .unwrap();
    alice.close();
    let old_wrapped: Vec<u8> = raw_db(&alice.path)
        .query_row(
            "SELECT value FROM meta WHERE key = 'wrapped_data_key'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    alice.reopen();
    let secrets = alice.secrets.clone();
    alice.engine().rotate_data_key(secrets.as_ref()).unwrap();
    converse(&mut alice, &mut bob, 10);
    let after_history = alice
        .engine()
        .store()
        .messages(bob.user_id, None, 100)
        .unwrap();
    // Ten sent, every seventh (one) dropped in transit.
    assert_eq!(after_history.len(), before_history.len() + 9);
    alice.reopen();
    converse(&mut alice, &mut bob, 5);
    alice.close();

    // The old data key opens no row of the rotated file.
    let conn = raw_db(&alice.path);
    let id: Vec<u8> = conn
        .query_row("SELECT value FROM meta WHERE key = 'db_id'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let wrap =
        WrapKey::from_bytes(&alice.secrets.get(&wrap_secret_name(&id)).unwrap().unwrap()).unwrap();
    let old_keys = StoreKeys::derive(&DataKey::unwrap(&old_wrapped, &wrap).unwrap());
    let sealed: Vec<(Vec<u8>, Vec<u8>)> = conn
        .prepare("SELECT id, sealed FROM messages")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!sealed.is_empty());
    for (id, value) in &sealed {
        assert!(old_keys.open("messages", id, value).is_err());
    }
    // Putting the old wrapped key back does not bring the old data key's access back.
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'wrapped_data_key'",
        [old_wrapped],
    )
    .unwrap();
    drop(conn);
    let reopened = SignalEngine::open(&alice.path, alice.secrets.as_ref());
    assert!(
        matches!(reopened, Err(CoreError::Tampered { table: "account" })),
        "{:?}",
        reopened.err()
    );
}

#[test]
fn changed_identity_is_reported_until_accepted_and_changes_the_safety_number() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = pair(dir.path());
    converse(&mut alice, &mut bob, 3);
    let alice_view = alice.engine().safety_number(bob.user_id).unwrap();
    let bob_view = bob.engine().safety_number(alice.user_id).unwrap();
    assert_eq!(alice_view.digits, bob_view.digits);
    assert_eq!(alice_view.digits.len(), 60);
    // Scanning each other's code verifies; a wrong code does not.
    assert!(!alice
        .engine()
        .verify_scanned(bob.user_id, b"not a code")
        .unwrap());
    assert!(alice
        .engine()
        .verify_scanned(bob.user_id, &bob_view.scannable)
        .unwrap());
    assert!(
        alice
            .engine()
            .peer_identity(bob.user_id)
            .unwrap()
            .unwrap()
            .verified
    );

    // Bob reinstalls: new identity, same relay user id.
    let mut new_bob = Device::create(dir.path(), "bob-reinstalled", 5);
    new_bob.engine().set_user_id(bob.user_id).unwrap();
    new_bob.user_id = bob.user_id;
    let alice_bundle = alice.bundle(Some(5));
    new_bob
        .engine()
        .process_bundle(alice.user_id, &alice_bundle)
        .unwrap();
    let hello = new_bob
        .engine()
        .encrypt(alice.user_id, b"it's me, new phone")
        .unwrap();
    let result = alice.engine().decrypt(bob.user_id, &hello);
    assert!(
        matches!(result, Err(CoreError::IdentityChanged { peer }) if peer == bob.user_id),
        "{result:?}"
    );
    // Nothing was accepted silently: still refused, and sending to the old session is unchanged.
    assert!(matches!(
        alice.engine().decrypt(bob.user_id, &hello),
        Err(CoreError::IdentityChanged { .. })
    ));
    let known = alice.engine().peer_identity(bob.user_id).unwrap().unwrap();
    assert!(known.pending.is_some());

    alice.engine().accept_identity(bob.user_id).unwrap();
    let plain = alice.engine().decrypt(bob.user_id, &hello).unwrap();
    assert_eq!(&plain[..], b"it's me, new phone");
    let known = alice.engine().peer_identity(bob.user_id).unwrap().unwrap();
    assert!(!known.verified, "a new key is not verified");
    converse(&mut alice, &mut new_bob, 5);

    let alice_new = alice.engine().safety_number(bob.user_id).unwrap();
    let bob_new = new_bob.engine().safety_number(alice.user_id).unwrap();
    assert_eq!(alice_new.digits, bob_new.digits);
    assert_ne!(
        alice_new.digits, alice_view.digits,
        "the safety number changed"
    );
}

#[test]
fn prekeys_are_generated_uploaded_and_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Device::create(
        dir.path(),
        "bob",
        privcomm_core::engine::INITIAL_ONE_TIME_PREKEYS,
    );
    assert_eq!(bob.engine().one_time_prekey_count().unwrap(), 100);
    let request = bob.engine().registration_request(&[7; 32]).unwrap();
    assert_eq!(request.one_time_prekeys.len(), 100);
    let ids: HashSet<u32> = request.one_time_prekeys.iter().map(|k| k.key_id).collect();
    assert_eq!(ids.len(), 100);
    let more = bob.engine().generate_one_time_prekeys(20).unwrap();
    assert!(
        more.iter().all(|k| !ids.contains(&k.key_id)),
        "new ids continue the sequence"
    );
    let rotated = bob.engine().rotate_signed_prekey().unwrap();
    assert_ne!(rotated.key_id, request.signed_prekey.key_id);
    assert_eq!(bob.engine().current_signed_prekey().unwrap(), rotated);

    // A session started from an old signed prekey still completes after rotation, and its
    // one-time prekey is consumed.
    let mut alice = Device::create(dir.path(), "alice", 1);
    let mut bundle = bob.bundle(Some(0));
    bundle.signed_prekey = request.signed_prekey.clone();
    alice.engine().process_bundle(bob.user_id, &bundle).unwrap();
    let m = alice.engine().encrypt(bob.user_id, b"hi").unwrap();
    assert_eq!(&bob.engine().decrypt(alice.user_id, &m).unwrap()[..], b"hi");
    assert_eq!(bob.engine().one_time_prekey_count().unwrap(), 119);

    // A bundle with a bad signature is refused, typed.
    let mut forged = bob.bundle(Some(1));
    forged.signed_prekey.signature = privcomm_protocol::Base64String::encode([0u8; 64]);
    let mut carol = Device::create(dir.path(), "carol", 1);
    assert!(matches!(
        carol.engine().process_bundle(bob.user_id, &forged),
        Err(CoreError::InvalidBundle(_))
    ));
    let mut wrong_user = bob.bundle(Some(1));
    wrong_user.user_id = Uuid::new_v4();
    assert!(matches!(
        carol.engine().process_bundle(bob.user_id, &wrong_user),
        Err(CoreError::InvalidBundle(_))
    ));
}

#[test]
fn processed_ids_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Device::create(dir.path(), "alice", 0);
    let id = Uuid::new_v4();
    let store = alice.engine().store();
    assert!(!store.is_processed(id).unwrap());
    assert!(store.mark_processed(id, 10).unwrap());
    assert!(!store.mark_processed(id, 11).unwrap());
    assert!(store.is_processed(id).unwrap());
    assert_eq!(store.prune_processed(11).unwrap(), 1);
    assert!(!store.is_processed(id).unwrap());
}

#[test]
fn a_failing_step_of_a_decrypt_batch_rolls_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = pair(dir.path());
    let from = alice.user_id;
    let sealed = encrypt_many(&mut alice, bob.user_id, "batch", 10);
    let mut items: Vec<(u128, Vec<u8>)> = sealed
        .iter()
        .enumerate()
        .map(|(i, (_, payload))| (i as u128, payload.clone()))
        .collect();
    // Step 7 does not decrypt; step 4 decrypts and stores, then fails (as storage might).
    items[7].1 = vec![3, 1, 2, 3];
    let mut commits = Vec::new();
    let mut failures = Vec::new();
    let results = bob.engine().decrypt_batch(
        &items,
        |scope, (i, payload)| {
            let plain = scope.decrypt(from, payload)?;
            let body = String::from_utf8(plain.to_vec()).expect("utf8");
            scope.store().save_message(&StoredMessage {
                id: Uuid::from_u128(i + 1),
                peer: from,
                outgoing: false,
                body: body.clone(),
                sent_at: 1_700_000_000_000 + *i as i64,
                state: MessageState::Received,
            })?;
            if *i == 4 {
                return Err(CoreError::Protocol("step 4 fails after writing".into()));
            }
            Ok(body)
        },
        |_, done| {
            commits.push(done.len());
            Ok(())
        },
        |_, (i, _), _| {
            failures.push(*i);
            true
        },
    );
    assert_eq!(results.len(), 10);
    for (i, result) in results.iter().enumerate() {
        match i {
            4 => assert!(matches!(result, Err(CoreError::Protocol(_))), "{result:?}"),
            7 => assert!(
                matches!(result, Err(CoreError::InvalidMessage(_))),
                "{result:?}"
            ),
            _ => assert_eq!(result.as_ref().ok(), Some(&sealed[i].0)),
        }
    }
    assert_eq!(failures, [4, 7]);
    // 0..4 together, 5..7 together, 8..10 together; each failure alone, rolled back.
    assert_eq!(commits, [4, 2, 2]);
    let history = bob.engine().store().messages(from, None, 100).unwrap();
    let mut stored: Vec<u128> = history.iter().map(|m| m.id.as_u128() - 1).collect();
    stored.sort();
    assert_eq!(stored, [0, 1, 2, 3, 5, 6, 8, 9]);
    // Step 4's session advance went with its rollback: its message still decrypts once;
    // the committed ones are duplicates.
    assert_eq!(
        &bob.engine().decrypt(from, &sealed[4].1).unwrap()[..],
        sealed[4].0.as_bytes()
    );
    assert!(matches!(
        bob.engine().decrypt(from, &sealed[5].1),
        Err(CoreError::DuplicateMessage)
    ));

    // A failure the caller stops on ends the batch: what follows is not touched.
    let more = encrypt_many(&mut alice, bob.user_id, "stop", 3);
    let items = [more[0].1.clone(), vec![3, 1, 2, 3], more[2].1.clone()];
    let results = bob.engine().decrypt_batch(
        &items,
        |scope, payload| scope.decrypt(from, payload).map(|p| p.to_vec()),
        |_, _| Ok(()),
        |_, _, _| false,
    );
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok() && results[1].is_err());
    assert_eq!(
        &bob.engine().decrypt(from, &more[2].1).unwrap()[..],
        more[2].0.as_bytes()
    );
}

#[test]
fn only_confirmed_uploads_count_as_held_and_can_go_stale() {
    let dir = tempfile::tempdir().unwrap();
    // Ten keys from account creation, confirmed by registration.
    let mut device = Device::create(dir.path(), "keys", 10);
    let engine = device.engine();
    engine
        .store()
        .write(|s| s.mark_prekeys_uploaded(None))
        .unwrap();
    assert!(engine.unconfirmed_one_time_prekeys().unwrap().is_empty());
    // A top-up whose upload was never confirmed (a timeout, the app killed).
    let pending: Vec<u32> = engine
        .generate_one_time_prekeys(5)
        .unwrap()
        .iter()
        .map(|k| k.key_id)
        .collect();
    let unconfirmed: Vec<u32> = engine
        .unconfirmed_one_time_prekeys()
        .unwrap()
        .iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(unconfirmed, pending);

    // The relay holds 3: the 3 newest confirmed ones, not the unconfirmed newest rows.
    let marked = engine
        .store()
        .write(|s| s.mark_stale_prekeys(3, 1_000))
        .unwrap();
    assert_eq!(marked, 7);
    let usage = engine.store().usage().unwrap();
    assert_eq!(
        (usage.one_time_prekeys, usage.stale_one_time_prekeys),
        (15, 7)
    );
    assert_eq!(engine.unconfirmed_one_time_prekeys().unwrap().len(), 5);
    assert_eq!(engine.held_one_time_prekeys().unwrap().len(), 8);

    // Confirmed later, they count as held; stale keys expire only after the grace period.
    engine
        .store()
        .write(|s| s.mark_prekeys_uploaded(Some(&pending)))
        .unwrap();
    assert!(engine.unconfirmed_one_time_prekeys().unwrap().is_empty());
    let grace = privcomm_core::store::upkeep::STALE_PREKEY_GRACE_MS;
    let kept = engine
        .store()
        .write(|s| s.expire_stale_prekeys(1_000 + grace))
        .unwrap();
    assert_eq!(kept, 0);
    let gone = engine
        .store()
        .write(|s| s.expire_stale_prekeys(1_001 + grace))
        .unwrap();
    assert_eq!(gone, 7);
    assert_eq!(engine.store().usage().unwrap().one_time_prekeys, 8);
}
