//! The crate's one error type.

use uuid::Uuid;

/// Everything that can go wrong in the core. Each failure the app may react to has its own
/// variant; none of them carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The secret store's key does not open this database (wrong device, restored backup,
    /// replaced keystore key).
    #[error("the data key cannot be unwrapped: wrong key for this database")]
    WrongKey,
    /// The secret store has no key for an existing database.
    #[error("no key for this database in the secret store")]
    MissingKey,
    /// A stored value failed authentication: corrupted or tampered with, or moved to
    /// another row.
    #[error("stored data in `{table}` failed authentication (corrupt or tampered)")]
    Tampered {
        /// Table of the bad row.
        table: &'static str,
    },
    /// A stored value has an unknown format version.
    #[error("stored data in `{table}` has unsupported format version {version}")]
    UnsupportedFormat {
        /// Table of the bad row.
        table: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// No Signal session with this peer yet.
    #[error("no session with peer {peer}")]
    NoSession {
        /// The peer.
        peer: Uuid,
    },
    /// The peer's identity key differs from the one trusted before; the app must accept the
    /// new key (after the user compared safety numbers) before messages flow again.
    #[error("the identity key of peer {peer} changed")]
    IdentityChanged {
        /// The peer.
        peer: Uuid,
    },
    /// A message was already decrypted (a replay or duplicate delivery).
    #[error("duplicate message")]
    DuplicateMessage,
    /// A message could not be decrypted or parsed.
    #[error("undecryptable message: {0}")]
    InvalidMessage(String),
    /// A prekey bundle is malformed or its signatures do not verify.
    #[error("invalid prekey bundle: {0}")]
    InvalidBundle(String),
    /// No session with this peer and no way to start one (their phone number is unknown:
    /// call `resolve_peer`).
    #[error("unknown peer {peer}")]
    UnknownPeer {
        /// The peer.
        peer: Uuid,
    },
    /// The peer is blocked (`unblock_peer` first).
    #[error("peer {peer} is blocked")]
    PeerBlocked {
        /// The peer.
        peer: Uuid,
    },
    /// The account has not been created in this store.
    #[error("no account in this store")]
    NoAccount,
    /// An account already exists in this store.
    #[error("an account already exists in this store")]
    AccountExists,
    /// Any other libsignal failure.
    #[error("signal protocol error: {0}")]
    Protocol(String),
    /// The secret store failed.
    #[error("secret store error: {0}")]
    SecretStore(String),
    /// The secret that opens this database is permanently gone (see
    /// `SecretStoreError::Lost`). The local data cannot be recovered: delete it with
    /// `client::delete_local_data` and start again.
    #[error("the key protecting this database is lost: {0}")]
    SecretLost(String),
    /// The secret store is temporarily unusable; nothing is lost, try again later.
    #[error("the secret store is unavailable: {0}")]
    SecretStoreUnavailable(String),
    /// SQLite failed.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// The database was written by a newer version of the core.
    #[error("database schema version {found} is newer than supported {supported}")]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The verification code is wrong (or none was sent to this number): check it, or
    /// request a new one.
    #[error("the verification code is wrong")]
    InvalidCode,
    /// The verification code expired or was entered wrong too often: request a new one.
    #[error("the verification code expired; request a new one")]
    CodeExpired,
    /// The number's account has a registration lock: registering it on this device needs
    /// its PIN, or waiting until the lock lapses (after 7 days without use).
    #[error("the number has a registration lock; enter its PIN or retry in {retry_after_secs} s")]
    RegistrationLocked {
        /// Seconds until the lock lapses.
        retry_after_secs: u64,
    },
    /// The relay refuses more of these requests for now (codes for this number, wrong
    /// PINs): retry after the time given.
    #[error("too many attempts; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// The relay could not be reached or the connection failed.
    #[error("network error: {0}")]
    Network(String),
    /// The relay answered with an error.
    #[error("relay refused the request ({status}): {message}")]
    Relay {
        /// HTTP status.
        status: u16,
        /// The relay's error code, when its body carried one.
        code: Option<privcomm_protocol::ErrorCode>,
        /// The relay's explanation (or a summary of an unexpected body).
        message: String,
        /// Seconds until a retry can succeed, when the relay said.
        retry_after: Option<u64>,
    },
    /// The relay sent something that breaks the protocol.
    #[error("protocol violation by the relay: {0}")]
    BadRelayResponse(String),
    /// The protocol actor has stopped (the store was closed).
    #[error("the store is closed")]
    Closed,
    /// The operation needs a live connection to the relay (`connect` first).
    #[error("not connected to the relay")]
    NotConnected,
    /// Another call is in progress.
    #[error("another call is in progress")]
    CallInProgress,
    /// No call with this id is in progress (it ended, or never existed).
    #[error("no call {call_id} in progress")]
    NoSuchCall {
        /// The call id given.
        call_id: Uuid,
    },
    /// The relay-only policy is set but the relay offers no TURN server.
    #[error("relay-only calls need a TURN server, and the relay has none configured")]
    TurnUnavailable,
    /// The call's media setup failed (WebRTC or codec).
    #[error("call failed: {0}")]
    Call(String),
    /// Invalid input from the caller.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl From<crate::secret_store::SecretStoreError> for CoreError {
    fn from(e: crate::secret_store::SecretStoreError) -> Self {
        use crate::secret_store::SecretStoreError as E;
        match e {
            E::Lost(m) => Self::SecretLost(m),
            E::Unavailable(m) => Self::SecretStoreUnavailable(m),
            E::Failed(m) => Self::SecretStore(m),
        }
    }
}

/// What kind of failure an error is, and so what the app should do about it. Decided here,
/// once, for every binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    /// Temporary (the network, an overloaded relay, a locked keystore): retry later;
    /// nothing was lost.
    Transient,
    /// Needs a live connection: `connect` first.
    NotConnected,
    /// The app passed something invalid: fix the call.
    InvalidInput,
    /// About the peer: resolve them first (`resolve_peer`), unblock them, or accept their
    /// new identity after the user compared safety numbers.
    Peer,
    /// About the account: `register` first, or this store belongs to another number.
    Account,
    /// The local data cannot be opened (its key is lost or wrong, or it was tampered with):
    /// `delete_local_data`, then register again.
    LocalDataLost,
    /// The database was written by a newer version: update the app.
    UpdateRequired,
    /// The client was closed: open a new one.
    Closed,
    /// A call could not be placed or changed.
    Call,
    /// Refused for good, a protocol violation or a bug: retrying the same will not help.
    Failed,
}

impl CoreError {
    /// The error's category.
    pub fn category(&self) -> ErrorCategory {
        use ErrorCategory as C;
        match self {
            Self::Network(_) | Self::SecretStoreUnavailable(_) | Self::RateLimited { .. } => {
                C::Transient
            }
            Self::InvalidCode | Self::CodeExpired => C::InvalidInput,
            Self::RegistrationLocked { .. } => C::Account,
            Self::Relay { status, .. } if *status == 429 || *status >= 500 => C::Transient,
            Self::NotConnected => C::NotConnected,
            Self::InvalidArgument(_) => C::InvalidInput,
            Self::NoSession { .. }
            | Self::UnknownPeer { .. }
            | Self::PeerBlocked { .. }
            | Self::IdentityChanged { .. } => C::Peer,
            Self::NoAccount | Self::AccountExists => C::Account,
            Self::WrongKey
            | Self::MissingKey
            | Self::SecretLost(_)
            | Self::Tampered { .. }
            | Self::UnsupportedFormat { .. } => C::LocalDataLost,
            Self::SchemaTooNew { .. } => C::UpdateRequired,
            Self::Closed => C::Closed,
            Self::CallInProgress
            | Self::NoSuchCall { .. }
            | Self::TurnUnavailable
            | Self::Call(_) => C::Call,
            Self::DuplicateMessage
            | Self::InvalidMessage(_)
            | Self::InvalidBundle(_)
            | Self::Protocol(_)
            | Self::SecretStore(_)
            | Self::Database(_)
            | Self::Relay { .. }
            | Self::BadRelayResponse(_) => C::Failed,
        }
    }

    /// True when the same call may succeed later without the app changing anything.
    pub fn is_retryable(&self) -> bool {
        self.category() == ErrorCategory::Transient
    }
}

/// Result alias of the crate.
pub type CoreResult<T> = Result<T, CoreError>;

/// Longest text from the relay or a peer an error may carry, in bytes. Errors reach logs
/// and apps, so nothing an outsider writes may make them long.
pub const MAX_UNTRUSTED_TEXT_BYTES: usize = 200;

/// A JSON parse failure described by its kind and position only: serde's own message
/// quotes the input, which may be a peer's decrypted text or a relay-chosen string.
pub(crate) fn describe_json_error(error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "unreadable input",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected fields or values",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{kind} at line {}, column {}", error.line(), error.column())
}

/// `text` cut to `MAX_UNTRUSTED_TEXT_BYTES` (on a character boundary, an ellipsis marking
/// the cut), with control characters replaced, so a relay's explanation can be shown and
/// logged safely. Applying it twice changes nothing.
pub(crate) fn bounded_text(text: &str) -> String {
    let clean = |c: char| if c.is_control() { ' ' } else { c };
    if text.len() <= MAX_UNTRUSTED_TEXT_BYTES {
        return text.chars().map(clean).collect();
    }
    const CUT: char = '…';
    let mut out = String::with_capacity(MAX_UNTRUSTED_TEXT_BYTES);
    for c in text.chars().map(clean) {
        if out.len() + c.len_utf8() > MAX_UNTRUSTED_TEXT_BYTES - CUT.len_utf8() {
            break;
        }
        out.push(c);
    }
    out.push(CUT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_bounded_and_stable() {
        assert_eq!(bounded_text("slow down"), "slow down");
        assert_eq!(bounded_text("a\nb\u{1b}[31m"), "a b [31m");
        let long = "é".repeat(10_000);
        let cut = bounded_text(&long);
        assert!(cut.len() <= MAX_UNTRUSTED_TEXT_BYTES && cut.ends_with('…'));
        assert_eq!(bounded_text(&cut), cut);
        let exact = "x".repeat(MAX_UNTRUSTED_TEXT_BYTES);
        assert_eq!(bounded_text(&exact), exact);
    }

    #[test]
    fn json_errors_do_not_quote_the_input() {
        let err = serde_json::from_str::<u32>("\"my secret text\"").unwrap_err();
        assert!(
            err.to_string().contains("my secret text"),
            "serde quotes it"
        );
        let described = describe_json_error(&err);
        assert!(!described.contains("secret"), "{described}");
        assert_eq!(
            described,
            "unexpected fields or values at line 1, column 16"
        );
    }
}
