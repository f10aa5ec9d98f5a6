//! The block list: peers whose messages are acked and dropped unread.

use rusqlite::params;
use uuid::Uuid;

use super::Store;
use crate::error::{CoreError, CoreResult};

const BLOCKED: &str = "blocked_peers";

impl Store {
    /// Blocks `peer`; false if they were blocked already.
    pub fn block_peer(&self, peer: Uuid) -> CoreResult<bool> {
        let hash = self.keys().lookup("peer", peer.as_bytes());
        let sealed = self.keys().seal(BLOCKED, &hash, peer.as_bytes());
        let n = self.exec(
            "INSERT INTO blocked_peers (peer_hash, sealed) VALUES (?1, ?2)
             ON CONFLICT (peer_hash) DO NOTHING",
            params![&hash[..], sealed],
        )?;
        Ok(n > 0)
    }

    /// Unblocks `peer`; false if they were not blocked.
    pub fn unblock_peer(&self, peer: Uuid) -> CoreResult<bool> {
        let hash = self.keys().lookup("peer", peer.as_bytes());
        let n = self.exec(
            "DELETE FROM blocked_peers WHERE peer_hash = ?1",
            [&hash[..]],
        )?;
        Ok(n > 0)
    }

    /// True if `peer` is blocked.
    pub fn is_blocked(&self, peer: Uuid) -> CoreResult<bool> {
        let hash = self.keys().lookup("peer", peer.as_bytes());
        let found: Option<i64> = self.query_opt(
            "SELECT 1 FROM blocked_peers WHERE peer_hash = ?1",
            [&hash[..]],
            |r| r.get(0),
        )?;
        Ok(found.is_some())
    }

    /// Every blocked peer, in no particular order.
    pub fn blocked_peers(&self) -> CoreResult<Vec<Uuid>> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT peer_hash, sealed FROM blocked_peers")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(hash, sealed)| {
                let plain = self.keys().open(BLOCKED, &hash, &sealed)?;
                Uuid::from_slice(&plain).map_err(|_| CoreError::Tampered { table: BLOCKED })
            })
            .collect()
    }
}
