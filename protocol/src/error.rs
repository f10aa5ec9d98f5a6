//! The error body of every failed REST call, and the codes it may carry.

use serde::{Deserialize, Serialize};

/// Machine-readable error codes. The HTTP status for each is fixed by the relay and listed
/// in `docs/PROTOCOL.md`; WebSocket `error` frames use the same codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not JSON (400).
    MalformedJson,
    /// The JSON has the wrong shape: a missing field, a wrong type (400).
    InvalidRequest,
    /// A binary field is not valid base64 (400).
    InvalidBase64,
    /// `phone_hash` is not 64 lowercase hex characters (400).
    InvalidPhoneHash,
    /// A key has the wrong length or type byte, or an id is out of range (400).
    InvalidKey,
    /// A signature does not verify (400).
    BadSignature,
    /// A prekey id appears twice in one request (400).
    DuplicateKeyId,
    /// Too many one-time prekeys in one upload or in storage (400).
    TooManyPrekeys,
    /// A phone number is not in E.164 form: `+` and 8 to 15 digits, no leading zero (400).
    InvalidPhoneNumber,
    /// The verification code is wrong, or none was requested for this number (403).
    InvalidCode,
    /// The verification code expired or was guessed wrong too often; request a new one (410).
    CodeExpired,
    /// The number's account has a registration lock: registering again needs its PIN, or
    /// the account must have been inactive for 7 days (`retry_after` says when) (423).
    RegistrationLocked,
    /// The recipient registered again (a new phone) since the sender's session: fetch their
    /// new prekey bundle (410).
    StaleRecipient,
    /// The relay could not deliver the verification code (its SMS gateway failed) (502).
    CodeDeliveryFailed,
    /// The relay has no way to send verification codes configured (503).
    VerificationUnavailable,
    /// A registration nonce is unknown, used, expired or for another phone hash (401).
    InvalidNonce,
    /// Authentication failed: no or bad token, or a failed token request (401).
    Unauthorized,
    /// No such user (404).
    NotFound,
    /// The phone hash is already registered (409).
    AlreadyRegistered,
    /// The decoded payload is over the limit (413).
    PayloadTooLarge,
    /// The request body is not `application/json` (415).
    UnsupportedMediaType,
    /// Too many requests from this address or account (429).
    RateLimited,
    /// The recipient already holds as many undelivered messages or bytes as the relay
    /// keeps for one account; retry once they have fetched some (429).
    MailboxFull,
    /// The relay's storage is nearly full; sends are refused, acks still work (503).
    StorageFull,
    /// The request took too long to arrive or to answer (408).
    RequestTimeout,
    /// The endpoint exists but not with this method (405).
    MethodNotAllowed,
    /// Unknown WebSocket frame type (WebSocket only).
    UnknownFrameType,
    /// The relay has no TURN configuration (503).
    TurnNotConfigured,
    /// The relay is at its connection limit (503).
    TooManyConnections,
    /// The relay's database cannot be reached now (down, restarting, overloaded); nothing
    /// was stored or changed, retry later (503).
    DatabaseUnavailable,
    /// The relay is shutting down (503).
    Unavailable,
    /// Anything else; details are in the relay's log, not the response (500).
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidBase64 => "invalid_base64",
            Self::InvalidPhoneHash => "invalid_phone_hash",
            Self::InvalidKey => "invalid_key",
            Self::BadSignature => "bad_signature",
            Self::DuplicateKeyId => "duplicate_key_id",
            Self::TooManyPrekeys => "too_many_prekeys",
            Self::InvalidPhoneNumber => "invalid_phone_number",
            Self::InvalidCode => "invalid_code",
            Self::CodeExpired => "code_expired",
            Self::RegistrationLocked => "registration_locked",
            Self::CodeDeliveryFailed => "code_delivery_failed",
            Self::StaleRecipient => "stale_recipient",
            Self::VerificationUnavailable => "verification_unavailable",
            Self::InvalidNonce => "invalid_nonce",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::AlreadyRegistered => "already_registered",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited => "rate_limited",
            Self::MailboxFull => "mailbox_full",
            Self::StorageFull => "storage_full",
            Self::RequestTimeout => "request_timeout",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnknownFrameType => "unknown_frame_type",
            Self::TurnNotConfigured => "turn_not_configured",
            Self::TooManyConnections => "too_many_connections",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error": code, "message": human text}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub error: ErrorCode,
    /// Human-readable explanation; never contains secrets or payloads.
    pub message: String,
    /// Seconds until a retry can succeed (rate limits, registration locks), as in the
    /// `Retry-After` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde_name() {
        for code in [
            ErrorCode::MalformedJson,
            ErrorCode::BadSignature,
            ErrorCode::AlreadyRegistered,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnknownFrameType,
            ErrorCode::TurnNotConfigured,
            ErrorCode::MailboxFull,
            ErrorCode::StorageFull,
            ErrorCode::InvalidPhoneNumber,
            ErrorCode::InvalidCode,
            ErrorCode::CodeExpired,
            ErrorCode::RegistrationLocked,
            ErrorCode::CodeDeliveryFailed,
            ErrorCode::VerificationUnavailable,
            ErrorCode::StaleRecipient,
            ErrorCode::DatabaseUnavailable,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
