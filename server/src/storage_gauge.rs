//! The disk high-water mark: free space on the data dir's file system and the database's
//! size, measured every few seconds. Past either mark the relay refuses new messages (503
//! `storage_full`) while acks, which free space, keep working.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// The marks, in bytes (`None`: not checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageMarks {
    /// Refuse sends when the data dir's file system has less free than this.
    pub min_free_disk: Option<u64>,
    /// Refuse sends when the database is larger than this.
    pub max_database: Option<u64>,
}

/// Whether storage is past a mark; shared by every request.
#[derive(Debug, Default)]
pub struct StorageGauge {
    full: AtomicBool,
}

impl StorageGauge {
    /// True while sends must be refused.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Measures once and records the verdict.
    pub async fn measure(&self, store: &dyn Store, data_dir: &Path, marks: StorageMarks) {
        let low_disk = match marks.min_free_disk {
            Some(min) => free_bytes(data_dir).is_some_and(|free| free < min),
            None => false,
        };
        let large_db = match marks.max_database {
            Some(max) => match store.database_bytes().await {
                Ok(size) => size > max,
                Err(e) => {
                    tracing::warn!(error = %e, "database size unavailable");
                    false
                }
            },
            None => false,
        };
        let full = low_disk || large_db;
        if self.full.swap(full, Ordering::Relaxed) != full {
            if full {
                tracing::warn!(
                    low_disk,
                    large_db,
                    "storage past its high-water mark; refusing new messages"
                );
            } else {
                tracing::info!("storage below its high-water mark again; accepting messages");
            }
        }
    }

    /// Measures every `interval` until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        data_dir: std::path::PathBuf,
        marks: StorageMarks,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => self.measure(store.as_ref(), &data_dir, marks).await,
            }
        }
    }
}

/// Bytes an unprivileged process may still write on `dir`'s file system.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let stat = rustix::fs::statvfs(dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_of_a_real_directory_is_known() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some_and(|b| b > 0));
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }
}
