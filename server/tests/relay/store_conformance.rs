//! The store contract, run on each backend from this one source: what the relay's logic
//! relies on of `Store`, checked against SQLite and PostgreSQL alike (batches the writer's
//! size, purge, concurrent prekey claims, migrations).

use std::path::Path;
use std::sync::Arc;

use privcomm_protocol::limits::RESEND_WINDOW;
use privcomm_protocol::PhoneHash;
use privcomm_server::pepper::Pepper;
use privcomm_server::store::{
    AckRequest, CodeProof, LockChange, MailboxUsage, NewMessage, NewUser, PurgeCutoffs, Store,
    StoreError, StoreOutcome, StoreSettings, StoredPreKey, StoredSignedPreKey, WriteBatch,
    WriteBatchOutcome,
};
use sqlx::Row;
use uuid::Uuid;

use crate::common::{Db, TestDb};

/// The writer's largest batch (writer.rs `MAX_BATCH`).
const WRITER_BATCH: usize = 4096;

fn url_of(db: &TestDb) -> String {
    db.url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            db.dir.path().join("privcomm.db").display()
        )
    })
}

fn pepper() -> Arc<Pepper> {
    Arc::new(Pepper::new(&[7u8; 32]))
}

async fn open(db: &TestDb) -> Arc<dyn Store> {
    privcomm_server::store::open(&url_of(db), StoreSettings::default(), pepper())
        .await
        .expect("store opens")
}

/// User `n`'s registration (registration id `registration_id`) and the proof of its
/// number, with a code put in storage as the code route does.
async fn registration(
    store: &dyn Store,
    n: u8,
    registration_id: u32,
    prekeys: u32,
) -> (NewUser, CodeProof) {
    let pepper = pepper();
    let hash = PhoneHash::parse(&format!("{n:02x}").repeat(32)).expect("hash");
    let phone_key = pepper.phone_key(&hash);
    let proof = CodeProof {
        session_key: format!("session-{n}-{registration_id}"),
        phone_key: phone_key.clone(),
        code_hash: [n; 32],
    };
    store
        .put_verification(&proof, 0, i64::MAX)
        .await
        .expect("code");
    let signed = StoredSignedPreKey {
        key_id: 1,
        public_key: vec![5; 33],
        signature: vec![6; 64],
    };
    let user = NewUser {
        id: Uuid::new_v4(),
        phone_key,
        registration_id,
        identity_key: vec![n; 33],
        signed_prekey: signed.clone(),
        kyber_prekey: signed,
        one_time_prekeys: (1..=prekeys)
            .map(|key_id| StoredPreKey {
                key_id,
                public_key: key_id.to_be_bytes().to_vec(),
            })
            .collect(),
    };
    (user, proof)
}

/// Registers user `n` (registration id n + 1) with `prekeys` one-time prekeys, as the
/// registration route does.
async fn add_user(store: &dyn Store, n: u8, prekeys: u32) -> Uuid {
    let (user, proof) = registration(store, n, u32::from(n) + 1, prekeys).await;
    store.create_user(&user, 1_000, &proof).await.expect("user");
    user.id
}

/// Stores `messages` in one group commit at `now`.
async fn store_messages(
    store: &dyn Store,
    messages: Vec<NewMessage>,
    now: i64,
) -> WriteBatchOutcome {
    store
        .write_batch(Arc::new(WriteBatch {
            messages,
            now,
            ..WriteBatch::default()
        }))
        .await
        .expect("batch commits")
}

fn message(sender: Uuid, recipient: Uuid, created_at: i64, body: Vec<u8>) -> NewMessage {
    NewMessage {
        id: Uuid::new_v4(),
        sender,
        client_id: Uuid::new_v4(),
        recipient,
        payload: body.into(),
        created_at,
        recipient_registration_id: None,
    }
}

/// A batch as large as the writer makes: stored in arrival order, read back in that order,
/// acknowledged in one batch as large, and remembered for de-duplication after.
async fn a_batch_the_writers_size_keeps_order_and_acks_as_one(db: Db) {
    let test_db = TestDb::new(db).await;
    let store = open(&test_db).await;
    let alice = add_user(store.as_ref(), 1, 0).await;
    let bob = add_user(store.as_ref(), 2, 0).await;
    let messages: Vec<NewMessage> = (0..WRITER_BATCH)
        .map(|i| message(alice, bob, 10, (i as u32).to_be_bytes().to_vec()))
        .collect();
    let outcome = store_messages(store.as_ref(), messages.clone(), 10).await;
    let seqs: Vec<i64> = outcome
        .messages
        .iter()
        .map(|r| match r {
            Ok(StoreOutcome::Stored(p)) => p.seq,
            other => panic!("expected stored, got {other:?}"),
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq follows arrival");

    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .pending_messages(bob, after, 1000)
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        after = last.seq;
        read.extend(page);
    }
    assert_eq!(read.len(), WRITER_BATCH);
    for (stored, sent) in read.iter().zip(&messages) {
        assert_eq!(stored.id, sent.id, "backlog in arrival order");
        assert_eq!(stored.payload, sent.payload);
    }
    assert_eq!(
        store.mailbox_usage(bob).await.expect("usage"),
        MailboxUsage {
            messages: WRITER_BATCH as i64,
            bytes: 4 * WRITER_BATCH as i64
        }
    );

    // Every ack of the backlog in one batch, plus one of someone else's message.
    let mut acks: Vec<AckRequest> = read
        .iter()
        .map(|p| AckRequest {
            recipient: bob,
            id: p.id,
        })
        .collect();
    acks.push(AckRequest {
        recipient: alice,
        id: read[0].id,
    });
    let acked = store
        .write_batch(Arc::new(WriteBatch {
            acks,
            now: 20,
            ..WriteBatch::default()
        }))
        .await
        .expect("acks commit");
    assert_eq!(acked.acks.len(), WRITER_BATCH + 1);
    assert!(acked.acks[..WRITER_BATCH].iter().all(|a| *a));
    assert!(!acked.acks[WRITER_BATCH], "a foreign ack deletes nothing");
    assert_eq!(store.pending_total().await.expect("total"), 0);
    assert_eq!(
        store.mailbox_usage(bob).await.expect("usage"),
        MailboxUsage::default()
    );

    // A resend of a delivered message still in its sender's window answers with its
    // first server id.
    let latest = WRITER_BATCH - 7;
    let resend = NewMessage {
        id: Uuid::new_v4(),
        ..messages[latest].clone()
    };
    let again = store_messages(store.as_ref(), vec![resend], 30).await;
    assert!(matches!(
        again.messages[0],
        Ok(StoreOutcome::Duplicate { server_id }) if server_id == messages[latest].id
    ));
    store.close().await;
    test_db.cleanup().await;
}

/// A resend that meets the ack of the message it repeats in one batch is a duplicate
/// (found in review: PostgreSQL applied the ack first and stored the resend again).
async fn a_resend_beside_its_ack_is_a_duplicate(db: Db) {
    let test_db = TestDb::new(db).await;
    let store = open(&test_db).await;
    let alice = add_user(store.as_ref(), 1, 0).await;
    let bob = add_user(store.as_ref(), 2, 0).await;
    let first = message(alice, bob, 10, b"once".to_vec());
    store_messages(store.as_ref(), vec![first.clone()], 10).await;
    let resend = NewMessage {
        id: Uuid::new_v4(),
        ..first.clone()
    };
    let outcome = store
        .write_batch(Arc::new(WriteBatch {
            messages: vec![resend],
            acks: vec![AckRequest {
                recipient: bob,
                id: first.id,
            }],
            now: 20,
            ..WriteBatch::default()
        }))
        .await
        .expect("batch");
    assert!(
        matches!(outcome.messages[0], Ok(StoreOutcome::Duplicate { server_id }) if server_id == first.id),
        "{:?}",
        outcome.messages[0]
    );
    assert_eq!(outcome.acks, [true]);
    assert_eq!(store.pending_total().await.expect("total"), 0);
    assert_eq!(
        store.mailbox_usage(bob).await.expect("usage"),
        MailboxUsage::default()
    );
    store.close().await;
    test_db.cleanup().await;
}

/// Purge deletes what each cut-off says and nothing else, and keeps mailbox counts true.
async fn purge_deletes_exactly_what_is_too_old(db: Db) {
    let test_db = TestDb::new(db).await;
    let store = open(&test_db).await;
    let alice = add_user(store.as_ref(), 1, 0).await;
    let bob = add_user(store.as_ref(), 2, 3).await;
    let old: Vec<NewMessage> = (0..3)
        .map(|_| message(alice, bob, 100, vec![1; 10]))
        .collect();
    let young: Vec<NewMessage> = (0..2)
        .map(|_| message(alice, bob, 5_000, vec![2; 7]))
        .collect();
    let delivered = message(bob, alice, 100, vec![3; 5]);
    let mut all = old.clone();
    all.extend(young.clone());
    all.push(delivered.clone());
    store_messages(store.as_ref(), all, 100).await;
    store
        .write_batch(Arc::new(WriteBatch {
            acks: vec![AckRequest {
                recipient: alice,
                id: delivered.id,
            }],
            now: 200,
            ..WriteBatch::default()
        }))
        .await
        .expect("acked");
    let bob_key = pepper().phone_key(&PhoneHash::parse(&"02".repeat(32)).expect("hash"));
    for now in [150, 3_000] {
        store
            .claim_bundle(&bob_key, now, true)
            .await
            .expect("claim")
            .expect("bob");
    }
    store
        .insert_nonce(&[1; 32], &bob_key, 1_000)
        .await
        .expect("nonce");
    store
        .insert_nonce(&[2; 32], &bob_key, 9_000)
        .await
        .expect("nonce");

    let report = store
        .purge(PurgeCutoffs {
            now: 2_000,
            messages_before: 1_000,
            used_prekeys_before: 1_000,
            sends_before: 300,
        })
        .await
        .expect("purge");
    assert_eq!(report.messages, 3, "the three old messages");
    assert_eq!(report.used_prekeys, 1, "the prekey claimed at 150");
    assert_eq!(report.nonces, 1, "the nonce expired at 1000");
    assert_eq!(
        report.send_records, 6,
        "the records of the six messages stored on day 0"
    );
    let left = store.pending_messages(bob, 0, 10).await.expect("left");
    assert_eq!(
        left.iter().map(|p| p.id).collect::<Vec<_>>(),
        young.iter().map(|m| m.id).collect::<Vec<_>>()
    );
    assert_eq!(
        store.mailbox_usage(bob).await.expect("usage"),
        MailboxUsage {
            messages: 2,
            bytes: 14
        }
    );
    assert_eq!(store.count_one_time_prekeys(bob).await.expect("keys"), 1);
    assert!(
        store
            .take_nonce(&[2; 32], &bob_key, 2_000)
            .await
            .expect("nonce"),
        "the unexpired nonce stays"
    );
    store.close().await;
    test_db.cleanup().await;
}

/// Claims racing for the last keys: each key goes to one claim, the rest get none.
async fn concurrent_claims_never_share_a_prekey(db: Db) {
    let test_db = TestDb::new(db).await;
    let store = open(&test_db).await;
    add_user(store.as_ref(), 3, 40).await;
    let key = pepper().phone_key(&PhoneHash::parse(&"03".repeat(32)).expect("hash"));
    let claims = (0..100).map(|_| {
        let store = store.clone();
        let key = key.clone();
        tokio::spawn(async move { store.claim_bundle(&key, 5_000, true).await })
    });
    let mut claimed = Vec::new();
    let mut without = 0;
    for claim in claims {
        let bundle = claim.await.expect("task").expect("claim").expect("bundle");
        match bundle.one_time_prekey {
            Some(k) => claimed.push(k.key_id),
            None => without += 1,
        }
    }
    claimed.sort_unstable();
    assert_eq!(
        claimed,
        (1..=40).collect::<Vec<u32>>(),
        "each key exactly once"
    );
    assert_eq!(without, 60);
    store.close().await;
    test_db.cleanup().await;
}

/// A taken phone key or nonce is a `Conflict` on every backend (registration answers
/// `already_registered` from it), and the failed write leaves nothing behind.
async fn taken_keys_are_conflicts(db: Db) {
    let test_db = TestDb::new(db).await;
    let store = open(&test_db).await;
    add_user(store.as_ref(), 4, 2).await;
    let pepper = pepper();
    let phone_key = pepper.phone_key(&PhoneHash::parse(&"04".repeat(32)).expect("hash"));
    let proof = CodeProof {
        session_key: "second-session".into(),
        phone_key: phone_key.clone(),
        code_hash: [9; 32],
    };
    store
        .put_verification(&proof, 0, i64::MAX)
        .await
        .expect("code");
    let signed = StoredSignedPreKey {
        key_id: 1,
        public_key: vec![5; 33],
        signature: vec![6; 64],
    };
    let again = NewUser {
        id: Uuid::new_v4(),
        phone_key: phone_key.clone(),
        registration_id: 77,
        identity_key: vec![1; 33],
        signed_prekey: signed.clone(),
        kyber_prekey: signed,
        one_time_prekeys: vec![StoredPreKey {
            key_id: 1,
            public_key: vec![1],
        }],
    };
    assert!(matches!(
        store.create_user(&again, 2_000, &proof).await,
        Err(privcomm_server::store::StoreError::Conflict)
    ));
    assert!(store.user_by_id(again.id).await.expect("read").is_none());
    // The code was not used up by the refused registration.
    assert_eq!(
        store
            .check_verification(&proof, 3_000, 3)
            .await
            .expect("check"),
        privcomm_server::store::CodeCheck::Valid
    );
    store
        .insert_nonce(&[3; 32], &phone_key, 9_000)
        .await
        .expect("nonce");
    assert!(matches!(
        store.insert_nonce(&[3; 32], &phone_key, 9_000).await,
        Err(privcomm_server::store::StoreError::Conflict)
    ));
    store.close().await;
    test_db.cleanup().await;
}

/// A message stored for a device that registered again since was dropped with that
/// device's mailbox: its resend, still for the old registration, is refused as stale (the
/// sender renews its session), not answered as sent, though it is in the sender's window.
async fn a_resend_for_a_device_registered_again_is_stale(db: Db) {
    let test_db = TestDb::new(db).await;
    let store = open(&test_db).await;
    let alice = add_user(store.as_ref(), 1, 0).await;
    let bob = add_user(store.as_ref(), 2, 0).await;
    let first = NewMessage {
        recipient_registration_id: Some(3),
        ..message(alice, bob, 10, b"for the old phone".to_vec())
    };
    let stored = store_messages(store.as_ref(), vec![first.clone()], 10).await;
    assert!(matches!(stored.messages[0], Ok(StoreOutcome::Stored(_))));
    let (new_phone, proof) = registration(store.as_ref(), 2, 77, 0).await;
    store
        .replace_identity(bob, &new_phone, 20, LockChange::Clear, &proof)
        .await
        .expect("registered again");
    assert_eq!(store.pending_total().await.expect("total"), 0);

    let resend = NewMessage {
        id: Uuid::new_v4(),
        ..first.clone()
    };
    let answer = store_messages(store.as_ref(), vec![resend], 30).await;
    assert!(
        matches!(answer.messages[0], Err(StoreError::StaleRecipient)),
        "{:?}",
        answer.messages[0]
    );
    assert_eq!(store.pending_total().await.expect("total"), 0);
    store.close().await;
    test_db.cleanup().await;
}

/// Rows of `table` (a fixed name).
async fn rows_of(url: &str, table: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("connect");
    // Only the fixed table names of this file are formatted in.
    let count: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&pool)
        .await
        .expect("count")
        .get(0);
    pool.close().await;
    count
}

/// The de-duplication record is bounded: however many messages a sender stores, the relay
/// keeps one counter and `RESEND_WINDOW` slots for it. A resend of one of the sender's last
/// `RESEND_WINDOW` messages is a duplicate after delivery; one older than that is stored
/// again (the recipient's device drops it by its message id). Retention empties it.
async fn a_senders_window_bounds_what_is_remembered(db: Db) {
    let test_db = TestDb::new(db).await;
    let url = url_of(&test_db);
    let store = open(&test_db).await;
    let alice = add_user(store.as_ref(), 1, 0).await;
    let bob = add_user(store.as_ref(), 2, 0).await;
    let carol = add_user(store.as_ref(), 3, 0).await;
    let window = RESEND_WINDOW as usize;
    let total = 2 * window + 10;
    let messages: Vec<NewMessage> = (0..total)
        .map(|i| message(alice, bob, 10, (i as u32).to_be_bytes().to_vec()))
        .collect();
    // In batches of different sizes (one larger than the window), so the counter carries
    // the position from one batch to the next.
    for chunk in [
        &messages[..100],
        &messages[100..window + 110],
        &messages[window + 110..],
    ] {
        let outcome = store_messages(store.as_ref(), chunk.to_vec(), 10).await;
        assert!(outcome
            .messages
            .iter()
            .all(|r| matches!(r, Ok(StoreOutcome::Stored(_)))));
    }
    // Carol sends one: her window is her own.
    let carols = message(carol, bob, 10, b"carol".to_vec());
    store_messages(store.as_ref(), vec![carols.clone()], 10).await;
    let acks: Vec<AckRequest> = messages
        .iter()
        .chain(std::iter::once(&carols))
        .map(|m| AckRequest {
            recipient: bob,
            id: m.id,
        })
        .collect();
    store
        .write_batch(Arc::new(WriteBatch {
            acks,
            now: 20,
            ..WriteBatch::default()
        }))
        .await
        .expect("acked");
    assert_eq!(store.pending_total().await.expect("total"), 0);
    assert_eq!(
        rows_of(&url, "recent_sends").await,
        (window + 1) as i64,
        "a window for alice, one slot for carol"
    );
    assert_eq!(rows_of(&url, "send_counters").await, 2);

    let resend = |m: &NewMessage| NewMessage {
        id: Uuid::new_v4(),
        ..m.clone()
    };
    let oldest_kept = total - window;
    let answers = store
        .write_batch(Arc::new(WriteBatch {
            messages: vec![
                resend(&messages[total - 1]),
                resend(&messages[oldest_kept]),
                resend(&carols),
                resend(&messages[oldest_kept - 1]),
            ],
            now: 30,
            ..WriteBatch::default()
        }))
        .await
        .expect("resends");
    for (answer, first) in
        answers.messages[..3]
            .iter()
            .zip([&messages[total - 1], &messages[oldest_kept], &carols])
    {
        assert!(
            matches!(answer, Ok(StoreOutcome::Duplicate { server_id }) if *server_id == first.id),
            "{answer:?}"
        );
    }
    assert!(
        matches!(answers.messages[3], Ok(StoreOutcome::Stored(_))),
        "out of the window: stored again, {:?}",
        answers.messages[3]
    );
    assert_eq!(
        rows_of(&url, "recent_sends").await,
        (window + 1) as i64,
        "the new one pushed the oldest out"
    );

    let report = store
        .purge(PurgeCutoffs {
            now: 40,
            messages_before: 0,
            used_prekeys_before: 0,
            sends_before: i64::MAX,
        })
        .await
        .expect("purge");
    assert_eq!(report.send_records, (window + 1) as u64);
    assert_eq!(rows_of(&url, "recent_sends").await, 0);
    assert_eq!(rows_of(&url, "send_counters").await, 0);
    store.close().await;
    test_db.cleanup().await;
}

/// The schema a database has: its tables, columns, indexes and constraints, as text that
/// does not depend on the schema's name.
async fn schema_of(db: Db, url: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("connect");
    let sql = match db {
        Db::Sqlite => {
            "SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_master
             WHERE name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'"
        }
        Db::Postgres => {
            "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' '
                    || is_nullable || ' ' || COALESCE(column_default, '')
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'
             UNION ALL
             SELECT 'index ' || indexname || ' '
                    || replace(indexdef, current_schema() || '.', '')
             FROM pg_indexes WHERE schemaname = current_schema()
               AND tablename <> '_sqlx_migrations'
             UNION ALL
             SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' '
                    || pg_get_constraintdef(oid)
             FROM pg_constraint WHERE connamespace = current_schema()::regnamespace
               AND conrelid::regclass::text <> '_sqlx_migrations'"
        }
    };
    let mut lines: Vec<String> = sqlx::query(sql)
        .fetch_all(&pool)
        .await
        .expect("schema")
        .iter()
        .map(|row| row.try_get::<String, _>(0).expect("text"))
        .collect();
    pool.close().await;
    lines.sort();
    lines
}

/// A database created at migration 1 and brought up by the relay has the schema of one the
/// relay creates fresh.
async fn a_database_migrated_from_the_first_schema_equals_a_fresh_one(db: Db) {
    let fresh_db = TestDb::new(db).await;
    open(&fresh_db).await.close().await;
    let fresh = schema_of(db, &url_of(&fresh_db)).await;

    let old_db = TestDb::new(db).await;
    let backend = if db == Db::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    let dir = old_db.dir.path().join("first-migration");
    crate::migrations::migrations_up_to(backend, "0001_initial.sql", &dir);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url_of(&old_db))
        .await
        .expect("connect");
    sqlx::migrate::Migrator::new(Path::new(&dir))
        .await
        .expect("first migration")
        .run(&pool)
        .await
        .expect("first schema");
    pool.close().await;
    open(&old_db).await.close().await;
    let migrated = schema_of(db, &url_of(&old_db)).await;

    assert!(fresh.len() > 12, "the dump sees the schema: {fresh:?}");
    assert_eq!(migrated, fresh);
    fresh_db.cleanup().await;
    old_db.cleanup().await;
}

crate::on_both_backends!(
    a_batch_the_writers_size_keeps_order_and_acks_as_one,
    a_resend_beside_its_ack_is_a_duplicate,
    purge_deletes_exactly_what_is_too_old,
    concurrent_claims_never_share_a_prekey,
    taken_keys_are_conflicts,
    a_senders_window_bounds_what_is_remembered,
    a_resend_for_a_device_registered_again_is_stale,
    a_database_migrated_from_the_first_schema_equals_a_fresh_one,
);
