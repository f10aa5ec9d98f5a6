//! The relay's REST API (docs/PROTOCOL.md), over reqwest with rustls.

use std::time::Duration;

use privcomm_protocol::rest::{
    ChallengeRequest, ChallengeResponse, HealthResponse, PreKeyBundleResponse, PreKeyCountResponse,
    PreKeyUploadRequest, RegisterRequest, RegisterResponse, RegistrationLockRequest,
    SendMessageRequest, SendMessageResponse, TokenRequest, TokenResponse, TurnCredentialsResponse,
    VerificationRequest, VerificationResponse,
};
use privcomm_protocol::{Base64String, ErrorBody, ErrorCode};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;
use uuid::Uuid;

use crate::error::{bounded_text, describe_json_error, CoreError, CoreResult};

/// Largest response body read from the relay; anything longer is a protocol violation.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one relay's REST API. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RelayApi {
    http: reqwest::Client,
    base: Url,
}

impl RelayApi {
    /// A client for the relay at `base_url` (`http://` or `https://`).
    pub fn new(base_url: &str) -> CoreResult<Self> {
        let base = Url::parse(base_url)
            .map_err(|e| CoreError::InvalidArgument(format!("relay URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(CoreError::InvalidArgument(
                "relay URL must be http:// or https:// with a host".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| CoreError::Network(e.to_string()))?;
        Ok(Self { http, base })
    }

    /// The relay's WebSocket URL (`ws://…/ws` or `wss://…/ws`).
    pub fn ws_url(&self) -> Url {
        let mut url = self.base.clone();
        // Both schemes are valid for a URL with a host, so this cannot fail.
        let _ = url.set_scheme(if self.base.scheme() == "https" {
            "wss"
        } else {
            "ws"
        });
        url.set_path("/ws");
        url.set_query(None);
        url
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> CoreResult<RequestBuilder> {
        let url = self
            .base
            .join(path)
            .map_err(|e| CoreError::InvalidArgument(format!("path: {e}")))?;
        let builder = self.http.request(method, url);
        Ok(match token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        })
    }

    async fn call<T: DeserializeOwned>(&self, builder: RequestBuilder) -> CoreResult<T> {
        let response = builder.send().await.map_err(network)?;
        let status = response.status();
        let body = read_limited(response).await?;
        decode_answer(status.as_u16(), &body)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &B,
    ) -> CoreResult<T> {
        self.call(self.request(Method::POST, path, token)?.json(body))
            .await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, token: &str) -> CoreResult<T> {
        self.call(self.request(Method::GET, path, Some(token))?)
            .await
    }

    /// `GET /health`.
    pub async fn health(&self) -> CoreResult<HealthResponse> {
        self.call(self.request(Method::GET, "/health", None)?).await
    }

    /// `POST /auth/challenge`: a fresh single-use nonce for `phone_hash`.
    pub async fn challenge(&self, phone_hash: &str) -> CoreResult<Vec<u8>> {
        let response: ChallengeResponse = self
            .post(
                "/auth/challenge",
                None,
                &ChallengeRequest {
                    phone_hash: phone_hash.to_owned(),
                },
            )
            .await?;
        response
            .nonce
            .decode("nonce")
            .map_err(|e| CoreError::BadRelayResponse(e.to_string()))
    }

    /// `POST /api/v1/verification`: has the relay send a code to `number` (E.164);
    /// returns the verification session and the seconds the code stays valid.
    pub async fn request_verification(
        &self,
        number: &str,
        locale: Option<&str>,
    ) -> CoreResult<VerificationResponse> {
        let response: VerificationResponse = self
            .post(
                "/api/v1/verification",
                None,
                &VerificationRequest {
                    number: number.to_owned(),
                    locale: locale.map(str::to_owned),
                },
            )
            .await
            .map_err(account_error)?;
        Ok(response)
    }

    /// `POST /api/v1/register`.
    pub async fn register(&self, request: &RegisterRequest) -> CoreResult<RegisterResponse> {
        self.post("/api/v1/register", None, request)
            .await
            .map_err(account_error)
    }

    /// `PUT /api/v1/account/registration-lock` with the lock token.
    pub async fn set_registration_lock(&self, token: &str, lock: &[u8]) -> CoreResult<()> {
        let request = RegistrationLockRequest {
            token: Base64String::encode(lock),
        };
        self.call_no_content(
            self.request(
                Method::PUT,
                "/api/v1/account/registration-lock",
                Some(token),
            )?
            .json(&request),
        )
        .await
    }

    /// `DELETE /api/v1/account/registration-lock`.
    pub async fn remove_registration_lock(&self, token: &str) -> CoreResult<()> {
        self.call_no_content(self.request(
            Method::DELETE,
            "/api/v1/account/registration-lock",
            Some(token),
        )?)
        .await
    }

    async fn call_no_content(&self, builder: RequestBuilder) -> CoreResult<()> {
        let response = builder.send().await.map_err(network)?;
        let status = response.status().as_u16();
        let body = read_limited(response).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(relay_error(status, &body))
        }
    }

    /// `POST /auth/token`.
    pub async fn token(&self, request: &TokenRequest) -> CoreResult<TokenResponse> {
        self.post("/auth/token", None, request).await
    }

    /// `GET /keys/{phone_hash}`: a bundle, claiming one of the user's one-time prekeys.
    pub async fn bundle(&self, token: &str, phone_hash: &str) -> CoreResult<PreKeyBundleResponse> {
        if privcomm_protocol::PhoneHash::parse(phone_hash).is_err() {
            return Err(CoreError::InvalidArgument(
                "phone hash must be 64 lowercase hex".into(),
            ));
        }
        self.get(&format!("/keys/{phone_hash}"), token).await
    }

    /// `GET /api/v1/prekeys/count`.
    pub async fn prekey_count(&self, token: &str) -> CoreResult<u64> {
        let response: PreKeyCountResponse = self.get("/api/v1/prekeys/count", token).await?;
        Ok(response.one_time_prekeys)
    }

    /// `PUT /api/v1/prekeys`; returns the relay's unclaimed one-time prekey count.
    pub async fn upload_prekeys(
        &self,
        token: &str,
        request: &PreKeyUploadRequest,
    ) -> CoreResult<u64> {
        let response: PreKeyCountResponse = self
            .call(
                self.request(Method::PUT, "/api/v1/prekeys", Some(token))?
                    .json(request),
            )
            .await?;
        Ok(response.one_time_prekeys)
    }

    /// `POST /api/v1/messages`; returns the relay's id for the message.
    pub async fn send_message(
        &self,
        token: &str,
        request: &SendMessageRequest,
    ) -> CoreResult<Uuid> {
        let response: SendMessageResponse =
            self.post("/api/v1/messages", Some(token), request).await?;
        Ok(response.id)
    }

    /// `GET /api/v1/turn-credentials`.
    pub async fn turn_credentials(&self, token: &str) -> CoreResult<TurnCredentialsResponse> {
        self.get("/api/v1/turn-credentials", token).await
    }
}

/// The typed error of a verification or registration refusal: a wrong or expired code, a
/// registration lock, a rate limit, a malformed number; other refusals stay `Relay`.
pub fn account_error(err: CoreError) -> CoreError {
    let CoreError::Relay {
        code: Some(code),
        retry_after,
        message,
        ..
    } = &err
    else {
        return err;
    };
    let retry_after_secs = retry_after.unwrap_or(60);
    match code {
        ErrorCode::InvalidCode => CoreError::InvalidCode,
        ErrorCode::CodeExpired => CoreError::CodeExpired,
        ErrorCode::RegistrationLocked => CoreError::RegistrationLocked { retry_after_secs },
        ErrorCode::RateLimited => CoreError::RateLimited { retry_after_secs },
        ErrorCode::InvalidPhoneNumber => CoreError::InvalidArgument(message.clone()),
        _ => err,
    }
}

fn network(err: reqwest::Error) -> CoreError {
    // reqwest's messages name the URL but never headers, so no token leaks here.
    CoreError::Network(err.without_url().to_string())
}

async fn read_limited(mut response: Response) -> CoreResult<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(network)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(CoreError::BadRelayResponse(
                "response body too large".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The relay's answer with HTTP `status` and `body`: the expected JSON on success, else
/// the relay's error. Every answer is untrusted input and is read only through here.
pub fn decode_answer<T: DeserializeOwned>(status: u16, body: &[u8]) -> CoreResult<T> {
    if (200..300).contains(&status) {
        serde_json::from_slice(body).map_err(|e| {
            CoreError::BadRelayResponse(format!(
                "unexpected response body: {}",
                describe_json_error(&e)
            ))
        })
    } else {
        Err(relay_error(status, body))
    }
}

/// The relay's error answer as a typed error (the code, when the body carries one; its
/// explanation cut to `MAX_UNTRUSTED_TEXT_BYTES`).
pub fn relay_error(status: u16, body: &[u8]) -> CoreError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => CoreError::Relay {
            status,
            code: Some(error.error),
            message: bounded_text(&error.message),
            retry_after: error.retry_after,
        },
        Err(_) => CoreError::Relay {
            status,
            code: None,
            message: format!("HTTP {status} without an error body"),
            retry_after: None,
        },
    }
}
