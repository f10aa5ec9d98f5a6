//! The registration lock PIN, stretched into the token the relay checks: Argon2id with the
//! number's phone hash as the salt. The relay stores only a keyed hash of the token, so a
//! copy of its database gives nothing to guess PINs against without its pepper, and with
//! the pepper each guess still costs an Argon2id run.

use argon2::{Algorithm, Argon2, Params, Version};
use privcomm_protocol::limits::REGISTRATION_LOCK_TOKEN_LEN;
use zeroize::Zeroizing;

use crate::error::{CoreError, CoreResult};

/// Memory of one Argon2id run, in KiB (19 MiB, t = 2, p = 1: OWASP's recommended minimum;
/// a fraction of a second on a phone, once per registration or lock change).
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;

/// Shortest PIN accepted, in characters.
pub const MIN_PIN_CHARS: usize = 4;
/// Longest PIN accepted, in bytes.
pub const MAX_PIN_BYTES: usize = 128;

/// The lock token of `pin` for the number whose phone hash is `phone_hash`.
pub fn lock_token(
    pin: &str,
    phone_hash: &str,
) -> CoreResult<Zeroizing<[u8; REGISTRATION_LOCK_TOKEN_LEN]>> {
    if pin.chars().count() < MIN_PIN_CHARS || pin.len() > MAX_PIN_BYTES {
        return Err(CoreError::InvalidArgument(format!(
            "a registration lock PIN has {MIN_PIN_CHARS} to {MAX_PIN_BYTES} characters"
        )));
    }
    let params = Params::new(
        MEMORY_KIB,
        ITERATIONS,
        LANES,
        Some(REGISTRATION_LOCK_TOKEN_LEN),
    )
    .map_err(|e| CoreError::Protocol(format!("argon2 parameters: {e}")))?;
    let mut token = Zeroizing::new([0u8; REGISTRATION_LOCK_TOKEN_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pin.as_bytes(), phone_hash.as_bytes(), token.as_mut())
        .map_err(|e| CoreError::Protocol(format!("argon2: {e}")))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_pin_and_number() {
        let hash_a = "a".repeat(64);
        let hash_b = "b".repeat(64);
        let t = lock_token("1234", &hash_a).unwrap();
        assert_eq!(*t, *lock_token("1234", &hash_a).unwrap());
        assert_ne!(*t, *lock_token("1235", &hash_a).unwrap());
        assert_ne!(*t, *lock_token("1234", &hash_b).unwrap());
        assert!(lock_token("123", &hash_a).is_err());
        assert!(lock_token(&"9".repeat(129), &hash_a).is_err());
    }
}
