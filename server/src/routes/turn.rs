//! `GET /api/v1/turn-credentials`: short-lived TURN credentials (TURN REST API scheme), under
//! usernames that name no one, a few per account per hour.

use axum::extract::State;
use axum::Json;
use hmac::{Hmac, Mac};
use privcomm_protocol::rest::TurnCredentialsResponse;
use privcomm_protocol::{b64, ErrorCode};
use rand::RngCore;
use sha1::Sha1;

use crate::config::ConfigError;
use crate::error::ApiError;
use crate::extract::AuthUser;
use crate::state::AppState;

/// Shortest TURN secret the relay runs with: whoever learns it can mint credentials.
pub const MIN_TURN_SECRET_LEN: usize = 32;
/// Shortest TURN credential lifetime the relay issues, in seconds.
pub const MIN_TURN_TTL_SECS: u64 = 60;
/// Longest TURN credential lifetime, in seconds: a leaked credential relays for at most a
/// day (the core caches one for at most as long).
pub const MAX_TURN_TTL_SECS: u64 = 24 * 60 * 60;
/// Random bytes in a credential's username.
const USERNAME_RANDOM_BYTES: usize = 16;

/// Refuses a TURN secret that is too short and a credential lifetime out of bounds.
pub fn check_settings(secret: Option<&str>, ttl_secs: u64) -> Result<(), ConfigError> {
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        if secret.len() < MIN_TURN_SECRET_LEN {
            return Err(ConfigError {
                setting: "PRIVCOMM_TURN_SECRET",
                problem: format!(
                    "must be at least {MIN_TURN_SECRET_LEN} bytes (e.g. `openssl rand -hex 32`), \
                     and the same as coturn's static-auth-secret"
                ),
            });
        }
    }
    if !(MIN_TURN_TTL_SECS..=MAX_TURN_TTL_SECS).contains(&ttl_secs) {
        return Err(ConfigError {
            setting: "PRIVCOMM_TURN_TTL",
            problem: format!(
                "must be between {MIN_TURN_TTL_SECS} and {MAX_TURN_TTL_SECS} seconds, not {ttl_secs}"
            ),
        });
    }
    Ok(())
}

/// The coturn `use-auth-secret` credential for `username`: base64(HMAC-SHA1(secret, username)).
pub fn turn_credential(secret: &[u8], username: &str) -> Result<String, ApiError> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "unusable TURN secret"))?;
    mac.update(username.as_bytes());
    Ok(b64::encode(mac.finalize().into_bytes()))
}

/// A credential username: `"<expiry>:<random hex>"`. coturn reads the expiry before the
/// colon and logs the whole name with the client's address, so the rest names no one: it
/// is fresh for every credential and never stored.
fn opaque_username(expiry: i64) -> String {
    let mut random = [0u8; USERNAME_RANDOM_BYTES];
    rand::rng().fill_bytes(&mut random);
    format!("{expiry}:{}", hex::encode(random))
}

/// Credentials valid for the configured TTL, under an opaque username, counted against the
/// account's hourly TURN budget.
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
    state.rate_limits.check_turn(user).await?;
    let ttl = state.config.turn_ttl;
    let expiry = state
        .clock
        .now_secs()
        .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
    let username = opaque_username(expiry);
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

    #[test]
    fn settings_outside_the_bounds_are_refused() {
        let long = "s".repeat(MIN_TURN_SECRET_LEN);
        assert!(check_settings(Some(&long), 3600).is_ok());
        assert!(check_settings(None, 3600).is_ok());
        let short = check_settings(Some("x"), 3600).unwrap_err();
        assert_eq!(short.setting, "PRIVCOMM_TURN_SECRET");
        for ttl in [0, 59, 86_401, 10 * 365 * 86_400] {
            let err = check_settings(Some(&long), ttl).unwrap_err();
            assert_eq!(err.setting, "PRIVCOMM_TURN_TTL");
        }
    }

    #[test]
    fn usernames_are_fresh_and_carry_only_the_expiry() {
        let a = opaque_username(1_234);
        let b = opaque_username(1_234);
        assert_ne!(a, b);
        let (expiry, rest) = a.split_once(':').unwrap();
        assert_eq!(expiry, "1234");
        assert_eq!(rest.len(), 2 * USERNAME_RANDOM_BYTES);
    }
}
