//! `GET /ws`: authenticate, check capacity, upgrade, and start the connection task.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap, Uri};
use axum::response::Response;
use privcomm_protocol::limits::MAX_WS_FRAME_BYTES;
use privcomm_protocol::ErrorCode;
use tracing::Instrument;

use crate::error::ApiError;
use crate::state::AppState;

/// Initial read buffer of a WebSocket.
const WS_READ_BUFFER: usize = 2048;

/// Upgrades an authenticated request to a WebSocket. The token comes only in the
/// `Authorization` header: a URL's query string ends up in proxies' access logs.
pub async fn ws_handler(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = bearer else {
        if uri.query().is_some_and(|q| q.contains("token=")) {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "send the token in the Authorization header, not in the URL",
            ));
        }
        return Err(ApiError::unauthorized());
    };
    let subject = crate::extract::authenticate_subject(&state, token).await?;
    let (user, generation) = (subject.user, subject.generation);
    if !state.connections.has_room_for(user) {
        state.metrics.connections_refused.inc();
        return Err(ApiError::new(
            ErrorCode::TooManyConnections,
            "the relay is at its connection limit; retry later",
        ));
    }
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(ErrorCode::Unavailable, "shutting down"));
    }
    let span = tracing::Span::current();
    let tasks = state.tasks.clone();
    Ok(upgrade
        // tungstenite zero-fills its whole read buffer on every read, so the 128 KiB default
        // would be resident for every idle connection. Frames are a few hundred bytes;
        // larger ones grow the buffer as needed.
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(MAX_WS_FRAME_BYTES)
        .max_frame_size(MAX_WS_FRAME_BYTES)
        .on_upgrade(move |socket| {
            // Tracked so shutdown waits for every connection to close cleanly.
            tasks.track_future(
                super::connection::run(state, user, generation, socket).instrument(span),
            )
        }))
}
