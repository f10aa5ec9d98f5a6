//! Privcomm client core: the phone's secrets and protocol state.
//!
//! - `engine`: the account, Signal sessions and peer identities (libsignal) over
//! - `store`: one SQLite file whose every secret value is sealed with AES-256-GCM under a
//!   data key that is itself wrapped by a platform secret (`secret_store`);
//! - `actor`: the thread that owns the engine, and the `Send` handle the rest of the core
//!   uses to reach it;
//! - `net`: the relay's REST API and WebSocket; `client`: the public async API and its
//!   connection task;
//! - `call`: one-to-one voice calls (WebRTC, Opus), signalled inside the Signal session.

pub mod actor;
pub mod call;
pub mod client;
pub mod clock;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod net;
pub mod secret_store;
pub mod store;

pub use call::{AudioFrame, CallConfig, CallDirection, CallState, CallStats, EndReason};
pub use client::{
    delete_local_data, CallInfo, Client, ClientEvent, ClientOptions, ConnectionState,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{SafetyNumber, SignalEngine};
pub use error::{CoreError, CoreResult, ErrorCategory};
pub use secret_store::{KeyringSecretStore, MemorySecretStore, SecretStore, SecretStoreError};
pub use store::dropped::DroppedCounts;
pub use store::history::{Conversation, HistoryCursor, MessageState, StoredMessage};
pub use store::quota::ReceiveQuota;
pub use store::upkeep::StoreUsage;
