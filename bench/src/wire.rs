//! The load generator's side of the WebSocket protocol, kept cheap: frames are written with
//! `format!` and read into borrowed fields, and each payload carries its send time so the
//! receiver can time delivery without any shared state.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// A generator-side WebSocket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens an authenticated WebSocket to the relay.
pub async fn connect(ws_url: &str, token: &str) -> anyhow::Result<Socket> {
    // A small read buffer: thousands of mostly idle sockets, frames of a few hundred bytes.
    let config = WebSocketConfig::default().read_buffer_size(8192);
    let mut request = ws_url.into_client_request().context("WebSocket URL")?;
    request.headers_mut().insert(
        AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .context("token as a header value")?,
    );
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .context("WebSocket connect")?;
    Ok(socket)
}

/// Reads frames until `queue_empty` (the relay has delivered the backlog).
pub async fn wait_queue_empty(socket: &mut Socket) -> anyhow::Result<()> {
    while let Some(message) = socket.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message? {
            if parse(text.as_str())?.kind == "queue_empty" {
                return Ok(());
            }
        }
    }
    anyhow::bail!("socket closed before queue_empty")
}

/// The instant all payload timestamps count from.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since `epoch()`.
pub fn now_nanos() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Payloads of `size` bytes whose first 8 bytes are a timestamp. The first 9 bytes encode to
/// exactly 12 base64 characters, so only those are re-encoded per message.
pub struct PayloadTemplate {
    tail: String,
}

impl PayloadTemplate {
    /// A template for `size`-byte payloads (at least 9).
    pub fn new(size: usize) -> Self {
        let tail: Vec<u8> = (0..size.max(9) - 9).map(|i| (i % 251) as u8).collect();
        Self {
            tail: STANDARD.encode(tail),
        }
    }

    /// The base64 payload stamped with `nanos`.
    pub fn stamped(&self, nanos: u64) -> String {
        let mut head = [0u8; 9];
        head[..8].copy_from_slice(&nanos.to_le_bytes());
        let mut out = String::with_capacity(12 + self.tail.len());
        STANDARD.encode_string(head, &mut out);
        out.push_str(&self.tail);
        out
    }
}

/// The timestamp in a stamped base64 payload.
pub fn stamp_of(payload: &str) -> Option<u64> {
    let head = STANDARD.decode(payload.get(..12)?).ok()?;
    Some(u64::from_le_bytes(head.get(..8)?.try_into().ok()?))
}

/// Delay since a stamp.
pub fn since(stamp: u64) -> Duration {
    Duration::from_nanos(now_nanos().saturating_sub(stamp))
}

/// A `send` frame.
pub fn send_frame(to: Uuid, id: Uuid, payload: &str) -> String {
    format!(r#"{{"type":"send","to":"{to}","id":"{id}","payload":"{payload}"}}"#)
}

/// An `ack` frame.
pub fn ack_frame(id: &str) -> String {
    format!(r#"{{"type":"ack","id":"{id}"}}"#)
}

/// The fields of a relay frame the generator looks at.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    /// Frame type.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Server id (`encrypted_message`) or client id (`sent`, `error`).
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    /// Base64 payload of `encrypted_message`.
    #[serde(default, borrow)]
    pub payload: Option<Cow<'a, str>>,
    /// Error code of `error`.
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
}

/// Parses a relay frame.
pub fn parse(text: &str) -> anyhow::Result<Incoming<'_>> {
    serde_json::from_str(text).context("relay sent a frame that is not JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_base64() {
        let template = PayloadTemplate::new(256);
        let payload = template.stamped(123_456_789);
        assert_eq!(STANDARD.decode(&payload).unwrap().len(), 256);
        assert_eq!(stamp_of(&payload), Some(123_456_789));
    }
}
