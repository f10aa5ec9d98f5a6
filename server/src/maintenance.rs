//! Retention: deletes old messages, used prekeys, expired nonces and old send records,
//! then scrubs the copies of deleted rows a database keeps beside its tables.

use std::time::Duration;

use privcomm_protocol::limits::{
    MESSAGE_RETENTION_DAYS, SEND_RECORD_RETENTION_DAYS, USED_PREKEY_RETENTION_DAYS,
};

use crate::state::AppState;
use crate::store::{PurgeCutoffs, PurgeReport, StoreResult};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn days_ms(days: u64) -> i64 {
    i64::try_from(days)
        .unwrap_or(i64::MAX / DAY_MS)
        .saturating_mul(DAY_MS)
}

/// Cut-offs for `now` under the retention rules.
pub fn cutoffs(now: i64) -> PurgeCutoffs {
    PurgeCutoffs {
        now,
        messages_before: now.saturating_sub(days_ms(MESSAGE_RETENTION_DAYS)),
        used_prekeys_before: now.saturating_sub(days_ms(USED_PREKEY_RETENTION_DAYS)),
        sends_before: now.saturating_sub(days_ms(SEND_RECORD_RETENTION_DAYS)),
    }
}

/// One maintenance pass at the relay clock's current time.
pub async fn run_once(state: &AppState) -> StoreResult<PurgeReport> {
    let report = state.store.purge(cutoffs(state.clock.now_ms())).await?;
    state.store.scrub().await?;
    state.rate_limits.shrink();
    state.prekey_claims.shrink(std::time::Instant::now());
    if report != PurgeReport::default() {
        tracing::info!(
            messages = report.messages,
            used_prekeys = report.used_prekeys,
            nonces = report.nonces,
            send_records = report.send_records,
            verifications = report.verifications,
            "maintenance purged expired rows"
        );
    }
    Ok(report)
}

/// How often the store's scrub runs between maintenance passes. Every message leaves dead
/// rows on PostgreSQL (window rows pushed out, mailbox counts, delivered messages) whose
/// index entries slow the next writes until vacuumed, and autovacuum may be off: at tens of
/// thousands of messages a second the default maintenance interval lets them pile up
/// (docs/BENCHMARKS.md). On SQLite a scrub is a WAL checkpoint.
pub const SCRUB_INTERVAL: Duration = Duration::from_secs(30);

/// Runs the store's scrub every `interval` until shutdown.
pub async fn scrub_periodically(state: AppState, interval: Duration) {
    every(&state, interval, "scrub", || state.store.scrub()).await
}

/// Runs `run_once` every `interval` until shutdown.
pub async fn run_periodically(state: AppState, interval: Duration) {
    every(&state, interval, "maintenance", || run_once(&state)).await
}

/// Runs `job` every `interval` until shutdown; a failure is logged and retried next time.
async fn every<F, Fut, T>(state: &AppState, interval: Duration, what: &'static str, job: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {
                if let Err(e) = job().await {
                    tracing::warn!(error = %e, job = what, "periodic job failed; will retry");
                }
            }
        }
    }
}
