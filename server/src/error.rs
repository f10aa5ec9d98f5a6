//! Errors of the REST API and their JSON form `{"error": code, "message": text}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use privcomm_protocol::{Base64Error, ErrorBody, ErrorCode, PhoneHashError};

use crate::store::StoreError;

/// Longest error message the relay sends, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 200;

/// A failed request: a code, its HTTP status and a human message without secrets.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable text.
    pub message: String,
    /// Seconds to wait before retrying (rate limits).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a message, cut to `MAX_ERROR_MESSAGE_BYTES`: parser messages can quote
    /// the client's input, and answers must not grow with it.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            let mut end = MAX_ERROR_MESSAGE_BYTES - '…'.len_utf8();
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        Self {
            code,
            message,
            retry_after: None,
        }
    }

    /// The generic 401: deliberately says nothing about which check failed.
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "authentication failed")
    }

    /// HTTP status for a code.
    pub fn status(code: ErrorCode) -> StatusCode {
        match code {
            ErrorCode::MalformedJson
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidBase64
            | ErrorCode::InvalidPhoneHash
            | ErrorCode::InvalidKey
            | ErrorCode::BadSignature
            | ErrorCode::DuplicateKeyId
            | ErrorCode::TooManyPrekeys
            | ErrorCode::UnknownFrameType => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPhoneNumber => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidNonce | ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidCode => StatusCode::FORBIDDEN,
            ErrorCode::CodeExpired | ErrorCode::StaleRecipient => StatusCode::GONE,
            ErrorCode::RegistrationLocked => StatusCode::LOCKED,
            ErrorCode::CodeDeliveryFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::VerificationUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::AlreadyRegistered => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RateLimited | ErrorCode::MailboxFull => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TurnNotConfigured
            | ErrorCode::TooManyConnections
            | ErrorCode::Unavailable
            | ErrorCode::DatabaseUnavailable
            | ErrorCode::StorageFull => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<Base64Error> for ApiError {
    fn from(err: Base64Error) -> Self {
        Self::new(ErrorCode::InvalidBase64, err.to_string())
    }
}

impl From<PhoneHashError> for ApiError {
    fn from(err: PhoneHashError) -> Self {
        Self::new(ErrorCode::InvalidPhoneHash, err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => Self::new(ErrorCode::Internal, "unexpected conflict"),
            StoreError::MissingReference => Self::new(ErrorCode::NotFound, "no such user"),
            StoreError::MailboxFull => {
                let mut err = Self::new(
                    ErrorCode::MailboxFull,
                    "the recipient's mailbox on this relay is full; retry later",
                );
                err.retry_after = Some(60);
                err
            }
            StoreError::TooManyPrekeys => Self::new(
                ErrorCode::TooManyPrekeys,
                "the relay would hold more one-time prekeys than allowed",
            ),
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                let mut err = Self::new(
                    ErrorCode::DatabaseUnavailable,
                    "the relay's database is unavailable; retry shortly",
                );
                err.retry_after = Some(5);
                err
            }
            StoreError::Database(e) => {
                tracing::error!(error = %e, "database error");
                Self::new(ErrorCode::Internal, "internal error")
            }
            StoreError::Setup(e) => {
                tracing::error!(error = %e, "storage setup error");
                Self::new(ErrorCode::Internal, "internal error")
            }
            StoreError::WriterStopped => Self::new(ErrorCode::Unavailable, "shutting down"),
            StoreError::StaleRecipient => Self::new(
                ErrorCode::StaleRecipient,
                "the recipient registered again; fetch their keys and encrypt anew",
            ),
            StoreError::CodeUsed => Self::new(
                ErrorCode::InvalidCode,
                "the verification code was used or replaced; request a new one",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = Self::status(self.code);
        let retry_after = self.retry_after;
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.code,
                message: self.message,
                retry_after,
            }),
        )
            .into_response();
        if let Some(secs) = retry_after {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
