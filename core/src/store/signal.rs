//! libsignal's store traits over the encrypted SQLite store.
//!
//! `SignalView` is a cheap `Copy` view of the `Store`; libsignal functions want several
//! `&mut dyn …Store` at once, so each gets its own copy of the view. Errors from the store are
//! passed through libsignal as `ApplicationCallbackError` and recovered by `into_core_error`.

use async_trait::async_trait;
use libsignal_protocol::{
    Direction, GenericSignedPreKey, IdentityChange, IdentityKey, IdentityKeyPair, IdentityKeyStore,
    KyberPreKeyId, KyberPreKeyRecord, KyberPreKeyStore, PreKeyId, PreKeyRecord, PreKeyStore,
    ProtocolAddress, PublicKey, SessionRecord, SessionStore, SignalProtocolError, SignedPreKeyId,
    SignedPreKeyRecord, SignedPreKeyStore,
};
use rusqlite::params;
use sha2::{Digest, Sha256};

use super::Store;
use crate::crypto::codec::{Reader, Writer};
use crate::error::{CoreError, CoreResult};

type SignalResult<T> = Result<T, SignalProtocolError>;

/// Stand-in error handed to libsignal when the store fails; the real `CoreError` waits in
/// `Store::stashed_error` (libsignal requires callback errors to be `UnwindSafe`, which
/// database errors are not).
#[derive(Debug, thiserror::Error)]
#[error("store failure (see the stashed error)")]
struct StoreFailure;

impl Store {
    /// Keeps `err` for `take_stashed_error` and returns the error to give libsignal.
    fn stash(&self, method: &'static str, err: CoreError) -> SignalProtocolError {
        *self.stashed_error.borrow_mut() = Some(err);
        SignalProtocolError::ApplicationCallbackError(method, Box::new(StoreFailure))
    }

    /// Records the identity key last refused by `is_trusted_identity` as the peer's pending
    /// key, so the app can accept exactly that key. Call after the refused operation's
    /// transaction has ended.
    pub fn record_untrusted(&self) -> CoreResult<()> {
        let Some((address, presented)) = self.untrusted.borrow_mut().take() else {
            return Ok(());
        };
        self.write(|store| match store.peer_identity(&address)? {
            Some(mut known) if known.trusted != presented && known.pending != Some(presented) => {
                known.pending = Some(presented);
                store.save_peer_identity(&address, &known)
            }
            _ => Ok(()),
        })
    }

    /// The store error behind the last `ApplicationCallbackError`, if any.
    pub fn take_stashed_error(&self) -> Option<CoreError> {
        self.stashed_error.borrow_mut().take()
    }
}

/// Turns a libsignal error into the core's error. Store failures should be recovered with
/// `Store::take_stashed_error` first.
pub fn into_core_error(err: SignalProtocolError) -> CoreError {
    match err {
        SignalProtocolError::DuplicatedMessage(..) => CoreError::DuplicateMessage,
        SignalProtocolError::SignatureValidationFailed
        | SignalProtocolError::BadKEMKeyType(_)
        | SignalProtocolError::WrongKEMKeyType(..)
        | SignalProtocolError::BadKEMKeyLength(..)
        | SignalProtocolError::BadKeyType(_)
        | SignalProtocolError::BadKeyLength(..)
        | SignalProtocolError::NoKeyTypeIdentifier => CoreError::InvalidBundle(err.to_string()),
        SignalProtocolError::InvalidMessage(_, "reused base key") => CoreError::DuplicateMessage,
        SignalProtocolError::InvalidMessage(..)
        | SignalProtocolError::InvalidProtobufEncoding
        | SignalProtocolError::CiphertextMessageTooShort(_)
        | SignalProtocolError::LegacyCiphertextVersion(_)
        | SignalProtocolError::UnrecognizedCiphertextVersion(_)
        | SignalProtocolError::UnrecognizedMessageVersion(_)
        | SignalProtocolError::InvalidPreKeyId
        | SignalProtocolError::InvalidSignedPreKeyId
        | SignalProtocolError::InvalidKyberPreKeyId
        | SignalProtocolError::BadKEMCiphertextLength(..)
        | SignalProtocolError::InvalidSessionStructure(_) => {
            CoreError::InvalidMessage(err.to_string())
        }
        other => CoreError::Protocol(other.to_string()),
    }
}

/// The key a peer's session and identity rows are filed under.
pub fn address_key(address: &ProtocolAddress) -> String {
    format!("{}.{}", address.name(), u32::from(address.device_id()))
}

/// A peer's identity as this device knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The identity key trusted for this peer.
    pub trusted: IdentityKey,
    /// The user compared safety numbers and marked the peer verified.
    pub verified: bool,
    /// A different key the peer presented that the app has not accepted yet.
    pub pending: Option<IdentityKey>,
}

const IDENTITIES: &str = "peer_identities";
const SESSIONS: &str = "sessions";

impl PeerIdentity {
    fn encode(&self, address: &str) -> zeroize::Zeroizing<Vec<u8>> {
        let pending = self
            .pending
            .map(|k| k.serialize().to_vec())
            .unwrap_or_default();
        Writer::new()
            .bytes(address.as_bytes())
            .bytes(&self.trusted.serialize())
            .u8(u8::from(self.verified))
            .bytes(&pending)
            .finish()
    }

    fn decode(data: &[u8], address: &str) -> CoreResult<Self> {
        let table = IDENTITIES;
        let mut r = Reader::new(data, table);
        if r.bytes()? != address.as_bytes() {
            return Err(CoreError::Tampered { table });
        }
        let trusted = IdentityKey::decode(r.bytes()?).map_err(|_| CoreError::Tampered { table })?;
        let verified = r.u8()? != 0;
        let pending = r.bytes()?;
        let pending = if pending.is_empty() {
            None
        } else {
            Some(IdentityKey::decode(pending).map_err(|_| CoreError::Tampered { table })?)
        };
        r.end()?;
        Ok(Self {
            trusted,
            verified,
            pending,
        })
    }
}

impl Store {
    /// The stored identity state of the peer at `address`.
    pub fn peer_identity(&self, address: &ProtocolAddress) -> CoreResult<Option<PeerIdentity>> {
        let key = address_key(address);
        if let Some(cached) = self.cache.borrow().identity(&key) {
            return Ok(cached);
        }
        let hash = self.keys().lookup("address", key.as_bytes());
        let sealed: Option<Vec<u8>> = self.query_opt(
            "SELECT sealed FROM peer_identities WHERE address_hash = ?1",
            [&hash[..]],
            |r| r.get(0),
        )?;
        let identity = sealed
            .map(|s| {
                let plain = self.keys().open(IDENTITIES, &hash, &s)?;
                PeerIdentity::decode(&plain, &key)
            })
            .transpose()?;
        self.cache
            .borrow_mut()
            .put_identity(key, identity.clone(), false);
        Ok(identity)
    }

    /// Writes the identity state of the peer at `address`.
    pub fn save_peer_identity(
        &self,
        address: &ProtocolAddress,
        identity: &PeerIdentity,
    ) -> CoreResult<()> {
        let key = address_key(address);
        let hash = self.keys().lookup("address", key.as_bytes());
        let sealed = self.keys().seal(IDENTITIES, &hash, &identity.encode(&key));
        self.exec(
            "INSERT INTO peer_identities (address_hash, sealed) VALUES (?1, ?2)
             ON CONFLICT (address_hash) DO UPDATE SET sealed = excluded.sealed",
            params![&hash[..], sealed],
        )?;
        self.cache
            .borrow_mut()
            .put_identity(key, Some(identity.clone()), true);
        Ok(())
    }

    /// The session with `address`, if any.
    pub fn session(&self, address: &ProtocolAddress) -> CoreResult<Option<SessionRecord>> {
        let key = address_key(address);
        if let Some(cached) = self.cache.borrow().session(&key) {
            return Ok(Some(cached));
        }
        let hash = self.keys().lookup("address", key.as_bytes());
        let sealed: Option<Vec<u8>> = self.query_opt(
            "SELECT sealed FROM sessions WHERE address_hash = ?1",
            [&hash[..]],
            |r| r.get(0),
        )?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let plain = self.keys().open(SESSIONS, &hash, &sealed)?;
        let mut r = Reader::new(&plain, SESSIONS);
        if r.bytes()? != key.as_bytes() {
            return Err(CoreError::Tampered { table: SESSIONS });
        }
        let record = SessionRecord::deserialize(r.bytes()?)
            .map_err(|_| CoreError::Tampered { table: SESSIONS })?;
        r.end()?;
        self.cache
            .borrow_mut()
            .put_session(key, record.clone(), false);
        Ok(Some(record))
    }

    pub(crate) fn save_session(
        &self,
        address: &ProtocolAddress,
        record: &SessionRecord,
    ) -> CoreResult<()> {
        let key = address_key(address);
        // Inside a transaction the row is written once, at commit (`write_staged_sessions`):
        // a batch advances a session once per message, and only its last state is kept.
        if self.cache.borrow().in_transaction() {
            self.cache
                .borrow_mut()
                .stage_session_write(key, record.clone());
            return Ok(());
        }
        self.write_session_row(&key, record)?;
        self.cache
            .borrow_mut()
            .put_session(key, record.clone(), true);
        Ok(())
    }

    /// Seals and writes the row of the session filed under `key`.
    fn write_session_row(&self, key: &str, record: &SessionRecord) -> CoreResult<()> {
        let hash = self.keys().lookup("address", key.as_bytes());
        let bytes = zeroize::Zeroizing::new(
            record
                .serialize()
                .map_err(|e| CoreError::Protocol(e.to_string()))?,
        );
        let plain = Writer::new().bytes(key.as_bytes()).bytes(&bytes).finish();
        let sealed = self.keys().seal(SESSIONS, &hash, &plain);
        self.exec(
            "INSERT INTO sessions (address_hash, sealed) VALUES (?1, ?2)
             ON CONFLICT (address_hash) DO UPDATE SET sealed = excluded.sealed",
            params![&hash[..], sealed],
        )?;
        Ok(())
    }

    /// Writes the rows of the sessions saved in this transaction, each in its last state.
    /// `Store::write` calls it just before committing.
    pub(crate) fn write_staged_sessions(&self) -> CoreResult<()> {
        let unwritten = self.cache.borrow_mut().take_unwritten_sessions();
        for (key, record) in unwritten {
            self.write_session_row(&key, &record)?;
        }
        Ok(())
    }

    /// Deletes the session with `address`.
    pub fn delete_session(&self, address: &ProtocolAddress) -> CoreResult<()> {
        let key = address_key(address);
        let hash = self.keys().lookup("address", key.as_bytes());
        self.exec("DELETE FROM sessions WHERE address_hash = ?1", [&hash[..]])?;
        self.cache.borrow_mut().forget_session(&key);
        Ok(())
    }

    pub(crate) fn load_by_id(
        &self,
        table: &'static str,
        id: u32,
    ) -> CoreResult<Option<zeroize::Zeroizing<Vec<u8>>>> {
        let sql = match table {
            "prekeys" => "SELECT sealed FROM prekeys WHERE id = ?1",
            "signed_prekeys" => "SELECT sealed FROM signed_prekeys WHERE id = ?1",
            _ => "SELECT sealed FROM kyber_prekeys WHERE id = ?1",
        };
        let sealed: Option<Vec<u8>> = self.query_opt(sql, [id], |r| r.get(0))?;
        sealed
            .map(|s| self.keys().open(table, &id.to_be_bytes(), &s))
            .transpose()
    }

    pub(crate) fn save_by_id(
        &self,
        table: &'static str,
        id: u32,
        plain: &[u8],
        created_at: i64,
    ) -> CoreResult<()> {
        let sealed = self.keys().seal(table, &id.to_be_bytes(), plain);
        let sql = match table {
            "prekeys" => {
                "INSERT INTO prekeys (id, created_at, sealed, uploaded) VALUES (?1, ?3, ?2, 0)
                 ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed,
                     created_at = excluded.created_at, stale_since = NULL, uploaded = 0"
            }
            "signed_prekeys" => {
                "INSERT INTO signed_prekeys (id, created_at, sealed) VALUES (?1, ?3, ?2)
                 ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed"
            }
            _ => {
                "INSERT INTO kyber_prekeys (id, created_at, sealed) VALUES (?1, ?3, ?2)
                 ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed"
            }
        };
        self.exec(sql, params![id, sealed, created_at])?;
        Ok(())
    }

    /// Ids of the one-time prekeys still held.
    pub fn one_time_prekey_count(&self) -> CoreResult<u64> {
        let n: i64 = self
            .query_opt("SELECT COUNT(*) FROM prekeys", [], |r| r.get(0))?
            .unwrap_or(0);
        Ok(n.max(0) as u64)
    }
}

/// A view of the store implementing libsignal's store traits.
#[derive(Clone, Copy)]
pub struct SignalView<'a>(pub &'a Store);

fn now_ms() -> i64 {
    crate::clock::system_now_ms()
}

impl SignalView<'_> {
    /// Loads and parses record `id` of a prekey table; `missing` when there is none.
    fn load_record<R>(
        &self,
        table: &'static str,
        id: u32,
        parse: impl FnOnce(&[u8]) -> SignalResult<R>,
        missing: SignalProtocolError,
    ) -> SignalResult<R> {
        match self
            .0
            .load_by_id(table, id)
            .map_err(|e| self.0.stash(table, e))?
        {
            Some(plain) => parse(&plain),
            None => Err(missing),
        }
    }

    /// Seals and writes serialized record `id` of a prekey table.
    fn save_record(
        &self,
        table: &'static str,
        id: u32,
        serialized: SignalResult<Vec<u8>>,
    ) -> SignalResult<()> {
        let bytes = zeroize::Zeroizing::new(serialized?);
        self.0
            .save_by_id(table, id, &bytes, now_ms())
            .map_err(|e| self.0.stash(table, e))
    }
}

#[async_trait(?Send)]
impl IdentityKeyStore for SignalView<'_> {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        self.0
            .account()
            .map(|a| a.identity)
            .map_err(|e| self.0.stash("get_identity_key_pair", e))
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        self.0
            .account()
            .map(|a| a.registration_id)
            .map_err(|e| self.0.stash("get_local_registration_id", e))
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        let result = (|| {
            match self.0.peer_identity(address)? {
                Some(known) if known.trusted == *identity => Ok(IdentityChange::NewOrUnchanged),
                Some(_) => {
                    // Only reached after `is_trusted_identity` passed, i.e. the app accepted.
                    self.0.save_peer_identity(
                        address,
                        &PeerIdentity {
                            trusted: *identity,
                            verified: false,
                            pending: None,
                        },
                    )?;
                    Ok(IdentityChange::ReplacedExisting)
                }
                None => {
                    self.0.save_peer_identity(
                        address,
                        &PeerIdentity {
                            trusted: *identity,
                            verified: false,
                            pending: None,
                        },
                    )?;
                    Ok(IdentityChange::NewOrUnchanged)
                }
            }
        })();
        result.map_err(|e| self.0.stash("save_identity", e))
    }

    async fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        _direction: Direction,
    ) -> SignalResult<bool> {
        let result = (|| match self.0.peer_identity(address)? {
            // Trust on first use.
            None => Ok(true),
            Some(known) if known.trusted == *identity => Ok(true),
            Some(_) => {
                // The surrounding transaction rolls back on this refusal, so the presented key
                // is kept aside and recorded as pending afterwards (`record_untrusted`).
                *self.0.untrusted.borrow_mut() = Some((address.clone(), *identity));
                Ok(false)
            }
        })();
        result.map_err(|e| self.0.stash("is_trusted_identity", e))
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        self.0
            .peer_identity(address)
            .map(|p| p.map(|p| p.trusted))
            .map_err(|e| self.0.stash("get_identity", e))
    }
}

#[async_trait(?Send)]
impl SessionStore for SignalView<'_> {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        self.0
            .session(address)
            .map_err(|e| self.0.stash("load_session", e))
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: &SessionRecord,
    ) -> SignalResult<()> {
        self.0
            .save_session(address, record)
            .map_err(|e| self.0.stash("store_session", e))
    }
}

#[async_trait(?Send)]
impl PreKeyStore for SignalView<'_> {
    async fn get_pre_key(&self, id: PreKeyId) -> SignalResult<PreKeyRecord> {
        self.load_record(
            "prekeys",
            id.into(),
            PreKeyRecord::deserialize,
            SignalProtocolError::InvalidPreKeyId,
        )
    }

    async fn save_pre_key(&mut self, id: PreKeyId, record: &PreKeyRecord) -> SignalResult<()> {
        self.save_record("prekeys", id.into(), record.serialize())
    }

    async fn remove_pre_key(&mut self, id: PreKeyId) -> SignalResult<()> {
        self.0
            .exec("DELETE FROM prekeys WHERE id = ?1", [u32::from(id)])
            .map(|_| ())
            .map_err(|e| self.0.stash("remove_pre_key", e))
    }
}

#[async_trait(?Send)]
impl SignedPreKeyStore for SignalView<'_> {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        self.load_record(
            "signed_prekeys",
            id.into(),
            SignedPreKeyRecord::deserialize,
            SignalProtocolError::InvalidSignedPreKeyId,
        )
    }

    async fn save_signed_pre_key(
        &mut self,
        id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        self.save_record("signed_prekeys", id.into(), record.serialize())
    }
}

#[async_trait(?Send)]
impl KyberPreKeyStore for SignalView<'_> {
    async fn get_kyber_pre_key(&self, id: KyberPreKeyId) -> SignalResult<KyberPreKeyRecord> {
        self.load_record(
            "kyber_prekeys",
            id.into(),
            KyberPreKeyRecord::deserialize,
            SignalProtocolError::InvalidKyberPreKeyId,
        )
    }

    async fn save_kyber_pre_key(
        &mut self,
        id: KyberPreKeyId,
        record: &KyberPreKeyRecord,
    ) -> SignalResult<()> {
        self.save_record("kyber_prekeys", id.into(), record.serialize())
    }

    async fn mark_kyber_pre_key_used(
        &mut self,
        kyber_id: KyberPreKeyId,
        signed_id: SignedPreKeyId,
        base_key: &PublicKey,
    ) -> SignalResult<()> {
        // The Kyber key is a last-resort key reused across handshakes; a handshake replayed
        // with the same base key must be refused.
        let mut digest = Sha256::new();
        digest.update(u32::from(kyber_id).to_be_bytes());
        digest.update(u32::from(signed_id).to_be_bytes());
        digest.update(base_key.serialize());
        let digest = digest.finalize();
        let inserted = self
            .0
            .exec(
                "INSERT INTO kyber_base_keys_seen (digest) VALUES (?1) ON CONFLICT DO NOTHING",
                [&digest[..]],
            )
            .map_err(|e| self.0.stash("mark_kyber_pre_key_used", e))?;
        if inserted == 0 {
            return Err(SignalProtocolError::InvalidMessage(
                libsignal_protocol::CiphertextMessageType::PreKey,
                "reused base key",
            ));
        }
        Ok(())
    }
}
