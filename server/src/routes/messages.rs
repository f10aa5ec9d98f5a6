//! `POST /api/v1/messages`: store a message for a recipient over REST.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use privcomm_protocol::rest::{SendMessageRequest, SendMessageResponse};

use crate::error::ApiError;
use crate::extract::{ApiJson, AuthUser};
use crate::messaging::accept_message;
use crate::state::AppState;

/// Stores the message (202) and delivers it at once if the recipient is online.
pub async fn send(
    State(state): State<AppState>,
    AuthUser(sender): AuthUser,
    ApiJson(req): ApiJson<SendMessageRequest>,
) -> Result<(StatusCode, Json<SendMessageResponse>), ApiError> {
    let id = accept_message(
        &state,
        sender,
        req.to,
        req.id,
        &req.payload,
        req.registration_id,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(SendMessageResponse { id })))
}
