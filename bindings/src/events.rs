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
use crate::foreign::Abandoned;
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

/// A running listener. It runs until `cancel` or until its client is shut down (then it
/// is first handed what was already announced); dropping this handle does not stop it.
#[derive(uniffi::Object)]
pub struct Subscription {
    stop: CancellationToken,
    closed: CancellationToken,
}

#[uniffi::export]
impl Subscription {
    /// Stops the listener: it is called no more once any call in progress returns.
    pub fn cancel(&self) {
        self.stop.cancel();
    }

    /// Whether it was cancelled (or its client closed).
    pub fn is_cancelled(&self) -> bool {
        self.stop.is_cancelled() || self.closed.is_cancelled()
    }
}

/// One item for a listener: a value, or how many were dropped because it fell behind.
pub(crate) enum Delivery<T> {
    Item(T),
    Missed(u64),
}

/// Starts a thread called `name` that hands each item of `items` to `deliver`, until the
/// subscription is cancelled, the channel closes, or `closed` (the client shut down): then
/// what is still queued is handed over first, so nothing the core announced before it
/// closed is lost. Once the client is `abandoned` nothing is delivered any more. Returns
/// the subscription and the thread.
pub(crate) fn spawn_listener<T, F>(
    name: &str,
    mut items: broadcast::Receiver<T>,
    closed: CancellationToken,
    abandoned: Abandoned,
    mut deliver: F,
) -> Result<(Subscription, std::thread::JoinHandle<()>), PrivcommError>
where
    T: Clone + Send + 'static,
    F: FnMut(Delivery<T>) -> Result<(), ListenerError> + Send + 'static,
{
    let handle = runtime()?.handle().clone();
    let stop = CancellationToken::new();
    let thread_stop = stop.clone();
    let thread_closed = closed.clone();
    let thread_name = name.to_owned();
    let mut hand_over = move |delivery: Delivery<T>| {
        if abandoned.is_set() {
            return false;
        }
        if deliver(delivery).is_err() {
            // The listener's own message may quote app data; only the fact is logged.
            tracing::warn!(listener = %thread_name, "a listener threw; it keeps receiving");
        }
        true
    };
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || loop {
            let next = handle.block_on(async {
                tokio::select! {
                    biased;
                    _ = thread_stop.cancelled() => None,
                    _ = thread_closed.cancelled() => None,
                    item = items.recv() => Some(item),
                }
            });
            let delivery = match next {
                None if thread_closed.is_cancelled() && !thread_stop.is_cancelled() => {
                    // Shut down: hand over what the core announced before it closed.
                    loop {
                        let delivery = match items.try_recv() {
                            Ok(item) => Delivery::Item(item),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => Delivery::Missed(n),
                            Err(_) => break,
                        };
                        if thread_stop.is_cancelled() || !hand_over(delivery) {
                            break;
                        }
                    }
                    break;
                }
                None | Some(Err(RecvError::Closed)) => break,
                Some(Ok(item)) => Delivery::Item(item),
                Some(Err(RecvError::Lagged(count))) => Delivery::Missed(count),
            };
            if thread_stop.is_cancelled() || !hand_over(delivery) {
                break;
            }
        })
        .map_err(|e| PrivcommError::internal(format!("cannot start the listener thread: {e}")))?;
    Ok((Subscription { stop, closed }, thread))
}
