//! Prekey bundles (`GET /keys/{phone_hash}`) and prekey upkeep (`/api/v1/prekeys`).

use axum::extract::{Path, State};
use axum::Json;
use libsignal_core::curve::PublicKey;
use privcomm_protocol::limits::{MAX_ONE_TIME_PREKEYS_PER_UPLOAD, MAX_STORED_ONE_TIME_PREKEYS};
use privcomm_protocol::rest::{
    OneTimePreKey, PreKeyBundleResponse, PreKeyCountResponse, PreKeyUploadRequest, SignedPreKey,
};
use privcomm_protocol::{Base64String, ErrorCode, PhoneHash};

use crate::error::ApiError;
use crate::extract::{ApiJson, AuthUser};
use crate::keys;
use crate::state::AppState;
use crate::store::{PreKeyUpdate, StoredSignedPreKey};

fn signed(key: StoredSignedPreKey) -> SignedPreKey {
    SignedPreKey {
        key_id: key.key_id,
        public_key: Base64String::encode(&key.public_key),
        signature: Base64String::encode(&key.signature),
    }
}

/// Returns a user's bundle, claiming one one-time prekey for the caller unless the caller
/// fetched this user's bundle within the repeat window or the user's one-time prekeys are
/// being handed out faster than their per-hour budget. Lookups count against the caller's
/// hourly budget, so numbers cannot be enumerated quickly.
pub async fn bundle(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    Path(phone_hash): Path<String>,
) -> Result<Json<PreKeyBundleResponse>, ApiError> {
    let phone_key = state.pepper.phone_key(&PhoneHash::parse(&phone_hash)?);
    state.rate_limits.check_key_lookup(caller).await?;
    let take_one_time = state.prekey_claims.first_within_window(
        caller,
        phone_key.as_str(),
        std::time::Instant::now(),
    ) && state.rate_limits.take_prekey_of(phone_key.as_str()).await;
    let bundle = state
        .store
        .claim_bundle(&phone_key, state.clock.now_ms(), take_one_time)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such user"))?;
    Ok(Json(PreKeyBundleResponse {
        user_id: bundle.user_id,
        registration_id: bundle.registration_id,
        identity_key: Base64String::encode(&bundle.identity_key),
        signed_prekey: signed(bundle.signed_prekey),
        kyber_prekey: signed(bundle.kyber_prekey),
        one_time_prekey: bundle.one_time_prekey.map(|k| OneTimePreKey {
            key_id: k.key_id,
            public_key: Base64String::encode(&k.public_key),
        }),
    }))
}

/// The caller's unclaimed one-time prekey count.
pub async fn count(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<PreKeyCountResponse>, ApiError> {
    let one_time_prekeys = state.store.count_one_time_prekeys(user).await?;
    Ok(Json(PreKeyCountResponse { one_time_prekeys }))
}

fn too_many_prekeys() -> ApiError {
    ApiError::new(
        ErrorCode::TooManyPrekeys,
        format!("at most {MAX_ONE_TIME_PREKEYS_PER_UPLOAD} one-time prekeys per request"),
    )
}

/// Checks an upload against the uploader's identity key: formats, ids and signatures.
pub fn validate_upload(
    req: &PreKeyUploadRequest,
    identity: &PublicKey,
) -> Result<PreKeyUpdate, ApiError> {
    if req.one_time_prekeys.len() > MAX_ONE_TIME_PREKEYS_PER_UPLOAD {
        return Err(too_many_prekeys());
    }
    Ok(PreKeyUpdate {
        signed_prekey: req
            .signed_prekey
            .as_ref()
            .map(|k| keys::signed_ec_prekey(k, identity))
            .transpose()?,
        kyber_prekey: req
            .kyber_prekey
            .as_ref()
            .map(|k| keys::signed_kyber_prekey(k, identity))
            .transpose()?,
        one_time_prekeys: keys::one_time_prekeys(&req.one_time_prekeys)?,
    })
}

/// Uploads one-time prekeys and/or replaces the signed and Kyber prekeys.
pub async fn upload(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<PreKeyUploadRequest>,
) -> Result<Json<PreKeyCountResponse>, ApiError> {
    if req.one_time_prekeys.len() > MAX_ONE_TIME_PREKEYS_PER_UPLOAD {
        return Err(too_many_prekeys());
    }
    let identity = state
        .store
        .user_by_id(user)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let identity = keys::parse_ec_public_key(&identity.identity_key, "identity_key")?;
    let update = validate_upload(&req, &identity)?;
    let one_time_prekeys = state
        .store
        .update_prekeys(
            user,
            &update,
            state.clock.now_ms(),
            MAX_STORED_ONE_TIME_PREKEYS,
        )
        .await?;
    Ok(Json(PreKeyCountResponse { one_time_prekeys }))
}
