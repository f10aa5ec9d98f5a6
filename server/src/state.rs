//! Shared state handed to every handler.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::ByteBudget;
use crate::bus::RoutingBus;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pepper::Pepper;
use crate::rate_limit::RateLimits;
use crate::storage_gauge::StorageGauge;
use crate::store::Store;
use crate::tokens::TokenIssuer;
use crate::writer::WriteQueue;
use crate::ws::registry::ConnectionRegistry;

/// Everything a request may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Storage backend.
    pub store: Arc<dyn Store>,
    /// The group-committing writer: message stores, acks and `last_seen` go through it.
    pub writes: WriteQueue,
    /// Configuration in effect.
    pub config: Arc<Config>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Delivers verification codes (none configured: nobody can register).
    pub codes: Option<Arc<dyn crate::codes::CodeSender>>,
    /// Keys what is stored about phone numbers.
    pub pepper: Arc<Pepper>,
    /// Token issuer/verifier.
    pub tokens: Arc<TokenIssuer>,
    /// Online WebSocket connections.
    pub connections: Arc<ConnectionRegistry>,
    /// How this instance reaches the others (in process when it runs alone).
    pub bus: Arc<dyn RoutingBus>,
    /// This instance's name in logs, metrics and on the bus.
    pub instance_id: Arc<str>,
    /// Exported metrics.
    pub metrics: Arc<Metrics>,
    /// Per-client and per-account limits.
    pub rate_limits: Arc<RateLimits>,
    /// Message bytes between socket and commit, relay-wide.
    pub inflight: ByteBudget,
    /// Recent bundle fetches per (caller, target).
    pub prekey_claims: Arc<crate::prekey_claims::RecentClaims>,
    /// Whether storage is past its high-water mark.
    pub storage: Arc<StorageGauge>,
    /// Cancelled when the relay shuts down.
    pub shutdown: CancellationToken,
    /// Tracks WebSocket tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
}
