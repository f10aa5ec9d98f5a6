//! The phone hash: how the relay names a user without learning the phone number.

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use crate::limits::PHONE_HASH_LEN;

/// SHA-256 of the normalised phone number as 64 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneHash(String);

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not zero. Only the
/// verification request carries one; everything else names the number by its `PhoneHash`.
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

/// The text is not an E.164 phone number.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("number must be in E.164 form: + and 8 to 15 digits, the first not 0")]
pub struct PhoneNumberError;

impl std::fmt::Debug for PhoneNumber {
    // A phone number is personal data: never printed, not even in a debug line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PhoneNumber(…)")
    }
}

impl PhoneNumber {
    /// Validates an E.164 number exactly (no separators: clients normalise first).
    pub fn parse(text: &str) -> Result<Self, PhoneNumberError> {
        let digits = text.strip_prefix('+').ok_or(PhoneNumberError)?;
        let ok = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(PhoneNumberError)
        }
    }

    /// The number, `+` and digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number's phone hash: SHA-256 of the E.164 text, lowercase hex.
    pub fn hash(&self) -> PhoneHash {
        PhoneHash(hex_lower(&Sha256::digest(self.0.as_bytes())))
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

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

    #[test]
    fn numbers_are_strict_e164_and_hash_to_a_phone_hash() {
        let n = PhoneNumber::parse("+14155550123").unwrap();
        // sha256sum of the text `+14155550123`.
        assert_eq!(
            n.hash().as_str(),
            "36a2cef4ff9bf7a1abd2a93359136b870393be4106e6c5d19b72ff564f9deca4"
        );
        assert!(PhoneHash::parse(n.hash().as_str()).is_ok());
        assert_eq!(format!("{n:?}"), "PhoneNumber(…)");
        for bad in [
            "14155550123",
            "+1415555",
            "+0415555012",
            "+1 415 555 0123",
            "+1234567890123456",
            "+1415555a123",
            "",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
        assert!(PhoneNumber::parse("+12345678").is_ok());
        assert!(PhoneNumber::parse("+123456789012345").is_ok());
    }
}
