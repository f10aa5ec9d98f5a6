//! A group commit on SQLite, on the writer thread: every message, ack and `last_seen` of
//! the batch in one transaction, through statements prepared once per connection. Each
//! stored message takes the next slot of its sender's window (`store/send_window.rs`).

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use crate::pepper::{DeliveryKey, Pepper};

use super::super::mailbox::{MailboxLedger, APPLY_DELTA_SQL};
use super::super::send_window::{evicted_by, Sent};
use super::super::{day_of, MailboxUsage, StoreError, StoreOutcome, WriteBatch, WriteBatchOutcome};

/// Applies `batch` in one transaction.
pub(super) fn apply(
    conn: &mut Connection,
    batch: &WriteBatch,
    pepper: &Pepper,
) -> rusqlite::Result<WriteBatchOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcome = WriteBatchOutcome::default();
    let mut mailboxes = MailboxLedger::default();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO pending_messages
                 (id, recipient_id, sender_id, client_id, payload, created_at, size)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?8
             WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2
                           AND (?9 IS NULL OR registration_id = ?9))
               AND NOT EXISTS (SELECT 1 FROM recent_sends WHERE dedup_key = ?7)
             ON CONFLICT (sender_id, client_id) DO NOTHING
             RETURNING seq",
        )?;
        // A match in the sender's window counts only for the recipient's current
        // registration: a message stored for a device that registered again since was
        // dropped with that device's mailbox, and is refused as stale, not as sent.
        let mut existing = tx.prepare_cached(
            "SELECT id FROM pending_messages WHERE sender_id = ?1 AND client_id = ?2
             UNION ALL
             SELECT server_id FROM recent_sends WHERE dedup_key = ?3
                 AND (?5 IS NULL OR EXISTS (SELECT 1 FROM users
                                            WHERE id = ?4 AND registration_id = ?5))",
        )?;
        let mut usage =
            tx.prepare_cached("SELECT messages, bytes FROM mailboxes WHERE recipient_id = ?1")?;
        let mut registration =
            tx.prepare_cached("SELECT registration_id FROM users WHERE id = ?1")?;
        for m in &batch.messages {
            let (id, recipient, sender, client_id) = (
                m.id.as_bytes(),
                m.recipient.as_bytes(),
                m.sender.as_bytes(),
                m.client_id.as_bytes(),
            );
            if !mailboxes.knows(&m.recipient) {
                let held = usage
                    .query_row(params![recipient], |row| {
                        Ok(MailboxUsage {
                            messages: row.get(0)?,
                            bytes: row.get(1)?,
                        })
                    })
                    .optional()?
                    .unwrap_or_default();
                mailboxes.load(m.recipient, held);
            }
            let size = u64::try_from(m.payload.len()).unwrap_or(u64::MAX);
            let dedup_key = pepper.delivery_key(m.sender, m.client_id);
            let seq: Option<i64> = if batch.quota.admits(mailboxes.usage(&m.recipient), size) {
                insert
                    .query_row(
                        params![
                            id,
                            recipient,
                            sender,
                            client_id,
                            &m.payload[..],
                            m.created_at,
                            &dedup_key[..],
                            i64::try_from(m.payload.len()).unwrap_or(i64::MAX),
                            m.recipient_registration_id.map(i64::from)
                        ],
                        |row| row.get(0),
                    )
                    .optional()?
            } else {
                None
            };
            let result = match seq {
                Some(seq) => {
                    remember(
                        &tx,
                        &Sent {
                            sender: m.sender,
                            client_id: m.client_id,
                            server_id: m.id,
                            day: day_of(batch.now),
                        },
                        &dedup_key,
                        pepper,
                    )?;
                    mailboxes.added(m.recipient, m.payload.len());
                    Ok(StoreOutcome::Stored(m.stored_as(seq)))
                }
                None => {
                    // Stored before (pending or delivered, also earlier in this batch), the
                    // mailbox is full, or the recipient does not exist.
                    let first: Option<Vec<u8>> = existing
                        .query_row(
                            params![
                                sender,
                                client_id,
                                &dedup_key[..],
                                recipient,
                                m.recipient_registration_id.map(i64::from)
                            ],
                            |row| row.get(0),
                        )
                        .optional()?;
                    match first.and_then(|bytes| Uuid::from_slice(&bytes).ok()) {
                        Some(server_id) => Ok(StoreOutcome::Duplicate { server_id }),
                        None if !batch.quota.admits(mailboxes.usage(&m.recipient), size) => {
                            Err(StoreError::MailboxFull)
                        }
                        None => {
                            let registered: Option<i64> = registration
                                .query_row(params![recipient], |row| row.get(0))
                                .optional()?;
                            match registered {
                                Some(_) => Err(StoreError::StaleRecipient),
                                None => Err(StoreError::MissingReference),
                            }
                        }
                    }
                }
            };
            outcome.messages.push(result);
        }

        let mut delete = tx.prepare_cached(
            "DELETE FROM pending_messages WHERE id = ?1 AND recipient_id = ?2 RETURNING size",
        )?;
        let mut seen = HashSet::new();
        for ack in &batch.acks {
            // A repeated ack in the same batch finds the row already gone.
            if !seen.insert(ack.id) {
                outcome.acks.push(false);
                continue;
            }
            let id = ack.id.as_bytes();
            let deleted: Option<i64> = delete
                .query_row(params![id, ack.recipient.as_bytes()], |row| row.get(0))
                .optional()?;
            if let Some(size) = deleted {
                mailboxes.removed(ack.recipient, size);
            }
            outcome.acks.push(deleted.is_some());
        }

        let mut touch = tx.prepare_cached("UPDATE users SET last_seen = ?2 WHERE id = ?1")?;
        for user in &batch.touches {
            touch.execute(params![user.as_bytes(), day_of(batch.now)])?;
        }

        let mut apply_delta = tx.prepare_cached(APPLY_DELTA_SQL)?;
        for (recipient, delta) in mailboxes.changes() {
            apply_delta.execute(params![recipient.as_bytes(), delta.messages, delta.bytes])?;
        }
    }
    tx.commit()?;
    Ok(outcome)
}

/// Puts a stored message in its sender's window at the next position, evicting the one a
/// window before it (`dedup_key` is its `Pepper::delivery_key`).
pub(super) fn remember(
    conn: &Connection,
    sent: &Sent,
    dedup_key: &DeliveryKey,
    pepper: &Pepper,
) -> rusqlite::Result<()> {
    let counter_key = pepper.send_counter_key(sent.sender);
    let total: i64 = conn
        .prepare_cached(
            "INSERT INTO send_counters (counter_key, sent, last_day) VALUES (?1, 1, ?2)
             ON CONFLICT (counter_key) DO UPDATE SET
                 sent = send_counters.sent + 1,
                 last_day = max(send_counters.last_day, excluded.last_day)
             RETURNING sent",
        )?
        .query_row(params![&counter_key[..], sent.day], |row| row.get(0))?;
    let position = u64::try_from(total.saturating_sub(1)).unwrap_or(0);
    if let Some(old) = evicted_by(position) {
        let old_key = pepper.send_slot_key(sent.sender, old);
        conn.prepare_cached("DELETE FROM recent_sends WHERE slot_key = ?1")?
            .execute(params![&old_key[..]])?;
    }
    let slot_key = pepper.send_slot_key(sent.sender, position);
    conn.prepare_cached(
        "INSERT INTO recent_sends (slot_key, dedup_key, server_id, stored_on)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (slot_key) DO UPDATE SET
             dedup_key = excluded.dedup_key,
             server_id = excluded.server_id,
             stored_on = excluded.stored_on",
    )?
    .execute(params![
        &slot_key[..],
        &dedup_key[..],
        sent.server_id.as_bytes(),
        sent.day
    ])?;
    Ok(())
}
