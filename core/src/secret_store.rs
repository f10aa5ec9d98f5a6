//! Custody of the key that wraps the database's data key.
//!
//! The platform keeps one named secret per database: Android Keystore (supplied through the
//! bindings), the OS keyring on desktops (`KeyringSecretStore`), or memory (tests). The core
//! never writes that secret to disk itself.

use std::collections::HashMap;
use std::sync::Mutex;

use zeroize::Zeroizing;

/// A secret store failure, by what the app can do about it.
#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    /// The secret exists but can never be read again: the platform key that protects it is
    /// gone or invalidated (app data restored onto another device, keystore reset, biometric
    /// enrolment changed). The database it opens is lost; the app must start over.
    #[error("secret lost: {0}")]
    Lost(String),
    /// The store cannot be used right now but may work later (device locked, keystore busy
    /// or failing transiently). Nothing is lost; retry later.
    #[error("secret store unavailable: {0}")]
    Unavailable(String),
    /// Any other failure.
    #[error("{0}")]
    Failed(String),
}

impl SecretStoreError {
    /// A plain failure with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}

/// Get/set/delete named secrets. Implementations must be safe to call from any thread.
pub trait SecretStore: Send + Sync {
    /// The secret called `name`, or `None` if there is none.
    fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretStoreError>;
    /// Stores (or replaces) the secret called `name`.
    fn set(&self, name: &str, secret: &[u8]) -> Result<(), SecretStoreError>;
    /// Deletes the secret called `name`; deleting a missing secret is not an error.
    fn delete(&self, name: &str) -> Result<(), SecretStoreError>;
}

/// Secrets in process memory only: for tests and ephemeral sessions.
#[derive(Default)]
pub struct MemorySecretStore {
    secrets: Mutex<HashMap<String, Zeroizing<Vec<u8>>>>,
}

impl MemorySecretStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Zeroizing<Vec<u8>>>> {
        self.secrets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SecretStore for MemorySecretStore {
    fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretStoreError> {
        Ok(self.lock().get(name).cloned())
    }

    fn set(&self, name: &str, secret: &[u8]) -> Result<(), SecretStoreError> {
        self.lock()
            .insert(name.to_owned(), Zeroizing::new(secret.to_vec()));
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<(), SecretStoreError> {
        self.lock().remove(name);
        Ok(())
    }
}

/// The operating system's credential store through the `keyring` crate: Keychain on Apple
/// platforms, Credential Manager on Windows, the kernel keyring (keyutils) on Linux.
///
/// On Linux the kernel keyring lives as long as the login session; call
/// `join_session_keyring` first in processes that have none (services, CI).
pub struct KeyringSecretStore {
    service: String,
}

impl KeyringSecretStore {
    /// Secrets are stored under `service` with the secret name as the user.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
        }
    }

    fn entry(&self, name: &str) -> Result<keyring::Entry, SecretStoreError> {
        keyring::Entry::new(&self.service, name)
            .map_err(|e| SecretStoreError::failed(e.to_string()))
    }
}

impl SecretStore for KeyringSecretStore {
    fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretStoreError> {
        match self.entry(name)?.get_secret() {
            Ok(secret) => Ok(Some(Zeroizing::new(secret))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(SecretStoreError::failed(e.to_string())),
        }
    }

    fn set(&self, name: &str, secret: &[u8]) -> Result<(), SecretStoreError> {
        self.entry(name)?
            .set_secret(secret)
            .map_err(|e| SecretStoreError::failed(e.to_string()))
    }

    fn delete(&self, name: &str) -> Result<(), SecretStoreError> {
        match self.entry(name)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(SecretStoreError::failed(e.to_string())),
        }
    }
}

/// Makes sure this process has a session keyring to store secrets in, joining (creating) one
/// if needed. Without it the kernel keyring refuses access in processes started outside a
/// login session. Keyrings belong to a thread's credentials and are copied when a thread is
/// created, so call this at the start of `main`, before any runtime starts its threads.
#[cfg(target_os = "linux")]
pub fn join_session_keyring() -> Result<(), SecretStoreError> {
    use linux_keyutils::{KeyRing, KeyRingIdentifier};
    KeyRing::from_special_id(KeyRingIdentifier::Session, true)
        .map(|_| ())
        .map_err(|e| SecretStoreError::Failed(format!("cannot join a session keyring: {e:?}")))
}

/// No-op outside Linux.
#[cfg(not(target_os = "linux"))]
pub fn join_session_keyring() -> Result<(), SecretStoreError> {
    Ok(())
}
