//! Reconnect delays: 1, 2, 4, 8, 16, then 30 s, each with up to ±20 % jitter so that
//! clients dropped together do not return together.

use std::time::Duration;

use rand::Rng;

/// Base delays in seconds, the last repeating.
const STEPS: [u64; 6] = [1, 2, 4, 8, 16, 30];
/// Jitter as a fraction of the delay.
pub const JITTER: f64 = 0.2;

/// The delay before reconnect attempt `attempt` (1-based), without jitter.
pub fn base_delay(attempt: u32) -> Duration {
    let index = (attempt.max(1) as usize - 1).min(STEPS.len() - 1);
    Duration::from_secs(STEPS[index])
}

/// The delay before reconnect attempt `attempt`, with jitter.
pub fn delay(attempt: u32) -> Duration {
    let factor = rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER));
    base_delay(attempt).mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_doubles_to_thirty_seconds_within_jitter() {
        let expected = [1, 2, 4, 8, 16, 30, 30, 30];
        for (i, secs) in expected.iter().enumerate() {
            let attempt = i as u32 + 1;
            assert_eq!(base_delay(attempt), Duration::from_secs(*secs));
            for _ in 0..50 {
                let d = delay(attempt).as_secs_f64();
                assert!(d >= *secs as f64 * 0.8 - 1e-9 && d <= *secs as f64 * 1.2 + 1e-9);
            }
        }
    }
}
