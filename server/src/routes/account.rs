//! `PUT` and `DELETE /api/v1/account/registration-lock`: the registration lock of the
//! caller's account. With a lock set, registering the number again (a new device) needs the
//! PIN as well as the code, until the account has been inactive for 7 days.

use axum::extract::State;
use axum::http::StatusCode;
use privcomm_protocol::limits::REGISTRATION_LOCK_TOKEN_LEN;
use privcomm_protocol::rest::RegistrationLockRequest;
use privcomm_protocol::{Base64String, ErrorCode};
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::extract::{ApiJson, AuthUser};
use crate::state::AppState;

/// Sets (or replaces) the caller's registration lock.
pub async fn set_lock(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<RegistrationLockRequest>,
) -> Result<StatusCode, ApiError> {
    let token = lock_token(&req.token)?;
    let verifier = state.pepper.lock_verifier(user, &token);
    state
        .store
        .set_registration_lock(user, Some(&verifier))
        .await?;
    tracing::info!(user_id = %user, "registration lock set");
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the caller's registration lock.
pub async fn remove_lock(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<StatusCode, ApiError> {
    state.store.set_registration_lock(user, None).await?;
    tracing::info!(user_id = %user, "registration lock removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Decodes a lock token: exactly `REGISTRATION_LOCK_TOKEN_LEN` bytes.
pub fn lock_token(token: &Base64String) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let bytes = Zeroizing::new(token.decode("registration_lock")?);
    if bytes.len() != REGISTRATION_LOCK_TOKEN_LEN {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("a registration lock token is {REGISTRATION_LOCK_TOKEN_LEN} bytes"),
        ));
    }
    Ok(bytes)
}
