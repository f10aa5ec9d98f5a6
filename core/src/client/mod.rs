//! The public API: one `Client` per account, cheap to clone, `Send + Sync`.
//!
//! Sending stores the message in the encrypted outbox and returns at once; the connection
//! task (see `connection`) flushes the outbox whenever online and delivers what arrives.
//! Everything observable is announced on the event stream.

mod backoff;
pub(crate) mod connection;
pub mod envelope;
pub mod padding;
pub mod phone;
mod receive;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use privcomm_protocol::Base64String;
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use backoff::{base_delay, JITTER};

use crate::actor::ProtocolHandle;
use crate::call::signal::CallSignal;
use crate::call::{AudioFrame, CallConfig, CallDirection, CallManager, CallState, CallStats};
use crate::clock::{Clock, SystemClock};
use crate::engine::{SafetyNumber, SignalEngine};
use crate::error::{CoreError, CoreResult};
use crate::net::RelayApi;
use crate::secret_store::SecretStore;
use crate::store::dropped::DroppedCounts;
use crate::store::history::{
    new_message_id, Conversation, HistoryCursor, MessageState, StoredMessage,
};
use crate::store::quota::ReceiveQuota;
use crate::store::upkeep::StoreUsage;
use envelope::{Envelope, MAX_PADDED_ENVELOPE_BYTES, MAX_TEXT_BYTES};

/// Most messages one `history` call returns.
pub const MAX_HISTORY_PAGE: u32 = 1000;

/// Where the link to the relay stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected and not trying (before `connect`, after `close`, or replaced).
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

/// Something the app should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A message arrived and is stored.
    MessageReceived(StoredMessage),
    /// An outgoing message moved on (sent, delivered or failed).
    MessageStateChanged {
        /// Message id.
        id: Uuid,
        /// New state.
        state: MessageState,
    },
    /// The link changed state.
    ConnectionStateChanged(ConnectionState),
    /// A peer's identity key changed; messages to and from them wait until the app calls
    /// `accept_identity`.
    IdentityChanged {
        /// The peer.
        peer: Uuid,
    },
    /// A message from `peer` could not be decrypted (and was dropped). After several in a
    /// row the session with them is renewed; one alone changes nothing, since a relay can
    /// make such messages up.
    DecryptionFailed {
        /// The peer.
        peer: Uuid,
    },
    /// The account connected on another device; this client stopped.
    ConnectedElsewhere,
    /// A call started ringing, connected or ended. Every call this device hears of ends
    /// exactly once with a reason, including calls that never rang here (busy, glare).
    CallStateChanged {
        /// The call.
        call_id: Uuid,
        /// The other party.
        peer: Uuid,
        /// Who called.
        direction: CallDirection,
        /// The new state.
        state: CallState,
    },
}

/// Options of `Client::open_with`.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Call settings (checked by `CallConfig::validate` when the client opens).
    pub call: CallConfig,
    /// How much one peer may store on this device per window.
    pub receive_quota: ReceiveQuota,
    /// The clock of the store's upkeep and the receive quotas.
    pub clock: Arc<dyn Clock>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            call: CallConfig::default(),
            receive_quota: ReceiveQuota::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The call in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    /// The call.
    pub call_id: Uuid,
    /// The other party.
    pub peer: Uuid,
    /// Who called.
    pub direction: CallDirection,
    /// Where it stands.
    pub state: CallState,
}

/// State shared by the handles and the connection task.
pub(crate) struct Shared {
    pub protocol: ProtocolHandle,
    pub api: RelayApi,
    pub events: broadcast::Sender<ClientEvent>,
    pub state: watch::Sender<ConnectionState>,
    pub outbox_wake: Notify,
    pub token: Mutex<Option<connection::Token>>,
    pub calls: CallManager,
    pub audio: broadcast::Sender<AudioFrame>,
    pub clock: Arc<dyn Clock>,
    pub receive_quota: ReceiveQuota,
    /// The verification session of the last code requested for each number (E.164): the
    /// registration presents it with the code.
    pub verification_sessions: Mutex<std::collections::HashMap<String, String>>,
}

impl Shared {
    pub fn emit(&self, event: ClientEvent) {
        // No subscribers is fine: the events are also in the store.
        let _ = self.events.send(event);
    }

    pub fn set_state(&self, state: ConnectionState) {
        if *self.state.borrow() != state {
            self.state.send_replace(state.clone());
            self.emit(ClientEvent::ConnectionStateChanged(state));
        }
    }

    /// Queues a call signal for `peer` in the encrypted outbox; returns its outbox id.
    pub async fn send_call_signal(
        &self,
        peer: Uuid,
        call_id: Uuid,
        signal: CallSignal,
    ) -> CoreResult<Uuid> {
        let id = Uuid::new_v4();
        let now = now_ms();
        let envelope = Envelope::Call {
            call_id,
            signal,
            sent_at: now,
        }
        .encode();
        self.protocol
            .call(move |e| {
                e.store()
                    .write(|store| store.enqueue(id, peer, &envelope, None, now))
            })
            .await?;
        self.outbox_wake.notify_one();
        Ok(id)
    }
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Becomes true when the connection task ends, however it ends.
    ended: watch::Receiver<bool>,
}

/// A Privcomm account on this device.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    running: Arc<tokio::sync::Mutex<Option<Running>>>,
}

/// Name of the database file in the data dir.
const DB_FILE: &str = "privcomm.db";
/// Events buffered per subscriber before the slowest one starts missing them.
const EVENT_BUFFER: usize = 4096;
/// Decoded audio frames buffered per subscriber (5 s); a slower player misses frames.
const AUDIO_BUFFER: usize = 250;

pub(crate) fn now_ms() -> i64 {
    crate::clock::system_now_ms()
}

/// `NoAccount` before registration, `UnknownPeer` for a peer never resolved (no session
/// and no contact): the one answer of every call that names a peer.
fn known_peer(engine: &SignalEngine, peer: Uuid) -> CoreResult<()> {
    if !engine.has_account() || engine.user_id()?.is_none() {
        return Err(CoreError::NoAccount);
    }
    if engine
        .store()
        .session(&crate::engine::peer_address(peer))?
        .is_some()
        || engine.store().contact_phone_hash(peer)?.is_some()
    {
        Ok(())
    } else {
        Err(CoreError::UnknownPeer { peer })
    }
}

/// Deletes the account data stored in `data_dir` (the database and its wrapping secret in
/// `secrets`): the way out of `SecretLost`, `MissingKey` and `WrongKey`, after which `open`
/// starts an empty store. Close every client of `data_dir` first. What the relay holds for
/// the account is untouched.
pub async fn delete_local_data(data_dir: PathBuf, secrets: Arc<dyn SecretStore>) -> CoreResult<()> {
    let path = data_dir.join(DB_FILE);
    tokio::task::spawn_blocking(move || crate::store::Store::destroy(&path, secrets.as_ref()))
        .await
        .map_err(|_| CoreError::Closed)?
}

impl Client {
    /// Opens the account stored in `data_dir` (created if needed) for the relay at
    /// `server_url`, with the data key's wrapping secret in `secrets`.
    pub async fn open(
        data_dir: PathBuf,
        server_url: &str,
        secrets: Arc<dyn SecretStore>,
    ) -> CoreResult<Self> {
        Self::open_with(data_dir, server_url, secrets, ClientOptions::default()).await
    }

    /// `open` with options (call settings).
    pub async fn open_with(
        data_dir: PathBuf,
        server_url: &str,
        secrets: Arc<dyn SecretStore>,
        options: ClientOptions,
    ) -> CoreResult<Self> {
        let api = RelayApi::new(server_url)?;
        options.call.validate()?;
        options.receive_quota.validate()?;
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| CoreError::InvalidArgument(format!("data dir: {e}")))?;
        let path = data_dir.join(DB_FILE);
        let protocol = tokio::task::spawn_blocking(move || ProtocolHandle::spawn(path, secrets))
            .await
            .map_err(|_| CoreError::Closed)??;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (state, _) = watch::channel(ConnectionState::Offline);
        let (audio, _) = broadcast::channel(AUDIO_BUFFER);
        Ok(Self {
            shared: Arc::new(Shared {
                protocol,
                api,
                events,
                state,
                outbox_wake: Notify::new(),
                token: Mutex::new(None),
                calls: CallManager::new(options.call),
                audio,
                clock: options.clock,
                receive_quota: options.receive_quota,
                verification_sessions: Mutex::default(),
            }),
            running: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// Has the relay send a verification code to `phone_number` (international form), the
    /// proof `register` needs. This is the one request that carries the number itself: the
    /// relay hands it to its SMS gateway and keeps none of it. Returns the seconds the code
    /// stays valid. `RateLimited` when codes for this number come too often.
    pub async fn request_verification(&self, phone_number: &str) -> CoreResult<u64> {
        let number = phone::normalize(phone_number)?;
        let response = self.shared.api.request_verification(&number, None).await?;
        if let Ok(mut sessions) = self.shared.verification_sessions.lock() {
            sessions.insert(number, response.session);
        }
        Ok(response.expires_in)
    }

    /// Registers `phone_number` (international form) with the relay, creating this device's
    /// keys on first use, with the `code` texted to it (`request_verification`). A number
    /// registered before moves to this device: the old device is signed out, its undelivered
    /// messages are dropped, and contacts see the new identity. If the account has a
    /// registration lock, `pin` unlocks it (else `RegistrationLocked`). Returns the user id;
    /// safe to repeat once registered.
    pub async fn register(
        &self,
        phone_number: &str,
        code: &str,
        pin: Option<&str>,
    ) -> CoreResult<Uuid> {
        let phone_hash = phone::phone_hash(phone_number)?;
        let ph = privcomm_protocol::PhoneHash::parse(&phone_hash)
            .map_err(|e| CoreError::InvalidArgument(e.to_string()))?;
        let existing = self
            .shared
            .protocol
            .call(move |e| {
                if e.has_account() {
                    Ok(Some((e.phone_hash()?, e.user_id()?)))
                } else {
                    e.create_account(&ph, crate::engine::INITIAL_ONE_TIME_PREKEYS)?;
                    Ok(None)
                }
            })
            .await?;
        if let Some((stored, user_id)) = existing {
            if stored != phone_hash {
                return Err(CoreError::AccountExists);
            }
            if let Some(user_id) = user_id {
                return Ok(user_id);
            }
        }
        let lock = pin
            .map(|pin| crate::crypto::pin::lock_token(pin, &phone_hash))
            .transpose()?;
        let nonce = self.shared.api.challenge(&phone_hash).await?;
        let mut request = self
            .shared
            .protocol
            .call(move |e| e.registration_request(&nonce))
            .await?;
        request.verification_code = code.trim().to_owned();
        // Without a session from `request_verification` in this process, the code cannot be
        // presented: the relay answers as for a wrong code, and the app asks for a new one.
        request.verification_session = phone::normalize(phone_number)
            .ok()
            .and_then(|number| {
                self.shared
                    .verification_sessions
                    .lock()
                    .ok()
                    .and_then(|sessions| sessions.get(&number).cloned())
            })
            .unwrap_or_default();
        request.registration_lock = lock.as_ref().map(|t| Base64String::encode(t.as_ref()));
        let user_id = match self.shared.api.register(&request).await {
            Ok(response) => response.user_id,
            // Registered before but the answer was lost (the code is used up by then):
            // logging in proves it is us.
            Err(
                e @ (CoreError::InvalidCode
                | CoreError::CodeExpired
                | CoreError::Relay {
                    code: Some(privcomm_protocol::ErrorCode::AlreadyRegistered),
                    ..
                }),
            ) => match connection::fresh_token(&self.shared).await {
                Ok(token) => token.user_id,
                Err(_) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        self.shared
            .protocol
            .call(move |e| {
                e.set_user_id(user_id)?;
                // Registration uploaded every key held.
                e.store().write(|store| store.mark_prekeys_uploaded(None))
            })
            .await?;
        Ok(user_id)
    }

    /// Sets a registration lock with `pin` (4 to 128 characters): registering this number
    /// on another device then needs the PIN as well as a code, until the account has been
    /// unused for 7 days. Replaces an earlier PIN. The PIN is stretched here (Argon2id);
    /// the relay sees neither it nor anything it could test guesses against without its
    /// own secret.
    pub async fn set_registration_lock(&self, pin: &str) -> CoreResult<()> {
        let phone_hash = self.shared.protocol.call(|e| e.phone_hash()).await?;
        let lock = crate::crypto::pin::lock_token(pin, &phone_hash)?;
        let token = connection::token(&self.shared).await?;
        self.shared
            .api
            .set_registration_lock(&token, lock.as_ref())
            .await
    }

    /// Removes the registration lock.
    pub async fn remove_registration_lock(&self) -> CoreResult<()> {
        let token = connection::token(&self.shared).await?;
        self.shared.api.remove_registration_lock(&token).await
    }

    /// This account's relay user id, once registered (`None` before, also for an empty
    /// store).
    pub async fn user_id(&self) -> CoreResult<Option<Uuid>> {
        self.shared
            .protocol
            .call(|e| {
                if e.has_account() {
                    e.user_id()
                } else {
                    Ok(None)
                }
            })
            .await
    }

    /// Starts the connection (if not running) and waits until it is online. The connection
    /// keeps itself up in the background until `close`, retrying with backoff (1 s doubling
    /// to 30 s). Returns `Network` as soon as the connection task ends without having
    /// connected (stopped by `disconnect`, replaced by another device, or failed); dropping
    /// the returned future does not stop the connection.
    pub async fn connect(&self) -> CoreResult<()> {
        if self.user_id().await?.is_none() {
            return Err(CoreError::NoAccount);
        }
        let mut ended = {
            let mut running = self.running.lock().await;
            match running.as_ref() {
                Some(r) if !r.task.is_finished() && !*r.ended.borrow() => r.ended.clone(),
                _ => {
                    let stop = CancellationToken::new();
                    let (ended_tx, ended) = watch::channel(false);
                    let task =
                        tokio::spawn(connection::run(self.shared.clone(), stop.clone(), ended_tx));
                    *running = Some(Running {
                        stop,
                        task,
                        ended: ended.clone(),
                    });
                    ended
                }
            }
        };
        let mut state = self.shared.state.subscribe();
        loop {
            if *state.borrow_and_update() == ConnectionState::Connected {
                return Ok(());
            }
            // The task says it ended even when it panicked (its guard runs on unwind).
            if *ended.borrow_and_update() {
                return Err(CoreError::Network("the connection stopped".into()));
            }
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        return Err(CoreError::Closed);
                    }
                }
                changed = ended.changed() => {
                    if changed.is_err() {
                        return Err(CoreError::Network("the connection stopped".into()));
                    }
                }
            }
        }
    }

    /// Stops the connection. Queued messages stay in the outbox for the next `connect`.
    pub async fn disconnect(&self) {
        let running = self.running.lock().await.take();
        if let Some(running) = running {
            running.stop.cancel();
            let _ = running.task.await;
        }
        self.shared.set_state(ConnectionState::Offline);
    }

    /// Hangs up any call, disconnects and closes the store. The client is unusable
    /// afterwards.
    pub async fn close(&self) {
        self.shared.calls.shutdown().await;
        self.disconnect().await;
        let _ = self.shared.protocol.close().await;
    }

    /// The link's current state.
    pub fn connection_state(&self) -> ConnectionState {
        self.shared.state.borrow().clone()
    }

    /// A stream of events from now on.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared.events.subscribe()
    }

    /// Finds the user with `phone_number`, sets up a session with them and remembers them as
    /// a contact. Returns their user id (the `peer` of the other calls).
    pub async fn resolve_peer(&self, phone_number: &str) -> CoreResult<Uuid> {
        let phone_hash = phone::phone_hash(phone_number)?;
        let known_hash = phone_hash.clone();
        let known = self
            .shared
            .protocol
            .call(move |e| {
                let Some(peer) = e.store().contact_by_phone_hash(&known_hash)? else {
                    return Ok(None);
                };
                Ok(e.has_session(peer)?.then_some(peer))
            })
            .await?;
        if let Some(peer) = known {
            return Ok(peer);
        }
        let token = connection::token(&self.shared).await?;
        let bundle = self.shared.api.bundle(&token, &phone_hash).await?;
        let peer = bundle.user_id;
        self.shared
            .protocol
            .call(move |e| {
                e.process_bundle(peer, &bundle)?;
                e.store().save_contact(peer, &phone_hash)
            })
            .await?;
        Ok(peer)
    }

    /// Queues `text` (1 to `MAX_TEXT_BYTES` bytes) for `peer` (a resolved contact) and
    /// returns its id at once; it is sent whenever online, and survives restarts until the
    /// relay has it. An unresolved peer is `UnknownPeer`, a blocked one `PeerBlocked`,
    /// before anything is stored.
    pub async fn send_text(&self, peer: Uuid, text: &str) -> CoreResult<Uuid> {
        if text.is_empty() || text.len() > MAX_TEXT_BYTES {
            return Err(CoreError::InvalidArgument(format!(
                "text must be 1 to {MAX_TEXT_BYTES} bytes"
            )));
        }
        let id = new_message_id();
        let now = now_ms();
        let message = StoredMessage {
            id,
            peer,
            outgoing: true,
            body: text.to_owned(),
            sent_at: now,
            state: MessageState::Queued,
        };
        let envelope = Envelope::Text {
            id,
            body: text.to_owned(),
            sent_at: now,
        }
        .encode();
        // JSON escapes can grow a text of control characters sixfold.
        if padding::padded_len(envelope.len().saturating_add(1)) > MAX_PADDED_ENVELOPE_BYTES {
            return Err(CoreError::InvalidArgument(
                "text is too long once encoded (control characters count six bytes)".into(),
            ));
        }
        // The relay sees the outbox id, never the message id inside the ciphertext.
        let outbox_id = Uuid::new_v4();
        self.shared
            .protocol
            .call(move |e| {
                known_peer(e, peer)?;
                if e.store().is_blocked(peer)? {
                    return Err(CoreError::PeerBlocked { peer });
                }
                e.store().write(|store| {
                    store.save_message(&message)?;
                    store.enqueue(outbox_id, peer, &envelope, Some(id), now)
                })
            })
            .await?;
        self.shared.outbox_wake.notify_one();
        Ok(id)
    }

    /// Conversations, most recent first.
    pub async fn conversations(&self) -> CoreResult<Vec<Conversation>> {
        self.shared
            .protocol
            .call(|e| e.store().conversations())
            .await
    }

    /// Messages with `peer`, newest first (in send order within a millisecond), at most
    /// `limit` (1 to `MAX_HISTORY_PAGE`); pass the last one's cursor to page back.
    pub async fn history(
        &self,
        peer: Uuid,
        before: Option<HistoryCursor>,
        limit: u32,
    ) -> CoreResult<Vec<StoredMessage>> {
        if limit == 0 || limit > MAX_HISTORY_PAGE {
            return Err(CoreError::InvalidArgument(format!(
                "limit must be 1 to {MAX_HISTORY_PAGE}"
            )));
        }
        self.shared
            .protocol
            .call(move |e| e.store().messages(peer, before, limit as usize))
            .await
    }

    /// One message by id.
    pub async fn message(&self, id: Uuid) -> CoreResult<Option<StoredMessage>> {
        self.shared
            .protocol
            .call(move |e| e.store().message(id))
            .await
    }

    /// The safety number with `peer` (`UnknownPeer` before `resolve_peer`).
    pub async fn safety_number(&self, peer: Uuid) -> CoreResult<SafetyNumber> {
        self.shared
            .protocol
            .call(move |e| {
                known_peer(e, peer)?;
                e.safety_number(peer)
            })
            .await
    }

    /// Checks the peer's scanned safety-number code; marks them verified on a match
    /// (`UnknownPeer` before `resolve_peer`).
    pub async fn verify_peer(&self, peer: Uuid, scanned: Vec<u8>) -> CoreResult<bool> {
        self.shared
            .protocol
            .call(move |e| {
                known_peer(e, peer)?;
                e.verify_scanned(peer, &scanned)
            })
            .await
    }

    /// Blocks `peer`: their messages, receipts and calls are acked and dropped unread (and
    /// counted in `dropped_messages`), and sending to them is `PeerBlocked`. False if they
    /// were blocked already.
    pub async fn block_peer(&self, peer: Uuid) -> CoreResult<bool> {
        self.shared
            .protocol
            .call(move |e| e.store().write(|store| store.block_peer(peer)))
            .await
    }

    /// Unblocks `peer`; what they sent while blocked stays dropped. False if they were not
    /// blocked.
    pub async fn unblock_peer(&self, peer: Uuid) -> CoreResult<bool> {
        self.shared
            .protocol
            .call(move |e| e.store().write(|store| store.unblock_peer(peer)))
            .await
    }

    /// Every blocked peer.
    pub async fn blocked_peers(&self) -> CoreResult<Vec<Uuid>> {
        self.shared
            .protocol
            .call(|e| e.store().blocked_peers())
            .await
    }

    /// Incoming messages dropped since the store was created, by reason (forged ids,
    /// blocked senders, over quota, malformed, undecryptable).
    pub async fn dropped_messages(&self) -> CoreResult<DroppedCounts> {
        self.shared
            .protocol
            .call(|e| e.store().dropped_counts())
            .await
    }

    /// Row counts of what the store holds.
    pub async fn storage_usage(&self) -> CoreResult<StoreUsage> {
        self.shared.protocol.call(|e| e.store().usage()).await
    }

    /// Accepts `peer`'s new identity key. Held messages from them arrive on the next
    /// connection; queued messages to them are sent.
    pub async fn accept_identity(&self, peer: Uuid) -> CoreResult<()> {
        self.shared
            .protocol
            .call(move |e| e.accept_identity(peer))
            .await?;
        self.shared.outbox_wake.notify_one();
        Ok(())
    }

    /// Messages still waiting for the relay.
    pub async fn outbox_len(&self) -> CoreResult<u64> {
        self.shared.protocol.call(|e| e.store().outbox_len()).await
    }

    /// Calls `peer` (a resolved contact). Needs a live connection to the relay. Returns the
    /// call id; progress arrives as `ClientEvent::CallStateChanged`.
    pub async fn start_call(&self, peer: Uuid) -> CoreResult<Uuid> {
        if self.connection_state() != ConnectionState::Connected {
            return Err(CoreError::NotConnected);
        }
        self.shared
            .protocol
            .call(move |e| known_peer(e, peer))
            .await?;
        self.shared.calls.start(&self.shared, peer).await
    }

    /// Answers the incoming call `call_id`.
    pub fn accept_call(&self, call_id: Uuid) -> CoreResult<()> {
        self.shared.calls.accept(call_id)
    }

    /// Declines the incoming call `call_id`.
    pub fn decline_call(&self, call_id: Uuid) -> CoreResult<()> {
        self.shared.calls.decline(call_id)
    }

    /// Ends the call `call_id` in whatever state it is (declining it if it rings here).
    pub fn hang_up(&self, call_id: Uuid) -> CoreResult<()> {
        self.shared.calls.hang_up(call_id)
    }

    /// Mutes or unmutes the microphone of the call.
    pub fn set_muted(&self, call_id: Uuid, muted: bool) -> CoreResult<()> {
        self.shared.calls.set_muted(call_id, muted)
    }

    /// Feeds one 20 ms frame of 48 kHz mono PCM (`call::FRAME_SAMPLES` samples) from the
    /// microphone. Never blocks; frames pushed before the call connects are dropped.
    pub fn push_audio_frame(&self, call_id: Uuid, samples: &[i16]) -> CoreResult<()> {
        self.shared.calls.push_audio(call_id, samples)
    }

    /// Decoded frames of the peer's voice, from now on.
    pub fn audio_frames(&self) -> broadcast::Receiver<AudioFrame> {
        self.shared.audio.subscribe()
    }

    /// Round-trip time, loss and jitter of the call's media link.
    pub async fn call_stats(&self, call_id: Uuid) -> CoreResult<CallStats> {
        self.shared.calls.stats(call_id).await
    }

    /// The call in progress, if any.
    pub fn current_call(&self) -> Option<CallInfo> {
        self.shared
            .calls
            .current()
            .map(|(call_id, peer, direction, state)| CallInfo {
                call_id,
                peer,
                direction,
                state,
            })
    }
}
