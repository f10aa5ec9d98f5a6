//! The Signal engine: the account, sessions and identities over one encrypted store.
//!
//! libsignal's store traits are `?Send`, so an engine lives on one thread; the rest of the
//! core reaches it through `actor::ProtocolHandle`.

mod account;
mod identity;
mod session;

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

pub use account::INITIAL_ONE_TIME_PREKEYS;
pub use identity::SafetyNumber;
pub use session::BatchScope;

use crate::error::{CoreError, CoreResult};
use crate::secret_store::SecretStore;
use crate::store::Store;

/// Signal protocol state of one device.
pub struct SignalEngine {
    store: Store,
}

impl SignalEngine {
    /// Opens (or creates) the engine's store at `path`.
    pub fn open(path: &Path, secrets: &dyn SecretStore) -> CoreResult<Self> {
        Ok(Self {
            store: Store::open(path, secrets)?,
        })
    }

    /// The underlying store (history, processed ids).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Re-encrypts the whole store under a fresh data key.
    pub fn rotate_data_key(&mut self, secrets: &dyn SecretStore) -> CoreResult<()> {
        self.store.rotate_data_key(secrets)
    }
}

/// Runs a libsignal future to completion on this thread. Our store answers synchronously, so
/// these futures never wait; one that did would be a bug, reported rather than spun on.
fn run_now<F: Future>(future: F) -> CoreResult<F::Output> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => Err(CoreError::Protocol(
            "a store operation did not complete synchronously".into(),
        )),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
