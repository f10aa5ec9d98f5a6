//! One call's task: the state machine, the peer connection, the ring timer and the audio.
//! It owns everything of the call, so ending the task releases every socket and buffer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::media::Sample;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSdpType, StatsSelector,
};

use super::audio::{AudioFrame, VoiceDecoder, VoiceEncoder, FRAME_MS, FRAME_SAMPLES};
use super::config::CallConfig;
use super::peer::{Peer, PeerEvent};
use super::signal::{remote_description, CallSignal, SdpRole};
use super::{CallDirection, CallState, CallStats, EndReason};
use crate::client::Shared;
use crate::error::{CoreError, CoreResult};

/// A call that was answered must connect within this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Remote candidates kept while the remote description is not yet set.
const MAX_PENDING_CANDIDATES: usize = 64;

/// What the manager and the app ask of a call.
pub(crate) enum Command {
    /// Answer an incoming call.
    Accept,
    /// End the call and tell the peer why.
    End(EndReason),
    /// End the call without telling the peer (it already knows).
    Abandon(EndReason),
    /// Stop or resume sending the microphone.
    SetMuted(bool),
    /// Current statistics.
    Stats(oneshot::Sender<CoreResult<CallStats>>),
    /// A signal from the peer.
    Signal(CallSignal),
}

/// How a call begins.
pub(crate) enum Start {
    /// We call: build, offer, ring.
    Outgoing,
    /// The peer calls with this offer; ring until accepted, or accept at once (glare).
    Incoming { offer: String, accept: bool },
}

/// How the call ended and whether the peer still needs to hear it.
struct Ending {
    reason: EndReason,
    notify_peer: bool,
}

impl Ending {
    fn tell(reason: EndReason) -> Self {
        Self {
            reason,
            notify_peer: true,
        }
    }
    fn quiet(reason: EndReason) -> Self {
        Self {
            reason,
            notify_peer: false,
        }
    }
}

type Timer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The running call.
pub(crate) struct CallTask {
    pub shared: Arc<Shared>,
    pub config: CallConfig,
    pub call_id: Uuid,
    pub peer_id: Uuid,
    pub direction: CallDirection,
    pub state: watch::Sender<CallState>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub audio_in: mpsc::Receiver<Vec<i16>>,
}

/// The mutable parts of a running call.
struct Live {
    peer: Option<Peer>,
    peer_events_tx: mpsc::UnboundedSender<PeerEvent>,
    peer_events: mpsc::UnboundedReceiver<PeerEvent>,
    remote_description_set: bool,
    pending_candidates: Vec<RTCIceCandidateInit>,
    offer: Option<String>,
    timer: Option<(Timer, EndReason)>,
    connected_once: bool,
    encoder: VoiceEncoder,
    muted: bool,
    payload_type: Option<u8>,
    receiver: Option<JoinHandle<()>>,
    queued_signals: Vec<Uuid>,
}

async fn wait_timer(timer: &mut Option<(Timer, EndReason)>) -> EndReason {
    match timer {
        Some((sleep, reason)) => {
            sleep.await;
            *reason
        }
        None => std::future::pending().await,
    }
}

impl CallTask {
    /// Runs the call to its end.
    pub async fn run(mut self, start: Start) {
        let initial = *self.state.borrow();
        self.announce(initial);
        let (peer_events_tx, peer_events) = mpsc::unbounded_channel();
        let encoder = match VoiceEncoder::new() {
            Ok(encoder) => encoder,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the audio encoder");
                self.finish(None, Ending::tell(EndReason::Failed)).await;
                return;
            }
        };
        let mut live = Live {
            peer: None,
            peer_events_tx,
            peer_events,
            remote_description_set: false,
            pending_candidates: Vec::new(),
            offer: None,
            timer: Some((
                self.config.clock.sleep(self.config.ring_timeout),
                EndReason::NoAnswer,
            )),
            connected_once: false,
            encoder,
            muted: false,
            payload_type: None,
            receiver: None,
            queued_signals: Vec::new(),
        };
        let ending = match self.drive(&mut live, start).await {
            Ok(ending) => ending,
            Err(e) => {
                tracing::warn!(error = %e, "call failed");
                Ending::tell(EndReason::Failed)
            }
        };
        self.finish(Some(live), ending).await;
    }

    async fn drive(&mut self, live: &mut Live, start: Start) -> CoreResult<Ending> {
        match start {
            Start::Outgoing => {
                let peer = self.build_peer(live).await?;
                let sdp = peer.describe_locally(RTCSdpType::Offer).await?;
                live.peer = Some(peer);
                self.send(live, CallSignal::Offer { sdp }).await?;
            }
            Start::Incoming { offer, accept } => {
                live.offer = Some(offer);
                if accept {
                    self.accept(live).await?;
                }
            }
        }
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        return Ok(Ending::tell(EndReason::HungUp));
                    };
                    if let Some(ending) = self.on_command(live, command).await? {
                        return Ok(ending);
                    }
                }
                Some(event) = live.peer_events.recv() => {
                    if let Some(ending) = self.on_peer_event(live, event).await? {
                        return Ok(ending);
                    }
                }
                Some(frame) = self.audio_in.recv() => self.send_audio(live, frame).await,
                reason = wait_timer(&mut live.timer) => return Ok(Ending::tell(reason)),
            }
        }
    }

    async fn on_command(
        &mut self,
        live: &mut Live,
        command: Command,
    ) -> CoreResult<Option<Ending>> {
        match command {
            Command::Accept => {
                if *self.state.borrow() == CallState::IncomingRinging {
                    self.accept(live).await?;
                }
            }
            Command::End(reason) => return Ok(Some(Ending::tell(reason))),
            Command::Abandon(reason) => return Ok(Some(Ending::quiet(reason))),
            Command::SetMuted(muted) => live.muted = muted,
            Command::Stats(reply) => {
                let connection = live.peer.as_ref().map(|p| p.connection.clone());
                let _ = reply.send(stats(connection).await);
            }
            Command::Signal(signal) => return self.on_signal(live, signal).await,
        }
        Ok(None)
    }

    async fn on_signal(
        &mut self,
        live: &mut Live,
        signal: CallSignal,
    ) -> CoreResult<Option<Ending>> {
        let state = *self.state.borrow();
        match signal {
            CallSignal::Answer { sdp } => {
                if state != CallState::OutgoingRinging {
                    return Ok(None);
                }
                let answer = remote_description(SdpRole::Answer, sdp)?;
                let Some(peer) = live.peer.as_ref() else {
                    return Ok(None);
                };
                // webrtc's message may quote the peer's SDP (addresses): keep it out of logs.
                peer.connection
                    .set_remote_description(answer)
                    .await
                    .map_err(|_| {
                        CoreError::InvalidMessage("the peer's answer was refused".into())
                    })?;
                live.remote_description_set = true;
                self.add_pending_candidates(live).await;
                live.timer = Some((self.config.clock.sleep(CONNECT_TIMEOUT), EndReason::Failed));
                self.set_state(CallState::Connecting);
            }
            CallSignal::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
            } => {
                let init = RTCIceCandidateInit {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                    ..Default::default()
                };
                match (&live.peer, live.remote_description_set) {
                    (Some(peer), true) => {
                        if peer.connection.add_ice_candidate(init).await.is_err() {
                            // The error would quote the candidate (an address): not logged.
                            tracing::debug!("ignoring a remote candidate webrtc refused");
                        }
                    }
                    // Candidates may overtake the offer's acceptance or the answer: keep
                    // them until the remote description is in place.
                    _ if live.pending_candidates.len() < MAX_PENDING_CANDIDATES => {
                        live.pending_candidates.push(init)
                    }
                    _ => tracing::debug!("too many early candidates; dropping one"),
                }
            }
            CallSignal::Busy if state == CallState::OutgoingRinging => {
                return Ok(Some(Ending::quiet(EndReason::Busy)));
            }
            CallSignal::Hangup { reason } => return Ok(Some(Ending::quiet(reason))),
            CallSignal::Busy | CallSignal::Offer { .. } => {}
        }
        Ok(None)
    }

    async fn on_peer_event(
        &mut self,
        live: &mut Live,
        event: PeerEvent,
    ) -> CoreResult<Option<Ending>> {
        match event {
            PeerEvent::LocalCandidate(init) => {
                if init.candidate.is_empty() {
                    return Ok(None);
                }
                let signal = CallSignal::Candidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                };
                self.send(live, signal).await?;
            }
            PeerEvent::State(RTCPeerConnectionState::Connected) => {
                live.timer = None;
                live.connected_once = true;
                self.set_state(CallState::Connected);
            }
            PeerEvent::State(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) => {
                let reason = if live.connected_once {
                    EndReason::ConnectionLost
                } else {
                    EndReason::Failed
                };
                return Ok(Some(Ending::tell(reason)));
            }
            PeerEvent::State(state) => tracing::debug!(%state, "call link state"),
            PeerEvent::Track(track) => {
                if live.receiver.is_none() {
                    live.receiver = Some(tokio::spawn(receive_audio(
                        track,
                        self.call_id,
                        self.shared.clone(),
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Builds the connection, applies the stored offer and answers it.
    async fn accept(&mut self, live: &mut Live) -> CoreResult<()> {
        let Some(offer) = live.offer.take() else {
            return Ok(());
        };
        let offer = remote_description(SdpRole::Offer, offer)?;
        self.set_state(CallState::Connecting);
        let peer = self.build_peer(live).await?;
        peer.connection
            .set_remote_description(offer)
            .await
            .map_err(|_| CoreError::InvalidMessage("the peer's offer was refused".into()))?;
        live.remote_description_set = true;
        let sdp = peer.describe_locally(RTCSdpType::Answer).await?;
        live.peer = Some(peer);
        self.send(live, CallSignal::Answer { sdp }).await?;
        self.add_pending_candidates(live).await;
        live.timer = Some((self.config.clock.sleep(CONNECT_TIMEOUT), EndReason::Failed));
        Ok(())
    }

    async fn build_peer(&self, live: &mut Live) -> CoreResult<Peer> {
        let servers = self
            .shared
            .calls
            .ice_servers
            .servers(&self.shared, &self.config)
            .await?;
        Peer::build(&self.config, servers, live.peer_events_tx.clone()).await
    }

    async fn add_pending_candidates(&self, live: &mut Live) {
        let Some(peer) = live.peer.as_ref() else {
            return;
        };
        for init in live.pending_candidates.drain(..) {
            if peer.connection.add_ice_candidate(init).await.is_err() {
                tracing::debug!("ignoring a buffered remote candidate webrtc refused");
            }
        }
    }

    async fn send_audio(&self, live: &mut Live, mut frame: Vec<i16>) {
        // Frames before the link is up have nowhere to go; dropping keeps latency low.
        if !live.connected_once || *self.state.borrow() != CallState::Connected {
            return;
        }
        let Some(peer) = live.peer.as_ref() else {
            return;
        };
        if live.muted {
            frame.iter_mut().for_each(|s| *s = 0);
        }
        let payload_type = match live.payload_type {
            Some(pt) => pt,
            None => {
                let pt = peer.payload_type().await;
                live.payload_type = Some(pt);
                pt
            }
        };
        let packet = match live.encoder.encode(&frame) {
            Ok(packet) => Bytes::copy_from_slice(packet),
            Err(e) => {
                tracing::debug!(error = %e, "dropping a frame the encoder refused");
                return;
            }
        };
        let sample = Sample {
            data: packet,
            duration: Duration::from_millis(u64::from(FRAME_MS)),
            ..Sample::new(Instant::now())
        };
        if let Err(e) = peer
            .track
            .sample_writer(peer.ssrc, payload_type)
            .write_sample(&sample)
            .await
        {
            tracing::debug!(error = %e, "audio frame not sent");
        }
    }

    /// Queues `signal` for the peer through the encrypted outbox.
    async fn send(&self, live: &mut Live, signal: CallSignal) -> CoreResult<()> {
        let id = self
            .shared
            .send_call_signal(self.peer_id, self.call_id, signal)
            .await?;
        live.queued_signals.push(id);
        Ok(())
    }

    fn set_state(&self, state: CallState) {
        if *self.state.borrow() == state {
            return;
        }
        self.state.send_replace(state);
        self.announce(state);
    }

    fn announce(&self, state: CallState) {
        self.shared
            .emit(crate::client::ClientEvent::CallStateChanged {
                call_id: self.call_id,
                peer: self.peer_id,
                direction: self.direction,
                state,
            });
    }

    /// Tells the peer (if needed), drops unsent signals, releases the connection and the
    /// audio task, and announces the end.
    async fn finish(&mut self, live: Option<Live>, ending: Ending) {
        if let Some(mut live) = live {
            // What has not left yet is useless now; the hangup below supersedes it.
            let stale = std::mem::take(&mut live.queued_signals);
            let purge = self
                .shared
                .protocol
                .call(move |e| {
                    e.store().write(|store| {
                        for id in stale {
                            store.dequeue(id)?;
                        }
                        Ok(())
                    })
                })
                .await;
            if let Err(e) = purge {
                tracing::debug!(error = %e, "could not drop stale call signals");
            }
            if let Some(peer) = live.peer.take() {
                if let Err(e) = peer.connection.close().await {
                    tracing::debug!(error = %e, "closing the peer connection");
                }
            }
            if let Some(receiver) = live.receiver.take() {
                receiver.abort();
                let _ = receiver.await;
            }
        }
        if ending.notify_peer {
            let hangup = CallSignal::Hangup {
                reason: ending.reason,
            };
            if let Err(e) = self
                .shared
                .send_call_signal(self.peer_id, self.call_id, hangup)
                .await
            {
                tracing::debug!(error = %e, "could not queue the hangup");
            }
        }
        self.shared.calls.release(self.call_id);
        self.set_state(CallState::Ended(ending.reason));
    }
}

/// Reads the peer's RTP, decodes Opus and publishes the frames.
async fn receive_audio(track: Arc<dyn TrackRemote>, call_id: Uuid, shared: Arc<Shared>) {
    let mut decoder = match VoiceDecoder::new() {
        Ok(decoder) => decoder,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the audio decoder");
            return;
        }
    };
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                for samples in decoder.decode(packet.header.sequence_number, &packet.payload) {
                    if samples.len() != FRAME_SAMPLES {
                        tracing::debug!(len = samples.len(), "peer sent a non-20 ms frame");
                    }
                    // Nobody listening is fine: audio is live, not stored.
                    let _ = shared.audio.send(AudioFrame {
                        call_id,
                        samples: samples.into(),
                    });
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// The jitter webrtc-rs reports, in milliseconds. Its stats say seconds, but the value is
/// the RTCP receiver report's, in RTP timestamp units (RFC 3550 §6.4.1): for Opus, 1/48,000 s.
fn jitter_ms(reported: f64) -> f64 {
    reported * 1000.0 / f64::from(super::audio::SAMPLE_RATE_HZ)
}

/// Statistics of the connection as the app sees them.
async fn stats(connection: Option<Arc<dyn PeerConnection>>) -> CoreResult<CallStats> {
    let Some(connection) = connection else {
        return Err(CoreError::Call("the call has no connection yet".into()));
    };
    let report = connection
        .get_stats(Instant::now(), StatsSelector::None)
        .await;
    let mut stats = CallStats::default();
    for pair in report.candidate_pairs() {
        if pair.nominated && pair.current_round_trip_time > 0.0 {
            stats.rtt_ms = Some(pair.current_round_trip_time * 1000.0);
        }
    }
    for inbound in report.inbound_rtp_streams() {
        let received = &inbound.received_rtp_stream_stats;
        stats.packets_received += received.packets_received;
        stats.packets_lost += received.packets_lost;
        stats.jitter_ms = stats.jitter_ms.max(jitter_ms(received.jitter));
    }
    for outbound in report.outbound_rtp_streams() {
        stats.packets_sent += outbound.sent_rtp_stream_stats.packets_sent;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    #[test]
    fn jitter_is_converted_from_rtp_timestamp_units() {
        // 480 units of a 48 kHz clock are 10 ms.
        assert!((super::jitter_ms(480.0) - 10.0).abs() < 1e-9);
        assert_eq!(super::jitter_ms(0.0), 0.0);
    }
}
