//! Conversions between stored columns and the relay's types, shared by the backends.

use uuid::Uuid;

use super::{StoreError, StoreResult};

/// A 16-byte id column as a `Uuid`.
pub(super) fn uuid_from(bytes: &[u8]) -> StoreResult<Uuid> {
    Uuid::from_slice(bytes).map_err(|e| StoreError::Database(Box::new(e)))
}

/// A 16-byte keyed-hash column as a `DeliveryKey`.
pub(super) fn key_from(bytes: &[u8]) -> StoreResult<crate::pepper::DeliveryKey> {
    crate::pepper::DeliveryKey::try_from(bytes).map_err(|e| StoreError::Database(Box::new(e)))
}

/// A BIGINT column that holds a u32 (registration ids, key ids, counters).
pub(super) fn u32_from(value: i64) -> StoreResult<u32> {
    u32::try_from(value).map_err(|e| StoreError::Database(Box::new(e)))
}

/// A count as stored (never negative) as a u64.
pub(super) fn count_from(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Whether a database whose `relay_meta` names pepper fingerprint `stored` still needs
/// its rows peppered (`Ok(true)`: never converted), is already in `pepper`'s form
/// (`Ok(false)`), or was written with another pepper (an error: opening it would make
/// every stored number unfindable).
pub(super) fn needs_peppering(
    stored: Option<&str>,
    pepper: &crate::pepper::Pepper,
) -> StoreResult<bool> {
    match stored {
        None => Ok(true),
        Some(fingerprint) if fingerprint == pepper.fingerprint() => Ok(false),
        Some(_) => Err(StoreError::Setup(
            "this database was written with another phone pepper: start the relay with the \
             pepper it was created with (PRIVCOMM_PHONE_PEPPER or <data dir>/phone_pepper); \
             every relay of one database must share it"
                .into(),
        )),
    }
}

/// Equal byte strings, compared without an early exit.
pub(super) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
