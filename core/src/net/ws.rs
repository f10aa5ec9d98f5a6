//! The relay WebSocket: JSON frames in both directions, with size limits.

use futures_util::{FutureExt, SinkExt, StreamExt};
use privcomm_protocol::limits::MAX_WS_FRAME_BYTES;
use privcomm_protocol::ws::{ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::error::{bounded_text, describe_json_error, CoreError, CoreResult};

/// What reading the socket produced.
#[derive(Debug, PartialEq, Eq)]
pub enum SocketEvent {
    /// A well-formed frame.
    Frame(ServerFrame),
    /// A text frame that is not a valid server frame (skipped, never fatal).
    Malformed(String),
    /// A ping or pong: the link is alive.
    Heartbeat,
    /// The relay closed the connection, with its close code if it sent one.
    Closed(Option<u16>),
}

/// Reads one text frame from the relay: a frame, or `Malformed` with a reason that never
/// quotes the frame (it is logged). The text of an `error` frame is cut to
/// `MAX_UNTRUSTED_TEXT_BYTES`, since it is logged too.
pub fn parse_frame(text: &str) -> SocketEvent {
    match serde_json::from_str::<ServerFrame>(text) {
        Ok(ServerFrame::Error { code, message, id }) => SocketEvent::Frame(ServerFrame::Error {
            code,
            message: bounded_text(&message),
            id,
        }),
        Ok(frame) => SocketEvent::Frame(frame),
        Err(e) => SocketEvent::Malformed(describe_json_error(&e)),
    }
}

/// An authenticated WebSocket to the relay.
pub struct RelaySocket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RelaySocket {
    /// Connects to `ws_url`, authenticating with `token` in the `Authorization` header (not
    /// the URL, so it stays out of proxy logs).
    pub async fn connect(ws_url: &Url, token: &str) -> CoreResult<Self> {
        let mut request = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| CoreError::InvalidArgument(format!("WebSocket URL: {e}")))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| CoreError::InvalidArgument("token is not a valid header value".into()))?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_WS_FRAME_BYTES * 2);
        config.max_frame_size = Some(MAX_WS_FRAME_BYTES * 2);
        let (stream, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(handshake_error)?;
        Ok(Self { stream })
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> CoreResult<()> {
        let text = serde_json::to_string(frame).map_err(|e| CoreError::Protocol(e.to_string()))?;
        self.stream
            .send(Message::text(text))
            .await
            .map_err(|e| CoreError::Network(e.to_string()))
    }

    /// Queues a frame without flushing; `flush` sends everything queued.
    pub async fn feed(&mut self, frame: &ClientFrame) -> CoreResult<()> {
        let text = serde_json::to_string(frame).map_err(|e| CoreError::Protocol(e.to_string()))?;
        self.stream
            .feed(Message::text(text))
            .await
            .map_err(|e| CoreError::Network(e.to_string()))
    }

    /// Sends queued frames.
    pub async fn flush(&mut self) -> CoreResult<()> {
        self.stream
            .flush()
            .await
            .map_err(|e| CoreError::Network(e.to_string()))
    }

    /// Sends a ping (liveness check; the relay answers with a pong).
    pub async fn ping(&mut self) -> CoreResult<()> {
        self.stream
            .send(Message::Ping(Default::default()))
            .await
            .map_err(|e| CoreError::Network(e.to_string()))
    }

    /// The next event. Pings are answered by the WebSocket layer; `Err` means the link broke.
    /// Cancel-safe: a frame is never half-read.
    pub async fn next(&mut self) -> CoreResult<SocketEvent> {
        loop {
            let message = match self.stream.next().await {
                None => return Ok(SocketEvent::Closed(None)),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Ok(SocketEvent::Closed(None))
                }
                Some(Err(e)) => return Err(CoreError::Network(e.to_string())),
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) => return Ok(parse_frame(text.as_str())),
                Message::Binary(_) => return Ok(SocketEvent::Malformed("binary frame".into())),
                Message::Close(frame) => {
                    return Ok(SocketEvent::Closed(frame.map(|f| u16::from(f.code))))
                }
                Message::Ping(_) | Message::Pong(_) => return Ok(SocketEvent::Heartbeat),
                Message::Frame(_) => continue,
            }
        }
    }

    /// The next event if one is already waiting, without waiting for the network (`None`
    /// when reading would wait). Lets the caller take a burst of frames at once.
    pub fn try_next(&mut self) -> Option<CoreResult<SocketEvent>> {
        // `next` is cancel-safe, so dropping it when it would wait loses nothing.
        self.next().now_or_never()
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

fn handshake_error(err: WsError) -> CoreError {
    match err {
        WsError::Http(response) => {
            let body = response.body().as_deref().unwrap_or_default();
            super::rest::relay_error(response.status().as_u16(), body)
        }
        other => CoreError::Network(other.to_string()),
    }
}
