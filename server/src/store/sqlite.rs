//! `Store` on a SQLite file: reads and the rarer writes (accounts, keys, nonces) through a
//! small sqlx pool; messages, acks and `last_seen` only through the group-commit writer on
//! its own thread (`sqlite_writer.rs`). SQLite's write lock and `busy_timeout` order the two.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::error::ErrorKind;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{Executor, Row, SqlitePool};
use uuid::Uuid;

use super::convert::{same_bytes, u32_from, uuid_from};
use super::sqlite_writer::{self, SqliteWriter};
use super::{
    at_rest, day_of, Account, ClaimedBundle, CodeCheck, CodeProof, LockChange, MailboxUsage,
    NewUser, PendingMessage, PhoneKey, PreKeyUpdate, PurgeCutoffs, PurgeReport, Store, StoreError,
    StoreResult, StoredPreKey, StoredSignedPreKey, UserIdentity, WriteBatch, WriteBatchOutcome,
};
use crate::pepper::Pepper;

/// SQLite pragmas set on every connection: WAL so readers never block the writer, FULL sync so
/// a stored message survives power loss (the relay promises "durably stored" on `sent`).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA temp_store = MEMORY; \
     PRAGMA secure_delete = ON;";

/// The relay store on a SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The only way messages, acks and `last_seen` are written.
    writer: Arc<SqliteWriter>,
}

/// The begin of a write transaction: SQLite must take the write lock up front, or a
/// deferred transaction that later writes fails with SQLITE_BUSY instead of waiting.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            match db.kind() {
                ErrorKind::UniqueViolation => return Self::Conflict,
                ErrorKind::ForeignKeyViolation => return Self::MissingReference,
                _ => {}
            }
        }
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(Box::new(err))
            }
            other => Self::Database(Box::new(other)),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Self::Unavailable(Box::new(err))
            }
            _ => Self::Database(Box::new(err)),
        }
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the SQLite file of a `sqlite:` URL, runs migrations and
    /// brings rows stored before the pepper existed into their peppered form (or checks
    /// that `pepper` is the one the database was written with).
    pub async fn connect(
        url: &str,
        max_connections: u32,
        pepper: Arc<Pepper>,
    ) -> StoreResult<Self> {
        let Some(path) = sqlite_writer::file_of(url) else {
            return Err(StoreError::Setup(
                "the relay needs a SQLite file (sqlite:///path/relay.db), not an in-memory \
                 database: its writer thread and its readers share the file"
                    .into(),
            ));
        };
        // Before SQLite creates it with the process umask (and its -wal/-shm after it).
        crate::files::private_database_file(&path)
            .map_err(|e| StoreError::Setup(format!("making {} private: {e}", path.display())))?;
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Setup(format!("bad database URL: {e}")))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Setup(format!("opening {}: {e}", path.display())))?;
        super::migrations::sqlite_migrator()
            .run(&pool)
            .await
            .map_err(|e| StoreError::Setup(format!("migration failed: {e}")))?;
        at_rest::pepper_stored_rows(&pool, &pepper).await?;
        let writer = Arc::new(SqliteWriter::open(&path, pepper)?);
        Ok(Self { pool, writer })
    }
}

/// Binds a user's registration id, identity key and signed prekeys, in that order (the
/// eight columns from `registration_id` to `kyber_prekey_signature`).
fn bind_identity<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    user: &NewUser,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    query
        .bind(i64::from(user.registration_id))
        .bind(user.identity_key.clone())
        .bind(i64::from(user.signed_prekey.key_id))
        .bind(user.signed_prekey.public_key.clone())
        .bind(user.signed_prekey.signature.clone())
        .bind(i64::from(user.kyber_prekey.key_id))
        .bind(user.kyber_prekey.public_key.clone())
        .bind(user.kyber_prekey.signature.clone())
}

/// Uses up the code of `proof` inside `tx`: `CodeUsed` unless it is still the one stored.
async fn use_code(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    proof: &CodeProof,
) -> StoreResult<()> {
    let used = sqlx::query(
        "UPDATE verifications SET expires_at = 0
         WHERE session_key = $1 AND phone_key = $2 AND code_hash = $3 AND expires_at > 0",
    )
    .bind(proof.session_key.clone())
    .bind(proof.phone_key.as_str().to_owned())
    .bind(proof.code_hash.to_vec())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if used == 1 {
        Ok(())
    } else {
        Err(StoreError::CodeUsed)
    }
}

fn pending_from_row(row: &SqliteRow) -> StoreResult<PendingMessage> {
    Ok(PendingMessage {
        seq: row.try_get("seq")?,
        id: uuid_from(&row.try_get::<Vec<u8>, _>("id")?)?,
        sender: uuid_from(&row.try_get::<Vec<u8>, _>("sender_id")?)?,
        recipient: uuid_from(&row.try_get::<Vec<u8>, _>("recipient_id")?)?,
        payload: row.try_get::<Vec<u8>, _>("payload")?.into(),
        created_at: row.try_get("created_at")?,
    })
}

async fn insert_one_time_prekeys(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    user: Uuid,
    keys: &[StoredPreKey],
    now: i64,
) -> StoreResult<()> {
    for key in keys {
        sqlx::query(
            "INSERT INTO one_time_prekeys (user_id, key_id, public_key, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, key_id) DO NOTHING",
        )
        .bind(user.as_bytes().to_vec())
        .bind(i64::from(key.key_id))
        .bind(key.public_key.clone())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        // The writer first, so the pool's last connection can delete the WAL as it closes.
        self.writer.close().await;
        self.pool.close().await;
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
        sqlx::query("INSERT INTO auth_nonces (nonce, phone_key, expires_at) VALUES ($1, $2, $3)")
            .bind(nonce.to_vec())
            .bind(phone_key.as_str().to_owned())
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn take_nonce(&self, nonce: &[u8], phone_key: &PhoneKey, now: i64) -> StoreResult<bool> {
        // Deleting first makes the nonce single-use even when the check below fails.
        let row =
            sqlx::query("DELETE FROM auth_nonces WHERE nonce = $1 RETURNING phone_key, expires_at")
                .bind(nonce.to_vec())
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(false) };
        let bound_to: String = row.try_get("phone_key")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        Ok(bound_to == phone_key.as_str() && expires_at > now)
    }

    async fn create_user(&self, user: &NewUser, now: i64, proof: &CodeProof) -> StoreResult<()> {
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        use_code(&mut tx, proof).await?;
        let insert = sqlx::query(
            "INSERT INTO users (id, phone_key, registration_id, identity_key,
                 signed_prekey_id, signed_prekey, signed_prekey_signature,
                 kyber_prekey_id, kyber_prekey, kyber_prekey_signature, created_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(user.id.as_bytes().to_vec())
        .bind(user.phone_key.as_str().to_owned());
        bind_identity(insert, user)
            .bind(now)
            .bind(day_of(now))
            .execute(&mut *tx)
            .await?;
        insert_one_time_prekeys(&mut tx, user.id, &user.one_time_prekeys, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn user_by_phone_key(&self, phone_key: &PhoneKey) -> StoreResult<Option<UserIdentity>> {
        let row =
            sqlx::query("SELECT id, identity_key, generation FROM users WHERE phone_key = $1")
                .bind(phone_key.as_str().to_owned())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| {
            Ok(UserIdentity {
                id: uuid_from(&row.try_get::<Vec<u8>, _>("id")?)?,
                identity_key: row.try_get("identity_key")?,
                generation: u32_from(row.try_get("generation")?)?,
            })
        })
        .transpose()
    }

    async fn user_generation(&self, id: Uuid) -> StoreResult<Option<u32>> {
        let generation: Option<i64> =
            sqlx::query_scalar("SELECT generation FROM users WHERE id = $1")
                .bind(id.as_bytes().to_vec())
                .fetch_optional(&self.pool)
                .await?;
        generation.map(u32_from).transpose()
    }

    async fn put_verification(
        &self,
        proof: &CodeProof,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO verifications
                 (session_key, phone_key, code_hash, created_at, expires_at, attempts)
             VALUES ($1, $2, $3, $4, $5, 0)",
        )
        .bind(proof.session_key.clone())
        .bind(proof.phone_key.as_str().to_owned())
        .bind(proof.code_hash.to_vec())
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn void_verification(&self, session_key: &str) -> StoreResult<()> {
        sqlx::query("UPDATE verifications SET expires_at = 0 WHERE session_key = $1")
            .bind(session_key.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn codes_sent_since(
        &self,
        phone_key: &PhoneKey,
        since: i64,
    ) -> StoreResult<(u64, Option<i64>)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS sent, MAX(created_at) AS latest FROM verifications
             WHERE phone_key = $1 AND created_at >= $2",
        )
        .bind(phone_key.as_str().to_owned())
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        let sent: i64 = row.try_get("sent")?;
        let latest: Option<i64> = row.try_get("latest")?;
        Ok((u64::try_from(sent).unwrap_or(0), latest))
    }

    async fn check_verification(
        &self,
        proof: &CodeProof,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<CodeCheck> {
        // The attempt is taken before the comparison, in one statement: concurrent guesses
        // each take one, and none is answered once they are spent.
        let taken = sqlx::query(
            "UPDATE verifications SET attempts = attempts + 1
             WHERE session_key = $1 AND phone_key = $2 AND expires_at > $3 AND attempts < $4
             RETURNING code_hash, attempts",
        )
        .bind(proof.session_key.clone())
        .bind(proof.phone_key.as_str().to_owned())
        .bind(now)
        .bind(i64::from(max_attempts))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = taken else {
            let known: Option<i64> = sqlx::query_scalar(
                "SELECT attempts FROM verifications WHERE session_key = $1 AND phone_key = $2",
            )
            .bind(proof.session_key.clone())
            .bind(proof.phone_key.as_str().to_owned())
            .fetch_optional(&self.pool)
            .await?;
            return Ok(match known {
                Some(_) => CodeCheck::Expired,
                None => CodeCheck::Missing,
            });
        };
        let stored: Vec<u8> = row.try_get("code_hash")?;
        let attempts: i64 = row.try_get("attempts")?;
        if same_bytes(&stored, &proof.code_hash) {
            // Only wrong codes count: the owner may need the code again (with a PIN).
            sqlx::query("UPDATE verifications SET attempts = attempts - 1 WHERE session_key = $1")
                .bind(proof.session_key.clone())
                .execute(&self.pool)
                .await?;
            return Ok(CodeCheck::Valid);
        }
        Ok(if attempts >= i64::from(max_attempts) {
            CodeCheck::Expired
        } else {
            CodeCheck::Wrong
        })
    }

    async fn account_by_phone_key(&self, phone_key: &PhoneKey) -> StoreResult<Option<Account>> {
        let row = sqlx::query(
            "SELECT id, generation, last_seen, lock_verifier, lock_failures, lock_failed_at
             FROM users WHERE phone_key = $1",
        )
        .bind(phone_key.as_str().to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Account {
                id: uuid_from(&row.try_get::<Vec<u8>, _>("id")?)?,
                generation: u32_from(row.try_get("generation")?)?,
                last_seen: row.try_get("last_seen")?,
                lock_verifier: row.try_get("lock_verifier")?,
                lock_failures: u32_from(row.try_get("lock_failures")?)?,
                lock_failed_at: row.try_get("lock_failed_at")?,
            })
        })
        .transpose()
    }

    async fn replace_identity(
        &self,
        id: Uuid,
        user: &NewUser,
        now: i64,
        lock: LockChange,
        proof: &CodeProof,
    ) -> StoreResult<()> {
        let id_bytes = id.as_bytes().to_vec();
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        use_code(&mut tx, proof).await?;
        let update = sqlx::query(
            "UPDATE users SET registration_id = $2, identity_key = $3,
                 signed_prekey_id = $4, signed_prekey = $5, signed_prekey_signature = $6,
                 kyber_prekey_id = $7, kyber_prekey = $8, kyber_prekey_signature = $9,
                 generation = generation + 1, last_seen = $10,
                 lock_verifier = CASE WHEN $11 = 1 THEN lock_verifier ELSE NULL END,
                 lock_failures = 0, lock_failed_at = 0
             WHERE id = $1",
        )
        .bind(id_bytes.clone());
        bind_identity(update, user)
            .bind(day_of(now))
            .bind(i64::from(lock == LockChange::Keep))
            .execute(&mut *tx)
            .await?;
        // Keys and messages of the old device: nobody can use them any more.
        for sql in [
            "DELETE FROM one_time_prekeys WHERE user_id = $1",
            "DELETE FROM pending_messages WHERE recipient_id = $1",
            "DELETE FROM mailboxes WHERE recipient_id = $1",
        ] {
            sqlx::query(sql)
                .bind(id_bytes.clone())
                .execute(&mut *tx)
                .await?;
        }
        insert_one_time_prekeys(&mut tx, id, &user.one_time_prekeys, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_lock_attempt(
        &self,
        id: Uuid,
        now: i64,
        window_ms: i64,
        max: u32,
    ) -> StoreResult<bool> {
        let taken: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET
                 lock_failures = CASE WHEN lock_failed_at > $2 - $3 THEN lock_failures + 1 ELSE 1 END,
                 lock_failed_at = $2
             WHERE id = $1 AND NOT (lock_failed_at > $2 - $3 AND lock_failures >= $4)
             RETURNING lock_failures",
        )
        .bind(id.as_bytes().to_vec())
        .bind(now)
        .bind(window_ms)
        .bind(i64::from(max))
        .fetch_optional(&self.pool)
        .await?;
        Ok(taken.is_some())
    }

    async fn set_registration_lock(&self, id: Uuid, verifier: Option<&[u8]>) -> StoreResult<()> {
        sqlx::query(
            "UPDATE users SET lock_verifier = $2, lock_failures = 0, lock_failed_at = 0
             WHERE id = $1",
        )
        .bind(id.as_bytes().to_vec())
        .bind(verifier.map(<[u8]>::to_vec))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<UserIdentity>> {
        let row = sqlx::query("SELECT identity_key, generation FROM users WHERE id = $1")
            .bind(id.as_bytes().to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(UserIdentity {
                id,
                identity_key: row.try_get("identity_key")?,
                generation: u32_from(row.try_get("generation")?)?,
            })
        })
        .transpose()
    }

    async fn claim_bundle(
        &self,
        phone_key: &PhoneKey,
        now: i64,
        take_one_time: bool,
    ) -> StoreResult<Option<ClaimedBundle>> {
        let row = sqlx::query(
            "SELECT id, registration_id, identity_key, signed_prekey_id, signed_prekey,
                    signed_prekey_signature, kyber_prekey_id, kyber_prekey, kyber_prekey_signature
             FROM users WHERE phone_key = $1",
        )
        .bind(phone_key.as_str().to_owned())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id = uuid_from(&row.try_get::<Vec<u8>, _>("id")?)?;
        let claimed = if take_one_time {
            // SQLite serialises writers: the statement alone is atomic.
            sqlx::query(
                "UPDATE one_time_prekeys SET used_at = $2 WHERE id = (
                     SELECT id FROM one_time_prekeys WHERE user_id = $1 AND used_at IS NULL
                     ORDER BY id LIMIT 1)
                 RETURNING key_id, public_key",
            )
            .bind(user_id.as_bytes().to_vec())
            .bind(now)
            .fetch_optional(&self.pool)
            .await?
        } else {
            None
        };
        let one_time_prekey = claimed
            .map(|k| -> StoreResult<StoredPreKey> {
                Ok(StoredPreKey {
                    key_id: u32_from(k.try_get("key_id")?)?,
                    public_key: k.try_get("public_key")?,
                })
            })
            .transpose()?;
        Ok(Some(ClaimedBundle {
            user_id,
            registration_id: u32_from(row.try_get("registration_id")?)?,
            identity_key: row.try_get("identity_key")?,
            signed_prekey: StoredSignedPreKey {
                key_id: u32_from(row.try_get("signed_prekey_id")?)?,
                public_key: row.try_get("signed_prekey")?,
                signature: row.try_get("signed_prekey_signature")?,
            },
            kyber_prekey: StoredSignedPreKey {
                key_id: u32_from(row.try_get("kyber_prekey_id")?)?,
                public_key: row.try_get("kyber_prekey")?,
                signature: row.try_get("kyber_prekey_signature")?,
            },
            one_time_prekey,
        }))
    }

    async fn count_one_time_prekeys(&self, user: Uuid) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user.as_bytes().to_vec())
        .fetch_one(&self.pool)
        .await?;
        Ok(super::convert::count_from(count))
    }

    async fn update_prekeys(
        &self,
        user: Uuid,
        update: &PreKeyUpdate,
        now: i64,
        max_stored: u64,
    ) -> StoreResult<u64> {
        let user_bytes = user.as_bytes().to_vec();
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        if let Some(key) = &update.signed_prekey {
            sqlx::query(
                "UPDATE users SET signed_prekey_id = $2, signed_prekey = $3,
                     signed_prekey_signature = $4 WHERE id = $1",
            )
            .bind(user_bytes.clone())
            .bind(i64::from(key.key_id))
            .bind(key.public_key.clone())
            .bind(key.signature.clone())
            .execute(&mut *tx)
            .await?;
        }
        if let Some(key) = &update.kyber_prekey {
            sqlx::query(
                "UPDATE users SET kyber_prekey_id = $2, kyber_prekey = $3,
                     kyber_prekey_signature = $4 WHERE id = $1",
            )
            .bind(user_bytes.clone())
            .bind(i64::from(key.key_id))
            .bind(key.public_key.clone())
            .bind(key.signature.clone())
            .execute(&mut *tx)
            .await?;
        }
        insert_one_time_prekeys(&mut tx, user, &update.one_time_prekeys, now).await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user_bytes)
        .fetch_one(&mut *tx)
        .await?;
        let count = super::convert::count_from(count);
        if count > max_stored {
            tx.rollback().await?;
            return Err(StoreError::TooManyPrekeys);
        }
        tx.commit().await?;
        Ok(count)
    }

    async fn pending_messages(
        &self,
        recipient: Uuid,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<PendingMessage>> {
        let rows = sqlx::query(
            "SELECT seq, id, sender_id, recipient_id, payload, created_at FROM pending_messages
             WHERE recipient_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(recipient.as_bytes().to_vec())
        .bind(after_seq)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pending_from_row).collect()
    }

    async fn write_batch(&self, batch: Arc<WriteBatch>) -> StoreResult<WriteBatchOutcome> {
        self.writer.write(batch).await
    }

    async fn pending_total(&self) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pending_messages")
            .fetch_one(&self.pool)
            .await?;
        Ok(super::convert::count_from(count))
    }

    async fn mailbox_usage(&self, recipient: Uuid) -> StoreResult<MailboxUsage> {
        let row = sqlx::query("SELECT messages, bytes FROM mailboxes WHERE recipient_id = $1")
            .bind(recipient.as_bytes().to_vec())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => MailboxUsage {
                messages: row.try_get("messages")?,
                bytes: row.try_get("bytes")?,
            },
            None => MailboxUsage::default(),
        })
    }

    async fn database_bytes(&self) -> StoreResult<u64> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    async fn purge(&self, cutoffs: PurgeCutoffs) -> StoreResult<PurgeReport> {
        // The expired messages leave their mailboxes' counts in the same transaction.
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        sqlx::query(
            "UPDATE mailboxes SET
                 messages = messages - (SELECT COUNT(*) FROM pending_messages p
                     WHERE p.recipient_id = mailboxes.recipient_id AND p.created_at < $1),
                 bytes = bytes - (SELECT COALESCE(SUM(p.size), 0)
                     FROM pending_messages p
                     WHERE p.recipient_id = mailboxes.recipient_id AND p.created_at < $1)
             WHERE recipient_id IN
                 (SELECT recipient_id FROM pending_messages WHERE created_at < $1)",
        )
        .bind(cutoffs.messages_before)
        .execute(&mut *tx)
        .await?;
        let messages = sqlx::query("DELETE FROM pending_messages WHERE created_at < $1")
            .bind(cutoffs.messages_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        let used_prekeys =
            sqlx::query("DELETE FROM one_time_prekeys WHERE used_at IS NOT NULL AND used_at < $1")
                .bind(cutoffs.used_prekeys_before)
                .execute(&self.pool)
                .await?
                .rows_affected();
        let nonces = sqlx::query("DELETE FROM auth_nonces WHERE expires_at <= $1")
            .bind(cutoffs.now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let delivered = sqlx::query("DELETE FROM delivery_records WHERE delivered_at < $1")
            .bind(cutoffs.delivered_before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        // Kept a day after sending: the per-number limits count them.
        let verifications = sqlx::query("DELETE FROM verifications WHERE created_at < $1")
            .bind(cutoffs.now.saturating_sub(super::DAY_MS))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(PurgeReport {
            messages,
            used_prekeys,
            nonces,
            delivered,
            verifications,
        })
    }
}
