//! `POST /auth/challenge` and `POST /auth/token`.

use axum::extract::State;
use axum::Json;
use privcomm_protocol::limits::{NONCE_LEN, NONCE_TTL_SECS, TOKEN_TTL_SECS};
use privcomm_protocol::rest::{ChallengeRequest, ChallengeResponse, TokenRequest, TokenResponse};
use privcomm_protocol::{signing, Base64String, ErrorCode, PhoneHash};
use rand::RngCore;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::keys::parse_ec_public_key;
use crate::state::AppState;

/// Issues a single-use nonce bound to the phone hash. Answers the same whether or not the
/// phone hash is registered, so it cannot be used to discover users.
pub async fn challenge(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChallengeRequest>,
) -> Result<Json<ChallengeResponse>, ApiError> {
    let phone_key = state.pepper.phone_key(&PhoneHash::parse(&req.phone_hash)?);
    state
        .rate_limits
        .check_challenge_for(phone_key.as_str())
        .await?;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let ttl_ms = i64::try_from(NONCE_TTL_SECS * 1000).unwrap_or(i64::MAX);
    let expires_at = state.clock.now_ms().saturating_add(ttl_ms);
    state
        .store
        .insert_nonce(&nonce, &phone_key, expires_at)
        .await?;
    Ok(Json(ChallengeResponse {
        nonce: Base64String::encode(nonce),
        expires_in: NONCE_TTL_SECS,
    }))
}

/// Exchanges a signed nonce for an access token. Every failure is the same bare 401.
pub async fn token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let result = issue_token(&state, &req).await;
    if matches!(&result, Err(e) if e.code == ErrorCode::Unauthorized) {
        state.metrics.auth_failures.inc();
    }
    result.map(Json)
}

async fn issue_token(state: &AppState, req: &TokenRequest) -> Result<TokenResponse, ApiError> {
    let phone_hash = PhoneHash::parse(&req.phone_hash).map_err(|_| ApiError::unauthorized())?;
    let phone_key = state.pepper.phone_key(&phone_hash);
    state
        .rate_limits
        .check_token_for(phone_key.as_str())
        .await?;
    let nonce = req.nonce.decode("nonce")?;
    let signature = req.signature.decode("signature")?;
    let now_ms = state.clock.now_ms();
    // The nonce is consumed before anything else is checked, so a failed attempt burns it.
    if !state.store.take_nonce(&nonce, &phone_key, now_ms).await? {
        return Err(ApiError::unauthorized());
    }
    let user = state
        .store
        .user_by_phone_key(&phone_key)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let identity = parse_ec_public_key(&user.identity_key, "identity_key")
        .map_err(|_| ApiError::unauthorized())?;
    let message = signing::auth_message(&nonce, phone_hash.as_str());
    if signature.len() != privcomm_protocol::limits::SIGNATURE_LEN
        || !identity.verify_signature(&message, &signature)
    {
        return Err(ApiError::unauthorized());
    }
    let token = state
        .tokens
        .issue_for(user.id, user.generation, state.clock.now_secs())
        .map_err(|_| ApiError::new(ErrorCode::Internal, "could not issue token"))?;
    Ok(TokenResponse {
        token,
        expires_in: TOKEN_TTL_SECS,
        user_id: user.id,
    })
}
