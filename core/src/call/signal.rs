//! Call signalling as it travels inside the Signal session: the relay sees only ciphertext,
//! so it learns no SDP, address or DTLS fingerprint and cannot swap the fingerprint.

use serde::{Deserialize, Serialize};
use webrtc::peer_connection::RTCSessionDescription;

use super::EndReason;
use crate::error::{CoreError, CoreResult};

/// Largest SDP accepted from a peer, in bytes (an audio-only SDP is ~1–3 KB).
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// Largest ICE candidate line accepted from a peer, in bytes.
pub const MAX_CANDIDATE_BYTES: usize = 1024;

/// One signalling step of a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum CallSignal {
    /// The caller's SDP offer: the call starts ringing at the callee.
    Offer {
        /// SDP text.
        sdp: String,
    },
    /// The callee accepted; its SDP answer.
    Answer {
        /// SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// The `candidate:` attribute.
        candidate: String,
        /// Media section id it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// Media section index it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mline_index: Option<u16>,
    },
    /// The callee is in another call.
    Busy,
    /// The sender ended the call.
    Hangup {
        /// Why.
        reason: EndReason,
    },
}

impl CallSignal {
    /// Rejects what no honest peer sends: oversized or empty SDP and candidates.
    pub fn validate(&self) -> CoreResult<()> {
        let bad = |what: &str| Err(CoreError::InvalidMessage(format!("call signal: {what}")));
        match self {
            Self::Offer { sdp } | Self::Answer { sdp } => {
                if sdp.is_empty() || sdp.len() > MAX_SDP_BYTES {
                    return bad("SDP size out of range");
                }
            }
            Self::Candidate {
                candidate, sdp_mid, ..
            } => {
                if candidate.len() > MAX_CANDIDATE_BYTES
                    || sdp_mid.as_ref().is_some_and(|m| m.len() > 64)
                {
                    return bad("candidate size out of range");
                }
            }
            Self::Busy | Self::Hangup { .. } => {}
        }
        Ok(())
    }

    /// A short name for logs (never the content).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Offer { .. } => "offer",
            Self::Answer { .. } => "answer",
            Self::Candidate { .. } => "candidate",
            Self::Busy => "busy",
            Self::Hangup { .. } => "hangup",
        }
    }
}

/// Whether a peer's SDP is the caller's offer or the callee's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpRole {
    /// The caller's offer.
    Offer,
    /// The callee's answer.
    Answer,
}

/// Parses a peer's SDP into the description webrtc applies. webrtc's error may quote the
/// SDP (addresses, fingerprints), so only the role reaches the error.
pub fn remote_description(role: SdpRole, sdp: String) -> CoreResult<RTCSessionDescription> {
    let (parsed, what) = match role {
        SdpRole::Offer => (RTCSessionDescription::offer(sdp), "malformed offer"),
        SdpRole::Answer => (RTCSessionDescription::answer(sdp), "malformed answer"),
    };
    parsed.map_err(|_| CoreError::InvalidMessage(what.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_have_a_stable_json_shape() {
        let hangup = CallSignal::Hangup {
            reason: EndReason::NoAnswer,
        };
        assert_eq!(
            serde_json::to_string(&hangup).unwrap(),
            r#"{"k":"hangup","reason":"no_answer"}"#
        );
        let candidate: CallSignal = serde_json::from_str(
            r#"{"k":"candidate","candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdp_mid":"0"}"#,
        )
        .unwrap();
        assert_eq!(candidate.kind(), "candidate");
        assert!(serde_json::from_str::<CallSignal>(r#"{"k":"video"}"#).is_err());
        assert!(serde_json::from_str::<CallSignal>(r#"{"k":"hangup","reason":"bored"}"#).is_err());
    }

    #[test]
    fn oversized_or_empty_descriptions_are_refused() {
        let big = CallSignal::Offer {
            sdp: "a".repeat(MAX_SDP_BYTES + 1),
        };
        assert!(matches!(big.validate(), Err(CoreError::InvalidMessage(_))));
        let empty = CallSignal::Answer { sdp: String::new() };
        assert!(empty.validate().is_err());
        let long = CallSignal::Candidate {
            candidate: "c".repeat(MAX_CANDIDATE_BYTES + 1),
            sdp_mid: None,
            sdp_mline_index: None,
        };
        assert!(long.validate().is_err());
        assert!(CallSignal::Busy.validate().is_ok());
    }
}
