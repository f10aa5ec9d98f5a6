//! Rate limits shared by every instance of a cluster: one GCRA bucket per (limit, key) in
//! Redis, checked and updated atomically by a script, with the TTL of a full bucket (so
//! Redis forgets a key once it no longer limits anything). When Redis does not answer the
//! caller falls back to its own per-instance limiter: at worst a limit is counted per
//! instance for a while. (An evicting Redis `maxmemory` policy would drop buckets early:
//! docs/DEPLOY.md asks for `noeviction`.)

use std::sync::Arc;
use std::time::Duration;

use crate::bus::redis::RedisBus;

/// Checks and counts `ARGV[3]` units against the bucket `KEYS[1]`, which refills one unit
/// every `ARGV[1]` ms up to `ARGV[2]` units. Returns 0 (allowed), the wait in ms, or -1
/// (more than the whole bucket: never). Time is Redis's own, the same for every instance.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
if n > burst then return -1 end
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * n
local allow_at = new_tat - interval * burst
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', new_tat - now))
return 0
";

/// The longest a shared check may take before the local limiter decides instead.
const CHECK_TIMEOUT: Duration = Duration::from_millis(250);

/// A rule: `burst` units, one more every `interval`.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// Time to refill one unit.
    pub interval: Duration,
    /// Units the bucket holds.
    pub burst: u32,
}

/// Rate limit buckets in Redis.
pub struct SharedLimits {
    bus: Arc<RedisBus>,
    script: redis::Script,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLimits")
    }
}

impl SharedLimits {
    /// Buckets kept over the bus's Redis connection.
    pub fn new(bus: Arc<RedisBus>) -> Self {
        Self {
            bus,
            script: redis::Script::new(GCRA_SCRIPT),
        }
    }

    /// Counts `n` units of `key` under `limit`: `Some(Ok)` allowed, `Some(Err(wait))`
    /// refused, `None` when Redis did not answer (the caller decides locally).
    pub async fn check(
        &self,
        limit: &'static str,
        key: &str,
        rule: Rule,
        n: u32,
    ) -> Option<Result<(), Duration>> {
        let mut connection = self.bus.commands()?;
        let interval_ms = u64::try_from(rule.interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = self.script.key(format!("privcomm:rl:{limit}:{key}"));
        invocation.arg(interval_ms).arg(rule.burst).arg(n);
        let invocation = invocation.invoke_async::<i64>(&mut connection);
        match tokio::time::timeout(CHECK_TIMEOUT, invocation).await {
            Ok(Ok(0)) => Some(Ok(())),
            Ok(Ok(wait)) if wait > 0 => Some(Err(Duration::from_millis(
                u64::try_from(wait).unwrap_or(u64::MAX),
            ))),
            Ok(Ok(_)) => Some(Err(Duration::from_secs(60))),
            Ok(Err(e)) => {
                tracing::warn!(error = ?e.kind(), "shared rate limit unavailable; counting locally");
                None
            }
            Err(_) => None,
        }
    }
}
