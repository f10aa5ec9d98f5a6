//! Which callers fetched whose bundle recently. A caller asking again for the same user
//! within the window gets the bundle without a one-time prekey, so one account cannot
//! drain another's one-time prekeys by asking repeatedly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How long a fetch counts as recent.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Most (caller, target) pairs remembered; when full and nothing has expired, every fetch
/// counts as a repeat (no one-time prekey) until something does.
const MAX_PAIRS: usize = 200_000;

/// Recent (caller, target phone hash) fetches.
#[derive(Debug, Default)]
pub struct RecentClaims {
    seen: Mutex<HashMap<(Uuid, String), Instant>>,
}

impl RecentClaims {
    /// Records a fetch of `target` by `caller` at `now`; true if it is the first within
    /// the window.
    pub fn first_within_window(&self, caller: Uuid, target: &str, now: Instant) -> bool {
        // A panic cannot leave the map inconsistent (single insert/retain calls).
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (caller, target.to_owned());
        if let Some(at) = seen.get(&key) {
            if now.saturating_duration_since(*at) < REPEAT_WINDOW {
                return false;
            }
        }
        if seen.len() >= MAX_PAIRS {
            seen.retain(|_, at| now.saturating_duration_since(*at) < REPEAT_WINDOW);
            if seen.len() >= MAX_PAIRS {
                return false;
            }
        }
        seen.insert(key, now);
        true
    }

    /// Forgets fetches older than the window.
    pub fn shrink(&self, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| now.saturating_duration_since(*at) < REPEAT_WINDOW);
        seen.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_not_first() {
        let claims = RecentClaims::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let t0 = Instant::now();
        assert!(claims.first_within_window(a, "x", t0));
        assert!(!claims.first_within_window(a, "x", t0 + Duration::from_secs(5)));
        assert!(claims.first_within_window(b, "x", t0));
        assert!(claims.first_within_window(a, "y", t0));
        assert!(claims.first_within_window(a, "x", t0 + REPEAT_WINDOW));
        claims.shrink(t0 + REPEAT_WINDOW * 3);
        assert!(claims.seen.lock().unwrap().is_empty());
    }
}
