//! Base64 (standard alphabet, padded) for binary fields in JSON.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// A base64 string as it travels in JSON.
///
/// Decoding is explicit (`decode`) rather than done by serde, so the receiver can tell a
/// malformed body from a well-formed body carrying bad base64 and name the offending field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Base64String(pub String);

/// A field did not hold valid standard, padded base64.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("field `{field}` is not valid base64")]
pub struct Base64Error {
    /// Name of the JSON field that failed to decode.
    pub field: &'static str,
}

impl Base64String {
    /// Encodes bytes.
    pub fn encode(bytes: impl AsRef<[u8]>) -> Self {
        Self(STANDARD.encode(bytes))
    }

    /// Decodes, naming `field` in the error.
    pub fn decode(&self, field: &'static str) -> Result<Vec<u8>, Base64Error> {
        decode(&self.0).map_err(|_| Base64Error { field })
    }

    /// The encoded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<T: AsRef<[u8]>> From<&T> for Base64String {
    fn from(bytes: &T) -> Self {
        Self::encode(bytes)
    }
}

/// Encodes bytes as standard, padded base64.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard, padded base64.
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_bad_field() {
        let s = Base64String::encode([0u8, 1, 2, 255]);
        assert_eq!(s.as_str(), "AAEC/w==");
        assert_eq!(s.decode("x").unwrap(), vec![0, 1, 2, 255]);
        let bad = Base64String("not*base64".into());
        assert_eq!(bad.decode("payload"), Err(Base64Error { field: "payload" }));
        // Unpadded input is rejected: the contract is the padded alphabet.
        assert!(Base64String("AAEC/w".into()).decode("x").is_err());
    }
}
