//! Issue 16: numbers and senders unreadable at rest. Whoever copies the relay's database
//! (SQLite files, or PostgreSQL's tables) after a conversation finds no phone number, no
//! phone hash (an unsalted SHA-256 of a number, which gives the number back in minutes),
//! and no record of who sent the messages already delivered; the logs hold none of them
//! either. A database written before this change is converted at start-up and its users
//! still log in.

use std::path::Path;
use std::time::{Duration, Instant};

use privcomm_protocol::ws::{ClientFrame, ServerFrame};
use privcomm_protocol::Base64String;
use sqlx::migrate::Migrator;
use sqlx::Row;
use uuid::Uuid;

use crate::common::{phone_hash_of, ChildRelay, Db, Device, Endpoint, TestDb, WsClient};

/// A device of `number`, registered and logged in.
async fn enrol_number(relay: &Endpoint, number: &str) -> Device {
    let mut device = Device::with_number(number, 3);
    device.register(relay).await;
    device.login(relay).await;
    device
}

/// Sends `payload` to `to` under `client_id` and returns the relay's answer.
async fn send(ws: &mut WsClient, to: Uuid, client_id: Uuid, payload: &[u8]) -> ServerFrame {
    ws.send(&ClientFrame::Send {
        to,
        id: client_id,
        payload: Base64String::encode(payload),
        registration_id: None,
    })
    .await;
    ws.frame().await
}

/// Every way a needle could be written down: raw bytes, and as text (hex, lowercase).
fn spellings(raw: &[u8]) -> Vec<Vec<u8>> {
    vec![raw.to_vec(), hex::encode(raw).into_bytes()]
}

/// The needles a phone number leaves: the number (with and without `+`), its hash as text
/// (how clients send it) and as bytes.
fn number_needles(number: &str) -> Vec<(String, Vec<u8>)> {
    let hash = phone_hash_of(number);
    let mut out = vec![
        (format!("number {number}"), number.as_bytes().to_vec()),
        (
            format!("number {number} without +"),
            number.trim_start_matches('+').as_bytes().to_vec(),
        ),
        (format!("phone hash of {number}"), hash.clone().into_bytes()),
    ];
    if let Ok(raw) = hex::decode(&hash) {
        out.push((format!("raw phone hash of {number}"), raw));
    }
    out
}

/// The needles a delivered message's client id and sender id leave in a delivery record.
fn id_needles(what: &str, id: Uuid) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = spellings(id.as_bytes())
        .into_iter()
        .map(|s| (what.to_owned(), s))
        .collect();
    out.push((what.to_owned(), id.hyphenated().to_string().into_bytes()));
    out
}

/// Which needles occur in `haystack`, by name.
fn found_in(haystack: &[u8], needles: &[(String, Vec<u8>)]) -> Vec<String> {
    needles
        .iter()
        .filter(|(_, n)| !n.is_empty() && haystack.windows(n.len()).any(|w| w == n.as_slice()))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Every byte of the SQLite files in `dir` (database, WAL, shared memory).
fn sqlite_files(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["privcomm.db", "privcomm.db-wal", "privcomm.db-shm"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            all.extend_from_slice(&bytes);
        }
    }
    assert!(!all.is_empty(), "the database files exist");
    all
}

/// Every row of every table of the test's PostgreSQL schema, as PostgreSQL prints it
/// (`bytea` as `\x` and lowercase hex).
async fn postgres_rows(url: &str) -> Vec<u8> {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    assert!(tables.iter().any(|t| t == "users"), "{tables:?}");
    let mut all = Vec::new();
    for table in tables {
        let sql = format!("SELECT CAST(t AS TEXT) FROM \"{table}\" t");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&pool)
            .await
            .expect("rows");
        for row in rows {
            all.extend_from_slice(row.as_bytes());
            all.push(b'\n');
        }
    }
    pool.close().await;
    all
}

/// Everything a copy of the database would give away.
async fn database_contents(db: &TestDb) -> Vec<u8> {
    match &db.url {
        Some(url) => postgres_rows(url).await,
        None => sqlite_files(db.dir.path()),
    }
}

/// A URL to read the relay's database from the test (through sqlx's `Any` driver).
fn database_url(db: &TestDb) -> String {
    sqlx::any::install_default_drivers();
    db.url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            db.dir.path().join("privcomm.db").display()
        )
    })
}

/// Every user's `last_seen`.
async fn last_seen_of_all(pool: &sqlx::AnyPool) -> Vec<i64> {
    sqlx::query("SELECT last_seen FROM users")
        .fetch_all(pool)
        .await
        .expect("users")
        .iter()
        .map(|r| r.get::<i64, _>(0))
        .collect()
}

/// Waits until `device`'s mailbox is empty: every ack is committed.
async fn until_mailbox_empty(relay: &Endpoint, device: &Device) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ws = device.connect(relay).await;
        let first = ws.frame().await;
        ws.close().await;
        if matches!(first, ServerFrame::QueueEmpty) {
            return;
        }
        assert!(Instant::now() < deadline, "acks not committed within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_conversation_leaves_no_number_or_sender_at_rest(db: Db) {
    let storage = TestDb::new(db).await;
    let mut relay = ChildRelay::start_with(
        &storage,
        "debug",
        &[("PRIVCOMM_MAINTENANCE_INTERVAL", "1")],
        None,
    )
    .await;
    let numbers = ["+14155550123", "+14155550188", "+447700900461"];
    let alice = enrol_number(&relay, numbers[0]).await;
    let bob = enrol_number(&relay, numbers[1]).await;
    let carol = enrol_number(&relay, numbers[2]).await;
    // Bundles are looked up by phone hash.
    for (who, of) in [(&alice, &bob), (&bob, &alice), (&bob, &carol)] {
        let (status, body) = relay
            .get(&format!("/keys/{}", of.phone_hash), Some(who.bearer()))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // Alice writes to Bob, who reads and acknowledges everything; a resend of a delivered
    // message is still recognised as one.
    let mut delivered = Vec::new();
    let mut out = alice.online(&relay).await;
    for i in 0..12u8 {
        let client_id = Uuid::new_v4();
        match send(&mut out, bob.id(), client_id, &[i; 40]).await {
            ServerFrame::Sent { server_id, .. } => delivered.push((client_id, server_id)),
            other => panic!("expected sent, got {other:?}"),
        }
    }
    let mut inbox = bob.connect(&relay).await;
    assert_eq!(inbox.drain().await.len(), 12);
    inbox.close().await;
    until_mailbox_empty(&relay, &bob).await;
    let (client_id, server_id) = delivered[3];
    match send(&mut out, bob.id(), client_id, &[3; 40]).await {
        ServerFrame::Sent { server_id: got, .. } => assert_eq!(got, server_id, "a resend"),
        other => panic!("expected sent, got {other:?}"),
    }
    out.close().await;
    // Bob writes to Carol, who is offline: those rows name their sender until delivered.
    let mut out = bob.online(&relay).await;
    for i in 0..3u8 {
        assert!(matches!(
            send(&mut out, carol.id(), Uuid::new_v4(), &[i; 40]).await,
            ServerFrame::Sent { .. }
        ));
    }
    out.close().await;

    // While it runs: the stored rows hold no phone hash and no sender of a delivered message.
    let url = database_url(&storage);
    let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
    let stored_keys: Vec<String> = sqlx::query("SELECT phone_key FROM users")
        .fetch_all(&pool)
        .await
        .expect("users")
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    assert_eq!(stored_keys.len(), 3);
    for number in numbers {
        assert!(!stored_keys.contains(&phone_hash_of(number)));
    }
    let days = last_seen_of_all(&pool).await;
    assert!(
        days.iter().all(|d| d % 86_400_000 == 0),
        "last_seen is a day: {days:?}"
    );
    let records: i64 = sqlx::query("SELECT COUNT(*) FROM recent_sends")
        .fetch_one(&pool)
        .await
        .expect("records")
        .get(0);
    assert_eq!(
        records, 15,
        "one de-duplication record per stored message (12 to Bob, 3 to Carol)"
    );
    pool.close().await;

    // Stopped cleanly, then copied: nothing to find.
    assert!(relay.terminate().await.success());
    let mut needles = Vec::new();
    for number in numbers {
        needles.extend(number_needles(number));
    }
    for (client_id, _) in &delivered {
        needles.extend(id_needles("client id of a delivered message", *client_id));
    }
    for device in [&alice, &bob, &carol] {
        needles.push((
            "a verification code".into(),
            device.code.clone().into_bytes(),
        ));
    }
    let contents = database_contents(&storage).await;
    let found = found_in(&contents, &needles);
    assert!(found.is_empty(), "the database gives away: {found:?}");
    // The test can see what it looks for: the senders of pending rows are there.
    assert!(
        !found_in(&contents, &id_needles("bob", bob.id())).is_empty(),
        "the scan reads the stored rows"
    );

    let logs = relay.log_text();
    assert!(logs.contains("user registered"), "logs were captured");
    let found = found_in(logs.as_bytes(), &needles);
    assert!(found.is_empty(), "the logs give away: {found:?}");
    storage.cleanup().await;
}

/// A relay started with another pepper than the one its database was written with would
/// find none of its users: it refuses to start and says why.
async fn another_pepper_is_refused(db: Db) {
    let storage = TestDb::new(db).await;
    let relay = ChildRelay::start(&storage, "info").await;
    let alice = enrol_number(&relay, "+14155550100").await;
    drop(relay);
    let printed = ChildRelay::refused_start(
        &storage,
        &[(
            "PRIVCOMM_PHONE_PEPPER",
            "another-pepper-another-pepper-0001",
        )],
    )
    .await;
    assert!(printed.contains("another phone pepper"), "{printed}");
    // With its own pepper (the generated file) the relay starts and knows Alice.
    let relay = ChildRelay::start(&storage, "info").await;
    let mut alice = alice;
    alice.login(&relay).await;
    drop(relay);
    storage.cleanup().await;
}

/// The migrations of `backend` up to and including `last`, as a migrator.
async fn migrator_up_to(backend: &str, last: &str, into: &Path) -> Migrator {
    crate::migrations::migrations_up_to(backend, last, into);
    Migrator::new(into).await.expect("old migrations")
}

/// Acceptance 6: a database written by the relay before the pepper (plain phone hashes,
/// sender and client ids in delivery records) is converted at start-up: its users log in
/// and are found by their phone hash, a resend of a message delivered before the upgrade is
/// still answered as a duplicate, and nothing of the old form stays.
async fn a_database_from_before_the_pepper_still_logs_its_users_in(db: Db) {
    let storage = TestDb::new(db).await;
    let url = database_url(&storage);
    let backend = if db == Db::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    let old = storage.dir.path().join("old-migrations");
    let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
    migrator_up_to(backend, "0002_mailboxes.sql", &old)
        .await
        .run(&pool)
        .await
        .expect("old schema");
    std::fs::remove_dir_all(&old).expect("tidy");

    // Recent enough that retention keeps everything.
    let an_hour_ago = crate::common::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        - 3_600_000;
    let numbers = ["+14155550111", "+14155550122"];
    let mut devices = Vec::new();
    for number in numbers {
        let mut device = Device::with_number(number, 0);
        let id = Uuid::new_v4();
        let decode = |b: &Base64String| b.decode("key").expect("b64");
        let signed = device.signed_prekey_body();
        let kyber = device.kyber_prekey_body();
        sqlx::query(
            "INSERT INTO users (id, phone_hash, registration_id, identity_key,
                 signed_prekey_id, signed_prekey, signed_prekey_signature,
                 kyber_prekey_id, kyber_prekey, kyber_prekey_signature, created_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(id.as_bytes().to_vec())
        .bind(device.phone_hash.clone())
        .bind(i64::from(device.registration_id))
        .bind(device.identity.identity_key().serialize().to_vec())
        .bind(i64::from(signed.key_id))
        .bind(decode(&signed.public_key))
        .bind(decode(&signed.signature))
        .bind(i64::from(kyber.key_id))
        .bind(decode(&kyber.public_key))
        .bind(decode(&kyber.signature))
        .bind(an_hour_ago)
        .bind(an_hour_ago + 12_345)
        .execute(&pool)
        .await
        .expect("user");
        device.user_id = Some(id);
        devices.push(device);
    }
    let (alice_id, bob_id) = (devices[0].id(), devices[1].id());
    let (client_id, server_id) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO delivered_messages (sender_id, client_id, server_id, delivered_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(alice_id.as_bytes().to_vec())
    .bind(client_id.as_bytes().to_vec())
    .bind(server_id.as_bytes().to_vec())
    .bind(an_hour_ago)
    .execute(&pool)
    .await
    .expect("delivery record");
    pool.close().await;

    let mut relay = ChildRelay::start(&storage, "info").await;
    let mut bob = devices.pop().expect("bob");
    let mut alice = devices.pop().expect("alice");
    alice.login(&relay).await;
    bob.login(&relay).await;
    let (status, bundle) = relay
        .get(&format!("/keys/{}", alice.phone_hash), Some(bob.bearer()))
        .await;
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(bundle["user_id"], serde_json::json!(alice_id));
    let mut out = alice.online(&relay).await;
    match send(&mut out, bob_id, client_id, b"sent before the upgrade").await {
        ServerFrame::Sent { server_id: got, .. } => {
            assert_eq!(
                got, server_id,
                "the old delivery record still recognises it"
            )
        }
        other => panic!("expected sent, got {other:?}"),
    }
    out.close().await;
    assert!(relay.terminate().await.success());

    let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
    let days = last_seen_of_all(&pool).await;
    assert!(days.iter().all(|d| d % 86_400_000 == 0), "{days:?}");
    pool.close().await;
    let mut needles = Vec::new();
    for number in numbers {
        needles.extend(number_needles(number));
    }
    needles.extend(id_needles("client id of the delivered message", client_id));
    let found = found_in(&database_contents(&storage).await, &needles);
    assert!(found.is_empty(), "left in the old form: {found:?}");
    storage.cleanup().await;
}

crate::on_both_backends!(
    a_conversation_leaves_no_number_or_sender_at_rest,
    another_pepper_is_refused,
    a_database_from_before_the_pepper_still_logs_its_users_in,
);
