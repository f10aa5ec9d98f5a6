//! Reads the mailboxes of users woken over the bus, many per query, and hands each its rows.
//!
//! A wake-up names a user and a position, never a payload, so the instance holding the
//! connection must read the message. One read per wake-up made every cross-instance message
//! cost a query of its own; here the wake-ups that arrive while a read runs are read
//! together, the way the writer groups commits: no added wait when idle, one query for
//! many users under load.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Wake;
use crate::metrics::Metrics;
use crate::store::{PendingMessage, Store};
use crate::ws::registry::{BusRead, ConnectionRegistry};

/// Users read by one query.
const USERS_PER_READ: usize = 64;
/// Rows read per user; a connection with more waiting reads the rest itself.
const ROWS_PER_USER: usize = 8;
/// Queries under way at once. With the two limits above this bounds the rows held here to
/// 2 × 64 × 8 = 1,024 (64 MiB at the largest payload), while the pool serves the rest. A
/// connection has at most one read waiting for it (`Signals::read_pending`), so rows
/// handed over and not yet written are at most 8 per connection.
const READS_AT_ONCE: usize = 2;
/// Wake-ups waiting for the reader; beyond this they are dropped and every connection
/// rescans (as for any lost bus event).
pub const WAKE_QUEUE: usize = 65_536;

/// Reads for the wake-ups that arrive (straight from the bus, no task between), until
/// shutdown or until the bus is gone.
pub async fn run(
    mut wakes: mpsc::Receiver<Wake>,
    store: Arc<dyn Store>,
    connections: Arc<ConnectionRegistry>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(READS_AT_ONCE * USERS_PER_READ);
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = wakes.recv_many(&mut batch, READS_AT_ONCE * USERS_PER_READ) => n,
        };
        if received == 0 {
            return;
        }
        let reads = plan(&connections, batch.drain(..));
        futures_util::stream::iter(reads.chunks(USERS_PER_READ))
            .for_each_concurrent(READS_AT_ONCE, |chunk| {
                read_and_hand(store.as_ref(), &connections, &metrics, chunk)
            })
            .await;
    }
}

/// One planned read: the user, its connection, where to read from, and the lowest
/// position its wake-ups named.
#[derive(Clone, Copy)]
struct Planned {
    user: Uuid,
    conn: u64,
    after: i64,
    woken: i64,
}

/// One read per woken user whose connection here is caught up and has no read waiting
/// for it, from the lowest position its wake-ups named (the others read storage
/// themselves).
fn plan(connections: &ConnectionRegistry, wakes: impl Iterator<Item = Wake>) -> Vec<Planned> {
    let mut lowest: HashMap<Uuid, i64> = HashMap::new();
    for (user, seq) in wakes {
        lowest
            .entry(user)
            .and_modify(|s| *s = (*s).min(seq))
            .or_insert(seq);
    }
    lowest
        .into_iter()
        .filter_map(|(user, woken)| {
            let (conn, after) = connections.bus_read_start(user, woken)?;
            Some(Planned {
                user,
                conn,
                after,
                woken,
            })
        })
        .collect()
}

async fn read_and_hand(
    store: &dyn Store,
    connections: &ConnectionRegistry,
    metrics: &Metrics,
    chunk: &[Planned],
) {
    let positions: Vec<(Uuid, i64)> = chunk.iter().map(|p| (p.user, p.after)).collect();
    let started = std::time::Instant::now();
    let read = store.pending_messages_of(&positions, ROWS_PER_USER).await;
    metrics
        .bus_read_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.bus_read_users.observe(chunk.len() as f64);
    match read {
        Ok(rows) => {
            let mut by_user: HashMap<Uuid, Vec<PendingMessage>> = HashMap::new();
            for row in rows {
                by_user.entry(row.recipient).or_default().push(row);
            }
            for planned in chunk {
                let mut rows = by_user.remove(&planned.user).unwrap_or_default();
                rows.sort_by_key(|r| r.seq);
                connections.hand_read(
                    planned.user,
                    BusRead {
                        conn: planned.conn,
                        after: planned.after,
                        limit: ROWS_PER_USER,
                        woken: planned.woken,
                        rows,
                    },
                );
            }
        }
        Err(e) => {
            // Each connection reads storage itself (and closes if it cannot).
            tracing::warn!(error = %e, "reading woken mailboxes failed");
            for planned in chunk {
                connections.bus_read_failed(planned.user, planned.conn, planned.woken);
            }
        }
    }
}
