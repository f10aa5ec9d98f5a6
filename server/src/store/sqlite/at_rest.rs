//! The data step of migration 0003 on SQLite: rows written before the pepper existed are
//! rewritten in their peppered form, once, and the database remembers which pepper wrote
//! it.
//!
//! SQL alone cannot compute an HMAC with a key it does not hold, so this runs in the relay
//! right after the schema migrations, in one transaction: phone hashes (users and pending
//! auth nonces) become phone keys, de-duplication records of delivered messages join their
//! senders' windows under keyed hashes (`store/send_window.rs`) and the table that held
//! sender and client ids in the clear is dropped, and
//! `last_seen` is rounded down to the day. A database already converted only has its pepper
//! checked: opening it with another pepper would make every stored number unfindable.
//! (`postgres/at_rest.rs` does the same on PostgreSQL.)

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::super::convert::uuid_from;
use super::super::send_window::Sent;
use super::super::{day_of, StoreResult, DAY_MS};
use crate::pepper::Pepper;

/// A row of the old `delivered_messages`: sender, client id, server id, delivered at.
type DeliveredRow = (Vec<u8>, Vec<u8>, Vec<u8>, i64);

/// `relay_meta` row naming the pepper the stored keys were made with.
const FINGERPRINT: &str = "pepper_fingerprint";

/// Converts what an older relay stored, or checks the pepper of a converted database.
pub(super) fn pepper_stored_rows(conn: &mut Connection, pepper: &Pepper) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: Option<String> = tx
        .query_row(
            "SELECT value FROM relay_meta WHERE name = ?1",
            params![FINGERPRINT],
            |row| row.get(0),
        )
        .optional()?;
    if !super::super::convert::needs_peppering(stored.as_deref(), pepper)? {
        return Ok(());
    }

    let mut users = 0u64;
    for (table, key_column) in [("users", "id"), ("auth_nonces", "nonce")] {
        // Only the fixed table and column names above are formatted in; all data is bound.
        let rows: Vec<(Vec<u8>, String)> = {
            let mut select = tx.prepare(&format!("SELECT {key_column}, phone_key FROM {table}"))?;
            let rows = select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut update = tx.prepare(&format!(
            "UPDATE {table} SET phone_key = ?2 WHERE {key_column} = ?1"
        ))?;
        for (key, hash) in &rows {
            update.execute(params![key, pepper.phone_key_of(hash).as_str()])?;
        }
        if table == "users" {
            users = rows.len() as u64;
        }
    }

    let delivered: Vec<DeliveredRow> = {
        let mut select = tx.prepare(
            "SELECT sender_id, client_id, server_id, delivered_at FROM delivered_messages
             ORDER BY sender_id, delivered_at, client_id",
        )?;
        let rows = select.query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    // Each sender's oldest first, so the window keeps the latest.
    for (sender, client_id, server_id, delivered_at) in &delivered {
        let sent = Sent {
            sender: uuid_from(sender)?,
            client_id: uuid_from(client_id)?,
            server_id: uuid_from(server_id)?,
            day: day_of(*delivered_at),
        };
        let dedup_key = pepper.delivery_key(sent.sender, sent.client_id);
        super::batch::remember(&tx, &sent, &dedup_key, pepper)?;
    }
    tx.execute_batch("DROP TABLE delivered_messages")?;
    tx.execute(
        "UPDATE users SET last_seen = last_seen - (last_seen % ?1)",
        params![DAY_MS],
    )?;
    tx.execute(
        "INSERT INTO relay_meta (name, value) VALUES (?1, ?2)",
        params![FINGERPRINT, pepper.fingerprint()],
    )?;
    tx.commit()?;
    if users > 0 || !delivered.is_empty() {
        // secure_delete zeroes the replaced rows' cells; the WAL copies go at the checkpoint.
        tracing::info!(
            users,
            records = delivered.len(),
            "stored phone hashes peppered, delivered messages put in their senders' windows"
        );
    }
    Ok(())
}
