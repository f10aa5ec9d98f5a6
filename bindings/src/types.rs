//! Records and enums of the FFI, mirroring the core's types. Ids (users, messages, calls)
//! cross the FFI as UUID strings and are parsed here, so a malformed id is an
//! `InvalidArgument` error rather than a crash.

use std::time::Duration;

use privcomm_core as core;
use uuid::Uuid;

use crate::error::PrivcommError;

/// Parses an id given by the app; `what` names it in the error.
pub fn parse_id(what: &str, id: &str) -> Result<Uuid, PrivcommError> {
    Uuid::parse_str(id).map_err(|_| PrivcommError::invalid(format!("{what} is not a UUID")))
}

/// How to open a client.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ClientConfig {
    /// Directory of this account's database (created if needed): the app's private files
    /// directory, never external storage.
    pub data_dir: String,
    /// The relay's base URL (`https://relay.example.org`).
    pub server_url: String,
    /// Call settings; null for the defaults.
    #[uniffi(default = None)]
    pub call: Option<CallSettings>,
}

/// Call settings; every null field keeps the core's default.
#[derive(Clone, Debug, Default, uniffi::Record)]
pub struct CallSettings {
    /// Local UDP addresses (`ip:port`) to gather candidates on; default every interface.
    #[uniffi(default = None)]
    pub bind_addrs: Option<Vec<String>>,
    /// STUN servers (`stun:host:port`) besides those the relay hands out.
    #[uniffi(default = None)]
    pub stun_urls: Option<Vec<String>>,
    /// Only TURN-relayed media, so the peer never learns this device's addresses.
    #[uniffi(default = None)]
    pub relay_only: Option<bool>,
    /// How long an unanswered call rings, milliseconds (default 60,000).
    #[uniffi(default = None)]
    pub ring_timeout_ms: Option<u64>,
    /// Silence before the media link counts as disconnected, milliseconds (default 5,000).
    #[uniffi(default = None)]
    pub ice_disconnected_timeout_ms: Option<u64>,
    /// Further time disconnected before the call ends as lost, milliseconds (default 10,000).
    #[uniffi(default = None)]
    pub ice_failed_timeout_ms: Option<u64>,
}

impl CallSettings {
    /// The core's call configuration; the core checks it (`CallConfig::validate`) when the
    /// client opens.
    pub(crate) fn to_core(&self) -> core::CallConfig {
        let mut config = core::CallConfig::default();
        if let Some(addrs) = &self.bind_addrs {
            config.bind_addrs = addrs.clone();
        }
        if let Some(urls) = &self.stun_urls {
            config.stun_urls = urls.clone();
        }
        if let Some(relay_only) = self.relay_only {
            config.relay_only = relay_only;
        }
        if let Some(v) = self.ring_timeout_ms {
            config.ring_timeout = Duration::from_millis(v);
        }
        if let Some(v) = self.ice_disconnected_timeout_ms {
            config.ice_disconnected_timeout = Duration::from_millis(v);
        }
        if let Some(v) = self.ice_failed_timeout_ms {
            config.ice_failed_timeout = Duration::from_millis(v);
        }
        config
    }
}

/// Where a message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum MessageState {
    /// Outgoing, in the outbox, not yet accepted by the relay.
    Queued,
    /// Outgoing, stored by the relay.
    Sent,
    /// Outgoing, the recipient's device confirmed it.
    Delivered,
    /// Incoming.
    Received,
    /// Outgoing, given up on.
    Failed,
}

impl From<core::MessageState> for MessageState {
    fn from(s: core::MessageState) -> Self {
        match s {
            core::MessageState::Queued => Self::Queued,
            core::MessageState::Sent => Self::Sent,
            core::MessageState::Delivered => Self::Delivered,
            core::MessageState::Received => Self::Received,
            core::MessageState::Failed => Self::Failed,
        }
    }
}

/// A message in the history.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Message {
    /// Message id.
    pub id: String,
    /// The other party.
    pub peer: String,
    /// Sent by this device.
    pub outgoing: bool,
    /// The text.
    pub body: String,
    /// When the sender queued it, milliseconds since the epoch (sender's clock).
    pub sent_at: i64,
    /// Where it stands.
    pub state: MessageState,
}

impl From<core::StoredMessage> for Message {
    fn from(m: core::StoredMessage) -> Self {
        Self {
            id: m.id.to_string(),
            peer: m.peer.to_string(),
            outgoing: m.outgoing,
            body: m.body,
            sent_at: m.sent_at,
            state: m.state.into(),
        }
    }
}

/// Where to continue a history page: the oldest message of the previous page.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct HistoryCursor {
    /// Its `sent_at`.
    pub sent_at: i64,
    /// Its id.
    pub id: String,
}

impl HistoryCursor {
    pub(crate) fn to_core(&self) -> Result<core::HistoryCursor, PrivcommError> {
        Ok(core::HistoryCursor {
            sent_at: self.sent_at,
            id: parse_id("cursor id", &self.id)?,
        })
    }
}

/// Incoming messages dropped (acked, never stored), by reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct DroppedMessages {
    /// They reused the id of another stored message (an attempt to rewrite history).
    pub forged_id: u64,
    /// From blocked peers.
    pub blocked: u64,
    /// Over a peer's receive quota.
    pub over_quota: u64,
    /// Decrypted, but malformed (padding or content).
    pub malformed: u64,
    /// Undecryptable.
    pub undecryptable: u64,
}

impl From<core::DroppedCounts> for DroppedMessages {
    fn from(c: core::DroppedCounts) -> Self {
        Self {
            forged_id: c.forged_id,
            blocked: c.blocked,
            over_quota: c.over_quota,
            malformed: c.malformed,
            undecryptable: c.undecryptable,
        }
    }
}

/// A conversation in the list.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Conversation {
    /// The other party.
    pub peer: String,
    /// Time of the last message, milliseconds since the epoch.
    pub last_activity: i64,
}

impl From<core::Conversation> for Conversation {
    fn from(c: core::Conversation) -> Self {
        Self {
            peer: c.peer.to_string(),
            last_activity: c.last_activity,
        }
    }
}

/// The safety number with a peer.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SafetyNumber {
    /// 60 digits, the same on both phones.
    pub digits: String,
    /// The QR code payload.
    pub scannable: Vec<u8>,
}

impl From<core::SafetyNumber> for SafetyNumber {
    fn from(s: core::SafetyNumber) -> Self {
        Self {
            digits: s.digits,
            scannable: s.scannable,
        }
    }
}

/// Where the link to the relay stands.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// Not connected and not trying.
    Offline,
    /// First attempt under way.
    Connecting,
    /// Online.
    Connected,
    /// Waiting to retry.
    Reconnecting {
        /// Attempt number (1 = first retry).
        attempt: u32,
        /// Milliseconds until the attempt.
        in_ms: u64,
    },
}

impl From<core::ConnectionState> for ConnectionState {
    fn from(s: core::ConnectionState) -> Self {
        match s {
            core::ConnectionState::Offline => Self::Offline,
            core::ConnectionState::Connecting => Self::Connecting,
            core::ConnectionState::Connected => Self::Connected,
            core::ConnectionState::Reconnecting { attempt, in_ms } => {
                Self::Reconnecting { attempt, in_ms }
            }
        }
    }
}

/// Who placed a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum CallDirection {
    /// This device called.
    Outgoing,
    /// The peer called.
    Incoming,
}

impl From<core::CallDirection> for CallDirection {
    fn from(d: core::CallDirection) -> Self {
        match d {
            core::CallDirection::Outgoing => Self::Outgoing,
            core::CallDirection::Incoming => Self::Incoming,
        }
    }
}

/// Why a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum EndReason {
    /// One side hung up.
    HungUp,
    /// The callee declined.
    Declined,
    /// The callee was in another call.
    Busy,
    /// Nobody answered within the ring timeout.
    NoAnswer,
    /// The call could not be set up.
    Failed,
    /// The connection broke during the call.
    ConnectionLost,
    /// Both called each other at once; this call gave way to the other one.
    Glare,
}

impl From<core::EndReason> for EndReason {
    fn from(r: core::EndReason) -> Self {
        match r {
            core::EndReason::HungUp => Self::HungUp,
            core::EndReason::Declined => Self::Declined,
            core::EndReason::Busy => Self::Busy,
            core::EndReason::NoAnswer => Self::NoAnswer,
            core::EndReason::Failed => Self::Failed,
            core::EndReason::ConnectionLost => Self::ConnectionLost,
            core::EndReason::Glare => Self::Glare,
        }
    }
}

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
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
    Ended {
        /// Why.
        reason: EndReason,
    },
}

impl From<core::CallState> for CallState {
    fn from(s: core::CallState) -> Self {
        match s {
            core::CallState::OutgoingRinging => Self::OutgoingRinging,
            core::CallState::IncomingRinging => Self::IncomingRinging,
            core::CallState::Connecting => Self::Connecting,
            core::CallState::Connected => Self::Connected,
            core::CallState::Ended(reason) => Self::Ended {
                reason: reason.into(),
            },
        }
    }
}

/// The call in progress.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct CallInfo {
    /// The call.
    pub call_id: String,
    /// The other party.
    pub peer: String,
    /// Who called.
    pub direction: CallDirection,
    /// Where it stands.
    pub state: CallState,
}

impl From<core::CallInfo> for CallInfo {
    fn from(c: core::CallInfo) -> Self {
        Self {
            call_id: c.call_id.to_string(),
            peer: c.peer.to_string(),
            direction: c.direction.into(),
            state: c.state.into(),
        }
    }
}

/// Statistics of a call's media link.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
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

impl From<core::CallStats> for CallStats {
    fn from(s: core::CallStats) -> Self {
        Self {
            rtt_ms: s.rtt_ms,
            packets_received: s.packets_received,
            packets_lost: s.packets_lost,
            jitter_ms: s.jitter_ms,
            packets_sent: s.packets_sent,
        }
    }
}

/// Something the app should know about.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ClientEvent {
    /// A message arrived and is stored.
    MessageReceived {
        /// The message.
        message: Message,
    },
    /// An outgoing message moved on (sent, delivered or failed).
    MessageStateChanged {
        /// Message id.
        id: String,
        /// New state.
        state: MessageState,
    },
    /// The link changed state.
    ConnectionStateChanged {
        /// The new state.
        state: ConnectionState,
    },
    /// A peer's identity key changed; messages with them wait for `accept_identity`.
    IdentityChanged {
        /// The peer.
        peer: String,
    },
    /// A message from `peer` could not be decrypted; the session was reset.
    DecryptionFailed {
        /// The peer.
        peer: String,
    },
    /// The account connected on another device; this client stopped.
    ConnectedElsewhere,
    /// A call started ringing, connected or ended (every call ends exactly once).
    CallStateChanged {
        /// The call.
        call_id: String,
        /// The other party.
        peer: String,
        /// Who called.
        direction: CallDirection,
        /// The new state.
        state: CallState,
    },
    /// This listener fell behind and `count` events were dropped for it. Everything they
    /// announced is in the store: reload conversations and histories.
    EventsMissed {
        /// How many.
        count: u64,
    },
}

impl From<core::ClientEvent> for ClientEvent {
    fn from(e: core::ClientEvent) -> Self {
        match e {
            core::ClientEvent::MessageReceived(m) => Self::MessageReceived { message: m.into() },
            core::ClientEvent::MessageStateChanged { id, state } => Self::MessageStateChanged {
                id: id.to_string(),
                state: state.into(),
            },
            core::ClientEvent::ConnectionStateChanged(s) => {
                Self::ConnectionStateChanged { state: s.into() }
            }
            core::ClientEvent::IdentityChanged { peer } => Self::IdentityChanged {
                peer: peer.to_string(),
            },
            core::ClientEvent::DecryptionFailed { peer } => Self::DecryptionFailed {
                peer: peer.to_string(),
            },
            core::ClientEvent::ConnectedElsewhere => Self::ConnectedElsewhere,
            core::ClientEvent::CallStateChanged {
                call_id,
                peer,
                direction,
                state,
            } => Self::CallStateChanged {
                call_id: call_id.to_string(),
                peer: peer.to_string(),
                direction: direction.into(),
                state: state.into(),
            },
        }
    }
}
