//! Per-peer receive quotas: how much one peer may store on this device in a window, so
//! that anyone who knows the user's number cannot fill the phone.

use rusqlite::params;
use uuid::Uuid;

use super::Store;
use crate::error::{CoreError, CoreResult};

const QUOTA: &str = "receive_quota";

/// How much one peer may store on this device per window. Defaults: 5,000 messages and
/// 16 MiB of text per peer per 24 hours (a very chatty friend stays far below; a flood
/// stops there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveQuota {
    /// Messages per window.
    pub messages: u32,
    /// Bytes of text per window.
    pub bytes: u64,
    /// Length of a window, milliseconds.
    pub window_ms: i64,
}

impl Default for ReceiveQuota {
    fn default() -> Self {
        Self {
            messages: 5_000,
            bytes: 16 * 1024 * 1024,
            window_ms: 24 * 60 * 60 * 1000,
        }
    }
}

impl ReceiveQuota {
    /// Checks the quota is usable: at least one message, 1 KiB and one minute per window.
    pub fn validate(&self) -> CoreResult<()> {
        if self.messages == 0 || self.bytes < 1024 || self.window_ms < 60_000 {
            return Err(CoreError::InvalidArgument(
                "receive quota: at least 1 message, 1 KiB and 60 s per window".into(),
            ));
        }
        Ok(())
    }
}

impl Store {
    /// Charges one message of `bytes` from `peer` at `now` against `quota`: true if it fits
    /// (and is now counted), false if the peer's window is full. A window starts with the
    /// first message after the previous one ended.
    pub fn charge_quota(
        &self,
        peer: Uuid,
        bytes: u64,
        now: i64,
        quota: &ReceiveQuota,
    ) -> CoreResult<bool> {
        let hash = self.keys().lookup("peer", peer.as_bytes());
        let current: Option<(i64, i64, i64)> = self.query_opt(
            "SELECT window_start, messages, bytes FROM receive_quota WHERE peer_hash = ?1",
            [&hash[..]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let (start, messages, used) = match current {
            // A window that starts in the future (the clock was ahead) starts over.
            Some((start, messages, used))
                if now >= start && now.saturating_sub(start) < quota.window_ms =>
            {
                (start, messages, used)
            }
            _ => (now, 0, 0),
        };
        let messages = messages.saturating_add(1);
        let used = used.saturating_add(bytes);
        if messages > i64::from(quota.messages)
            || used > i64::try_from(quota.bytes).unwrap_or(i64::MAX)
        {
            return Ok(false);
        }
        let sealed = self.keys().seal(QUOTA, &hash, peer.as_bytes());
        self.exec(
            "INSERT INTO receive_quota (peer_hash, window_start, messages, bytes, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (peer_hash) DO UPDATE SET window_start = excluded.window_start,
                 messages = excluded.messages, bytes = excluded.bytes",
            params![&hash[..], start, messages, used, sealed],
        )?;
        Ok(true)
    }

    /// Forgets quota windows that ended before `now` (they would restart anyway).
    pub fn prune_quotas(&self, now: i64, quota: &ReceiveQuota) -> CoreResult<u64> {
        let n = self.exec(
            "DELETE FROM receive_quota WHERE window_start <= ?1 OR window_start > ?2",
            params![now.saturating_sub(quota.window_ms), now],
        )?;
        Ok(n as u64)
    }
}
