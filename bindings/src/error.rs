//! The errors the app sees: one variant per failure it may react to, mirroring
//! `privcomm_core::CoreError`, plus the secret store's own error.

use privcomm_core::CoreError;

/// Everything a `PrivcommClient` call can fail with. Every variant carries `detail`, a
/// human-readable sentence (also the exception's message), and `category`, what the app
/// should do about it (decided by the core, `ErrorCategory`). No variant carries secret
/// material.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum PrivcommError {
    /// The secret store's key does not open this database (wrong device, restored backup,
    /// replaced keystore key). Recovery: `delete_local_data`, then register again.
    #[error("{detail}")]
    WrongKey {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The secret store has no key for an existing database. Recovery: as `WrongKey`.
    #[error("{detail}")]
    MissingKey {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The secret store reports the key permanently lost (`SecretStoreError.KeyLost`).
    /// Recovery: as `WrongKey`.
    #[error("{detail}")]
    SecretLost {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The secret store is temporarily unusable (`SecretStoreError.Unavailable`); retry
    /// later, nothing is lost.
    #[error("{detail}")]
    SecretStoreUnavailable {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The secret store failed otherwise.
    #[error("{detail}")]
    SecretStore {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// A stored value failed authentication (corrupt or tampered with).
    #[error("{detail}")]
    Tampered {
        /// Table of the bad row.
        table: String,
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// A stored value has an unknown format version.
    #[error("{detail}")]
    UnsupportedFormat {
        /// Table of the bad row.
        table: String,
        /// The version byte found.
        version: u8,
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// No Signal session with this peer yet.
    #[error("{detail}")]
    NoSession {
        /// The peer.
        peer: String,
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The peer's identity key changed; call `accept_identity` after the user compared
    /// safety numbers.
    #[error("{detail}")]
    IdentityChanged {
        /// The peer.
        peer: String,
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// A message was already decrypted (a replay or duplicate delivery).
    #[error("{detail}")]
    DuplicateMessage {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// A message could not be decrypted or parsed.
    #[error("{detail}")]
    InvalidMessage {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// A prekey bundle is malformed or its signatures do not verify.
    #[error("{detail}")]
    InvalidBundle {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// No session with this peer and no way to start one: call `resolve_peer` first.
    #[error("{detail}")]
    UnknownPeer {
        /// The peer.
        peer: String,
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The peer is blocked: `unblock_peer` first.
    #[error("{detail}")]
    PeerBlocked {
        /// The peer.
        peer: String,
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The account has not been created in this store (`register` first).
    #[error("{detail}")]
    NoAccount {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// An account for another phone number already exists in this store.
    #[error("{detail}")]
    AccountExists {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// Any other Signal protocol failure.
    #[error("{detail}")]
    Protocol {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The local database failed.
    #[error("{detail}")]
    Database {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The database was written by a newer version of the core.
    #[error("{detail}")]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The verification code is wrong (or none was sent to this number).
    #[error("{detail}")]
    InvalidCode {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The verification code expired or was entered wrong too often: request a new one.
    #[error("{detail}")]
    CodeExpired {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The number's account has a registration lock: register with its PIN, or after
    /// `retry_after_secs` (when the lock lapses).
    #[error("{detail}")]
    RegistrationLocked {
        /// Seconds until the lock lapses.
        retry_after_secs: u64,
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// Too many attempts (codes for this number, wrong PINs): retry after
    /// `retry_after_secs`.
    #[error("{detail}")]
    RateLimited {
        /// Seconds to wait.
        retry_after_secs: u64,
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The relay could not be reached or the connection failed.
    #[error("{detail}")]
    Network {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The relay answered with an error.
    #[error("{detail}")]
    Relay {
        /// HTTP status.
        status: u16,
        /// The relay's error code (`docs/PROTOCOL.md`), when its body carried one.
        code: Option<String>,
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The relay broke the protocol.
    #[error("{detail}")]
    BadRelayResponse {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The client was closed.
    #[error("{detail}")]
    Closed {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The operation needs a live connection (`connect` first).
    #[error("{detail}")]
    NotConnected {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// Another call is in progress.
    #[error("{detail}")]
    CallInProgress {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// No call with this id is in progress.
    #[error("{detail}")]
    NoSuchCall {
        /// The call id given.
        call_id: String,
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// Relay-only calls are configured but the relay offers no TURN server.
    #[error("{detail}")]
    TurnUnavailable {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// The call's media setup failed.
    #[error("{detail}")]
    Call {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// Invalid input from the app.
    #[error("{detail}")]
    InvalidArgument {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
    /// A failure inside the bindings (the runtime could not start, a task died). A bug.
    #[error("{detail}")]
    Internal {
        /// What happened, in a sentence.
        detail: String,
        /// What the app should do.
        category: ErrorCategory,
    },
}

/// What kind of failure an error is, and so what the app should do about it (the core's
/// `ErrorCategory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ErrorCategory {
    /// Temporary (the network, an overloaded relay, a locked keystore): retry later.
    Transient,
    /// Needs a live connection: `connect` first.
    NotConnected,
    /// The app passed something invalid: fix the call.
    InvalidInput,
    /// About the peer: resolve, unblock, or accept their new identity.
    Peer,
    /// About the account: `register` first, or the store belongs to another number.
    Account,
    /// The local data cannot be opened: `delete_local_data`, then register again.
    LocalDataLost,
    /// The database was written by a newer version: update the app.
    UpdateRequired,
    /// The client was closed: open a new one.
    Closed,
    /// A call could not be placed or changed.
    Call,
    /// Refused for good, a protocol violation or a bug.
    Failed,
}

impl From<privcomm_core::ErrorCategory> for ErrorCategory {
    fn from(c: privcomm_core::ErrorCategory) -> Self {
        use privcomm_core::ErrorCategory as C;
        match c {
            C::Transient => Self::Transient,
            C::NotConnected => Self::NotConnected,
            C::InvalidInput => Self::InvalidInput,
            C::Peer => Self::Peer,
            C::Account => Self::Account,
            C::LocalDataLost => Self::LocalDataLost,
            C::UpdateRequired => Self::UpdateRequired,
            C::Closed => Self::Closed,
            C::Call => Self::Call,
            C::Failed => Self::Failed,
        }
    }
}

impl PrivcommError {
    /// An `InvalidArgument` error about the app's input.
    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        CoreError::InvalidArgument(detail.into()).into()
    }

    /// An `Internal` error: a bug in the bindings.
    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        let detail = format!("internal error: {}", detail.into());
        Self::Internal {
            detail,
            category: ErrorCategory::Failed,
        }
    }
}

impl From<CoreError> for PrivcommError {
    fn from(e: CoreError) -> Self {
        let detail = e.to_string();
        let category = ErrorCategory::from(e.category());
        match e {
            CoreError::WrongKey => Self::WrongKey { detail, category },
            CoreError::MissingKey => Self::MissingKey { detail, category },
            CoreError::SecretLost(_) => Self::SecretLost { detail, category },
            CoreError::SecretStoreUnavailable(_) => {
                Self::SecretStoreUnavailable { detail, category }
            }
            CoreError::SecretStore(_) => Self::SecretStore { detail, category },
            CoreError::Tampered { table } => Self::Tampered {
                table: table.to_owned(),
                detail,
                category,
            },
            CoreError::UnsupportedFormat { table, version } => Self::UnsupportedFormat {
                table: table.to_owned(),
                version,
                detail,
                category,
            },
            CoreError::NoSession { peer } => Self::NoSession {
                peer: peer.to_string(),
                detail,
                category,
            },
            CoreError::IdentityChanged { peer } => Self::IdentityChanged {
                peer: peer.to_string(),
                detail,
                category,
            },
            CoreError::DuplicateMessage => Self::DuplicateMessage { detail, category },
            CoreError::InvalidMessage(_) => Self::InvalidMessage { detail, category },
            CoreError::InvalidBundle(_) => Self::InvalidBundle { detail, category },
            CoreError::UnknownPeer { peer } => Self::UnknownPeer {
                peer: peer.to_string(),
                detail,
                category,
            },
            CoreError::PeerBlocked { peer } => Self::PeerBlocked {
                peer: peer.to_string(),
                detail,
                category,
            },
            CoreError::NoAccount => Self::NoAccount { detail, category },
            CoreError::AccountExists => Self::AccountExists { detail, category },
            CoreError::Protocol(_) => Self::Protocol { detail, category },
            CoreError::Database(_) => Self::Database { detail, category },
            CoreError::SchemaTooNew { found, supported } => Self::SchemaTooNew {
                found,
                supported,
                detail,
                category,
            },
            CoreError::InvalidCode => Self::InvalidCode { detail, category },
            CoreError::CodeExpired => Self::CodeExpired { detail, category },
            CoreError::RegistrationLocked { retry_after_secs } => Self::RegistrationLocked {
                retry_after_secs,
                detail,
                category,
            },
            CoreError::RateLimited { retry_after_secs } => Self::RateLimited {
                retry_after_secs,
                detail,
                category,
            },
            CoreError::Network(_) => Self::Network { detail, category },
            CoreError::Relay { status, code, .. } => Self::Relay {
                status,
                code: code.map(|c| c.as_str().to_owned()),
                detail,
                category,
            },
            CoreError::BadRelayResponse(_) => Self::BadRelayResponse { detail, category },
            CoreError::Closed => Self::Closed { detail, category },
            CoreError::NotConnected => Self::NotConnected { detail, category },
            CoreError::CallInProgress => Self::CallInProgress { detail, category },
            CoreError::NoSuchCall { call_id } => Self::NoSuchCall {
                call_id: call_id.to_string(),
                detail,
                category,
            },
            CoreError::TurnUnavailable => Self::TurnUnavailable { detail, category },
            CoreError::Call(_) => Self::Call { detail, category },
            CoreError::InvalidArgument(_) => Self::InvalidArgument { detail, category },
        }
    }
}

/// What a `SecretStore` implementation throws. The kind decides what the app can do.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum SecretStoreError {
    /// The secret exists but can never be read again (keystore key deleted or invalidated,
    /// app data restored onto another device). Surfaces as `PrivcommError.SecretLost`.
    #[error("secret lost: {detail}")]
    KeyLost {
        /// What happened (no secret material).
        detail: String,
    },
    /// Temporarily unusable (device locked, keystore busy); surfaces as
    /// `PrivcommError.SecretStoreUnavailable`.
    #[error("secret store unavailable: {detail}")]
    Unavailable {
        /// What happened.
        detail: String,
    },
    /// Any other failure; surfaces as `PrivcommError.SecretStore`.
    #[error("secret store failed: {detail}")]
    Failed {
        /// What happened.
        detail: String,
    },
}

/// An exception the implementation did not declare (a bug in it) counts as a failure.
impl From<uniffi::UnexpectedUniFFICallbackError> for SecretStoreError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed {
            detail: first_line(&e.reason),
        }
    }
}

impl From<SecretStoreError> for privcomm_core::SecretStoreError {
    fn from(e: SecretStoreError) -> Self {
        match e {
            SecretStoreError::KeyLost { detail } => Self::Lost(detail),
            SecretStoreError::Unavailable { detail } => Self::Unavailable(detail),
            SecretStoreError::Failed { detail } => Self::Failed(detail),
        }
    }
}

/// The first line of a foreign exception's text: Kotlin sends the whole stack trace.
pub(crate) fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}
