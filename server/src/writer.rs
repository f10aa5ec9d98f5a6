//! The relay's single writer: every message store, ack and `last_seen` update goes through
//! one queue, and whatever has queued up while the previous commit was running is committed
//! together (group commit). Under load one durable commit covers hundreds of messages; when
//! idle a write commits alone with no added wait.
//!
//! After a commit the writer hands new messages to their recipients' connections in storage
//! order, so live delivery follows the same order as the stored backlog.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{
    AckRequest, NewMessage, Store, StoreError, StoreOutcome, StoreResult, WriteBatch,
};
use crate::ws::registry::ConnectionRegistry;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 4096;

enum Op {
    Store(NewMessage, oneshot::Sender<StoreResult<StoreOutcome>>),
    Ack(AckRequest, oneshot::Sender<StoreResult<bool>>),
    Touch(Uuid),
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct WriteQueue {
    ops: mpsc::UnboundedSender<Op>,
}

/// The answer to a queued write, to be awaited later (writes are queued in call order).
pub type Pending<T> = oneshot::Receiver<StoreResult<T>>;

/// Waits for a queued write's answer.
pub async fn answer<T>(pending: Pending<T>) -> StoreResult<T> {
    pending.await.unwrap_or(Err(StoreError::WriterStopped))
}

impl WriteQueue {
    /// Starts the writer task. It ends when every handle is dropped.
    pub fn start(
        store: Arc<dyn Store>,
        connections: Arc<ConnectionRegistry>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (ops, queue) = mpsc::unbounded_channel();
        tokio::spawn(
            Writer {
                store,
                connections,
                metrics,
                clock,
            }
            .run(queue),
        );
        Self { ops }
    }

    /// Queues a message; the answer comes once it is durably stored (or refused).
    pub fn store_message(&self, message: NewMessage) -> Pending<StoreOutcome> {
        let (reply, answer) = oneshot::channel();
        // If the writer is gone the reply sender is dropped and the answer says so.
        let _ = self.ops.send(Op::Store(message, reply));
        answer
    }

    /// Queues an ack; the answer is true if it deleted one of `recipient`'s messages.
    pub fn ack(&self, recipient: Uuid, id: Uuid) -> Pending<bool> {
        let (reply, answer) = oneshot::channel();
        let _ = self.ops.send(Op::Ack(AckRequest { recipient, id }, reply));
        answer
    }

    /// Records that `user` connected, with the next commit; nobody waits for it.
    pub fn touch(&self, user: Uuid) {
        let _ = self.ops.send(Op::Touch(user));
    }
}

struct Writer {
    store: Arc<dyn Store>,
    connections: Arc<ConnectionRegistry>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl Writer {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Op>) {
        let mut ops = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut ops, MAX_BATCH).await > 0 {
            self.commit(std::mem::take(&mut ops)).await;
        }
    }

    async fn commit(&self, ops: Vec<Op>) {
        let mut batch = WriteBatch {
            now: self.clock.now_ms(),
            ..WriteBatch::default()
        };
        let mut store_replies = Vec::new();
        let mut ack_replies = Vec::new();
        for op in ops {
            match op {
                Op::Store(message, reply) => {
                    batch.messages.push(message);
                    store_replies.push(reply);
                }
                Op::Ack(ack, reply) => {
                    batch.acks.push(ack);
                    ack_replies.push(reply);
                }
                Op::Touch(user) => batch.touches.push(user),
            }
        }
        let started = std::time::Instant::now();
        let writes = batch.messages.len() + batch.acks.len() + batch.touches.len();
        let result = self.store.write_batch(&batch).await;
        self.metrics
            .write_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.write_batch_size.observe(writes as f64);
        let (stored, acked) = match result {
            Ok(outcome) => (outcome.messages, outcome.acks.into_iter().map(Ok).collect()),
            Err(e) => {
                // Rolled back as a whole; one by one, a single bad write fails alone.
                tracing::warn!(error = %e, writes = batch.messages.len() + batch.acks.len(), "group commit failed; writing one by one");
                self.one_by_one(&batch).await
            }
        };
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
    }

    async fn one_by_one(
        &self,
        batch: &WriteBatch,
    ) -> (Vec<StoreResult<StoreOutcome>>, Vec<StoreResult<bool>>) {
        let mut stored = Vec::with_capacity(batch.messages.len());
        for message in &batch.messages {
            stored.push(self.store.store_message(message).await);
        }
        let mut acked = Vec::with_capacity(batch.acks.len());
        for ack in &batch.acks {
            acked.push(
                self.store
                    .ack_message(ack.recipient, ack.id, batch.now)
                    .await,
            );
        }
        for user in &batch.touches {
            if let Err(e) = self.store.touch_user(*user, batch.now).await {
                tracing::warn!(error = %e, "could not record last_seen");
            }
        }
        (stored, acked)
    }

    /// Hands newly stored messages to online recipients, in storage order.
    fn announce(&self, stored: &[StoreResult<StoreOutcome>]) {
        let mut fresh: Vec<_> = stored
            .iter()
            .filter_map(|r| match r {
                Ok(StoreOutcome::Stored(pending)) => Some(pending),
                _ => None,
            })
            .collect();
        fresh.sort_by_key(|p| p.seq);
        for pending in fresh {
            self.metrics.messages_stored.inc();
            self.connections.push(Arc::new(pending.clone()));
        }
    }
}
