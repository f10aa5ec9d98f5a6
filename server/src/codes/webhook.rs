//! The `webhook` code sender: POSTs `{"number", "code", "locale"}` as JSON to an operator's
//! URL, signed, so an operator connects any SMS provider with a few lines of their own.
//!
//! The signature header is `X-Privcomm-Signature: t=<unix seconds>,v1=<hex>` where the hex
//! is HMAC-SHA256(secret, "<t>." ‖ body): the receiver recomputes it over the raw body and
//! refuses an old `t`, so a captured request can be neither forged nor replayed later.
//! Connection failures, timeouts, 429 and 5xx answers are retried (three attempts in all,
//! 250 ms then 500 ms apart); other answers are final.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{CodeMessage, CodeSendError, CodeSender};
use crate::clock::Clock as _;
use crate::config::{Config, ConfigError};
use crate::secrets::MIN_SECRET_LEN;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-privcomm-signature";
/// Attempts per code.
const ATTEMPTS: u32 = 3;
/// Wait before the second attempt; doubled before each later one.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Where and how to post codes.
#[derive(Clone)]
pub struct WebhookSettings {
    /// The operator's endpoint (`https://…`; `http://` only on loopback or in dev mode).
    pub url: reqwest::Url,
    /// Key of the signature (at least 32 bytes).
    pub secret: Zeroizing<Vec<u8>>,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookSettings {
    /// The settings in `config`, checked.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let url_text = config.code_webhook_url.as_deref().unwrap_or("");
        let url = reqwest::Url::parse(url_text).map_err(|_| ConfigError {
            setting: "PRIVCOMM_CODE_WEBHOOK_URL",
            problem: "must be an absolute http(s) URL".into(),
        })?;
        let loopback = url.host_str().is_some_and(|host| {
            host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match url.scheme() {
            "https" => {}
            "http" if loopback || config.dev_mode => {}
            _ => {
                return Err(ConfigError {
                    setting: "PRIVCOMM_CODE_WEBHOOK_URL",
                    problem: "must use https (http only to a loopback address, or with \
                              PRIVCOMM_DEV_MODE=1): the body carries the code"
                        .into(),
                })
            }
        }
        let secret = config.code_webhook_secret.as_deref().unwrap_or("");
        if secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError {
                setting: "PRIVCOMM_CODE_WEBHOOK_SECRET",
                problem: format!("must be at least {MIN_SECRET_LEN} bytes"),
            });
        }
        if !(100..=60_000).contains(&config.code_webhook_timeout_ms) {
            return Err(ConfigError {
                setting: "PRIVCOMM_CODE_WEBHOOK_TIMEOUT_MS",
                problem: "must be between 100 and 60000".into(),
            });
        }
        Ok(Self {
            url,
            secret: Zeroizing::new(secret.as_bytes().to_vec()),
            timeout: Duration::from_millis(config.code_webhook_timeout_ms),
        })
    }
}

/// Posts codes to the operator's endpoint.
pub struct WebhookSender {
    settings: WebhookSettings,
    client: reqwest::Client,
}

#[derive(Serialize)]
struct Body<'a> {
    number: &'a str,
    code: &'a str,
    locale: &'a str,
}

/// The signature header's value for `body` sent at `unix_secs`.
pub fn signature_header(secret: &[u8], unix_secs: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_secs},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

impl WebhookSender {
    /// A sender for `settings`.
    pub fn new(settings: WebhookSettings) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            // A redirect would carry the code to wherever the gateway points.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { settings, client })
    }

    async fn attempt(&self, body: &[u8]) -> Result<reqwest::StatusCode, reqwest::Error> {
        let now = crate::clock::SystemClock.now_secs();
        let response = self
            .client
            .post(self.settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                signature_header(&self.settings.secret, now, body),
            )
            .body(body.to_vec())
            .send()
            .await?;
        Ok(response.status())
    }
}

#[async_trait]
impl CodeSender for WebhookSender {
    async fn send(&self, message: &CodeMessage) -> Result<(), CodeSendError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&Body {
                number: message.number.as_str(),
                code: &message.code,
                locale: &message.locale,
            })
            .unwrap_or_default(),
        );
        let mut backoff = FIRST_BACKOFF;
        let mut last = CodeSendError::Unreachable {
            attempts: 0,
            reason: "not tried".into(),
        };
        for attempt in 1..=ATTEMPTS {
            match self.attempt(&body).await {
                Ok(status) if status.is_success() => return Ok(()),
                Ok(status) => {
                    tracing::warn!(
                        attempt,
                        status = status.as_u16(),
                        "the code gateway refused a code"
                    );
                    last = CodeSendError::Rejected {
                        status: status.as_u16(),
                        attempts: attempt,
                    };
                    let retryable = status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                    if !retryable {
                        return Err(last);
                    }
                }
                Err(e) => {
                    // Without the URL: an operator's URL may carry an API key.
                    let reason = if e.is_timeout() {
                        format!("no answer within {} ms", self.settings.timeout.as_millis())
                    } else {
                        e.without_url().to_string()
                    };
                    tracing::warn!(attempt, reason = %reason, "the code gateway did not answer");
                    last = CodeSendError::Unreachable {
                        attempts: attempt,
                        reason,
                    };
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
        }
        Err(last)
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_time_and_body() {
        let a = signature_header(b"k", 100, b"{}");
        assert!(a.starts_with("t=100,v1="));
        assert_eq!(a.len(), "t=100,v1=".len() + 64);
        assert_ne!(a, signature_header(b"k", 101, b"{}"));
        assert_ne!(a, signature_header(b"k", 100, b"{ }"));
        assert_ne!(a, signature_header(b"j", 100, b"{}"));
    }

    #[test]
    fn settings_are_checked() {
        let mut config = Config::with_defaults("/tmp/unused");
        config.code_webhook_url = Some("https://sms.example/hook".into());
        config.code_webhook_secret = Some("s".repeat(32));
        assert!(WebhookSettings::from_config(&config).is_ok());
        config.code_webhook_url = Some("http://sms.example/hook".into());
        assert!(WebhookSettings::from_config(&config).is_err());
        config.code_webhook_url = Some("http://127.0.0.1:9/hook".into());
        assert!(WebhookSettings::from_config(&config).is_ok());
        config.code_webhook_secret = Some("short".into());
        assert!(WebhookSettings::from_config(&config).is_err());
        config.code_webhook_secret = Some("s".repeat(32));
        config.code_webhook_url = Some("not a url".into());
        assert!(WebhookSettings::from_config(&config).is_err());
    }
}
