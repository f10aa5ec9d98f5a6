//! `GET /api/v1/turn-credentials`: short-lived TURN credentials (TURN REST API scheme).

use axum::extract::State;
use axum::Json;
use hmac::{Hmac, Mac};
use privcomm_protocol::rest::TurnCredentialsResponse;
use privcomm_protocol::{b64, ErrorCode};
use sha1::Sha1;

use crate::error::ApiError;
use crate::extract::AuthUser;
use crate::state::AppState;

/// The coturn `use-auth-secret` credential for `username`: base64(HMAC-SHA1(secret, username)).
pub fn turn_credential(secret: &[u8], username: &str) -> Result<String, ApiError> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "unusable TURN secret"))?;
    mac.update(username.as_bytes());
    Ok(b64::encode(mac.finalize().into_bytes()))
}

/// Credentials valid for the configured TTL, with username `"<expiry>:<user_id>"`.
pub async fn credentials(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<TurnCredentialsResponse>, ApiError> {
    let secret = state
        .config
        .turn_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TurnNotConfigured,
                "this relay has no TURN server",
            )
        })?;
    let ttl = state.config.turn_ttl;
    let expiry = state
        .clock
        .now_secs()
        .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
    let username = format!("{expiry}:{user}");
    Ok(Json(TurnCredentialsResponse {
        urls: state
            .config
            .turn_urls
            .iter()
            .filter(|u| !u.is_empty())
            .cloned()
            .collect(),
        credential: turn_credential(secret.as_bytes(), &username)?,
        username,
        ttl,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_matches_rfc2104_hmac_sha1() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        let cred = turn_credential(b"Jefe", "what do ya want for nothing?").unwrap();
        let expected = hex::decode("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79").unwrap();
        assert_eq!(cred, b64::encode(expected));
    }
}
