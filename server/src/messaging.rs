//! Accepting a message for a recipient: validate, then queue it for the writer, which stores
//! it durably and hands it to the recipient's connection. Used by both the REST endpoint and
//! the WebSocket `send` frame.

use privcomm_protocol::limits::MAX_PAYLOAD_BYTES;
use privcomm_protocol::{Base64String, ErrorCode};
use uuid::Uuid;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::{NewMessage, StoreError, StoreOutcome, StoreResult};
use crate::writer::answer;

/// Stores `payload` from `sender` for `to` under the sender's message id `client_id`, and
/// returns the server id. A repeated (sender, client id) returns the first server id. A
/// sender over their rate gets `rate_limited` with the time to wait.
pub async fn accept_message(
    state: &AppState,
    sender: Uuid,
    to: Uuid,
    client_id: Uuid,
    payload: &Base64String,
    registration_id: Option<u32>,
) -> Result<Uuid, ApiError> {
    let message = validate_message(state, sender, to, client_id, payload, registration_id)?;
    if let Err(wait) = state.rate_limits.check_send(sender, message.payload.len()) {
        state.metrics.message_refused("rate_limited");
        let mut err = ApiError::new(
            ErrorCode::RateLimited,
            "this account is sending too fast; slow down",
        );
        err.retry_after = Some(wait.as_secs().max(1));
        return Err(err);
    }
    let held = state.inflight.hold(message.payload.len()).await;
    // A REST send stands alone: no order to keep with other requests.
    let stored = state
        .writes
        .store_message(message, crate::writer::SendStream::default(), held)
        .await;
    server_id(&state.metrics, answer(stored).await)
}

/// Checks and decodes a message for storage; nothing is written. Refused at once while
/// storage is past its high-water mark. `registration_id` is the recipient's as the
/// sender's session knows it (checked when stored).
pub fn validate_message(
    state: &AppState,
    sender: Uuid,
    to: Uuid,
    client_id: Uuid,
    payload: &Base64String,
    registration_id: Option<u32>,
) -> Result<NewMessage, ApiError> {
    if state.storage.is_full() {
        state.metrics.message_refused("storage_full");
        return Err(ApiError::new(
            ErrorCode::StorageFull,
            "the relay's storage is full; retry later",
        ));
    }
    let payload = decode_payload(payload)?;
    Ok(NewMessage {
        // Time-ordered, so the id index grows at its end instead of at random pages.
        id: Uuid::now_v7(),
        sender,
        client_id,
        recipient: to,
        payload: payload.into(),
        created_at: state.clock.now_ms(),
        recipient_registration_id: registration_id,
    })
}

/// Decodes a message payload: base64 of 1 to `MAX_PAYLOAD_BYTES` bytes.
pub fn decode_payload(payload: &Base64String) -> Result<Vec<u8>, ApiError> {
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
    Ok(payload)
}

/// The server id a store answered with, or the error to report to the sender.
pub fn server_id(metrics: &Metrics, stored: StoreResult<StoreOutcome>) -> Result<Uuid, ApiError> {
    match stored {
        Ok(StoreOutcome::Stored(pending)) => Ok(pending.id),
        Ok(StoreOutcome::Duplicate { server_id }) => Ok(server_id),
        Err(StoreError::MissingReference) => {
            Err(ApiError::new(ErrorCode::NotFound, "unknown recipient"))
        }
        Err(StoreError::StaleRecipient) => Err(ApiError::new(
            ErrorCode::StaleRecipient,
            "the recipient registered again; fetch their keys and encrypt anew",
        )),
        Err(StoreError::MailboxFull) => {
            metrics.message_refused("mailbox_full");
            Err(StoreError::MailboxFull.into())
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
