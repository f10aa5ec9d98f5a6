//! uniffi bindings of the Privcomm client core, for Kotlin (Android), Swift (iOS) and
//! React Native. A thin layer: it converts types and errors and moves work onto the core's
//! runtime; every decision stays in `privcomm-core`.
//!
//! - `client`: the `PrivcommClient` object (async methods run on `runtime`);
//! - `secret_store`: the app's secret store (Android Keystore, iOS Keychain) as a foreign
//!   trait;
//! - `events`: event and audio listeners (foreign traits) and their `Subscription`s;
//! - `foreign`: foreign objects that a client dropped without `shutdown` never touches;
//! - `types` and `error`: the records, enums and the one error type the app sees.

uniffi::setup_scaffolding!("privcomm");

pub mod client;
pub mod error;
pub mod events;
mod foreign;
pub mod runtime;
pub mod secret_store;
pub mod types;

pub use client::{delete_local_data, PrivcommClient};
pub use error::{PrivcommError, SecretStoreError};
pub use events::{AudioSink, EventListener, ListenerError, Subscription};
pub use secret_store::SecretStore;
pub use types::*;
