//! WebSocket frames: JSON text frames tagged by `"type"`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::b64::Base64String;
use crate::error::ErrorCode;

/// Frames a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Store and relay an encrypted message; answered by `sent` or `error`.
    Send {
        /// Recipient's user id.
        to: Uuid,
        /// Sender-chosen message id (de-duplication key).
        id: Uuid,
        /// Opaque encrypted payload.
        payload: Base64String,
        /// The recipient's registration id as the sender's session knows it. A recipient
        /// who registered again since (a new phone) cannot read the message: the relay
        /// refuses it with `stale_recipient`, and the sender fetches their new keys. Absent:
        /// not checked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        registration_id: Option<u32>,
    },
    /// The client has durably stored message `id`; the relay may delete it.
    Ack {
        /// Server id from `encrypted_message`.
        id: Uuid,
    },
}

/// Frames the relay sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// A message for this client; ack it once stored.
    EncryptedMessage {
        /// Server id (the ack key).
        id: Uuid,
        /// Sender's user id.
        sender: Uuid,
        /// Opaque encrypted payload.
        payload: Base64String,
        /// When the relay stored it, Unix milliseconds.
        timestamp: i64,
    },
    /// A `send` was durably stored.
    Sent {
        /// The client's message id.
        id: Uuid,
        /// The relay's id for it.
        server_id: Uuid,
    },
    /// Every message queued before this connection has been delivered.
    QueueEmpty,
    /// A frame failed; the connection stays open.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable text.
        message: String,
        /// The id of the frame that failed: the client id of a `send`, the server id of an
        /// `ack`; absent when the frame could not be parsed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Uuid>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_use_documented_json() {
        let id = Uuid::nil();
        let sent = serde_json::to_value(ServerFrame::Sent { id, server_id: id }).unwrap();
        assert_eq!(sent["type"], "sent");
        assert_eq!(
            serde_json::to_string(&ServerFrame::QueueEmpty).unwrap(),
            r#"{"type":"queue_empty"}"#
        );
        let ack: ClientFrame =
            serde_json::from_str(&format!(r#"{{"type":"ack","id":"{id}"}}"#)).unwrap();
        assert_eq!(ack, ClientFrame::Ack { id });
        let err = serde_json::to_value(ServerFrame::Error {
            code: ErrorCode::UnknownFrameType,
            message: "x".into(),
            id: None,
        })
        .unwrap();
        assert_eq!(err["code"], "unknown_frame_type");
        assert!(err.get("id").is_none());
    }
}
