//! Taking in a batch of deliveries on the protocol actor: each is checked against the
//! processed ids, decrypted, marked processed and stored, and the texts of one sender are
//! answered with one receipt; usually all in one transaction.

use std::collections::HashMap;

use uuid::Uuid;

use super::envelope::Envelope;
use super::now_ms;
use crate::call::signal::CallSignal;
use crate::engine::{BatchScope, SignalEngine};
use crate::error::{CoreError, CoreResult};
use crate::store::history::{MessageState, StoredMessage};
use crate::store::Store;

/// Most message ids in one receipt: a receipt of this size stays a few KiB, far inside the
/// relay's payload limit.
pub(crate) const MAX_RECEIPT_IDS: usize = 256;

/// A delivery whose payload decoded from base64.
pub(crate) struct Incoming {
    /// The relay's id (what is acked, and what de-duplicates redeliveries).
    pub id: Uuid,
    /// Who sent it.
    pub sender: Uuid,
    /// The Signal payload.
    pub payload: Vec<u8>,
}

/// What became of one delivered message.
pub(crate) enum Received {
    /// Stored by an earlier delivery.
    AlreadyProcessed,
    /// A text, now stored (its receipt queued in the same transaction).
    Text(StoredMessage),
    /// A receipt; these outgoing messages became `Delivered`.
    Receipt(Vec<Uuid>),
    /// A call signal, for the call manager once acked.
    Call {
        /// The call.
        call_id: Uuid,
        /// The step.
        signal: CallSignal,
        /// The sender's clock when sent.
        sent_at: i64,
    },
    /// Decrypted, but not a payload we understand.
    Unreadable,
}

/// Handles `batch` in order (see `SignalEngine::decrypt_batch`). Returns one result per
/// delivery handled, in order; after a failure the connection should drop on (anything but
/// an undecryptable message, a duplicate or a changed identity), the batch stops, so the
/// rest stays unacked at the relay and comes again.
pub(crate) fn receive_batch(
    engine: &mut SignalEngine,
    batch: &[Incoming],
) -> Vec<CoreResult<Received>> {
    engine.decrypt_batch(batch, receive_one, conclude, |engine, message, error| {
        match error {
            CoreError::DuplicateMessage | CoreError::IdentityChanged { .. } => true,
            CoreError::InvalidMessage(_)
            | CoreError::NoSession { .. }
            | CoreError::InvalidBundle(_) => {
                // Before the next message, so that one from the same sender finds no broken
                // session: it starts a new one instead.
                if let Err(e) = engine.reset_session(message.sender) {
                    tracing::warn!(error = %e, "session reset failed");
                }
                true
            }
            _ => false,
        }
    })
}

/// One delivery, inside the batch's transaction.
fn receive_one(scope: &BatchScope<'_>, message: &Incoming) -> CoreResult<Received> {
    let store = scope.store();
    // Marked first: one statement instead of a lookup and an insert. If anything below
    // fails, the mark rolls back with the rest of the step.
    if !store.mark_processed(message.id, now_ms())? {
        return Ok(Received::AlreadyProcessed);
    }
    let plain = scope.decrypt(message.sender, &message.payload)?;
    let sender = message.sender;
    match Envelope::decode(&plain) {
        Ok(Envelope::Text { id, body, sent_at }) => {
            let stored = StoredMessage {
                id,
                peer: sender,
                outgoing: false,
                body,
                sent_at,
                state: MessageState::Received,
            };
            // Its conversation is bumped once per sender, when the transaction ends.
            store.put_message(&stored)?;
            Ok(Received::Text(stored))
        }
        Ok(Envelope::Receipt { ids }) => {
            let mut delivered = Vec::new();
            for id in ids {
                let ours = store
                    .message(id)?
                    .is_some_and(|m| m.outgoing && m.peer == sender);
                if ours && store.set_message_state(id, MessageState::Delivered)? {
                    delivered.push(id);
                }
            }
            Ok(Received::Receipt(delivered))
        }
        // Calls are live: nothing to store, the call manager takes it.
        Ok(Envelope::Call {
            call_id,
            signal,
            sent_at,
        }) => Ok(Received::Call {
            call_id,
            signal,
            sent_at,
        }),
        // Decrypted but meaningless: keep the session advance, drop the content.
        Err(_) => Ok(Received::Unreadable),
    }
}

/// The texts of one sender stored in a transaction.
struct FromSender {
    ids: Vec<Uuid>,
    latest: i64,
}

/// Ends a batch's transaction: bumps each sender's conversation once, and queues the
/// receipts for the texts stored: one per sender (split above `MAX_RECEIPT_IDS`) instead of
/// one per text.
fn conclude(store: &Store, received: &[Received]) -> CoreResult<()> {
    // Senders in order of their first text, so receipts leave in the order texts came.
    let mut senders: Vec<Uuid> = Vec::new();
    let mut texts: HashMap<Uuid, FromSender> = HashMap::new();
    for outcome in received {
        if let Received::Text(message) = outcome {
            let from = texts.entry(message.peer).or_insert_with(|| {
                senders.push(message.peer);
                FromSender {
                    ids: Vec::new(),
                    latest: message.sent_at,
                }
            });
            from.ids.push(message.id);
            from.latest = from.latest.max(message.sent_at);
        }
    }
    let now = now_ms();
    for sender in senders {
        let Some(from) = texts.get(&sender) else {
            continue;
        };
        store.touch_conversation(sender, from.latest)?;
        for chunk in from.ids.chunks(MAX_RECEIPT_IDS) {
            let receipt = Envelope::Receipt {
                ids: chunk.to_vec(),
            }
            .encode();
            store.enqueue(Uuid::new_v4(), sender, &receipt, now)?;
        }
    }
    Ok(())
}
