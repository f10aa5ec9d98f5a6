//! The connection task: authenticate, hold the WebSocket, flush the outbox, take deliveries,
//! and reconnect with backoff until stopped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use privcomm_protocol::limits::CLOSE_CONNECTED_ELSEWHERE;
use privcomm_protocol::rest::TokenResponse;
use privcomm_protocol::ws::{ClientFrame, ServerFrame};
use privcomm_protocol::{Base64String, ErrorCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::receive::{self, Incoming, ReceiveRules, Received};
use super::{backoff, padding, ClientEvent, ConnectionState, Shared};
use crate::error::{CoreError, CoreResult};
use crate::net::{RelaySocket, SocketEvent};
use crate::store::history::MessageState;
use crate::store::outbox::OutboxEntry;

/// A connection that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often we ping; three silent intervals mean the link is dead.
const PING_EVERY: Duration = Duration::from_secs(25);
/// Renew the token this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The token lifetime the relay states is taken within these bounds: a relay that says
/// 0 s gets no renewal storm, one that says `u64::MAX` no overflow (the relay's own
/// tokens last `TOKEN_TTL_SECS`, 30 minutes).
const MIN_TOKEN_RENEWAL: Duration = Duration::from_secs(30);
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// How often the store's upkeep runs while connected (it also runs on each connect).
const UPKEEP_EVERY: Duration = Duration::from_secs(6 * 60 * 60);
/// Outbox entries written to the socket before waiting for `sent`.
const MAX_IN_FLIGHT: usize = 64;
// Between a message's store and its resend, each connection stores at most its sends in
// flight (older refused ones retried first, newer ones after); the relay remembers a
// sender's last RESEND_WINDOW, so a resend is recognised across many dropped connections.
const _: () = assert!(
    16 * MAX_IN_FLIGHT <= privcomm_protocol::limits::RESEND_WINDOW as usize,
    "the relay's resend window must cover many connections' sends in flight"
);
/// Below this many one-time prekeys at the relay, upload more.
const PREKEY_LOW_WATER: u64 = 25;
/// Top the relay's one-time prekeys up to this many.
const PREKEY_TARGET: u64 = 100;
/// Signed prekeys are replaced after this long.
const SIGNED_PREKEY_MAX_AGE_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Most deliveries taken in one batch (one actor trip, usually one transaction): the
/// relay's backlog page, so a flushing backlog goes a page at a time.
const MAX_BATCH: usize = 128;

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
    let renew_at = renewal_time(Instant::now(), response.expires_in);
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

/// When to renew a token the relay says lasts `expires_in` seconds, issued at `now`:
/// `RENEW_BEFORE` ahead of its end, within `MIN_TOKEN_RENEWAL` and `MAX_TOKEN_LIFETIME`.
fn renewal_time(now: Instant, expires_in: u64) -> Instant {
    let lifetime = Duration::from_secs(expires_in).min(MAX_TOKEN_LIFETIME);
    let wait = lifetime.saturating_sub(RENEW_BEFORE).max(MIN_TOKEN_RENEWAL);
    now.checked_add(wait).unwrap_or(now)
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

/// Says the connection task ended when dropped: also when it panics, so that `connect`
/// never waits for a task that is gone.
struct EndedGuard(tokio::sync::watch::Sender<bool>);

impl Drop for EndedGuard {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Runs until `stop` is cancelled (or the account connects elsewhere); `ended` becomes
/// true when it returns (or unwinds).
pub(crate) async fn run(
    shared: Arc<Shared>,
    stop: CancellationToken,
    ended: tokio::sync::watch::Sender<bool>,
) {
    let _ended = EndedGuard(ended);
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
                upkeep(&shared).await;
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
    let now = shared.clock.now_ms();
    let (rotate, unconfirmed) = shared
        .protocol
        .call(move |e| {
            // The relay holds the newest `count` of the uploads it confirmed; older keys
            // are claimed and expire after a grace period.
            e.store()
                .write(|store| store.mark_stale_prekeys(count, now))?;
            Ok((
                e.signed_prekey_age_ms()? > SIGNED_PREKEY_MAX_AGE_MS,
                e.unconfirmed_one_time_prekeys()?,
            ))
        })
        .await?;
    if count >= PREKEY_LOW_WATER && !rotate && unconfirmed.is_empty() {
        return Ok(());
    }
    // Keys of an upload the relay did not confirm go again (the relay ignores ids it has)
    // before new ones are made, so failing uploads never pile keys up.
    let missing = if count < PREKEY_LOW_WATER {
        PREKEY_TARGET
            .saturating_sub(count)
            .saturating_sub(unconfirmed.len() as u64)
    } else {
        0
    };
    let upload = shared
        .protocol
        .call(move |e| {
            let mut one_time_prekeys = unconfirmed;
            one_time_prekeys
                .extend(e.generate_one_time_prekeys(u32::try_from(missing).unwrap_or(0))?);
            Ok(privcomm_protocol::rest::PreKeyUploadRequest {
                signed_prekey: if rotate {
                    Some(e.rotate_signed_prekey()?)
                } else {
                    None
                },
                kyber_prekey: None,
                one_time_prekeys,
            })
        })
        .await?;
    let uploaded: Vec<u32> = upload.one_time_prekeys.iter().map(|k| k.key_id).collect();
    let held = shared.api.upload_prekeys(&token, &upload).await?;
    shared
        .protocol
        .call(move |e| {
            e.store()
                .write(|store| store.mark_prekeys_uploaded(Some(&uploaded)))
        })
        .await?;
    tracing::info!(
        uploaded = missing,
        held_by_relay = held,
        rotated = rotate,
        "prekeys topped up"
    );
    Ok(())
}

/// Deletes what the device no longer needs (processed ids, ended quota windows, expired
/// prekeys). A failure is logged; the next run tries again.
async fn upkeep(shared: &Shared) {
    let now = shared.clock.now_ms();
    let quota = shared.receive_quota;
    match shared.protocol.call(move |e| e.upkeep(now, &quota)).await {
        Ok(done) => tracing::debug!(
            processed_ids = done.processed_ids,
            quota_windows = done.quota_windows,
            one_time_prekeys = done.one_time_prekeys,
            "store upkeep"
        ),
        Err(e) => tracing::warn!(error = %e, "store upkeep failed"),
    }
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

/// Outcome of the first step of `encrypt_run`.
enum Prepared {
    /// A session existed; here are the payloads, in order, and the peer's registration id.
    Encrypted(Vec<Vec<u8>>, Option<u32>),
    /// No session: fetch this phone hash's bundle, then encrypt the returned envelopes.
    NeedsBundle {
        phone_hash: String,
        envelopes: Vec<zeroize::Zeroizing<Vec<u8>>>,
    },
}

/// An `encrypted_message` frame as it came.
struct Delivery {
    id: Uuid,
    sender: Uuid,
    payload: Base64String,
}

/// What was waiting on the socket behind a delivery.
struct Gathered {
    /// Deliveries, in arrival order.
    deliveries: Vec<Delivery>,
    /// The first other frame met, where gathering stopped; handled after the deliveries.
    then: Option<ServerFrame>,
    /// The link ended behind these frames.
    ending: Option<Ended>,
}

/// Takes the deliveries already waiting on the socket behind `first`, without waiting for
/// more: a backlog flushing from the relay is then handled a page at a time, with one
/// transaction and one socket flush of acks instead of one each per message.
///
/// Gathering stops at the first other frame, so frames are still handled in the order they
/// came: a `sent` handled after the receipt that followed it would turn `Delivered` back
/// into `Sent`.
fn gather(socket: &mut RelaySocket, first: Delivery) -> Gathered {
    let mut gathered = Gathered {
        deliveries: vec![first],
        then: None,
        ending: None,
    };
    // Heartbeats and malformed frames are skipped, so bound them too.
    let mut taken = 1;
    while gathered.deliveries.len() < MAX_BATCH && taken < 2 * MAX_BATCH {
        let Some(event) = socket.try_next() else {
            break;
        };
        taken += 1;
        match event {
            Ok(SocketEvent::Frame(ServerFrame::EncryptedMessage {
                id,
                sender,
                payload,
                ..
            })) => gathered.deliveries.push(Delivery {
                id,
                sender,
                payload,
            }),
            Ok(SocketEvent::Frame(frame)) => {
                gathered.then = Some(frame);
                break;
            }
            Ok(SocketEvent::Heartbeat) => {}
            Ok(SocketEvent::Malformed(reason)) => {
                tracing::warn!(reason, "ignoring a malformed frame from the relay");
            }
            Ok(SocketEvent::Closed(Some(CLOSE_CONNECTED_ELSEWHERE))) => {
                gathered.ending = Some(Ended::Replaced);
                break;
            }
            Ok(SocketEvent::Closed(_)) | Err(_) => {
                gathered.ending = Some(Ended::Dropped);
                break;
            }
        }
    }
    gathered
}

/// Writes the acks collected so far with one socket flush.
async fn send_acks(socket: &mut RelaySocket, acks: &mut Vec<Uuid>) -> CoreResult<()> {
    if acks.is_empty() {
        return Ok(());
    }
    for id in acks.drain(..) {
        socket.feed(&ClientFrame::Ack { id }).await?;
    }
    socket.flush().await
}

struct Session<'a> {
    shared: &'a Arc<Shared>,
    /// Outbox entries written and not yet answered: their peer and the message each carries.
    in_flight: HashMap<Uuid, InFlight>,
}

/// An outbox entry written to the relay and not yet answered.
#[derive(Clone, Copy)]
struct InFlight {
    peer: Uuid,
    message: Option<Uuid>,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Arc<Shared>) -> Self {
        Self {
            shared,
            in_flight: HashMap::new(),
        }
    }

    async fn serve(mut self, mut socket: RelaySocket, stop: &CancellationToken) -> Ended {
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        let mut upkeep_timer =
            tokio::time::interval_at(Instant::now() + UPKEEP_EVERY, UPKEEP_EVERY);
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
                        Ok(SocketEvent::Frame(ServerFrame::EncryptedMessage {
                            id,
                            sender,
                            payload,
                            ..
                        })) => {
                            let first = Delivery { id, sender, payload };
                            let Gathered { deliveries, then, ending } = gather(&mut socket, first);
                            let handled = self.on_gathered(&mut socket, deliveries, then).await;
                            if let Some(ended) = ending {
                                // What came before the close is handled; acking it may fail.
                                if let Err(e) = handled {
                                    tracing::info!(error = %e, "the link ended mid-batch");
                                }
                                return ended;
                            }
                            handled
                        }
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
                _ = upkeep_timer.tick() => {
                    upkeep(self.shared).await;
                    Ok(())
                }
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
                                t.renew_at = renewal_time(Instant::now(), 0);
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

    /// Handles gathered deliveries as one batch, then the frame that ended the gathering.
    async fn on_gathered(
        &mut self,
        socket: &mut RelaySocket,
        deliveries: Vec<Delivery>,
        then: Option<ServerFrame>,
    ) -> CoreResult<()> {
        self.on_deliveries(socket, deliveries).await?;
        match then {
            Some(frame) => self.on_frame(socket, frame).await,
            None => Ok(()),
        }
    }

    async fn on_frame(&mut self, socket: &mut RelaySocket, frame: ServerFrame) -> CoreResult<()> {
        match frame {
            ServerFrame::EncryptedMessage {
                id,
                sender,
                payload,
                ..
            } => {
                self.on_deliveries(
                    socket,
                    vec![Delivery {
                        id,
                        sender,
                        payload,
                    }],
                )
                .await
            }
            ServerFrame::Sent { id, .. } => {
                let Some(sent) = self.in_flight.remove(&id) else {
                    return Ok(());
                };
                self.settle(id, sent.message, MessageState::Sent).await?;
                if self.in_flight.len() < MAX_IN_FLIGHT / 2 {
                    self.flush(socket).await?;
                }
                Ok(())
            }
            ServerFrame::Error {
                code,
                message,
                id: Some(id),
            } if self.in_flight.contains_key(&id) => {
                let refused = self.in_flight.remove(&id);
                let carried = refused.and_then(|r| r.message);
                if code == ErrorCode::StaleRecipient {
                    // The peer registered again (a new phone): their old session reaches
                    // nobody. Without it the next flush fetches their new keys, which the
                    // app must accept first (`IdentityChanged`); the message stays queued.
                    if let Some(peer) = refused.map(|r| r.peer) {
                        tracing::info!(%peer, "the peer registered again; renewing the session");
                        self.shared
                            .protocol
                            .call(move |e| e.reset_session(peer))
                            .await?;
                    }
                    return self.flush(socket).await;
                }
                let permanent = matches!(
                    code,
                    ErrorCode::NotFound
                        | ErrorCode::PayloadTooLarge
                        | ErrorCode::InvalidRequest
                        | ErrorCode::InvalidBase64
                );
                tracing::warn!(%code, message, permanent, "the relay refused a message");
                if permanent {
                    self.settle(id, carried, MessageState::Failed).await?;
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

    /// Takes outbox entry `id` out of the outbox in its final relay state (sent or
    /// failed); the history message it carries takes that state, and the app is told.
    async fn settle(&self, id: Uuid, message: Option<Uuid>, state: MessageState) -> CoreResult<()> {
        let updated = self
            .shared
            .protocol
            .call(move |e| {
                e.store().write(|store| {
                    store.dequeue(id)?;
                    match message {
                        Some(message) => store.set_message_state(message, state),
                        None => Ok(false),
                    }
                })
            })
            .await?;
        if let (true, Some(id)) = (updated, message) {
            self.shared
                .emit(ClientEvent::MessageStateChanged { id, state });
        }
        Ok(())
    }

    /// Decrypts and stores deliveries (in one actor trip, usually one transaction), tells
    /// the app in arrival order, then acks them with one socket flush (a call signal is
    /// acked and handed over where it comes) — each only once its results are committed,
    /// so a crash in between means redelivery, never loss.
    async fn on_deliveries(
        &mut self,
        socket: &mut RelaySocket,
        deliveries: Vec<Delivery>,
    ) -> CoreResult<()> {
        // A payload that is not base64 is reported where it came, so `false` marks its place.
        let mut decoded = Vec::with_capacity(deliveries.len());
        let mut incoming = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            match delivery.payload.decode("payload") {
                Ok(payload) => {
                    decoded.push(true);
                    incoming.push(Incoming {
                        id: delivery.id,
                        sender: delivery.sender,
                        payload,
                    });
                }
                Err(_) => decoded.push(false),
            }
        }
        let rules = ReceiveRules {
            now: self.shared.clock.now_ms(),
            quota: self.shared.receive_quota,
        };
        let results = if incoming.is_empty() {
            Vec::new()
        } else {
            self.shared
                .protocol
                .call(move |e| Ok(receive::receive_batch(e, &incoming, rules)))
                .await?
        };
        let mut results = results.into_iter();
        let mut acks = Vec::with_capacity(deliveries.len());
        let mut texts = false;
        let mut fatal = None;
        for (delivery, decoded) in deliveries.iter().zip(decoded) {
            let sender = delivery.sender;
            if !decoded {
                self.shared
                    .emit(ClientEvent::DecryptionFailed { peer: sender });
                acks.push(delivery.id);
                continue;
            }
            // The batch stopped at a failure the connection drops on: the rest was not taken.
            let Some(result) = results.next() else {
                break;
            };
            let ack = match result {
                Ok(Received::AlreadyProcessed) => true,
                Ok(Received::Dropped(reason)) => {
                    tracing::debug!(?reason, "dropped an incoming message");
                    true
                }
                Ok(Received::Call {
                    call_id,
                    signal,
                    sent_at,
                }) => {
                    // The call manager gets a signal once it is acked, and in its place among
                    // the other events (calls are rare, so the extra flush costs little).
                    acks.push(delivery.id);
                    // Texts after it are committed: they are announced even if the link
                    // fails here (they would come again only as already processed).
                    if let Err(e) = send_acks(socket, &mut acks).await {
                        fatal.get_or_insert(e);
                    }
                    self.shared
                        .calls
                        .on_signal(self.shared, sender, call_id, signal, sent_at);
                    false
                }
                Ok(Received::Text(message)) => {
                    self.shared.emit(ClientEvent::MessageReceived(message));
                    texts = true;
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
                // Counted (and the session renewed after a run of them) already.
                Err(e) if receive::is_undecryptable(&e) => {
                    self.shared
                        .emit(ClientEvent::DecryptionFailed { peer: sender });
                    true
                }
                // Storage trouble: do not ack; the relay delivers it (and the rest) again.
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            };
            if ack {
                acks.push(delivery.id);
            }
        }
        if texts {
            // Their receipts are queued.
            self.shared.outbox_wake.notify_one();
        }
        send_acks(socket, &mut acks).await?;
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes queued messages, oldest first, keeping each peer's order: once one message to
    /// a peer cannot go, later ones to that peer wait too. The messages of one peer in a
    /// flush are encrypted together, in one actor trip and one transaction.
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
        let mut queue: VecDeque<OutboxEntry> = entries
            .into_iter()
            .filter(|entry| !self.in_flight.contains_key(&entry.id))
            .collect();
        let mut blocked: HashSet<Uuid> = HashSet::new();
        let mut written = 0;
        // Messages that cannot go leave room for later ones, so take the queue in rounds.
        while written < room {
            let mut round = Vec::new();
            while round.len() < room - written {
                let Some(entry) = queue.pop_front() else {
                    break;
                };
                if !blocked.contains(&entry.peer) {
                    round.push(entry);
                }
            }
            if round.is_empty() {
                break;
            }
            let (payloads, registration_ids) = self.encrypt_round(&round, &mut blocked).await?;
            for (entry, payload) in round.iter().zip(payloads) {
                let Some(payload) = payload else {
                    continue;
                };
                socket
                    .feed(&ClientFrame::Send {
                        to: entry.peer,
                        id: entry.id,
                        payload: Base64String::encode(payload),
                        registration_id: registration_ids.get(&entry.peer).copied(),
                    })
                    .await?;
                self.in_flight.insert(
                    entry.id,
                    InFlight {
                        peer: entry.peer,
                        message: entry.message,
                    },
                );
                written += 1;
            }
        }
        if written > 0 {
            socket.flush().await?;
        }
        Ok(())
    }

    /// Encrypts a round of outbox entries, peer by peer; returns the payloads in the round's
    /// order, `None` for entries that do not go now (their peer blocked, or failed for good).
    async fn encrypt_round(
        &self,
        round: &[OutboxEntry],
        blocked: &mut HashSet<Uuid>,
    ) -> CoreResult<(Vec<Option<Vec<u8>>>, HashMap<Uuid, u32>)> {
        let mut payloads: Vec<Option<Vec<u8>>> = vec![None; round.len()];
        let mut registration_ids = HashMap::new();
        let mut peers: Vec<Uuid> = Vec::new();
        for entry in round {
            if !peers.contains(&entry.peer) {
                peers.push(entry.peer);
            }
        }
        for peer in peers {
            // This peer's entries, as positions in the round, oldest first.
            let mut pending: VecDeque<usize> = round
                .iter()
                .enumerate()
                .filter(|(_, entry)| entry.peer == peer)
                .map(|(at, _)| at)
                .collect();
            while !pending.is_empty() {
                // Padded here, so entries queued before padding existed are padded too.
                let envelopes = pending
                    .iter()
                    .map(|&at| padding::pad(&round[at].envelope))
                    .collect();
                match self.encrypt_run(peer, envelopes).await {
                    // Never empty for envelopes; the guard keeps a surprise from spinning.
                    Ok((encrypted, _)) if encrypted.is_empty() => break,
                    Ok((encrypted, registration_id)) => {
                        if let Some(id) = registration_id {
                            registration_ids.insert(peer, id);
                        }
                        for payload in encrypted {
                            if let Some(at) = pending.pop_front() {
                                payloads[at] = Some(payload);
                            }
                        }
                    }
                    Err(CoreError::IdentityChanged { peer }) => {
                        self.shared.emit(ClientEvent::IdentityChanged { peer });
                        blocked.insert(peer);
                        break;
                    }
                    // This message fails; the next one to the peer tries on its own.
                    Err(CoreError::UnknownPeer { .. })
                    | Err(CoreError::Relay { status: 404, .. }) => {
                        if let Some(at) = pending.pop_front() {
                            let entry = &round[at];
                            self.settle(entry.id, entry.message, MessageState::Failed)
                                .await?;
                        }
                    }
                    Err(e @ (CoreError::Network(_) | CoreError::Relay { .. })) => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot encrypt a queued message yet");
                        blocked.insert(peer);
                        break;
                    }
                }
            }
        }
        Ok((payloads, registration_ids))
    }

    /// Encrypts `envelopes` for `peer`, in order, in one transaction. Without a session one
    /// is started from a fresh bundle first. The common case (a session exists) is one trip
    /// to the protocol actor. Returns a payload per envelope, and the peer's registration id
    /// the session was made for.
    async fn encrypt_run(
        &self,
        peer: Uuid,
        envelopes: Vec<zeroize::Zeroizing<Vec<u8>>>,
    ) -> CoreResult<(Vec<Vec<u8>>, Option<u32>)> {
        let prepared = self
            .shared
            .protocol
            .call(move |e| {
                if e.has_session(peer)? {
                    let plaintexts: Vec<&[u8]> = envelopes.iter().map(|e| e.as_slice()).collect();
                    let payloads = e.encrypt_batch(peer, &plaintexts)?;
                    return Ok(Prepared::Encrypted(
                        payloads,
                        e.remote_registration_id(peer)?,
                    ));
                }
                let phone_hash = e
                    .store()
                    .contact_phone_hash(peer)?
                    .ok_or(CoreError::UnknownPeer { peer })?;
                Ok(Prepared::NeedsBundle {
                    phone_hash,
                    envelopes,
                })
            })
            .await?;
        let (phone_hash, envelopes) = match prepared {
            Prepared::Encrypted(payloads, registration_id) => {
                return Ok((payloads, registration_id))
            }
            Prepared::NeedsBundle {
                phone_hash,
                envelopes,
            } => (phone_hash, envelopes),
        };
        let token = token(self.shared).await?;
        let bundle = self.shared.api.bundle(&token, &phone_hash).await?;
        self.shared
            .protocol
            .call(move |e| {
                e.process_bundle(peer, &bundle)?;
                let plaintexts: Vec<&[u8]> = envelopes.iter().map(|e| e.as_slice()).collect();
                let payloads = e.encrypt_batch(peer, &plaintexts)?;
                Ok((payloads, e.remote_registration_id(peer)?))
            })
            .await
    }
}
