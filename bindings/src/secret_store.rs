//! The app's secret store, implemented in Kotlin/Swift/TypeScript, adapted to the core's
//! `SecretStore` trait.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::error::SecretStoreError;
use crate::foreign::{Abandoned, ForeignHandle};

/// Named secrets kept by the platform: Android Keystore (`AndroidKeystoreSecretStore`), the
/// iOS Keychain, or memory in tests. The core stores one 32-byte secret per database in it.
///
/// Called from the core's worker threads, never the main thread; an implementation may
/// block (keystore operations do) but must not call back into `PrivcommClient`.
#[uniffi::export(with_foreign)]
pub trait SecretStore: Send + Sync {
    /// The secret called `name`, or null if there is none.
    fn get(&self, name: String) -> Result<Option<Vec<u8>>, SecretStoreError>;
    /// Stores (or replaces) the secret called `name`.
    fn set(&self, name: String, secret: Vec<u8>) -> Result<(), SecretStoreError>;
    /// Deletes the secret called `name`; deleting a missing secret is not an error.
    fn delete(&self, name: String) -> Result<(), SecretStoreError>;
}

/// The foreign store seen through the core's trait; neither called nor freed once its
/// client is abandoned (`foreign`).
pub(crate) struct ForeignSecretStore(pub ForeignHandle<dyn SecretStore>);

impl ForeignSecretStore {
    /// Wraps `store` for the client whose flag is `abandoned`.
    pub fn new(store: Arc<dyn SecretStore>, abandoned: Abandoned) -> Self {
        Self(ForeignHandle::new(store, abandoned))
    }

    fn store(&self) -> Result<&dyn SecretStore, privcomm_core::SecretStoreError> {
        self.0.get().ok_or_else(|| {
            privcomm_core::SecretStoreError::Unavailable("the client was dropped".into())
        })
    }
}

impl privcomm_core::SecretStore for ForeignSecretStore {
    fn get(
        &self,
        name: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, privcomm_core::SecretStoreError> {
        Ok(self.store()?.get(name.to_owned())?.map(Zeroizing::new))
    }

    fn set(&self, name: &str, secret: &[u8]) -> Result<(), privcomm_core::SecretStoreError> {
        // uniffi copies the bytes into a buffer it frees without wiping; the foreign side's
        // array is beyond our reach too (docs/SECURITY.md, "Bindings").
        Ok(self.store()?.set(name.to_owned(), secret.to_vec())?)
    }

    fn delete(&self, name: &str) -> Result<(), privcomm_core::SecretStoreError> {
        Ok(self.store()?.delete(name.to_owned())?)
    }
}
