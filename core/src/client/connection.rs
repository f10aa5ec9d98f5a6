//! The connection task: authenticate, hold the WebSocket, flush the outbox, take deliveries,
//! and reconnect with backoff until stopped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use privcomm_protocol::limits::CLOSE_CONNECTED_ELSEWHERE;
use privcomm_protocol::rest::TokenResponse;
use privcomm_protocol::ws::{ClientFrame, ServerFrame};
use privcomm_protocol::{Base64String, ErrorCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::envelope::Envelope;
use super::{backoff, now_ms, ClientEvent, ConnectionState, Shared};
use crate::error::{CoreError, CoreResult};
use crate::net::{RelaySocket, SocketEvent};
use crate::store::history::{MessageState, StoredMessage};

/// A connection that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often we ping; three silent intervals mean the link is dead.
const PING_EVERY: Duration = Duration::from_secs(25);
/// Renew the token this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Outbox entries written to the socket before waiting for `sent`.
const MAX_IN_FLIGHT: usize = 64;
/// Below this many one-time prekeys at the relay, upload more.
const PREKEY_LOW_WATER: u64 = 25;
/// Top the relay's one-time prekeys up to this many.
const PREKEY_TARGET: u64 = 100;
/// Signed prekeys are replaced after this long.
const SIGNED_PREKEY_MAX_AGE_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// A bearer token and when to renew it.
pub(crate) struct Token {
    value: String,
    renew_at: Instant,
}

/// A fresh token (challenge, sign, exchange), cached for later calls.
pub(crate) async fn fresh_token(shared: &Shared) -> CoreResult<TokenResponse> {
    let phone_hash = shared.protocol.call(|e| e.phone_hash()).await?;
    let nonce = shared.api.challenge(&phone_hash).await?;
    let request = shared
        .protocol
        .call(move |e| e.token_request(&nonce))
        .await?;
    let response = shared.api.token(&request).await?;
    let lifetime = Duration::from_secs(response.expires_in);
    let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE);
    if let Ok(mut slot) = shared.token.lock() {
        *slot = Some(Token {
            value: response.token.clone(),
            renew_at,
        });
    }
    // Fills in the user id if registration's answer was lost.
    let user_id = response.user_id;
    shared
        .protocol
        .call(move |e| match e.user_id()? {
            None => e.set_user_id(user_id),
            Some(_) => Ok(()),
        })
        .await?;
    Ok(response)
}

/// The cached token, renewed when due.
pub(crate) async fn token(shared: &Shared) -> CoreResult<String> {
    let cached = shared.token.lock().ok().and_then(|slot| {
        slot.as_ref()
            .filter(|t| Instant::now() < t.renew_at)
            .map(|t| t.value.clone())
    });
    match cached {
        Some(value) => Ok(value),
        None => Ok(fresh_token(shared).await?.token),
    }
}

fn renew_at(shared: &Shared) -> Instant {
    shared
        .token
        .lock()
        .ok()
        .and_then(|slot| slot.as_ref().map(|t| t.renew_at))
        .unwrap_or_else(Instant::now)
}

/// How a connected session ended.
enum Ended {
    Stopped,
    Dropped,
    Replaced,
}

/// Runs until `stop` is cancelled (or the account connects elsewhere).
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut attempt: u32 = 0;
    shared.set_state(ConnectionState::Connecting);
    loop {
        if stop.is_cancelled() {
            break;
        }
        let connected = tokio::select! {
            _ = stop.cancelled() => break,
            result = connect(&shared) => result,
        };
        match connected {
            Ok(socket) => {
                if let Err(e) = maintain_prekeys(&shared).await {
                    tracing::info!(error = %e, "prekey upkeep failed; will retry on the next connection");
                }
                shared.set_state(ConnectionState::Connected);
                let started = Instant::now();
                let ended = Session::new(&shared).serve(socket, &stop).await;
                if started.elapsed() >= STABLE_AFTER {
                    attempt = 0;
                }
                match ended {
                    Ended::Stopped => break,
                    Ended::Replaced => {
                        shared.emit(ClientEvent::ConnectedElsewhere);
                        break;
                    }
                    Ended::Dropped => {}
                }
            }
            Err(e) => tracing::info!(error = %e, "connecting to the relay failed"),
        }
        attempt = attempt.saturating_add(1);
        let wait = backoff::delay(attempt);
        shared.set_state(ConnectionState::Reconnecting {
            attempt,
            in_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        });
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    shared.set_state(ConnectionState::Offline);
}

/// Keeps the relay stocked: one-time prekeys topped up when low, the signed prekey replaced
/// when old. Old signed prekeys stay on the device for sessions already under way.
async fn maintain_prekeys(shared: &Shared) -> CoreResult<()> {
    let token = token(shared).await?;
    let count = shared.api.prekey_count(&token).await?;
    let rotate =
        shared.protocol.call(|e| e.signed_prekey_age_ms()).await? > SIGNED_PREKEY_MAX_AGE_MS;
    if count >= PREKEY_LOW_WATER && !rotate {
        return Ok(());
    }
    let missing = if count < PREKEY_LOW_WATER {
        PREKEY_TARGET - count
    } else {
        0
    };
    let upload = shared
        .protocol
        .call(move |e| {
            Ok(privcomm_protocol::rest::PreKeyUploadRequest {
                signed_prekey: if rotate {
                    Some(e.rotate_signed_prekey()?)
                } else {
                    None
                },
                kyber_prekey: None,
                one_time_prekeys: e
                    .generate_one_time_prekeys(u32::try_from(missing).unwrap_or(0))?,
            })
        })
        .await?;
    let now = shared.api.upload_prekeys(&token, &upload).await?;
    tracing::info!(
        uploaded = missing,
        held_by_relay = now,
        rotated = rotate,
        "prekeys topped up"
    );
    Ok(())
}

async fn connect(shared: &Shared) -> CoreResult<RelaySocket> {
    let token = token(shared).await?;
    match RelaySocket::connect(&shared.api.ws_url(), &token).await {
        // A token refused at the door (relay restarted with a new secret): start over.
        Err(CoreError::Relay { status: 401, .. }) => {
            let token = fresh_token(shared).await?.token;
            RelaySocket::connect(&shared.api.ws_url(), &token).await
        }
        other => other,
    }
}

/// Outcome of the first step of `encrypt_for`.
enum Prepared {
    /// A session existed; here is the payload.
    Encrypted(Vec<u8>),
    /// No session: fetch this phone hash's bundle, then encrypt the returned envelope.
    NeedsBundle {
        phone_hash: String,
        envelope: Vec<u8>,
    },
}

/// What became of one delivered message.
enum Received {
    AlreadyProcessed,
    Text(StoredMessage),
    Receipt(Vec<Uuid>),
    Call {
        call_id: Uuid,
        signal: crate::call::signal::CallSignal,
        sent_at: i64,
    },
    Unreadable,
}

struct Session<'a> {
    shared: &'a Arc<Shared>,
    in_flight: HashSet<Uuid>,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Arc<Shared>) -> Self {
        Self {
            shared,
            in_flight: HashSet::new(),
        }
    }

    async fn serve(mut self, mut socket: RelaySocket, stop: &CancellationToken) -> Ended {
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        let mut last_heard = Instant::now();
        if self.flush(&mut socket).await.is_err() {
            return Ended::Dropped;
        }
        loop {
            let renew = renew_at(self.shared);
            let step = tokio::select! {
                _ = stop.cancelled() => {
                    socket.close().await;
                    return Ended::Stopped;
                }
                event = socket.next() => {
                    last_heard = Instant::now();
                    match event {
                        Ok(SocketEvent::Frame(frame)) => self.on_frame(&mut socket, frame).await,
                        Ok(SocketEvent::Heartbeat) => Ok(()),
                        Ok(SocketEvent::Malformed(reason)) => {
                            tracing::warn!(reason, "ignoring a malformed frame from the relay");
                            Ok(())
                        }
                        Ok(SocketEvent::Closed(Some(CLOSE_CONNECTED_ELSEWHERE))) => return Ended::Replaced,
                        Ok(SocketEvent::Closed(_)) | Err(_) => return Ended::Dropped,
                    }
                }
                _ = self.shared.outbox_wake.notified() => self.flush(&mut socket).await,
                _ = ping.tick() => {
                    if last_heard.elapsed() > PING_EVERY * 3 {
                        return Ended::Dropped;
                    }
                    socket.ping().await
                }
                _ = tokio::time::sleep_until(renew) => {
                    // Renewing needs no new connection: the relay checks tokens at connect.
                    if let Err(e) = fresh_token(self.shared).await {
                        tracing::info!(error = %e, "token renewal failed; retrying later");
                        if let Ok(mut slot) = self.shared.token.lock() {
                            if let Some(t) = slot.as_mut() {
                                t.renew_at = Instant::now() + Duration::from_secs(30);
                            }
                        }
                    }
                    Ok(())
                }
            };
            if let Err(e) = step {
                tracing::info!(error = %e, "dropping the connection");
                return Ended::Dropped;
            }
        }
    }

    async fn on_frame(&mut self, socket: &mut RelaySocket, frame: ServerFrame) -> CoreResult<()> {
        match frame {
            ServerFrame::EncryptedMessage {
                id,
                sender,
                payload,
                ..
            } => self.on_delivery(socket, id, sender, payload).await,
            ServerFrame::Sent { id, .. } => {
                if !self.in_flight.remove(&id) {
                    return Ok(());
                }
                self.settle(id, MessageState::Sent).await?;
                if self.in_flight.len() < MAX_IN_FLIGHT / 2 {
                    self.flush(socket).await?;
                }
                Ok(())
            }
            ServerFrame::Error {
                code,
                message,
                id: Some(id),
            } if self.in_flight.remove(&id) => {
                let permanent = matches!(
                    code,
                    ErrorCode::NotFound
                        | ErrorCode::PayloadTooLarge
                        | ErrorCode::InvalidRequest
                        | ErrorCode::InvalidBase64
                );
                tracing::warn!(%code, message, permanent, "the relay refused a message");
                if permanent {
                    self.settle(id, MessageState::Failed).await?;
                }
                Ok(())
            }
            ServerFrame::Error { code, message, .. } => {
                tracing::warn!(%code, message, "relay error");
                Ok(())
            }
            ServerFrame::QueueEmpty => Ok(()),
        }
    }

    /// Takes a message out of the outbox in its final relay state (sent or failed) and
    /// tells the app.
    async fn settle(&self, id: Uuid, state: MessageState) -> CoreResult<()> {
        let updated = self
            .shared
            .protocol
            .call(move |e| {
                e.store().write(|store| {
                    store.dequeue(id)?;
                    store.set_message_state(id, state)
                })
            })
            .await?;
        if updated {
            self.shared
                .emit(ClientEvent::MessageStateChanged { id, state });
        }
        Ok(())
    }

    /// Decrypts and stores a delivery, then acks it — only once it is stored, so a crash in
    /// between means redelivery, never loss.
    async fn on_delivery(
        &mut self,
        socket: &mut RelaySocket,
        id: Uuid,
        sender: Uuid,
        payload: Base64String,
    ) -> CoreResult<()> {
        let Ok(bytes) = payload.decode("payload") else {
            self.shared
                .emit(ClientEvent::DecryptionFailed { peer: sender });
            return socket.send(&ClientFrame::Ack { id }).await;
        };
        let received = self
            .shared
            .protocol
            .call(move |e| {
                if e.store().is_processed(id)? {
                    return Ok(Received::AlreadyProcessed);
                }
                e.decrypt_with(sender, &bytes, |store, plain| {
                    store.mark_processed(id, now_ms())?;
                    match Envelope::decode(plain) {
                        Ok(Envelope::Text {
                            id: message_id,
                            body,
                            sent_at,
                        }) => {
                            let message = StoredMessage {
                                id: message_id,
                                peer: sender,
                                outgoing: false,
                                body,
                                sent_at,
                                state: MessageState::Received,
                            };
                            store.save_message(&message)?;
                            let receipt = Envelope::Receipt {
                                ids: vec![message_id],
                            }
                            .encode();
                            store.enqueue(Uuid::new_v4(), sender, &receipt, now_ms())?;
                            Ok(Received::Text(message))
                        }
                        Ok(Envelope::Receipt { ids }) => {
                            let mut delivered = Vec::new();
                            for message_id in ids {
                                let ours = store
                                    .message(message_id)?
                                    .is_some_and(|m| m.outgoing && m.peer == sender);
                                if ours
                                    && store
                                        .set_message_state(message_id, MessageState::Delivered)?
                                {
                                    delivered.push(message_id);
                                }
                            }
                            Ok(Received::Receipt(delivered))
                        }
                        // Calls are live: nothing to store, the call manager takes it.
                        Ok(Envelope::Call {
                            call_id,
                            signal,
                            sent_at,
                        }) => Ok(Received::Call {
                            call_id,
                            signal,
                            sent_at,
                        }),
                        // Decrypted but meaningless: keep the session advance, drop the content.
                        Err(_) => Ok(Received::Unreadable),
                    }
                })
            })
            .await;
        let mut call_signal = None;
        let ack = match received {
            Ok(Received::AlreadyProcessed) | Ok(Received::Unreadable) => true,
            Ok(Received::Call {
                call_id,
                signal,
                sent_at,
            }) => {
                call_signal = Some((call_id, signal, sent_at));
                true
            }
            Ok(Received::Text(message)) => {
                self.shared.emit(ClientEvent::MessageReceived(message));
                self.shared.outbox_wake.notify_one();
                true
            }
            Ok(Received::Receipt(ids)) => {
                for id in ids {
                    self.shared.emit(ClientEvent::MessageStateChanged {
                        id,
                        state: MessageState::Delivered,
                    });
                }
                true
            }
            Err(CoreError::DuplicateMessage) => true,
            Err(CoreError::IdentityChanged { peer }) => {
                // Held at the relay until the app accepts the new key.
                self.shared.emit(ClientEvent::IdentityChanged { peer });
                false
            }
            Err(
                CoreError::InvalidMessage(_)
                | CoreError::NoSession { .. }
                | CoreError::InvalidBundle(_),
            ) => {
                let reset = self
                    .shared
                    .protocol
                    .call(move |e| e.reset_session(sender))
                    .await;
                if let Err(e) = reset {
                    tracing::warn!(error = %e, "session reset failed");
                }
                self.shared
                    .emit(ClientEvent::DecryptionFailed { peer: sender });
                true
            }
            // Storage trouble: do not ack; the relay delivers again later.
            Err(e) => return Err(e),
        };
        if ack {
            socket.send(&ClientFrame::Ack { id }).await?;
        }
        if let Some((call_id, signal, sent_at)) = call_signal {
            self.shared
                .calls
                .on_signal(self.shared, sender, call_id, signal, sent_at);
        }
        Ok(())
    }

    /// Writes queued messages, oldest first, keeping each peer's order: once one message to
    /// a peer cannot go, later ones to that peer wait too.
    async fn flush(&mut self, socket: &mut RelaySocket) -> CoreResult<()> {
        let room = MAX_IN_FLIGHT.saturating_sub(self.in_flight.len());
        if room == 0 {
            return Ok(());
        }
        let entries = self
            .shared
            .protocol
            .call(|e| e.store().outbox(MAX_IN_FLIGHT * 2))
            .await?;
        let mut blocked: HashSet<Uuid> = HashSet::new();
        let mut written = 0;
        for entry in entries {
            if written == room {
                break;
            }
            if self.in_flight.contains(&entry.id) {
                continue;
            }
            if blocked.contains(&entry.peer) {
                continue;
            }
            match self.encrypt_for(entry.peer, entry.envelope).await {
                Ok(payload) => {
                    socket
                        .feed(&ClientFrame::Send {
                            to: entry.peer,
                            id: entry.id,
                            payload: Base64String::encode(payload),
                        })
                        .await?;
                    self.in_flight.insert(entry.id);
                    written += 1;
                }
                Err(CoreError::IdentityChanged { peer }) => {
                    self.shared.emit(ClientEvent::IdentityChanged { peer });
                    blocked.insert(entry.peer);
                }
                Err(CoreError::UnknownPeer { .. }) | Err(CoreError::Relay { status: 404, .. }) => {
                    self.settle(entry.id, MessageState::Failed).await?;
                }
                Err(e @ (CoreError::Network(_) | CoreError::Relay { .. })) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encrypt a queued message yet");
                    blocked.insert(entry.peer);
                }
            }
        }
        if written > 0 {
            socket.flush().await?;
        }
        Ok(())
    }

    /// Encrypts `envelope` for `peer`, starting a session from a fresh bundle first if there
    /// is none. The common case (a session exists) is one trip to the protocol actor.
    async fn encrypt_for(&self, peer: Uuid, envelope: Vec<u8>) -> CoreResult<Vec<u8>> {
        let prepared = self
            .shared
            .protocol
            .call(move |e| {
                if e.has_session(peer)? {
                    return Ok(Prepared::Encrypted(e.encrypt(peer, &envelope)?));
                }
                let phone_hash = e
                    .store()
                    .contact_phone_hash(peer)?
                    .ok_or(CoreError::UnknownPeer { peer })?;
                Ok(Prepared::NeedsBundle {
                    phone_hash,
                    envelope,
                })
            })
            .await?;
        let (phone_hash, envelope) = match prepared {
            Prepared::Encrypted(payload) => return Ok(payload),
            Prepared::NeedsBundle {
                phone_hash,
                envelope,
            } => (phone_hash, envelope),
        };
        let token = token(self.shared).await?;
        let bundle = self.shared.api.bundle(&token, &phone_hash).await?;
        self.shared
            .protocol
            .call(move |e| {
                e.process_bundle(peer, &bundle)?;
                e.encrypt(peer, &envelope)
            })
            .await
    }
}
