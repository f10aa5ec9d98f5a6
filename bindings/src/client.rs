//! `PrivcommClient`: the core's `Client` as an FFI object.

use std::path::PathBuf;
use std::sync::Arc;

use privcomm_core as core;
use tokio_util::sync::CancellationToken;

use crate::error::PrivcommError;
use crate::events::{spawn_listener, AudioSink, Delivery, EventListener, Subscription};
use crate::runtime::{run, runtime};
use crate::secret_store::{ForeignSecretStore, SecretStore};
use crate::types::{
    parse_id, CallInfo, CallStats, ClientConfig, ClientEvent, ConnectionState, Conversation,
    HistoryCursor, Message, SafetyNumber,
};

/// Most messages one `history` page may ask for.
const MAX_HISTORY_PAGE: u32 = 1000;

/// One Privcomm account on this device. Open it once per data directory and keep it for the
/// app's lifetime; every method may be called from any thread. `shutdown` it when done (a
/// client freed without it, by `close()`/`destroy()` or the garbage collector, shuts down
/// in the background).
#[derive(uniffi::Object)]
pub struct PrivcommClient {
    inner: core::Client,
    /// Cancelled on close; every subscription's token is a child of it.
    closed: CancellationToken,
}

impl Drop for PrivcommClient {
    fn drop(&mut self) {
        if self.closed.is_cancelled() {
            return;
        }
        self.closed.cancel();
        if let Ok(rt) = runtime() {
            let inner = self.inner.clone();
            rt.spawn(async move { inner.close().await });
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
    let secrets: Arc<dyn core::SecretStore> = Arc::new(ForeignSecretStore(secrets));
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
            return Err(PrivcommError::InvalidArgument {
                detail: "data_dir must not be empty".into(),
            });
        }
        let options = core::ClientOptions {
            call: config.call.unwrap_or_default().to_core()?,
        };
        let secrets: Arc<dyn core::SecretStore> = Arc::new(ForeignSecretStore(secrets));
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
        }))
    }

    /// Registers `phone_number` (international form, `+4915112345678`) with the relay,
    /// creating this device's keys on first use; returns the user id. Safe to repeat.
    pub async fn register(&self, phone_number: String) -> Result<String, PrivcommError> {
        let client = self.inner.clone();
        run(async move { client.register(&phone_number).await })
            .await
            .map(|id| id.to_string())
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

    /// Hangs up any call, disconnects, stops every listener and closes the store. The
    /// client is unusable afterwards (`Closed`). (Not `close`: Kotlin's `AutoCloseable.close`
    /// frees the object itself, which also shuts the client down.)
    pub async fn shutdown(&self) -> Result<(), PrivcommError> {
        self.closed.cancel();
        let client = self.inner.clone();
        run(async move {
            client.close().await;
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
            return Err(PrivcommError::Closed);
        }
        let subscription = spawn_listener(
            "privcomm-events",
            self.inner.events(),
            self.closed.child_token(),
            move |delivery| {
                let event = match delivery {
                    Delivery::Item(event) => ClientEvent::from(event),
                    Delivery::Missed(count) => ClientEvent::EventsMissed { count },
                };
                listener.on_event(event)
            },
        )?;
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

    /// Queues `text` (1 to 64 KiB of UTF-8) for `peer` and returns its message id at once;
    /// it is sent whenever online and survives restarts.
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

    /// Messages with `peer`, newest first, at most `limit` (1 to 1,000); pass the last
    /// message's cursor as `before` to page back.
    pub async fn history(
        &self,
        peer: String,
        before: Option<HistoryCursor>,
        limit: u32,
    ) -> Result<Vec<Message>, PrivcommError> {
        let peer = parse_id("peer", &peer)?;
        let before = before.map(|c| c.to_core()).transpose()?;
        if limit == 0 || limit > MAX_HISTORY_PAGE {
            return Err(PrivcommError::InvalidArgument {
                detail: format!("limit must be 1 to {MAX_HISTORY_PAGE}"),
            });
        }
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
            return Err(PrivcommError::InvalidArgument {
                detail: "pcm must hold whole 16-bit samples".into(),
            });
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
            return Err(PrivcommError::Closed);
        }
        let subscription = spawn_listener(
            "privcomm-audio",
            self.inner.audio_frames(),
            self.closed.child_token(),
            move |delivery| match delivery {
                Delivery::Item(frame) => {
                    let pcm = frame.samples.iter().flat_map(|s| s.to_le_bytes()).collect();
                    sink.on_audio_frame(frame.call_id.to_string(), pcm)
                }
                // Late audio is worthless; the decoder's concealment covers the gap.
                Delivery::Missed(_) => Ok(()),
            },
        )?;
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
