//! `GET /metrics`: Prometheus text format.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::state::AppState;

/// Renders all metrics, refreshing the queue depth from storage first.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.pending_total().await {
        Ok(depth) => {
            state
                .metrics
                .queue_depth
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        Err(e) => tracing::warn!(error = %e, "queue depth unavailable"),
    }
    state
        .metrics
        .inflight_bytes
        .set(i64::try_from(state.inflight.held_bytes()).unwrap_or(i64::MAX));
    state
        .metrics
        .storage_full
        .set(i64::from(state.storage.is_full()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
