//! Rate limits: per client network (an IPv4 address or an IPv6 /64, seen through trusted
//! proxies) on the unauthenticated endpoints, per phone hash on login, per account on every
//! authenticated endpoint, on sends and on prekey lookups. Every limiter holds a bounded
//! number of keys, so no client can make the relay remember unboundedly many.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use privcomm_protocol::ErrorCode;
use uuid::Uuid;

use crate::config::Config;
use crate::error::ApiError;

/// Most keys one limiter remembers. Past it, keys whose buckets are full again are
/// forgotten; if none are, new keys are refused until some are (fail closed).
const MAX_KEYS: usize = 100_000;

/// The rate limit a route counts against before its body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `POST /auth/challenge`.
    Challenge,
    /// `POST /auth/token`.
    Token,
    /// `POST /api/v1/register`.
    Register,
    /// `POST /api/v1/verification`.
    Verification,
}

/// A keyed limiter with a bound on its keys.
#[derive(Debug)]
struct Keyed<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(quota: Quota) -> Self {
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
        }
    }

    /// Counts `n` units for `key`; `Err` is how long to wait.
    fn check_n(&self, key: &K, n: u32) -> Result<(), Duration> {
        if self.limiter.len() >= MAX_KEYS {
            self.limiter.retain_recent();
            if self.limiter.len() >= MAX_KEYS {
                return Err(Duration::from_secs(60));
            }
        }
        match self.limiter.check_key_n(key, non_zero(n)) {
            Ok(Ok(())) => Ok(()),
            // The limiter's own clock: `DefaultClock::default()` calibrates a new quanta
            // clock (cpuid and a timing loop) each time, which was 44% of the relay's CPU
            // at full send rate.
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.limiter.clock().now())),
            // More than the whole bucket: never allowed; say "a minute".
            Err(_) => Err(Duration::from_secs(60)),
        }
    }

    fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_n(key, 1)
    }

    fn shrink(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// Every rate limit of the relay.
#[derive(Debug)]
pub struct RateLimits {
    register: Keyed<IpAddr>,
    verification: Keyed<IpAddr>,
    verification_everywhere: Keyed<u8>,
    token: Keyed<IpAddr>,
    challenge: Keyed<IpAddr>,
    token_per_phone: Keyed<String>,
    challenge_per_phone: Keyed<String>,
    account: Keyed<Uuid>,
    key_lookups: Keyed<Uuid>,
    prekeys_per_target: Keyed<String>,
    send_messages: Keyed<Uuid>,
    send_kib: Keyed<Uuid>,
    turn: Keyed<Uuid>,
}

fn non_zero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(non_zero(n))
}

fn per_hour(n: u32) -> Quota {
    Quota::per_hour(non_zero(n))
}

/// The 429 for a limit, with the wait in `Retry-After`.
pub fn rate_limited(wait: Duration, message: &str) -> ApiError {
    let mut err = ApiError::new(ErrorCode::RateLimited, message);
    err.retry_after = Some(wait.as_secs().max(1));
    err
}

impl RateLimits {
    /// The limits `config` sets.
    pub fn new(config: &Config) -> Self {
        // One message of the largest size must always fit in the byte bucket.
        let min_kib = u32::try_from(privcomm_protocol::limits::MAX_PAYLOAD_BYTES.div_ceil(1024))
            .unwrap_or(u32::MAX);
        Self {
            register: Keyed::new(per_hour(config.register_per_hour)),
            verification: Keyed::new(per_hour(config.verification_per_hour)),
            verification_everywhere: Keyed::new(per_hour(config.verification_global_per_hour)),
            token: Keyed::new(per_minute(config.token_per_minute)),
            challenge: Keyed::new(per_minute(config.challenge_per_minute)),
            token_per_phone: Keyed::new(per_minute(config.phone_hash_per_minute)),
            challenge_per_phone: Keyed::new(per_minute(config.phone_hash_per_minute)),
            account: Keyed::new(per_minute(config.account_per_minute)),
            key_lookups: Keyed::new(per_hour(config.key_lookups_per_hour)),
            prekeys_per_target: Keyed::new(per_hour(config.prekeys_per_target_per_hour)),
            send_messages: Keyed::new(per_minute(config.send_per_minute)),
            send_kib: Keyed::new(per_minute(config.send_kib_per_minute.max(min_kib))),
            turn: Keyed::new(per_hour(config.turn_per_hour)),
        }
    }

    /// Counts a request to a `limit`ed route from the client network `client`.
    pub fn check_client(&self, limit: Limit, client: IpAddr) -> Result<(), ApiError> {
        let limiter = match limit {
            Limit::Challenge => &self.challenge,
            Limit::Token => &self.token,
            Limit::Register => &self.register,
            Limit::Verification => &self.verification,
        };
        limiter
            .check(&client)
            .map_err(|wait| rate_limited(wait, "too many requests; slow down"))
    }

    /// Counts a verification code against the relay's budget of codes an hour over all
    /// numbers (what an operator pays for, and what toll fraud would spend); the per-number
    /// limits are counted in storage (`routes::verification`).
    pub fn check_verification_budget(&self) -> Result<(), ApiError> {
        self.verification_everywhere
            .check(&0)
            .map_err(|wait| rate_limited(wait, "the relay is sending too many codes; retry later"))
    }

    /// Counts a challenge for `phone_hash`, whoever asks.
    pub fn check_challenge_for(&self, phone_hash: &str) -> Result<(), ApiError> {
        self.challenge_per_phone
            .check(&phone_hash.to_owned())
            .map_err(|wait| rate_limited(wait, "too many challenges for this phone_hash"))
    }

    /// Counts a token request for `phone_hash`, whoever asks.
    pub fn check_token_for(&self, phone_hash: &str) -> Result<(), ApiError> {
        self.token_per_phone
            .check(&phone_hash.to_owned())
            .map_err(|wait| rate_limited(wait, "too many token requests for this phone_hash"))
    }

    /// Counts an authenticated request of `user`.
    pub fn check_account(&self, user: Uuid) -> Result<(), ApiError> {
        self.account
            .check(&user)
            .map_err(|wait| rate_limited(wait, "too many requests from this account"))
    }

    /// Counts a prekey bundle lookup by `user`.
    pub fn check_key_lookup(&self, user: Uuid) -> Result<(), ApiError> {
        self.key_lookups
            .check(&user)
            .map_err(|wait| rate_limited(wait, "too many key lookups from this account"))
    }

    /// True if one more one-time prekey of `phone_hash` may be handed out now.
    pub fn take_prekey_of(&self, phone_hash: &str) -> bool {
        self.prekeys_per_target
            .check(&phone_hash.to_owned())
            .is_ok()
    }

    /// Counts a TURN credential issued to `user`.
    pub fn check_turn(&self, user: Uuid) -> Result<(), ApiError> {
        self.turn
            .check(&user)
            .map_err(|wait| rate_limited(wait, "too many TURN credentials for this account"))
    }

    /// Counts a message of `bytes` from `sender`; `Err` says how long to wait first.
    pub fn check_send(&self, sender: Uuid, bytes: usize) -> Result<(), Duration> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        self.send_messages.check(&sender)?;
        self.send_kib.check_n(&sender, kib)
    }

    /// Keys remembered over all limiters (tests and metrics).
    pub fn keys(&self) -> usize {
        self.register.len()
            + self.verification.len()
            + self.verification_everywhere.len()
            + self.token.len()
            + self.challenge.len()
            + self.token_per_phone.len()
            + self.challenge_per_phone.len()
            + self.account.len()
            + self.key_lookups.len()
            + self.prekeys_per_target.len()
            + self.send_messages.len()
            + self.send_kib.len()
            + self.turn.len()
    }

    /// Forgets keys whose buckets are full again, bounding memory.
    pub fn shrink(&self) {
        self.register.shrink();
        self.verification.shrink();
        self.verification_everywhere.shrink();
        self.token.shrink();
        self.challenge.shrink();
        self.token_per_phone.shrink();
        self.challenge_per_phone.shrink();
        self.account.shrink();
        self.key_lookups.shrink();
        self.prekeys_per_target.shrink();
        self.send_messages.shrink();
        self.send_kib.shrink();
        self.turn.shrink();
    }
}
