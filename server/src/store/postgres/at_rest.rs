//! The data step of migration 0003 on PostgreSQL (see `store/at_rest.rs` for what and why):
//! rows written before the pepper existed are rewritten in their peppered form, once, under
//! an advisory lock so that relays starting together convert them once.

use deadpool_postgres::{Object, Transaction};

use super::super::convert::uuid_from;
use super::super::send_window::Sent;
use super::super::{day_of, StoreResult, DAY_MS};
use crate::pepper::Pepper;

/// `relay_meta` row naming the pepper the stored keys were made with.
const FINGERPRINT: &str = "pepper_fingerprint";
/// Rows read and rewritten per statement.
const PAGE: i64 = 512;
/// Any constant shared by every relay of one database: "privcomm".
const CONVERSION_LOCK: i64 = 0x7072_6976_636f_6d6d;

/// Converts what an older relay stored, or checks the pepper of a converted database.
pub(super) async fn pepper_stored_rows(client: &mut Object, pepper: &Pepper) -> StoreResult<()> {
    let tx = client.transaction().await?;
    // Rewriting every user may take longer than a request may.
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CONVERSION_LOCK])
        .await?;
    let stored = tx
        .query_opt(
            "SELECT value FROM relay_meta WHERE name = $1",
            &[&FINGERPRINT],
        )
        .await?;
    let stored: Option<&str> = match &stored {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    };
    if !super::super::convert::needs_peppering(stored, pepper)? {
        return Ok(());
    }

    let users = rewrite_phone_keys(&tx, "users", "id", pepper).await?;
    rewrite_phone_keys(&tx, "auth_nonces", "nonce", pepper).await?;
    let records = convert_delivery_records(&tx, pepper).await?;
    tx.batch_execute("DROP TABLE delivered_messages").await?;
    tx.execute(
        "UPDATE users SET last_seen = last_seen - (last_seen % $1)",
        &[&DAY_MS],
    )
    .await?;
    tx.execute(
        "INSERT INTO relay_meta (name, value) VALUES ($1, $2)",
        &[&FINGERPRINT, &pepper.fingerprint()],
    )
    .await?;
    tx.commit().await?;
    if users > 0 || records > 0 {
        tracing::info!(
            users,
            records,
            "stored phone hashes peppered, delivered messages put in their senders' windows"
        );
        // PostgreSQL keeps the rows an UPDATE replaced until vacuum reuses their space:
        // rewrite the tables so the plain phone hashes leave the data files.
        // VACUUM may not share a query string with other statements.
        client.batch_execute("SET statement_timeout = 0").await?;
        let vacuumed = client.batch_execute("VACUUM FULL users, auth_nonces").await;
        client.batch_execute("RESET statement_timeout").await?;
        vacuumed?;
        tracing::warn!(
            "the plain phone hashes are gone from the tables; the WAL archives and backups \
             from before this upgrade still hold them: expire them"
        );
    }
    Ok(())
}

/// Replaces every `phone_key` of `table` (still a plain phone hash) by its peppered form;
/// rows are found by `key_column`. Returns the rows rewritten.
async fn rewrite_phone_keys(
    tx: &Transaction<'_>,
    table: &'static str,
    key_column: &'static str,
    pepper: &Pepper,
) -> StoreResult<u64> {
    // Only the fixed table and column names above are formatted in; all data is bound.
    let page = format!(
        "SELECT {key_column}, phone_key FROM {table} WHERE {key_column} > $1
         ORDER BY {key_column} LIMIT $2"
    );
    let update = format!(
        "UPDATE {table} SET phone_key = v.phone_key
         FROM unnest($1::BYTEA[], $2::TEXT[]) AS v(k, phone_key)
         WHERE {table}.{key_column} = v.k"
    );
    let mut after: Vec<u8> = Vec::new();
    let mut rewritten = 0u64;
    loop {
        let rows = tx.query(page.as_str(), &[&after, &PAGE]).await?;
        if rows.is_empty() {
            return Ok(rewritten);
        }
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
        let mut phone_keys: Vec<String> = Vec::with_capacity(rows.len());
        for row in &rows {
            keys.push(row.try_get(0)?);
            let hash: &str = row.try_get(1)?;
            phone_keys.push(pepper.phone_key_of(hash).as_str().to_owned());
        }
        tx.execute(update.as_str(), &[&keys, &phone_keys]).await?;
        rewritten = rewritten.saturating_add(keys.len() as u64);
        after = keys.pop().unwrap_or_default();
    }
}

/// Puts each row of `delivered_messages` in its sender's window under keyed hashes
/// (`store/send_window.rs`), each sender's oldest first, so the window keeps the latest.
/// Returns the rows read.
async fn convert_delivery_records(tx: &Transaction<'_>, pepper: &Pepper) -> StoreResult<u64> {
    // The pages below follow this order; without an index each would sort the whole table.
    // The table is dropped after, index and all.
    tx.batch_execute(
        "CREATE INDEX delivered_messages_by_sender
             ON delivered_messages (sender_id, delivered_at, client_id)",
    )
    .await?;
    let mut after: (Vec<u8>, i64, Vec<u8>) = (Vec::new(), i64::MIN, Vec::new());
    let mut copied = 0u64;
    loop {
        let rows = tx
            .query(
                "SELECT sender_id, client_id, server_id, delivered_at FROM delivered_messages
                 WHERE (sender_id, delivered_at, client_id) > ($1, $2, $3)
                 ORDER BY sender_id, delivered_at, client_id LIMIT $4",
                &[&after.0, &after.1, &after.2, &PAGE],
            )
            .await?;
        if rows.is_empty() {
            return Ok(copied);
        }
        let mut sent = Vec::with_capacity(rows.len());
        for row in &rows {
            let sender: Vec<u8> = row.try_get("sender_id")?;
            let client_id: Vec<u8> = row.try_get("client_id")?;
            let server_id: &[u8] = row.try_get("server_id")?;
            let delivered_at: i64 = row.try_get("delivered_at")?;
            sent.push(Sent {
                sender: uuid_from(&sender)?,
                client_id: uuid_from(&client_id)?,
                server_id: uuid_from(server_id)?,
                day: day_of(delivered_at),
            });
            after = (sender, delivered_at, client_id);
        }
        super::batch::remember(tx, &sent, pepper).await?;
        copied = copied.saturating_add(sent.len() as u64);
    }
}
