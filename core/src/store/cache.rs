//! Decrypted sessions and peer identities kept in memory, so a message costs one sealed
//! write instead of a read, an open, a parse and a write.
//!
//! Changes made inside a transaction are staged and become visible to later transactions
//! only when it commits; a rollback discards them, so the cache never shows state the
//! database does not hold.

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
    in_transaction: bool,
}

impl RecordCache {
    pub(crate) fn begin(&mut self) {
        self.in_transaction = true;
    }

    pub(crate) fn commit(&mut self) {
        self.in_transaction = false;
        for (key, record) in std::mem::take(&mut self.staged_sessions) {
            insert_bounded(&mut self.sessions, key, record);
        }
        for (key, identity) in std::mem::take(&mut self.staged_identities) {
            insert_bounded(&mut self.identities, key, identity);
        }
    }

    pub(crate) fn rollback(&mut self) {
        self.in_transaction = false;
        self.staged_sessions.clear();
        self.staged_identities.clear();
    }

    pub(crate) fn session(&self, key: &str) -> Option<SessionRecord> {
        self.staged_sessions
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, r)| r.clone())
            .or_else(|| self.sessions.get(key).cloned())
    }

    /// Records a session read from, or written to, the database.
    pub(crate) fn put_session(&mut self, key: String, record: SessionRecord, written: bool) {
        if written && self.in_transaction {
            self.staged_sessions.push((key, record));
        } else if !self.staged_sessions.iter().any(|(k, _)| *k == key) {
            insert_bounded(&mut self.sessions, key, record);
        }
    }

    /// Drops a deleted session (staged too, so a rollback cannot resurrect a stale copy
    /// either: the next read goes to the database).
    pub(crate) fn forget_session(&mut self, key: &str) {
        self.sessions.remove(key);
        self.staged_sessions.retain(|(k, _)| k != key);
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
