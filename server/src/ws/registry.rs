//! Who is online: one live connection per user, and the channel to push new messages to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::PendingMessage;

/// Live pushes queued per connection before further ones are dropped (they stay in storage
/// and the connection re-reads them). Items are a pointer and a tag, so an idle
/// connection's channel (allocated in blocks of 32 slots) stays small.
const PUSH_QUEUE: usize = 1024;

/// What a connection is handed live, in the order it was handed.
#[derive(Debug)]
pub enum Live {
    /// A message this instance's writer just stored.
    Message(Arc<PendingMessage>),
    /// Rows the bus reader read for a wake-up from another instance.
    Read(Box<BusRead>),
}

/// Rows read from storage for a bus wake-up (see `Delivery::on_bus_read`).
#[derive(Debug)]
pub struct BusRead {
    /// The connection they were read for (`Registration::conn_id`): its `seen_up_to`
    /// chose `after`, so another connection of the user must not take them.
    pub conn: u64,
    /// The rows are the recipient's messages after this `seq`...
    pub after: i64,
    /// ...at most this many of them.
    pub limit: usize,
    /// The lowest position the wake-ups named.
    pub woken: i64,
    /// The rows, in `seq` order.
    pub rows: Vec<PendingMessage>,
}

struct Entry {
    conn_id: u64,
    /// The registration generation its token was issued for.
    generation: u32,
    push: mpsc::Sender<Live>,
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
    /// The connection's `Delivery::seen_up_to`, published for the bus reader.
    pub seen_up_to: AtomicI64,
    /// True while the connection is caught up (published for the bus reader: rows read
    /// for a connection that is scanning would be dropped).
    pub caught_up: AtomicBool,
    /// True from the bus reader's choice to read for this connection until the
    /// connection takes the rows (or the read failed): at most one read waits for it.
    pub read_pending: AtomicBool,
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
            seen_up_to: AtomicI64::new(0),
            caught_up: AtomicBool::new(false),
            read_pending: AtomicBool::new(false),
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
    /// Live messages and bus reads for this connection.
    pub pushes: mpsc::Receiver<Live>,
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

    /// Registers `user`'s new connection (its token of registration `generation`),
    /// replacing (and signalling) an older one.
    pub fn register(self: &Arc<Self>, user: Uuid, generation: u32) -> Result<Registration, Full> {
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
                    generation,
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

    /// Closes `user`'s connection if its token is of registration `up_to_generation` or
    /// older (the account was registered on a new device): it ends as if replaced (4409),
    /// and reconnecting needs a token of the new device.
    pub fn displace(&self, user: Uuid, up_to_generation: u32) {
        self.close_if(user, |entry| entry.generation <= up_to_generation);
    }

    /// Closes `user`'s connection `conn`, if it is still the one here (the user connected
    /// on another instance after it): a newer one here stays.
    pub fn displace_connection(&self, user: Uuid, conn: u64) {
        self.close_if(user, |entry| entry.conn_id == conn);
    }

    fn close_if(&self, user: Uuid, applies: impl Fn(&Entry) -> bool) {
        let old = {
            let mut entries = self.lock();
            match entries.get(&user) {
                Some(entry) if applies(entry) => entries.remove(&user),
                _ => None,
            }
        };
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

    /// Chooses a bus read for a wake-up at `woken`: `user`'s connection here and where to
    /// read from (as `Delivery::on_wake` would), counting the read as pending for it. A
    /// connection that is scanning, or already has a read waiting for it, is woken to read
    /// storage itself instead; `None` then, and when `user` is not connected here.
    pub fn bus_read_start(&self, user: Uuid, woken: i64) -> Option<(u64, i64)> {
        let (conn, signals) = self
            .lock()
            .get(&user)
            .map(|e| (e.conn_id, e.signals.clone()))?;
        if !signals.caught_up.load(Ordering::Acquire)
            || signals.read_pending.swap(true, Ordering::AcqRel)
        {
            Self::woken(&signals, woken);
            return None;
        }
        let seen = signals.seen_up_to.load(Ordering::Acquire);
        Some((conn, woken.saturating_sub(1).min(seen)))
    }

    /// A bus read chosen by `bus_read_start` will not come (the read failed): `user`'s
    /// connection `conn`, if still here, reads storage itself.
    pub fn bus_read_failed(&self, user: Uuid, conn: u64, woken: i64) {
        let signals = self
            .lock()
            .get(&user)
            .filter(|e| e.conn_id == conn)
            .map(|e| e.signals.clone());
        if let Some(signals) = signals {
            signals.read_pending.store(false, Ordering::Release);
            Self::woken(&signals, woken);
        }
    }

    fn woken(signals: &Signals, seq: i64) {
        signals.woken_from.fetch_min(seq, Ordering::AcqRel);
        signals.wake.notify_one();
    }

    /// Hands rows read for a wake-up to `user`'s connection, if it is still the one they
    /// were read for; when its queue is full it reads storage itself instead.
    pub fn hand_read(&self, user: Uuid, read: BusRead) {
        let target = {
            let entries = self.lock();
            entries
                .get(&user)
                .filter(|e| e.conn_id == read.conn)
                .map(|e| (e.push.clone(), e.signals.clone()))
        };
        if let Some((push, signals)) = target {
            if let Err(refused) = push.try_send(Live::Read(Box::new(read))) {
                signals.read_pending.store(false, Ordering::Release);
                if let Live::Read(read) = refused.into_inner() {
                    Self::woken(&signals, read.woken);
                }
            }
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
        if let Err(mpsc::error::TrySendError::Full(_)) = push.try_send(Live::Message(message)) {
            signals.push_dropped.store(true, Ordering::Release);
            signals.wake.notify_one();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_for(conn: u64, woken: i64) -> BusRead {
        BusRead {
            conn,
            after: woken - 1,
            limit: 8,
            woken,
            rows: Vec::new(),
        }
    }

    #[test]
    fn a_connection_has_at_most_one_bus_read_waiting_and_only_its_own() {
        let registry = Arc::new(ConnectionRegistry::new(10));
        let user = Uuid::new_v4();
        let mut first = registry.register(user, 0).expect("room");
        assert_eq!(
            registry.bus_read_start(user, 5),
            None,
            "scanning: it reads storage itself"
        );
        assert_eq!(first.signals.woken_from.load(Ordering::Acquire), 5);
        first.signals.caught_up.store(true, Ordering::Release);
        first.signals.seen_up_to.store(3, Ordering::Release);
        let conn = first.conn_id();
        assert_eq!(registry.bus_read_start(user, 7), Some((conn, 3)));
        assert_eq!(
            registry.bus_read_start(user, 9),
            None,
            "a read already waits for it"
        );
        registry.hand_read(user, read_for(conn, 7));
        assert!(matches!(first.pushes.try_recv(), Ok(Live::Read(_))));
        assert!(first.pushes.try_recv().is_err(), "one read, not two");

        // Rows read for the connection before go to no other.
        let mut second = registry.register(user, 0).expect("room");
        registry.hand_read(user, read_for(conn, 9));
        assert!(second.pushes.try_recv().is_err());
    }
}
