//! Account creation and the key material the relay needs.

use libsignal_protocol::{
    kem, GenericSignedPreKey, IdentityKeyPair, KeyPair, KyberPreKeyId, KyberPreKeyRecord, PreKeyId,
    PreKeyRecord, SignedPreKeyId, SignedPreKeyRecord, Timestamp,
};
use privcomm_protocol::limits::{MAX_PREKEY_ID, MAX_REGISTRATION_ID};
use privcomm_protocol::rest::{OneTimePreKey, RegisterRequest, SignedPreKey, TokenRequest};
use privcomm_protocol::{signing, Base64String, PhoneHash};
use rand::Rng;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{now_ms, SignalEngine};
use crate::error::{CoreError, CoreResult};
use crate::store::signal::SignalView;
use crate::store::{Account, Store};

const NEXT_PREKEY_ID: &str = "next_prekey_id";
const NEXT_SIGNED_PREKEY_ID: &str = "next_signed_prekey_id";
const CURRENT_SIGNED_PREKEY_ID: &str = "current_signed_prekey_id";
const CURRENT_KYBER_PREKEY_ID: &str = "current_kyber_prekey_id";

/// One-time prekeys created with a new account.
pub const INITIAL_ONE_TIME_PREKEYS: u32 = 100;

fn next_id(id: u32) -> u32 {
    if id >= MAX_PREKEY_ID {
        1
    } else {
        id + 1
    }
}

fn protocol_error(e: libsignal_protocol::SignalProtocolError) -> CoreError {
    crate::store::signal::into_core_error(e)
}

/// Like `protocol_error`, recovering a store failure behind the libsignal error.
fn store_error(
    store: &Store,
) -> impl FnOnce(libsignal_protocol::SignalProtocolError) -> CoreError + '_ {
    move |e| {
        store
            .take_stashed_error()
            .unwrap_or_else(|| protocol_error(e))
    }
}

impl SignalEngine {
    /// True once `create_account` has run on this store.
    pub fn has_account(&self) -> bool {
        self.store.account().is_ok()
    }

    /// Creates this device's identity, registration id, signed prekey, Kyber1024 last-resort
    /// prekey and `one_time_prekeys` one-time prekeys, all in one transaction.
    pub fn create_account(
        &mut self,
        phone_hash: &PhoneHash,
        one_time_prekeys: u32,
    ) -> CoreResult<()> {
        if self.has_account() {
            return Err(CoreError::AccountExists);
        }
        let mut rng = rand::rng();
        let account = Account {
            identity: IdentityKeyPair::generate(&mut rng),
            registration_id: rng.random_range(1..=MAX_REGISTRATION_ID),
            phone_hash: phone_hash.as_str().to_owned(),
            user_id: None,
        };
        self.store.write(|store| {
            store.put_account(&account)?;
            store.set_counter(NEXT_PREKEY_ID, 1)?;
            store.set_counter(NEXT_SIGNED_PREKEY_ID, 1)?;
            insert_signed_prekey(store, &account.identity)?;
            insert_kyber_prekey(store, &account.identity)?;
            insert_one_time_prekeys(store, one_time_prekeys)?;
            Ok(())
        })?;
        self.store.cache_account(account);
        Ok(())
    }

    /// Records the relay's id for this account after registration.
    pub fn set_user_id(&mut self, user_id: Uuid) -> CoreResult<()> {
        let account = self.store.account()?;
        let updated = Account {
            identity: account.identity,
            registration_id: account.registration_id,
            phone_hash: account.phone_hash.clone(),
            user_id: Some(user_id),
        };
        self.store.save_account(updated)
    }

    /// The relay's id for this account, once registered.
    pub fn user_id(&self) -> CoreResult<Option<Uuid>> {
        Ok(self.store.account()?.user_id)
    }

    /// This account's phone hash.
    pub fn phone_hash(&self) -> CoreResult<String> {
        Ok(self.store.account()?.phone_hash.clone())
    }

    fn sign(&self, message: &[u8]) -> CoreResult<Vec<u8>> {
        let account = self.store.account()?;
        account
            .identity
            .private_key()
            .calculate_signature(message, &mut rand::rng())
            .map(|s| s.into_vec())
            .map_err(|e| CoreError::Protocol(e.to_string()))
    }

    /// The `POST /api/v1/register` body for `nonce` (from `/auth/challenge`), with every
    /// one-time prekey held.
    pub fn registration_request(&self, nonce: &[u8]) -> CoreResult<RegisterRequest> {
        let account = self.store.account()?;
        Ok(RegisterRequest {
            phone_hash: account.phone_hash.clone(),
            registration_id: account.registration_id,
            identity_key: Base64String::encode(account.identity.identity_key().serialize()),
            nonce: Base64String::encode(nonce),
            signature: Base64String::encode(
                self.sign(&signing::register_message(nonce, &account.phone_hash))?,
            ),
            signed_prekey: self.current_signed_prekey()?,
            kyber_prekey: self.current_kyber_prekey()?,
            one_time_prekeys: self.held_one_time_prekeys()?,
            // Filled in by the caller, who has them.
            verification_code: String::new(),
            verification_session: String::new(),
            registration_lock: None,
        })
    }

    /// The `POST /auth/token` body for `nonce`.
    pub fn token_request(&self, nonce: &[u8]) -> CoreResult<TokenRequest> {
        let phone_hash = self.store.account()?.phone_hash.clone();
        Ok(TokenRequest {
            signature: Base64String::encode(self.sign(&signing::auth_message(nonce, &phone_hash))?),
            nonce: Base64String::encode(nonce),
            phone_hash,
        })
    }

    /// Creates `count` new one-time prekeys and returns their public halves for upload.
    pub fn generate_one_time_prekeys(&mut self, count: u32) -> CoreResult<Vec<OneTimePreKey>> {
        self.store
            .write(|store| insert_one_time_prekeys(store, count))
    }

    /// Creates a new signed prekey, makes it current and returns it for upload. Older signed
    /// prekeys stay so that sessions started from them still complete.
    pub fn rotate_signed_prekey(&mut self) -> CoreResult<SignedPreKey> {
        let identity = self.store.account()?.identity;
        self.store
            .write(|store| insert_signed_prekey(store, &identity))
    }

    /// Creates a new Kyber1024 last-resort prekey, makes it current and returns it for upload.
    pub fn rotate_kyber_prekey(&mut self) -> CoreResult<SignedPreKey> {
        let identity = self.store.account()?.identity;
        self.store
            .write(|store| insert_kyber_prekey(store, &identity))
    }

    /// The current signed prekey, as uploaded.
    pub fn current_signed_prekey(&self) -> CoreResult<SignedPreKey> {
        let (id, record) = self.current(
            CURRENT_SIGNED_PREKEY_ID,
            "signed_prekeys",
            SignedPreKeyRecord::deserialize,
        )?;
        let public_key = record.public_key().map_err(protocol_error)?.serialize();
        signed_body(id, &public_key, record.signature().map_err(protocol_error)?)
    }

    /// The current Kyber last-resort prekey, as uploaded.
    pub fn current_kyber_prekey(&self) -> CoreResult<SignedPreKey> {
        let (id, record) = self.current(
            CURRENT_KYBER_PREKEY_ID,
            "kyber_prekeys",
            KyberPreKeyRecord::deserialize,
        )?;
        let public_key = record.public_key().map_err(protocol_error)?.serialize();
        signed_body(id, &public_key, record.signature().map_err(protocol_error)?)
    }

    /// The record a `current_*` counter points at.
    fn current<R>(
        &self,
        counter: &str,
        table: &'static str,
        parse: fn(&[u8]) -> Result<R, libsignal_protocol::SignalProtocolError>,
    ) -> CoreResult<(u32, R)> {
        let id = self.store.counter(counter)?.ok_or(CoreError::NoAccount)?;
        let plain = self
            .store
            .load_by_id(table, id)?
            .ok_or(CoreError::Tampered { table })?;
        Ok((
            id,
            parse(&plain).map_err(|_| CoreError::Tampered { table })?,
        ))
    }

    /// Public halves of every one-time prekey still held.
    pub fn held_one_time_prekeys(&self) -> CoreResult<Vec<OneTimePreKey>> {
        self.one_time_prekeys_where("stale_since IS NULL")
    }

    /// The one-time prekeys whose upload the relay has not confirmed, to upload again.
    pub fn unconfirmed_one_time_prekeys(&self) -> CoreResult<Vec<OneTimePreKey>> {
        self.one_time_prekeys_where("stale_since IS NULL AND uploaded = 0")
    }

    fn one_time_prekeys_where(&self, filter: &'static str) -> CoreResult<Vec<OneTimePreKey>> {
        let ids: Vec<u32> = self
            .store
            .conn()
            .prepare(&format!(
                "SELECT id FROM prekeys WHERE {filter} ORDER BY created_at, id"
            ))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let view = SignalView(&self.store);
        ids.into_iter()
            .map(|id| {
                let record = super::run_now(libsignal_protocol::PreKeyStore::get_pre_key(
                    &view,
                    id.into(),
                ))?
                .map_err(store_error(&self.store))?;
                Ok(OneTimePreKey {
                    key_id: id,
                    public_key: Base64String::encode(
                        record.public_key().map_err(protocol_error)?.serialize(),
                    ),
                })
            })
            .collect()
    }

    /// Milliseconds since the current signed prekey was created.
    pub fn signed_prekey_age_ms(&self) -> CoreResult<i64> {
        let id = self
            .store
            .counter(CURRENT_SIGNED_PREKEY_ID)?
            .ok_or(CoreError::NoAccount)?;
        let created: i64 = self
            .store
            .query_opt(
                "SELECT created_at FROM signed_prekeys WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?
            .ok_or(CoreError::Tampered {
                table: "signed_prekeys",
            })?;
        Ok(now_ms().saturating_sub(created))
    }

    /// One-time prekeys still held on this device.
    pub fn one_time_prekey_count(&self) -> CoreResult<u64> {
        self.store.one_time_prekey_count()
    }
}

fn signed_body(id: u32, public_key: &[u8], signature: Vec<u8>) -> CoreResult<SignedPreKey> {
    Ok(SignedPreKey {
        key_id: id,
        public_key: Base64String::encode(public_key),
        signature: Base64String::encode(signature),
    })
}

fn insert_one_time_prekeys(store: &Store, count: u32) -> CoreResult<Vec<OneTimePreKey>> {
    let mut rng = rand::rng();
    let mut id = store.counter(NEXT_PREKEY_ID)?.unwrap_or(1);
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let pair = KeyPair::generate(&mut rng);
        let record = PreKeyRecord::new(PreKeyId::from(id), &pair);
        let bytes = Zeroizing::new(record.serialize().map_err(protocol_error)?);
        store.save_by_id("prekeys", id, &bytes, now_ms())?;
        out.push(OneTimePreKey {
            key_id: id,
            public_key: Base64String::encode(pair.public_key.serialize()),
        });
        id = next_id(id);
    }
    store.set_counter(NEXT_PREKEY_ID, id)?;
    Ok(out)
}

fn insert_signed_prekey(store: &Store, identity: &IdentityKeyPair) -> CoreResult<SignedPreKey> {
    let mut rng = rand::rng();
    let pair = KeyPair::generate(&mut rng);
    let signature = identity
        .private_key()
        .calculate_signature(&pair.public_key.serialize(), &mut rng)
        .map_err(|e| CoreError::Protocol(e.to_string()))?
        .into_vec();
    let id = store.counter(NEXT_SIGNED_PREKEY_ID)?.unwrap_or(1);
    let record = SignedPreKeyRecord::new(
        SignedPreKeyId::from(id),
        Timestamp::from_epoch_millis(u64::try_from(now_ms()).unwrap_or(0)),
        &pair,
        &signature,
    );
    let bytes = Zeroizing::new(record.serialize().map_err(protocol_error)?);
    store.save_by_id("signed_prekeys", id, &bytes, now_ms())?;
    store.set_counter(CURRENT_SIGNED_PREKEY_ID, id)?;
    store.set_counter(NEXT_SIGNED_PREKEY_ID, next_id(id))?;
    Ok(SignedPreKey {
        key_id: id,
        public_key: Base64String::encode(pair.public_key.serialize()),
        signature: Base64String::encode(&signature),
    })
}

fn insert_kyber_prekey(store: &Store, identity: &IdentityKeyPair) -> CoreResult<SignedPreKey> {
    let id = store
        .counter(CURRENT_KYBER_PREKEY_ID)?
        .map(next_id)
        .unwrap_or(1);
    let record = KyberPreKeyRecord::generate(
        kem::KeyType::Kyber1024,
        KyberPreKeyId::from(id),
        identity.private_key(),
    )
    .map_err(protocol_error)?;
    let bytes = Zeroizing::new(record.serialize().map_err(protocol_error)?);
    store.save_by_id("kyber_prekeys", id, &bytes, now_ms())?;
    store.set_counter(CURRENT_KYBER_PREKEY_ID, id)?;
    Ok(SignedPreKey {
        key_id: id,
        public_key: Base64String::encode(record.public_key().map_err(protocol_error)?.serialize()),
        signature: Base64String::encode(record.signature().map_err(protocol_error)?),
    })
}
