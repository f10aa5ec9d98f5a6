//! Keeping the device's state bounded: processed ids, quota windows and one-time prekeys
//! the relay no longer holds are deleted on a schedule (`SignalEngine::upkeep`).

use privcomm_protocol::limits::MESSAGE_RETENTION_DAYS;
use rusqlite::params;

use super::Store;
use crate::error::CoreResult;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Processed relay ids are kept this long: the relay redelivers an unacked message for at
/// most its retention period, so an id older than that can never come again.
pub const PROCESSED_RETENTION_MS: i64 = (MESSAGE_RETENTION_DAYS as i64 + 1) * DAY_MS;

/// A one-time prekey the relay no longer holds is kept this long, so that a message
/// started from it still decrypts: the claimer may keep encrypting on the new session for
/// up to 30 days before we answer (libsignal's unacknowledged-session age), and the relay
/// keeps the last such message for its retention period; a week's margin on top.
pub const STALE_PREKEY_GRACE_MS: i64 = (30 + MESSAGE_RETENTION_DAYS as i64 + 7) * DAY_MS;

/// Row counts of what the store holds, for the app's diagnostics and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Messages in the history.
    pub messages: u64,
    /// Relay message ids remembered for de-duplication.
    pub processed_ids: u64,
    /// Private one-time prekeys on the device.
    pub one_time_prekeys: u64,
    /// Of those, the ones the relay no longer holds (deleted after a grace period).
    pub stale_one_time_prekeys: u64,
    /// Entries waiting in the outbox.
    pub outbox: u64,
}

impl Store {
    fn count_rows(&self, sql: &str) -> CoreResult<u64> {
        let n: i64 = self.query_opt(sql, [], |r| r.get(0))?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// What the store holds.
    pub fn usage(&self) -> CoreResult<StoreUsage> {
        Ok(StoreUsage {
            messages: self.count_rows("SELECT COUNT(*) FROM messages")?,
            processed_ids: self.count_rows("SELECT COUNT(*) FROM processed_messages")?,
            one_time_prekeys: self.count_rows("SELECT COUNT(*) FROM prekeys")?,
            stale_one_time_prekeys: self
                .count_rows("SELECT COUNT(*) FROM prekeys WHERE stale_since IS NOT NULL")?,
            outbox: self.count_rows("SELECT COUNT(*) FROM outbox")?,
        })
    }

    /// The relay says it holds `held` of this device's one-time prekeys. It hands them out
    /// oldest first, so it holds the newest `held` of those whose upload it confirmed;
    /// every older confirmed one is marked stale at `now`. Unconfirmed keys are left alone
    /// (they are uploaded again). Returns how many were marked.
    pub fn mark_stale_prekeys(&self, held: u64, now: i64) -> CoreResult<u64> {
        let held = i64::try_from(held).unwrap_or(i64::MAX);
        let n = self.exec(
            "UPDATE prekeys SET stale_since = ?1
             WHERE stale_since IS NULL AND uploaded = 1 AND id NOT IN (
                 SELECT id FROM prekeys WHERE stale_since IS NULL AND uploaded = 1
                 ORDER BY created_at DESC, id DESC LIMIT ?2)",
            params![now, held],
        )?;
        Ok(n as u64)
    }

    /// Records that the relay confirmed the upload of the one-time prekeys `ids` (all
    /// unconfirmed ones when `None`: registration uploads every key held).
    pub fn mark_prekeys_uploaded(&self, ids: Option<&[u32]>) -> CoreResult<()> {
        match ids {
            None => {
                self.exec(
                    "UPDATE prekeys SET uploaded = 1 WHERE uploaded = 0 AND stale_since IS NULL",
                    [],
                )?;
            }
            Some(ids) => {
                for id in ids {
                    self.exec("UPDATE prekeys SET uploaded = 1 WHERE id = ?1", [id])?;
                }
            }
        }
        Ok(())
    }

    /// Deletes one-time prekeys stale for longer than `STALE_PREKEY_GRACE_MS` at `now`.
    pub fn expire_stale_prekeys(&self, now: i64) -> CoreResult<u64> {
        let n = self.exec(
            "DELETE FROM prekeys WHERE stale_since IS NOT NULL AND stale_since < ?1",
            [now.saturating_sub(STALE_PREKEY_GRACE_MS)],
        )?;
        Ok(n as u64)
    }
}
