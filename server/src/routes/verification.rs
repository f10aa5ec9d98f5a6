//! `POST /api/v1/verification`: sends a code to a phone number, the proof a registration
//! needs. The number is in the relay's memory for this request only: it is hashed (and
//! peppered) for the stored code and the limits, handed to the code sender, and neither
//! stored nor logged. The answer is the same whether or not the number is registered.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::time::Duration;

use privcomm_protocol::limits::{
    MAX_LOCALE_LEN, VERIFICATION_CODE_TTL_SECS, VERIFICATION_SESSION_LEN,
};
use privcomm_protocol::rest::{VerificationRequest, VerificationResponse};
use privcomm_protocol::{ErrorCode, PhoneNumber};

use crate::codes::{new_code, CodeMessage};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::rate_limit::rate_limited;
use crate::state::AppState;
use crate::store::{CodeProof, DAY_MS};

/// Sends a fresh code to the number (replacing an earlier one).
pub async fn request_code(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<VerificationRequest>,
) -> Result<(StatusCode, Json<VerificationResponse>), ApiError> {
    let number = PhoneNumber::parse(&req.number)
        .map_err(|e| ApiError::new(ErrorCode::InvalidPhoneNumber, e.to_string()))?;
    let locale = locale(req.locale.as_deref())?;
    let Some(sender) = state.codes.clone() else {
        return Err(ApiError::new(
            ErrorCode::VerificationUnavailable,
            "this relay has no way to send verification codes configured",
        ));
    };
    let phone_key = state.pepper.phone_key(&number.hash());
    let now = state.clock.now_ms();
    check_number_limits(&state, &phone_key, now).await?;
    state.rate_limits.check_verification_budget().await?;
    let code = new_code();
    let session = new_session();
    let ttl_ms = i64::try_from(VERIFICATION_CODE_TTL_SECS * 1000).unwrap_or(i64::MAX);
    let proof = CodeProof {
        session_key: state.pepper.session_key(&session),
        code_hash: state.pepper.code_hash(&phone_key, &code),
        phone_key,
    };
    state
        .store
        .put_verification(&proof, now, now.saturating_add(ttl_ms))
        .await?;
    let message = CodeMessage {
        number,
        code,
        locale,
    };
    if let Err(e) = sender.send(&message).await {
        tracing::warn!(error = %e, sender = sender.kind(), "verification code not delivered");
        state.metrics.verification_codes("failed");
        // Nobody received it; it must not stay guessable (it still counts as sent).
        if let Err(e) = state.store.void_verification(&proof.session_key).await {
            tracing::warn!(error = %e, "could not void an undelivered code");
        }
        return Err(ApiError::new(
            ErrorCode::CodeDeliveryFailed,
            "the code could not be sent; try again later",
        ));
    }
    state.metrics.verification_codes("sent");
    Ok((
        StatusCode::ACCEPTED,
        Json(VerificationResponse {
            session,
            expires_in: VERIFICATION_CODE_TTL_SECS,
        }),
    ))
}

/// A fresh verification session id: 16 random bytes as 32 hex characters.
fn new_session() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// True if `session` has the shape of a session id.
pub fn looks_like_session(session: &str) -> bool {
    session.len() == VERIFICATION_SESSION_LEN
        && session
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The per-number limits, counted in storage (so no client can make the relay forget them
/// by filling a limiter): a code a minute and five a day by default, whoever asks.
async fn check_number_limits(
    state: &AppState,
    phone_key: &crate::pepper::PhoneKey,
    now: i64,
) -> Result<(), ApiError> {
    let config = &state.config;
    let (today, latest) = state
        .store
        .codes_sent_since(phone_key, now.saturating_sub(DAY_MS))
        .await?;
    if today >= u64::from(config.verification_per_number_per_day) {
        return Err(rate_limited(
            Duration::from_secs(3600),
            "too many codes for this number today; retry later",
        ));
    }
    let per_minute = u64::from(config.verification_per_number_per_minute.max(1));
    let (last_minute, _) = state
        .store
        .codes_sent_since(phone_key, now.saturating_sub(60_000))
        .await?;
    if last_minute >= per_minute {
        let wait_ms = latest
            .map_or(60_000, |at| at.saturating_add(60_000).saturating_sub(now))
            .max(1_000);
        return Err(rate_limited(
            Duration::from_millis(u64::try_from(wait_ms).unwrap_or(60_000)),
            "a code was sent to this number a moment ago; wait",
        ));
    }
    Ok(())
}

/// The locale of the code's message: a short BCP 47-shaped tag, `en` when absent.
fn locale(given: Option<&str>) -> Result<String, ApiError> {
    match given {
        None | Some("") => Ok("en".into()),
        Some(tag)
            if tag.len() <= MAX_LOCALE_LEN
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Ok(tag.to_owned())
        }
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "locale must be a language tag of at most {MAX_LOCALE_LEN} letters, digits and -"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_are_short_tags() {
        assert_eq!(locale(None).unwrap(), "en");
        assert_eq!(locale(Some("pt-BR")).unwrap(), "pt-BR");
        assert!(locale(Some("en_US")).is_err());
        assert!(locale(Some(&"a".repeat(36))).is_err());
        assert!(locale(Some("<script>")).is_err());
    }
}
