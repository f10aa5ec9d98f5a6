//! `Store` on PostgreSQL through tokio-postgres: sockets with `TCP_NODELAY`, statements
//! prepared once per connection, arrays bound as one parameter, independent statements of a
//! group commit pipelined on one connection (`batch.rs`). deadpool keeps the connections and
//! replaces those the server closed, so the relay outlives a database restart.

mod at_rest;
mod batch;
mod migrate;
mod tls;

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

use super::convert::{count_from, same_bytes, u32_from, uuid_from};
use super::{
    day_of, Account, ClaimedBundle, CodeCheck, CodeProof, LockChange, MailboxUsage, NewUser,
    PendingMessage, PhoneKey, PreKeyUpdate, PurgeCutoffs, PurgeReport, Store, StoreError,
    StoreResult, StoreSettings, StoredPreKey, StoredSignedPreKey, UserIdentity, WriteBatch,
    WriteBatchOutcome, DAY_MS,
};
use crate::pepper::Pepper;
use tls::TlsUrl;

/// The relay store on PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    /// Reads and the rarer writes (accounts, keys, nonces).
    pool: Pool,
    /// The group commits' own connections, one per writer: reads, however many, never
    /// leave a commit waiting for a connection.
    commits: Pool,
    /// Group commits that may run at once.
    writers: usize,
    /// Keys the phone keys and the senders' windows of de-duplication records.
    pepper: Arc<Pepper>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        match err.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => Self::Conflict,
            Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => Self::MissingReference,
            // Shutting down, starting up, cancelled by statement_timeout, out of connections.
            Some(code)
                if code.code().starts_with("57")
                    || code.code().starts_with("08")
                    || *code == SqlState::TOO_MANY_CONNECTIONS =>
            {
                Self::Unavailable(Box::new(err))
            }
            Some(_) => Self::Database(Box::new(err)),
            // No SQLSTATE: the connection itself failed (closed, reset, TLS, timeout), or
            // the relay misread a row (a bug, not an outage).
            None if err.is_closed() || from_io(&err) => Self::Unavailable(Box::new(err)),
            None => Self::Database(Box::new(err)),
        }
    }
}

/// True if an I/O error (socket, TLS, connect timeout) is among `err`'s causes.
fn from_io(err: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// True if `err` is PostgreSQL giving up a transaction that a retry can complete
/// (deadlock detected, serialization failure).
fn worth_retrying(err: &StoreError) -> bool {
    let StoreError::Database(source) = err else {
        return false;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|code| {
            *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

/// Times a group commit is tried when PostgreSQL gives it up for a deadlock.
const COMMIT_TRIES: usize = 3;

impl From<PoolError> for StoreError {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::Backend(e) => e.into(),
            other => Self::Unavailable(Box::new(other)),
        }
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://…`, libpq's `sslmode` and `sslrootcert` understood),
    /// runs the migrations and brings rows stored before the pepper existed into their
    /// peppered form (or checks that `pepper` is the one the database was written with).
    /// The first connection is made here: a URL that cannot work fails now, with its reason.
    pub async fn connect(
        url: &str,
        settings: StoreSettings,
        pepper: Arc<Pepper>,
    ) -> StoreResult<Self> {
        let tls_url = TlsUrl::split(url)?;
        let mut config: tokio_postgres::Config = tls_url
            .url
            .parse()
            .map_err(|e| StoreError::Setup(format!("bad database URL: {e}")))?;
        config.ssl_mode(tls_url.mode.negotiation());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(settings.acquire_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("privcomm-relay");
        }
        // A peer that vanished (a half-open connection after a failover) is noticed in
        // about half a minute, not the kernel's two hours.
        config.keepalives_idle(std::time::Duration::from_secs(15));
        config.tcp_user_timeout(std::time::Duration::from_secs(30));
        // Custom plans always: a plan cached while the tables were small (a sequential scan
        // of a then-empty table) would otherwise stay in use as they grow, and the relay
        // cannot count on autovacuum's statistics to invalidate it.
        let options = format!(
            "{} -c statement_timeout={} -c plan_cache_mode=force_custom_plan",
            config.get_options().unwrap_or_default(),
            settings.statement_timeout.as_millis()
        );
        config.options(options.trim());
        let tls = MakeRustlsConnect::new(tls_url.client_config()?);
        let build = |size: usize| {
            let manager = Manager::from_config(
                config.clone(),
                tls.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size.max(1))
                .wait_timeout(Some(settings.acquire_timeout))
                .create_timeout(Some(settings.acquire_timeout))
                .recycle_timeout(Some(settings.acquire_timeout))
                .runtime(Runtime::Tokio1)
                .build()
                .map_err(|e| StoreError::Setup(format!("database pool: {e}")))
        };
        let pool = build(usize::try_from(settings.max_connections).unwrap_or(1))?;
        // PostgreSQL commits in parallel; a quarter of the pool's size, 1 to 4.
        let writers = usize::try_from(settings.max_connections / 4)
            .unwrap_or(1)
            .clamp(1, 4);
        let commits = build(writers)?;
        let mut client = pool.get().await.map_err(|e| {
            StoreError::Setup(format!(
                "connecting to the database (sslmode={}): {}",
                tls_url.mode.as_str(),
                error_chain(&e)
            ))
        })?;
        migrate::run(&mut client).await?;
        at_rest::pepper_stored_rows(&mut client, &pepper).await?;
        drop(client);
        Ok(Self {
            pool,
            commits,
            writers,
            pepper,
        })
    }

    async fn client(&self) -> StoreResult<Object> {
        Ok(self.pool.get().await?)
    }

    /// One attempt at a group commit, on a connection of the writers' own.
    async fn commit_once(&self, batch: &WriteBatch) -> StoreResult<WriteBatchOutcome> {
        let connection = OpenTransaction(Some(self.commits.get().await?));
        let Some(client) = connection.0.as_ref() else {
            return Err(StoreError::Conflict);
        };
        match batch::apply(client, batch, &self.pepper).await {
            Ok(outcome) => {
                connection.release();
                Ok(outcome)
            }
            Err(e) => {
                // Nothing of the batch stays: the transaction is rolled back, or if that
                // fails, the connection closed (and PostgreSQL rolls back).
                if client.batch_execute("ROLLBACK").await.is_ok() {
                    connection.release();
                }
                Err(e)
            }
        }
    }
}

/// A writers' connection that may be inside a transaction the batch began itself. Unless
/// released, it is closed instead of going back to the pool, so no later batch ever runs
/// inside a transaction an interrupted one left open.
struct OpenTransaction(Option<Object>);

impl OpenTransaction {
    /// Back to the pool: the transaction ended.
    fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

/// The advisory lock a retention pass holds ("purg", with the hash of the relay's schema:
/// advisory locks are database-wide, and relays of other schemas of the same database do
/// not share its rows): one pass at a time per schema, whatever the number of relays.
const RETENTION_LOCK: i32 = 0x7075_7267;

/// The advisory lock a scrub (VACUUM) holds ("vacu", with the schema's hash, as above): one
/// vacuum of the schema's tables at a time, whatever the number of relays; the others skip
/// theirs. A session lock, since VACUUM cannot run inside a transaction.
const SCRUB_LOCK: i32 = 0x7661_6375;

/// An error and its sources, on one line (tokio-postgres puts the reason in the source).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Uses up the code of `proof` inside `tx`: `CodeUsed` unless it is still the one stored.
async fn use_code(tx: &deadpool_postgres::Transaction<'_>, proof: &CodeProof) -> StoreResult<()> {
    let statement = tx
        .prepare_cached(
            "UPDATE verifications SET expires_at = 0
             WHERE session_key = $1 AND phone_key = $2 AND code_hash = $3 AND expires_at > 0",
        )
        .await?;
    let used = tx
        .execute(
            &statement,
            &[
                &proof.session_key,
                &proof.phone_key.as_str(),
                &&proof.code_hash[..],
            ],
        )
        .await?;
    if used == 1 {
        Ok(())
    } else {
        Err(StoreError::CodeUsed)
    }
}

/// Inserts one-time prekeys of `user` in one statement, in the order given (claims take
/// the oldest first); ids already stored are skipped.
async fn insert_one_time_prekeys(
    tx: &deadpool_postgres::Transaction<'_>,
    user: Uuid,
    keys: &[StoredPreKey],
    now: i64,
) -> StoreResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = keys.iter().map(|k| i64::from(k.key_id)).collect();
    let publics: Vec<&[u8]> = keys.iter().map(|k| k.public_key.as_slice()).collect();
    let statement = tx
        .prepare_cached(
            "INSERT INTO one_time_prekeys (user_id, key_id, public_key, created_at)
             SELECT $1, k.key_id, k.public_key, $4
             FROM unnest($2::BIGINT[], $3::BYTEA[]) WITH ORDINALITY AS k(key_id, public_key, ord)
             ORDER BY k.ord
             ON CONFLICT (user_id, key_id) DO NOTHING",
        )
        .await?;
    tx.execute(&statement, &[&&user.as_bytes()[..], &ids, &publics, &now])
        .await?;
    Ok(())
}

/// A user's registration id, identity key and signed prekeys as bound parameters, in the
/// order of the users columns from `registration_id` to `kyber_prekey_signature`.
struct IdentityColumns<'a> {
    registration_id: i64,
    identity_key: &'a [u8],
    signed_id: i64,
    signed: &'a [u8],
    signed_signature: &'a [u8],
    kyber_id: i64,
    kyber: &'a [u8],
    kyber_signature: &'a [u8],
}

impl<'a> IdentityColumns<'a> {
    fn of(user: &'a NewUser) -> Self {
        Self {
            registration_id: i64::from(user.registration_id),
            identity_key: &user.identity_key,
            signed_id: i64::from(user.signed_prekey.key_id),
            signed: &user.signed_prekey.public_key,
            signed_signature: &user.signed_prekey.signature,
            kyber_id: i64::from(user.kyber_prekey.key_id),
            kyber: &user.kyber_prekey.public_key,
            kyber_signature: &user.kyber_prekey.signature,
        }
    }
}

fn pending_from_row(row: &Row) -> StoreResult<PendingMessage> {
    Ok(PendingMessage {
        seq: row.try_get("seq")?,
        id: uuid_from(row.try_get("id")?)?,
        sender: uuid_from(row.try_get("sender_id")?)?,
        recipient: uuid_from(row.try_get("recipient_id")?)?,
        payload: bytes::Bytes::copy_from_slice(row.try_get::<_, &[u8]>("payload")?),
        created_at: row.try_get("created_at")?,
    })
}

fn signed_prekey(
    row: &Row,
    id: &str,
    key: &str,
    signature: &str,
) -> StoreResult<StoredSignedPreKey> {
    Ok(StoredSignedPreKey {
        key_id: u32_from(row.try_get(id)?)?,
        public_key: row.try_get(key)?,
        signature: row.try_get(signature)?,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close();
        self.commits.close();
    }

    async fn scrub(&self) -> StoreResult<()> {
        // The tables every message rewrites leave a dead row per write (window slots are
        // overwritten, mailbox counts updated, pending rows deleted). Autovacuum may be off,
        // and their indexes would grow with the dead entries: vacuum them here, so their
        // size follows the live rows. Dead rows' bytes stay in the files until reused; the
        // data files need disk encryption (docs/SECURITY.md).
        let client = self.client().await?;
        let locked: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))",
                &[&SCRUB_LOCK],
            )
            .await?
            .get(0);
        if !locked {
            // Another relay of this schema is vacuuming these tables now.
            return Ok(());
        }
        let vacuumed = async {
            client.batch_execute("SET statement_timeout = 0").await?;
            let vacuumed = client
                .batch_execute("VACUUM recent_sends, send_counters, mailboxes, pending_messages")
                .await;
            client.batch_execute("RESET statement_timeout").await?;
            vacuumed
        }
        .await;
        let unlocked = client
            .query_one(
                "SELECT pg_advisory_unlock($1, hashtext(current_schema()))",
                &[&SCRUB_LOCK],
            )
            .await;
        if unlocked.is_err() {
            // A pooled connection must not keep the lock: close it instead.
            drop(Object::take(client));
        }
        vacuumed?;
        unlocked?;
        Ok(())
    }

    async fn insert_nonce(
        &self,
        nonce: &[u8],
        phone_key: &PhoneKey,
        expires_at: i64,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO auth_nonces (nonce, phone_key, expires_at) VALUES ($1, $2, $3)",
            )
            .await?;
        client
            .execute(&statement, &[&nonce, &phone_key.as_str(), &expires_at])
            .await?;
        Ok(())
    }

    async fn take_nonce(&self, nonce: &[u8], phone_key: &PhoneKey, now: i64) -> StoreResult<bool> {
        let client = self.client().await?;
        // Deleting first makes the nonce single-use even when the check below fails.
        let statement = client
            .prepare_cached(
                "DELETE FROM auth_nonces WHERE nonce = $1 RETURNING phone_key, expires_at",
            )
            .await?;
        let Some(row) = client.query_opt(&statement, &[&nonce]).await? else {
            return Ok(false);
        };
        let bound_to: &str = row.try_get("phone_key")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        Ok(bound_to == phone_key.as_str() && expires_at > now)
    }

    async fn create_user(&self, user: &NewUser, now: i64, proof: &CodeProof) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        use_code(&tx, proof).await?;
        let statement = tx
            .prepare_cached(
                "INSERT INTO users (id, phone_key, registration_id, identity_key,
                     signed_prekey_id, signed_prekey, signed_prekey_signature,
                     kyber_prekey_id, kyber_prekey, kyber_prekey_signature, created_at, last_seen)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .await?;
        let c = IdentityColumns::of(user);
        tx.execute(
            &statement,
            &[
                &&user.id.as_bytes()[..],
                &user.phone_key.as_str(),
                &c.registration_id,
                &c.identity_key,
                &c.signed_id,
                &c.signed,
                &c.signed_signature,
                &c.kyber_id,
                &c.kyber,
                &c.kyber_signature,
                &now,
                &day_of(now),
            ],
        )
        .await?;
        insert_one_time_prekeys(&tx, user.id, &user.one_time_prekeys, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn user_by_phone_key(&self, phone_key: &PhoneKey) -> StoreResult<Option<UserIdentity>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT id, identity_key, generation FROM users WHERE phone_key = $1")
            .await?;
        let row = client.query_opt(&statement, &[&phone_key.as_str()]).await?;
        row.map(|row| {
            Ok(UserIdentity {
                id: uuid_from(row.try_get("id")?)?,
                identity_key: row.try_get("identity_key")?,
                generation: u32_from(row.try_get("generation")?)?,
            })
        })
        .transpose()
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<UserIdentity>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT identity_key, generation FROM users WHERE id = $1")
            .await?;
        let row = client.query_opt(&statement, &[&&id.as_bytes()[..]]).await?;
        row.map(|row| {
            Ok(UserIdentity {
                id,
                identity_key: row.try_get("identity_key")?,
                generation: u32_from(row.try_get("generation")?)?,
            })
        })
        .transpose()
    }

    async fn user_generation(&self, id: Uuid) -> StoreResult<Option<u32>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT generation FROM users WHERE id = $1")
            .await?;
        let row = client.query_opt(&statement, &[&&id.as_bytes()[..]]).await?;
        row.map(|row| u32_from(row.try_get(0)?)).transpose()
    }

    async fn put_verification(
        &self,
        proof: &CodeProof,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO verifications
                     (session_key, phone_key, code_hash, created_at, expires_at, attempts)
                 VALUES ($1, $2, $3, $4, $5, 0)",
            )
            .await?;
        client
            .execute(
                &statement,
                &[
                    &proof.session_key,
                    &proof.phone_key.as_str(),
                    &&proof.code_hash[..],
                    &now,
                    &expires_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn void_verification(&self, session_key: &str) -> StoreResult<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("UPDATE verifications SET expires_at = 0 WHERE session_key = $1")
            .await?;
        client.execute(&statement, &[&session_key]).await?;
        Ok(())
    }

    async fn codes_sent_since(
        &self,
        phone_key: &PhoneKey,
        since: i64,
    ) -> StoreResult<(u64, Option<i64>)> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT COUNT(*) AS sent, MAX(created_at) AS latest FROM verifications
                 WHERE phone_key = $1 AND created_at >= $2",
            )
            .await?;
        let row = client
            .query_one(&statement, &[&phone_key.as_str(), &since])
            .await?;
        let sent: i64 = row.try_get("sent")?;
        let latest: Option<i64> = row.try_get("latest")?;
        Ok((count_from(sent), latest))
    }

    async fn check_verification(
        &self,
        proof: &CodeProof,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<CodeCheck> {
        let client = self.client().await?;
        // The attempt is taken before the comparison, in one statement: concurrent guesses
        // each take one, and none is answered once they are spent.
        let take = client
            .prepare_cached(
                "UPDATE verifications SET attempts = attempts + 1
                 WHERE session_key = $1 AND phone_key = $2 AND expires_at > $3 AND attempts < $4
                 RETURNING code_hash, attempts",
            )
            .await?;
        let max = i64::from(max_attempts);
        let taken = client
            .query_opt(
                &take,
                &[&proof.session_key, &proof.phone_key.as_str(), &now, &max],
            )
            .await?;
        let Some(row) = taken else {
            let known = client
                .prepare_cached(
                    "SELECT attempts FROM verifications WHERE session_key = $1 AND phone_key = $2",
                )
                .await?;
            let row = client
                .query_opt(&known, &[&proof.session_key, &proof.phone_key.as_str()])
                .await?;
            return Ok(match row {
                Some(_) => CodeCheck::Expired,
                None => CodeCheck::Missing,
            });
        };
        let stored: &[u8] = row.try_get("code_hash")?;
        let attempts: i64 = row.try_get("attempts")?;
        if same_bytes(stored, &proof.code_hash) {
            // Only wrong codes count: the owner may need the code again (with a PIN).
            let give_back = client
                .prepare_cached(
                    "UPDATE verifications SET attempts = attempts - 1 WHERE session_key = $1",
                )
                .await?;
            client.execute(&give_back, &[&proof.session_key]).await?;
            return Ok(CodeCheck::Valid);
        }
        Ok(if attempts >= max {
            CodeCheck::Expired
        } else {
            CodeCheck::Wrong
        })
    }

    async fn account_by_phone_key(&self, phone_key: &PhoneKey) -> StoreResult<Option<Account>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, generation, last_seen, lock_verifier, lock_failures, lock_failed_at
                 FROM users WHERE phone_key = $1",
            )
            .await?;
        let row = client.query_opt(&statement, &[&phone_key.as_str()]).await?;
        row.map(|row| {
            Ok(Account {
                id: uuid_from(row.try_get("id")?)?,
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
        let id_bytes = &id.as_bytes()[..];
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        use_code(&tx, proof).await?;
        let update = tx
            .prepare_cached(
                "UPDATE users SET registration_id = $2, identity_key = $3,
                     signed_prekey_id = $4, signed_prekey = $5, signed_prekey_signature = $6,
                     kyber_prekey_id = $7, kyber_prekey = $8, kyber_prekey_signature = $9,
                     generation = generation + 1, last_seen = $10,
                     lock_verifier = CASE WHEN $11::BOOLEAN THEN lock_verifier ELSE NULL END,
                     lock_failures = 0, lock_failed_at = 0
                 WHERE id = $1",
            )
            .await?;
        let c = IdentityColumns::of(user);
        let keep_lock = lock == LockChange::Keep;
        tx.execute(
            &update,
            &[
                &id_bytes,
                &c.registration_id,
                &c.identity_key,
                &c.signed_id,
                &c.signed,
                &c.signed_signature,
                &c.kyber_id,
                &c.kyber,
                &c.kyber_signature,
                &day_of(now),
                &keep_lock,
            ],
        )
        .await?;
        // Keys and messages of the old device: nobody can use them any more.
        for sql in [
            "DELETE FROM one_time_prekeys WHERE user_id = $1",
            "DELETE FROM pending_messages WHERE recipient_id = $1",
            "DELETE FROM mailboxes WHERE recipient_id = $1",
        ] {
            let statement = tx.prepare_cached(sql).await?;
            tx.execute(&statement, &[&id_bytes]).await?;
        }
        insert_one_time_prekeys(&tx, id, &user.one_time_prekeys, now).await?;
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
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE users SET
                     lock_failures = CASE WHEN lock_failed_at > $2::BIGINT - $3::BIGINT
                                          THEN lock_failures + 1 ELSE 1 END,
                     lock_failed_at = $2
                 WHERE id = $1
                   AND NOT (lock_failed_at > $2::BIGINT - $3::BIGINT AND lock_failures >= $4)
                 RETURNING lock_failures",
            )
            .await?;
        let taken = client
            .query_opt(
                &statement,
                &[&&id.as_bytes()[..], &now, &window_ms, &i64::from(max)],
            )
            .await?;
        Ok(taken.is_some())
    }

    async fn set_registration_lock(&self, id: Uuid, verifier: Option<&[u8]>) -> StoreResult<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE users SET lock_verifier = $2, lock_failures = 0, lock_failed_at = 0
                 WHERE id = $1",
            )
            .await?;
        client
            .execute(&statement, &[&&id.as_bytes()[..], &verifier])
            .await?;
        Ok(())
    }

    async fn claim_bundle(
        &self,
        phone_key: &PhoneKey,
        now: i64,
        take_one_time: bool,
    ) -> StoreResult<Option<ClaimedBundle>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, registration_id, identity_key, signed_prekey_id, signed_prekey,
                        signed_prekey_signature, kyber_prekey_id, kyber_prekey,
                        kyber_prekey_signature
                 FROM users WHERE phone_key = $1",
            )
            .await?;
        let Some(row) = client.query_opt(&statement, &[&phone_key.as_str()]).await? else {
            return Ok(None);
        };
        let user_id = uuid_from(row.try_get("id")?)?;
        let one_time_prekey = if take_one_time {
            // Rows another transaction is claiming are skipped: concurrent fetches never
            // share a key.
            let claim = client
                .prepare_cached(
                    "UPDATE one_time_prekeys SET used_at = $2 WHERE id = (
                         SELECT id FROM one_time_prekeys WHERE user_id = $1 AND used_at IS NULL
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING key_id, public_key",
                )
                .await?;
            client
                .query_opt(&claim, &[&&user_id.as_bytes()[..], &now])
                .await?
                .map(|k| -> StoreResult<StoredPreKey> {
                    Ok(StoredPreKey {
                        key_id: u32_from(k.try_get("key_id")?)?,
                        public_key: k.try_get("public_key")?,
                    })
                })
                .transpose()?
        } else {
            None
        };
        Ok(Some(ClaimedBundle {
            user_id,
            registration_id: u32_from(row.try_get("registration_id")?)?,
            identity_key: row.try_get("identity_key")?,
            signed_prekey: signed_prekey(
                &row,
                "signed_prekey_id",
                "signed_prekey",
                "signed_prekey_signature",
            )?,
            kyber_prekey: signed_prekey(
                &row,
                "kyber_prekey_id",
                "kyber_prekey",
                "kyber_prekey_signature",
            )?,
            one_time_prekey,
        }))
    }

    async fn count_one_time_prekeys(&self, user: Uuid) -> StoreResult<u64> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND used_at IS NULL",
            )
            .await?;
        let row = client
            .query_one(&statement, &[&&user.as_bytes()[..]])
            .await?;
        Ok(count_from(row.try_get(0)?))
    }

    async fn update_prekeys(
        &self,
        user: Uuid,
        update: &PreKeyUpdate,
        now: i64,
        max_stored: u64,
    ) -> StoreResult<u64> {
        let user_bytes = &user.as_bytes()[..];
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for (key, sql) in [
            (
                &update.signed_prekey,
                "UPDATE users SET signed_prekey_id = $2, signed_prekey = $3,
                     signed_prekey_signature = $4 WHERE id = $1",
            ),
            (
                &update.kyber_prekey,
                "UPDATE users SET kyber_prekey_id = $2, kyber_prekey = $3,
                     kyber_prekey_signature = $4 WHERE id = $1",
            ),
        ] {
            if let Some(key) = key {
                let statement = tx.prepare_cached(sql).await?;
                tx.execute(
                    &statement,
                    &[
                        &user_bytes,
                        &i64::from(key.key_id),
                        &key.public_key,
                        &key.signature,
                    ],
                )
                .await?;
            }
        }
        insert_one_time_prekeys(&tx, user, &update.one_time_prekeys, now).await?;
        let statement = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND used_at IS NULL",
            )
            .await?;
        let count = count_from(tx.query_one(&statement, &[&user_bytes]).await?.try_get(0)?);
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
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT seq, id, sender_id, recipient_id, payload, created_at
                 FROM pending_messages
                 WHERE recipient_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &statement,
                &[&&recipient.as_bytes()[..], &after_seq, &limit],
            )
            .await?;
        rows.iter().map(pending_from_row).collect()
    }

    async fn pending_messages_of(
        &self,
        reads: &[(Uuid, i64)],
        limit_each: usize,
    ) -> StoreResult<Vec<PendingMessage>> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        // Each recipient's rows by its own index range scan, as `pending_messages` reads them.
        let statement = client
            .prepare_cached(
                "SELECT p.seq, p.id, p.sender_id, p.recipient_id, p.payload, p.created_at
                 FROM unnest($1::BYTEA[], $2::BIGINT[]) AS w(recipient_id, after_seq)
                 CROSS JOIN LATERAL (
                     SELECT seq, id, sender_id, recipient_id, payload, created_at
                     FROM pending_messages
                     WHERE recipient_id = w.recipient_id AND seq > w.after_seq
                     ORDER BY seq LIMIT $3) p",
            )
            .await?;
        let recipients: Vec<&[u8]> = reads.iter().map(|(r, _)| &r.as_bytes()[..]).collect();
        let after: Vec<i64> = reads.iter().map(|&(_, a)| a).collect();
        let limit = i64::try_from(limit_each).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&recipients, &after, &limit])
            .await?;
        rows.iter().map(pending_from_row).collect()
    }

    fn parallel_writers(&self) -> usize {
        self.writers
    }

    async fn write_batch(&self, batch: Arc<WriteBatch>) -> StoreResult<WriteBatchOutcome> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.commit_once(&batch).await {
                Err(e) if tries < COMMIT_TRIES && worth_retrying(&e) => {
                    tracing::debug!(error = %e, "group commit given up by PostgreSQL; retried");
                }
                other => return other,
            }
        }
    }

    async fn pending_total(&self) -> StoreResult<u64> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT COUNT(*) FROM pending_messages")
            .await?;
        Ok(count_from(
            client.query_one(&statement, &[]).await?.try_get(0)?,
        ))
    }

    async fn mailbox_usage(&self, recipient: Uuid) -> StoreResult<MailboxUsage> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT messages, bytes FROM mailboxes WHERE recipient_id = $1")
            .await?;
        let row = client
            .query_opt(&statement, &[&&recipient.as_bytes()[..]])
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
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT CAST(pg_database_size(current_database()) AS BIGINT)")
            .await?;
        Ok(count_from(
            client.query_one(&statement, &[]).await?.try_get(0)?,
        ))
    }

    async fn purge(&self, cutoffs: PurgeCutoffs) -> StoreResult<PurgeReport> {
        let mut client = self.client().await?;
        // One transaction, and one pass at a time for every relay of this database: two
        // passes at once would each subtract the same expired messages from their
        // mailboxes' counts. A relay that finds the lock taken skips its pass (the one
        // running deletes what it would have).
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))",
                &[&RETENTION_LOCK],
            )
            .await?
            .try_get(0)?;
        if !locked {
            tx.rollback().await?;
            return Ok(PurgeReport::default());
        }
        let recount = tx
            .prepare_cached(
                "UPDATE mailboxes SET
                     messages = messages - (SELECT COUNT(*) FROM pending_messages p
                         WHERE p.recipient_id = mailboxes.recipient_id AND p.created_at < $1),
                     bytes = bytes - (SELECT COALESCE(SUM(p.size), 0) FROM pending_messages p
                         WHERE p.recipient_id = mailboxes.recipient_id AND p.created_at < $1)
                 WHERE recipient_id IN
                     (SELECT recipient_id FROM pending_messages WHERE created_at < $1)",
            )
            .await?;
        tx.execute(&recount, &[&cutoffs.messages_before]).await?;
        let expire = tx
            .prepare_cached("DELETE FROM pending_messages WHERE created_at < $1")
            .await?;
        let messages = tx.execute(&expire, &[&cutoffs.messages_before]).await?;
        let mut deleted = [0u64; 5];
        let verifications_before = cutoffs.now.saturating_sub(DAY_MS);
        for (slot, (sql, cutoff)) in deleted.iter_mut().zip([
            (
                "DELETE FROM one_time_prekeys WHERE used_at IS NOT NULL AND used_at < $1",
                cutoffs.used_prekeys_before,
            ),
            (
                "DELETE FROM auth_nonces WHERE expires_at <= $1",
                cutoffs.now,
            ),
            // Bounded tables (a window per sender): a scan per pass costs no index. Rows a
            // group commit holds are skipped (next pass), so the purge never waits on, or
            // deadlocks with, the writers.
            (
                "DELETE FROM recent_sends WHERE slot_key IN (SELECT slot_key FROM recent_sends
                     WHERE stored_on < $1 FOR UPDATE SKIP LOCKED)",
                cutoffs.sends_before,
            ),
            // A counter idle that long has no row left: its sender starts again at 0.
            (
                "DELETE FROM send_counters WHERE counter_key IN (SELECT counter_key
                     FROM send_counters WHERE last_day < $1 FOR UPDATE SKIP LOCKED)",
                cutoffs.sends_before,
            ),
            // Kept a day after sending: the per-number limits count them.
            (
                "DELETE FROM verifications WHERE created_at < $1",
                verifications_before,
            ),
        ]) {
            let statement = tx.prepare_cached(sql).await?;
            *slot = tx.execute(&statement, &[&cutoff]).await?;
        }
        tx.commit().await?;
        let [used_prekeys, nonces, send_records, _counters, verifications] = deleted;
        Ok(PurgeReport {
            messages,
            used_prekeys,
            nonces,
            send_records,
            verifications,
        })
    }
}
