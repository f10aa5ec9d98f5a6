//! What travels inside the Signal ciphertext: the message or receipt, as JSON.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::call::signal::CallSignal;
use crate::error::{describe_json_error, CoreError, CoreResult};

/// Largest text the client accepts for sending (and stores when received), in bytes.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;

/// Most message ids in one receipt: a receipt of this size stays a few KiB, far inside the
/// relay's payload limit.
pub const MAX_RECEIPT_IDS: usize = 256;

/// Largest padded envelope: what is left of the relay's payload limit after the Signal
/// message around it (a PreKey message carries keys and a Kyber ciphertext, under 2 KiB).
pub const MAX_PADDED_ENVELOPE_BYTES: usize = privcomm_protocol::limits::MAX_PAYLOAD_BYTES - 4096;

/// A decrypted message payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Envelope {
    /// A chat message.
    Text {
        /// Message id, the same on both devices.
        id: Uuid,
        /// Text.
        body: String,
        /// When the sender wrote it, Unix milliseconds.
        sent_at: i64,
    },
    /// The recipient's device stored these messages.
    Receipt {
        /// Ids of the delivered messages.
        ids: Vec<Uuid>,
    },
    /// A call signalling step (never stored in the history).
    Call {
        /// The call it belongs to.
        call_id: Uuid,
        /// The step.
        signal: CallSignal,
        /// When the sender sent it, Unix milliseconds (stale offers are ignored).
        sent_at: i64,
    },
}

impl Envelope {
    /// Serialized form.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising this enum of strings, ids and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses an envelope (without its padding) and checks its bounds: a text of at most
    /// `MAX_TEXT_BYTES`, a receipt of at most `MAX_RECEIPT_IDS` ids.
    pub fn decode(bytes: &[u8]) -> CoreResult<Self> {
        let envelope: Self = serde_json::from_slice(bytes).map_err(|e| {
            CoreError::InvalidMessage(format!("bad envelope: {}", describe_json_error(&e)))
        })?;
        match &envelope {
            Self::Text { body, .. } if body.is_empty() || body.len() > MAX_TEXT_BYTES => Err(
                CoreError::InvalidMessage(format!("text of {} bytes", body.len())),
            ),
            Self::Receipt { ids } if ids.len() > MAX_RECEIPT_IDS => Err(CoreError::InvalidMessage(
                format!("receipt of {} ids", ids.len()),
            )),
            _ => Ok(envelope),
        }
    }

    /// Parses a decrypted payload: checks and strips its padding, then `decode`s it.
    pub fn open(padded: &[u8]) -> CoreResult<Self> {
        Self::decode(super::padding::unpad(padded)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_envelope_is_not_quoted_in_the_error() {
        // A peer's plaintext in a field of the wrong type, and as an unknown variant.
        for json in [
            r#"{"t":"text","id":"my secret text","body":"x","sent_at":1}"#,
            r#"{"t":"my secret text"}"#,
        ] {
            let error = Envelope::decode(json.as_bytes()).unwrap_err().to_string();
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
