//! Copies the WAL into the database file on a thread of its own, beside the writer.
//!
//! SQLite checkpoints by default on the connection that commits, once the WAL holds 1,000
//! pages: the writer thread then copies pages into the database file and syncs it while
//! every queued write waits. With each stored message writing its sender's window rows at
//! random places (migration 0004), that was every few commits, and p99 at 5,000 msg/s went
//! from 9 to 17 ms (docs/BENCHMARKS.md). Here a second connection runs a passive checkpoint
//! (it never blocks the writer, nor waits for it) once a second, and a page written by many
//! commits in that second reaches the database file once; the writer keeps a checkpoint of
//! its own only past `WRITER_CHECKPOINT_PAGES`, after which the WAL restarts from its
//! beginning, so the WAL stays bounded even when this thread falls behind.

use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::super::{StoreError, StoreResult};

/// How often the WAL is copied into the database file (every 50 ms gave p99 14 ms at
/// 5,000 msg/s, every second 11–14 ms: fewer copies of the same pages).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);

/// WAL pages (4 KiB) past which the writer checkpoints itself after a commit: then every
/// frame is copied (most already were, by this thread) and the next commit starts the WAL
/// over. Bounds the WAL at about 256 MiB.
pub(super) const WRITER_CHECKPOINT_PAGES: u32 = 65_536;

/// The checkpointing thread; stopped by `stop` (or when dropped, without waiting).
#[derive(Debug)]
pub(super) struct Checkpointer {
    /// The thread's stop signal (dropping it stops the thread) and its handle.
    running: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
}

impl Checkpointer {
    /// Starts checkpointing on `conn`, a read-write connection of its own.
    pub(super) fn start(conn: Connection) -> StoreResult<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("privcomm-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    // PASSIVE copies what no reader still needs and never waits: a busy
                    // database is not an error, the next round copies the rest.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "background WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Setup(format!("starting the SQLite checkpointer: {e}")))?;
        Ok(Self {
            running: Mutex::new(Some((stop, thread))),
        })
    }

    /// Stops the thread and closes its connection, waiting for both.
    pub(super) async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, thread)) = running {
            drop(stop);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
