//! The WebRTC peer connection of one call: built with our settings, its events forwarded
//! to the call task over a channel (the handler never blocks and holds no lock).

use std::sync::Arc;
use std::time::Instant;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    configure_rtcp_reports, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSdpType, Registry, SettingEngineBuilder,
};

use super::audio::SAMPLE_RATE_HZ;
use super::config::CallConfig;
use crate::error::{CoreError, CoreResult};

/// RTP payload type we offer for Opus (the value every browser uses).
const OPUS_PAYLOAD_TYPE: u8 = 111;

/// What the peer connection reports to its call task.
pub(crate) enum PeerEvent {
    /// A local candidate to trickle to the peer.
    LocalCandidate(webrtc::peer_connection::RTCIceCandidateInit),
    /// The aggregate connection state moved.
    State(RTCPeerConnectionState),
    /// The peer's audio track arrived.
    Track(Arc<dyn TrackRemote>),
}

struct Forwarder {
    events: mpsc::UnboundedSender<PeerEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Forwarder {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.events.send(PeerEvent::LocalCandidate(init));
            }
            Err(_) => tracing::debug!("skipping a local candidate that does not serialise"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PeerEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PeerEvent::Track(track));
    }
}

/// A built peer connection with our outgoing audio track.
pub(crate) struct Peer {
    pub connection: Arc<dyn PeerConnection>,
    pub track: Arc<TrackLocalStaticSample>,
    pub ssrc: u32,
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: SAMPLE_RATE_HZ,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn webrtc_error(what: &str) -> impl FnOnce(webrtc::error::Error) -> CoreError + '_ {
    move |e| CoreError::Call(format!("{what}: {e}"))
}

impl Peer {
    /// Builds the connection and adds the local audio track.
    pub async fn build(
        config: &CallConfig,
        ice_servers: Vec<RTCIceServer>,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> CoreResult<Self> {
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus_codec(),
                    payload_type: OPUS_PAYLOAD_TYPE,
                },
                RtpCodecKind::Audio,
            )
            .map_err(webrtc_error("registering Opus"))?;
        // Sender/receiver reports give the call statistics (loss, jitter, RTT).
        let registry = configure_rtcp_reports(Registry::new());
        let policy = if config.relay_only {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        };
        let rtc_config = RTCConfigurationBuilder::new()
            .with_ice_servers(ice_servers)
            .with_ice_transport_policy(policy)
            .build();
        let settings = SettingEngineBuilder::new()
            // Signalling is end-to-end encrypted, so host addresses need no mDNS cover; and
            // mDNS would send multicast beyond the configured interfaces.
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_ice_timeouts(
                Some(config.ice_disconnected_timeout),
                Some(config.ice_failed_timeout),
                None,
            )
            .with_ice_connection_attempts(Some(config.ice_check_interval), None)
            // With relay-only there is nothing better to wait for.
            .with_relay_acceptance_min_wait(if config.relay_only {
                Some(std::time::Duration::ZERO)
            } else {
                None
            })
            .build();
        let connection = PeerConnectionBuilder::new()
            .with_configuration(rtc_config)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(Arc::new(Forwarder { events }))
            .with_udp_addrs(config.bind_addrs.clone())
            .build()
            .await
            .map_err(webrtc_error("building the peer connection"))?;
        let connection: Arc<dyn PeerConnection> = Arc::new(connection);

        let ssrc = rand::random::<u32>();
        let track = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    "privcomm-call".to_owned(),
                    "privcomm-voice".to_owned(),
                    "voice".to_owned(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: opus_codec(),
                        ..Default::default()
                    }],
                ),
            )
            .map_err(webrtc_error("creating the audio track"))?,
        );
        if let Err(e) = connection
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
        {
            let _ = connection.close().await;
            return Err(CoreError::Call(format!("adding the audio track: {e}")));
        }
        Ok(Self {
            connection,
            track,
            ssrc,
        })
    }

    /// Creates our offer or answer, makes it the local description and returns its SDP.
    pub async fn describe_locally(&self, kind: RTCSdpType) -> CoreResult<String> {
        let description = if kind == RTCSdpType::Offer {
            self.connection.create_offer(None).await
        } else {
            self.connection.create_answer(None).await
        }
        .map_err(webrtc_error("creating the session description"))?;
        let sdp = description.sdp.clone();
        self.connection
            .set_local_description(description)
            .await
            .map_err(webrtc_error("setting the local description"))?;
        Ok(sdp)
    }

    /// The payload type negotiated for our audio (known once both descriptions are set).
    pub async fn payload_type(&self) -> u8 {
        for sender in self.connection.get_senders().await {
            if let Ok(params) = sender.get_parameters().await {
                if let Some(codec) = params.rtp_parameters.codecs.first() {
                    return codec.payload_type;
                }
            }
        }
        OPUS_PAYLOAD_TYPE
    }
}
