//! `PrivcommClient`: the core's `Client` as an FFI object.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use privcomm_core as core;
use tokio_util::sync::CancellationToken;

use crate::error::PrivcommError;
use crate::events::{spawn_listener, AudioSink, Delivery, EventListener, Subscription};
use crate::foreign::{Abandoned, ForeignHandle};
use crate::runtime::{run, runtime};
use crate::secret_store::{ForeignSecretStore, SecretStore};
use crate::types::{
    parse_id, CallInfo, CallStats, ClientConfig, ClientEvent, ConnectionState, Conversation,
    DroppedMessages, HistoryCursor, Message, SafetyNumber,
};

/// One Privcomm account on this device. Open it once per data directory and keep it for the
/// app's lifetime; every method may be called from any thread. `shutdown` it when done (a
/// client freed without it, by `close()`/`destroy()` or the garbage collector, shuts down
/// in the background).
#[derive(uniffi::Object)]
pub struct PrivcommClient {
    inner: core::Client,
    /// Cancelled on shutdown: every listener hands over what is queued, then stops.
    closed: CancellationToken,
    /// Set when dropped without `shutdown`: foreign objects are then left alone.
    abandoned: Abandoned,
    /// The listener threads, joined by `shutdown`.
    listeners: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// How long `shutdown` waits for listeners to take what was announced before it.
const LISTENER_DRAIN: Duration = Duration::from_secs(5);

impl Drop for PrivcommClient {
    fn drop(&mut self) {
        if self.closed.is_cancelled() {
            return;
        }
        // Dropped without `shutdown`: possibly while the host is exiting, when calling into
        // it (or freeing its objects) would abort the process. The core closes in the
        // background and touches no foreign object again (`foreign`).
        self.abandoned.set();
        self.closed.cancel();
        if let Ok(rt) = runtime() {
            let inner = self.inner.clone();
            rt.spawn(async move { inner.close().await });
        }
    }
}

impl PrivcommClient {
    fn keep_listener(&self, thread: std::thread::JoinHandle<()>) {
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.retain(|t| !t.is_finished());
            listeners.push(thread);
        }
    }
}

/// Deletes the account data in `data_dir` and its secret in `secrets`: the recovery path
/// for `SecretLost`, `MissingKey` and `WrongKey`. Close every client of `data_dir` first.
#[uniffi::export]
pub async fn delete_local_data(
    data_dir: String,
    secrets: Arc<dyn SecretStore>,
) -> Result<(), PrivcommError> {
    let secrets: Arc<dyn core::SecretStore> =
        Arc::new(ForeignSecretStore::new(secrets, Abandoned::default()));
    run(core::delete_local_data(PathBuf::from(data_dir), secrets)).await
}

/// The version of the core these bindings were built from.
#[uniffi::export]
pub fn core_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

#[uniffi::export]
impl PrivcommClient {
    /// Opens the account stored in `config.data_dir` (created on first use), with the
    /// database key's wrapping secret kept in `secrets`.
    #[uniffi::constructor]
    pub async fn open(
        config: ClientConfig,
        secrets: Arc<dyn SecretStore>,
    ) -> Result<Arc<Self>, PrivcommError> {
        if config.data_dir.is_empty() {
            return Err(PrivcommError::invalid("data_dir must not be empty"));
        }
        let options = core::ClientOptions {
            call: config.call.unwrap_or_default().to_core(),
            ..core::ClientOptions::default()
        };
        let abandoned = Abandoned::default();
        let secrets: Arc<dyn core::SecretStore> =
            Arc::new(ForeignSecretStore::new(secrets, abandoned.clone()));
        let inner = run(async move {
            core::Client::open_with(
                PathBuf::from(config.data_dir),
                &config.server_url,
                secrets,
                options,
            )
            .await
        })
        .await?;
        Ok(Arc::new(Self {
            inner,
            closed: CancellationToken::new(),
            abandoned,
            listeners: Mutex::new(Vec::new()),
        }))
    }

    /// Has the relay text a verification code to `phone_number` (international form,
    /// `+4915112345678`); returns the seconds the code stays valid. `RateLimited` when
    /// codes for the number come too often.
    pub async fn request_verification(&self, phone_number: String) -> Result<u64, PrivcommError> {
        let client = self.inner.clone();
        run(async move { client.request_verification(&phone_number).await }).await
    }

    /// Registers `phone_number` with the `code` texted to it, creating this device's keys on
    /// first use; returns the user id. A number registered on another device moves here
    /// (that device is signed out). `pin` unlocks an account with a registration lock
    /// (else `RegistrationLocked`). Safe to repeat once registered.
    pub async fn register(
        &self,
        phone_number: String,
        code: String,
        pin: Option<String>,
    ) -> Result<String, PrivcommError> {
        let client = self.inner.clone();
        run(async move { client.register(&phone_number, &code, pin.as_deref()).await })
            .await
            .map(|id| id.to_string())
    }

    /// Sets a registration lock with `pin` (4 to 128 characters): registering this number on
    /// another device then needs the PIN too, until the account has been unused for 7 days.
    pub async fn set_registration_lock(&self, pin: String) -> Result<(), PrivcommError> {
        let client = self.inner.clone();
        run(async move { client.set_registration_lock(&pin).await }).await
    }

    /// Removes the registration lock.
    pub async fn remove_registration_lock(&self) -> Result<(), PrivcommError> {
        let client = self.inner.clone();
        run(async move { client.remove_registration_lock().await }).await
    }

    /// This account's user id, once registered.
    pub async fn user_id(&self) -> Result<Option<String>, PrivcommError> {
        let client = self.inner.clone();
        let id = run(async move { client.user_id().await }).await?;
        Ok(id.map(|id| id.to_string()))
    }

    /// Connects and waits until online; the link then keeps itself up (reconnecting with
    /// backoff) until `disconnect` or `close`.
    pub async fn connect(&self) -> Result<(), PrivcommError> {
        let client = self.inner.clone();
        run(async move { client.connect().await }).await
    }

    /// Stops the link; queued messages wait for the next `connect`.
    pub async fn disconnect(&self) -> Result<(), PrivcommError> {
        let client = self.inner.clone();
        run(async move {
            client.disconnect().await;
            Ok::<_, PrivcommError>(())
        })
        .await
    }

    /// Hangs up any call, disconnects and closes the store, then stops every listener once
    /// it was handed every event announced before (waiting up to 5 s for them). The client
    /// is unusable afterwards (`Closed`). (Not `close`: Kotlin's `AutoCloseable.close` frees
    /// the object itself, which also shuts the client down.)
    pub async fn shutdown(&self) -> Result<(), PrivcommError> {
        let client = self.inner.clone();
        run(async move {
            client.close().await;
            Ok::<_, PrivcommError>(())
        })
        .await?;
        self.closed.cancel();
        let threads = self
            .listeners
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        let abandoned = self.abandoned.clone();
        run(async move {
            // A listener that waits for `shutdown` inside its own callback delays it by the
            // full drain time.
            let deadline = tokio::time::Instant::now() + LISTENER_DRAIN;
            for thread in &threads {
                while !thread.is_finished() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            // Listeners still busy after that are called no more: once `shutdown` returns,
            // the host may exit.
            if threads.iter().any(|t| !t.is_finished()) {
                abandoned.set();
            }
            Ok::<_, PrivcommError>(())
        })
        .await
    }

    /// Where the link stands now.
    pub fn connection_state(&self) -> ConnectionState {
        self.inner.connection_state().into()
    }

    /// Calls `listener` with every event from now on, on a background thread, until the
    /// returned subscription is cancelled or the client closed.
    pub fn subscribe(
        &self,
        listener: Arc<dyn EventListener>,
    ) -> Result<Arc<Subscription>, PrivcommError> {
        if self.closed.is_cancelled() {
            return Err(PrivcommError::from(core::CoreError::Closed));
        }
        let listener = ForeignHandle::new(listener, self.abandoned.clone());
        let (subscription, thread) = spawn_listener(
            "privcomm-events",
            self.inner.events(),
            self.closed.clone(),
            self.abandoned.clone(),
            move |delivery| {
                let event = match delivery {
                    Delivery::Item(event) => ClientEvent::from(event),
                    Delivery::Missed(count) => ClientEvent::EventsMissed { count },
                };
                match listener.get() {
                    Some(listener) => listener.on_event(event),
                    None => Ok(()),
                }
            },
        )?;
        self.keep_listener(thread);
        Ok(Arc::new(subscription))
    }

    /// Finds the user with `phone_number`, sets up a session and remembers them as a
    /// contact; returns their user id (the `peer` of the other methods).
    pub async fn resolve_peer(&self, phone_number: String) -> Result<String, PrivcommError> {
        let client = self.inner.clone();
        run(async move { client.resolve_peer(&phone_number).await })
            .await
            .map(|id| id.to_string())
    }

    /// Queues `text` (1 to 32 KiB of UTF-8, the core's `MAX_TEXT_BYTES`) for `peer` (a
    /// resolved contact: else `UnknownPeer`) and returns its message id at once; it is sent
    /// whenever online and survives restarts.
    pub async fn send_text(&self, peer: String, text: String) -> Result<String, PrivcommError> {
        let peer = parse_id("peer", &peer)?;
        let client = self.inner.clone();
        run(async move { client.send_text(peer, &text).await })
            .await
            .map(|id| id.to_string())
    }

    /// Conversations, most recent first.
    pub async fn conversations(&self) -> Result<Vec<Conversation>, PrivcommError> {
        let client = self.inner.clone();
        let list = run(async move { client.conversations().await }).await?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    /// Messages with `peer`, newest first, at most `limit` (1 to 1,000, the core's
    /// `MAX_HISTORY_PAGE`); pass the last
    /// message's cursor as `before` to page back.
    pub async fn history(
        &self,
        peer: String,
        before: Option<HistoryCursor>,
        limit: u32,
    ) -> Result<Vec<Message>, PrivcommError> {
        let peer = parse_id("peer", &peer)?;
        let before = before.map(|c| c.to_core()).transpose()?;
        let client = self.inner.clone();
        let page = run(async move { client.history(peer, before, limit).await }).await?;
        Ok(page.into_iter().map(Into::into).collect())
    }

    /// One message by id, if stored.
    pub async fn message(&self, id: String) -> Result<Option<Message>, PrivcommError> {
        let id = parse_id("message id", &id)?;
        let client = self.inner.clone();
        let message = run(async move { client.message(id).await }).await?;
        Ok(message.map(Into::into))
    }

    /// The safety number with `peer`, to compare with theirs.
    pub async fn safety_number(&self, peer: String) -> Result<SafetyNumber, PrivcommError> {
        let peer = parse_id("peer", &peer)?;
        let client = self.inner.clone();
        run(async move { client.safety_number(peer).await })
            .await
            .map(Into::into)
    }

    /// Checks the peer's scanned safety-number code; marks them verified on a match.
    pub async fn verify_peer(&self, peer: String, scanned: Vec<u8>) -> Result<bool, PrivcommError> {
        let peer = parse_id("peer", &peer)?;
        let client = self.inner.clone();
        run(async move { client.verify_peer(peer, scanned).await }).await
    }

    /// Accepts `peer`'s new identity key (after an `IdentityChanged` event).
    pub async fn accept_identity(&self, peer: String) -> Result<(), PrivcommError> {
        let peer = parse_id("peer", &peer)?;
        let client = self.inner.clone();
        run(async move { client.accept_identity(peer).await }).await
    }

    /// Messages still waiting for the relay.
    pub async fn outbox_len(&self) -> Result<u64, PrivcommError> {
        let client = self.inner.clone();
        run(async move { client.outbox_len().await }).await
    }

    /// Blocks `peer`: their messages, receipts and calls are acked and dropped unread, and
    /// sending to them fails with `PeerBlocked`. False if they were blocked already.
    pub async fn block_peer(&self, peer: String) -> Result<bool, PrivcommError> {
        let peer = parse_id("peer", &peer)?;
        let client = self.inner.clone();
        run(async move { client.block_peer(peer).await }).await
    }

    /// Unblocks `peer`. False if they were not blocked.
    pub async fn unblock_peer(&self, peer: String) -> Result<bool, PrivcommError> {
        let peer = parse_id("peer", &peer)?;
        let client = self.inner.clone();
        run(async move { client.unblock_peer(peer).await }).await
    }

    /// Every blocked peer.
    pub async fn blocked_peers(&self) -> Result<Vec<String>, PrivcommError> {
        let client = self.inner.clone();
        let peers = run(async move { client.blocked_peers().await }).await?;
        Ok(peers.into_iter().map(|p| p.to_string()).collect())
    }

    /// Incoming messages dropped since the store was created, by reason.
    pub async fn dropped_messages(&self) -> Result<DroppedMessages, PrivcommError> {
        let client = self.inner.clone();
        run(async move { client.dropped_messages().await })
            .await
            .map(Into::into)
    }

    /// Calls `peer` (a resolved contact); needs a live connection. Returns the call id;
    /// progress arrives as `CallStateChanged` events.
    pub async fn start_call(&self, peer: String) -> Result<String, PrivcommError> {
        let peer = parse_id("peer", &peer)?;
        let client = self.inner.clone();
        run(async move { client.start_call(peer).await })
            .await
            .map(|id| id.to_string())
    }

    /// Answers the incoming call `call_id`.
    pub fn accept_call(&self, call_id: String) -> Result<(), PrivcommError> {
        let call_id = parse_id("call id", &call_id)?;
        let _context = runtime()?.enter();
        Ok(self.inner.accept_call(call_id)?)
    }

    /// Declines the incoming call `call_id`.
    pub fn decline_call(&self, call_id: String) -> Result<(), PrivcommError> {
        let call_id = parse_id("call id", &call_id)?;
        let _context = runtime()?.enter();
        Ok(self.inner.decline_call(call_id)?)
    }

    /// Ends the call `call_id` in whatever state it is.
    pub fn hang_up(&self, call_id: String) -> Result<(), PrivcommError> {
        let call_id = parse_id("call id", &call_id)?;
        let _context = runtime()?.enter();
        Ok(self.inner.hang_up(call_id)?)
    }

    /// Mutes or unmutes this side's microphone.
    pub fn set_muted(&self, call_id: String, muted: bool) -> Result<(), PrivcommError> {
        let call_id = parse_id("call id", &call_id)?;
        let _context = runtime()?.enter();
        Ok(self.inner.set_muted(call_id, muted)?)
    }

    /// Feeds one 20 ms frame from the microphone: 960 samples of 48 kHz mono 16-bit PCM,
    /// little-endian (1,920 bytes, as `AudioRecord` reads with `ENCODING_PCM_16BIT`).
    /// Never blocks; frames pushed before the call connects are dropped.
    pub fn push_audio_frame(&self, call_id: String, pcm: Vec<u8>) -> Result<(), PrivcommError> {
        let call_id = parse_id("call id", &call_id)?;
        if !pcm.len().is_multiple_of(2) {
            return Err(PrivcommError::invalid("pcm must hold whole 16-bit samples"));
        }
        let samples: Vec<i16> = pcm
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let _context = runtime()?.enter();
        Ok(self.inner.push_audio_frame(call_id, &samples)?)
    }

    /// Plays the peer's voice: calls `sink` with every decoded frame from now on, on a
    /// background thread. A sink more than 5 s behind misses frames.
    pub fn subscribe_audio(
        &self,
        sink: Arc<dyn AudioSink>,
    ) -> Result<Arc<Subscription>, PrivcommError> {
        if self.closed.is_cancelled() {
            return Err(PrivcommError::from(core::CoreError::Closed));
        }
        let sink = ForeignHandle::new(sink, self.abandoned.clone());
        let (subscription, thread) = spawn_listener(
            "privcomm-audio",
            self.inner.audio_frames(),
            self.closed.clone(),
            self.abandoned.clone(),
            move |delivery| match (delivery, sink.get()) {
                (Delivery::Item(frame), Some(sink)) => {
                    let pcm = frame.samples.iter().flat_map(|s| s.to_le_bytes()).collect();
                    sink.on_audio_frame(frame.call_id.to_string(), pcm)
                }
                // Late audio is worthless; the decoder's concealment covers the gap.
                _ => Ok(()),
            },
        )?;
        self.keep_listener(thread);
        Ok(Arc::new(subscription))
    }

    /// Round-trip time, loss and jitter of the call's media link.
    pub async fn call_stats(&self, call_id: String) -> Result<CallStats, PrivcommError> {
        let call_id = parse_id("call id", &call_id)?;
        let client = self.inner.clone();
        run(async move { client.call_stats(call_id).await })
            .await
            .map(Into::into)
    }

    /// The call in progress, if any.
    pub fn current_call(&self) -> Option<CallInfo> {
        self.inner.current_call().map(Into::into)
    }
}
