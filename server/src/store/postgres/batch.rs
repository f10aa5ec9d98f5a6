//! A group commit on PostgreSQL: every write of a batch is in one of a few statements that
//! bind whole columns as arrays (`unnest`), and statements that do not depend on each other
//! are sent together on the connection (pipelined), `BEGIN` with the first and `COMMIT` with
//! the last, so a batch of any size costs at most four round trips. Each statement's shape
//! is fixed, whatever the batch size: one prepared statement each, and with custom plans
//! (see `connect`) the planner sees the real sizes.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{GenericClient, Object, Transaction};
use futures_util::TryFutureExt;
use uuid::Uuid;

use super::super::convert::{key_from, uuid_from};
use super::super::mailbox::MailboxLedger;
use super::super::send_window::{self, CounterBump, Sent, SlotWrite};
use super::super::{
    day_of, AckRequest, MailboxUsage, NewMessage, StoreError, StoreOutcome, StoreResult,
    WriteBatch, WriteBatchOutcome,
};
use crate::pepper::{DeliveryKey, Pepper};

/// Stores the admitted messages in arrival order (`ord`), skipping those whose recipient is
/// unknown or registered again, or whose (sender, client id) is in its sender's window of
/// recent messages; those still pending hit the unique constraint and are skipped too.
const INSERT_MESSAGES: &str = "
    INSERT INTO pending_messages
        (id, recipient_id, sender_id, client_id, payload, created_at, size)
    SELECT v.id, v.recipient_id, v.sender_id, v.client_id, v.payload, v.created_at, v.size
    FROM unnest($1::BYTEA[], $2::BYTEA[], $3::BYTEA[], $4::BYTEA[], $5::BYTEA[],
                $6::BIGINT[], $7::BIGINT[], $8::BYTEA[], $9::BIGINT[])
         WITH ORDINALITY
         AS v(id, recipient_id, sender_id, client_id, payload, created_at, size, dedup_key,
              registration_id, ord)
    WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = v.recipient_id
                  AND (v.registration_id IS NULL OR u.registration_id = v.registration_id))
      AND NOT EXISTS (SELECT 1 FROM recent_sends r WHERE r.dedup_key = v.dedup_key)
    ORDER BY v.ord
    ON CONFLICT (sender_id, client_id) DO NOTHING
    RETURNING seq, id";

/// Why messages were not stored: the server id they were stored under before, if any, and
/// whether their recipient exists. A match in the sender's window counts only for the
/// recipient's current registration: a message stored for a device that registered again
/// since was dropped with that device's mailbox, and is refused as stale, not as sent.
const REFUSALS: &str = "
    SELECT v.ord,
           COALESCE(p.id, CASE WHEN v.registration_id IS NULL
                                 OR u.registration_id = v.registration_id
                               THEN r.server_id END) AS existing,
           u.id IS NOT NULL AS registered
    FROM unnest($1::BYTEA[], $2::BYTEA[], $3::BYTEA[], $4::BYTEA[], $5::BIGINT[])
         WITH ORDINALITY
         AS v(sender_id, client_id, dedup_key, recipient_id, registration_id, ord)
    LEFT JOIN users u ON u.id = v.recipient_id
    LEFT JOIN pending_messages p ON p.sender_id = v.sender_id AND p.client_id = v.client_id
    LEFT JOIN recent_sends r ON r.dedup_key = v.dedup_key";

/// Deletes acknowledged messages, each only if it is its acknowledger's.
const DELETE_ACKED: &str = "
    DELETE FROM pending_messages p
    USING unnest($1::BYTEA[], $2::BYTEA[]) AS a(id, recipient_id)
    WHERE p.id = a.id AND p.recipient_id = a.recipient_id
    RETURNING p.id, p.sender_id, p.client_id, p.recipient_id, p.size";

/// Counts the messages each sender stored, returning each new total. Keys come sorted
/// (`send_window::bumps`), and rows are locked in that order.
const BUMP_COUNTERS: &str = "
    INSERT INTO send_counters (counter_key, sent, last_day)
    SELECT b.counter_key, b.sent, b.last_day
    FROM unnest($1::BYTEA[], $2::BIGINT[], $3::BIGINT[]) WITH ORDINALITY
         AS b(counter_key, sent, last_day, ord)
    ORDER BY b.ord
    ON CONFLICT (counter_key) DO UPDATE SET
        sent = send_counters.sent + excluded.sent,
        last_day = GREATEST(send_counters.last_day, excluded.last_day)
    RETURNING counter_key, sent";

/// Writes rows of the senders' windows and deletes those they push out of them (never
/// the same keys: `send_window::slot_writes`). A key is rewritten only if a purged counter
/// started its sender again while an old row stayed.
const FILL_SLOTS: &str = "
    WITH evicted AS (DELETE FROM recent_sends WHERE slot_key = ANY($5::BYTEA[]))
    INSERT INTO recent_sends (slot_key, dedup_key, server_id, stored_on)
    SELECT * FROM unnest($1::BYTEA[], $2::BYTEA[], $3::BYTEA[], $4::BIGINT[])
    ON CONFLICT (slot_key) DO UPDATE SET
        dedup_key = excluded.dedup_key,
        server_id = excluded.server_id,
        stored_on = excluded.stored_on";

/// What the mailboxes of the batch's recipients hold.
const LOAD_MAILBOXES: &str =
    "SELECT recipient_id, messages, bytes FROM mailboxes WHERE recipient_id = ANY($1::BYTEA[])";

/// Adds each recipient's net change to their mailbox row (a delta, never a total: a purge
/// or another relay instance may change the row meanwhile).
const APPLY_DELTAS: &str = "
    INSERT INTO mailboxes (recipient_id, messages, bytes)
    SELECT * FROM unnest($1::BYTEA[], $2::BIGINT[], $3::BIGINT[])
    ON CONFLICT (recipient_id) DO UPDATE SET
        messages = mailboxes.messages + excluded.messages,
        bytes = mailboxes.bytes + excluded.bytes";

/// Records when users were last seen (to the day).
const TOUCH: &str = "UPDATE users SET last_seen = $2 WHERE id = ANY($1::BYTEA[])";

/// Every statement of a batch, prepared before it begins.
const STATEMENTS: [&str; 8] = [
    INSERT_MESSAGES,
    REFUSALS,
    DELETE_ACKED,
    BUMP_COUNTERS,
    FILL_SLOTS,
    LOAD_MAILBOXES,
    APPLY_DELTAS,
    TOUCH,
];

/// Which messages of a batch are written, and which repeat an earlier one of the batch.
struct Resends {
    /// Indices of the first message of each (sender, client id), in arrival order.
    unique: Vec<usize>,
    /// Per message: the index of the earlier message it repeats.
    copy_of: Vec<Option<usize>>,
}

impl Resends {
    fn of(messages: &[NewMessage]) -> Self {
        let mut first_of: HashMap<(Uuid, Uuid), usize> = HashMap::new();
        let mut unique = Vec::with_capacity(messages.len());
        let mut copy_of = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            match first_of.entry((message.sender, message.client_id)) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    copy_of.push(Some(*first.get()))
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(index);
                    unique.push(index);
                    copy_of.push(None);
                }
            }
        }
        Self { unique, copy_of }
    }
}

/// Applies `batch` in one transaction on `tx`, from `BEGIN` to `COMMIT`. On an error the
/// transaction may still be open: the caller rolls it back or closes the connection.
pub(super) async fn apply(
    tx: &Object,
    batch: &WriteBatch,
    pepper: &Pepper,
) -> StoreResult<WriteBatchOutcome> {
    let messages = &batch.messages;
    let resends = Resends::of(messages);
    let recipients: Vec<Uuid> = {
        let mut seen = HashSet::new();
        resends
            .unique
            .iter()
            .map(|&i| messages[i].recipient)
            .filter(|r| seen.insert(*r))
            .collect()
    };
    // A repeated ack in the same batch finds the row already gone: only the first counts.
    let mut first_acks: Vec<AckRequest> = Vec::with_capacity(batch.acks.len());
    {
        let mut seen = HashSet::new();
        first_acks.extend(batch.acks.iter().filter(|a| seen.insert(a.id)).copied());
    }

    // Every statement prepared before `BEGIN` (a no-op once a connection has them): a
    // statement prepared for the first time waits for its description before it executes,
    // and one pipelined with `COMMIT` would then run after it, outside the transaction.
    futures_util::future::try_join_all(STATEMENTS.iter().map(|sql| tx.prepare_cached(sql))).await?;
    // Round trip 1: last_seen, what the mailboxes hold, the acks — independent statements,
    // after `BEGIN` (sent first: the futures are polled, and their statements sent, in
    // order). `users` rows first, as registration locks them before pending rows.
    let mut mailboxes = MailboxLedger::default();
    let ((), (), loaded, deleted) = tokio::try_join!(
        tx.batch_execute("BEGIN").map_err(StoreError::from),
        touch(tx, &batch.touches, batch.now),
        load_mailboxes(tx, &recipients),
        delete_acked(tx, &first_acks),
    )?;
    // A resend of a message this batch acknowledges: its pending row is gone (and it may
    // have left its sender's window), so it is answered here, as stored before.
    let acked_now: HashMap<(Uuid, Uuid), Uuid> = deleted
        .iter()
        .map(|row| ((row.sender, row.client_id), row.id))
        .collect();
    for (recipient, usage) in loaded {
        mailboxes.load(recipient, usage);
    }
    for recipient in &recipients {
        mailboxes.load(*recipient, MailboxUsage::default());
    }

    // Quota: messages are admitted in arrival order while their mailbox has room. One
    // admitted here that turns out to be a duplicate only leaves the mailbox emptier.
    let mut tentative = MailboxLedger::default();
    for r in &recipients {
        tentative.load(*r, mailboxes.usage(r));
    }
    let mut over_quota: HashSet<usize> = HashSet::new();
    let admitted: Vec<usize> = resends
        .unique
        .iter()
        .copied()
        .filter(|&i| !acked_now.contains_key(&(messages[i].sender, messages[i].client_id)))
        .filter(|&i| {
            let m = &messages[i];
            let size = u64::try_from(m.payload.len()).unwrap_or(u64::MAX);
            if batch.quota.admits(tentative.usage(&m.recipient), size) {
                tentative.added(m.recipient, m.payload.len());
                true
            } else {
                over_quota.insert(i);
                false
            }
        })
        .collect();

    let mut deleted_ids: HashSet<Uuid> = HashSet::with_capacity(deleted.len());
    for row in &deleted {
        mailboxes.removed(row.recipient, row.size);
        deleted_ids.insert(row.id);
    }

    // Round trip 2: the new messages.
    let seq_of = insert_messages(tx, messages, &admitted, pepper).await?;
    let day = day_of(batch.now);
    let mut stored: Vec<Sent> = Vec::with_capacity(seq_of.len());
    for &index in &admitted {
        let m = &messages[index];
        if seq_of.contains_key(&m.id) {
            mailboxes.added(m.recipient, m.payload.len());
            stored.push(Sent {
                sender: m.sender,
                client_id: m.client_id,
                server_id: m.id,
                day,
            });
        }
    }
    let bumps = send_window::bumps(&stored, pepper);

    // Round trip 3: mailbox counts, the senders' counters, and why the rest was refused
    // (rare: resends).
    let refused_indices: Vec<usize> = resends
        .unique
        .iter()
        .copied()
        .filter(|&i| !seq_of.contains_key(&messages[i].id))
        .filter(|&i| !acked_now.contains_key(&(messages[i].sender, messages[i].client_id)))
        .collect();
    // With nothing stored there is no round trip 4, and `COMMIT` goes with this one. A
    // pipelined `COMMIT` after a failed statement ends the transaction without committing
    // (the server answers it with `ROLLBACK`); the statement's error is what is returned.
    let commit_now = bumps.is_empty();
    let ((), totals, refusals, ()) = tokio::try_join!(
        apply_deltas(tx, mailboxes.changes()),
        bump_counters(tx, &bumps),
        refusals(tx, messages, &refused_indices, pepper),
        commit_if(tx, commit_now),
    )?;
    // Round trip 4: the stored messages into their senders' windows, the oldest out.
    if !commit_now {
        let writes = send_window::slot_writes(&stored, &bumps, &totals, pepper);
        tokio::try_join!(fill_slots(tx, &writes), commit_if(tx, true))?;
    }

    let mut results: Vec<Option<StoreResult<StoreOutcome>>> =
        (0..messages.len()).map(|_| None).collect();
    for &index in &resends.unique {
        let m = &messages[index];
        let outcome = match (seq_of.get(&m.id), acked_now.get(&(m.sender, m.client_id))) {
            (Some(&seq), _) => Ok(StoreOutcome::Stored(m.stored_as(seq))),
            (None, Some(&server_id)) => Ok(StoreOutcome::Duplicate { server_id }),
            (None, None) => match refusals.get(&index) {
                Some(Refusal::StoredBefore(server_id)) => Ok(StoreOutcome::Duplicate {
                    server_id: *server_id,
                }),
                _ if over_quota.contains(&index) => Err(StoreError::MailboxFull),
                Some(Refusal::Registered) => Err(StoreError::StaleRecipient),
                _ => Err(StoreError::MissingReference),
            },
        };
        results[index] = Some(outcome);
    }
    for (index, copy) in resends.copy_of.iter().enumerate() {
        if let Some(first) = copy {
            let answer = match &results[*first] {
                Some(Ok(StoreOutcome::Stored(p))) => {
                    Ok(StoreOutcome::Duplicate { server_id: p.id })
                }
                Some(Ok(dup @ StoreOutcome::Duplicate { .. })) => Ok(dup.clone()),
                Some(Err(StoreError::MailboxFull)) => Err(StoreError::MailboxFull),
                Some(Err(StoreError::StaleRecipient)) => Err(StoreError::StaleRecipient),
                _ => Err(StoreError::MissingReference),
            };
            results[index] = Some(answer);
        }
    }

    let mut first_answered: HashSet<Uuid> = HashSet::with_capacity(first_acks.len());
    let acks = batch
        .acks
        .iter()
        .map(|ack| {
            // True once, for the first ack of an id, if that ack deleted the message.
            first_answered.insert(ack.id) && deleted_ids.contains(&ack.id)
        })
        .collect();
    Ok(WriteBatchOutcome {
        messages: results
            .into_iter()
            .map(|r| r.unwrap_or(Err(StoreError::Conflict)))
            .collect(),
        acks,
    })
}

async fn commit_if(tx: &Object, now: bool) -> StoreResult<()> {
    if now {
        tx.batch_execute("COMMIT").await?;
    }
    Ok(())
}

async fn load_mailboxes<C: GenericClient + Sync>(
    tx: &C,
    recipients: &[Uuid],
) -> StoreResult<Vec<(Uuid, MailboxUsage)>> {
    if recipients.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&[u8]> = recipients.iter().map(|r| &r.as_bytes()[..]).collect();
    let statement = tx.prepare_cached(LOAD_MAILBOXES).await?;
    tx.query(&statement, &[&ids])
        .await?
        .iter()
        .map(|row| {
            Ok((
                uuid_from(row.try_get("recipient_id")?)?,
                MailboxUsage {
                    messages: row.try_get("messages")?,
                    bytes: row.try_get("bytes")?,
                },
            ))
        })
        .collect()
}

/// A pending message an ack deleted.
struct Deleted {
    id: Uuid,
    sender: Uuid,
    client_id: Uuid,
    recipient: Uuid,
    size: i64,
}

async fn delete_acked<C: GenericClient + Sync>(
    tx: &C,
    acks: &[AckRequest],
) -> StoreResult<Vec<Deleted>> {
    if acks.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&[u8]> = acks.iter().map(|a| &a.id.as_bytes()[..]).collect();
    let recipients: Vec<&[u8]> = acks.iter().map(|a| &a.recipient.as_bytes()[..]).collect();
    let statement = tx.prepare_cached(DELETE_ACKED).await?;
    tx.query(&statement, &[&ids, &recipients])
        .await?
        .iter()
        .map(|row| {
            Ok(Deleted {
                id: uuid_from(row.try_get("id")?)?,
                sender: uuid_from(row.try_get("sender_id")?)?,
                client_id: uuid_from(row.try_get("client_id")?)?,
                recipient: uuid_from(row.try_get("recipient_id")?)?,
                size: row.try_get("size")?,
            })
        })
        .collect()
}

async fn touch<C: GenericClient + Sync>(tx: &C, users: &[Uuid], now: i64) -> StoreResult<()> {
    if users.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<&[u8]> = users.iter().map(|u| &u.as_bytes()[..]).collect();
    // Rows locked in one order by every batch: concurrent batches never deadlock.
    ids.sort_unstable();
    ids.dedup();
    let statement = tx.prepare_cached(TOUCH).await?;
    tx.execute(&statement, &[&ids, &day_of(now)]).await?;
    Ok(())
}

async fn insert_messages<C: GenericClient + Sync>(
    tx: &C,
    messages: &[NewMessage],
    admitted: &[usize],
    pepper: &Pepper,
) -> StoreResult<HashMap<Uuid, i64>> {
    if admitted.is_empty() {
        return Ok(HashMap::new());
    }
    let n = admitted.len();
    let mut ids = Vec::with_capacity(n);
    let mut recipients = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    let mut client_ids = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut sizes = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut registrations = Vec::with_capacity(n);
    for &index in admitted {
        let m = &messages[index];
        ids.push(&m.id.as_bytes()[..]);
        recipients.push(&m.recipient.as_bytes()[..]);
        senders.push(&m.sender.as_bytes()[..]);
        client_ids.push(&m.client_id.as_bytes()[..]);
        payloads.push(&m.payload[..]);
        created.push(m.created_at);
        sizes.push(i64::try_from(m.payload.len()).unwrap_or(i64::MAX));
        keys.push(pepper.delivery_key(m.sender, m.client_id));
        registrations.push(m.recipient_registration_id.map(i64::from));
    }
    let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let statement = tx.prepare_cached(INSERT_MESSAGES).await?;
    let rows = tx
        .query(
            &statement,
            &[
                &ids,
                &recipients,
                &senders,
                &client_ids,
                &payloads,
                &created,
                &sizes,
                &keys,
                &registrations,
            ],
        )
        .await?;
    let mut seq_of = HashMap::with_capacity(rows.len());
    for row in &rows {
        seq_of.insert(uuid_from(row.try_get("id")?)?, row.try_get("seq")?);
    }
    Ok(seq_of)
}

/// Puts `sent` (each sender's in the order stored) into the senders' windows.
pub(super) async fn remember(
    tx: &Transaction<'_>,
    sent: &[Sent],
    pepper: &Pepper,
) -> StoreResult<()> {
    let bumps = send_window::bumps(sent, pepper);
    let totals = bump_counters(tx, &bumps).await?;
    fill_slots(tx, &send_window::slot_writes(sent, &bumps, &totals, pepper)).await
}

async fn bump_counters<C: GenericClient + Sync>(
    tx: &C,
    bumps: &[CounterBump],
) -> StoreResult<HashMap<DeliveryKey, i64>> {
    if bumps.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<&[u8]> = bumps.iter().map(|b| &b.key[..]).collect();
    let added: Vec<i64> = bumps.iter().map(|b| b.added).collect();
    let days: Vec<i64> = bumps.iter().map(|b| b.day).collect();
    let statement = tx.prepare_cached(BUMP_COUNTERS).await?;
    let mut totals = HashMap::with_capacity(bumps.len());
    for row in tx.query(&statement, &[&keys, &added, &days]).await? {
        totals.insert(key_from(row.try_get("counter_key")?)?, row.try_get("sent")?);
    }
    Ok(totals)
}

async fn fill_slots<C: GenericClient + Sync>(tx: &C, writes: &[SlotWrite]) -> StoreResult<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let slots: Vec<&[u8]> = writes.iter().map(|w| &w.slot_key[..]).collect();
    let keys: Vec<&[u8]> = writes.iter().map(|w| &w.dedup_key[..]).collect();
    let ids: Vec<&[u8]> = writes.iter().map(|w| &w.server_id.as_bytes()[..]).collect();
    let days: Vec<i64> = writes.iter().map(|w| w.day).collect();
    let evicted: Vec<&[u8]> = writes
        .iter()
        .filter_map(|w| w.evicts.as_ref().map(|k| &k[..]))
        .collect();
    let statement = tx.prepare_cached(FILL_SLOTS).await?;
    tx.execute(&statement, &[&slots, &keys, &ids, &days, &evicted])
        .await?;
    Ok(())
}

async fn apply_deltas<C: GenericClient + Sync>(
    tx: &C,
    mut changes: Vec<(Uuid, MailboxUsage)>,
) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    // Rows locked in one order by every batch: concurrent batches never deadlock.
    changes.sort_unstable_by_key(|(recipient, _)| *recipient);
    let recipients: Vec<&[u8]> = changes.iter().map(|(r, _)| &r.as_bytes()[..]).collect();
    let counts: Vec<i64> = changes.iter().map(|(_, d)| d.messages).collect();
    let bytes: Vec<i64> = changes.iter().map(|(_, d)| d.bytes).collect();
    let statement = tx.prepare_cached(APPLY_DELTAS).await?;
    tx.execute(&statement, &[&recipients, &counts, &bytes])
        .await?;
    Ok(())
}

/// Why a message was not stored.
enum Refusal {
    /// The same (sender, client id) is pending or in its sender's window, under this id.
    StoredBefore(Uuid),
    /// Not stored before, and the recipient exists (under another registration id).
    Registered,
    /// Not stored before, and no such recipient.
    Unknown,
}

async fn refusals<C: GenericClient + Sync>(
    tx: &C,
    messages: &[NewMessage],
    indices: &[usize],
    pepper: &Pepper,
) -> StoreResult<HashMap<usize, Refusal>> {
    if indices.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<DeliveryKey> = indices
        .iter()
        .map(|&i| pepper.delivery_key(messages[i].sender, messages[i].client_id))
        .collect();
    let senders: Vec<&[u8]> = indices
        .iter()
        .map(|&i| &messages[i].sender.as_bytes()[..])
        .collect();
    let client_ids: Vec<&[u8]> = indices
        .iter()
        .map(|&i| &messages[i].client_id.as_bytes()[..])
        .collect();
    let key_refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let recipients: Vec<&[u8]> = indices
        .iter()
        .map(|&i| &messages[i].recipient.as_bytes()[..])
        .collect();
    let registrations: Vec<Option<i64>> = indices
        .iter()
        .map(|&i| messages[i].recipient_registration_id.map(i64::from))
        .collect();
    let statement = tx.prepare_cached(REFUSALS).await?;
    let rows = tx
        .query(
            &statement,
            &[
                &senders,
                &client_ids,
                &key_refs,
                &recipients,
                &registrations,
            ],
        )
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in &rows {
        let ord: i64 = row.try_get("ord")?;
        let Some(&index) = usize::try_from(ord)
            .ok()
            .and_then(|o| o.checked_sub(1))
            .and_then(|o| indices.get(o))
        else {
            continue;
        };
        let existing: Option<&[u8]> = row.try_get("existing")?;
        let refusal = match existing {
            Some(id) => Refusal::StoredBefore(uuid_from(id)?),
            None if row.try_get::<_, bool>("registered")? => Refusal::Registered,
            None => Refusal::Unknown,
        };
        out.insert(index, refusal);
    }
    Ok(out)
}
