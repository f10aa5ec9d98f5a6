//! How calls are set up: local addresses, STUN, the relay-only policy and the timers.

use std::sync::Arc;
use std::time::Duration;

use super::clock::{CallClock, TokioClock};
use crate::error::{CoreError, CoreResult};

/// How long an unanswered call rings.
pub const RING_TIMEOUT: Duration = Duration::from_secs(60);

/// Call settings of a `Client`.
#[derive(Clone)]
pub struct CallConfig {
    /// Local UDP addresses to gather host candidates on. The default (`0.0.0.0:0`) means one
    /// ephemeral port on every non-loopback interface; tests pass `127.0.0.1:0`.
    pub bind_addrs: Vec<String>,
    /// STUN servers used in addition to what the relay hands out (`stun:host:port`).
    pub stun_urls: Vec<String>,
    /// Use only TURN relay candidates, so the peer never learns this device's addresses.
    /// Calls fail with `TurnUnavailable` when the relay offers no TURN server.
    pub relay_only: bool,
    /// How long a call rings before it ends as unanswered.
    pub ring_timeout: Duration,
    /// Time without traffic before the link counts as disconnected.
    pub ice_disconnected_timeout: Duration,
    /// Further time disconnected before the call ends as lost.
    pub ice_failed_timeout: Duration,
    /// Pause between ICE connectivity checks. webrtc-rs defaults to 200 ms, which alone
    /// adds hundreds of milliseconds to call setup; 50 ms stays well inside RFC 8445's pacing
    /// for a single audio stream.
    pub ice_check_interval: Duration,
    /// The ring timer's clock.
    pub clock: Arc<dyn CallClock>,
}

impl Default for CallConfig {
    fn default() -> Self {
        Self {
            bind_addrs: vec!["0.0.0.0:0".into()],
            stun_urls: Vec::new(),
            relay_only: false,
            ring_timeout: RING_TIMEOUT,
            ice_disconnected_timeout: Duration::from_secs(5),
            ice_failed_timeout: Duration::from_secs(10),
            ice_check_interval: Duration::from_millis(50),
            clock: Arc::new(TokioClock),
        }
    }
}

/// Longest any call timer may be set to (one hour).
pub const MAX_CALL_TIMER: Duration = Duration::from_secs(3600);

impl CallConfig {
    /// Checks every setting: at least one bind address, each `ip:port`; STUN URLs that start
    /// with `stun:`; every timer from 1 ms to `MAX_CALL_TIMER`. `Client::open_with` calls it.
    pub fn validate(&self) -> CoreResult<()> {
        let invalid = |detail: String| Err(CoreError::InvalidArgument(detail));
        if self.bind_addrs.is_empty() {
            return invalid("call bind_addrs must not be empty".into());
        }
        if self
            .bind_addrs
            .iter()
            .any(|a| a.parse::<std::net::SocketAddr>().is_err())
        {
            return invalid("call bind_addrs: each must be ip:port".into());
        }
        if self.stun_urls.iter().any(|u| !u.starts_with("stun:")) {
            return invalid("call stun_urls: each must start with stun:".into());
        }
        for (name, timer) in [
            ("ring_timeout", self.ring_timeout),
            ("ice_disconnected_timeout", self.ice_disconnected_timeout),
            ("ice_failed_timeout", self.ice_failed_timeout),
            ("ice_check_interval", self.ice_check_interval),
        ] {
            if timer.is_zero() || timer > MAX_CALL_TIMER {
                return invalid(format!(
                    "call {name} must be 1 ms to {} ms",
                    MAX_CALL_TIMER.as_millis()
                ));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for CallConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallConfig")
            .field("bind_addrs", &self.bind_addrs)
            .field("stun_urls", &self.stun_urls)
            .field("relay_only", &self.relay_only)
            .field("ring_timeout", &self.ring_timeout)
            .finish_non_exhaustive()
    }
}
