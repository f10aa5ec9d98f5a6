//! `GET /health`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use privcomm_protocol::rest::HealthResponse;

use crate::bus::BusState;
use crate::state::AppState;

/// 200 when the database answers (`degraded` while the routing bus is down: the instance
/// still serves, so a balancer keeps it), 503 otherwise.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let ok = tokio::time::timeout(std::time::Duration::from_secs(3), state.store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let bus = state.bus.state();
    let (status, health, database) = match (ok, bus) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy", "unreachable"),
        (true, BusState::Disconnected) => (StatusCode::OK, "degraded", "ok"),
        (true, _) => (StatusCode::OK, "healthy", "ok"),
    };
    (
        status,
        Json(HealthResponse {
            status: health.into(),
            database: database.into(),
            bus: Some(bus.as_str().into()),
        }),
    )
}
