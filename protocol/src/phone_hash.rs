//! The phone hash: how the relay names a user without learning the phone number.

use serde::{Deserialize, Serialize};

use crate::limits::PHONE_HASH_LEN;

/// SHA-256 of the normalised phone number as 64 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneHash(String);

/// The text is not 64 lowercase hex characters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("phone_hash must be 64 lowercase hex characters")]
pub struct PhoneHashError;

impl PhoneHash {
    /// Validates and wraps a phone hash.
    pub fn parse(text: &str) -> Result<Self, PhoneHashError> {
        let ok = text.len() == PHONE_HASH_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(PhoneHashError)
        }
    }

    /// The validated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_lowercase_hex_of_right_length() {
        assert!(PhoneHash::parse(&"a".repeat(64)).is_ok());
        assert!(PhoneHash::parse(&"0123456789abcdef".repeat(4)).is_ok());
        assert!(PhoneHash::parse(&"A".repeat(64)).is_err());
        assert!(PhoneHash::parse(&"a".repeat(63)).is_err());
        assert!(PhoneHash::parse(&"g".repeat(64)).is_err());
        assert!(PhoneHash::parse("").is_err());
    }
}
