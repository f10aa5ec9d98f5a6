//! `POST /api/v1/register`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use privcomm_protocol::limits::MAX_ONE_TIME_PREKEYS_PER_UPLOAD;
use privcomm_protocol::rest::{RegisterRequest, RegisterResponse};
use privcomm_protocol::{signing, ErrorCode, PhoneHash};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::keys;
use crate::pepper::Pepper;
use crate::state::AppState;
use crate::store::{NewUser, StoreError};

/// Registers a new phone hash with its identity and prekeys. A taken phone hash is never
/// overwritten (409): key changes go through the authenticated prekey endpoint.
pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    let (phone_hash, user) = validate(&req, &state.pepper)?;
    let nonce = req.nonce.decode("nonce")?;
    let signature = req.signature.decode("signature")?;
    let identity = keys::parse_ec_public_key(&user.identity_key, "identity_key")?;
    let now = state.clock.now_ms();
    if !state.store.take_nonce(&nonce, &user.phone_key, now).await? {
        return Err(ApiError::new(
            ErrorCode::InvalidNonce,
            "nonce is unknown, used, expired or issued for another phone_hash",
        ));
    }
    let message = signing::register_message(&nonce, phone_hash.as_str());
    keys::verify_signature(&identity, &message, &signature, "signature")?;
    match state.store.create_user(&user, now).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => {
            return Err(ApiError::new(
                ErrorCode::AlreadyRegistered,
                "this phone_hash is already registered",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user_id = %user.id, "user registered");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            status: "registered".into(),
            user_id: user.id,
        }),
    ))
}

/// Checks everything that needs no storage: formats, keys and prekey signatures. Returns the
/// phone hash (for the signature) and the user as stored (under its peppered phone key).
pub fn validate(req: &RegisterRequest, pepper: &Pepper) -> Result<(PhoneHash, NewUser), ApiError> {
    let phone_hash = PhoneHash::parse(&req.phone_hash)?;
    keys::check_registration_id(req.registration_id)?;
    let identity_key = req.identity_key.decode("identity_key")?;
    let identity = keys::parse_ec_public_key(&identity_key, "identity_key")?;
    if req.one_time_prekeys.len() > MAX_ONE_TIME_PREKEYS_PER_UPLOAD {
        return Err(ApiError::new(
            ErrorCode::TooManyPrekeys,
            format!("at most {MAX_ONE_TIME_PREKEYS_PER_UPLOAD} one-time prekeys per request"),
        ));
    }
    let user = NewUser {
        id: Uuid::new_v4(),
        phone_key: pepper.phone_key(&phone_hash),
        registration_id: req.registration_id,
        signed_prekey: keys::signed_ec_prekey(&req.signed_prekey, &identity)?,
        kyber_prekey: keys::signed_kyber_prekey(&req.kyber_prekey, &identity)?,
        one_time_prekeys: keys::one_time_prekeys(&req.one_time_prekeys)?,
        identity_key,
    };
    Ok((phone_hash, user))
}
