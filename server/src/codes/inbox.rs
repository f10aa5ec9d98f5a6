//! A development SMS gateway: receives the `webhook` sender's signed posts on loopback and
//! keeps the codes, so a demo or a test can read the code "texted" to a number the way a
//! phone would. It checks signatures exactly as an operator's receiver should. Never for
//! production: whoever can ask it for a number's code can register that number.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tokio::sync::Notify;

use super::webhook::{signature_header, SIGNATURE_HEADER};
use crate::clock::{Clock as _, SystemClock};

/// Oldest signature time accepted, in seconds.
const MAX_SIGNATURE_AGE_SECS: i64 = 300;

#[derive(Default)]
struct Codes {
    latest: Mutex<HashMap<String, String>>,
    arrived: Notify,
}

/// A running development inbox.
pub struct CodeInbox {
    addr: SocketAddr,
    secret: String,
    codes: Arc<Codes>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Deserialize)]
struct Posted {
    number: String,
    code: String,
}

impl CodeInbox {
    /// Starts an inbox on an ephemeral loopback port, accepting posts signed with a fresh
    /// random secret (`secret()`), for a relay configured with `webhook_settings()`.
    pub async fn start() -> std::io::Result<Self> {
        use rand::RngCore;
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let secret = hex::encode(raw);
        let codes = Arc::new(Codes::default());
        let app = Router::new()
            .route("/", post(receive))
            .route("/codes/{number}", get(take_posted))
            .with_state((codes.clone(), secret.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            secret,
            codes,
            task,
        })
    }

    /// Where tests in other languages take codes: `GET <this>/codes/{number}` answers the
    /// code received for the number (and forgets it), or 404 while none has arrived.
    pub fn codes_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL to configure as `PRIVCOMM_CODE_WEBHOOK_URL`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The secret to configure as `PRIVCOMM_CODE_WEBHOOK_SECRET`.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Points `config` at this inbox.
    pub fn configure(&self, config: &mut crate::Config) {
        config.code_sender = Some("webhook".into());
        config.code_webhook_url = Some(self.url());
        config.code_webhook_secret = Some(self.secret.clone());
    }

    /// The settings that point a relay process at this inbox, as environment variables.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("PRIVCOMM_CODE_SENDER", "webhook".into()),
            ("PRIVCOMM_CODE_WEBHOOK_URL", self.url()),
            ("PRIVCOMM_CODE_WEBHOOK_SECRET", self.secret.clone()),
        ]
    }

    /// The last code received for `number`, if any.
    pub fn latest(&self, number: &str) -> Option<String> {
        lock(&self.codes.latest).get(number).cloned()
    }

    /// Waits up to `wait` for a code for `number` and takes it (a later request for the
    /// same number then waits for the next code).
    pub async fn take(&self, number: &str, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.codes.arrived.notified();
            if let Some(code) = lock(&self.codes.latest).remove(number) {
                return Some(code);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for CodeInbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// True if `header` signs `body` with `secret`, recently.
pub fn signature_is_valid(secret: &[u8], header: &str, body: &[u8], now_secs: i64) -> bool {
    let Some(t) = header
        .split(',')
        .find_map(|part| part.strip_prefix("t="))
        .and_then(|t| t.parse::<i64>().ok())
    else {
        return false;
    };
    if now_secs.saturating_sub(t).abs() > MAX_SIGNATURE_AGE_SECS {
        return false;
    }
    let expected = signature_header(secret, t, body);
    // Equal length by construction when well formed; compare without early exit.
    expected.len() == header.len()
        && expected
            .bytes()
            .zip(header.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn receive(
    State((codes, secret)): State<(Arc<Codes>, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signed = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| signature_is_valid(secret.as_bytes(), h, &body, SystemClock.now_secs()));
    if !signed {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(posted) = serde_json::from_slice::<Posted>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    lock(&codes.latest).insert(posted.number, posted.code);
    codes.arrived.notify_waiters();
    StatusCode::OK
}

/// `GET /codes/{number}`: takes the code received for `number` (404 until one arrives), for
/// tests in other languages; a later request waits for the next code.
async fn take_posted(
    State((codes, _)): State<(Arc<Codes>, String)>,
    Path(number): Path<String>,
) -> Result<String, StatusCode> {
    lock(&codes.latest)
        .remove(&number)
        .ok_or(StatusCode::NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_for_key_body_and_age() {
        let header = signature_header(b"secret", 1_000, b"{\"a\":1}");
        assert!(signature_is_valid(b"secret", &header, b"{\"a\":1}", 1_010));
        assert!(!signature_is_valid(b"other", &header, b"{\"a\":1}", 1_010));
        assert!(!signature_is_valid(b"secret", &header, b"{\"a\":2}", 1_010));
        assert!(!signature_is_valid(b"secret", &header, b"{\"a\":1}", 2_000));
        assert!(!signature_is_valid(b"secret", "t=x,v1=00", b"", 0));
        assert!(!signature_is_valid(b"secret", "", b"", 0));
    }
}
