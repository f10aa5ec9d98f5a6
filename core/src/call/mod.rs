//! One-to-one voice calls: WebRTC in the core, signalling inside the Signal session.
//!
//! The manager keeps at most one call. Offers that arrive during a call are answered busy;
//! two users calling each other at once (glare) end up in one call: the call with the larger
//! id survives and is accepted automatically on the side whose own call lost. Each call runs
//! in its own task (`task`) that owns the peer connection, the Opus codec and the timers.

pub mod audio;
pub mod clock;
pub mod config;
mod ice_servers;
mod peer;
pub mod signal;
mod task;
pub mod tone;

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

pub use audio::{AudioFrame, FRAME_SAMPLES, SAMPLE_RATE_HZ};
pub use clock::{CallClock, ManualClock, TokioClock};
pub use config::{CallConfig, RING_TIMEOUT};
pub(crate) use ice_servers::IceServerCache;
use signal::CallSignal;
use task::{CallTask, Command, Start};

use crate::client::{ClientEvent, Shared};
use crate::error::{CoreError, CoreResult};

/// Frames of microphone audio queued for the call task (1 s); beyond that frames are dropped
/// rather than delayed.
const AUDIO_QUEUE_FRAMES: usize = 50;

/// Who placed the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallDirection {
    /// This device called.
    Outgoing,
    /// The peer called.
    Incoming,
}

/// Why a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// One side hung up.
    HungUp,
    /// The callee declined.
    Declined,
    /// The callee was in another call.
    Busy,
    /// Nobody answered within the ring timeout.
    NoAnswer,
    /// The call could not be set up (no route between the devices, bad offer, …).
    Failed,
    /// The connection broke during the call (the peer vanished or the network went).
    ConnectionLost,
    /// Both called each other at once; this call gave way to the other one.
    Glare,
}

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// We called; the peer's phone is ringing.
    OutgoingRinging,
    /// The peer is calling us.
    IncomingRinging,
    /// Answered; the media link is being set up.
    Connecting,
    /// Audio flows.
    Connected,
    /// Over.
    Ended(EndReason),
}

/// Statistics of a call's media link.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallStats {
    /// Round-trip time of the selected candidate pair, milliseconds.
    pub rtt_ms: Option<f64>,
    /// RTP packets received from the peer.
    pub packets_received: u64,
    /// RTP packets lost from the peer (RFC 3550 cumulative count).
    pub packets_lost: i64,
    /// Interarrival jitter of the peer's audio, milliseconds.
    pub jitter_ms: f64,
    /// RTP packets sent to the peer.
    pub packets_sent: u64,
}

/// The call in progress.
struct ActiveCall {
    call_id: Uuid,
    peer: Uuid,
    direction: CallDirection,
    state: watch::Receiver<CallState>,
    commands: mpsc::UnboundedSender<Command>,
    audio: mpsc::Sender<Vec<i16>>,
    task: tokio::task::JoinHandle<()>,
}

/// Routes app commands and peer signals to the one active call.
pub(crate) struct CallManager {
    config: CallConfig,
    active: Mutex<Option<ActiveCall>>,
    pub ice_servers: IceServerCache,
}

impl CallManager {
    pub fn new(config: CallConfig) -> Self {
        Self {
            config,
            active: Mutex::new(None),
            ice_servers: IceServerCache::default(),
        }
    }

    fn spawn(
        &self,
        shared: &Arc<Shared>,
        call_id: Uuid,
        peer: Uuid,
        direction: CallDirection,
        start: Start,
    ) -> ActiveCall {
        let initial = match &start {
            Start::Outgoing => CallState::OutgoingRinging,
            Start::Incoming { accept: false, .. } => CallState::IncomingRinging,
            Start::Incoming { accept: true, .. } => CallState::Connecting,
        };
        let (state_tx, state) = watch::channel(initial);
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (audio, audio_in) = mpsc::channel(AUDIO_QUEUE_FRAMES);
        let task = CallTask {
            shared: shared.clone(),
            config: self.config.clone(),
            call_id,
            peer_id: peer,
            direction,
            state: state_tx,
            commands,
            audio_in,
        };
        ActiveCall {
            call_id,
            peer,
            direction,
            state,
            commands: commands_tx,
            audio,
            task: tokio::spawn(task.run(start)),
        }
    }

    /// Starts calling `peer`.
    pub async fn start(&self, shared: &Arc<Shared>, peer: Uuid) -> CoreResult<Uuid> {
        // Fetch (and cache) the ICE servers first so a missing TURN server is the caller's
        // error, not a call that fails later.
        self.ice_servers.servers(shared, &self.config).await?;
        let call_id = Uuid::new_v4();
        let mut active = self.lock();
        if active.is_some() {
            return Err(CoreError::CallInProgress);
        }
        *active = Some(self.spawn(
            shared,
            call_id,
            peer,
            CallDirection::Outgoing,
            Start::Outgoing,
        ));
        Ok(call_id)
    }

    /// Sends `command` to the call `call_id`.
    fn command(&self, call_id: Uuid, command: Command) -> CoreResult<()> {
        let active = self.lock();
        match active.as_ref() {
            Some(call) if call.call_id == call_id => call
                .commands
                .send(command)
                .map_err(|_| CoreError::NoSuchCall { call_id }),
            _ => Err(CoreError::NoSuchCall { call_id }),
        }
    }

    /// Answers an incoming call.
    pub fn accept(&self, call_id: Uuid) -> CoreResult<()> {
        self.command(call_id, Command::Accept)
    }

    /// Ends a call in any state: declines when it is ringing here, hangs up otherwise.
    pub fn hang_up(&self, call_id: Uuid) -> CoreResult<()> {
        let reason = {
            let active = self.lock();
            match active.as_ref() {
                Some(call) if call.call_id == call_id => {
                    if *call.state.borrow() == CallState::IncomingRinging {
                        EndReason::Declined
                    } else {
                        EndReason::HungUp
                    }
                }
                _ => return Err(CoreError::NoSuchCall { call_id }),
            }
        };
        self.command(call_id, Command::End(reason))
    }

    /// Declines an incoming call that is ringing.
    pub fn decline(&self, call_id: Uuid) -> CoreResult<()> {
        self.command(call_id, Command::End(EndReason::Declined))
    }

    /// Mutes or unmutes the microphone.
    pub fn set_muted(&self, call_id: Uuid, muted: bool) -> CoreResult<()> {
        self.command(call_id, Command::SetMuted(muted))
    }

    /// Queues one frame of microphone audio. Never blocks: when the call task is behind,
    /// the frame is dropped (late audio is worse than a gap).
    pub fn push_audio(&self, call_id: Uuid, samples: &[i16]) -> CoreResult<()> {
        audio::validate_frame(samples)?;
        let sender = {
            let active = self.lock();
            match active.as_ref() {
                Some(call) if call.call_id == call_id => call.audio.clone(),
                _ => return Err(CoreError::NoSuchCall { call_id }),
            }
        };
        match sender.try_send(samples.to_vec()) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(CoreError::NoSuchCall { call_id }),
        }
    }

    /// Statistics of the call's media link.
    pub async fn stats(&self, call_id: Uuid) -> CoreResult<CallStats> {
        let (reply, answer) = oneshot::channel();
        self.command(call_id, Command::Stats(reply))?;
        answer
            .await
            .map_err(|_| CoreError::NoSuchCall { call_id })?
    }

    /// The call in progress: its id, peer, direction and state.
    pub fn current(&self) -> Option<(Uuid, Uuid, CallDirection, CallState)> {
        self.lock()
            .as_ref()
            .map(|c| (c.call_id, c.peer, c.direction, *c.state.borrow()))
    }

    /// Handles a signal from `peer` about call `call_id`, sent at `sent_at` (the peer's
    /// Unix milliseconds).
    pub fn on_signal(
        &self,
        shared: &Arc<Shared>,
        peer: Uuid,
        call_id: Uuid,
        signal: CallSignal,
        sent_at: i64,
    ) {
        if let Err(e) = signal.validate() {
            tracing::info!(error = %e, "ignoring a malformed call signal");
            return;
        }
        let age_ms = crate::client::now_ms().saturating_sub(sent_at);
        if matches!(signal, CallSignal::Offer { .. })
            && u128::try_from(age_ms).unwrap_or(0) > self.config.ring_timeout.as_millis()
        {
            // Delivered after the caller stopped ringing (they were offline): a missed call.
            tracing::debug!("ignoring a stale call offer");
            return;
        }
        let CallSignal::Offer { sdp } = signal else {
            let active = self.lock();
            match active.as_ref() {
                Some(call) if call.call_id == call_id && call.peer == peer => {
                    let _ = call.commands.send(Command::Signal(signal));
                }
                // A late signal of a call that is over (or never was here).
                _ => tracing::debug!(kind = signal.kind(), "signal for no current call"),
            }
            return;
        };
        let mut ended_here = None;
        {
            let mut active = self.lock();
            let decision = match active.as_ref() {
                None => OfferDecision::Ring,
                Some(call) if call.call_id == call_id && call.peer == peer => {
                    OfferDecision::Duplicate
                }
                Some(call)
                    if call.peer == peer
                        && call.direction == CallDirection::Outgoing
                        && *call.state.borrow() == CallState::OutgoingRinging =>
                {
                    if call_id > call.call_id {
                        OfferDecision::TheirsWins
                    } else {
                        OfferDecision::OursWins
                    }
                }
                // The peer can be in one call only: a new offer means they left the old one.
                Some(call) if call.peer == peer => OfferDecision::Replace,
                Some(_) => OfferDecision::Busy,
            };
            match decision {
                OfferDecision::Duplicate => {}
                OfferDecision::Ring | OfferDecision::TheirsWins | OfferDecision::Replace => {
                    if let Some(old) = active.take() {
                        let reason = if decision == OfferDecision::TheirsWins {
                            EndReason::Glare
                        } else {
                            EndReason::ConnectionLost
                        };
                        let _ = old.commands.send(Command::Abandon(reason));
                    }
                    *active = Some(self.spawn(
                        shared,
                        call_id,
                        peer,
                        CallDirection::Incoming,
                        Start::Incoming {
                            offer: sdp,
                            // Glare: we were calling them, so we take their call at once.
                            accept: decision == OfferDecision::TheirsWins,
                        },
                    ));
                }
                OfferDecision::OursWins => ended_here = Some(EndReason::Glare),
                OfferDecision::Busy => ended_here = Some(EndReason::Busy),
            }
        }
        if let Some(reason) = ended_here {
            if reason == EndReason::Busy {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = shared
                        .send_call_signal(peer, call_id, CallSignal::Busy)
                        .await
                    {
                        tracing::debug!(error = %e, "could not answer busy");
                    }
                });
            }
            // The call never rang here, but the app learns of it (a missed call).
            shared.emit(ClientEvent::CallStateChanged {
                call_id,
                peer,
                direction: CallDirection::Incoming,
                state: CallState::Ended(reason),
            });
        }
    }

    /// Forgets the call once its task has finished.
    pub fn release(&self, call_id: Uuid) {
        let mut active = self.lock();
        if active.as_ref().is_some_and(|c| c.call_id == call_id) {
            *active = None;
        }
    }

    /// Ends the current call (hanging up) and waits for its task.
    pub async fn shutdown(&self) {
        let call = self.lock().take();
        if let Some(call) = call {
            let _ = call.commands.send(Command::End(EndReason::HungUp));
            let _ = call.task.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ActiveCall>> {
        // A panic elsewhere cannot leave the slot half-written: recover the value.
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OfferDecision {
    Ring,
    Duplicate,
    TheirsWins,
    OursWins,
    Replace,
    Busy,
}
