//! What travels inside the Signal ciphertext: the message or receipt, as JSON.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::call::signal::CallSignal;
use crate::error::{CoreError, CoreResult};

/// Largest text the client accepts for sending, in bytes (well inside the relay's payload
/// limit once encrypted).
pub const MAX_TEXT_BYTES: usize = 32 * 1024;

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

    /// Parses a decrypted payload.
    pub fn decode(bytes: &[u8]) -> CoreResult<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| CoreError::InvalidMessage(format!("bad envelope: {e}")))
    }
}
