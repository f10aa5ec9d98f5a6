//! Per-IP rate limits of the unauthenticated endpoints.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use privcomm_protocol::ErrorCode;

use crate::error::ApiError;

/// The rate limit a route counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `POST /auth/challenge`.
    Challenge,
    /// `POST /auth/token`.
    Token,
    /// `POST /api/v1/register`.
    Register,
}

/// One keyed limiter per endpoint family.
#[derive(Debug)]
pub struct RateLimits {
    register: DefaultKeyedRateLimiter<IpAddr>,
    token: DefaultKeyedRateLimiter<IpAddr>,
    challenge: DefaultKeyedRateLimiter<IpAddr>,
}

fn non_zero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl RateLimits {
    /// Limits from configured counts.
    pub fn new(register_per_hour: u32, token_per_minute: u32, challenge_per_minute: u32) -> Self {
        Self {
            register: DefaultKeyedRateLimiter::keyed(Quota::per_hour(non_zero(register_per_hour))),
            token: DefaultKeyedRateLimiter::keyed(Quota::per_minute(non_zero(token_per_minute))),
            challenge: DefaultKeyedRateLimiter::keyed(Quota::per_minute(non_zero(
                challenge_per_minute,
            ))),
        }
    }

    /// Counts a registration attempt.
    pub fn check_register(&self, ip: IpAddr) -> Result<(), ApiError> {
        check(&self.register, ip)
    }

    /// Counts a token request.
    pub fn check_token(&self, ip: IpAddr) -> Result<(), ApiError> {
        check(&self.token, ip)
    }

    /// Counts a challenge request.
    pub fn check_challenge(&self, ip: IpAddr) -> Result<(), ApiError> {
        check(&self.challenge, ip)
    }

    /// Forgets addresses whose buckets are full again, bounding memory.
    pub fn shrink(&self) {
        self.register.retain_recent();
        self.token.retain_recent();
        self.challenge.retain_recent();
    }
}

fn check(limiter: &DefaultKeyedRateLimiter<IpAddr>, ip: IpAddr) -> Result<(), ApiError> {
    limiter.check_key(&ip).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let mut err = ApiError::new(ErrorCode::RateLimited, "too many requests; slow down");
        err.retry_after = Some(wait.as_secs().max(1));
        err
    })
}
