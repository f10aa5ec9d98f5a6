//! The persistent outbox and the contact list.

use rusqlite::params;
use uuid::Uuid;

use super::Store;
use crate::crypto::codec::{Reader, Writer};
use crate::error::{CoreError, CoreResult};

const OUTBOX: &str = "outbox";
const CONTACTS: &str = "contacts";

/// A message waiting to be accepted by the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The entry's id: the id of its `send` frame, which the relay sees and de-duplicates
    /// resends by. Random, and unrelated to the message id inside the envelope, so the
    /// relay cannot tell a peer which id to reuse.
    pub id: Uuid,
    /// The recipient.
    pub peer: Uuid,
    /// The plaintext envelope to encrypt (and pad) at send time.
    pub envelope: Vec<u8>,
    /// The history message this entry carries, whose state follows the relay's answers
    /// (`None` for receipts and call signals).
    pub message: Option<Uuid>,
}

impl Store {
    /// Queues `envelope` for `peer` under the fresh outbox id `id`; `message` is the history
    /// message it carries, if any.
    pub fn enqueue(
        &self,
        id: Uuid,
        peer: Uuid,
        envelope: &[u8],
        message: Option<Uuid>,
        now: i64,
    ) -> CoreResult<()> {
        let message = message.map(|m| m.as_bytes().to_vec()).unwrap_or_default();
        let plain = Writer::new()
            .bytes(peer.as_bytes())
            .bytes(envelope)
            .bytes(&message)
            .finish();
        let sealed = self.keys().seal(OUTBOX, id.as_bytes(), &plain);
        self.exec(
            "INSERT INTO outbox (id, created_at, sealed) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
            params![&id.as_bytes()[..], now, sealed],
        )?;
        Ok(())
    }

    /// The oldest `limit` entries, in the order they were queued.
    pub fn outbox(&self, limit: usize) -> CoreResult<Vec<OutboxEntry>> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT id, sealed FROM outbox ORDER BY seq LIMIT ?1")?;
        let rows = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, sealed)| {
                let plain = self.keys().open(OUTBOX, &id, &sealed)?;
                let mut r = Reader::new(&plain, OUTBOX);
                let peer = Uuid::from_slice(r.bytes()?)
                    .map_err(|_| CoreError::Tampered { table: OUTBOX })?;
                let envelope = r.bytes()?.to_vec();
                let id =
                    Uuid::from_slice(&id).map_err(|_| CoreError::Tampered { table: OUTBOX })?;
                // Entries of schema 2 end here: their id was the message id.
                let message = if r.is_at_end() {
                    Some(id)
                } else {
                    match r.bytes()? {
                        [] => None,
                        bytes => Some(
                            Uuid::from_slice(bytes)
                                .map_err(|_| CoreError::Tampered { table: OUTBOX })?,
                        ),
                    }
                };
                r.end()?;
                Ok(OutboxEntry {
                    id,
                    peer,
                    envelope,
                    message,
                })
            })
            .collect()
    }

    /// Removes an entry (the relay stored it, or it failed for good). False if absent.
    pub fn dequeue(&self, id: Uuid) -> CoreResult<bool> {
        Ok(self.exec("DELETE FROM outbox WHERE id = ?1", [&id.as_bytes()[..]])? > 0)
    }

    /// Entries queued.
    pub fn outbox_len(&self) -> CoreResult<u64> {
        let n: i64 = self
            .query_opt("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?
            .unwrap_or(0);
        Ok(n.max(0) as u64)
    }

    /// Remembers that `peer` has phone hash `phone_hash`.
    pub fn save_contact(&self, peer: Uuid, phone_hash: &str) -> CoreResult<()> {
        let hash = self.keys().lookup("peer", peer.as_bytes());
        let plain = Writer::new()
            .bytes(peer.as_bytes())
            .bytes(phone_hash.as_bytes())
            .finish();
        let sealed = self.keys().seal(CONTACTS, &hash, &plain);
        self.exec(
            "INSERT INTO contacts (peer_hash, sealed) VALUES (?1, ?2)
             ON CONFLICT (peer_hash) DO UPDATE SET sealed = excluded.sealed",
            params![&hash[..], sealed],
        )?;
        Ok(())
    }

    /// The phone hash of `peer`, if known.
    pub fn contact_phone_hash(&self, peer: Uuid) -> CoreResult<Option<String>> {
        let hash = self.keys().lookup("peer", peer.as_bytes());
        let sealed: Option<Vec<u8>> = self.query_opt(
            "SELECT sealed FROM contacts WHERE peer_hash = ?1",
            [&hash[..]],
            |r| r.get(0),
        )?;
        sealed
            .map(|s| {
                let plain = self.keys().open(CONTACTS, &hash, &s)?;
                let mut r = Reader::new(&plain, CONTACTS);
                if r.bytes()? != peer.as_bytes() {
                    return Err(CoreError::Tampered { table: CONTACTS });
                }
                let phone_hash = String::from_utf8(r.bytes()?.to_vec())
                    .map_err(|_| CoreError::Tampered { table: CONTACTS })?;
                r.end()?;
                Ok(phone_hash)
            })
            .transpose()
    }
}

impl Store {
    /// The contact with phone hash `phone_hash`, if known. Scans the (small) contact list,
    /// since contacts are filed under keyed hashes of their ids only.
    pub fn contact_by_phone_hash(&self, phone_hash: &str) -> CoreResult<Option<Uuid>> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT peer_hash, sealed FROM contacts")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (hash, sealed) in rows {
            let plain = self.keys().open(CONTACTS, &hash, &sealed)?;
            let mut r = Reader::new(&plain, CONTACTS);
            let peer = Uuid::from_slice(r.bytes()?)
                .map_err(|_| CoreError::Tampered { table: CONTACTS })?;
            if r.bytes()? == phone_hash.as_bytes() {
                return Ok(Some(peer));
            }
        }
        Ok(None)
    }
}
