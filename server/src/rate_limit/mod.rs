//! Rate limits: per client network (an IPv4 address or an IPv6 /64, seen through trusted
//! proxies) on the unauthenticated endpoints, per phone hash on login, per account on every
//! authenticated endpoint, on sends and on prekey lookups. Every limiter holds a bounded
//! number of keys, so no client can make the relay remember unboundedly many.
//!
//! With Redis configured (a cluster of instances) every limit but the send rate is counted
//! in Redis (`shared`), so it holds across instances; the send rate stays per instance: it
//! is checked for every message, and a user's one live connection is on one instance.

pub mod shared;

use std::fmt::Display;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use privcomm_protocol::ErrorCode;
use uuid::Uuid;

use crate::config::Config;
use crate::error::ApiError;
use shared::{Rule, SharedLimits};

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
    /// The limit's name in Redis.
    name: &'static str,
    rule: Rule,
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(name: &'static str, (quota, rule): (Quota, Rule)) -> Self {
        Self {
            name,
            rule,
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
    /// Buckets in Redis, when instances share them.
    shared: Option<SharedLimits>,
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

fn per_minute(n: u32) -> (Quota, Rule) {
    per(Duration::from_secs(60), n)
}

fn per_hour(n: u32) -> (Quota, Rule) {
    per(Duration::from_secs(3600), n)
}

/// `n` per `period`, as a local quota and as the same rule for Redis.
fn per(period: Duration, n: u32) -> (Quota, Rule) {
    let n = non_zero(n);
    let quota = Quota::with_period(period / n.get())
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(n);
    let rule = Rule {
        interval: period / n.get(),
        burst: n.get(),
    };
    (quota, rule)
}

/// The 429 for a limit, with the wait in `Retry-After`.
pub fn rate_limited(wait: Duration, message: &str) -> ApiError {
    let mut err = ApiError::new(ErrorCode::RateLimited, message);
    err.retry_after = Some(wait.as_secs().max(1));
    err
}

impl RateLimits {
    /// The limits `config` sets, counted per instance.
    pub fn new(config: &Config) -> Self {
        Self::with_shared(config, None)
    }

    /// The limits `config` sets, counted in Redis when `shared` is given.
    pub fn with_shared(config: &Config, shared: Option<Arc<crate::bus::redis::RedisBus>>) -> Self {
        // One message of the largest size must always fit in the byte bucket.
        let min_kib = u32::try_from(privcomm_protocol::limits::MAX_PAYLOAD_BYTES.div_ceil(1024))
            .unwrap_or(u32::MAX);
        Self {
            shared: shared.map(SharedLimits::new),
            register: Keyed::new("register", per_hour(config.register_per_hour)),
            verification: Keyed::new("verification", per_hour(config.verification_per_hour)),
            verification_everywhere: Keyed::new(
                "verification_all",
                per_hour(config.verification_global_per_hour),
            ),
            token: Keyed::new("token", per_minute(config.token_per_minute)),
            challenge: Keyed::new("challenge", per_minute(config.challenge_per_minute)),
            token_per_phone: Keyed::new("token_phone", per_minute(config.phone_hash_per_minute)),
            challenge_per_phone: Keyed::new(
                "challenge_phone",
                per_minute(config.phone_hash_per_minute),
            ),
            account: Keyed::new("account", per_minute(config.account_per_minute)),
            key_lookups: Keyed::new("key_lookups", per_hour(config.key_lookups_per_hour)),
            prekeys_per_target: Keyed::new(
                "prekeys_target",
                per_hour(config.prekeys_per_target_per_hour),
            ),
            send_messages: Keyed::new("send", per_minute(config.send_per_minute)),
            send_kib: Keyed::new(
                "send_kib",
                per_minute(config.send_kib_per_minute.max(min_kib)),
            ),
            turn: Keyed::new("turn", per_hour(config.turn_per_hour)),
        }
    }

    /// Counts one unit of `key` under `keyed`: in Redis when shared (falling back to this
    /// instance's limiter when Redis does not answer), else here.
    async fn count<K: Hash + Eq + Clone + Display>(
        &self,
        keyed: &Keyed<K>,
        key: &K,
    ) -> Result<(), Duration> {
        if let Some(shared) = &self.shared {
            let key_text = key.to_string();
            if let Some(result) = shared.check(keyed.name, &key_text, keyed.rule, 1).await {
                return result;
            }
        }
        keyed.check(key)
    }

    /// Counts a request to a `limit`ed route from the client network `client`.
    pub async fn check_client(&self, limit: Limit, client: IpAddr) -> Result<(), ApiError> {
        let limiter = match limit {
            Limit::Challenge => &self.challenge,
            Limit::Token => &self.token,
            Limit::Register => &self.register,
            Limit::Verification => &self.verification,
        };
        self.count(limiter, &client)
            .await
            .map_err(|wait| rate_limited(wait, "too many requests; slow down"))
    }

    /// Counts a verification code against the relay's budget of codes an hour over all
    /// numbers (what an operator pays for, and what toll fraud would spend); the per-number
    /// limits are counted in storage (`routes::verification`).
    pub async fn check_verification_budget(&self) -> Result<(), ApiError> {
        self.count(&self.verification_everywhere, &0)
            .await
            .map_err(|wait| rate_limited(wait, "the relay is sending too many codes; retry later"))
    }

    /// Counts a challenge for `phone_hash`, whoever asks.
    pub async fn check_challenge_for(&self, phone_hash: &str) -> Result<(), ApiError> {
        self.count(&self.challenge_per_phone, &phone_hash.to_owned())
            .await
            .map_err(|wait| rate_limited(wait, "too many challenges for this phone_hash"))
    }

    /// Counts a token request for `phone_hash`, whoever asks.
    pub async fn check_token_for(&self, phone_hash: &str) -> Result<(), ApiError> {
        self.count(&self.token_per_phone, &phone_hash.to_owned())
            .await
            .map_err(|wait| rate_limited(wait, "too many token requests for this phone_hash"))
    }

    /// Counts an authenticated request of `user`.
    pub async fn check_account(&self, user: Uuid) -> Result<(), ApiError> {
        self.count(&self.account, &user)
            .await
            .map_err(|wait| rate_limited(wait, "too many requests from this account"))
    }

    /// Counts a prekey bundle lookup by `user`.
    pub async fn check_key_lookup(&self, user: Uuid) -> Result<(), ApiError> {
        self.count(&self.key_lookups, &user)
            .await
            .map_err(|wait| rate_limited(wait, "too many key lookups from this account"))
    }

    /// True if one more one-time prekey of `phone_hash` may be handed out now.
    pub async fn take_prekey_of(&self, phone_hash: &str) -> bool {
        self.count(&self.prekeys_per_target, &phone_hash.to_owned())
            .await
            .is_ok()
    }

    /// Counts a TURN credential issued to `user`.
    pub async fn check_turn(&self, user: Uuid) -> Result<(), ApiError> {
        self.count(&self.turn, &user)
            .await
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
