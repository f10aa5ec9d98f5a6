//! Upgrading a relay keeps what it stored: a database created by an earlier schema, with
//! messages waiting in it, is migrated at start-up and the new tables agree with the data.

use std::path::Path;

use privcomm_server::store::{MailboxUsage, StoreSettings};
use sqlx::migrate::Migrator;
use uuid::Uuid;

use crate::common::{Db, TestDb};

/// The migrations of `backend` up to and including `last`, copied to a folder of their own.
pub(crate) fn migrations_up_to(backend: &str, last: &str, into: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    std::fs::create_dir_all(into).expect("dir");
    let mut names: Vec<String> = std::fs::read_dir(&source)
        .expect("migrations")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names.into_iter().take_while(|n| n.as_str() <= last) {
        std::fs::copy(source.join(&name), into.join(&name)).expect("copy");
    }
}

async fn pending_messages_fill_their_mailboxes_on_upgrade(db: Db) {
    let test_db = TestDb::new(db).await;
    let url = match &test_db.url {
        Some(url) => url.clone(),
        None => format!(
            "sqlite://{}?mode=rwc",
            test_db.dir.path().join("relay.db").display()
        ),
    };
    let backend = if db == Db::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    let old = test_db.dir.path().join("old-migrations");
    migrations_up_to(backend, "0001_initial.sql", &old);

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
    Migrator::new(old.as_path())
        .await
        .expect("old migrations")
        .run(&pool)
        .await
        .expect("old schema");
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    for (user, phone) in [(alice, "a"), (bob, "b")] {
        sqlx::query(
            "INSERT INTO users (id, phone_hash, registration_id, identity_key,
                 signed_prekey_id, signed_prekey, signed_prekey_signature,
                 kyber_prekey_id, kyber_prekey, kyber_prekey_signature, created_at, last_seen)
             VALUES ($1, $2, 1, $3, 1, $3, $3, 1, $3, $3, 0, 0)",
        )
        .bind(user.as_bytes().to_vec())
        .bind(phone.repeat(64))
        .bind(vec![5u8; 33])
        .execute(&pool)
        .await
        .expect("user");
    }
    for size in [10usize, 20, 30] {
        sqlx::query(
            "INSERT INTO pending_messages (id, recipient_id, sender_id, client_id, payload, created_at)
             VALUES ($1, $2, $3, $4, $5, 0)",
        )
        .bind(Uuid::new_v4().as_bytes().to_vec())
        .bind(bob.as_bytes().to_vec())
        .bind(alice.as_bytes().to_vec())
        .bind(Uuid::new_v4().as_bytes().to_vec())
        .bind(vec![1u8; size])
        .execute(&pool)
        .await
        .expect("message");
    }
    pool.close().await;

    // Start-up runs the remaining migrations.
    let pepper = std::sync::Arc::new(privcomm_server::pepper::Pepper::new(&[7u8; 32]));
    let store = privcomm_server::store::open(&url, StoreSettings::default(), pepper)
        .await
        .expect("upgraded");
    assert_eq!(
        store.mailbox_usage(bob).await.expect("usage"),
        MailboxUsage {
            messages: 3,
            bytes: 60
        }
    );
    assert_eq!(
        store.mailbox_usage(alice).await.expect("usage"),
        MailboxUsage::default()
    );
    assert_eq!(store.pending_total().await.expect("count"), 3);
    store.close().await;
    test_db.cleanup().await;
}

crate::on_both_backends!(pending_messages_fill_their_mailboxes_on_upgrade);
