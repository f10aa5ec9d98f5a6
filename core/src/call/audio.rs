//! Voice audio: the app's 20 ms frames of 48 kHz mono PCM in and out, Opus on the wire.

use std::sync::Arc;

use opusic_c::{Application, Channels, Decoder, Encoder, SampleRate};
use uuid::Uuid;

use crate::error::{CoreError, CoreResult};

/// Sample rate of the PCM the app pushes and receives.
pub const SAMPLE_RATE_HZ: u32 = 48_000;
/// Length of one frame.
pub const FRAME_MS: u32 = 20;
/// Samples in one frame (mono).
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE_HZ / 1000 * FRAME_MS) as usize;
/// Largest Opus packet we produce; RFC 6716 allows 1275 bytes per frame.
const MAX_PACKET_BYTES: usize = 1275;
/// Lost frames in a row that are concealed (Opus PLC); longer gaps are left silent.
const MAX_CONCEALED_FRAMES: u16 = 5;
/// Voice bitrate: Opus wideband/fullband speech is transparent well below this.
const BITRATE_BPS: u32 = 32_000;

/// One decoded frame of the peer's voice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioFrame {
    /// The call it belongs to.
    pub call_id: Uuid,
    /// `FRAME_SAMPLES` samples of 48 kHz mono PCM.
    pub samples: Arc<[i16]>,
}

/// Checks a frame pushed by the app.
pub fn validate_frame(samples: &[i16]) -> CoreResult<()> {
    if samples.len() != FRAME_SAMPLES {
        return Err(CoreError::InvalidArgument(format!(
            "an audio frame is {FRAME_SAMPLES} samples (20 ms of 48 kHz mono), got {}",
            samples.len()
        )));
    }
    Ok(())
}

fn codec_error(what: &str, code: opusic_c::ErrorCode) -> CoreError {
    CoreError::Call(format!("opus {what}: {code:?}"))
}

/// Encodes the local microphone.
pub struct VoiceEncoder {
    encoder: Encoder,
    input: Vec<u16>,
    output: Vec<u8>,
}

impl VoiceEncoder {
    /// A VoIP-tuned mono encoder with in-band FEC.
    pub fn new() -> CoreResult<Self> {
        let mut encoder = Encoder::new(Channels::Mono, SampleRate::Hz48000, Application::Voip)
            .map_err(|e| codec_error("encoder", e))?;
        encoder
            .set_bitrate(opusic_c::Bitrate::Value(BITRATE_BPS))
            .map_err(|e| codec_error("bitrate", e))?;
        encoder
            .set_inband_fec(opusic_c::InbandFec::Mode1)
            .map_err(|e| codec_error("fec", e))?;
        encoder
            .set_packet_loss(5)
            .map_err(|e| codec_error("packet loss", e))?;
        Ok(Self {
            encoder,
            input: Vec::with_capacity(FRAME_SAMPLES),
            output: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// One 20 ms frame to one Opus packet.
    pub fn encode(&mut self, samples: &[i16]) -> CoreResult<&[u8]> {
        validate_frame(samples)?;
        self.input.clear();
        // libopus takes i16; the binding spells it u16. Same bits.
        self.input.extend(samples.iter().map(|s| *s as u16));
        let len = self
            .encoder
            .encode_to_slice(&self.input, &mut self.output)
            .map_err(|e| codec_error("encode", e))?;
        Ok(&self.output[..len])
    }
}

/// Decodes the peer's voice, concealing short losses.
pub struct VoiceDecoder {
    decoder: Decoder,
    output: Vec<u16>,
    last_sequence: Option<u16>,
}

impl VoiceDecoder {
    /// A mono 48 kHz decoder.
    pub fn new() -> CoreResult<Self> {
        Ok(Self {
            decoder: Decoder::new(Channels::Mono, SampleRate::Hz48000)
                .map_err(|e| codec_error("decoder", e))?,
            output: vec![0; FRAME_SAMPLES * 6],
            last_sequence: None,
        })
    }

    /// Decodes the packet with RTP sequence number `sequence`; returns the frames to play
    /// (concealment for a short gap first, then the packet's own audio). Late or repeated
    /// packets yield nothing.
    pub fn decode(&mut self, sequence: u16, packet: &[u8]) -> Vec<Vec<i16>> {
        let mut frames = Vec::new();
        if let Some(last) = self.last_sequence {
            let gap = sequence.wrapping_sub(last);
            if gap == 0 || gap > u16::MAX / 2 {
                return frames;
            }
            if gap > 1 && gap - 1 <= MAX_CONCEALED_FRAMES {
                for _ in 1..gap {
                    if let Some(frame) = self.run(&[], FRAME_SAMPLES) {
                        frames.push(frame);
                    }
                }
            }
        }
        self.last_sequence = Some(sequence);
        // An empty payload would ask libopus for concealment of unknown length.
        if packet.is_empty() {
            return frames;
        }
        if let Some(frame) = self.run(packet, self.output.len()) {
            frames.push(frame);
        }
        frames
    }

    fn run(&mut self, packet: &[u8], max: usize) -> Option<Vec<i16>> {
        match self
            .decoder
            .decode_to_slice(packet, &mut self.output[..max], false)
        {
            Ok(n) => Some(self.output[..n].iter().map(|s| *s as i16).collect()),
            Err(e) => {
                tracing::debug!(error = ?e, "dropping an undecodable audio packet");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: usize) -> Vec<i16> {
        (0..FRAME_SAMPLES)
            .map(|i| {
                let t = (offset + i) as f64 / f64::from(SAMPLE_RATE_HZ);
                (6000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn each_encoded_frame_decodes_to_one_twenty_ms_frame() {
        let mut encoder = VoiceEncoder::new().unwrap();
        let mut decoder = VoiceDecoder::new().unwrap();
        for seq in 0..10u16 {
            let packet = encoder
                .encode(&frame(usize::from(seq) * FRAME_SAMPLES))
                .unwrap()
                .to_vec();
            assert!(
                !packet.is_empty() && packet.len() < 400,
                "{} bytes",
                packet.len()
            );
            let frames = decoder.decode(seq, &packet);
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].len(), FRAME_SAMPLES);
        }
    }

    #[test]
    fn a_short_gap_is_concealed_and_late_or_repeated_packets_are_dropped() {
        let mut encoder = VoiceEncoder::new().unwrap();
        let mut decoder = VoiceDecoder::new().unwrap();
        let packets: Vec<Vec<u8>> = (0..6)
            .map(|i| encoder.encode(&frame(i * FRAME_SAMPLES)).unwrap().to_vec())
            .collect();
        assert_eq!(decoder.decode(100, &packets[0]).len(), 1);
        // 101 and 102 lost: two concealed frames, then 103 itself.
        assert_eq!(decoder.decode(103, &packets[3]).len(), 3);
        assert!(decoder.decode(103, &packets[3]).is_empty(), "repeat");
        assert!(decoder.decode(102, &packets[2]).is_empty(), "late");
        // Sequence numbers wrap.
        let mut wrapping = VoiceDecoder::new().unwrap();
        assert_eq!(wrapping.decode(u16::MAX, &packets[4]).len(), 1);
        assert_eq!(wrapping.decode(0, &packets[5]).len(), 1);
    }

    #[test]
    fn garbage_packets_decode_to_nothing_without_panicking() {
        let mut decoder = VoiceDecoder::new().unwrap();
        let _ = decoder.decode(1, &[0xff; 3]);
        assert!(decoder.decode(2, &[]).is_empty());
        let _ = decoder.decode(3, &[0u8; 2000]);
    }

    #[test]
    fn frames_of_the_wrong_length_are_refused() {
        let mut encoder = VoiceEncoder::new().unwrap();
        assert!(matches!(
            encoder.encode(&[0; 480]),
            Err(CoreError::InvalidArgument(_))
        ));
        assert!(validate_frame(&[0; FRAME_SAMPLES]).is_ok());
    }
}
