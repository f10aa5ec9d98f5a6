//! Group commits on SQLite through one rusqlite connection on a thread of its own.
//!
//! sqlx runs each SQLite statement as a round trip to a worker thread; a group commit of a
//! few dozen writes then spends most of its time on those hops rather than in SQLite, and
//! every message waits for the whole commit. Here a batch is one hop: the thread runs all
//! its statements (prepared once, cached) and the commit, then answers. Everything else the
//! relay stores still goes through sqlx; SQLite's lock and `busy_timeout` order the two.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::pepper::Pepper;

use super::mailbox::{MailboxLedger, APPLY_DELTA_SQL};
use super::{
    day_of, MailboxUsage, StoreError, StoreOutcome, StoreResult, WriteBatch, WriteBatchOutcome,
};

/// Pages of cache for the writer (negative: KiB). Index pages of the message tables stay
/// resident, so inserts and deletes rarely read from disk.
const CACHE_KIB: i64 = 65_536;

/// Work for the writer thread.
enum Job {
    /// Commit a batch.
    Write {
        batch: Arc<WriteBatch>,
        reply: oneshot::Sender<StoreResult<WriteBatchOutcome>>,
    },
    /// Copy the WAL into the database and truncate it; answers whether it completed.
    Checkpoint {
        reply: oneshot::Sender<StoreResult<bool>>,
    },
    /// Checkpoint, close the connection and end the thread; answers once closed.
    Close { reply: oneshot::Sender<()> },
}

/// How long a write waits for SQLite's lock (held briefly by the sqlx pool's own writes).
const WRITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// Opens `path` (already created and migrated) and starts the thread; `pepper` keys the
    /// de-duplication records.
    pub(super) fn open(path: &Path, pepper: Arc<Pepper>) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(setup)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{CACHE_KIB};
             PRAGMA secure_delete = ON;"
        ))
        .map_err(setup)?;
        conn.busy_timeout(WRITE_BUSY_TIMEOUT).map_err(setup)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("privcomm-sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = queue.recv() {
                    match job {
                        Job::Write { batch, reply } => {
                            let result = apply(&mut conn, &batch, &pepper);
                            let _ = reply.send(result.map_err(StoreError::from));
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

fn setup(e: rusqlite::Error) -> StoreError {
    StoreError::Setup(format!("opening the SQLite writer: {e}"))
}

fn apply(
    conn: &mut Connection,
    batch: &WriteBatch,
    pepper: &Pepper,
) -> rusqlite::Result<WriteBatchOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcome = WriteBatchOutcome::default();
    let mut mailboxes = MailboxLedger::default();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO pending_messages
                 (id, recipient_id, sender_id, client_id, payload, created_at, size)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?8
             WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2
                           AND (?9 IS NULL OR registration_id = ?9))
               AND NOT EXISTS (SELECT 1 FROM delivery_records WHERE dedup_key = ?7)
             ON CONFLICT (sender_id, client_id) DO NOTHING
             RETURNING seq",
        )?;
        let mut existing = tx.prepare_cached(
            "SELECT id FROM pending_messages WHERE sender_id = ?1 AND client_id = ?2
             UNION ALL
             SELECT server_id FROM delivery_records WHERE dedup_key = ?3",
        )?;
        let mut usage =
            tx.prepare_cached("SELECT messages, bytes FROM mailboxes WHERE recipient_id = ?1")?;
        let mut registration =
            tx.prepare_cached("SELECT registration_id FROM users WHERE id = ?1")?;
        for m in &batch.messages {
            let (id, recipient, sender, client_id) = (
                m.id.as_bytes(),
                m.recipient.as_bytes(),
                m.sender.as_bytes(),
                m.client_id.as_bytes(),
            );
            if !mailboxes.knows(&m.recipient) {
                let held = usage
                    .query_row(params![recipient], |row| {
                        Ok(MailboxUsage {
                            messages: row.get(0)?,
                            bytes: row.get(1)?,
                        })
                    })
                    .optional()?
                    .unwrap_or_default();
                mailboxes.load(m.recipient, held);
            }
            let size = u64::try_from(m.payload.len()).unwrap_or(u64::MAX);
            let dedup_key = pepper.delivery_key(m.sender, m.client_id);
            let seq: Option<i64> = if batch.quota.admits(mailboxes.usage(&m.recipient), size) {
                insert
                    .query_row(
                        params![
                            id,
                            recipient,
                            sender,
                            client_id,
                            &m.payload[..],
                            m.created_at,
                            &dedup_key[..],
                            i64::try_from(m.payload.len()).unwrap_or(i64::MAX),
                            m.recipient_registration_id.map(i64::from)
                        ],
                        |row| row.get(0),
                    )
                    .optional()?
            } else {
                None
            };
            let result = match seq {
                Some(seq) => {
                    mailboxes.added(m.recipient, m.payload.len());
                    Ok(StoreOutcome::Stored(m.stored_as(seq)))
                }
                None => {
                    // Stored before (pending or delivered, also earlier in this batch), the
                    // mailbox is full, or the recipient does not exist.
                    let first: Option<Vec<u8>> = existing
                        .query_row(params![sender, client_id, &dedup_key[..]], |row| row.get(0))
                        .optional()?;
                    match first.and_then(|bytes| Uuid::from_slice(&bytes).ok()) {
                        Some(server_id) => Ok(StoreOutcome::Duplicate { server_id }),
                        None if !batch.quota.admits(mailboxes.usage(&m.recipient), size) => {
                            Err(StoreError::MailboxFull)
                        }
                        None => {
                            let registered: Option<i64> = registration
                                .query_row(params![recipient], |row| row.get(0))
                                .optional()?;
                            match registered {
                                Some(_) => Err(StoreError::StaleRecipient),
                                None => Err(StoreError::MissingReference),
                            }
                        }
                    }
                }
            };
            outcome.messages.push(result);
        }

        let mut delete = tx.prepare_cached(
            "DELETE FROM pending_messages WHERE id = ?1 AND recipient_id = ?2
             RETURNING sender_id, client_id, size",
        )?;
        let mut record = tx.prepare_cached(
            "INSERT INTO delivery_records (dedup_key, server_id, delivered_at)
             VALUES (?1, ?2, ?3) ON CONFLICT (dedup_key) DO NOTHING",
        )?;
        let mut seen = HashSet::new();
        for ack in &batch.acks {
            // A repeated ack in the same batch finds the row already gone.
            if !seen.insert(ack.id) {
                outcome.acks.push(false);
                continue;
            }
            let id = ack.id.as_bytes();
            let deleted: Option<(Vec<u8>, Vec<u8>, i64)> = delete
                .query_row(params![id, ack.recipient.as_bytes()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            if let Some((sender, client_id, size)) = &deleted {
                let (Ok(sender), Ok(client_id)) =
                    (Uuid::from_slice(sender), Uuid::from_slice(client_id))
                else {
                    return Err(rusqlite::Error::InvalidColumnType(
                        0,
                        "sender_id or client_id is not a 16-byte id".into(),
                        rusqlite::types::Type::Blob,
                    ));
                };
                let key = pepper.delivery_key(sender, client_id);
                record.execute(params![&key[..], id, batch.now])?;
                mailboxes.removed(ack.recipient, *size);
            }
            outcome.acks.push(deleted.is_some());
        }

        let mut touch = tx.prepare_cached("UPDATE users SET last_seen = ?2 WHERE id = ?1")?;
        for user in &batch.touches {
            touch.execute(params![user.as_bytes(), day_of(batch.now)])?;
        }

        let mut apply_delta = tx.prepare_cached(APPLY_DELTA_SQL)?;
        for (recipient, delta) in mailboxes.changes() {
            apply_delta.execute(params![recipient.as_bytes(), delta.messages, delta.bytes])?;
        }
    }
    tx.commit()?;
    Ok(outcome)
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
