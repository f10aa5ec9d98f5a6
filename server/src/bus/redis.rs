//! The bus over Redis sharded pub/sub (Redis 7 or later). It connects to one Redis node;
//! each user's channel and presence key are named with one hash tag, so they would share a
//! shard on a Redis Cluster, but the cluster client (slot routing) is not used yet.
//!
//! - Each user connected here has a channel (`SSUBSCRIBE`d while connected here). Other
//!   instances publish to it: `s <seq>` when they stored a message for the user,
//!   `c <holder> <stamp>` when the user connected there, `r <holder>` when the connection
//!   before has ended and its writes are committed, `d <generation>` when the user
//!   registered on a new device.
//! - A presence key names the connection that holds the user and its claim's stamp
//!   (`<stamp> <instance>/<connection>`), with a TTL refreshed while it lives, so a new
//!   connection knows whether another instance may still have acks of the user's to
//!   commit, and waits for its `r` (bounded). Stamps order claims: a connection closes for
//!   a newer claim only, so a late event never closes the newest connection.
//! - The relay owns the reconnect loop: on every (re)connection it subscribes again to every
//!   channel of its connections and tells them to rescan (`Inbound::Resync`), since events
//!   published meanwhile are gone.
//! - Channels are never unsubscribed one by one: redis-rs does not match a raw
//!   `SUNSUBSCRIBE`'s confirmation to its request (redis-rs#2533), which shifts every later
//!   reply on the connection by one. Instead, once the channels of users no longer here
//!   outnumber the rest, the bus opens a new connection subscribed to the live ones and
//!   drops the old one; the two overlap, so no event is lost (a few arrive twice, which is
//!   harmless: every event is idempotent).
//!
//! Everything here is best effort: Redis being down costs latency (connections find their
//! messages by rescanning), never a message.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tracing::Instrument;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::reader::WAKE_QUEUE;
use super::wire::{self, Event};
use super::{BusState, BusWait, Inbound, RoutingBus, Wake, INBOUND_QUEUE};
use crate::metrics::Metrics;

/// Publishes waiting to be sent; beyond this they are dropped (connections rescan).
const OUTBOX: usize = 65_536;
/// Publishes sent in one pipeline.
const PUBLISH_BATCH: usize = 512;
/// How long a presence key outlives the last refresh: an instance killed without closing
/// its connections leaves keys that make a reconnecting user wait (bounded) until then.
const PRESENCE_TTL: Duration = Duration::from_secs(60);
/// How often the presence keys of this instance's connections are refreshed.
const PRESENCE_REFRESH: Duration = Duration::from_secs(20);
/// How often the bus checks on things (dropped events, presence refresh, heartbeat).
const TICK: Duration = Duration::from_secs(1);
/// How often the connection is checked with a PING (a silent network failure).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A command that takes longer fails, and the connection is made again.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Users subscribed again per pipeline after a reconnect.
const RESUBSCRIBE_BATCH: usize = 256;
/// Channels of users no longer here tolerated on a connection, beyond as many as there are
/// live ones, before it is replaced by a fresh one.
const STALE_CHANNELS: usize = 4096;

/// The count in a `PUBSUB SHARDNUMSUB` answer for one channel (a flat array in RESP2, a
/// map in RESP3). Unreadable: assume the holder may be there (wait, bounded).
fn subscriber_count(answer: &Value) -> i64 {
    match answer {
        Value::Array(items) => match items.get(1) {
            Some(Value::Int(n)) => *n,
            _ => i64::MAX,
        },
        Value::Map(pairs) => match pairs.first() {
            Some((_, Value::Int(n))) => *n,
            _ => i64::MAX,
        },
        _ => i64::MAX,
    }
}

/// `PRESENCE_TTL` as Redis's `PX` takes it.
fn presence_ttl_ms() -> u64 {
    u64::try_from(PRESENCE_TTL.as_millis()).unwrap_or(u64::MAX)
}

/// Names this connection in the presence key (`KEYS[1]`) with a stamp larger than the
/// claim it replaces (Redis's clock in microseconds, or one more), and tells the user's
/// channel (`KEYS[2]`), in one step: the order of the stamps is the order of the claims and
/// of their events. Returns the stamp and the value before (nil if none).
const CLAIM_SCRIPT: &str = r"
local before = redis.call('GET', KEYS[1])
local now = redis.call('TIME')
local stamp = tonumber(now[1]) * 1000000 + tonumber(now[2])
if before then
  local previous = tonumber(string.match(before, '^(%d+) '))
  if previous and previous >= stamp then stamp = previous + 1 end
end
local text = string.format('%d', stamp)
redis.call('SET', KEYS[1], text .. ' ' .. ARGV[1], 'PX', ARGV[2])
redis.call('SPUBLISH', KEYS[2], 'c ' .. ARGV[1] .. ' ' .. text)
return {text, before}
";

/// Deletes the presence key if this connection holds it; otherwise returns its holder.
const RELEASE_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then return false end
local holder = string.match(current, '^%d+ (.+)$') or current
if holder == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return false
end
return holder
";

/// Extends the presence key's TTL if this connection still holds it.
const REFRESH_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^%d+ (.+)$') == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// After events may have been lost (a reconnect, an overflow): keeps this connection's
/// claim (stamp `ARGV[3]`) if it is the newest, naming it again (a restarted Redis lost the
/// key; a claim made while Redis was down was never told) and telling the channel, so an
/// older connection elsewhere closes. Returns 1 if a newer claim holds the user: this
/// connection must close.
const RECONCILE_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local stamp, holder = string.match(current, '^(%d+) (.+)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 0
  end
  if stamp and tonumber(stamp) > tonumber(ARGV[3]) then return 1 end
end
redis.call('SET', KEYS[1], ARGV[3] .. ' ' .. ARGV[1], 'PX', ARGV[2])
redis.call('SPUBLISH', KEYS[2], 'c ' .. ARGV[1] .. ' ' .. ARGV[3])
return 0
";

/// Now in microseconds since the epoch: the stamp of a claim Redis has not answered (it is
/// down), compared with Redis's own when it is back.
fn local_stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
#[error("PRIVCOMM_REDIS_URL is not a usable Redis URL: {0}")]
pub struct BadRedisUrl(String);

/// This instance's connections of one user.
#[derive(Debug, Clone, Copy)]
struct Listener {
    /// Connections of the user here (a replaced one may still be closing).
    connections: usize,
    /// The newest one: the one the presence key should name.
    latest: u64,
    /// The stamp of `latest`'s claim: Redis's once it answered (`settled`), until then the
    /// time it connected.
    stamp: u64,
    /// True once Redis has ordered `latest`'s claim among the others.
    settled: bool,
    /// The newest claim of another instance heard of while `latest`'s was unanswered.
    newest_elsewhere: u64,
    /// True while `latest`'s claim script is on its way: a reconcile leaves it alone (it
    /// would name the connection before the claim does, and the claim would then not wait
    /// for the instance before).
    claiming: bool,
}

struct Inner {
    instance: String,
    client: redis::Client,
    /// The live connection and its generation (each reconnect is a new generation).
    connection: RwLock<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    /// Generations handed out so far: every attempt gets a new one, so a late push of a
    /// failed attempt never matches a later connection.
    attempts: AtomicU64,
    /// Wakes the supervisor when the connection of the current generation failed.
    broken: Notify,
    connected: AtomicBool,
    /// Set when an inbound event was dropped (it may have been a claim): every connection
    /// must rescan, and claims are settled again.
    overflowed: AtomicBool,
    /// Set when a wake-up was dropped: every connection must rescan.
    wakes_lost: AtomicBool,
    inbound: mpsc::Sender<Inbound>,
    /// Wake-ups, straight to the bus reader.
    wakes: mpsc::Sender<Wake>,
    outbox: mpsc::Sender<(Uuid, Event)>,
    listeners: Mutex<HashMap<Uuid, Listener>>,
    /// The channels the current connection is subscribed to (live users and stale ones).
    subscribed: Mutex<HashSet<Uuid>>,
    /// Connections here waiting in `claim` for the instance before to release the user.
    waiters: Mutex<HashMap<String, oneshot::Sender<()>>>,
    metrics: Arc<Metrics>,
    claim_script: redis::Script,
    release_script: redis::Script,
}

/// A started bus and the events it receives for this instance.
pub struct BusStarted {
    /// The bus.
    pub bus: Arc<RedisBus>,
    /// Wake-ups, for `reader::run`.
    pub wakes: mpsc::Receiver<Wake>,
    /// Every other event, for `dispatch::run`.
    pub events: mpsc::Receiver<Inbound>,
}

/// The Redis routing bus.
pub struct RedisBus {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Single map operations under the lock: a panic cannot leave them half done.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedisBus {
    /// Starts the bus: a supervisor that keeps a connection to `url` (starting without one
    /// if Redis is down) and a publisher. Events for this instance arrive on the receivers:
    /// wake-ups (for `reader::run`) and the rest (for `dispatch::run`).
    pub fn start(
        url: &str,
        instance: String,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<BusStarted, BadRedisUrl> {
        // The error text of a bad URL never repeats the URL (it may hold a password).
        let info = url
            .into_connection_info()
            .map_err(|e| BadRedisUrl(format!("{:?}", e.kind())))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        // Wake-ups and limit checks are small writes that must leave at once: with Nagle's
        // algorithm one may wait for the acknowledgement of the one before.
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let client = redis::Client::open(info.set_redis_settings(settings).set_tcp_settings(tcp))
            .map_err(|e| BadRedisUrl(format!("{:?}", e.kind())))?;
        let (inbound, events) = mpsc::channel(INBOUND_QUEUE);
        let (wakes, woken) = mpsc::channel(WAKE_QUEUE);
        let (outbox, outgoing) = mpsc::channel(OUTBOX);
        // Holders must differ between processes even if two were given one instance id (a
        // replicated deployment's shared environment): connection numbers restart at 1.
        let instance = format!("{instance}.{}", &Uuid::new_v4().simple().to_string()[..8]);
        let inner = Arc::new(Inner {
            instance,
            client,
            connection: RwLock::new(None),
            generation: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            broken: Notify::new(),
            connected: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            wakes_lost: AtomicBool::new(false),
            inbound,
            wakes,
            outbox,
            listeners: Mutex::new(HashMap::new()),
            subscribed: Mutex::new(HashSet::new()),
            waiters: Mutex::new(HashMap::new()),
            metrics,
            claim_script: redis::Script::new(CLAIM_SCRIPT),
            release_script: redis::Script::new(RELEASE_SCRIPT),
        });
        tokio::spawn(supervise(inner.clone(), shutdown.clone()).in_current_span());
        tokio::spawn(publish(Arc::downgrade(&inner), outgoing).in_current_span());
        Ok(BusStarted {
            bus: Arc::new(Self { inner }),
            wakes: woken,
            events,
        })
    }
}

impl Inner {
    fn next_generation(&self) -> u64 {
        self.attempts.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn holder(&self, conn: u64) -> String {
        wire::holder(&self.instance, conn)
    }

    fn connection(&self) -> Option<(u64, MultiplexedConnection)> {
        self.connection
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_connection(&self, connection: Option<(u64, MultiplexedConnection)>) {
        let up = connection.is_some();
        *self.connection.write().unwrap_or_else(|p| p.into_inner()) = connection;
        self.connected.store(up, Ordering::Release);
        self.metrics.bus_connected.set(i64::from(up));
    }

    /// A command on the connection of `generation` failed: make a new one (once).
    fn failed(&self, generation: u64, error: &redis::RedisError) {
        if self.generation.load(Ordering::Acquire) == generation {
            tracing::warn!(error = ?error.kind(), "redis command failed; reconnecting");
            self.broken.notify_one();
        }
    }

    fn inbound(&self, event: Inbound) {
        if self.inbound.try_send(event).is_err() {
            self.overflowed.store(true, Ordering::Release);
        }
    }

    /// A push from Redis on the connection of `generation`.
    fn on_push(&self, generation: u64, push: PushInfo) {
        match push.kind {
            PushKind::SMessage => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                else {
                    return;
                };
                let (Some(user), Some(event)) =
                    (wire::user_of_channel(channel), Event::decode(payload))
                else {
                    return;
                };
                self.on_event(user, event);
            }
            PushKind::Disconnection if self.generation.load(Ordering::Acquire) == generation => {
                self.broken.notify_one();
            }
            _ => {}
        }
    }

    fn on_event(&self, user: Uuid, event: Event) {
        match event {
            Event::Stored(seq) => {
                if self.wakes.try_send((user, seq)).is_err() {
                    self.wakes_lost.store(true, Ordering::Release);
                }
            }
            Event::Claimed(holder, stamp) if wire::instance_of(&holder) != self.instance => {
                self.claimed_elsewhere(user, stamp)
            }
            Event::Claimed(..) => {}
            Event::Released(holder) => {
                if let Some(waiter) = lock(&self.waiters).remove(&holder) {
                    let _ = waiter.send(());
                }
            }
            Event::Displaced(up_to_generation) => self.inbound(Inbound::Displaced {
                user,
                up_to_generation,
            }),
        }
    }

    /// Another instance claimed `user` with `stamp`: the connection here closes if its own
    /// claim is older; while Redis has not answered its claim, that is decided then.
    fn claimed_elsewhere(&self, user: Uuid, stamp: u64) {
        let closing = {
            let mut listeners = lock(&self.listeners);
            let Some(listener) = listeners.get_mut(&user) else {
                return;
            };
            if listener.settled {
                (stamp > listener.stamp).then_some(listener.latest)
            } else {
                listener.newest_elsewhere = listener.newest_elsewhere.max(stamp);
                None
            }
        };
        if let Some(conn) = closing {
            self.inbound(Inbound::Claimed { user, conn });
        }
    }

    /// Redis ordered connection `conn`'s claim of `user` at `stamp`: it closes if a newer
    /// claim elsewhere was heard of meanwhile.
    fn settle(&self, user: Uuid, conn: u64, stamp: u64) {
        let closing = {
            let mut listeners = lock(&self.listeners);
            let Some(listener) = listeners.get_mut(&user).filter(|l| l.latest == conn) else {
                return;
            };
            if listener.settled && stamp < listener.stamp {
                return;
            }
            listener.stamp = stamp;
            listener.settled = true;
            listener.newest_elsewhere > stamp
        };
        if closing {
            self.inbound(Inbound::Claimed { user, conn });
        }
    }

    /// Counts a connection of `user` in.
    fn listen(&self, user: Uuid, conn: u64) {
        let mut listeners = lock(&self.listeners);
        let listener = listeners.entry(user).or_insert(Listener {
            connections: 0,
            latest: conn,
            stamp: 0,
            settled: false,
            newest_elsewhere: 0,
            claiming: false,
        });
        listener.connections = listener.connections.saturating_add(1);
        listener.latest = conn;
        listener.stamp = local_stamp();
        listener.settled = false;
        listener.newest_elsewhere = 0;
        listener.claiming = false;
    }

    /// Marks connection `conn`'s claim of `user` as on its way to Redis, or back.
    fn set_claiming(&self, user: Uuid, conn: u64, claiming: bool) {
        if let Some(listener) = lock(&self.listeners)
            .get_mut(&user)
            .filter(|l| l.latest == conn)
        {
            listener.claiming = claiming;
        }
    }

    /// Counts a connection of `user` out.
    fn unlisten(&self, user: Uuid) {
        let mut listeners = lock(&self.listeners);
        if let Some(listener) = listeners.get_mut(&user) {
            listener.connections = listener.connections.saturating_sub(1);
            if listener.connections == 0 {
                listeners.remove(&user);
            }
        }
    }

    /// Each user connected here, with the newest of its connections.
    fn held_here(&self) -> Vec<(Uuid, u64)> {
        lock(&self.listeners)
            .iter()
            .map(|(user, l)| (*user, l.latest))
            .collect()
    }

    /// Each user connected here whose claim is not on its way to Redis (and, with
    /// `unsettled_only`, not yet settled), with the newest of its connections and its
    /// claim's stamp.
    fn claims_here(&self, unsettled_only: bool) -> Vec<(Uuid, u64, u64)> {
        lock(&self.listeners)
            .iter()
            .filter(|(_, l)| !l.claiming && (!unsettled_only || !l.settled))
            .map(|(user, l)| (*user, l.latest, l.stamp))
            .collect()
    }

    /// Settles every claim here against the presence keys (`RECONCILE_SCRIPT`): after
    /// events may have been lost, each user keeps its newest connection, here or elsewhere.
    async fn reconcile(
        &self,
        connection: &mut MultiplexedConnection,
        unsettled_only: bool,
    ) -> redis::RedisResult<()> {
        let claims = self.claims_here(unsettled_only);
        let ttl = presence_ttl_ms();
        for chunk in claims.chunks(RESUBSCRIBE_BATCH) {
            let mut pipe = redis::pipe();
            for (user, conn, stamp) in chunk {
                // EVAL, not EVALSHA: the script cache is gone after a Redis restart.
                pipe.cmd("EVAL")
                    .arg(RECONCILE_SCRIPT)
                    .arg(2)
                    .arg(wire::presence_key(*user))
                    .arg(wire::channel(*user))
                    .arg(self.holder(*conn))
                    .arg(ttl)
                    .arg(stamp);
            }
            let outcomes: Vec<i64> = pipe.query_async(connection).await?;
            for ((user, conn, stamp), newer_elsewhere) in chunk.iter().zip(outcomes) {
                if newer_elsewhere == 1 {
                    self.inbound(Inbound::Claimed {
                        user: *user,
                        conn: *conn,
                    });
                } else {
                    self.settle(*user, *conn, *stamp);
                }
            }
        }
        Ok(())
    }

    /// True when the connection carries many more channels than users connected here.
    fn too_many_stale_channels(&self) -> bool {
        let live = lock(&self.listeners).len();
        lock(&self.subscribed).len() > live.saturating_mul(2).saturating_add(STALE_CHANNELS)
    }

    /// A new connection, subscribed to the channel of every user connected here; also
    /// returns those users.
    async fn connect(
        self: &Arc<Self>,
        generation: u64,
    ) -> redis::RedisResult<(MultiplexedConnection, HashSet<Uuid>)> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_push_sender(move |push: PushInfo| {
                if let Some(inner) = weak.upgrade() {
                    inner.on_push(generation, push);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // Everyone connected here listens again, then each claim is settled against the
        // others (a restarted Redis lost every key; claims made while it was down were
        // never told).
        let listeners = self.held_here();
        for chunk in listeners.chunks(RESUBSCRIBE_BATCH) {
            let mut pipe = redis::pipe();
            for (user, _) in chunk {
                pipe.cmd("SSUBSCRIBE").arg(wire::channel(*user)).ignore();
            }
            pipe.exec_async(&mut connection).await?;
        }
        self.reconcile(&mut connection, false).await?;
        let subscribed: HashSet<Uuid> = listeners.iter().map(|(user, _)| *user).collect();
        Ok((connection, subscribed))
    }

    /// Makes `connection` (of `generation`, subscribed to `subscribed`) the current one,
    /// then subscribes it to users who connected here while it was being made.
    async fn install(
        &self,
        generation: u64,
        mut connection: MultiplexedConnection,
        subscribed: HashSet<Uuid>,
    ) -> redis::RedisResult<()> {
        self.generation.store(generation, Ordering::Release);
        *lock(&self.subscribed) = subscribed.clone();
        self.set_connection(Some((generation, connection.clone())));
        let missing: Vec<Uuid> = lock(&self.listeners)
            .keys()
            .filter(|user| !subscribed.contains(user))
            .copied()
            .collect();
        for chunk in missing.chunks(RESUBSCRIBE_BATCH) {
            let mut pipe = redis::pipe();
            for user in chunk {
                pipe.cmd("SSUBSCRIBE").arg(wire::channel(*user)).ignore();
            }
            pipe.exec_async(&mut connection).await?;
            lock(&self.subscribed).extend(chunk.iter().copied());
        }
        // Claims made while no connection was current (during `connect`) were not sent.
        self.reconcile(&mut connection, true).await
    }

    /// Extends the presence keys of this instance's connections; checks the connection.
    async fn refresh(&self, connection: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let listeners = self.held_here();
        let ttl = presence_ttl_ms();
        for chunk in listeners.chunks(RESUBSCRIBE_BATCH) {
            let mut pipe = redis::pipe();
            for (user, conn) in chunk {
                pipe.cmd("EVAL")
                    .arg(REFRESH_SCRIPT)
                    .arg(1)
                    .arg(wire::presence_key(*user))
                    .arg(self.holder(*conn))
                    .arg(ttl)
                    .ignore();
            }
            // EVAL, not EVALSHA: the script cache is gone after a Redis restart.
            pipe.exec_async(connection).await?;
        }
        Ok(())
    }
}

/// Keeps a connection to Redis: connects with backoff, resubscribes, tells connections to
/// rescan after every reconnect, and checks the connection until it fails.
async fn supervise(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    let mut logged_down = false;
    loop {
        let generation = inner.next_generation();
        inner.generation.store(generation, Ordering::Release);
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = inner.connect(generation) => c,
        };
        match connected {
            Ok((connection, subscribed)) => {
                backoff = BACKOFF_MIN;
                logged_down = false;
                if let Err(e) = inner
                    .install(generation, connection.clone(), subscribed)
                    .await
                {
                    tracing::warn!(error = ?e.kind(), "redis failed right after connecting");
                } else {
                    tracing::info!("routing bus connected to redis");
                    // Events published while this instance was not listening are lost.
                    let _ = inner.inbound.send(Inbound::Resync).await;
                    watch(&inner, generation, connection, &shutdown).await;
                }
                inner.set_connection(None);
                if shutdown.is_cancelled() {
                    return;
                }
                tracing::warn!("routing bus lost redis; delivering by rescan until it is back");
            }
            Err(e) => {
                if !logged_down {
                    tracing::warn!(error = ?e.kind(), "routing bus cannot reach redis; retrying");
                    logged_down = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Serves one connection: pings it, refreshes presence, turns dropped events into a rescan,
/// and replaces it once it carries too many stale channels, until it fails or the relay
/// shuts down.
async fn watch(
    inner: &Arc<Inner>,
    mut generation: u64,
    mut connection: MultiplexedConnection,
    shutdown: &CancellationToken,
) {
    let mut tick = tokio::time::interval(TICK);
    let mut since_ping = Duration::ZERO;
    let mut since_refresh = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = inner.broken.notified() => return,
            _ = tick.tick() => {}
        }
        let events_lost = inner.overflowed.swap(false, Ordering::AcqRel);
        let wakes_lost = inner.wakes_lost.swap(false, Ordering::AcqRel);
        if events_lost || wakes_lost {
            let _ = inner.inbound.send(Inbound::Resync).await;
        }
        if events_lost {
            // A dropped event may have been a claim elsewhere.
            if let Err(e) = inner.reconcile(&mut connection, false).await {
                inner.failed(generation, &e);
            }
        }
        since_ping += TICK;
        since_refresh += TICK;
        if since_ping >= HEARTBEAT {
            since_ping = Duration::ZERO;
            if let Err(e) = redis::cmd("PING").exec_async(&mut connection).await {
                tracing::warn!(error = ?e.kind(), "redis did not answer a ping");
                return;
            }
        }
        if since_refresh >= PRESENCE_REFRESH {
            since_refresh = Duration::ZERO;
            if let Err(e) = inner.refresh(&mut connection).await {
                inner.failed(generation, &e);
            }
        }
        if inner.too_many_stale_channels() {
            // The old connection keeps receiving until the new one is installed.
            let next = inner.next_generation();
            match inner.connect(next).await {
                Ok((fresh, subscribed)) => {
                    if let Err(e) = inner.install(next, fresh.clone(), subscribed).await {
                        tracing::warn!(error = ?e.kind(), "redis failed while replacing a connection");
                        return;
                    }
                    generation = next;
                    connection = fresh;
                    // Events for users who came during the swap may have gone to neither.
                    let _ = inner.inbound.send(Inbound::Resync).await;
                }
                Err(e) => {
                    // The old connection still works: keep it, try again next tick.
                    tracing::warn!(error = ?e.kind(), "could not replace the redis connection");
                }
            }
        }
    }
}

/// Sends queued publishes in pipelines; while Redis is down they are dropped (counted).
async fn publish(inner: Weak<Inner>, mut outgoing: mpsc::Receiver<(Uuid, Event)>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while outgoing.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else { return };
        let Some((generation, mut connection)) = inner.connection() else {
            inner.metrics.bus_events_dropped.inc_by(batch.len() as u64);
            batch.clear();
            continue;
        };
        let mut pipe = redis::pipe();
        for (user, event) in batch.drain(..) {
            pipe.cmd("SPUBLISH")
                .arg(wire::channel(user))
                .arg(event.encode())
                .ignore();
        }
        if let Err(e) = pipe.exec_async(&mut connection).await {
            inner.failed(generation, &e);
        }
    }
}

impl RedisBus {
    /// The connection for other commands (shared rate limits), while Redis is reachable.
    pub fn commands(&self) -> Option<MultiplexedConnection> {
        self.inner.connection().map(|(_, connection)| connection)
    }

    fn send(&self, user: Uuid, event: Event) {
        if self.inner.outbox.try_send((user, event)).is_err() {
            self.inner.metrics.bus_events_dropped.inc();
        }
    }
}

/// A connection's entry in `Inner::waiters`, removed when its claim ends or is dropped.
struct Waiter {
    inner: Arc<Inner>,
    holder: String,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        lock(&self.inner.waiters).remove(&self.holder);
    }
}

impl Inner {
    /// Subscribes to `user`'s channel (unless the connection is already), names this
    /// connection in the presence key and tells other instances. True if the instance named
    /// before may still be writing for the user: the claimant waits for its `r`.
    async fn claim_user(&self, user: Uuid, conn: u64) -> bool {
        let Some((generation, mut connection)) = self.connection() else {
            // Subscribed and settled on reconnect (`install`); meanwhile nobody can be
            // told, nor waited for.
            return false;
        };
        self.set_claiming(user, conn, true);
        let wait = self.claim_on(user, conn, generation, &mut connection).await;
        self.set_claiming(user, conn, false);
        wait
    }

    async fn claim_on(
        &self,
        user: Uuid,
        conn: u64,
        generation: u64,
        connection: &mut MultiplexedConnection,
    ) -> bool {
        let me = self.holder(conn);
        let ttl = presence_ttl_ms();
        let result: redis::RedisResult<Option<String>> = async {
            if !lock(&self.subscribed).contains(&user) {
                redis::cmd("SSUBSCRIBE")
                    .arg(wire::channel(user))
                    .exec_async(&mut *connection)
                    .await?;
                lock(&self.subscribed).insert(user);
            }
            let (stamp, before): (String, Option<String>) = self
                .claim_script
                .key(wire::presence_key(user))
                .key(wire::channel(user))
                .arg(&me)
                .arg(ttl)
                .invoke_async(&mut *connection)
                .await?;
            match stamp.parse() {
                Ok(stamp) => self.settle(user, conn, stamp),
                Err(_) => tracing::warn!("redis answered a claim without a stamp"),
            }
            let Some(before) = before else {
                return Ok(None);
            };
            let holder_instance = wire::instance_of(wire::holder_of_presence(&before));
            if holder_instance == self.instance {
                return Ok(None);
            }
            // An instance that is gone (killed: Redis closed its connection) is no longer
            // subscribed and will never answer. Subscribers besides this instance (which
            // subscribed above) may be the holder, or one that keeps a stale channel: wait.
            let counts: Value = redis::cmd("PUBSUB")
                .arg("SHARDNUMSUB")
                .arg(wire::channel(user))
                .query_async(&mut *connection)
                .await?;
            Ok((subscriber_count(&counts) > 1).then_some(before))
        }
        .await;
        match result {
            // Another instance holds the user: it answers once that connection has ended
            // and its acks are committed.
            Ok(holder) => holder.is_some(),
            Err(e) => {
                // Settled by the reconcile of the next connection.
                self.failed(generation, &e);
                false
            }
        }
    }
}

impl RoutingBus for RedisBus {
    fn state(&self) -> BusState {
        if self.inner.connected.load(Ordering::Acquire) {
            BusState::Connected
        } else {
            BusState::Disconnected
        }
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn claim(&self, user: Uuid, conn: u64, wait: Duration) -> BusWait {
        self.inner.listen(user, conn);
        let holder = self.inner.holder(conn);
        let (tell, released) = oneshot::channel();
        lock(&self.inner.waiters).insert(holder.clone(), tell);
        let waiter = Waiter {
            inner: self.inner.clone(),
            holder,
        };
        // The claim runs to its end even if the connection stops waiting for it: a claim
        // Redis ordered but this instance never settled would let an older connection
        // outlive a newer one elsewhere.
        let (claimed, must_wait) = oneshot::channel();
        let inner = self.inner.clone();
        tokio::spawn(
            async move {
                let _ = claimed.send(inner.claim_user(user, conn).await);
            }
            .in_current_span(),
        );
        Box::pin(async move {
            let waited = tokio::time::timeout(wait, async {
                if must_wait.await.unwrap_or(false) {
                    let _ = released.await;
                }
            })
            .await;
            if waited.is_err() {
                tracing::warn!("the instance that held this user did not release it in time");
            }
            drop(waiter);
        })
    }

    fn release(&self, user: Uuid, conn: u64) -> BusWait {
        self.inner.unlisten(user);
        let inner = self.inner.clone();
        Box::pin(
            async move {
                let me = inner.holder(conn);
                let Some((generation, mut connection)) = inner.connection() else {
                    return;
                };
                let holder: redis::RedisResult<Option<String>> = inner
                    .release_script
                    .key(wire::presence_key(user))
                    .arg(&me)
                    .invoke_async(&mut connection)
                    .await;
                match holder {
                    Ok(Some(holder)) if holder != me => {
                        // Claimed meanwhile: the claimant may be waiting for this.
                        if let Err(e) = redis::cmd("SPUBLISH")
                            .arg(wire::channel(user))
                            .arg(Event::Released(holder).encode())
                            .exec_async(&mut connection)
                            .await
                        {
                            inner.failed(generation, &e);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => inner.failed(generation, &e),
                }
            }
            .in_current_span(),
        )
    }

    fn stored(&self, wakes: &[(Uuid, i64)]) {
        for &(user, seq) in wakes {
            self.send(user, Event::Stored(seq));
        }
    }

    fn displace(&self, user: Uuid, up_to_generation: u32) {
        self.send(user, Event::Displaced(up_to_generation));
    }
}
