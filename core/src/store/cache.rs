//! Decrypted sessions and peer identities kept in memory, so a message costs one sealed
//! write instead of a read, an open, a parse and a write.
//!
//! Changes made inside a transaction are staged and become visible to later transactions
//! only when it commits; a rollback discards them, so the cache never shows state the
//! database does not hold. A session saved inside a transaction reaches its row only just
//! before the commit, in its last state: a batch that advances it per message seals and
//! writes it once.

use std::collections::HashMap;

use libsignal_protocol::SessionRecord;

use super::signal::PeerIdentity;

/// Entries kept per kind before the cache is emptied (it refills on demand).
const CAPACITY: usize = 4096;

#[derive(Default)]
pub(crate) struct RecordCache {
    sessions: HashMap<String, SessionRecord>,
    identities: HashMap<String, Option<PeerIdentity>>,
    staged_sessions: Vec<(String, SessionRecord)>,
    staged_identities: Vec<(String, Option<PeerIdentity>)>,
    /// Keys of staged sessions whose rows are not written yet (see `stage_session_write`).
    unwritten_sessions: Vec<String>,
    in_transaction: bool,
}

impl RecordCache {
    pub(crate) fn begin(&mut self) {
        self.in_transaction = true;
    }

    pub(crate) fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    pub(crate) fn commit(&mut self) {
        self.in_transaction = false;
        self.unwritten_sessions.clear();
        for (key, record) in std::mem::take(&mut self.staged_sessions) {
            insert_bounded(&mut self.sessions, key, record);
        }
        for (key, identity) in std::mem::take(&mut self.staged_identities) {
            insert_bounded(&mut self.identities, key, identity);
        }
    }

    pub(crate) fn rollback(&mut self) {
        self.in_transaction = false;
        self.unwritten_sessions.clear();
        self.staged_sessions.clear();
        self.staged_identities.clear();
    }

    pub(crate) fn session(&self, key: &str) -> Option<SessionRecord> {
        self.staged_sessions
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, r)| r.clone())
            .or_else(|| self.sessions.get(key).cloned())
    }

    /// Records a session read from, or written to, the database.
    pub(crate) fn put_session(&mut self, key: String, record: SessionRecord, written: bool) {
        if written && self.in_transaction {
            self.stage_session(key, record);
        } else if !self.staged_sessions.iter().any(|(k, _)| *k == key) {
            insert_bounded(&mut self.sessions, key, record);
        }
    }

    /// Stages a session saved inside the transaction whose row is written only when the
    /// transaction commits (`take_unwritten_sessions`), so it is sealed and written once
    /// however often the transaction advanced it.
    pub(crate) fn stage_session_write(&mut self, key: String, record: SessionRecord) {
        if !self.unwritten_sessions.contains(&key) {
            self.unwritten_sessions.push(key.clone());
        }
        self.stage_session(key, record);
    }

    /// The staged sessions whose rows are still to be written, in their last state.
    pub(crate) fn take_unwritten_sessions(&mut self) -> Vec<(String, SessionRecord)> {
        std::mem::take(&mut self.unwritten_sessions)
            .into_iter()
            .filter_map(|key| {
                let record = self
                    .staged_sessions
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, r)| r.clone())?;
                Some((key, record))
            })
            .collect()
    }

    /// Only the latest staged state of a key is ever read, so it replaces an earlier one.
    fn stage_session(&mut self, key: String, record: SessionRecord) {
        match self.staged_sessions.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = record,
            None => self.staged_sessions.push((key, record)),
        }
    }

    /// Drops a deleted session (staged too, so a rollback cannot resurrect a stale copy
    /// either: the next read goes to the database).
    pub(crate) fn forget_session(&mut self, key: &str) {
        self.sessions.remove(key);
        self.staged_sessions.retain(|(k, _)| k != key);
        self.unwritten_sessions.retain(|k| k != key);
    }

    pub(crate) fn identity(&self, key: &str) -> Option<Option<PeerIdentity>> {
        self.staged_identities
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, i)| i.clone())
            .or_else(|| self.identities.get(key).cloned())
    }

    /// Records an identity (or its absence) read from, or written to, the database.
    pub(crate) fn put_identity(
        &mut self,
        key: String,
        identity: Option<PeerIdentity>,
        written: bool,
    ) {
        if written && self.in_transaction {
            self.staged_identities.push((key, identity));
        } else if !self.staged_identities.iter().any(|(k, _)| *k == key) {
            insert_bounded(&mut self.identities, key, identity);
        }
    }
}

fn insert_bounded<V>(map: &mut HashMap<String, V>, key: String, value: V) {
    if map.len() >= CAPACITY && !map.contains_key(&key) {
        map.clear();
    }
    map.insert(key, value);
}
