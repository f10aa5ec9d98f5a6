//! Verification codes: the 6-digit code that proves a registration comes from whoever holds
//! the phone number. The relay makes the code and keeps only a keyed hash of it; a
//! `CodeSender` delivers it. Operators plug in their SMS provider (Twilio, Vonage, a modem)
//! behind the `webhook` sender; `stdout` prints codes for development only.
//!
//! The phone number is in the relay's hands only while a code is being sent: it is handed to
//! the sender and never stored or logged.

pub mod inbox;
mod stdout;
mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use privcomm_protocol::limits::VERIFICATION_CODE_DIGITS;
use privcomm_protocol::PhoneNumber;
use rand::Rng;
use zeroize::Zeroizing;

pub use stdout::StdoutSender;
pub use webhook::{signature_header, WebhookSender, WebhookSettings, SIGNATURE_HEADER};

use crate::config::{Config, ConfigError};

/// One code to deliver.
pub struct CodeMessage {
    /// Where to send it.
    pub number: PhoneNumber,
    /// The code (digits).
    pub code: Zeroizing<String>,
    /// The language of the message, a BCP 47 tag (`en` when the client gave none).
    pub locale: String,
}

impl std::fmt::Debug for CodeMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeMessage")
            .field("locale", &self.locale)
            .finish_non_exhaustive()
    }
}

/// A code could not be delivered. The texts name no number and no code.
#[derive(Debug, thiserror::Error)]
pub enum CodeSendError {
    /// The gateway kept answering with an error status.
    #[error("the code gateway answered HTTP {status} (after {attempts} attempts)")]
    Rejected {
        /// The last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
    /// The gateway did not answer in time, or could not be reached.
    #[error("the code gateway could not be reached (after {attempts} attempts): {reason}")]
    Unreachable {
        /// Attempts made.
        attempts: u32,
        /// What went wrong on the last attempt (no body, no code).
        reason: String,
    },
    /// Writing the code to standard output failed.
    #[error("printing the code failed: {0}")]
    Stdout(#[from] std::io::Error),
}

/// Delivers verification codes.
#[async_trait]
pub trait CodeSender: Send + Sync + 'static {
    /// Delivers `message`, retrying as the sender sees fit; `Err` once it gives up.
    async fn send(&self, message: &CodeMessage) -> Result<(), CodeSendError>;
    /// The sender's kind, for logs (`webhook`, `stdout`, …).
    fn kind(&self) -> &'static str;
}

/// A fresh code: `VERIFICATION_CODE_DIGITS` uniformly random digits.
pub fn new_code() -> Zeroizing<String> {
    let max = 10u32.pow(VERIFICATION_CODE_DIGITS as u32);
    let n = rand::rng().random_range(0..max);
    Zeroizing::new(format!("{n:0width$}", width = VERIFICATION_CODE_DIGITS))
}

/// True if `code` has the shape of a code (so junk is refused before any lookup).
pub fn looks_like_code(code: &str) -> bool {
    code.len() == VERIFICATION_CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// The sender `config` asks for: `PRIVCOMM_CODE_SENDER` = `webhook` (with its URL and
/// secret) or `stdout` (only with `PRIVCOMM_DEV_MODE=1`); none when unset.
pub fn from_config(config: &Config) -> Result<Option<Arc<dyn CodeSender>>, ConfigError> {
    match config.code_sender.as_deref().unwrap_or("") {
        "" => Ok(None),
        "webhook" => {
            let settings = WebhookSettings::from_config(config)?;
            let sender = WebhookSender::new(settings).map_err(|e| ConfigError {
                setting: "PRIVCOMM_CODE_WEBHOOK_URL",
                problem: format!("cannot build the HTTP client: {e}"),
            })?;
            Ok(Some(Arc::new(sender)))
        }
        "stdout" if config.dev_mode => Ok(Some(Arc::new(StdoutSender))),
        "stdout" => Err(ConfigError {
            setting: "PRIVCOMM_CODE_SENDER",
            problem: "`stdout` prints verification codes where anyone reading the output can \
                      register any number; it is for development only and needs \
                      PRIVCOMM_DEV_MODE=1"
                .into(),
        }),
        _ => Err(ConfigError {
            setting: "PRIVCOMM_CODE_SENDER",
            problem: "must be `webhook` or `stdout`".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_vary() {
        let codes: Vec<String> = (0..50).map(|_| new_code().to_string()).collect();
        assert!(codes.iter().all(|c| looks_like_code(c)));
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert!(distinct.len() > 40);
        assert!(!looks_like_code("12345"));
        assert!(!looks_like_code("12345a"));
        assert!(!looks_like_code("1234567"));
    }

    #[test]
    fn stdout_needs_dev_mode() {
        let mut config = Config::with_defaults("/tmp/unused");
        config.code_sender = Some("stdout".into());
        let err = from_config(&config).err().expect("refused");
        assert!(err.to_string().contains("PRIVCOMM_DEV_MODE"), "{err}");
        config.dev_mode = true;
        assert_eq!(
            from_config(&config).ok().flatten().map(|s| s.kind()),
            Some("stdout")
        );
        config.code_sender = Some("carrier-pigeon".into());
        assert!(from_config(&config).is_err());
        config.code_sender = None;
        assert!(from_config(&config).ok().flatten().is_none());
    }
}
