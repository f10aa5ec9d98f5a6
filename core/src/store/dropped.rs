//! Counts of incoming messages dropped, by reason: what attacks cost their senders.

use rusqlite::params;

use super::Store;
use crate::error::CoreResult;

/// Why an incoming message was acked and dropped instead of stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// It reused the id of another stored message (an attempt to rewrite history).
    ForgedId,
    /// Its sender is blocked.
    Blocked,
    /// Its sender used up their receive quota.
    OverQuota,
    /// It decrypted, but its padding or content was malformed.
    Malformed,
    /// It could not be decrypted.
    Undecryptable,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DropReason; 5] = [
        Self::ForgedId,
        Self::Blocked,
        Self::OverQuota,
        Self::Malformed,
        Self::Undecryptable,
    ];

    fn key(self) -> &'static str {
        match self {
            Self::ForgedId => "forged_id",
            Self::Blocked => "blocked",
            Self::OverQuota => "over_quota",
            Self::Malformed => "malformed",
            Self::Undecryptable => "undecryptable",
        }
    }
}

/// Messages dropped since the store was created, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DroppedCounts {
    /// Reused ids of stored messages.
    pub forged_id: u64,
    /// From blocked peers.
    pub blocked: u64,
    /// Over a peer's receive quota.
    pub over_quota: u64,
    /// Decrypted, but malformed (padding or content).
    pub malformed: u64,
    /// Undecryptable.
    pub undecryptable: u64,
}

impl Store {
    /// Counts one dropped message.
    pub fn count_dropped(&self, reason: DropReason) -> CoreResult<()> {
        self.exec(
            "INSERT INTO dropped_messages (reason, count) VALUES (?1, 1)
             ON CONFLICT (reason) DO UPDATE SET count = count + 1",
            params![reason.key()],
        )?;
        Ok(())
    }

    /// The counts so far.
    pub fn dropped_counts(&self) -> CoreResult<DroppedCounts> {
        let mut counts = DroppedCounts::default();
        for reason in DropReason::ALL {
            let n: i64 = self
                .query_opt(
                    "SELECT count FROM dropped_messages WHERE reason = ?1",
                    [reason.key()],
                    |r| r.get(0),
                )?
                .unwrap_or(0);
            let n = u64::try_from(n).unwrap_or(0);
            match reason {
                DropReason::ForgedId => counts.forged_id = n,
                DropReason::Blocked => counts.blocked = n,
                DropReason::OverQuota => counts.over_quota = n,
                DropReason::Malformed => counts.malformed = n,
                DropReason::Undecryptable => counts.undecryptable = n,
            }
        }
        Ok(counts)
    }
}
