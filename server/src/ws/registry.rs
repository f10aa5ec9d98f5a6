//! Who is online: one live connection per user, and the channel to push new messages to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::PendingMessage;

/// Live pushes queued per connection before further ones are dropped (they stay in storage
/// and the connection re-reads them). Items are `Arc`s so an idle connection's channel
/// (allocated in blocks of 32 slots) stays small.
const PUSH_QUEUE: usize = 1024;

struct Entry {
    conn_id: u64,
    push: mpsc::Sender<Arc<PendingMessage>>,
    signals: Arc<Signals>,
    ended: CancellationToken,
}

/// Out-of-band signals to one connection.
#[derive(Debug)]
pub struct Signals {
    /// Cancelled when another connection of the same user replaces this one.
    pub replaced: CancellationToken,
    /// Set when a push was dropped, or events of the bus may have been lost; the connection
    /// must re-read storage.
    pub push_dropped: AtomicBool,
    /// The lowest mailbox position a bus wake-up named since the connection last looked
    /// (`NOT_WOKEN`: none): a message stored by another instance.
    pub woken_from: AtomicI64,
    /// Wakes the connection to look at `push_dropped` and `woken_from`.
    pub wake: Notify,
}

/// `Signals::woken_from` when no wake-up is waiting.
pub const NOT_WOKEN: i64 = i64::MAX;

impl Default for Signals {
    fn default() -> Self {
        Self {
            replaced: CancellationToken::new(),
            push_dropped: AtomicBool::new(false),
            woken_from: AtomicI64::new(NOT_WOKEN),
            wake: Notify::new(),
        }
    }
}

/// The registry is full.
#[derive(Debug, thiserror::Error)]
#[error("connection limit reached")]
pub struct Full;

/// A registered connection; unregisters itself on drop.
pub struct Registration {
    registry: Arc<ConnectionRegistry>,
    user: Uuid,
    conn_id: u64,
    /// Live messages for this connection.
    pub pushes: mpsc::Receiver<Arc<PendingMessage>>,
    /// Signals for this connection.
    pub signals: Arc<Signals>,
    /// The connection of the same user this one replaced, if any: cancelled once that
    /// connection has ended (every frame it read handed to the writer).
    pub replaced: Option<CancellationToken>,
    /// Cancelled when this registration is dropped, at the end of its connection.
    ended: CancellationToken,
}

impl Registration {
    /// This connection's number, unique within this relay process.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(self.user, self.conn_id);
        self.ended.cancel();
    }
}

/// All live connections, keyed by user.
pub struct ConnectionRegistry {
    entries: Mutex<HashMap<Uuid, Entry>>,
    max: usize,
    next_id: AtomicU64,
}

impl ConnectionRegistry {
    /// An empty registry holding at most `max` users' connections.
    pub fn new(max: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max,
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (single
        // insert/remove calls), so a poisoned lock is still safe to use.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `user` could connect now: there is a free slot, or `user` already holds one
    /// (a reconnect replaces the old connection rather than taking a new slot).
    pub fn has_room_for(&self, user: Uuid) -> bool {
        let entries = self.lock();
        entries.len() < self.max || entries.contains_key(&user)
    }

    /// Registers `user`'s new connection, replacing (and signalling) an older one.
    pub fn register(self: &Arc<Self>, user: Uuid) -> Result<Registration, Full> {
        let (push, pushes) = mpsc::channel(PUSH_QUEUE);
        let signals = Arc::new(Signals::default());
        let ended = CancellationToken::new();
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let old = {
            let mut entries = self.lock();
            if !entries.contains_key(&user) && entries.len() >= self.max {
                return Err(Full);
            }
            entries.insert(
                user,
                Entry {
                    conn_id,
                    push,
                    signals: signals.clone(),
                    ended: ended.clone(),
                },
            )
        };
        let replaced = old.map(|old| {
            old.signals.replaced.cancel();
            old.ended
        });
        Ok(Registration {
            registry: self.clone(),
            user,
            conn_id,
            pushes,
            signals,
            replaced,
            ended,
        })
    }

    /// True if `user` has a live connection here.
    pub fn is_connected(&self, user: Uuid) -> bool {
        self.lock().contains_key(&user)
    }

    /// Closes `user`'s connection, if any (its account was registered on a new device):
    /// it ends as if replaced (4409), and reconnecting needs a token of the new device.
    pub fn displace(&self, user: Uuid) {
        let old = self.lock().remove(&user);
        if let Some(old) = old {
            old.signals.replaced.cancel();
        }
    }

    fn remove(&self, user: Uuid, conn_id: u64) {
        let mut entries = self.lock();
        if entries.get(&user).is_some_and(|e| e.conn_id == conn_id) {
            entries.remove(&user);
        }
    }

    /// Tells `user`'s connection, if online, to read its mailbox from storage again (a
    /// write whose outcome is unknown may have stored messages for it).
    pub fn rescan(&self, user: Uuid) {
        let signals = self.lock().get(&user).map(|e| e.signals.clone());
        if let Some(signals) = signals {
            signals.push_dropped.store(true, Ordering::Release);
            signals.wake.notify_one();
        }
    }

    /// Tells every connection to read its mailbox again (the bus may have lost events).
    pub fn rescan_all(&self) {
        let all: Vec<Arc<Signals>> = self.lock().values().map(|e| e.signals.clone()).collect();
        for signals in all {
            signals.push_dropped.store(true, Ordering::Release);
            signals.wake.notify_one();
        }
    }

    /// Tells `user`'s connection, if here, that another instance stored a message for it at
    /// mailbox position `seq` (the bus carries ids only: the connection reads it).
    pub fn wake(&self, user: Uuid, seq: i64) {
        let signals = self.lock().get(&user).map(|e| e.signals.clone());
        if let Some(signals) = signals {
            signals.woken_from.fetch_min(seq, Ordering::AcqRel);
            signals.wake.notify_one();
        }
    }

    /// Hands a newly stored message to its recipient's connection, if online here. Never
    /// blocks: when the connection is behind, it is told to re-read storage instead.
    /// False when the recipient has no connection here.
    pub fn push(&self, message: Arc<PendingMessage>) -> bool {
        let target = {
            let entries = self.lock();
            entries
                .get(&message.recipient)
                .map(|e| (e.push.clone(), e.signals.clone()))
        };
        let Some((push, signals)) = target else {
            return false;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = push.try_send(message) {
            signals.push_dropped.store(true, Ordering::Release);
            signals.wake.notify_one();
        }
        true
    }
}
