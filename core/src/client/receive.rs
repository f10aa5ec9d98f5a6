//! Taking in a batch of deliveries on the protocol actor: each is checked against the
//! processed ids, decrypted, marked processed and stored, and the texts of one sender are
//! answered with one receipt; usually all in one transaction.

use std::collections::HashMap;

use uuid::Uuid;

use super::envelope::{Envelope, MAX_RECEIPT_IDS};
use crate::call::signal::CallSignal;
use crate::engine::{BatchScope, SignalEngine};
use crate::error::{CoreError, CoreResult};
use crate::store::dropped::DropReason;
use crate::store::history::{Insert, MessageState, StoredMessage};
use crate::store::quota::ReceiveQuota;
use crate::store::Store;

/// How far ahead of this device's clock a sender's `sent_at` may be; later times are
/// clamped, so a peer cannot pin its conversation to the top of the list forever.
const MAX_CLOCK_SKEW_MS: i64 = 24 * 60 * 60 * 1000;

/// A delivery whose payload decoded from base64.
pub(crate) struct Incoming {
    /// The relay's id (what is acked, and what de-duplicates redeliveries).
    pub id: Uuid,
    /// Who sent it.
    pub sender: Uuid,
    /// The Signal payload.
    pub payload: Vec<u8>,
}

/// What the receiving rules need besides the store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReceiveRules {
    /// Now, Unix milliseconds (the client's clock).
    pub now: i64,
    /// How much one peer may store here.
    pub quota: ReceiveQuota,
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
    /// Decrypted and dropped (counted under its reason); nothing to tell the app.
    Dropped(DropReason),
}

/// True for the errors of a message that cannot be decrypted (or started a session from).
pub(crate) fn is_undecryptable(error: &CoreError) -> bool {
    matches!(
        error,
        CoreError::InvalidMessage(_) | CoreError::NoSession { .. } | CoreError::InvalidBundle(_)
    )
}

/// Handles `batch` in order (see `SignalEngine::decrypt_batch`). Returns one result per
/// delivery handled, in order; after a failure the connection should drop on (anything but
/// an undecryptable message, a duplicate or a changed identity), the batch stops, so the
/// rest stays unacked at the relay and comes again.
///
/// Undecryptable messages are counted; a sender's session is renewed only after a run of
/// them (`RENEW_SESSION_AFTER_FAILURES`), never for one blob a relay could have made up.
pub(crate) fn receive_batch(
    engine: &mut SignalEngine,
    batch: &[Incoming],
    rules: ReceiveRules,
) -> Vec<CoreResult<Received>> {
    let results = engine.decrypt_batch(
        batch,
        |scope, message| receive_one(scope, message, &rules),
        |store, received| conclude(store, received, rules.now),
        |_, _, error| {
            matches!(
                error,
                CoreError::DuplicateMessage | CoreError::IdentityChanged { .. }
            ) || is_undecryptable(error)
        },
    );
    let mut undecryptable = 0u64;
    for (message, result) in batch.iter().zip(&results) {
        match result {
            Ok(Received::AlreadyProcessed) | Err(CoreError::DuplicateMessage) => {}
            Ok(_) => engine.note_decrypted(message.sender),
            Err(e) if is_undecryptable(e) => {
                undecryptable = undecryptable.saturating_add(1);
                match engine.note_undecryptable(message.sender) {
                    Ok(true) => tracing::info!("renewed a session after repeated failures"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "session renewal failed"),
                }
            }
            Err(_) => {}
        }
    }
    if undecryptable > 0 {
        let counted = engine.store().write(|store| {
            (0..undecryptable).try_for_each(|_| store.count_dropped(DropReason::Undecryptable))
        });
        if let Err(e) = counted {
            tracing::warn!(error = %e, "counting undecryptable messages failed");
        }
    }
    results
}

/// One delivery, inside the batch's transaction.
fn receive_one(
    scope: &BatchScope<'_>,
    message: &Incoming,
    rules: &ReceiveRules,
) -> CoreResult<Received> {
    let store = scope.store();
    // Marked first: one statement instead of a lookup and an insert. If anything below
    // fails, the mark rolls back with the rest of the step.
    if !store.mark_processed(message.id, rules.now)? {
        return Ok(Received::AlreadyProcessed);
    }
    let sender = message.sender;
    let dropped = |reason| -> CoreResult<Received> {
        store.count_dropped(reason)?;
        Ok(Received::Dropped(reason))
    };
    // Before decrypting: nothing a blocked sender sends (a new identity, a new session)
    // may cost a session write, an event or a message held at the relay.
    if store.is_blocked(sender)? {
        return dropped(DropReason::Blocked);
    }
    let plain = scope.decrypt(sender, &message.payload)?;
    let Ok(envelope) = Envelope::open(&plain) else {
        // Decrypted but meaningless: keep the session advance, drop the content.
        return dropped(DropReason::Malformed);
    };
    match envelope {
        Envelope::Text { id, body, sent_at } => {
            if !store.charge_quota(sender, body.len() as u64, rules.now, &rules.quota)? {
                return dropped(DropReason::OverQuota);
            }
            let stored = StoredMessage {
                id,
                peer: sender,
                outgoing: false,
                body,
                sent_at: sent_at
                    .min(rules.now.saturating_add(MAX_CLOCK_SKEW_MS))
                    .max(0),
                state: MessageState::Received,
            };
            // Its conversation is bumped once per sender, when the transaction ends.
            match store.put_message(&stored)? {
                Insert::Stored => Ok(Received::Text(stored)),
                // The sender's own message again (sent twice): nothing new.
                Insert::Duplicate => Ok(Received::AlreadyProcessed),
                Insert::Conflict => dropped(DropReason::ForgedId),
            }
        }
        Envelope::Receipt { ids } => {
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
        Envelope::Call {
            call_id,
            signal,
            sent_at,
        } => Ok(Received::Call {
            call_id,
            signal,
            sent_at,
        }),
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
fn conclude(store: &Store, received: &[Received], now: i64) -> CoreResult<()> {
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
    for sender in senders {
        let Some(from) = texts.get(&sender) else {
            continue;
        };
        // A sender's clock may be ahead: the list is ordered by times up to now only.
        store.touch_conversation(sender, from.latest.min(now))?;
        for chunk in from.ids.chunks(MAX_RECEIPT_IDS) {
            let receipt = Envelope::Receipt {
                ids: chunk.to_vec(),
            }
            .encode();
            store.enqueue(Uuid::new_v4(), sender, &receipt, None, now)?;
        }
    }
    Ok(())
}
