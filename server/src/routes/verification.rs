//! `POST /api/v1/verification`: sends a code to a phone number, the proof a registration
//! needs. The number is in the relay's memory for this request only: it is hashed (and
//! peppered) for the stored code and the limits, handed to the code sender, and neither
//! stored nor logged. The answer is the same whether or not the number is registered.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use privcomm_protocol::limits::{MAX_LOCALE_LEN, VERIFICATION_CODE_TTL_SECS};
use privcomm_protocol::rest::{VerificationRequest, VerificationResponse};
use privcomm_protocol::{ErrorCode, PhoneNumber};

use crate::codes::{new_code, CodeMessage};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

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
    state
        .rate_limits
        .check_verification_for(phone_key.as_str())?;
    let code = new_code();
    let ttl_ms = i64::try_from(VERIFICATION_CODE_TTL_SECS * 1000).unwrap_or(i64::MAX);
    let expires_at = state.clock.now_ms().saturating_add(ttl_ms);
    state
        .store
        .put_verification(
            &phone_key,
            &state.pepper.code_hash(&phone_key, &code),
            expires_at,
        )
        .await?;
    let message = CodeMessage {
        number,
        code,
        locale,
    };
    if let Err(e) = sender.send(&message).await {
        tracing::warn!(error = %e, sender = sender.kind(), "verification code not delivered");
        state.metrics.verification_codes("failed");
        // Nobody received it; it must not stay guessable.
        if let Err(e) = state.store.delete_verification(&phone_key).await {
            tracing::warn!(error = %e, "could not delete an undelivered code");
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
            expires_in: VERIFICATION_CODE_TTL_SECS,
        }),
    ))
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
