//! Durable storage of the relay: users and their public keys, one-time prekeys, pending
//! (undelivered) messages and auth nonces. One trait, so the relay logic is the same on every
//! backend, and one implementation per backend: `SqliteStore` (a file; messages written only
//! by its group-commit thread) and `PgStore` (PostgreSQL through tokio-postgres). `open`
//! picks the one a database URL names.

mod convert;
mod mailbox;
mod migrations;
mod postgres;
mod send_window;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

pub use crate::pepper::PhoneKey;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (e.g. the phone hash is taken).
    #[error("conflict with existing data")]
    Conflict,
    /// A referenced row does not exist (e.g. an unknown recipient).
    #[error("referenced row does not exist")]
    MissingReference,
    /// The user would hold more one-time prekeys than allowed.
    #[error("too many one-time prekeys")]
    TooManyPrekeys,
    /// The recipient's mailbox is at its quota (messages or bytes).
    #[error("the recipient's mailbox is full")]
    MailboxFull,
    /// The database cannot be reached now (down, restarting, every connection busy):
    /// worth retrying.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] DriverError),
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(#[source] DriverError),
    /// The database URL or migrations are unusable.
    #[error("storage setup failed: {0}")]
    Setup(String),
    /// The relay's writer has stopped (it is shutting down).
    #[error("the storage writer has stopped")]
    WriterStopped,
    /// The recipient registered again since the sender's session (another registration id).
    #[error("the recipient registered again; the sender needs their new keys")]
    StaleRecipient,
    /// The verification code was used (or replaced) while this registration was checked.
    #[error("the verification code is no longer valid")]
    CodeUsed,
}

/// The database driver's own error, kept as the source of a `StoreError`.
pub type DriverError = Box<dyn std::error::Error + Send + Sync>;

/// Result of storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// How the relay uses its database connections.
#[derive(Clone, Copy, Debug)]
pub struct StoreSettings {
    /// Most connections open at once (`PRIVCOMM_DATABASE_POOL`).
    pub max_connections: u32,
    /// Longest a PostgreSQL statement may run before the server cancels it.
    pub statement_timeout: std::time::Duration,
    /// Longest a request waits for a connection, connecting included, before it fails
    /// with `database_unavailable`.
    pub acquire_timeout: std::time::Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            max_connections: 8,
            statement_timeout: std::time::Duration::from_secs(30),
            acquire_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// Opens the store a database URL names (`sqlite:…` or `postgres:…`/`postgresql:…`),
/// migrated and checked against `pepper`.
pub async fn open(
    url: &str,
    settings: StoreSettings,
    pepper: Arc<crate::pepper::Pepper>,
) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(
            SqliteStore::connect(url, settings.max_connections, pepper).await?,
        ))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PgStore::connect(url, settings, pepper).await?))
    } else {
        Err(StoreError::Setup(
            "the database URL must start with sqlite: or postgres:".into(),
        ))
    }
}

/// A day in Unix milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The start (00:00 UTC) of the day holding `ms`: `last_seen` is kept at this granularity,
/// so the relay's database does not record when each user was last online to the second.
pub fn day_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(DAY_MS)
}

/// A signed prekey (EC or Kyber) as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSignedPreKey {
    /// Client-chosen id.
    pub key_id: u32,
    /// Serialized public key.
    pub public_key: Vec<u8>,
    /// Identity key's signature over `public_key`.
    pub signature: Vec<u8>,
}

/// A one-time prekey as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPreKey {
    /// Client-chosen id.
    pub key_id: u32,
    /// Serialized public key.
    pub public_key: Vec<u8>,
}

/// A validated registration, ready to insert.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// The new user's id.
    pub id: Uuid,
    /// The peppered phone hash.
    pub phone_key: PhoneKey,
    /// libsignal registration id.
    pub registration_id: u32,
    /// Serialized identity public key.
    pub identity_key: Vec<u8>,
    /// Signed EC prekey.
    pub signed_prekey: StoredSignedPreKey,
    /// Kyber last-resort prekey.
    pub kyber_prekey: StoredSignedPreKey,
    /// One-time prekeys.
    pub one_time_prekeys: Vec<StoredPreKey>,
}

/// A registration's proof of the number: the session and code presented, as stored.
#[derive(Clone, Debug)]
pub struct CodeProof {
    /// `Pepper::session_key` of the verification session.
    pub session_key: String,
    /// The number's phone key.
    pub phone_key: PhoneKey,
    /// `Pepper::code_hash` of the presented code.
    pub code_hash: [u8; 32],
}

/// What a presented code turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeCheck {
    /// It is the code sent, still valid (and not yet used up: registering uses it).
    Valid,
    /// Wrong; attempts are left.
    Wrong,
    /// Expired, or this was the last wrong attempt: a new code is needed.
    Expired,
    /// No code was sent to this number (or it was used).
    Missing,
}

/// A registered number's account, as re-registration needs it.
#[derive(Clone, Debug)]
pub struct Account {
    /// The user id (kept by a re-registration).
    pub id: Uuid,
    /// Registrations of the number before the current one.
    pub generation: u32,
    /// The day (Unix ms at 00:00 UTC) the account was last seen.
    pub last_seen: i64,
    /// Verifier of the registration lock, if one is set.
    pub lock_verifier: Option<Vec<u8>>,
    /// Wrong lock tokens in the current window.
    pub lock_failures: u32,
    /// When the last wrong lock token came (Unix ms).
    pub lock_failed_at: i64,
}

/// What a re-registration does with the registration lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockChange {
    /// Keep it (the new device proved the PIN).
    Keep,
    /// Remove it (it had lapsed, or there was none).
    Clear,
}

/// What authentication needs to know of a user.
#[derive(Clone, Debug)]
pub struct UserIdentity {
    /// User id.
    pub id: Uuid,
    /// Serialized identity public key.
    pub identity_key: Vec<u8>,
    /// Registration generation (tokens carry it).
    pub generation: u32,
}

/// A prekey bundle with its one-time prekey (if any) already claimed.
#[derive(Clone, Debug)]
pub struct ClaimedBundle {
    /// Owner's user id.
    pub user_id: Uuid,
    /// libsignal registration id.
    pub registration_id: u32,
    /// Serialized identity public key.
    pub identity_key: Vec<u8>,
    /// Signed EC prekey.
    pub signed_prekey: StoredSignedPreKey,
    /// Kyber last-resort prekey.
    pub kyber_prekey: StoredSignedPreKey,
    /// The claimed one-time prekey, if one was left.
    pub one_time_prekey: Option<StoredPreKey>,
}

/// Changes to a user's prekeys.
#[derive(Clone, Debug, Default)]
pub struct PreKeyUpdate {
    /// New signed EC prekey.
    pub signed_prekey: Option<StoredSignedPreKey>,
    /// New Kyber last-resort prekey.
    pub kyber_prekey: Option<StoredSignedPreKey>,
    /// More one-time prekeys (ids already stored are ignored).
    pub one_time_prekeys: Vec<StoredPreKey>,
}

/// A message to store for a recipient.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// Fresh server id (used only if the message is new).
    pub id: Uuid,
    /// Sender's user id.
    pub sender: Uuid,
    /// Sender's message id (de-duplication key with `sender`).
    pub client_id: Uuid,
    /// Recipient's user id.
    pub recipient: Uuid,
    /// Opaque payload (shared, never copied on its way to storage and to the recipient).
    pub payload: Bytes,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The recipient's registration id the sender encrypted for; another one (the
    /// recipient registered again) refuses the message with `StaleRecipient`. `None`: not
    /// checked.
    pub recipient_registration_id: Option<u32>,
}

impl NewMessage {
    /// The pending row this message became when stored under `seq`.
    pub fn stored_as(&self, seq: i64) -> PendingMessage {
        PendingMessage {
            seq,
            id: self.id,
            sender: self.sender,
            recipient: self.recipient,
            payload: self.payload.clone(),
            created_at: self.created_at,
        }
    }
}

/// Outcome of storing a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored now; the recipient should be told.
    Stored(PendingMessage),
    /// The same (sender, client id) was stored before; nothing new was written.
    Duplicate {
        /// The server id it was stored under.
        server_id: Uuid,
    },
}

/// A stored message awaiting its recipient's ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMessage {
    /// Storage order; delivery follows it.
    pub seq: i64,
    /// Server id.
    pub id: Uuid,
    /// Sender's user id.
    pub sender: Uuid,
    /// Recipient's user id.
    pub recipient: Uuid,
    /// Opaque payload.
    pub payload: Bytes,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// An acknowledgement to apply: `recipient` has durably stored message `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckRequest {
    /// The acknowledging user; only their own messages are deleted.
    pub recipient: Uuid,
    /// Server id of the message.
    pub id: Uuid,
}

/// Writes committed together in one transaction (group commit): one durable commit for many
/// messages instead of one each.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// Messages to store, in arrival order.
    pub messages: Vec<NewMessage>,
    /// Acknowledgements to apply, in arrival order.
    pub acks: Vec<AckRequest>,
    /// Users whose `last_seen` becomes `now`.
    pub touches: Vec<Uuid>,
    /// Unix milliseconds, for delivery records and `last_seen`.
    pub now: i64,
    /// What one recipient's mailbox may hold; messages beyond it are refused.
    pub quota: MailboxQuota,
}

/// How much one recipient's mailbox (their undelivered messages) may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxQuota {
    /// Most undelivered messages.
    pub max_messages: u64,
    /// Most undelivered payload bytes.
    pub max_bytes: u64,
}

impl MailboxQuota {
    /// No quota (tests of storage itself).
    pub const UNLIMITED: Self = Self {
        max_messages: u64::MAX,
        max_bytes: u64::MAX,
    };

    /// True if a mailbox holding `usage` may take one more message of `bytes`.
    pub fn admits(&self, usage: MailboxUsage, bytes: u64) -> bool {
        let messages = u64::try_from(usage.messages).unwrap_or(0);
        let held = u64::try_from(usage.bytes).unwrap_or(0);
        messages < self.max_messages && held.saturating_add(bytes) <= self.max_bytes
    }
}

impl Default for MailboxQuota {
    fn default() -> Self {
        Self::UNLIMITED
    }
}

/// What one recipient's mailbox holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailboxUsage {
    /// Undelivered messages.
    pub messages: i64,
    /// Their payload bytes.
    pub bytes: i64,
}

/// What became of each write of a `WriteBatch`, index for index.
#[derive(Debug, Default)]
pub struct WriteBatchOutcome {
    /// Per message: stored, a duplicate, `MissingReference` for an unknown recipient or
    /// `MailboxFull` when the recipient's mailbox is at its quota.
    pub messages: Vec<StoreResult<StoreOutcome>>,
    /// Per ack: true if it deleted a pending message (false: not the caller's, or gone).
    pub acks: Vec<bool>,
}

/// Age limits for `purge`, as absolute cut-off times in Unix milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct PurgeCutoffs {
    /// Nonces that expired before this are deleted.
    pub now: i64,
    /// Messages stored before this are deleted.
    pub messages_before: i64,
    /// One-time prekeys claimed before this are deleted.
    pub used_prekeys_before: i64,
    /// De-duplication records of messages stored before this (to the day) are deleted.
    pub sends_before: i64,
}

/// Rows removed by one `purge`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Expired messages deleted.
    pub messages: u64,
    /// Used one-time prekeys deleted.
    pub used_prekeys: u64,
    /// Expired nonces deleted.
    pub nonces: u64,
    /// Old de-duplication records (`recent_sends` rows) deleted.
    pub send_records: u64,
    /// Expired verification codes deleted.
    pub verifications: u64,
}

/// The relay's storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Closes every connection; later calls fail with a database error.
    async fn close(&self);
    /// Removes copies of deleted rows that the database keeps beside its tables: SQLite
    /// checkpoints and truncates its WAL (deleted content is zeroed in the tables by
    /// `secure_delete`). PostgreSQL keeps dead rows until vacuum reuses their space; there
    /// the data files need disk encryption (docs/SECURITY.md).
    async fn scrub(&self) -> StoreResult<()>;

    /// Records a single-use nonce bound to a (peppered) phone hash.
    async fn insert_nonce(
        &self,
        nonce: &[u8],
        phone_key: &PhoneKey,
        expires_at: i64,
    ) -> StoreResult<()>;
    /// Consumes a nonce: true only if it existed for this phone key and had not expired.
    /// Either way it can never be used again.
    async fn take_nonce(&self, nonce: &[u8], phone_key: &PhoneKey, now: i64) -> StoreResult<bool>;

    /// Inserts a user with their keys and uses up the code of `proof`; `Conflict` if the
    /// phone key is taken, `CodeUsed` if the code was used meanwhile.
    async fn create_user(&self, user: &NewUser, now: i64, proof: &CodeProof) -> StoreResult<()>;
    /// Looks a user up by (peppered) phone hash.
    async fn user_by_phone_key(&self, phone_key: &PhoneKey) -> StoreResult<Option<UserIdentity>>;
    /// Looks a user up by id.
    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<UserIdentity>>;
    /// The registration generation of a user: tokens of another one are refused.
    async fn user_generation(&self, id: Uuid) -> StoreResult<Option<u32>>;

    /// Keeps the code sent in verification session `proof.session_key` for
    /// `proof.phone_key`, created `now` and valid until `expires_at`.
    async fn put_verification(
        &self,
        proof: &CodeProof,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()>;
    /// Voids the code of a session (it could not be delivered); the row still counts
    /// toward the number's limits.
    async fn void_verification(&self, session_key: &str) -> StoreResult<()>;
    /// Codes sent to `phone_key` since `since` (Unix ms), and when the latest was sent.
    async fn codes_sent_since(
        &self,
        phone_key: &PhoneKey,
        since: i64,
    ) -> StoreResult<(u64, Option<i64>)>;
    /// Checks a presented code, counting the attempt first (so parallel guesses cannot
    /// exceed `max_attempts`); a valid code's attempt is given back, and the code stays
    /// until a registration uses it.
    async fn check_verification(
        &self,
        proof: &CodeProof,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<CodeCheck>;
    /// The account registered under `phone_key`, if any.
    async fn account_by_phone_key(&self, phone_key: &PhoneKey) -> StoreResult<Option<Account>>;
    /// Registers the number of `proof` again for a new device: the account keeps its id,
    /// takes the new keys and a new generation (old tokens stop working), and loses its
    /// one-time prekeys and its undelivered messages (nobody can decrypt them now). Uses
    /// up the code (`CodeUsed` if it was used meanwhile).
    async fn replace_identity(
        &self,
        id: Uuid,
        user: &NewUser,
        now: i64,
        lock: LockChange,
        proof: &CodeProof,
    ) -> StoreResult<()>;
    /// Takes one of the `max` registration lock attempts a user has per `window_ms`, before
    /// the token is compared (so parallel requests cannot try more): false when they are
    /// spent. A successful re-registration gives them all back.
    async fn take_lock_attempt(
        &self,
        id: Uuid,
        now: i64,
        window_ms: i64,
        max: u32,
    ) -> StoreResult<bool>;
    /// Sets (or with `None` removes) the registration lock verifier of a user.
    async fn set_registration_lock(&self, id: Uuid, verifier: Option<&[u8]>) -> StoreResult<()>;

    /// Returns the user's bundle; with `take_one_time`, atomically claiming one unused
    /// one-time prekey for it.
    async fn claim_bundle(
        &self,
        phone_key: &PhoneKey,
        now: i64,
        take_one_time: bool,
    ) -> StoreResult<Option<ClaimedBundle>>;
    /// Unclaimed one-time prekeys of a user.
    async fn count_one_time_prekeys(&self, user: Uuid) -> StoreResult<u64>;
    /// Applies a prekey update; returns the unclaimed one-time prekey count afterwards.
    async fn update_prekeys(
        &self,
        user: Uuid,
        update: &PreKeyUpdate,
        now: i64,
        max_stored: u64,
    ) -> StoreResult<u64>;

    /// Pending messages of a recipient with `seq > after_seq`, in `seq` order.
    async fn pending_messages(
        &self,
        recipient: Uuid,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<PendingMessage>>;
    /// For each `(recipient, after_seq)`, that recipient's pending messages with
    /// `seq > after_seq`, at most `limit_each`, in `seq` order per recipient (recipients in
    /// any order). One query where the database allows: the bus wakes many connections at
    /// once, and one read each made a wake-up cost a query.
    async fn pending_messages_of(
        &self,
        reads: &[(Uuid, i64)],
        limit_each: usize,
    ) -> StoreResult<Vec<PendingMessage>> {
        let mut all = Vec::new();
        for &(recipient, after_seq) in reads {
            all.extend(
                self.pending_messages(recipient, after_seq, limit_each)
                    .await?,
            );
        }
        Ok(all)
    }
    /// How many group commits may run at once (each on its own connection). A recipient's
    /// writes always go to the same one (writer.rs).
    fn parallel_writers(&self) -> usize {
        1
    }
    /// Applies a batch of writes in one transaction. An `Err` means nothing was written (the
    /// caller may retry the writes one by one); per-write refusals are in the outcome. A
    /// message is stored unless the same (sender, client id) was stored before or the
    /// recipient's mailbox is at `batch.quota`; an ack deletes only its recipient's message.
    async fn write_batch(&self, batch: Arc<WriteBatch>) -> StoreResult<WriteBatchOutcome>;
    /// All pending messages (the queue-depth metric).
    async fn pending_total(&self) -> StoreResult<u64>;
    /// What `recipient`'s mailbox holds, as the quota counts it.
    async fn mailbox_usage(&self, recipient: Uuid) -> StoreResult<MailboxUsage>;
    /// Bytes the database takes on disk (SQLite: its file; PostgreSQL: the database).
    async fn database_bytes(&self) -> StoreResult<u64>;

    /// Deletes what the retention rules say is too old.
    async fn purge(&self, cutoffs: PurgeCutoffs) -> StoreResult<PurgeReport>;
}
