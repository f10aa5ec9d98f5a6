//! Request extractors that turn bad input into typed `ApiError`s.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use privcomm_protocol::ErrorCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// JSON body whose rejections are `malformed_json`, `invalid_request`, `payload_too_large`
/// or `unsupported_media_type` instead of axum's plain-text errors.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Decodes a JSON body as `ApiJson` does once the content type is checked: the relay's
/// one parser of REST bodies (the fuzz targets call it directly).
pub fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    axum::Json::<T>::from_bytes(body)
        .map(|axum::Json(value)| value)
        .map_err(json_rejection)
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            ErrorCode::MalformedJson,
            format!("body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::JsonDataError(e) => ApiError::new(ErrorCode::InvalidRequest, e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body too large")
        }
        other => ApiError::new(ErrorCode::InvalidRequest, other.body_text()),
    }
}

/// The user a valid bearer token names, counted against their per-account request limit.
#[derive(Clone, Copy, Debug)]
pub struct AuthUser(pub Uuid);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        authenticate(state, token).await.map(Self)
    }
}

/// The user `token` names, if it is valid now and was issued for the user's current
/// registration (a token of a device the number was registered away from is refused);
/// counted against the user's per-account request limit.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Uuid, ApiError> {
    authenticate_subject(state, token).await.map(|s| s.user)
}

/// `authenticate`, with the registration generation the token was issued for.
pub async fn authenticate_subject(
    state: &AppState,
    token: &str,
) -> Result<crate::tokens::TokenSubject, ApiError> {
    let Ok(subject) = state.tokens.verify_subject(token, state.clock.now_secs()) else {
        state.metrics.auth_failures.inc();
        return Err(ApiError::unauthorized());
    };
    state.rate_limits.check_account(subject.user).await?;
    if state.store.user_generation(subject.user).await? != Some(subject.generation) {
        state.metrics.auth_failures.inc();
        return Err(ApiError::unauthorized());
    }
    Ok(subject)
}
