//! Per-message cost of the encrypted SQLite store against libsignal's in-memory store, on the
//! same session and messages: encrypt + persist the session, load + decrypt.
//!
//! `cargo bench -p privcomm-core --bench store`

use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use libsignal_protocol::{
    message_decrypt, message_encrypt, process_prekey_bundle, CiphertextMessage, DeviceId,
    GenericSignedPreKey, IdentityKeyPair, InMemSignalProtocolStore, KeyPair, KyberPreKeyRecord,
    KyberPreKeyStore, PreKeyBundle, PreKeyRecord, PreKeyStore, ProtocolAddress, SignedPreKeyRecord,
    SignedPreKeyStore, Timestamp,
};
use privcomm_core::{MemorySecretStore, SignalEngine};
use privcomm_protocol::rest::PreKeyBundleResponse;
use privcomm_protocol::PhoneHash;
use uuid::Uuid;

const MESSAGE: &[u8] = b"A typical chat message of about sixty bytes, give or take....";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("in-memory stores never wait"),
    }
}

struct SqlitePair {
    _dir: tempfile::TempDir,
    alice: SignalEngine,
    bob: SignalEngine,
    alice_id: Uuid,
    bob_id: Uuid,
}

fn sqlite_pair() -> SqlitePair {
    let dir = tempfile::tempdir().unwrap();
    let secrets = MemorySecretStore::new();
    let mut alice = SignalEngine::open(&dir.path().join("a.db"), &secrets).unwrap();
    let mut bob = SignalEngine::open(&dir.path().join("b.db"), &secrets).unwrap();
    let (alice_id, bob_id) = (Uuid::new_v4(), Uuid::new_v4());
    alice
        .create_account(&PhoneHash::parse(&"aa".repeat(32)).unwrap(), 1)
        .unwrap();
    bob.create_account(&PhoneHash::parse(&"bb".repeat(32)).unwrap(), 1)
        .unwrap();
    alice.set_user_id(alice_id).unwrap();
    bob.set_user_id(bob_id).unwrap();
    let keys = bob.registration_request(&[0; 32]).unwrap();
    let bundle = PreKeyBundleResponse {
        user_id: bob_id,
        registration_id: keys.registration_id,
        identity_key: keys.identity_key,
        signed_prekey: keys.signed_prekey,
        kyber_prekey: keys.kyber_prekey,
        one_time_prekey: keys.one_time_prekeys.first().cloned(),
    };
    alice.process_bundle(bob_id, &bundle).unwrap();
    // One round trip so both sides use plain Signal messages from here on.
    let first = alice.encrypt(bob_id, MESSAGE).unwrap();
    bob.decrypt(alice_id, &first).unwrap();
    let reply = bob.encrypt(alice_id, MESSAGE).unwrap();
    alice.decrypt(bob_id, &reply).unwrap();
    SqlitePair {
        _dir: dir,
        alice,
        bob,
        alice_id,
        bob_id,
    }
}

struct MemPair {
    alice: InMemSignalProtocolStore,
    bob: InMemSignalProtocolStore,
    alice_addr: ProtocolAddress,
    bob_addr: ProtocolAddress,
}

fn mem_pair() -> MemPair {
    let mut rng = rand::rng();
    let device = DeviceId::new(1).unwrap();
    let alice_identity = IdentityKeyPair::generate(&mut rng);
    let bob_identity = IdentityKeyPair::generate(&mut rng);
    let mut alice = InMemSignalProtocolStore::new(alice_identity, 1).unwrap();
    let mut bob = InMemSignalProtocolStore::new(bob_identity, 2).unwrap();
    let signed_pair = KeyPair::generate(&mut rng);
    let signature = bob_identity
        .private_key()
        .calculate_signature(&signed_pair.public_key.serialize(), &mut rng)
        .unwrap();
    let signed = SignedPreKeyRecord::new(
        1.into(),
        Timestamp::from_epoch_millis(0),
        &signed_pair,
        &signature,
    );
    let kyber = KyberPreKeyRecord::generate(
        libsignal_protocol::kem::KeyType::Kyber1024,
        1.into(),
        bob_identity.private_key(),
    )
    .unwrap();
    let one_time_pair = KeyPair::generate(&mut rng);
    let one_time = PreKeyRecord::new(1.into(), &one_time_pair);
    block_on(bob.save_signed_pre_key(1.into(), &signed)).unwrap();
    block_on(bob.save_kyber_pre_key(1.into(), &kyber)).unwrap();
    block_on(bob.save_pre_key(1.into(), &one_time)).unwrap();
    let bundle = PreKeyBundle::new(
        2,
        device,
        Some((1.into(), one_time_pair.public_key)),
        1.into(),
        signed_pair.public_key,
        signature.to_vec(),
        1.into(),
        kyber.public_key().unwrap(),
        kyber.signature().unwrap(),
        *bob_identity.identity_key(),
    )
    .unwrap();
    let alice_addr = ProtocolAddress::new("alice".into(), device);
    let bob_addr = ProtocolAddress::new("bob".into(), device);
    block_on(process_prekey_bundle(
        &bob_addr,
        &mut alice.session_store,
        &mut alice.identity_store,
        &bundle,
        SystemTime::now(),
        &mut rng,
    ))
    .unwrap();
    let mut pair = MemPair {
        alice,
        bob,
        alice_addr,
        bob_addr,
    };
    let first = mem_encrypt_alice(&mut pair);
    mem_decrypt_bob(&mut pair, &first);
    let reply = block_on(message_encrypt(
        MESSAGE,
        &pair.alice_addr,
        &mut pair.bob.session_store,
        &mut pair.bob.identity_store,
        SystemTime::now(),
        &mut rng,
    ))
    .unwrap();
    block_on(message_decrypt(
        &reply,
        &pair.bob_addr,
        &mut pair.alice.session_store,
        &mut pair.alice.identity_store,
        &mut pair.alice.pre_key_store,
        &pair.alice.signed_pre_key_store,
        &mut pair.alice.kyber_pre_key_store,
        &mut rng,
    ))
    .unwrap();
    pair
}

fn mem_encrypt(from: &mut InMemSignalProtocolStore, to: &ProtocolAddress) -> CiphertextMessage {
    block_on(message_encrypt(
        MESSAGE,
        to,
        &mut from.session_store,
        &mut from.identity_store,
        SystemTime::now(),
        &mut rand::rng(),
    ))
    .unwrap()
}

fn mem_decrypt(
    to: &mut InMemSignalProtocolStore,
    from: &ProtocolAddress,
    message: &CiphertextMessage,
) {
    block_on(message_decrypt(
        message,
        from,
        &mut to.session_store,
        &mut to.identity_store,
        &mut to.pre_key_store,
        &to.signed_pre_key_store,
        &mut to.kyber_pre_key_store,
        &mut rand::rng(),
    ))
    .unwrap();
}

fn mem_encrypt_alice(pair: &mut MemPair) -> CiphertextMessage {
    block_on(message_encrypt(
        MESSAGE,
        &pair.bob_addr,
        &mut pair.alice.session_store,
        &mut pair.alice.identity_store,
        SystemTime::now(),
        &mut rand::rng(),
    ))
    .unwrap()
}

fn mem_decrypt_bob(pair: &mut MemPair, message: &CiphertextMessage) {
    block_on(message_decrypt(
        message,
        &pair.alice_addr,
        &mut pair.bob.session_store,
        &mut pair.bob.identity_store,
        &mut pair.bob.pre_key_store,
        &pair.bob.signed_pre_key_store,
        &mut pair.bob.kyber_pre_key_store,
        &mut rand::rng(),
    ))
    .unwrap();
}

fn store_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_message");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(40);

    let mut sqlite = sqlite_pair();
    group.bench_function("encrypt+persist/sqlite", |b| {
        b.iter(|| sqlite.alice.encrypt(sqlite.bob_id, MESSAGE).unwrap())
    });
    let batch: Vec<&[u8]> = vec![MESSAGE; 32];
    group.bench_function("encrypt+persist/sqlite-32-per-transaction", |b| {
        // Timed per message: each round encrypts a batch of 32 in one transaction.
        b.iter_custom(|iters| {
            let rounds = iters.div_ceil(32);
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                sqlite.alice.encrypt_batch(sqlite.bob_id, &batch).unwrap();
            }
            started
                .elapsed()
                .mul_f64(iters as f64 / (rounds * 32) as f64)
        })
    });
    let mut mem = mem_pair();
    group.bench_function("encrypt+persist/in-memory", |b| {
        b.iter(|| mem_encrypt_alice(&mut mem))
    });

    let mut sqlite = sqlite_pair();
    group.bench_function("load+decrypt/sqlite", |b| {
        b.iter_batched(
            || sqlite.alice.encrypt(sqlite.bob_id, MESSAGE).unwrap(),
            |payload| sqlite.bob.decrypt(sqlite.alice_id, &payload).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut mem = mem_pair();
    let MemPair {
        alice,
        bob,
        alice_addr,
        bob_addr,
    } = &mut mem;
    group.bench_function("load+decrypt/in-memory", |b| {
        b.iter_batched(
            || mem_encrypt(alice, bob_addr),
            |message| mem_decrypt(bob, alice_addr, &message),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, store_benches);
criterion_main!(benches);
