//! One WebSocket connection: reads client frames, writes deliveries, keeps the link alive.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use std::future::Future;
use std::pin::Pin;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use privcomm_protocol::limits::{
    CLOSE_CONNECTED_ELSEWHERE, CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER, DELIVERY_PAGE,
    DELIVERY_WINDOW,
};
use privcomm_protocol::ws::{ClientFrame, ServerFrame};
use privcomm_protocol::{Base64String, ErrorCode};
use tokio::time::{timeout, Instant};
use uuid::Uuid;

use super::delivery::{Delivery, Path};
use super::registry::{BusRead, Live, Signals, NOT_WOKEN};
use crate::budget::{ByteBudget, HeldBytes};
use crate::error::ApiError;
use crate::messaging::{server_id, validate_message};
use crate::state::AppState;
use crate::store::{PendingMessage, StoreResult};
use crate::writer::answer;
use crate::writer::SendStream;

/// A write that takes longer than this means the peer stopped reading: drop it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Client frames whose writes may be under way at once; reading pauses beyond this.
const MAX_PIPELINED: usize = 256;
/// Bytes of sends one connection may have between reading and commit (its share of the
/// relay-wide in-flight budget); reading pauses beyond this.
const CONNECTION_INFLIGHT_BYTES: usize = 2 * 1024 * 1024;
/// The longest a closing connection waits for the client's close reply, reading (and
/// dropping) what the client still sends, so its socket is not reset under it. A client
/// that reads slowly may have our close frame queued behind many answers; it stops sending
/// only once it reaches it.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(10);
/// A closing client that sends nothing for this long has stopped writing (it read our
/// close frame, or was idle): closing now leaves nothing unread, so it cannot reset.
const CLOSE_QUIET: Duration = Duration::from_millis(500);
/// Missed ping intervals before a silent connection is considered dead.
const DEAD_AFTER_PINGS: u32 = 3;

/// Why the loop ended.
enum End {
    /// The peer closed or the socket failed.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// Runs a connection until it closes. `generation` is the registration the token was
/// issued for: a connection of a device the number has since moved away from is closed.
pub async fn run(state: AppState, user: Uuid, generation: u32, mut socket: WebSocket) {
    let mut registration = match state.connections.register(user, generation) {
        Ok(r) => r,
        Err(_) => {
            state.metrics.connections_refused.inc();
            let _ = close(
                &mut socket,
                CLOSE_TRY_AGAIN_LATER,
                "connection limit reached",
            )
            .await;
            return;
        }
    };
    let conn_id = registration.conn_id();
    // From here on the bus counts this connection (released below, whatever happens).
    let claim = state.bus.claim(user, conn_id, EARLIER_WRITES_WAIT);
    let mut unreleased = Unreleased {
        bus: state.bus.clone(),
        user,
        conn: conn_id,
        armed: true,
    };
    let end = serve_registered(
        &state,
        user,
        generation,
        &mut socket,
        &mut registration,
        claim,
    )
    .await;
    if let Some(End::Close(code, reason)) = end {
        if close(&mut socket, code, reason).await.is_ok() {
            finish_close(&state, user, &mut socket).await;
        }
    }
    // Registered until here: a connection that replaces this one meanwhile waits for the
    // acks read while closing.
    drop(registration);
    if state.bus.is_shared() {
        // A connection on another instance may be waiting for these acks.
        let _ = timeout(EARLIER_WRITES_WAIT, state.writes.flushed(user)).await;
    }
    // Told to the instance a new connection of this user waits on, if any; bounded, and
    // awaited so a relay that shuts down hands its users over before its bus stops.
    unreleased.armed = false;
    let _ = timeout(EARLIER_WRITES_WAIT, state.bus.release(user, conn_id)).await;
    tracing::info!("websocket closed");
}

/// Releases a claimed user on the bus if its connection's task ends without doing so (it
/// panicked): otherwise this instance would keep naming the user's connection, and each
/// new connection elsewhere would wait for a release that never comes.
struct Unreleased {
    bus: Arc<dyn crate::bus::RoutingBus>,
    user: Uuid,
    conn: u64,
    armed: bool,
}

impl Drop for Unreleased {
    fn drop(&mut self) {
        if self.armed {
            let release = self.bus.release(self.user, self.conn);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = timeout(EARLIER_WRITES_WAIT, release).await;
                });
            }
        }
    }
}

/// Waits for the connections before (here and on other instances) to finish their writes,
/// then serves. `None` if the connection never served and is already closed.
async fn serve_registered(
    state: &AppState,
    user: Uuid,
    generation: u32,
    socket: &mut WebSocket,
    registration: &mut super::registry::Registration,
    claim: crate::bus::BusWait,
) -> Option<End> {
    // Replaced, displaced or shut down while waiting: this connection never serves.
    let replaced = registration.replaced.take();
    let signals = registration.signals.clone();
    let stopped = tokio::select! {
        biased;
        _ = state.shutdown.cancelled() => Some((CLOSE_GOING_AWAY, "server shutting down")),
        _ = signals.replaced.cancelled() => Some((CLOSE_CONNECTED_ELSEWHERE, "connected elsewhere")),
        _ = after_earlier_writes(state, user, replaced, claim) => None,
    };
    if let Some((code, reason)) = stopped {
        return Some(End::Close(code, reason));
    }
    // The number may have moved to a new device between the token check and now; the
    // new device's registration then displaced nothing of ours, so look again.
    if !still_current(state, user, generation).await {
        return Some(End::Close(CLOSE_CONNECTED_ELSEWHERE, MOVED));
    }
    state.metrics.connections.inc();
    state.writes.touch(user);
    tracing::info!("websocket connected");
    let end = Connection {
        state,
        user,
        generation,
        touched_day: crate::store::day_of(state.clock.now_ms()),
        delivery: Delivery::new(DELIVERY_WINDOW, DELIVERY_PAGE),
        pending: FuturesOrdered::new(),
        inflight: ByteBudget::new(CONNECTION_INFLIGHT_BYTES),
        sends: SendStream::default(),
    }
    .serve(socket, registration)
    .await;
    state.metrics.connections.dec();
    Some(end)
}

/// The longest a new connection waits for the one it replaced to end, and then for the
/// writes queued before it, before reading its mailbox. Past it, a message acked on the old
/// connection may arrive again (the client drops it by id), which is better than a
/// connection that waits on a peer who stopped reading.
const EARLIER_WRITES_WAIT: Duration = Duration::from_secs(2);

/// Waits (bounded) until the instance that held `user` before (if another) has committed
/// that connection's writes (`claim`), the connection this one replaced here has ended, and
/// every write queued for `user` here before now is committed: the acks of the connection
/// before (replaced, or one that just closed) are then in storage, and the mailbox read
/// next does not hold what was acked.
async fn after_earlier_writes(
    state: &AppState,
    user: Uuid,
    replaced: Option<tokio_util::sync::CancellationToken>,
    claim: crate::bus::BusWait,
) {
    let waited = timeout(EARLIER_WRITES_WAIT, async {
        claim.await;
        if let Some(old) = replaced {
            old.cancelled().await;
        }
        state.writes.flushed(user).await;
    })
    .await;
    if waited.is_err() {
        tracing::warn!("the connection before did not finish its writes in time");
    }
}

/// Close reason when the number was registered on another device.
const MOVED: &str = "registered on another device";

/// True unless `user` registered again since `generation` (or cannot be read: a database
/// hiccup does not end connections).
async fn still_current(state: &AppState, user: Uuid, generation: u32) -> bool {
    match state.store.user_generation(user).await {
        Ok(Some(current)) => current == generation,
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the registration generation");
            true
        }
    }
}

/// Reads until the client's close reply, its end of the stream, `CLOSE_QUIET` without a
/// frame, or `CLOSE_HANDSHAKE` in all. Closing the socket with a pipelining client's frames
/// still unread would make the kernel reset it, which also discards what we have not sent
/// yet: a client still reading its backlog would lose our close frame and see the
/// connection drop (1006).
///
/// Acks read meanwhile are still applied: they were sent before the client saw our close
/// frame, or before it connected again (a new connection replaces this one at once, with
/// its last frames unread). Dropping them would deliver those messages a second time, to a
/// client that reconnects quickly, again and again. Sends are dropped: the client never
/// gets their `sent` and sends them again.
async fn finish_close(state: &AppState, user: Uuid, socket: &mut WebSocket) {
    let _ = timeout(CLOSE_HANDSHAKE, async {
        while let Ok(Some(Ok(message))) = timeout(CLOSE_QUIET, socket.next()).await {
            match message {
                Message::Close(_) => break,
                Message::Text(text) => {
                    if let Ok(ClientFrame::Ack { id }) = parse_frame(text.as_str()) {
                        // Queued for the next commit; nobody waits for the answer.
                        drop(state.writes.ack(user, id).await);
                    }
                }
                _ => {}
            }
        }
    })
    .await;
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) -> Result<(), axum::Error> {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    timeout(WRITE_TIMEOUT, socket.send(Message::Close(Some(frame))))
        .await
        .unwrap_or(Ok(()))
}

/// A client frame whose storage write is under way; its outcome is handled in frame order.
type InProgress = Pin<Box<dyn Future<Output = Completed> + Send>>;

/// The outcome of a client frame.
enum Completed {
    /// Write this frame back (`sent` or `error`).
    Reply(ServerFrame),
    /// An ack was applied (or failed).
    Acked(Uuid, StoreResult<bool>),
}

struct Connection<'a> {
    state: &'a AppState,
    user: Uuid,
    /// The registration the connection's token was issued for.
    generation: u32,
    /// The day `last_seen` was last recorded for (a registration lock lapses only after 7
    /// days unseen, so a connection that stays up must keep saying so).
    touched_day: i64,
    delivery: Delivery,
    /// Frames whose writes are queued for the next group commit. Several per connection may
    /// wait at once, so one client is not held to one message per commit.
    pending: FuturesOrdered<InProgress>,
    /// This connection's share of the in-flight byte budget.
    inflight: ByteBudget,
    /// This connection's sends, in order (see `SendStream`).
    sends: SendStream,
}

impl Connection<'_> {
    async fn serve(
        &mut self,
        socket: &mut WebSocket,
        registration: &mut super::registry::Registration,
    ) -> End {
        let ping_every = Duration::from_secs(self.state.config.ping_interval_secs.max(1));
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        let signals = registration.signals.clone();
        loop {
            // Before reading storage: a connection replaced meanwhile writes nothing more.
            if signals.replaced.is_cancelled() {
                return End::Close(CLOSE_CONNECTED_ELSEWHERE, "connected elsewhere");
            }
            if let Err(end) = self.fill_window(socket).await {
                return end;
            }
            self.publish_state(&signals);
            tokio::select! {
                biased;
                _ = self.state.shutdown.cancelled() => {
                    return End::Close(CLOSE_GOING_AWAY, "server shutting down");
                }
                _ = signals.replaced.cancelled() => {
                    return End::Close(CLOSE_CONNECTED_ELSEWHERE, "connected elsewhere");
                }
                incoming = socket.next(), if self.pending.len() < MAX_PIPELINED => {
                    let Some(Ok(message)) = incoming else { return End::Gone };
                    last_heard = Instant::now();
                    if let Err(end) = self.on_message(socket, message, &signals).await {
                        return end;
                    }
                }
                Some(done) = self.pending.next(), if !self.pending.is_empty() => {
                    if let Err(end) = self.on_completed(socket, done).await {
                        return end;
                    }
                }
                Some(live) = registration.pushes.recv() => {
                    if let Err(end) = self.on_live(socket, live, &signals).await {
                        return end;
                    }
                }
                _ = signals.wake.notified() => {
                    if signals.push_dropped.swap(false, Ordering::AcqRel) {
                        self.delivery.on_push_dropped();
                    }
                    let woken = signals.woken_from.swap(NOT_WOKEN, Ordering::AcqRel);
                    if woken != NOT_WOKEN {
                        self.delivery.on_wake(woken);
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_every * DEAD_AFTER_PINGS {
                        tracing::info!("websocket silent too long; dropping");
                        return End::Gone;
                    }
                    if let Err(end) = send_now(socket, Message::Ping(Default::default())).await {
                        return end;
                    }
                    if let Err(end) = self.on_tick().await {
                        return end;
                    }
                }
            }
        }
    }

    /// Every ping interval: records a new day in `last_seen`, ends the connection if its
    /// number was registered on another device (on any relay instance) meanwhile, and, when
    /// other instances may have stored messages whose wake-up was lost, reads the mailbox
    /// again.
    async fn on_tick(&mut self) -> Result<(), End> {
        if self.state.bus.is_shared() {
            self.delivery.on_push_dropped();
        }
        let today = crate::store::day_of(self.state.clock.now_ms());
        if today != self.touched_day {
            self.state.writes.touch(self.user);
            self.touched_day = today;
        }
        if still_current(self.state, self.user, self.generation).await {
            Ok(())
        } else {
            Err(End::Close(CLOSE_CONNECTED_ELSEWHERE, MOVED))
        }
    }

    /// Writes what was handed over live: a message this instance stored, or rows the bus
    /// reader read for this connection.
    async fn on_live(
        &mut self,
        socket: &mut WebSocket,
        live: Live,
        signals: &Signals,
    ) -> Result<(), End> {
        match live {
            Live::Message(pushed) if signals.read_pending.load(Ordering::Acquire) => {
                // Messages another instance stored before it are being read: written now,
                // it would overtake them. Read storage from before it instead.
                self.delivery.on_wake(pushed.seq);
            }
            Live::Message(pushed) => {
                if let Some(message) = self.delivery.on_push(Arc::unwrap_or_clone(pushed)) {
                    self.write_delivery(socket, message, Path::Push).await?;
                    flush(socket).await?;
                }
            }
            Live::Read(read) => {
                signals.read_pending.store(false, Ordering::Release);
                let BusRead {
                    after,
                    limit,
                    woken,
                    rows,
                    ..
                } = *read;
                let page = self.delivery.on_bus_read(after, woken, rows, limit);
                self.publish_state(signals);
                if !page.to_send.is_empty() {
                    for message in page.to_send {
                        self.write_delivery(socket, message, page.path).await?;
                    }
                    flush(socket).await?;
                }
            }
        }
        Ok(())
    }

    /// Tells the bus reader where this connection's last complete scan ended, and whether
    /// it is caught up.
    fn publish_state(&self, signals: &Signals) {
        signals
            .seen_up_to
            .store(self.delivery.seen_up_to(), Ordering::Release);
        signals
            .caught_up
            .store(self.delivery.is_caught_up(), Ordering::Release);
    }

    /// Reads storage and writes messages while the delivery window has room.
    async fn fill_window(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        let mut wrote = false;
        while let Some((after, limit)) = self.delivery.next_fetch() {
            let rows = match self
                .state
                .store
                .pending_messages(self.user, after, limit)
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "reading pending messages failed");
                    return Err(End::Close(CLOSE_TRY_AGAIN_LATER, "storage unavailable"));
                }
            };
            let page = self.delivery.on_fetched(rows, limit);
            for message in page.to_send {
                self.write_delivery(socket, message, page.path).await?;
                wrote = true;
            }
            if page.queue_empty {
                feed(socket, &ServerFrame::QueueEmpty).await?;
                wrote = true;
            }
        }
        if wrote {
            flush(socket).await?;
        }
        Ok(())
    }

    async fn write_delivery(
        &mut self,
        socket: &mut WebSocket,
        message: PendingMessage,
        path: Path,
    ) -> Result<(), End> {
        let frame = ServerFrame::EncryptedMessage {
            id: message.id,
            sender: message.sender,
            payload: Base64String::encode(&message.payload),
            timestamp: message.created_at,
        };
        feed(socket, &frame).await?;
        self.state.metrics.delivered(path.as_str());
        Ok(())
    }

    /// Takes one client frame: queues its write, or its error reply, in frame order.
    async fn on_message(
        &mut self,
        socket: &mut WebSocket,
        message: Message,
        signals: &Signals,
    ) -> Result<(), End> {
        match message {
            Message::Text(text) => {
                match parse_frame(text.as_str()) {
                    Ok(frame) => self.on_frame(socket, frame, text.len(), signals).await?,
                    Err(err) => self.reply(error_frame(err, None)),
                }
                Ok(())
            }
            Message::Binary(_) => {
                let err = ApiError::new(ErrorCode::InvalidRequest, "frames must be JSON text");
                self.reply(error_frame(err, None));
                Ok(())
            }
            Message::Close(_) => Err(End::Gone),
            // Pings are answered by the WebSocket layer; pongs only prove liveness.
            Message::Ping(_) | Message::Pong(_) => Ok(()),
        }
    }

    fn reply(&mut self, frame: ServerFrame) {
        self.pending
            .push_back(Box::pin(std::future::ready(Completed::Reply(frame))));
    }

    async fn on_frame(
        &mut self,
        socket: &mut WebSocket,
        frame: ClientFrame,
        frame_bytes: usize,
        signals: &Signals,
    ) -> Result<(), End> {
        match frame {
            ClientFrame::Send {
                to,
                id,
                payload,
                registration_id,
            } => match validate_message(self.state, self.user, to, id, &payload, registration_id) {
                Ok(message) => {
                    drop(payload);
                    self.pace(socket, message.payload.len(), signals).await?;
                    let held = admit(self.state, &self.inflight, frame_bytes, signals).await?;
                    // Waiting for room in the writer's queue must not outlast a shutdown
                    // or the connection being replaced.
                    let queued = self
                        .state
                        .writes
                        .store_message(message, self.sends.clone(), held);
                    let stored = or_end(self.state, queued, signals).await?;
                    let metrics = self.state.metrics.clone();
                    self.pending.push_back(Box::pin(async move {
                        Completed::Reply(match server_id(&metrics, answer(stored).await) {
                            Ok(server_id) => ServerFrame::Sent { id, server_id },
                            Err(err) => error_frame(err, Some(id)),
                        })
                    }));
                }
                Err(err) => self.reply(error_frame(err, Some(id))),
            },
            ClientFrame::Ack { id } => {
                let acked = self.state.writes.ack(self.user, id).await;
                self.pending.push_back(Box::pin(async move {
                    Completed::Acked(id, answer(acked).await)
                }));
            }
        }
        Ok(())
    }

    /// Waits until this sender is within their send rate for a payload of
    /// `payload_bytes`. Meanwhile nothing more is read from the socket, so a fast sender is
    /// slowed down rather than answered with errors, while answers to earlier frames are
    /// still written as their commits finish.
    async fn pace(
        &mut self,
        socket: &mut WebSocket,
        payload_bytes: usize,
        signals: &Signals,
    ) -> Result<(), End> {
        let mut counted = false;
        while let Err(wait) = self.state.rate_limits.check_send(self.user, payload_bytes) {
            if !counted {
                self.state.metrics.message_refused("rate_limited");
                counted = true;
            }
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    biased;
                    _ = self.state.shutdown.cancelled() => {
                        return Err(End::Close(CLOSE_GOING_AWAY, "server shutting down"));
                    }
                    _ = signals.replaced.cancelled() => {
                        return Err(End::Close(CLOSE_CONNECTED_ELSEWHERE, "connected elsewhere"));
                    }
                    _ = &mut sleep => break,
                    Some(done) = self.pending.next(), if !self.pending.is_empty() => {
                        self.on_completed(socket, done).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Handles a finished frame and every other one already finished, then flushes once.
    async fn on_completed(&mut self, socket: &mut WebSocket, first: Completed) -> Result<(), End> {
        let mut wrote = false;
        let mut done = Some(first);
        while let Some(completed) = done.take() {
            match completed {
                Completed::Reply(frame) => {
                    feed(socket, &frame).await?;
                    wrote = true;
                }
                Completed::Acked(id, Ok(_)) => self.delivery.on_ack(id),
                Completed::Acked(id, Err(e)) => {
                    feed(socket, &error_frame(e.into(), Some(id))).await?;
                    wrote = true;
                }
            }
            done = self.pending.next().now_or_never().flatten();
        }
        if wrote {
            flush(socket).await?;
        }
        if self.sends.is_broken() {
            // A send was refused for want of the database, and every later one with it: the
            // client sends them again, in order, once it has reconnected.
            return Err(End::Close(CLOSE_TRY_AGAIN_LATER, "database unavailable"));
        }
        Ok(())
    }
}

/// Waits until the frame's bytes fit the connection's and the relay's in-flight budgets;
/// meanwhile nothing more is read from this socket (TCP pushes back on the client).
async fn admit(
    state: &AppState,
    connection_budget: &ByteBudget,
    frame_bytes: usize,
    signals: &Signals,
) -> Result<HeldBytes, End> {
    let own = or_end(state, connection_budget.hold(frame_bytes), signals).await?;
    let shared = or_end(state, state.inflight.hold(frame_bytes), signals).await?;
    Ok(own.and(shared))
}

/// Runs `work` unless the relay shuts down or the connection is replaced first.
async fn or_end<T>(
    state: &AppState,
    work: impl Future<Output = T>,
    signals: &Signals,
) -> Result<T, End> {
    tokio::select! {
        biased;
        _ = state.shutdown.cancelled() => {
            Err(End::Close(CLOSE_GOING_AWAY, "server shutting down"))
        }
        _ = signals.replaced.cancelled() => {
            Err(End::Close(CLOSE_CONNECTED_ELSEWHERE, "connected elsewhere"))
        }
        done = work => Ok(done),
    }
}

/// Parses a client frame, telling malformed JSON from an unknown type from bad fields.
pub fn parse_frame(text: &str) -> Result<ClientFrame, ApiError> {
    // The common case in one pass; the slower path below only explains a failure.
    if let Ok(frame) = serde_json::from_str(text) {
        return Ok(frame);
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| ApiError::new(ErrorCode::MalformedJson, "frame is not valid JSON"))?;
    match value.get("type").and_then(|t| t.as_str()) {
        Some("send" | "ack") => {}
        Some(other) => {
            let shown: String = other.chars().take(32).collect();
            return Err(ApiError::new(
                ErrorCode::UnknownFrameType,
                format!("unknown frame type `{shown}`"),
            ));
        }
        None => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "frame has no string `type`",
            ))
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("bad frame: {e}")))
}

fn error_frame(err: ApiError, id: Option<Uuid>) -> ServerFrame {
    ServerFrame::Error {
        code: err.code,
        message: err.message,
        id,
    }
}

fn encode(frame: &ServerFrame) -> Message {
    // Serialising our own enum of strings and numbers cannot fail.
    let text = serde_json::to_string(frame).unwrap_or_default();
    Message::Text(text.into())
}

async fn feed(socket: &mut WebSocket, frame: &ServerFrame) -> Result<(), End> {
    match timeout(WRITE_TIMEOUT, socket.feed(encode(frame))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(End::Gone),
    }
}

async fn flush(socket: &mut WebSocket) -> Result<(), End> {
    match timeout(WRITE_TIMEOUT, socket.flush()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(End::Gone),
    }
}

async fn send_now(socket: &mut WebSocket, message: Message) -> Result<(), End> {
    match timeout(WRITE_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(End::Gone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_frame_classifies_errors() {
        assert_eq!(parse_frame("{").unwrap_err().code, ErrorCode::MalformedJson);
        assert_eq!(
            parse_frame(r#"{"type":"bogus"}"#).unwrap_err().code,
            ErrorCode::UnknownFrameType
        );
        assert_eq!(
            parse_frame(r#"{"id":1}"#).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            parse_frame(r#"{"type":"ack","id":"nope"}"#)
                .unwrap_err()
                .code,
            ErrorCode::InvalidRequest
        );
        let id = Uuid::new_v4();
        assert_eq!(
            parse_frame(&format!(r#"{{"type":"ack","id":"{id}"}}"#)).unwrap(),
            ClientFrame::Ack { id }
        );
    }
}
