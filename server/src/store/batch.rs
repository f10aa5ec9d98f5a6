//! Group commit: many message stores, acks and `last_seen` updates in one transaction, with
//! multi-row statements so the database sees a handful of statements per batch instead of
//! one per message.
//!
//! Statements are built for power-of-two row counts only (a batch of 100 runs as 64 + 32 + 4)
//! so each connection's prepared-statement cache holds a few shapes, not one per size.

use std::collections::{HashMap, HashSet};

use sqlx::{Any, Row, Transaction};
use uuid::Uuid;

use super::mailbox::{MailboxLedger, APPLY_DELTA_SQL};
use super::sql::uuid_from;
use super::{
    day_of, AckRequest, MailboxQuota, MailboxUsage, NewMessage, StoreError, StoreOutcome,
    StoreResult, WriteBatch, WriteBatchOutcome,
};
use crate::pepper::Pepper;

/// Most rows in one multi-row insert (10 parameters each).
const INSERT_CHUNK: usize = 128;
/// Most ids in one `IN (…)` list.
const ID_CHUNK: usize = 256;
/// Most rows in one delivery-record insert (3 parameters each).
const DELIVERED_CHUNK: usize = 128;

type Tx = Transaction<'static, Any>;

/// Splits `len` items into power-of-two chunk lengths of at most `max` (itself a power of two).
pub(super) fn chunk_lengths(mut len: usize, max: usize) -> Vec<usize> {
    let mut out = Vec::new();
    while len > 0 {
        let size = if len >= max {
            max
        } else {
            1 << (usize::BITS - 1 - len.leading_zeros())
        };
        out.push(size);
        len -= size;
    }
    out
}

/// `($1, $2, …), ($n, …)`: `rows` groups of `width` numbered parameters.
pub(super) fn value_rows(rows: usize, width: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..width {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * width + col + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// Applies `batch` inside `tx` (which the caller commits).
pub(super) async fn apply(
    tx: &mut Tx,
    batch: &WriteBatch,
    pepper: &Pepper,
) -> StoreResult<WriteBatchOutcome> {
    let mut mailboxes = MailboxLedger::default();
    let messages = store_messages(tx, &batch.messages, batch.quota, &mut mailboxes, pepper).await?;
    let acks = apply_acks(tx, &batch.acks, batch.now, &mut mailboxes, pepper).await?;
    for (recipient, delta) in mailboxes.changes() {
        sqlx::query(APPLY_DELTA_SQL)
            .bind(recipient.as_bytes().to_vec())
            .bind(delta.messages)
            .bind(delta.bytes)
            .execute(&mut **tx)
            .await?;
    }
    for user in &batch.touches {
        sqlx::query("UPDATE users SET last_seen = $2 WHERE id = $1")
            .bind(user.as_bytes().to_vec())
            .bind(day_of(batch.now))
            .execute(&mut **tx)
            .await?;
    }
    Ok(WriteBatchOutcome { messages, acks })
}

/// What the mailboxes of `recipients` hold, into `ledger`.
async fn load_mailboxes(
    tx: &mut Tx,
    recipients: &[Uuid],
    ledger: &mut MailboxLedger,
) -> StoreResult<()> {
    let mut start = 0;
    for len in chunk_lengths(recipients.len(), ID_CHUNK) {
        let chunk = &recipients[start..start + len];
        start += len;
        let sql = format!(
            "SELECT recipient_id, messages, bytes FROM mailboxes WHERE recipient_id IN ({})",
            placeholders(len)
        );
        // Only numbered placeholders are formatted in; all data is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.as_bytes().to_vec());
        }
        for row in query.fetch_all(&mut **tx).await? {
            ledger.load(
                uuid_from(&row.try_get::<Vec<u8>, _>("recipient_id")?)?,
                MailboxUsage {
                    messages: row.try_get("messages")?,
                    bytes: row.try_get("bytes")?,
                },
            );
        }
    }
    for id in recipients {
        ledger.load(*id, MailboxUsage::default());
    }
    Ok(())
}

async fn store_messages(
    tx: &mut Tx,
    messages: &[NewMessage],
    quota: MailboxQuota,
    mailboxes: &mut MailboxLedger,
    pepper: &Pepper,
) -> StoreResult<Vec<StoreResult<StoreOutcome>>> {
    // A resend inside one batch is stored once; its copies answer like any duplicate.
    let mut first_of: HashMap<(Uuid, Uuid), usize> = HashMap::new();
    let mut unique: Vec<usize> = Vec::with_capacity(messages.len());
    let mut copy_of: Vec<Option<usize>> = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        match first_of.entry((message.sender, message.client_id)) {
            std::collections::hash_map::Entry::Occupied(first) => copy_of.push(Some(*first.get())),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(index);
                unique.push(index);
                copy_of.push(None);
            }
        }
    }

    // Quota: messages are admitted in arrival order while their mailbox has room. A message
    // admitted here that turns out to be a duplicate only leaves the mailbox emptier.
    let recipients: Vec<Uuid> = {
        let mut seen = HashSet::new();
        unique
            .iter()
            .map(|&i| messages[i].recipient)
            .filter(|r| seen.insert(*r))
            .collect()
    };
    load_mailboxes(tx, &recipients, mailboxes).await?;
    let mut tentative = MailboxLedger::default();
    for r in &recipients {
        tentative.load(*r, mailboxes.usage(r));
    }
    let mut over_quota: HashSet<usize> = HashSet::new();
    let admitted: Vec<usize> = unique
        .iter()
        .copied()
        .filter(|&i| {
            let m = &messages[i];
            let size = u64::try_from(m.payload.len()).unwrap_or(u64::MAX);
            if quota.admits(tentative.usage(&m.recipient), size) {
                tentative.added(m.recipient, m.payload.len());
                true
            } else {
                over_quota.insert(i);
                false
            }
        })
        .collect();

    let mut seq_of: HashMap<Uuid, i64> = HashMap::with_capacity(unique.len());
    let mut start = 0;
    for len in chunk_lengths(admitted.len(), INSERT_CHUNK) {
        let chunk = &admitted[start..start + len];
        start += len;
        // Rows whose recipient is unknown or that were already delivered are filtered out
        // rather than failing the statement; those still pending hit the unique constraint.
        // The seventh column orders the insert: PostgreSQL may otherwise emit the rows of a
        // VALUES join in any order, and `seq` must follow arrival order. The eighth is the
        // message's delivery key, the ninth its payload size, the tenth the recipient's
        // registration id the sender encrypted for (NULL: not checked).
        let sql = format!(
            "INSERT INTO pending_messages
                 (id, recipient_id, sender_id, client_id, payload, created_at, size)
             SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column9
             FROM (VALUES {}) AS v
             WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = v.column2
                           AND (v.column10 IS NULL OR u.registration_id = v.column10))
               AND NOT EXISTS (SELECT 1 FROM delivery_records d WHERE d.dedup_key = v.column8)
             ORDER BY v.column7
             ON CONFLICT (sender_id, client_id) DO NOTHING
             RETURNING seq, id",
            value_rows(len, 10)
        );
        // Only numbered placeholders are formatted in; all data is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (ordinal, &index) in chunk.iter().enumerate() {
            let m = &messages[index];
            query = query
                .bind(m.id.as_bytes().to_vec())
                .bind(m.recipient.as_bytes().to_vec())
                .bind(m.sender.as_bytes().to_vec())
                .bind(m.client_id.as_bytes().to_vec())
                .bind(m.payload.to_vec())
                .bind(m.created_at)
                .bind(ordinal as i64)
                .bind(pepper.delivery_key(m.sender, m.client_id).to_vec())
                .bind(i64::try_from(m.payload.len()).unwrap_or(i64::MAX))
                .bind(m.recipient_registration_id.map(i64::from));
        }
        for row in query.fetch_all(&mut **tx).await? {
            let id = uuid_from(&row.try_get::<Vec<u8>, _>("id")?)?;
            seq_of.insert(id, row.try_get("seq")?);
        }
    }

    let mut results: Vec<Option<StoreResult<StoreOutcome>>> =
        (0..messages.len()).map(|_| None).collect();
    for &index in &unique {
        let m = &messages[index];
        let outcome = match seq_of.get(&m.id) {
            Some(&seq) => {
                mailboxes.added(m.recipient, m.payload.len());
                Ok(StoreOutcome::Stored(m.stored_as(seq)))
            }
            None => match refused(tx, m, pepper).await? {
                Err(StoreError::MissingReference | StoreError::StaleRecipient)
                    if over_quota.contains(&index) =>
                {
                    Err(StoreError::MailboxFull)
                }
                other => other,
            },
        };
        results[index] = Some(outcome);
    }
    for (index, copy) in copy_of.iter().enumerate() {
        if let Some(first) = copy {
            let answer = match &results[*first] {
                Some(Ok(StoreOutcome::Stored(p))) => {
                    Ok(StoreOutcome::Duplicate { server_id: p.id })
                }
                Some(Ok(dup @ StoreOutcome::Duplicate { .. })) => Ok(dup.clone()),
                Some(Err(StoreError::MailboxFull)) => Err(StoreError::MailboxFull),
                _ => Err(StoreError::MissingReference),
            };
            results[index] = Some(answer);
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or(Err(StoreError::Conflict)))
        .collect())
}

/// Why a row was not inserted: stored before (pending or delivered), or an unknown recipient.
async fn refused(
    tx: &mut Tx,
    message: &NewMessage,
    pepper: &Pepper,
) -> StoreResult<StoreResult<StoreOutcome>> {
    let sender = message.sender.as_bytes().to_vec();
    let client_id = message.client_id.as_bytes().to_vec();
    let existing = sqlx::query(
        "SELECT id FROM pending_messages WHERE sender_id = $1 AND client_id = $2
         UNION ALL
         SELECT server_id FROM delivery_records WHERE dedup_key = $3",
    )
    .bind(sender)
    .bind(client_id)
    .bind(
        pepper
            .delivery_key(message.sender, message.client_id)
            .to_vec(),
    )
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = existing {
        return Ok(Ok(StoreOutcome::Duplicate {
            server_id: uuid_from(&row.try_get::<Vec<u8>, _>(0)?)?,
        }));
    }
    let registered: Option<i64> =
        sqlx::query_scalar("SELECT registration_id FROM users WHERE id = $1")
            .bind(message.recipient.as_bytes().to_vec())
            .fetch_optional(&mut **tx)
            .await?;
    Ok(Err(match registered {
        Some(_) => StoreError::StaleRecipient,
        None => StoreError::MissingReference,
    }))
}

async fn apply_acks(
    tx: &mut Tx,
    acks: &[AckRequest],
    now: i64,
    mailboxes: &mut MailboxLedger,
    pepper: &Pepper,
) -> StoreResult<Vec<bool>> {
    let ids: Vec<Uuid> = {
        let mut seen = HashSet::new();
        acks.iter()
            .map(|a| a.id)
            .filter(|id| seen.insert(*id))
            .collect()
    };
    // Whose message each id is: an ack deletes only the acknowledging user's own messages.
    let mut owner: HashMap<Uuid, Uuid> = HashMap::with_capacity(ids.len());
    let mut start = 0;
    for len in chunk_lengths(ids.len(), ID_CHUNK) {
        let chunk = &ids[start..start + len];
        start += len;
        let sql = format!(
            "SELECT id, recipient_id FROM pending_messages WHERE id IN ({})",
            placeholders(len)
        );
        // Only numbered placeholders are formatted in; all data is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.as_bytes().to_vec());
        }
        for row in query.fetch_all(&mut **tx).await? {
            owner.insert(
                uuid_from(&row.try_get::<Vec<u8>, _>("id")?)?,
                uuid_from(&row.try_get::<Vec<u8>, _>("recipient_id")?)?,
            );
        }
    }
    let mut matched: Vec<Uuid> = Vec::with_capacity(owner.len());
    let mut taken = HashSet::new();
    for ack in acks {
        if owner.get(&ack.id) == Some(&ack.recipient) && taken.insert(ack.id) {
            matched.push(ack.id);
        }
    }

    let mut delivered: Vec<(crate::pepper::DeliveryKey, Uuid)> = Vec::with_capacity(matched.len());
    let mut start = 0;
    for len in chunk_lengths(matched.len(), ID_CHUNK) {
        let chunk = &matched[start..start + len];
        start += len;
        let sql = format!(
            "DELETE FROM pending_messages WHERE id IN ({})
             RETURNING id, sender_id, client_id, recipient_id,
                       size",
            placeholders(len)
        );
        // Only numbered placeholders are formatted in; all data is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.as_bytes().to_vec());
        }
        for row in query.fetch_all(&mut **tx).await? {
            mailboxes.removed(
                uuid_from(&row.try_get::<Vec<u8>, _>("recipient_id")?)?,
                row.try_get("size")?,
            );
            delivered.push((
                pepper.delivery_key(
                    uuid_from(&row.try_get::<Vec<u8>, _>("sender_id")?)?,
                    uuid_from(&row.try_get::<Vec<u8>, _>("client_id")?)?,
                ),
                uuid_from(&row.try_get::<Vec<u8>, _>("id")?)?,
            ));
        }
    }
    let mut start = 0;
    for len in chunk_lengths(delivered.len(), DELIVERED_CHUNK) {
        let chunk = &delivered[start..start + len];
        start += len;
        let sql = format!(
            "INSERT INTO delivery_records (dedup_key, server_id, delivered_at)
             VALUES {} ON CONFLICT (dedup_key) DO NOTHING",
            value_rows(len, 3)
        );
        // Only numbered placeholders are formatted in; all data is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (key, server_id) in chunk {
            query = query
                .bind(key.to_vec())
                .bind(server_id.as_bytes().to_vec())
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }

    // Each deleted id answers true once: a repeated ack in the same batch finds it gone.
    let mut deleted: HashSet<Uuid> = delivered.iter().map(|(_, id)| *id).collect();
    Ok(acks
        .iter()
        .map(|ack| owner.get(&ack.id) == Some(&ack.recipient) && deleted.remove(&ack.id))
        .collect())
}

/// `$1, $2, …, $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_within_the_cap() {
        assert_eq!(chunk_lengths(0, 128), Vec::<usize>::new());
        assert_eq!(chunk_lengths(1, 128), [1]);
        assert_eq!(chunk_lengths(100, 128), [64, 32, 4]);
        assert_eq!(chunk_lengths(300, 128), [128, 128, 32, 8, 4]);
        assert_eq!(chunk_lengths(300, 128).iter().sum::<usize>(), 300);
    }

    #[test]
    fn value_rows_number_parameters_row_by_row() {
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(3), "$1, $2, $3");
    }
}
