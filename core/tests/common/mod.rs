//! Helpers for the store and engine tests: devices with real identities in real files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use privcomm_core::{MemorySecretStore, SecretStore, SignalEngine};
use privcomm_protocol::rest::PreKeyBundleResponse;
use privcomm_protocol::PhoneHash;
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

/// A relay running in this process on an ephemeral port, with generous rate limits.
pub struct Relay {
    pub server: privcomm_server::RelayServer,
    pub _dir: tempfile::TempDir,
}

/// Starts a relay with SQLite in a temporary directory.
pub async fn relay() -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let mut config = privcomm_server::Config::with_defaults(dir.path());
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.register_per_hour = 1000;
    config.token_per_minute = 1000;
    config.challenge_per_minute = 1000;
    let server =
        privcomm_server::RelayServer::start(config, Arc::new(privcomm_server::SystemClock))
            .await
            .unwrap();
    Relay { server, _dir: dir }
}
