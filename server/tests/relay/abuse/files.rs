//! Finding 7 of issue 15: the relay's files and configuration. Whoever else has an account
//! on the machine, or writes a `.env` somewhere above the relay's working directory, or
//! copies the database after messages were delivered, or holds a token that was signed to
//! live for years, or reads a proxy's access log, learns or gains nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use privcomm_server::tokens::{key_id, TokenIssuer};
use rand::RngCore;
use uuid::Uuid;

use crate::common::{ChildRelay, Db, Device, TestDb, WsClient};

const FORGED_SECRET: &str = "0123456789abcdef0123456789abcdef-from-a-parent-dir";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn forge(secret: &[u8], user: Uuid, iat: i64, exp: i64) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key_id(secret));
    jsonwebtoken::encode(
        &header,
        &serde_json::json!({ "sub": user, "iat": iat, "exp": exp }),
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("secs")
}

/// Created files are 0700/0600; a `.env` two levels up is not read (a token signed with
/// the secret it sets is refused) while `./.env` is; a JWT secret file others can read
/// stops the relay from starting.
#[tokio::test]
async fn files_are_private_and_only_the_working_dirs_env_is_read() {
    let db = TestDb::new(Db::Sqlite).await;
    let root = db.dir.path();
    let data = root.join("data").join("relay");
    let data_setting = data.to_str().expect("utf-8 path").to_owned();
    let deep = root.join("a").join("b");
    std::fs::create_dir_all(&deep).expect("work dir");
    std::fs::write(
        root.join(".env"),
        format!("PRIVCOMM_JWT_SECRET={FORGED_SECRET}\n"),
    )
    .expect(".env");
    let settings = [("PRIVCOMM_DATA_DIR", data_setting.as_str())];

    let mut relay = ChildRelay::start_in(&db, "info", &settings, &deep).await;
    let alice = Device::enrol(&relay, 0).await;
    let forged = forge(
        FORGED_SECRET.as_bytes(),
        alice.id(),
        now_secs(),
        now_secs() + 600,
    );
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(&forged))
            .await,
        401,
        "a token signed with a parent directory's .env secret must be refused"
    );
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(alice.bearer()))
            .await,
        200
    );
    for dir in [root.join("data"), data.clone()] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        "privcomm.db",
        "privcomm.db-wal",
        "privcomm.db-shm",
        "jwt_secret",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert!(relay.terminate().await.success());
    drop(relay);

    // Started where the .env is, the relay does read it.
    let relay = ChildRelay::start_in(&db, "info", &settings, root).await;
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(&forged))
            .await,
        200,
        "./.env is read"
    );
    drop(relay);

    // A JWT secret file that other users can read: refused, with what to do.
    let secret_file = data.join("jwt_secret");
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = ChildRelay::refused_start(&db, &settings).await;
    assert!(
        output.contains("jwt_secret") && output.contains("chmod 600"),
        "{output}"
    );
    // Existing database files opened by an older relay at 0644 are tightened.
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let db_file = data.join("privcomm.db");
    std::fs::set_permissions(&db_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let relay = ChildRelay::start_in(&db, "info", &settings, &deep).await;
    assert_eq!(mode(&db_file), 0o600);
    drop(relay);
}

/// Which of `needles` occur in which files of `dir`.
fn files_holding(dir: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("data dir").flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        for (i, needle) in needles.iter().enumerate() {
            if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                found.push(format!(
                    "message {i} in {}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

fn random_payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let mut p = vec![0u8; 700];
            rand::rng().fill_bytes(&mut p);
            p
        })
        .collect()
}

/// Sends `payloads` to `to` and waits for each `sent`.
async fn send_all(relay: &ChildRelay, from: &Device, to: &Device, payloads: &[Vec<u8>]) {
    let mut out = from.connect(relay).await;
    assert!(matches!(
        out.frame().await,
        privcomm_protocol::ws::ServerFrame::QueueEmpty
    ));
    for payload in payloads {
        crate::common::send_and_confirm(&mut out, to.id(), payload).await;
    }
    out.close().await;
}

/// Has `to` fetch and ack its `expected` messages, then waits until the relay has
/// committed the acks (a new connection finds the mailbox empty).
async fn ack_all(relay: &ChildRelay, to: &Device, expected: usize) {
    let mut inbox = to.connect(relay).await;
    assert_eq!(inbox.drain().await.len(), expected);
    inbox.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again: WsClient = to.connect(relay).await;
        let first = again.frame().await;
        again.close().await;
        if matches!(first, privcomm_protocol::ws::ServerFrame::QueueEmpty) {
            return;
        }
        assert!(Instant::now() < deadline, "acks not committed within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A delivered message leaves no copy in the SQLite files: `secure_delete` zeroes it in
/// the tables, maintenance checkpoints and truncates the WAL while the relay runs, and a
/// clean shutdown leaves no WAL behind.
#[tokio::test]
async fn acked_messages_leave_no_copy_in_the_database_files() {
    let db = TestDb::new(Db::Sqlite).await;
    let dir = db.dir.path().to_owned();
    let mut relay =
        ChildRelay::start_with(&db, "info", &[("PRIVCOMM_MAINTENANCE_INTERVAL", "1")], None).await;
    let (alice, bob) = Device::pair(&relay).await;

    let payloads = random_payloads(20);
    send_all(&relay, &alice, &bob, &payloads).await;
    // The test can see a stored payload: every one is in the files while pending.
    let pending = files_holding(&dir, &payloads);
    assert!(pending.len() >= 20, "pending copies: {pending:?}");

    ack_all(&relay, &bob, 20).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = files_holding(&dir, &payloads);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivered messages still readable after 15 s: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Delivered right before a clean shutdown: gone after it, and so is the WAL.
    let last = random_payloads(5);
    send_all(&relay, &alice, &bob, &last).await;
    ack_all(&relay, &bob, 5).await;
    assert!(relay.terminate().await.success());
    let left = files_holding(&dir, &[payloads, last].concat());
    assert!(left.is_empty(), "after shutdown: {left:?}");
    let wal = dir.join("privcomm.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "a clean shutdown leaves no WAL content"
    );
}

/// Tokens: one signed with the relay's own secret but living ten years is refused; during
/// a rotation (`PRIVCOMM_JWT_PREVIOUS_SECRET`) tokens of the old secret keep working,
/// and once the old secret is dropped they stop.
#[tokio::test]
async fn token_lifetimes_are_bounded_and_secrets_rotate() {
    let db = TestDb::new(Db::Sqlite).await;
    let old = "old-secret-old-secret-old-secret-0001";
    let new = "new-secret-new-secret-new-secret-0002";
    let relay = ChildRelay::start_with(&db, "info", &[("PRIVCOMM_JWT_SECRET", old)], None).await;
    let mut alice = Device::enrol(&relay, 0).await;
    let before = alice.bearer().to_owned();
    let now = now_secs();
    let decade = forge(old.as_bytes(), alice.id(), now, now + 10 * 365 * 86_400);
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(&decade))
            .await,
        401
    );
    let fair = forge(old.as_bytes(), alice.id(), now, now + 600);
    assert_eq!(
        relay.status_of("/api/v1/prekeys/count", Some(&fair)).await,
        200
    );
    drop(relay);

    let relay = ChildRelay::start_with(
        &db,
        "info",
        &[
            ("PRIVCOMM_JWT_SECRET", new),
            ("PRIVCOMM_JWT_PREVIOUS_SECRET", old),
        ],
        None,
    )
    .await;
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(&before))
            .await,
        200,
        "a token of the previous secret works during the rotation"
    );
    let after = alice.login(&relay).await;
    let header = jsonwebtoken::decode_header(&after).expect("header");
    assert_eq!(header.kid, Some(key_id(new.as_bytes())));
    let mut ws = alice.connect(&relay).await;
    assert!(matches!(
        ws.frame().await,
        privcomm_protocol::ws::ServerFrame::QueueEmpty
    ));
    ws.close().await;
    drop(relay);

    let relay = ChildRelay::start_with(&db, "info", &[("PRIVCOMM_JWT_SECRET", new)], None).await;
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(&before))
            .await,
        401
    );
    assert_eq!(
        relay.status_of("/api/v1/prekeys/count", Some(&after)).await,
        200
    );
    // A relay signing with `new` never accepts what `TokenIssuer` made with another key.
    let stranger = TokenIssuer::new(&[7u8; 32], 1800)
        .issue(alice.id(), now_secs())
        .expect("issue");
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(&stranger))
            .await,
        401
    );
}
