//! The encrypted client store: one SQLite file, every secret value sealed under the data key.

mod blocklist;
mod cache;
mod db;
pub mod dropped;
pub mod history;
pub mod outbox;
pub mod quota;
mod rotation;
pub mod signal;
pub mod upkeep;

use std::path::{Path, PathBuf};

use libsignal_protocol::IdentityKeyPair;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::crypto::codec::{Reader, Writer};
use crate::crypto::{DataKey, StoreKeys, WrapKey};
use crate::error::{CoreError, CoreResult};
use crate::secret_store::SecretStore;

pub use db::SCHEMA_VERSION;

const META_DB_ID: &str = "db_id";
const META_WRAPPED_KEY: &str = "wrapped_data_key";
const ACCOUNT_ROW: &[u8] = b"account";

/// Name of the secret that wraps the data key of the database with id `db_id`.
pub fn wrap_secret_name(db_id: &[u8]) -> String {
    let hex: String = db_id.iter().map(|b| format!("{b:02x}")).collect();
    format!("privcomm.data-key-wrap.{hex}")
}

/// This device's account as stored.
pub struct Account {
    /// The Signal identity key pair.
    pub identity: IdentityKeyPair,
    /// libsignal registration id.
    pub registration_id: u32,
    /// SHA-256 of the phone number, lowercase hex.
    pub phone_hash: String,
    /// The relay's id for this account, once registered.
    pub user_id: Option<Uuid>,
}

impl Account {
    fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let user = self
            .user_id
            .map(|u| u.as_bytes().to_vec())
            .unwrap_or_default();
        Writer::new()
            .bytes(&self.identity.serialize())
            .u32(self.registration_id)
            .bytes(self.phone_hash.as_bytes())
            .bytes(&user)
            .finish()
    }

    fn decode(data: &[u8]) -> CoreResult<Self> {
        let table = "account";
        let mut r = Reader::new(data, table);
        let identity =
            IdentityKeyPair::try_from(r.bytes()?).map_err(|_| CoreError::Tampered { table })?;
        let registration_id = r.u32()?;
        let phone_hash =
            String::from_utf8(r.bytes()?.to_vec()).map_err(|_| CoreError::Tampered { table })?;
        let user = r.bytes()?;
        let user_id = if user.is_empty() {
            None
        } else {
            Some(Uuid::from_slice(user).map_err(|_| CoreError::Tampered { table })?)
        };
        r.end()?;
        Ok(Self {
            identity,
            registration_id,
            phone_hash,
            user_id,
        })
    }
}

/// The open store. Not `Send`-shared: it lives on the protocol actor's thread.
pub struct Store {
    conn: Connection,
    keys: StoreKeys,
    db_id: Vec<u8>,
    path: PathBuf,
    account: Option<Account>,
    stashed_error: std::cell::RefCell<Option<CoreError>>,
    pub(crate) cache: std::cell::RefCell<cache::RecordCache>,
    untrusted: std::cell::RefCell<
        Option<(
            libsignal_protocol::ProtocolAddress,
            libsignal_protocol::IdentityKey,
        )>,
    >,
}

impl Store {
    /// Opens the store at `path`, creating it (and its wrapping secret) on first use.
    pub fn open(path: &Path, secrets: &dyn SecretStore) -> CoreResult<Self> {
        let conn = db::open(path)?;
        let db_id: Option<Vec<u8>> = meta_get(&conn, META_DB_ID)?;
        let (db_id, data_key) = match db_id {
            Some(db_id) => {
                let secret = secrets
                    .get(&wrap_secret_name(&db_id))
                    .map_err(CoreError::from)?
                    .ok_or(CoreError::MissingKey)?;
                let wrap = WrapKey::from_bytes(&secret)?;
                let wrapped: Vec<u8> =
                    meta_get(&conn, META_WRAPPED_KEY)?.ok_or(CoreError::MissingKey)?;
                (db_id, DataKey::unwrap(&wrapped, &wrap)?)
            }
            None => {
                let mut db_id = vec![0u8; 16];
                rand::rng().fill_bytes(&mut db_id);
                let wrap = WrapKey::generate();
                let data_key = DataKey::generate();
                // The secret is saved before the database refers to it, so a crash in between
                // leaves at worst an unused secret, never a database without its key.
                secrets
                    .set(&wrap_secret_name(&db_id), wrap.as_bytes())
                    .map_err(CoreError::from)?;
                let tx = conn.unchecked_transaction()?;
                meta_set(&tx, META_DB_ID, &db_id)?;
                meta_set(&tx, META_WRAPPED_KEY, &data_key.wrap(&wrap))?;
                tx.commit()?;
                (db_id, data_key)
            }
        };
        let keys = StoreKeys::derive(&data_key);
        let mut store = Self {
            conn,
            keys,
            db_id,
            path: path.to_owned(),
            account: None,
            stashed_error: std::cell::RefCell::new(None),
            cache: std::cell::RefCell::new(cache::RecordCache::default()),
            untrusted: std::cell::RefCell::new(None),
        };
        store.account = store.load_account()?;
        Ok(store)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the database at `path` (with its WAL and journal files) and its wrapping
    /// secret: the recovery path when the secret is lost or wrong. Nothing may have the
    /// database open. A missing database is not an error.
    pub fn destroy(path: &Path, secrets: &dyn SecretStore) -> CoreResult<()> {
        if path.exists() {
            // The id is read without the key (it is not secret) so the secret can be found.
            let db_id = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .ok()
            .and_then(|conn| meta_get(&conn, META_DB_ID).ok().flatten());
            if let Some(db_id) = db_id {
                match secrets.delete(&wrap_secret_name(&db_id)) {
                    // A lost secret is already gone.
                    Ok(()) | Err(crate::secret_store::SecretStoreError::Lost(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(CoreError::InvalidArgument(format!(
                        "cannot delete the database: {e}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Name of this database's wrapping secret in the secret store.
    pub fn secret_name(&self) -> String {
        wrap_secret_name(&self.db_id)
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Executes one statement through the prepared-statement cache (parsing SQL costs more
    /// than running these small statements).
    pub(crate) fn exec(&self, sql: &str, params: impl rusqlite::Params) -> CoreResult<usize> {
        Ok(self.conn.prepare_cached(sql)?.execute(params)?)
    }

    /// Runs a query expected to return at most one row, through the statement cache.
    pub(crate) fn query_opt<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> CoreResult<Option<T>> {
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(params, map)
            .optional()?)
    }

    pub(crate) fn keys(&self) -> &StoreKeys {
        &self.keys
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction: committed if it returns `Ok`, rolled back
    /// otherwise. Sessions saved in it reach their rows just before the commit, each in its
    /// last state.
    pub fn write<T>(&self, f: impl FnOnce(&Self) -> CoreResult<T>) -> CoreResult<T> {
        self.exec("BEGIN IMMEDIATE", [])?;
        self.cache.borrow_mut().begin();
        let result = f(self).and_then(|value| {
            self.write_staged_sessions()?;
            self.exec("COMMIT", [])?;
            Ok(value)
        });
        match result {
            Ok(value) => {
                self.cache.borrow_mut().commit();
                Ok(value)
            }
            Err(e) => {
                self.cache.borrow_mut().rollback();
                if !self.conn.is_autocommit() {
                    if let Err(rollback) = self.conn.execute_batch("ROLLBACK") {
                        tracing::error!(error = %rollback, "rollback failed");
                    }
                }
                Err(e)
            }
        }
    }

    fn load_account(&self) -> CoreResult<Option<Account>> {
        let sealed: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT sealed FROM account WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        sealed
            .map(|s| {
                let plain = self.keys.open("account", ACCOUNT_ROW, &s)?;
                Account::decode(&plain)
            })
            .transpose()
    }

    /// The account, if one was created.
    pub fn account(&self) -> CoreResult<&Account> {
        self.account.as_ref().ok_or(CoreError::NoAccount)
    }

    /// Writes the account row (inside the caller's transaction, if any).
    pub(crate) fn put_account(&self, account: &Account) -> CoreResult<()> {
        let sealed = self.keys.seal("account", ACCOUNT_ROW, &account.encode());
        self.conn.execute(
            "INSERT INTO account (id, sealed) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed",
            params![sealed],
        )?;
        Ok(())
    }

    /// Makes `account` the cached account after its row was committed.
    pub(crate) fn cache_account(&mut self, account: Account) {
        self.account = Some(account);
    }

    pub(crate) fn save_account(&mut self, account: Account) -> CoreResult<()> {
        self.put_account(&account)?;
        self.cache_account(account);
        Ok(())
    }

    /// Reads a clear counter from `meta`.
    pub(crate) fn counter(&self, name: &str) -> CoreResult<Option<u32>> {
        let value: Option<Vec<u8>> = meta_get(&self.conn, name)?;
        Ok(value
            .and_then(|v| v.try_into().ok())
            .map(u32::from_be_bytes))
    }

    /// Writes a clear counter to `meta`.
    pub(crate) fn set_counter(&self, name: &str, value: u32) -> CoreResult<()> {
        meta_set(&self.conn, name, &value.to_be_bytes())
    }

    /// Re-encrypts every row under a fresh data key in one transaction. Afterwards the old
    /// data key opens nothing in the file.
    pub fn rotate_data_key(&mut self, secrets: &dyn SecretStore) -> CoreResult<()> {
        let secret = secrets
            .get(&self.secret_name())
            .map_err(CoreError::from)?
            .ok_or(CoreError::MissingKey)?;
        let wrap = WrapKey::from_bytes(&secret)?;
        let new_key = DataKey::generate();
        let new_keys = StoreKeys::derive(&new_key);
        self.write(|store| {
            rotation::reseal_all(&store.conn, &store.keys, &new_keys)?;
            meta_set(&store.conn, META_WRAPPED_KEY, &new_key.wrap(&wrap))
        })?;
        self.keys = new_keys;
        // Old pages may still hold old ciphertexts in the WAL until checkpointed.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

fn meta_get(conn: &Connection, key: &str) -> CoreResult<Option<Vec<u8>>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn meta_set(conn: &Connection, key: &str, value: &[u8]) -> CoreResult<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}
