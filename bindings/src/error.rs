//! The errors the app sees: one variant per failure it may react to, mirroring
//! `privcomm_core::CoreError`, plus the secret store's own error.

use privcomm_core::CoreError;

/// Everything a `PrivcommClient` call can fail with. No variant carries secret material.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum PrivcommError {
    /// The secret store's key does not open this database (wrong device, restored backup,
    /// replaced keystore key). Recovery: `delete_local_data`, then register again.
    #[error("the data key cannot be unwrapped: wrong key for this database")]
    WrongKey,
    /// The secret store has no key for an existing database. Recovery: as `WrongKey`.
    #[error("no key for this database in the secret store")]
    MissingKey,
    /// The secret store reports the key permanently lost (`SecretStoreError.KeyLost`).
    /// Recovery: as `WrongKey`.
    #[error("the key protecting this database is lost: {detail}")]
    SecretLost {
        /// What the secret store said.
        detail: String,
    },
    /// The secret store is temporarily unusable (`SecretStoreError.Unavailable`); retry
    /// later, nothing is lost.
    #[error("the secret store is unavailable: {detail}")]
    SecretStoreUnavailable {
        /// What the secret store said.
        detail: String,
    },
    /// The secret store failed otherwise.
    #[error("secret store error: {detail}")]
    SecretStore {
        /// What the secret store said.
        detail: String,
    },
    /// A stored value failed authentication (corrupt or tampered with).
    #[error("stored data in `{table}` failed authentication (corrupt or tampered)")]
    Tampered {
        /// Table of the bad row.
        table: String,
    },
    /// A stored value has an unknown format version.
    #[error("stored data in `{table}` has unsupported format version {version}")]
    UnsupportedFormat {
        /// Table of the bad row.
        table: String,
        /// The version byte found.
        version: u8,
    },
    /// No Signal session with this peer yet.
    #[error("no session with peer {peer}")]
    NoSession {
        /// The peer.
        peer: String,
    },
    /// The peer's identity key changed; call `accept_identity` after the user compared
    /// safety numbers.
    #[error("the identity key of peer {peer} changed")]
    IdentityChanged {
        /// The peer.
        peer: String,
    },
    /// A message was already decrypted (a replay or duplicate delivery).
    #[error("duplicate message")]
    DuplicateMessage,
    /// A message could not be decrypted or parsed.
    #[error("undecryptable message: {detail}")]
    InvalidMessage {
        /// Why.
        detail: String,
    },
    /// A prekey bundle is malformed or its signatures do not verify.
    #[error("invalid prekey bundle: {detail}")]
    InvalidBundle {
        /// Why.
        detail: String,
    },
    /// No session with this peer and no way to start one: call `resolve_peer` first.
    #[error("unknown peer {peer}")]
    UnknownPeer {
        /// The peer.
        peer: String,
    },
    /// The account has not been created in this store (`register` first).
    #[error("no account in this store")]
    NoAccount,
    /// An account for another phone number already exists in this store.
    #[error("an account already exists in this store")]
    AccountExists,
    /// Any other Signal protocol failure.
    #[error("signal protocol error: {detail}")]
    Protocol {
        /// Why.
        detail: String,
    },
    /// The local database failed.
    #[error("database error: {detail}")]
    Database {
        /// Why.
        detail: String,
    },
    /// The database was written by a newer version of the core.
    #[error("database schema version {found} is newer than supported {supported}")]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The relay could not be reached or the connection failed.
    #[error("network error: {detail}")]
    Network {
        /// Why.
        detail: String,
    },
    /// The relay answered with an error.
    #[error("relay refused the request ({status}): {detail}")]
    Relay {
        /// HTTP status.
        status: u16,
        /// The relay's error code (`docs/PROTOCOL.md`), when its body carried one.
        code: Option<String>,
        /// The relay's explanation.
        detail: String,
    },
    /// The relay broke the protocol.
    #[error("protocol violation by the relay: {detail}")]
    BadRelayResponse {
        /// What was wrong.
        detail: String,
    },
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// The operation needs a live connection (`connect` first).
    #[error("not connected to the relay")]
    NotConnected,
    /// Another call is in progress.
    #[error("another call is in progress")]
    CallInProgress,
    /// No call with this id is in progress.
    #[error("no call {call_id} in progress")]
    NoSuchCall {
        /// The call id given.
        call_id: String,
    },
    /// Relay-only calls are configured but the relay offers no TURN server.
    #[error("relay-only calls need a TURN server, and the relay has none configured")]
    TurnUnavailable,
    /// The call's media setup failed.
    #[error("call failed: {detail}")]
    Call {
        /// Why.
        detail: String,
    },
    /// Invalid input from the app.
    #[error("invalid argument: {detail}")]
    InvalidArgument {
        /// What was wrong.
        detail: String,
    },
    /// A failure inside the bindings (the runtime could not start, a task died). A bug.
    #[error("internal error: {detail}")]
    Internal {
        /// What happened.
        detail: String,
    },
}

impl From<CoreError> for PrivcommError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::WrongKey => Self::WrongKey,
            CoreError::MissingKey => Self::MissingKey,
            CoreError::SecretLost(detail) => Self::SecretLost { detail },
            CoreError::SecretStoreUnavailable(detail) => Self::SecretStoreUnavailable { detail },
            CoreError::SecretStore(detail) => Self::SecretStore { detail },
            CoreError::Tampered { table } => Self::Tampered {
                table: table.to_owned(),
            },
            CoreError::UnsupportedFormat { table, version } => Self::UnsupportedFormat {
                table: table.to_owned(),
                version,
            },
            CoreError::NoSession { peer } => Self::NoSession {
                peer: peer.to_string(),
            },
            CoreError::IdentityChanged { peer } => Self::IdentityChanged {
                peer: peer.to_string(),
            },
            CoreError::DuplicateMessage => Self::DuplicateMessage,
            CoreError::InvalidMessage(detail) => Self::InvalidMessage { detail },
            CoreError::InvalidBundle(detail) => Self::InvalidBundle { detail },
            CoreError::UnknownPeer { peer } => Self::UnknownPeer {
                peer: peer.to_string(),
            },
            CoreError::NoAccount => Self::NoAccount,
            CoreError::AccountExists => Self::AccountExists,
            CoreError::Protocol(detail) => Self::Protocol { detail },
            CoreError::Database(e) => Self::Database {
                detail: e.to_string(),
            },
            CoreError::SchemaTooNew { found, supported } => Self::SchemaTooNew { found, supported },
            CoreError::Network(detail) => Self::Network { detail },
            CoreError::Relay {
                status,
                code,
                message,
            } => Self::Relay {
                status,
                code: code.map(|c| c.as_str().to_owned()),
                detail: message,
            },
            CoreError::BadRelayResponse(detail) => Self::BadRelayResponse { detail },
            CoreError::Closed => Self::Closed,
            CoreError::NotConnected => Self::NotConnected,
            CoreError::CallInProgress => Self::CallInProgress,
            CoreError::NoSuchCall { call_id } => Self::NoSuchCall {
                call_id: call_id.to_string(),
            },
            CoreError::TurnUnavailable => Self::TurnUnavailable,
            CoreError::Call(detail) => Self::Call { detail },
            CoreError::InvalidArgument(detail) => Self::InvalidArgument { detail },
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
