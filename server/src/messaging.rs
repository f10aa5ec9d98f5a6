//! Accepting a message for a recipient: validate, store durably, then hand it to the
//! recipient's connection. Used by both the REST endpoint and the WebSocket `send` frame.

use privcomm_protocol::limits::MAX_PAYLOAD_BYTES;
use privcomm_protocol::{Base64String, ErrorCode};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{NewMessage, StoreError, StoreOutcome};

/// Stores `payload` from `sender` for `to` under the sender's message id `client_id`, and
/// returns the server id. A repeated (sender, client id) returns the first server id.
pub async fn accept_message(
    state: &AppState,
    sender: Uuid,
    to: Uuid,
    client_id: Uuid,
    payload: &Base64String,
) -> Result<Uuid, ApiError> {
    // Reject by encoded length first so an oversize payload is never decoded.
    if payload.as_str().len() > MAX_PAYLOAD_BYTES.div_ceil(3) * 4 {
        return Err(too_large());
    }
    let payload = payload.decode("payload")?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(too_large());
    }
    if payload.is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "payload is empty"));
    }
    let message = NewMessage {
        id: Uuid::new_v4(),
        sender,
        client_id,
        recipient: to,
        payload,
        created_at: state.clock.now_ms(),
    };
    match state.store.store_message(&message).await {
        Ok(StoreOutcome::Stored(pending)) => {
            state.metrics.messages_stored.inc();
            let id = pending.id;
            state.connections.push(pending);
            Ok(id)
        }
        Ok(StoreOutcome::Duplicate { server_id }) => Ok(server_id),
        Err(StoreError::MissingReference) => {
            Err(ApiError::new(ErrorCode::NotFound, "unknown recipient"))
        }
        Err(e) => Err(e.into()),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("payload exceeds {MAX_PAYLOAD_BYTES} bytes"),
    )
}
