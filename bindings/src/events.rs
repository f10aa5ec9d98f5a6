//! Event and audio listeners implemented by the app, and the threads that feed them.
//!
//! Each subscription gets its own thread that waits for the next item and calls the
//! listener with no lock held, so a slow or blocking listener delays only itself (and
//! misses items once it is 4,096 events or 5 s of audio behind; see `EventsMissed`), and
//! a listener that calls back into the client cannot deadlock it. Listeners run on that
//! background thread, never the app's main thread: post to the UI thread yourself.

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::error::PrivcommError;
use crate::runtime::runtime;
use crate::types::ClientEvent;

/// What a listener throws; the core logs that it failed (not the event) and carries on.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ListenerError {
    /// The listener failed.
    #[error("listener failed: {detail}")]
    Failed {
        /// Why.
        detail: String,
    },
}

/// Any exception thrown by a listener counts as a failure of that one call.
impl From<uniffi::UnexpectedUniFFICallbackError> for ListenerError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed {
            detail: crate::error::first_line(&e.reason),
        }
    }
}

/// Receives the client's events, in order, on a background thread.
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    /// One event. Throwing does not stop later events.
    fn on_event(&self, event: ClientEvent) -> Result<(), ListenerError>;
}

/// Receives the peer's decoded voice during calls.
#[uniffi::export(with_foreign)]
pub trait AudioSink: Send + Sync {
    /// One 20 ms frame of call `call_id`: 960 samples of 48 kHz mono 16-bit PCM,
    /// little-endian (1,920 bytes, ready for `AudioTrack.write` with `ENCODING_PCM_16BIT`).
    fn on_audio_frame(&self, call_id: String, pcm: Vec<u8>) -> Result<(), ListenerError>;
}

/// A running listener. It runs until `cancel` or until its client is closed; dropping
/// this handle does not stop it.
#[derive(uniffi::Object)]
pub struct Subscription {
    stop: CancellationToken,
}

#[uniffi::export]
impl Subscription {
    /// Stops the listener: it is called no more once any call in progress returns.
    pub fn cancel(&self) {
        self.stop.cancel();
    }

    /// Whether it was cancelled (or its client closed).
    pub fn is_cancelled(&self) -> bool {
        self.stop.is_cancelled()
    }
}

/// One item for a listener: a value, or how many were dropped because it fell behind.
pub(crate) enum Delivery<T> {
    Item(T),
    Missed(u64),
}

/// Starts a thread called `name` that hands each item of `items` to `deliver` until `stop`
/// is cancelled or the channel closes.
pub(crate) fn spawn_listener<T, F>(
    name: &str,
    mut items: broadcast::Receiver<T>,
    stop: CancellationToken,
    mut deliver: F,
) -> Result<Subscription, PrivcommError>
where
    T: Clone + Send + 'static,
    F: FnMut(Delivery<T>) -> Result<(), ListenerError> + Send + 'static,
{
    let handle = runtime()?.handle().clone();
    let thread_stop = stop.clone();
    let thread_name = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || loop {
            let next = handle.block_on(async {
                tokio::select! {
                    biased;
                    _ = thread_stop.cancelled() => None,
                    item = items.recv() => Some(item),
                }
            });
            let delivery = match next {
                None | Some(Err(RecvError::Closed)) => break,
                Some(Ok(item)) => Delivery::Item(item),
                Some(Err(RecvError::Lagged(count))) => Delivery::Missed(count),
            };
            if thread_stop.is_cancelled() {
                break;
            }
            if deliver(delivery).is_err() {
                // The listener's own message may quote app data; only the fact is logged.
                tracing::warn!(listener = %thread_name, "a listener threw; it keeps receiving");
            }
        })
        .map_err(|e| PrivcommError::Internal {
            detail: format!("cannot start the listener thread: {e}"),
        })?;
    Ok(Subscription { stop })
}
