//! The Signal engine: the account, sessions and identities over one encrypted store.
//!
//! libsignal's store traits are `?Send`, so an engine lives on one thread; the rest of the
//! core reaches it through `actor::ProtocolHandle`.

mod account;
mod identity;
mod session;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

pub use account::INITIAL_ONE_TIME_PREKEYS;
pub use identity::SafetyNumber;
pub use session::{peer_address, BatchScope};

use uuid::Uuid;

use crate::error::{CoreError, CoreResult};
use crate::secret_store::SecretStore;
use crate::store::quota::ReceiveQuota;
use crate::store::{upkeep, Store};

/// Undecryptable messages in a row from one peer after which the session with them is
/// renewed. One bad blob proves nothing (a relay can make any up, claiming any sender), so
/// one never costs a session; a run of them with no message decrypting in between means
/// the session is really broken.
pub const RENEW_SESSION_AFTER_FAILURES: u32 = 5;

/// Peers whose failure runs are tracked at once; past this the tracking starts over (it
/// only delays a renewal).
const MAX_TRACKED_FAILURE_RUNS: usize = 4096;

/// Signal protocol state of one device.
pub struct SignalEngine {
    store: Store,
    /// Undecryptable messages in a row, per sender, since the last one that decrypted.
    failure_runs: HashMap<Uuid, u32>,
}

impl SignalEngine {
    /// Opens (or creates) the engine's store at `path`.
    pub fn open(path: &Path, secrets: &dyn SecretStore) -> CoreResult<Self> {
        Ok(Self {
            store: Store::open(path, secrets)?,
            failure_runs: HashMap::new(),
        })
    }

    /// Counts an undecryptable message from `peer`; after `RENEW_SESSION_AFTER_FAILURES` in
    /// a row the session with them is renewed (`renew_session`). True if it was.
    pub fn note_undecryptable(&mut self, peer: Uuid) -> CoreResult<bool> {
        if self.failure_runs.len() >= MAX_TRACKED_FAILURE_RUNS
            && !self.failure_runs.contains_key(&peer)
        {
            self.failure_runs.clear();
        }
        let run = self.failure_runs.entry(peer).or_insert(0);
        *run = run.saturating_add(1);
        if *run < RENEW_SESSION_AFTER_FAILURES {
            return Ok(false);
        }
        self.failure_runs.remove(&peer);
        self.renew_session(peer)?;
        Ok(true)
    }

    /// A message from `peer` decrypted: their run of failures ends.
    pub fn note_decrypted(&mut self, peer: Uuid) {
        self.failure_runs.remove(&peer);
    }

    /// The underlying store (history, processed ids).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Deletes what the device no longer needs at `now`: processed relay ids past
    /// `PROCESSED_RETENTION_MS`, ended quota windows, and one-time prekeys stale for longer
    /// than `STALE_PREKEY_GRACE_MS`. Runs in one transaction.
    pub fn upkeep(&mut self, now: i64, quota: &ReceiveQuota) -> CoreResult<Upkept> {
        self.store.write(|store| {
            Ok(Upkept {
                processed_ids: store
                    .prune_processed(now.saturating_sub(upkeep::PROCESSED_RETENTION_MS))?,
                quota_windows: store.prune_quotas(now, quota)?,
                one_time_prekeys: store.expire_stale_prekeys(now)?,
            })
        })
    }

    /// Re-encrypts the whole store under a fresh data key.
    pub fn rotate_data_key(&mut self, secrets: &dyn SecretStore) -> CoreResult<()> {
        self.store.rotate_data_key(secrets)
    }
}

/// What one `SignalEngine::upkeep` deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Upkept {
    /// Processed relay ids.
    pub processed_ids: u64,
    /// Ended quota windows.
    pub quota_windows: u64,
    /// Stale one-time prekeys.
    pub one_time_prekeys: u64,
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
    crate::clock::system_now_ms()
}
