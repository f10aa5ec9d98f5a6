//! The routing bus: how relay instances of one database tell each other that a user has a
//! new message, connected elsewhere, or must be disconnected. It carries ids only, never a
//! payload, and nothing on it is needed to keep a message: the database holds every message,
//! and a connection that misses a wake-up finds its messages by rescanning its mailbox.
//!
//! Two implementations: in process (one instance, the default) and Redis sharded pub/sub
//! (`PRIVCOMM_REDIS_URL`). Events from other instances arrive on two channels: wake-ups,
//! which `reader` turns into mailbox reads for many users at once, and `Inbound` events,
//! which `dispatch` applies to this instance's connections.

pub mod dispatch;
pub mod in_process;
pub mod reader;
pub mod redis;
mod wire;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use uuid::Uuid;

/// A wake-up from another instance: a message was stored for this user at this mailbox
/// position. Wake-ups go straight to the bus reader (`reader.rs`), other events to
/// `dispatch`.
pub type Wake = (Uuid, i64);

/// An event for this instance to act on, other than a wake-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// `user` connected on another instance after connection `conn` here: `conn` must
    /// close (4409).
    Claimed {
        /// The user.
        user: Uuid,
        /// The connection here that closes (not a newer one of the same user).
        conn: u64,
    },
    /// `user` registered on a new device: its connections everywhere close (4409).
    Displaced {
        /// The user.
        user: Uuid,
        /// Connections of this registration generation or older close.
        up_to_generation: u32,
    },
    /// Events may have been lost (the bus reconnected, or its inbox overflowed): every
    /// connection here reads its mailbox again.
    Resync,
}

/// The state of the bus, for `/health` and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusState {
    /// One instance: there is no bus to lose.
    InProcess,
    /// Connected to Redis.
    Connected,
    /// Not connected to Redis (reconnecting): instances serve on, by rescanning.
    Disconnected,
}

impl BusState {
    /// The name `/health` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProcess => "in_process",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }
}

/// Work on the bus a connection waits for (bounded by the caller): a claim's wait for the
/// instance that held its user before, a release's notice to the one that claimed it.
pub type BusWait = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// How instances reach each other.
pub trait RoutingBus: Send + Sync {
    /// The bus's state now.
    fn state(&self) -> BusState;

    /// True when other instances exist: a wake-up may then be lost, so connections rescan
    /// their mailbox on their ping cycle.
    fn is_shared(&self) -> bool;

    /// `user` connected here as connection `conn`: listen for its events (from this call
    /// on), close its connection on other instances, and wait (the returned future, at most
    /// `wait`) until the instance that held it has committed that connection's writes (its
    /// acks). Every claim is answered by one `release`, whether or not the wait ran.
    fn claim(&self, user: Uuid, conn: u64, wait: Duration) -> BusWait;

    /// `user`'s connection `conn` here has ended and its writes are committed: stop
    /// counting it (from this call on), and tell an instance waiting in `claim` (the
    /// returned future; the relay awaits it before it stops, so a drain hands users over).
    fn release(&self, user: Uuid, conn: u64) -> BusWait;

    /// Messages were stored for these users, who are not connected here: wake their
    /// connections elsewhere. Best effort; never waits.
    fn stored(&self, wakes: &[(Uuid, i64)]);

    /// Closes `user`'s connections of registration `up_to_generation` or older on every
    /// other instance.
    fn displace(&self, user: Uuid, up_to_generation: u32);
}

/// Channel of events from the bus to `dispatch`; beyond this many waiting, events are
/// dropped and every connection rescans instead (`Inbound::Resync`).
pub const INBOUND_QUEUE: usize = 65_536;
