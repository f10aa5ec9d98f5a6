//! Read connections to the SQLite file, used on blocking threads: WAL lets them read while
//! the writer thread commits, and a read never waits for a group commit.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::super::{StoreError, StoreResult};

/// A few read-only connections, each used by one blocking task at a time.
#[derive(Debug)]
pub(super) struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Takes `connections` (already opened and configured) as the pool.
    pub(super) fn new(connections: Vec<Connection>) -> Self {
        let permits = Arc::new(Semaphore::new(connections.len()));
        Self {
            idle: Arc::new(Mutex::new(connections)),
            permits,
        }
    }

    /// Runs `read` on an idle connection on a blocking thread, waiting for one if all are
    /// busy. Fails once the pool is closed.
    pub(super) async fn read<T, F>(&self, read: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        let idle = self.idle.clone();
        let permits = self.permits.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
                .ok_or(StoreError::WriterStopped)?;
            // A panicking read must not take its connection with it.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&conn)))
                .unwrap_or_else(|_| Err(StoreError::Database("a database read panicked".into())));
            // After `close`, the connection is closed here instead of going back.
            if !permits.is_closed() {
                idle.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Database(Box::new(e)))?
    }

    /// Closes every connection; later reads fail.
    pub(super) fn close(&self) {
        self.permits.close();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
