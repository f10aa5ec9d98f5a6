//! Devices the targets work on: real stores in real files, made once per process.
//!
//! Keys are random per process, so a committed ciphertext seed exercises parsing and
//! refusal, not decryption; decryption itself is covered by the engine tests.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use privcomm_core::store::history::{MessageState, StoredMessage};
use privcomm_core::{MemorySecretStore, ReceiveQuota, SignalEngine};
use privcomm_protocol::rest::PreKeyBundleResponse;
use privcomm_protocol::PhoneHash;
use uuid::Uuid;

/// The fixture device's relay id.
pub const BOB: Uuid = Uuid::from_u128(0xb0b0_0000_0000_4000_8000_0000_0000_0b0b);
/// A peer with a session, a contact entry and history on the fixture device.
pub const ALICE: Uuid = Uuid::from_u128(0xa11c_e000_0000_4000_8000_0000_0000_a11c);
/// A peer on the fixture device's block list.
pub const MALLORY: Uuid = Uuid::from_u128(0x0bad_0000_0000_4000_8000_0000_0000_0bad);
/// Alice's phone hash as the fixture device knows it.
pub const ALICE_PHONE_HASH: &str =
    "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const BOB_PHONE_HASH: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
/// Texts in the fixture device's history: nothing else may ever read back from it.
pub const BODIES: [&str; 3] = ["I owe you $10", "see you at 8", "ok"];

/// This process's scratch directory. libFuzzer ends the process with `exit`, so nothing
/// runs at the end: directories of processes that are gone are removed at the start.
pub fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join("privcomm-fuzz");
        remove_orphans(&root);
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("scratch directory: {e}"));
        dir
    })
}

fn remove_orphans(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let alive = Path::new("/proc").join(&name).exists();
        if cfg!(target_os = "linux") && !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn must<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("fixture: {what}: {e}"))
}

/// A new account in `dir/name.db`.
fn device(name: &str, user: Uuid, phone_hash: &str, secrets: &MemorySecretStore) -> SignalEngine {
    let path = work_dir().join(format!("{name}.db"));
    let _ = std::fs::remove_file(&path);
    let mut engine = must("open", SignalEngine::open(&path, secrets));
    let hash = must("phone hash", PhoneHash::parse(phone_hash));
    must("account", engine.create_account(&hash, 4));
    must("user id", engine.set_user_id(user));
    engine
}

/// The bundle the relay would hand out for `engine`, with its first one-time prekey.
pub fn bundle_of(engine: &SignalEngine, user: Uuid) -> PreKeyBundleResponse {
    let registration = must("keys", engine.registration_request(&[0u8; 32]));
    PreKeyBundleResponse {
        user_id: user,
        registration_id: registration.registration_id,
        identity_key: registration.identity_key,
        signed_prekey: registration.signed_prekey,
        kyber_prekey: registration.kyber_prekey,
        one_time_prekey: registration.one_time_prekeys.first().cloned(),
    }
}

thread_local! {
    static ENGINE: RefCell<Option<SignalEngine>> = const { RefCell::new(None) };
}

static ENGINE_SECRETS: OnceLock<MemorySecretStore> = OnceLock::new();

/// Runs `f` on this process's device "Bob" (an account, no sessions), made on first use.
pub fn with_engine<T>(f: impl FnOnce(&mut SignalEngine) -> T) -> T {
    ENGINE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let engine = slot.get_or_insert_with(|| {
            let secrets = ENGINE_SECRETS.get_or_init(MemorySecretStore::new);
            device("engine", BOB, BOB_PHONE_HASH, secrets)
        });
        f(engine)
    })
}

/// A database file with something in every table, to be copied and tampered with.
pub struct StoreTemplate {
    /// The file's bytes (closed, so no write-ahead log).
    pub bytes: Vec<u8>,
    /// Holds the key that opens every copy.
    pub secrets: MemorySecretStore,
    /// Every table and its columns.
    pub tables: Vec<(String, Vec<String>)>,
}

/// The store template, made on first use.
pub fn store_template() -> &'static StoreTemplate {
    static TEMPLATE: OnceLock<StoreTemplate> = OnceLock::new();
    TEMPLATE.get_or_init(make_template)
}

fn make_template() -> StoreTemplate {
    let secrets = MemorySecretStore::new();
    let alice_secrets = MemorySecretStore::new();
    let mut bob = device("template", BOB, BOB_PHONE_HASH, &secrets);
    let mut alice = device("alice", ALICE, ALICE_PHONE_HASH, &alice_secrets);
    // A session both ways: Bob starts it, Alice answers.
    must(
        "bundle",
        bob.process_bundle(ALICE, &bundle_of(&alice, ALICE)),
    );
    let first = must("encrypt", bob.encrypt(ALICE, b"first"));
    must("decrypt", alice.decrypt(BOB, &first));
    let reply = must("encrypt", alice.encrypt(BOB, b"reply"));
    must("decrypt", bob.decrypt(ALICE, &reply));
    let now = 1_700_000_000_000;
    must(
        "contents",
        bob.store().write(|store| {
            store.save_contact(ALICE, ALICE_PHONE_HASH)?;
            for (i, body) in BODIES.iter().enumerate() {
                let offset = i64::try_from(i).unwrap_or(0);
                store.save_message(&StoredMessage {
                    id: Uuid::from_u128(0x1000 + i as u128),
                    peer: ALICE,
                    outgoing: i % 2 == 0,
                    body: (*body).to_owned(),
                    sent_at: now + offset,
                    state: if i % 2 == 0 {
                        MessageState::Sent
                    } else {
                        MessageState::Received
                    },
                })?;
            }
            store.enqueue(
                Uuid::from_u128(0x2000),
                ALICE,
                b"queued envelope",
                Some(Uuid::from_u128(0x1000)),
                now,
            )?;
            store.block_peer(MALLORY)?;
            store.count_dropped(privcomm_core::store::dropped::DropReason::ForgedId)?;
            store.charge_quota(ALICE, 100, now, &ReceiveQuota::default())?;
            store.mark_processed(Uuid::from_u128(0x3000), now)?;
            Ok(())
        }),
    );
    let path = bob.store().path().to_owned();
    drop(bob);
    drop(alice);
    let bytes = must("read template", std::fs::read(&path));
    let tables = must("schema", list_tables(&path));
    StoreTemplate {
        bytes,
        secrets,
        tables,
    }
}

fn list_tables(path: &Path) -> rusqlite::Result<Vec<(String, Vec<String>)>> {
    let conn = rusqlite::Connection::open(path)?;
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    names
        .into_iter()
        .map(|table| {
            let columns = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok((table, columns))
        })
        .collect()
}
