//! `Store` on a SQLite file through rusqlite. One connection writes, on a thread of its own
//! (`writer.rs`): group commits of messages, acks and `last_seen` (`batch.rs`) and every
//! other write as a job there. A few read-only connections serve reads on blocking threads
//! (`readers.rs`); WAL lets them read while the writer commits.

mod at_rest;
mod batch;
mod checkpointer;
mod migrate;
mod readers;
mod writer;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use uuid::Uuid;

use super::convert::{count_from, same_bytes, u32_from, uuid_from};
use super::{
    day_of, Account, ClaimedBundle, CodeCheck, CodeProof, LockChange, MailboxUsage, NewUser,
    PendingMessage, PhoneKey, PreKeyUpdate, PurgeCutoffs, PurgeReport, Store, StoreError,
    StoreResult, StoredPreKey, StoredSignedPreKey, UserIdentity, WriteBatch, WriteBatchOutcome,
    DAY_MS,
};
use crate::pepper::Pepper;
use readers::Readers;
use writer::{SqliteWriter, WRITE_BUSY_TIMEOUT};

/// Settings of every connection: WAL so readers never block the writer, FULL sync so a
/// stored message survives power loss (the relay promises "durably stored" on `sent`),
/// deleted content zeroed (`secure_delete`).
const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; PRAGMA secure_delete = ON;";

/// Pages of cache for the writer (negative: KiB). Index pages of the message tables stay
/// resident, so inserts and deletes rarely read from disk.
const WRITER_CACHE_KIB: i64 = 65_536;

/// The relay store on a SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    writer: SqliteWriter,
    readers: Readers,
    checkpointer: checkpointer::Checkpointer,
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(e, _) = &err {
            match e.extended_code {
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => return Self::Conflict,
                rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => return Self::MissingReference,
                _ => {}
            }
        }
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Self::Unavailable(Box::new(err))
            }
            _ => Self::Database(Box::new(err)),
        }
    }
}

fn open_connection(path: &Path, flags: OpenFlags) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Setup(format!("opening {}: {e}", path.display())))?;
    conn.execute_batch(PRAGMAS)
        .map_err(|e| StoreError::Setup(format!("configuring {}: {e}", path.display())))?;
    conn.busy_timeout(WRITE_BUSY_TIMEOUT)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating it if needed) the SQLite file of a `sqlite:` URL with
    /// `readers` read connections, runs migrations and brings rows stored before the
    /// pepper existed into their peppered form (or checks that `pepper` is the one the
    /// database was written with).
    pub async fn connect(url: &str, readers: u32, pepper: Arc<Pepper>) -> StoreResult<Self> {
        let Some(path) = writer::file_of(url) else {
            return Err(StoreError::Setup(
                "the relay needs a SQLite file (sqlite:///path/relay.db), not an in-memory \
                 database: its writer thread and its readers share the file"
                    .into(),
            ));
        };
        tokio::task::spawn_blocking(move || Self::open(&path, readers.max(1), pepper))
            .await
            .map_err(|e| StoreError::Setup(format!("opening the database: {e}")))?
    }

    fn open(path: &Path, readers: u32, pepper: Arc<Pepper>) -> StoreResult<Self> {
        // Before SQLite creates it with the process umask (and its -wal/-shm after it).
        crate::files::private_database_file(path)
            .map_err(|e| StoreError::Setup(format!("making {} private: {e}", path.display())))?;
        let mut conn = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA wal_autocheckpoint = {};",
            checkpointer::WRITER_CHECKPOINT_PAGES
        ))?;
        migrate::run(&mut conn)?;
        at_rest::pepper_stored_rows(&mut conn, &pepper)?;
        let read_connections = (0..readers)
            .map(|_| {
                let reader = open_connection(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                reader.execute_batch("PRAGMA query_only = ON;")?;
                Ok(reader)
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let checkpointer = checkpointer::Checkpointer::start(open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?)?;
        Ok(Self {
            writer: SqliteWriter::start(conn, pepper)?,
            readers: Readers::new(read_connections),
            checkpointer,
        })
    }

    async fn read<T, F>(&self, read: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.readers.read(read).await
    }

    async fn write<T, F>(&self, write: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.run(write).await
    }
}

/// Uses up the code of `proof`: `CodeUsed` unless it is still the one stored.
fn use_code(tx: &Connection, proof: &CodeProof) -> StoreResult<()> {
    let used = tx.execute(
        "UPDATE verifications SET expires_at = 0
         WHERE session_key = ?1 AND phone_key = ?2 AND code_hash = ?3 AND expires_at > 0",
        params![
            proof.session_key,
            proof.phone_key.as_str(),
            &proof.code_hash[..]
        ],
    )?;
    if used == 1 {
        Ok(())
    } else {
        Err(StoreError::CodeUsed)
    }
}

/// Inserts one-time prekeys of `user` in the order given (claims take the oldest first);
/// ids already stored are skipped.
fn insert_one_time_prekeys(
    tx: &Connection,
    user: Uuid,
    keys: &[StoredPreKey],
    now: i64,
) -> StoreResult<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO one_time_prekeys (user_id, key_id, public_key, created_at)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id, key_id) DO NOTHING",
    )?;
    for key in keys {
        insert.execute(params![
            &user.as_bytes()[..],
            i64::from(key.key_id),
            key.public_key,
            now
        ])?;
    }
    Ok(())
}

fn count_one_time_prekeys(conn: &Connection, user: Uuid) -> StoreResult<u64> {
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = ?1 AND used_at IS NULL",
        params![&user.as_bytes()[..]],
        |row| row.get(0),
    )?;
    Ok(count_from(count))
}

/// A pending row as read, before its ids are checked.
struct PendingRow {
    seq: i64,
    id: Vec<u8>,
    sender: Vec<u8>,
    recipient: Vec<u8>,
    payload: Vec<u8>,
    created_at: i64,
}

fn pending_from_row(row: &Row<'_>) -> rusqlite::Result<PendingRow> {
    Ok(PendingRow {
        seq: row.get(0)?,
        id: row.get(1)?,
        sender: row.get(2)?,
        recipient: row.get(3)?,
        payload: row.get(4)?,
        created_at: row.get(5)?,
    })
}

fn signed_prekey(row: &Row<'_>, first: usize) -> StoreResult<StoredSignedPreKey> {
    Ok(StoredSignedPreKey {
        key_id: u32_from(row.get(first)?)?,
        public_key: row.get(first + 1)?,
        signature: row.get(first + 2)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn close(&self) {
        // The checkpointer, then the writer (it checkpoints), so the last reader to close
        // deletes the WAL.
        self.checkpointer.stop().await;
        self.writer.close().await;
        self.readers.close();
    }

    async fn scrub(&self) -> StoreResult<()> {
        if !self.writer.checkpoint().await? {
            tracing::debug!("WAL checkpoint did not complete; retried next pass");
        }
        Ok(())
    }

    async fn insert_nonce(
        &self,
        nonce: &[u8],
        phone_key: &PhoneKey,
        expires_at: i64,
    ) -> StoreResult<()> {
        let (nonce, phone_key) = (nonce.to_vec(), phone_key.clone());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO auth_nonces (nonce, phone_key, expires_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![nonce, phone_key.as_str(), expires_at])?;
            Ok(())
        })
        .await
    }

    async fn take_nonce(&self, nonce: &[u8], phone_key: &PhoneKey, now: i64) -> StoreResult<bool> {
        let (nonce, phone_key) = (nonce.to_vec(), phone_key.clone());
        self.write(move |conn| {
            // Deleting first makes the nonce single-use even when the check below fails.
            let row: Option<(String, i64)> = conn
                .prepare_cached(
                    "DELETE FROM auth_nonces WHERE nonce = ?1 RETURNING phone_key, expires_at",
                )?
                .query_row(params![nonce], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            Ok(row.is_some_and(|(bound_to, expires_at)| {
                bound_to == phone_key.as_str() && expires_at > now
            }))
        })
        .await
    }

    async fn create_user(&self, user: &NewUser, now: i64, proof: &CodeProof) -> StoreResult<()> {
        let (user, proof) = (user.clone(), proof.clone());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            use_code(&tx, &proof)?;
            tx.execute(
                "INSERT INTO users (id, phone_key, registration_id, identity_key,
                     signed_prekey_id, signed_prekey, signed_prekey_signature,
                     kyber_prekey_id, kyber_prekey, kyber_prekey_signature, created_at, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    &user.id.as_bytes()[..],
                    user.phone_key.as_str(),
                    i64::from(user.registration_id),
                    user.identity_key,
                    i64::from(user.signed_prekey.key_id),
                    user.signed_prekey.public_key,
                    user.signed_prekey.signature,
                    i64::from(user.kyber_prekey.key_id),
                    user.kyber_prekey.public_key,
                    user.kyber_prekey.signature,
                    now,
                    day_of(now),
                ],
            )?;
            insert_one_time_prekeys(&tx, user.id, &user.one_time_prekeys, now)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn user_by_phone_key(&self, phone_key: &PhoneKey) -> StoreResult<Option<UserIdentity>> {
        let phone_key = phone_key.clone();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, identity_key, generation FROM users WHERE phone_key = ?1",
            )?
            .query_row(params![phone_key.as_str()], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .optional()?
            .map(|(id, identity_key, generation)| {
                Ok(UserIdentity {
                    id: uuid_from(&id)?,
                    identity_key,
                    generation: u32_from(generation)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<UserIdentity>> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT identity_key, generation FROM users WHERE id = ?1")?
                .query_row(params![&id.as_bytes()[..]], |row| {
                    Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?))
                })
                .optional()?
                .map(|(identity_key, generation)| {
                    Ok(UserIdentity {
                        id,
                        identity_key,
                        generation: u32_from(generation)?,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn user_generation(&self, id: Uuid) -> StoreResult<Option<u32>> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT generation FROM users WHERE id = ?1")?
                .query_row(params![&id.as_bytes()[..]], |row| row.get::<_, i64>(0))
                .optional()?
                .map(u32_from)
                .transpose()
        })
        .await
    }

    async fn put_verification(
        &self,
        proof: &CodeProof,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        let proof = proof.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO verifications
                     (session_key, phone_key, code_hash, created_at, expires_at, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            )?
            .execute(params![
                proof.session_key,
                proof.phone_key.as_str(),
                &proof.code_hash[..],
                now,
                expires_at
            ])?;
            Ok(())
        })
        .await
    }

    async fn void_verification(&self, session_key: &str) -> StoreResult<()> {
        let session_key = session_key.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("UPDATE verifications SET expires_at = 0 WHERE session_key = ?1")?
                .execute(params![session_key])?;
            Ok(())
        })
        .await
    }

    async fn codes_sent_since(
        &self,
        phone_key: &PhoneKey,
        since: i64,
    ) -> StoreResult<(u64, Option<i64>)> {
        let phone_key = phone_key.clone();
        self.read(move |conn| {
            let (sent, latest): (i64, Option<i64>) = conn
                .prepare_cached(
                    "SELECT COUNT(*), MAX(created_at) FROM verifications
                     WHERE phone_key = ?1 AND created_at >= ?2",
                )?
                .query_row(params![phone_key.as_str(), since], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            Ok((count_from(sent), latest))
        })
        .await
    }

    async fn check_verification(
        &self,
        proof: &CodeProof,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<CodeCheck> {
        let proof = proof.clone();
        let max = i64::from(max_attempts);
        self.write(move |conn| {
            // The attempt is taken before the comparison: concurrent guesses each take one,
            // and none is answered once they are spent.
            let taken: Option<(Vec<u8>, i64)> = conn
                .prepare_cached(
                    "UPDATE verifications SET attempts = attempts + 1
                     WHERE session_key = ?1 AND phone_key = ?2 AND expires_at > ?3
                       AND attempts < ?4
                     RETURNING code_hash, attempts",
                )?
                .query_row(
                    params![proof.session_key, proof.phone_key.as_str(), now, max],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let Some((stored, attempts)) = taken else {
                let known: Option<i64> = conn
                    .prepare_cached(
                        "SELECT attempts FROM verifications
                         WHERE session_key = ?1 AND phone_key = ?2",
                    )?
                    .query_row(
                        params![proof.session_key, proof.phone_key.as_str()],
                        |row| row.get(0),
                    )
                    .optional()?;
                return Ok(match known {
                    Some(_) => CodeCheck::Expired,
                    None => CodeCheck::Missing,
                });
            };
            if same_bytes(&stored, &proof.code_hash) {
                // Only wrong codes count: the owner may need the code again (with a PIN).
                conn.prepare_cached(
                    "UPDATE verifications SET attempts = attempts - 1 WHERE session_key = ?1",
                )?
                .execute(params![proof.session_key])?;
                return Ok(CodeCheck::Valid);
            }
            Ok(if attempts >= max {
                CodeCheck::Expired
            } else {
                CodeCheck::Wrong
            })
        })
        .await
    }

    async fn account_by_phone_key(&self, phone_key: &PhoneKey) -> StoreResult<Option<Account>> {
        let phone_key = phone_key.clone();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, generation, last_seen, lock_verifier, lock_failures, lock_failed_at
                 FROM users WHERE phone_key = ?1",
            )?
            .query_row(params![phone_key.as_str()], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, Option<Vec<u8>>>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            })
            .optional()?
            .map(
                |(id, generation, last_seen, lock_verifier, lock_failures, lock_failed_at)| {
                    Ok(Account {
                        id: uuid_from(&id)?,
                        generation: u32_from(generation)?,
                        last_seen,
                        lock_verifier,
                        lock_failures: u32_from(lock_failures)?,
                        lock_failed_at,
                    })
                },
            )
            .transpose()
        })
        .await
    }

    async fn replace_identity(
        &self,
        id: Uuid,
        user: &NewUser,
        now: i64,
        lock: LockChange,
        proof: &CodeProof,
    ) -> StoreResult<()> {
        let (user, proof) = (user.clone(), proof.clone());
        self.write(move |conn| {
            let id_bytes = &id.as_bytes()[..];
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            use_code(&tx, &proof)?;
            tx.execute(
                "UPDATE users SET registration_id = ?2, identity_key = ?3,
                     signed_prekey_id = ?4, signed_prekey = ?5, signed_prekey_signature = ?6,
                     kyber_prekey_id = ?7, kyber_prekey = ?8, kyber_prekey_signature = ?9,
                     generation = generation + 1, last_seen = ?10,
                     lock_verifier = CASE WHEN ?11 THEN lock_verifier ELSE NULL END,
                     lock_failures = 0, lock_failed_at = 0
                 WHERE id = ?1",
                params![
                    id_bytes,
                    i64::from(user.registration_id),
                    user.identity_key,
                    i64::from(user.signed_prekey.key_id),
                    user.signed_prekey.public_key,
                    user.signed_prekey.signature,
                    i64::from(user.kyber_prekey.key_id),
                    user.kyber_prekey.public_key,
                    user.kyber_prekey.signature,
                    day_of(now),
                    lock == LockChange::Keep,
                ],
            )?;
            // Keys and messages of the old device: nobody can use them any more.
            for sql in [
                "DELETE FROM one_time_prekeys WHERE user_id = ?1",
                "DELETE FROM pending_messages WHERE recipient_id = ?1",
                "DELETE FROM mailboxes WHERE recipient_id = ?1",
            ] {
                tx.execute(sql, params![id_bytes])?;
            }
            insert_one_time_prekeys(&tx, id, &user.one_time_prekeys, now)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn take_lock_attempt(
        &self,
        id: Uuid,
        now: i64,
        window_ms: i64,
        max: u32,
    ) -> StoreResult<bool> {
        self.write(move |conn| {
            let taken: Option<i64> = conn
                .prepare_cached(
                    "UPDATE users SET
                         lock_failures = CASE WHEN lock_failed_at > ?2 - ?3
                                              THEN lock_failures + 1 ELSE 1 END,
                         lock_failed_at = ?2
                     WHERE id = ?1 AND NOT (lock_failed_at > ?2 - ?3 AND lock_failures >= ?4)
                     RETURNING lock_failures",
                )?
                .query_row(
                    params![&id.as_bytes()[..], now, window_ms, i64::from(max)],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(taken.is_some())
        })
        .await
    }

    async fn set_registration_lock(&self, id: Uuid, verifier: Option<&[u8]>) -> StoreResult<()> {
        let verifier = verifier.map(<[u8]>::to_vec);
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE users SET lock_verifier = ?2, lock_failures = 0, lock_failed_at = 0
                 WHERE id = ?1",
            )?
            .execute(params![&id.as_bytes()[..], verifier])?;
            Ok(())
        })
        .await
    }

    async fn claim_bundle(
        &self,
        phone_key: &PhoneKey,
        now: i64,
        take_one_time: bool,
    ) -> StoreResult<Option<ClaimedBundle>> {
        let phone_key = phone_key.clone();
        let work = move |conn: &Connection| -> StoreResult<Option<ClaimedBundle>> {
            let mut select = conn.prepare_cached(
                "SELECT id, registration_id, identity_key, signed_prekey_id, signed_prekey,
                        signed_prekey_signature, kyber_prekey_id, kyber_prekey,
                        kyber_prekey_signature
                 FROM users WHERE phone_key = ?1",
            )?;
            let mut rows = select.query(params![phone_key.as_str()])?;
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            let user_id = uuid_from(&row.get::<_, Vec<u8>>(0)?)?;
            let registration_id = u32_from(row.get(1)?)?;
            let identity_key: Vec<u8> = row.get(2)?;
            let signed = signed_prekey(row, 3)?;
            let kyber = signed_prekey(row, 6)?;
            let one_time_prekey = if take_one_time {
                // The writer is the only writer: the statement alone is atomic.
                conn.prepare_cached(
                    "UPDATE one_time_prekeys SET used_at = ?2 WHERE id = (
                         SELECT id FROM one_time_prekeys WHERE user_id = ?1 AND used_at IS NULL
                         ORDER BY id LIMIT 1)
                     RETURNING key_id, public_key",
                )?
                .query_row(params![&user_id.as_bytes()[..], now], |k| {
                    Ok((k.get::<_, i64>(0)?, k.get::<_, Vec<u8>>(1)?))
                })
                .optional()?
                .map(|(key_id, public_key)| {
                    Ok::<_, StoreError>(StoredPreKey {
                        key_id: u32_from(key_id)?,
                        public_key,
                    })
                })
                .transpose()?
            } else {
                None
            };
            Ok(Some(ClaimedBundle {
                user_id,
                registration_id,
                identity_key,
                signed_prekey: signed,
                kyber_prekey: kyber,
                one_time_prekey,
            }))
        };
        if take_one_time {
            self.write(move |conn| work(conn)).await
        } else {
            self.read(work).await
        }
    }

    async fn count_one_time_prekeys(&self, user: Uuid) -> StoreResult<u64> {
        self.read(move |conn| count_one_time_prekeys(conn, user))
            .await
    }

    async fn update_prekeys(
        &self,
        user: Uuid,
        update: &PreKeyUpdate,
        now: i64,
        max_stored: u64,
    ) -> StoreResult<u64> {
        let update = update.clone();
        self.write(move |conn| {
            let user_bytes = &user.as_bytes()[..];
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(key) = &update.signed_prekey {
                tx.execute(
                    "UPDATE users SET signed_prekey_id = ?2, signed_prekey = ?3,
                         signed_prekey_signature = ?4 WHERE id = ?1",
                    params![
                        user_bytes,
                        i64::from(key.key_id),
                        key.public_key,
                        key.signature
                    ],
                )?;
            }
            if let Some(key) = &update.kyber_prekey {
                tx.execute(
                    "UPDATE users SET kyber_prekey_id = ?2, kyber_prekey = ?3,
                         kyber_prekey_signature = ?4 WHERE id = ?1",
                    params![
                        user_bytes,
                        i64::from(key.key_id),
                        key.public_key,
                        key.signature
                    ],
                )?;
            }
            insert_one_time_prekeys(&tx, user, &update.one_time_prekeys, now)?;
            let count = count_one_time_prekeys(&tx, user)?;
            if count > max_stored {
                // Dropping the transaction rolls it back.
                return Err(StoreError::TooManyPrekeys);
            }
            tx.commit()?;
            Ok(count)
        })
        .await
    }

    async fn pending_messages(
        &self,
        recipient: Uuid,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<PendingMessage>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT seq, id, sender_id, recipient_id, payload, created_at
                 FROM pending_messages
                 WHERE recipient_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = select.query_map(
                params![&recipient.as_bytes()[..], after_seq, limit],
                pending_from_row,
            )?;
            rows.map(|row| {
                let row = row?;
                Ok(PendingMessage {
                    seq: row.seq,
                    id: uuid_from(&row.id)?,
                    sender: uuid_from(&row.sender)?,
                    recipient: uuid_from(&row.recipient)?,
                    payload: row.payload.into(),
                    created_at: row.created_at,
                })
            })
            .collect()
        })
        .await
    }

    async fn write_batch(&self, batch: Arc<WriteBatch>) -> StoreResult<WriteBatchOutcome> {
        self.writer.write(batch).await
    }

    async fn pending_total(&self) -> StoreResult<u64> {
        self.read(|conn| {
            let count: i64 =
                conn.query_row("SELECT COUNT(*) FROM pending_messages", [], |row| {
                    row.get(0)
                })?;
            Ok(count_from(count))
        })
        .await
    }

    async fn mailbox_usage(&self, recipient: Uuid) -> StoreResult<MailboxUsage> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT messages, bytes FROM mailboxes WHERE recipient_id = ?1")?
                .query_row(params![&recipient.as_bytes()[..]], |row| {
                    Ok(MailboxUsage {
                        messages: row.get(0)?,
                        bytes: row.get(1)?,
                    })
                })
                .optional()?
                .unwrap_or_default())
        })
        .await
    }

    async fn database_bytes(&self) -> StoreResult<u64> {
        self.read(|conn| {
            let bytes: i64 = conn.query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |row| row.get(0),
            )?;
            Ok(count_from(bytes))
        })
        .await
    }

    async fn purge(&self, cutoffs: PurgeCutoffs) -> StoreResult<PurgeReport> {
        self.write(move |conn| {
            // The expired messages leave their mailboxes' counts in the same transaction.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE mailboxes SET
                     messages = messages - (SELECT COUNT(*) FROM pending_messages p
                         WHERE p.recipient_id = mailboxes.recipient_id AND p.created_at < ?1),
                     bytes = bytes - (SELECT COALESCE(SUM(p.size), 0) FROM pending_messages p
                         WHERE p.recipient_id = mailboxes.recipient_id AND p.created_at < ?1)
                 WHERE recipient_id IN
                     (SELECT recipient_id FROM pending_messages WHERE created_at < ?1)",
                params![cutoffs.messages_before],
            )?;
            let messages = tx.execute(
                "DELETE FROM pending_messages WHERE created_at < ?1",
                params![cutoffs.messages_before],
            )?;
            let used_prekeys = tx.execute(
                "DELETE FROM one_time_prekeys WHERE used_at IS NOT NULL AND used_at < ?1",
                params![cutoffs.used_prekeys_before],
            )?;
            let nonces = tx.execute(
                "DELETE FROM auth_nonces WHERE expires_at <= ?1",
                params![cutoffs.now],
            )?;
            let send_records = tx.execute(
                "DELETE FROM recent_sends WHERE stored_on < ?1",
                params![cutoffs.sends_before],
            )?;
            // A counter idle that long has no row left: its sender starts again at 0.
            tx.execute(
                "DELETE FROM send_counters WHERE last_day < ?1",
                params![cutoffs.sends_before],
            )?;
            // Kept a day after sending: the per-number limits count them.
            let verifications = tx.execute(
                "DELETE FROM verifications WHERE created_at < ?1",
                params![cutoffs.now.saturating_sub(DAY_MS)],
            )?;
            tx.commit()?;
            let rows = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
            Ok(PurgeReport {
                messages: rows(messages),
                used_prekeys: rows(used_prekeys),
                nonces: rows(nonces),
                send_records: rows(send_records),
                verifications: rows(verifications),
            })
        })
        .await
    }
}
