//! Helpers for the store and engine tests: devices with real identities in real files.

#![allow(dead_code)]

pub mod mitm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use privcomm_core::{Client, MemorySecretStore, SecretStore, SignalEngine};
use privcomm_protocol::rest::PreKeyBundleResponse;
use privcomm_protocol::PhoneHash;
use privcomm_server::codes::inbox::CodeInbox;
use rand::RngCore;
use uuid::Uuid;

/// A device: its database file, its secret store and its relay identity.
pub struct Device {
    pub path: PathBuf,
    pub secrets: Arc<MemorySecretStore>,
    pub engine: Option<SignalEngine>,
    pub user_id: Uuid,
    pub phone_hash: String,
}

pub fn random_phone_hash() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Device {
    /// A new account in `dir/name.db` with `prekeys` one-time prekeys.
    pub fn create(dir: &Path, name: &str, prekeys: u32) -> Self {
        let path = dir.join(format!("{name}.db"));
        let secrets = Arc::new(MemorySecretStore::new());
        let mut engine = SignalEngine::open(&path, secrets.as_ref()).expect("open store");
        let phone_hash = random_phone_hash();
        engine
            .create_account(&PhoneHash::parse(&phone_hash).unwrap(), prekeys)
            .expect("create account");
        let user_id = Uuid::new_v4();
        engine.set_user_id(user_id).expect("user id");
        Self {
            path,
            secrets,
            engine: Some(engine),
            user_id,
            phone_hash,
        }
    }

    pub fn engine(&mut self) -> &mut SignalEngine {
        self.engine.as_mut().expect("open")
    }

    /// Closes the database (drops the engine).
    pub fn close(&mut self) {
        self.engine = None;
    }

    /// Reopens the database from disk.
    pub fn reopen(&mut self) {
        self.close();
        self.engine = Some(
            SignalEngine::open(&self.path, self.secrets.as_ref() as &dyn SecretStore)
                .expect("reopen"),
        );
    }

    /// The bundle the relay would hand out, claiming the one-time prekey `claim` (if any).
    pub fn bundle(&mut self, claim: Option<usize>) -> PreKeyBundleResponse {
        let user_id = self.user_id;
        let engine = self.engine();
        let registration = engine.registration_request(&[0u8; 32]).expect("keys");
        PreKeyBundleResponse {
            user_id,
            registration_id: registration.registration_id,
            identity_key: registration.identity_key,
            signed_prekey: registration.signed_prekey,
            kyber_prekey: registration.kyber_prekey,
            one_time_prekey: claim.map(|i| registration.one_time_prekeys[i].clone()),
        }
    }
}

/// Where each test relay's verification codes arrive, by relay URL: the relay's webhook
/// posts them to a development inbox, which the tests read like a phone reads its texts.
static CODE_INBOXES: LazyLock<Mutex<HashMap<String, Arc<CodeInbox>>>> =
    LazyLock::new(Mutex::default);

/// Remembers that the relay at `url` sends its codes to `inbox`.
pub fn remember_codes(url: &str, inbox: Arc<CodeInbox>) {
    CODE_INBOXES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(url.trim_end_matches('/').to_owned(), inbox);
}

/// The inbox of the relay at `url`.
pub fn codes_of(url: &str) -> Arc<CodeInbox> {
    let inbox = CODE_INBOXES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(url.trim_end_matches('/'))
        .cloned();
    inbox.unwrap_or_else(|| panic!("no code inbox for the relay at {url}"))
}

/// A new inbox for a relay process that will listen on `port`.
pub async fn child_codes(port: u16) -> Arc<CodeInbox> {
    let inbox = Arc::new(CodeInbox::start().await.expect("code inbox"));
    remember_codes(&format!("http://127.0.0.1:{port}"), inbox.clone());
    inbox
}

/// The code the relay at `url` texted to `number`.
pub async fn code_for(url: &str, number: &str) -> String {
    let number = privcomm_core::client::phone::normalize(number).expect("a number");
    codes_of(url)
        .take(&number, Duration::from_secs(20))
        .await
        .expect("a verification code arrived")
}

/// Verifies `number` and registers `client` with it at the relay at `url`.
pub async fn register(client: &Client, url: &str, number: &str) -> Uuid {
    client
        .request_verification(number)
        .await
        .expect("code requested");
    let code = code_for(url, number).await;
    client
        .register(number, &code, None)
        .await
        .expect("registered")
}

/// Starts a relay with `config`, sending its codes to a new inbox.
pub async fn start_relay(mut config: privcomm_server::Config) -> privcomm_server::RelayServer {
    let inbox = Arc::new(CodeInbox::start().await.expect("code inbox"));
    inbox.configure(&mut config);
    let server =
        privcomm_server::RelayServer::start(config, Arc::new(privcomm_server::SystemClock))
            .await
            .unwrap();
    remember_codes(&server.base_url(), inbox);
    server
}

/// A relay running in this process on an ephemeral port, with generous rate limits.
pub struct Relay {
    pub server: privcomm_server::RelayServer,
    pub _dir: tempfile::TempDir,
}

/// Relay settings for tests: SQLite in `dir`, an ephemeral loopback port, generous limits.
pub fn relay_config(dir: &Path) -> privcomm_server::Config {
    let mut config = privcomm_server::Config::with_defaults(dir);
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.register_per_hour = 1000;
    config.verification_per_hour = 1000;
    config.verification_per_number_per_minute = 1000;
    config.verification_per_number_per_day = 1000;
    config.token_per_minute = 1000;
    config.challenge_per_minute = 1000;
    // Tests send bursts no person would; the per-account rate has tests of its own.
    config.send_per_minute = 1_000_000;
    config.send_kib_per_minute = 100_000_000;
    // Many test users fetch the same user's bundle within the hour.
    config.prekeys_per_target_per_hour = 100_000;
    config.key_lookups_per_hour = 100_000;
    config
}

/// Starts a relay with SQLite in a temporary directory.
pub async fn relay() -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let server = start_relay(relay_config(dir.path())).await;
    Relay { server, _dir: dir }
}

/// Builds (if needed) and locates the relay binary, for tests that run it as a process.
///
/// Asks for the workspace's whole test build, the one `cargo test --workspace` has just
/// made (the relay's own tests need its binary too), so inside a full run this only checks
/// freshness. `cargo build -p privcomm-server` would resolve features for that one package
/// and rebuild much of the dependency tree a second time (minutes on two cores). The
/// variables cargo sets for a running test are removed: seen by the nested cargo, they
/// mark dozens of units dirty, and the next build rebuilds them again.
pub fn relay_binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = std::process::Command::new(env!("CARGO"));
    command
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--quiet",
            "--message-format=json",
        ])
        .current_dir(workspace);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
                    | "LD_LIBRARY_PATH"
                    | "RUST_RECURSION_COUNT"
            );
        if set_for_tests {
            command.env_remove(name.as_ref());
        }
    }
    let output = command.output().expect("cargo test --no-run runs");
    assert!(output.status.success(), "building the relay failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["profile"]["test"] == false)
        .filter(|v| v["target"]["name"] == "privcomm-server")
        .filter(|v| {
            v["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
        })
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the relay executable")
}

/// The relay binary as a child process on a fixed port and data dir.
pub struct ChildRelay(std::process::Child);

impl ChildRelay {
    /// Starts the relay quietly (warnings only, output discarded), its codes going to
    /// `codes`.
    pub fn start(binary: &Path, data: &Path, port: u16, codes: &CodeInbox) -> Self {
        Self::start_with(
            binary,
            data,
            port,
            "warn",
            &codes.env(),
            std::process::Stdio::null(),
        )
    }

    /// Starts the relay with a log level, extra environment and where its output goes.
    pub fn start_with(
        binary: &Path,
        data: &Path,
        port: u16,
        log: &str,
        env: &[(&str, String)],
        output: std::process::Stdio,
    ) -> Self {
        let mut command = std::process::Command::new(binary);
        command
            .env_clear()
            .env("PRIVCOMM_BIND", format!("127.0.0.1:{port}"))
            .env("PRIVCOMM_DATA_DIR", data)
            .env("PRIVCOMM_LOG", log)
            .env("PRIVCOMM_REGISTER_PER_HOUR", "1000")
            .env("PRIVCOMM_VERIFICATION_PER_HOUR", "1000")
            .env("PRIVCOMM_VERIFICATION_PER_NUMBER_PER_MINUTE", "1000")
            .env("PRIVCOMM_VERIFICATION_PER_NUMBER_PER_DAY", "1000")
            .env("PRIVCOMM_TOKEN_PER_MINUTE", "1000")
            .env("PRIVCOMM_CHALLENGE_PER_MINUTE", "1000")
            // The same allowances as `relay_config`: at the default 600 sends a minute the
            // exchange tests were paced by the limit, not by the code under test.
            .env("PRIVCOMM_SEND_PER_MINUTE", "1000000")
            .env("PRIVCOMM_SEND_KIB_PER_MINUTE", "100000000")
            .env("PRIVCOMM_PREKEYS_PER_TARGET_PER_HOUR", "100000")
            .env("PRIVCOMM_KEY_LOOKUPS_PER_HOUR", "100000");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.stdout(output).spawn().expect("relay starts");
        Self(child)
    }

    /// Waits until the relay answers its health check.
    pub async fn wait_ready(port: u16) {
        let api = privcomm_core::net::RelayApi::new(&format!("http://127.0.0.1:{port}")).unwrap();
        for _ in 0..200 {
            if api.health().await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("relay did not come up");
    }

    /// SIGKILL, no goodbye.
    pub fn kill_hard(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildRelay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for events until `done` says so, failing after `limit`.
pub async fn until(
    events: &mut tokio::sync::broadcast::Receiver<privcomm_core::ClientEvent>,
    limit: std::time::Duration,
    mut done: impl FnMut(&privcomm_core::ClientEvent) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => {
                if done(&event) {
                    return;
                }
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                panic!("event receiver lagged by {n}")
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                panic!("event stream closed")
            }
            Err(_) => panic!("timed out waiting for events"),
        }
    }
}
