//! The relay's single writer: every message store, ack and `last_seen` update goes through
//! one queue, and whatever has queued up while the previous commit was running is committed
//! together (group commit). Under load one durable commit covers hundreds of messages; when
//! idle a write commits alone with no added wait.
//!
//! After a commit the writer hands new messages to their recipients' connections in storage
//! order, so live delivery follows the same order as the stored backlog.
//!
//! A database that commits transactions in parallel (PostgreSQL) gets several writers, each
//! with its own queue and connection; a recipient's messages, acks and mailbox row always go
//! to the same one (chosen by the recipient's id), so their order, and the `seq` order a
//! backlog read relies on, is kept per recipient, and no two writers lock the same rows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::Instrument;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::budget::HeldBytes;
use crate::bus::RoutingBus;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{
    AckRequest, MailboxQuota, NewMessage, Store, StoreError, StoreOutcome, StoreResult, WriteBatch,
};
use crate::ws::registry::ConnectionRegistry;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 4096;
/// Most writes waiting for the writer; callers wait for room beyond this (backpressure).
/// Their bytes are bounded by the in-flight budget as well.
const MAX_QUEUED: usize = 2 * MAX_BATCH;

/// The sends of one connection, in their order. Once one of them is refused because the
/// database is unavailable, every later one is refused too: nothing of a stream is stored
/// after a send that was not, so when its sender sends again from the first refused one,
/// the recipient still gets them in the order they were sent.
#[derive(Clone, Debug, Default)]
pub struct SendStream(Arc<AtomicBool>);

impl SendStream {
    /// True once a send of this stream was refused for want of the database.
    pub fn is_broken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn break_off(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The refusal of a send that follows a refused one of its stream.
fn after_refusal() -> StoreError {
    StoreError::Unavailable("an earlier send of this connection was refused".into())
}

/// The refusal of a write not tried because the database went away during its commit.
fn database_gone() -> StoreError {
    StoreError::Unavailable("the database became unavailable during this commit".into())
}

enum Op {
    /// A message, its stream, the in-flight bytes it holds until committed, and who waits
    /// for it.
    Store(
        NewMessage,
        SendStream,
        HeldBytes,
        oneshot::Sender<StoreResult<StoreOutcome>>,
    ),
    Ack(AckRequest, oneshot::Sender<StoreResult<bool>>),
    Touch(Uuid),
    /// Answered once every write queued before it on this queue is committed or refused.
    Barrier(oneshot::Sender<()>),
}

/// Handle to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct WriteQueue {
    /// One queue per writer; a user's writes always take the same one.
    shards: Arc<[mpsc::Sender<Op>]>,
}

/// The answer to a queued write, to be awaited later (writes are queued in call order).
pub type Pending<T> = oneshot::Receiver<StoreResult<T>>;

/// Waits for a queued write's answer.
pub async fn answer<T>(pending: Pending<T>) -> StoreResult<T> {
    pending.await.unwrap_or(Err(StoreError::WriterStopped))
}

impl WriteQueue {
    /// Starts the store's number of writer tasks (`Store::parallel_writers`). They end
    /// when every handle is dropped.
    pub fn start(
        store: Arc<dyn Store>,
        connections: Arc<ConnectionRegistry>,
        bus: Arc<dyn RoutingBus>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        quota: MailboxQuota,
    ) -> Self {
        let writers = store.parallel_writers().max(1);
        let shards: Vec<mpsc::Sender<Op>> = (0..writers)
            .map(|_| {
                let (ops, queue) = mpsc::channel(MAX_QUEUED);
                tokio::spawn(
                    Writer {
                        store: store.clone(),
                        connections: connections.clone(),
                        bus: bus.clone(),
                        metrics: metrics.clone(),
                        clock: clock.clone(),
                        quota,
                    }
                    .run(queue)
                    .in_current_span(),
                );
                ops
            })
            .collect();
        Self {
            shards: shards.into(),
        }
    }

    /// The queue of the writer that writes `user`'s messages, acks and mailbox.
    fn queue_of(&self, user: Uuid) -> &mpsc::Sender<Op> {
        // Ids are random (v4): their low bits spread users evenly.
        let index = (user.as_u128() % self.shards.len() as u128) as usize;
        &self.shards[index]
    }

    /// Queues a message of `stream`, waiting while the queue is full; the answer comes
    /// once it is durably stored (or refused). `held` is given back when the commit is done.
    pub async fn store_message(
        &self,
        message: NewMessage,
        stream: SendStream,
        held: HeldBytes,
    ) -> Pending<StoreOutcome> {
        let (reply, answer) = oneshot::channel();
        // If the writer is gone the reply sender is dropped and the answer says so.
        let _ = self
            .queue_of(message.recipient)
            .send(Op::Store(message, stream, held, reply))
            .await;
        answer
    }

    /// Queues an ack, waiting while the queue is full; the answer is true if it deleted
    /// one of `recipient`'s messages.
    pub async fn ack(&self, recipient: Uuid, id: Uuid) -> Pending<bool> {
        let (reply, answer) = oneshot::channel();
        let _ = self
            .queue_of(recipient)
            .send(Op::Ack(AckRequest { recipient, id }, reply))
            .await;
        answer
    }

    /// Resolves once every write queued for `user` before this call has been committed (or
    /// refused): a new connection reads its mailbox only after the acks of the one before.
    pub async fn flushed(&self, user: Uuid) {
        let (reply, done) = oneshot::channel();
        if self.queue_of(user).send(Op::Barrier(reply)).await.is_ok() {
            // A writer that stopped drops the reply: nothing is left to wait for.
            let _ = done.await;
        }
    }

    /// Records that `user` connected, with the next commit; nobody waits for it, and it is
    /// skipped when the queue is full (`last_seen` is not worth waiting for).
    pub fn touch(&self, user: Uuid) {
        let _ = self.queue_of(user).try_send(Op::Touch(user));
    }
}

struct Writer {
    store: Arc<dyn Store>,
    connections: Arc<ConnectionRegistry>,
    bus: Arc<dyn RoutingBus>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    quota: MailboxQuota,
}

impl Writer {
    async fn run(self, mut queue: mpsc::Receiver<Op>) {
        let mut ops = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut ops, MAX_BATCH).await > 0 {
            self.commit(std::mem::take(&mut ops)).await;
        }
    }

    async fn commit(&self, ops: Vec<Op>) {
        let mut batch = WriteBatch {
            now: self.clock.now_ms(),
            quota: self.quota,
            ..WriteBatch::default()
        };
        let mut store_replies = Vec::new();
        let mut streams = Vec::new();
        let mut ack_replies = Vec::new();
        let mut barriers = Vec::new();
        // Given back (dropped) only once the batch is committed and answered.
        let mut held = Vec::new();
        for op in ops {
            match op {
                Op::Store(_, stream, _, reply) if stream.is_broken() => {
                    let _ = reply.send(Err(after_refusal()));
                }
                Op::Store(message, stream, bytes, reply) => {
                    batch.messages.push(message);
                    streams.push(stream);
                    held.push(bytes);
                    store_replies.push(reply);
                }
                Op::Ack(ack, reply) => {
                    batch.acks.push(ack);
                    ack_replies.push(reply);
                }
                Op::Touch(user) => batch.touches.push(user),
                Op::Barrier(reply) => barriers.push(reply),
            }
        }
        let writes = batch.messages.len() + batch.acks.len() + batch.touches.len();
        if writes == 0 {
            // Only barriers (or refused sends): the batches before are done already.
            for barrier in barriers {
                let _ = barrier.send(());
            }
            return;
        }
        let started = std::time::Instant::now();
        let batch = Arc::new(batch);
        let result = self.store.write_batch(batch.clone()).await;
        self.metrics
            .write_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.write_batch_size.observe(writes as f64);
        let (stored, acked) = match result {
            Ok(outcome) => (outcome.messages, outcome.acks.into_iter().map(Ok).collect()),
            Err(StoreError::Unavailable(e)) => {
                // Nothing was written, and one by one each would wait for the database in
                // turn: every write fails now, and the clients retry (senders resend what
                // was not confirmed, acks come again with the redelivery).
                tracing::warn!(error = %e, writes, "database unavailable; batch refused");
                let refused = || StoreError::Unavailable(e.to_string().into());
                (
                    batch.messages.iter().map(|_| Err(refused())).collect(),
                    batch.acks.iter().map(|_| Err(refused())).collect(),
                )
            }
            Err(e) => {
                // Rolled back as a whole; one by one, a single bad write fails alone.
                tracing::warn!(error = %e, writes = batch.messages.len() + batch.acks.len(), "group commit failed; writing one by one");
                self.one_by_one(&batch, &streams).await
            }
        };
        for ((result, stream), message) in stored.iter().zip(&streams).zip(&batch.messages) {
            if matches!(result, Err(StoreError::Unavailable(_))) {
                stream.break_off();
                // The connection may have failed during COMMIT, after the commit: if the
                // message was stored, its recipient reads it from storage.
                self.connections.rescan(message.recipient);
            }
        }
        self.announce(&stored);
        for (reply, result) in store_replies.into_iter().zip(stored) {
            let _ = reply.send(result);
        }
        for (reply, result) in ack_replies.into_iter().zip(acked) {
            if matches!(result, Ok(true)) {
                self.metrics.messages_acked.inc();
            }
            let _ = reply.send(result);
        }
        drop(held);
        for barrier in barriers {
            let _ = barrier.send(());
        }
    }

    /// Writes each of a failed batch's writes in a batch of its own, so one bad write
    /// fails alone.
    async fn one_by_one(
        &self,
        batch: &WriteBatch,
        streams: &[SendStream],
    ) -> (Vec<StoreResult<StoreOutcome>>, Vec<StoreResult<bool>>) {
        let single = |messages: Vec<NewMessage>, acks: Vec<AckRequest>, touches: Vec<Uuid>| {
            Arc::new(WriteBatch {
                messages,
                acks,
                touches,
                now: batch.now,
                quota: batch.quota,
            })
        };
        let mut stored = Vec::with_capacity(batch.messages.len());
        let mut unavailable = false;
        for (message, stream) in batch.messages.iter().zip(streams) {
            if stream.is_broken() {
                stored.push(Err(after_refusal()));
                continue;
            }
            if unavailable {
                // Once the database is gone, the rest would each wait for it in turn.
                stored.push(Err(database_gone()));
                continue;
            }
            let result = self
                .store
                .write_batch(single(vec![message.clone()], vec![], vec![]))
                .await
                .and_then(|mut outcome| outcome.messages.pop().ok_or(StoreError::WriterStopped))
                .and_then(|result| result);
            if matches!(result, Err(StoreError::Unavailable(_))) {
                stream.break_off();
                unavailable = true;
            }
            stored.push(result);
        }
        let mut acked = Vec::with_capacity(batch.acks.len());
        for ack in &batch.acks {
            if unavailable {
                acked.push(Err(database_gone()));
                continue;
            }
            let result = self
                .store
                .write_batch(single(vec![], vec![*ack], vec![]))
                .await
                .and_then(|mut outcome| outcome.acks.pop().ok_or(StoreError::WriterStopped));
            unavailable |= matches!(result, Err(StoreError::Unavailable(_)));
            acked.push(result);
        }
        if !batch.touches.is_empty() && !unavailable {
            if let Err(e) = self
                .store
                .write_batch(single(vec![], vec![], batch.touches.clone()))
                .await
            {
                tracing::warn!(error = %e, "could not record last_seen");
            }
        }
        (stored, acked)
    }

    /// Hands newly stored messages to recipients connected here, in storage order, and
    /// wakes the others' connections on other instances (one wake-up per recipient, at the
    /// lowest position stored for them).
    fn announce(&self, stored: &[StoreResult<StoreOutcome>]) {
        let mut fresh: Vec<_> = stored
            .iter()
            .filter_map(|r| match r {
                Ok(StoreOutcome::Stored(pending)) => Some(pending),
                _ => None,
            })
            .collect();
        fresh.sort_by_key(|p| p.seq);
        let mut elsewhere: Vec<(Uuid, i64)> = Vec::new();
        let shared = self.bus.is_shared();
        for pending in fresh {
            self.metrics.messages_stored.inc();
            let here = self.connections.push(Arc::new(pending.clone()));
            if !here && shared {
                elsewhere.push((pending.recipient, pending.seq));
            }
        }
        if !elsewhere.is_empty() {
            // Sorted by seq: the first of each recipient is its lowest.
            let mut seen = std::collections::HashSet::with_capacity(elsewhere.len());
            elsewhere.retain(|(user, _)| seen.insert(*user));
            self.bus.stored(&elsewhere);
        }
    }
}
