//! `POST /api/v1/register`: a number proven by its verification code becomes an account, or
//! an account moves to a new device (a lost phone).
//!
//! A number registered again keeps its user id, so contacts keep reaching it; it takes the
//! new identity and prekeys and a new generation (tokens of the old device stop working),
//! and loses what the old device could only have read: its one-time prekeys and its
//! undelivered messages. Contacts see the new identity key (`IdentityChanged`) on their next
//! message. An account with a registration lock moves only with the PIN as well, until it
//! has been inactive for 7 days.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use privcomm_protocol::limits::{
    MAX_ONE_TIME_PREKEYS_PER_UPLOAD, REGISTRATION_LOCK_ATTEMPTS, REGISTRATION_LOCK_INACTIVE_DAYS,
    REGISTRATION_LOCK_WINDOW_SECS, VERIFICATION_CODE_ATTEMPTS,
};
use privcomm_protocol::rest::{RegisterRequest, RegisterResponse};
use privcomm_protocol::{signing, ErrorCode, PhoneHash};
use uuid::Uuid;

use crate::codes::looks_like_code;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::keys;
use crate::pepper::Pepper;
use crate::routes::account::lock_token;
use crate::routes::verification::looks_like_session;
use crate::state::AppState;
use crate::store::{Account, CodeCheck, CodeProof, LockChange, NewUser, StoreError, DAY_MS};

/// Registers the number of `phone_hash` with its identity and prekeys, given the code sent
/// to it.
pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    let (phone_hash, user) = validate(&req, &state.pepper)?;
    let lock = req.registration_lock.as_ref().map(lock_token).transpose()?;
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
    if !looks_like_code(&req.verification_code) || !looks_like_session(&req.verification_session) {
        return Err(invalid_code());
    }

    let proof = CodeProof {
        session_key: state.pepper.session_key(&req.verification_session),
        code_hash: state
            .pepper
            .code_hash(&user.phone_key, &req.verification_code),
        phone_key: user.phone_key.clone(),
    };
    match state
        .store
        .check_verification(&proof, now, VERIFICATION_CODE_ATTEMPTS)
        .await?
    {
        CodeCheck::Valid => {}
        CodeCheck::Wrong | CodeCheck::Missing => return Err(invalid_code()),
        CodeCheck::Expired => {
            return Err(ApiError::new(
                ErrorCode::CodeExpired,
                "the verification code expired or was entered wrong too often; request a new one",
            ))
        }
    }

    let user_id =
        match state.store.account_by_phone_key(&user.phone_key).await? {
            None => match state.store.create_user(&user, now, &proof).await {
                Ok(()) => {
                    tracing::info!(user_id = %user.id, "user registered");
                    user.id
                }
                // Registered by a concurrent request with the same proof: ask again.
                Err(StoreError::Conflict) => return Err(ApiError::new(
                    ErrorCode::AlreadyRegistered,
                    "this number was registered meanwhile; request a new code to register again",
                )),
                Err(e) => return Err(e.into()),
            },
            Some(account) => {
                let keep =
                    check_lock(&state, &account, lock.as_deref().map(Vec::as_slice), now).await?;
                state
                    .store
                    .replace_identity(account.id, &user, now, keep, &proof)
                    .await?;
                // The new device's connections (a later generation) stay.
                state.connections.displace(account.id, account.generation);
                state.bus.displace(account.id, account.generation);
                tracing::info!(user_id = %account.id, "user registered on a new device");
                account.id
            }
        };
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            status: "registered".into(),
            user_id,
        }),
    ))
}

fn invalid_code() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCode,
        "the verification code is wrong, or none was sent to this number",
    )
}

/// When an account's registration lock lapses: 7 whole days after the day it was last seen.
pub fn lock_lapses_at(last_seen_day: i64) -> i64 {
    let inactive = i64::try_from(REGISTRATION_LOCK_INACTIVE_DAYS).unwrap_or(i64::MAX);
    last_seen_day
        .saturating_add(DAY_MS)
        .saturating_add(inactive.saturating_mul(DAY_MS))
}

/// Whether a re-registration of `account` may go ahead, and what becomes of its lock.
/// Without a lock, or once it has lapsed, it goes ahead (and the lock goes). With an active
/// lock it needs the lock token: without one the answer is `registration_locked` with the
/// time until the lock lapses; a wrong one is counted, and after
/// `REGISTRATION_LOCK_ATTEMPTS` in a day further tries are refused for the rest of the day.
async fn check_lock(
    state: &AppState,
    account: &Account,
    token: Option<&[u8]>,
    now: i64,
) -> Result<LockChange, ApiError> {
    let Some(verifier) = &account.lock_verifier else {
        return Ok(LockChange::Clear);
    };
    // An account connected right now is in use, whatever day it connected.
    let last_seen = if state.connections.is_connected(account.id) {
        crate::store::day_of(now)
    } else {
        account.last_seen
    };
    let lapses_at = lock_lapses_at(last_seen);
    if now >= lapses_at {
        return Ok(LockChange::Clear);
    }
    let window_ms = i64::try_from(REGISTRATION_LOCK_WINDOW_SECS * 1000).unwrap_or(i64::MAX);
    let Some(token) = token else {
        return Err(locked(
            "this number's account has a registration lock: enter its PIN",
            secs_until(lapses_at, now),
        ));
    };
    // The attempt is taken before the comparison: parallel guesses cannot exceed the limit.
    if !state
        .store
        .take_lock_attempt(account.id, now, window_ms, REGISTRATION_LOCK_ATTEMPTS)
        .await?
    {
        let window_ends = if account.lock_failed_at > now.saturating_sub(window_ms) {
            account.lock_failed_at.saturating_add(window_ms)
        } else {
            now.saturating_add(window_ms)
        };
        return Err(too_many_pins(secs_until(window_ends, now)));
    }
    let presented = state.pepper.lock_verifier(account.id, token);
    if same_bytes(&presented, verifier) {
        return Ok(LockChange::Keep);
    }
    tracing::info!(user_id = %account.id, "wrong registration lock PIN");
    Err(locked(
        "wrong registration lock PIN",
        secs_until(lapses_at, now),
    ))
}

fn locked(message: &str, retry_after: u64) -> ApiError {
    let mut err = ApiError::new(ErrorCode::RegistrationLocked, message);
    err.retry_after = Some(retry_after);
    err
}

fn too_many_pins(retry_after: u64) -> ApiError {
    let mut err = ApiError::new(
        ErrorCode::RateLimited,
        "too many wrong registration lock PINs; try again later",
    );
    err.retry_after = Some(retry_after);
    err
}

/// Whole seconds from `now` until `at` (Unix ms), at least 1.
fn secs_until(at: i64, now: i64) -> u64 {
    let ms = at.saturating_sub(now).max(0);
    u64::try_from(ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) > 0))
        .unwrap_or(0)
        .max(1)
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_lapse_seven_whole_days_after_the_last_day_seen() {
        let day = 20_000 * DAY_MS;
        assert_eq!(lock_lapses_at(day), day + 8 * DAY_MS);
        assert_eq!(secs_until(day + 1_500, day), 2);
        assert_eq!(secs_until(day, day + 5), 1);
    }
}
