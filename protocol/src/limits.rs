//! Every limit of the protocol, named once.

/// Largest decoded message payload the relay accepts (64 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest WebSocket text frame the relay reads: a base64 payload plus JSON framing.
pub const MAX_WS_FRAME_BYTES: usize = 96 * 1024;
/// Largest body of a challenge or token request (a phone hash, a nonce, a signature).
pub const MAX_AUTH_BODY_BYTES: usize = 1024;
/// Largest body of a registration or prekey upload (the maximum key count fits with room
/// for whitespace).
pub const MAX_KEYS_BODY_BYTES: usize = 64 * 1024;
/// Largest body of a REST message send: a base64 payload plus JSON framing.
pub const MAX_SEND_BODY_BYTES: usize = MAX_WS_FRAME_BYTES;

/// Length of an authentication nonce in bytes.
pub const NONCE_LEN: usize = 32;
/// Seconds an authentication nonce stays valid.
pub const NONCE_TTL_SECS: u64 = 60;
/// Seconds an access token stays valid (30 minutes).
pub const TOKEN_TTL_SECS: u64 = 30 * 60;

/// Digits of a verification code.
pub const VERIFICATION_CODE_DIGITS: usize = 6;
/// Seconds a verification code stays valid (10 minutes).
pub const VERIFICATION_CODE_TTL_SECS: u64 = 600;
/// Hex characters of a verification session id (16 random bytes).
pub const VERIFICATION_SESSION_LEN: usize = 32;
/// Wrong guesses a verification code survives; the next one voids it.
pub const VERIFICATION_CODE_ATTEMPTS: u32 = 3;
/// Longest `locale` of a verification request (a BCP 47 tag such as `pt-BR`).
pub const MAX_LOCALE_LEN: usize = 35;
/// Bytes of a registration lock token: the Argon2id output derived from the PIN.
pub const REGISTRATION_LOCK_TOKEN_LEN: usize = 32;
/// Days without a connection after which a registration lock lapses (counted from the end
/// of the day the account was last seen).
pub const REGISTRATION_LOCK_INACTIVE_DAYS: u64 = 7;
/// Wrong PINs an account's registration lock allows per `REGISTRATION_LOCK_WINDOW_SECS`.
pub const REGISTRATION_LOCK_ATTEMPTS: u32 = 5;
/// The window of wrong-PIN counting (a day).
pub const REGISTRATION_LOCK_WINDOW_SECS: u64 = 86_400;

/// Length of a phone hash: SHA-256 as lowercase hex.
pub const PHONE_HASH_LEN: usize = 64;
/// Serialized EC public key: type byte `0x05` followed by 32 bytes.
pub const EC_PUBLIC_KEY_LEN: usize = 33;
/// Type byte of a serialized Curve25519 public key.
pub const EC_KEY_TYPE_DJB: u8 = 0x05;
/// Serialized Kyber1024 public key: type byte `0x08` followed by 1568 bytes.
pub const KYBER1024_PUBLIC_KEY_LEN: usize = 1569;
/// Type byte of a serialized Kyber1024 public key.
pub const KEM_KEY_TYPE_KYBER1024: u8 = 0x08;
/// XEdDSA signature length.
pub const SIGNATURE_LEN: usize = 64;
/// Largest valid registration id (libsignal uses 14 bits).
pub const MAX_REGISTRATION_ID: u32 = 0x3FFF;
/// Largest prekey id (libsignal uses 24-bit ids).
pub const MAX_PREKEY_ID: u32 = 0x00FF_FFFF;

/// Most one-time prekeys one request may upload.
pub const MAX_ONE_TIME_PREKEYS_PER_UPLOAD: usize = 200;
/// Most unused one-time prekeys the relay keeps for one user.
pub const MAX_STORED_ONE_TIME_PREKEYS: u64 = 1000;

/// Days an undelivered message is kept before it is deleted.
pub const MESSAGE_RETENTION_DAYS: u64 = 30;
/// Days a claimed one-time prekey is kept before it is deleted.
pub const USED_PREKEY_RETENTION_DAYS: u64 = 7;
/// How many of a sender's latest stored messages the relay remembers by (sender, client
/// id), delivered or not: a resend of one of them answers its first server id instead of
/// being stored again (a pending message is recognised however old). A client must not let
/// this many of its messages be stored between a message's store and its resend; the core
/// keeps at most 64 in flight, so that takes more than a dozen dropped connections in a
/// row (and the recipient's device still drops a duplicate by its message id).
pub const RESEND_WINDOW: u32 = 1024;
/// Days the relay remembers a stored message's (sender, client id) at most, within
/// `RESEND_WINDOW`.
pub const SEND_RECORD_RETENTION_DAYS: u64 = 7;

/// Default cap on concurrent WebSocket connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Messages delivered but not yet acknowledged on one connection, at most.
pub const DELIVERY_WINDOW: usize = 256;
/// Messages read from storage per page while flushing a backlog.
pub const DELIVERY_PAGE: usize = 128;

/// WebSocket close code: another connection of the same user replaced this one.
pub const CLOSE_CONNECTED_ELSEWHERE: u16 = 4409;
/// WebSocket close code: the server is shutting down (standard "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code: the server is at its connection limit (standard "try again later").
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
