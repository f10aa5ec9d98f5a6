//! Test tones: a sine generator for the microphone side and a Goertzel detector for the
//! speaker side, so an app's "test call" (or a test) can check that audio crosses a call
//! without anyone listening.

use super::audio::{FRAME_SAMPLES, SAMPLE_RATE_HZ};

/// One 20 ms frame of a sine at `frequency_hz` (amplitude about a quarter of full scale),
/// starting at sample `offset` of the tone so consecutive frames join without a click.
pub fn tone_frame(frequency_hz: f64, offset: usize) -> Vec<i16> {
    (0..FRAME_SAMPLES)
        .map(|i| {
            let t = (offset + i) as f64 / f64::from(SAMPLE_RATE_HZ);
            (8000.0 * (2.0 * std::f64::consts::PI * frequency_hz * t).sin()) as i16
        })
        .collect()
}

/// Goertzel power of `frequency_hz` in `samples` (48 kHz).
pub fn tone_power(samples: &[i16], frequency_hz: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * frequency_hz / f64::from(SAMPLE_RATE_HZ)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

/// The loudest of `candidates` (Hz) in `samples`, and how many times more power it has
/// than the runner-up. `None` without candidates.
pub fn loudest_tone(samples: &[i16], candidates: &[f64]) -> Option<(f64, f64)> {
    let mut powers: Vec<(f64, f64)> = candidates
        .iter()
        .map(|f| (*f, tone_power(samples, *f)))
        .collect();
    powers.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (frequency, top) = *powers.first()?;
    let runner_up = powers.get(1).map_or(0.0, |p| p.1);
    Some((frequency, top / runner_up.max(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_tone_is_detected_as_itself() {
        let samples: Vec<i16> = (0..10)
            .flat_map(|i| tone_frame(440.0, i * FRAME_SAMPLES))
            .collect();
        let (frequency, ratio) = loudest_tone(&samples, &[300.0, 440.0, 880.0]).unwrap();
        assert_eq!(frequency, 440.0);
        assert!(ratio > 100.0, "{ratio}");
        assert_eq!(loudest_tone(&samples, &[]), None);
    }
}
