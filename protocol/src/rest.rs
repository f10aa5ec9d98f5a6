//! REST request and response bodies.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::b64::Base64String;

/// `GET /health` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `"healthy"`, `"degraded"` (serving, but the routing bus is down: messages between
    /// instances arrive by rescan, later) or `"unhealthy"`.
    pub status: String,
    /// `"ok"` or `"unreachable"`.
    pub database: String,
    /// The routing bus: `"in_process"` (one instance), `"connected"` or `"disconnected"`.
    /// Absent from relays older than the bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
}

/// `POST /auth/challenge` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRequest {
    /// The phone hash the nonce will be bound to.
    pub phone_hash: String,
}

/// `POST /auth/challenge` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeResponse {
    /// 32 random bytes, single use.
    pub nonce: Base64String,
    /// Seconds until the nonce expires.
    pub expires_in: u64,
}

/// A signed EC or Kyber prekey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPreKey {
    /// Client-chosen id (24 bits).
    pub key_id: u32,
    /// Serialized public key.
    pub public_key: Base64String,
    /// Identity key's XEdDSA signature over `public_key`'s bytes.
    pub signature: Base64String,
}

/// An unsigned one-time EC prekey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneTimePreKey {
    /// Client-chosen id (24 bits).
    pub key_id: u32,
    /// Serialized public key (33 bytes).
    pub public_key: Base64String,
}

/// `POST /api/v1/verification` request: have a code sent to a number. The relay sees the
/// number for this request only (to hand it to the SMS gateway) and stores none of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRequest {
    /// The phone number in E.164 form (`+14155550123`).
    pub number: String,
    /// The language the code's message should be in (a BCP 47 tag); `en` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// `POST /api/v1/verification` response (202).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationResponse {
    /// The verification session: 32 hex characters that only the requester knows. The
    /// registration presents it with the code, so nobody else's requests replace or use up
    /// this code.
    pub session: String,
    /// Seconds the code stays valid.
    pub expires_in: u64,
}

/// `PUT /api/v1/account/registration-lock` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationLockRequest {
    /// The lock token: Argon2id of the PIN with the phone number as salt (32 bytes). The
    /// relay stores only a keyed hash of it.
    pub token: Base64String,
}

/// `POST /api/v1/register` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// SHA-256 of the phone number, lowercase hex.
    pub phone_hash: String,
    /// libsignal registration id (14 bits).
    pub registration_id: u32,
    /// Serialized identity public key (33 bytes).
    pub identity_key: Base64String,
    /// Nonce from `/auth/challenge` for this phone hash.
    pub nonce: Base64String,
    /// Identity key's signature over `signing::register_message(nonce, phone_hash)`.
    pub signature: Base64String,
    /// The signed EC prekey.
    pub signed_prekey: SignedPreKey,
    /// The Kyber1024 last-resort prekey.
    pub kyber_prekey: SignedPreKey,
    /// One-time EC prekeys.
    #[serde(default)]
    pub one_time_prekeys: Vec<OneTimePreKey>,
    /// The code sent to the number (`POST /api/v1/verification`).
    #[serde(default)]
    pub verification_code: String,
    /// The session of that verification request.
    #[serde(default)]
    pub verification_session: String,
    /// The registration lock token, when the number's account has a lock (see
    /// `RegistrationLockRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_lock: Option<Base64String>,
}

/// `POST /api/v1/register` response (201).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// Always `"registered"`.
    pub status: String,
    /// The relay's id for the new user.
    pub user_id: Uuid,
}

/// `POST /auth/token` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    /// The registered phone hash.
    pub phone_hash: String,
    /// Nonce from `/auth/challenge` for this phone hash.
    pub nonce: Base64String,
    /// Identity key's signature over `signing::auth_message(nonce, phone_hash)`.
    pub signature: Base64String,
}

/// `POST /auth/token` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// Bearer token (JWT, HS256).
    pub token: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// The authenticated user.
    pub user_id: Uuid,
}

/// `GET /keys/{phone_hash}` response: what a peer needs to start a Signal session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreKeyBundleResponse {
    /// The user's relay id (the `to` of messages for them).
    pub user_id: Uuid,
    /// libsignal registration id.
    pub registration_id: u32,
    /// Serialized identity public key.
    pub identity_key: Base64String,
    /// Current signed EC prekey.
    pub signed_prekey: SignedPreKey,
    /// Current Kyber1024 last-resort prekey.
    pub kyber_prekey: SignedPreKey,
    /// A one-time prekey claimed for this caller, or `null` when none are left.
    pub one_time_prekey: Option<OneTimePreKey>,
}

/// `GET /api/v1/prekeys/count` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreKeyCountResponse {
    /// Unclaimed one-time prekeys stored for the caller.
    pub one_time_prekeys: u64,
}

/// `PUT /api/v1/prekeys` request: every part optional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PreKeyUploadRequest {
    /// Replaces the signed EC prekey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_prekey: Option<SignedPreKey>,
    /// Replaces the Kyber last-resort prekey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kyber_prekey: Option<SignedPreKey>,
    /// More one-time prekeys; an id already stored is ignored (a retried upload is harmless).
    #[serde(default)]
    pub one_time_prekeys: Vec<OneTimePreKey>,
}

/// `POST /api/v1/messages` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessageRequest {
    /// Recipient's user id.
    pub to: Uuid,
    /// Sender-chosen message id; a resend with the same id is stored once.
    pub id: Uuid,
    /// Opaque end-to-end encrypted payload.
    pub payload: Base64String,
    /// The recipient's registration id as the sender's session knows it (see the WebSocket
    /// `send` frame); absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<u32>,
}

/// `POST /api/v1/messages` response (202).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessageResponse {
    /// The relay's id for the stored message.
    pub id: Uuid,
}

/// `GET /api/v1/turn-credentials` response (TURN REST API scheme, as coturn implements it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnCredentialsResponse {
    /// TURN/STUN URLs.
    pub urls: Vec<String>,
    /// `"<expiry unix time>:<user_id>"`.
    pub username: String,
    /// `base64(HMAC-SHA1(shared secret, username))`.
    pub credential: String,
    /// Seconds the credential is valid.
    pub ttl: u64,
}
