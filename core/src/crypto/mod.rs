//! Encryption of everything the core stores.

pub mod codec;
pub mod keys;
pub mod pin;

pub use keys::{DataKey, StoreKeys, WrapKey};
