//! `GET /health`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use privcomm_protocol::rest::HealthResponse;

use crate::state::AppState;

/// 200 when the database answers, 503 otherwise.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let ok = tokio::time::timeout(std::time::Duration::from_secs(3), state.store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let (status, body) = if ok {
        (StatusCode::OK, ("healthy", "ok"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            ("unhealthy", "unreachable"),
        )
    };
    (
        status,
        Json(HealthResponse {
            status: body.0.into(),
            database: body.1.into(),
        }),
    )
}
