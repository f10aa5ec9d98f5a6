//! The SQLite writer: one rusqlite connection on a thread of its own, the only connection
//! that writes. Group commits of messages, acks and `last_seen` are one hop to it (all
//! their statements, prepared once and cached, and the commit); the rarer writes
//! (registrations, keys, nonces, codes) are jobs on the same thread. With one writer the
//! relay never waits on SQLite's lock against itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::pepper::Pepper;

use super::super::{StoreError, StoreResult, WriteBatch, WriteBatchOutcome};

/// Work for the writer thread.
enum Job {
    /// Commit a batch.
    Write {
        batch: Arc<WriteBatch>,
        reply: oneshot::Sender<StoreResult<WriteBatchOutcome>>,
    },
    /// Any other write: runs on the connection, answers through what it captured.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Copy the WAL into the database and truncate it; answers whether it completed.
    Checkpoint {
        reply: oneshot::Sender<StoreResult<bool>>,
    },
    /// Checkpoint, close the connection and end the thread; answers once closed.
    Close { reply: oneshot::Sender<()> },
}

/// How long a write waits for SQLite's lock (readers never take it; an outside process
/// might).
pub(super) const WRITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a maintenance checkpoint waits for readers to leave the WAL. TRUNCATE waits
/// until no reader uses it, and while it waits the writer thread, and every write queued
/// behind it, waits too; with the write timeout that could be 10 s of held sends and acks.
/// Past this it gives up; the next maintenance run retries.
const MAINTENANCE_CHECKPOINT_WAIT: Duration = Duration::from_millis(100);

/// Handle to the writer thread.
#[derive(Debug)]
pub(super) struct SqliteWriter {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// The file of a `sqlite:` URL, or None for an in-memory database (which another
/// connection could not share).
pub(super) fn file_of(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

impl SqliteWriter {
    /// Starts the thread on `conn` (opened, configured and migrated); `pepper` keys the
    /// de-duplication records.
    pub(super) fn start(conn: Connection, pepper: Arc<Pepper>) -> StoreResult<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("privcomm-sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = queue.recv() {
                    match job {
                        Job::Write { batch, reply } => {
                            // A panic fails this batch, not the thread every later write
                            // needs (an open transaction rolls back as it unwinds).
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    super::batch::apply(&mut conn, &batch, &pepper)
                                }));
                            let _ = reply.send(match result {
                                Ok(result) => result.map_err(StoreError::from),
                                Err(_) => {
                                    Err(StoreError::Database("a group commit panicked".into()))
                                }
                            });
                        }
                        Job::Run(work) => {
                            // The job's answer is dropped with it: its caller sees the
                            // writer as stopped for this one call only.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                work(&mut conn)
                            }));
                        }
                        Job::Checkpoint { reply } => {
                            let done = checkpoint(&conn, MAINTENANCE_CHECKPOINT_WAIT);
                            let _ = reply.send(done.map_err(StoreError::from));
                        }
                        Job::Close { reply } => {
                            if let Err(e) = checkpoint(&conn, WRITE_BUSY_TIMEOUT) {
                                tracing::warn!(error = %e, "final WAL checkpoint failed");
                            }
                            drop(conn);
                            let _ = reply.send(());
                            return;
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Setup(format!("starting the SQLite writer: {e}")))?;
        Ok(Self { jobs })
    }

    /// Commits `batch` in one transaction. The batch is shared with the thread, not copied.
    pub(super) async fn write(&self, batch: Arc<WriteBatch>) -> StoreResult<WriteBatchOutcome> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Write { batch, reply })
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Runs `work` on the writer's connection, after the writes queued before it.
    pub(super) async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Run(Box::new(move |conn| {
                let _ = reply.send(work(conn));
            })))
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Checkpoints and truncates the WAL, so pages of deleted rows (zeroed in the database
    /// by `secure_delete`) leave no older copy there. False if readers kept it from
    /// completing; the next run retries.
    pub(super) async fn checkpoint(&self) -> StoreResult<bool> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Checkpoint { reply })
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Checkpoints and closes the writer's connection; later writes fail.
    pub(super) async fn close(&self) {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job::Close { reply }).is_ok() {
            let _ = answer.await;
        }
    }
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`, waiting at most `wait` for readers: true if every
/// frame was copied and the WAL emptied.
fn checkpoint(conn: &Connection, wait: Duration) -> rusqlite::Result<bool> {
    conn.busy_timeout(wait)?;
    let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    });
    conn.busy_timeout(WRITE_BUSY_TIMEOUT)?;
    Ok(busy? == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_recognised_and_memory_is_not() {
        assert_eq!(
            file_of("sqlite:///data/privcomm.db?mode=rwc"),
            Some(PathBuf::from("/data/privcomm.db"))
        );
        assert_eq!(file_of("sqlite:relay.db"), Some(PathBuf::from("relay.db")));
        assert_eq!(file_of("sqlite::memory:"), None);
        assert_eq!(file_of("sqlite://x.db?mode=memory"), None);
        assert_eq!(file_of("postgres://localhost/test"), None);
    }
}
