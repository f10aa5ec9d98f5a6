//! The data step of migration 0003: rows written before the pepper existed are rewritten in
//! their peppered form, once, and the database remembers which pepper wrote it.
//!
//! SQL alone cannot compute an HMAC with a key it does not hold, so this runs in the relay
//! right after the schema migrations, in one transaction: phone hashes (users and pending
//! auth nonces) become phone keys, de-duplication records of delivered messages become
//! keyed hashes and the table that held sender and client ids in the clear is dropped, and
//! `last_seen` is rounded down to the day. A database already converted only has its pepper
//! checked: opening it with another pepper would make every stored number unfindable.
//!
//! This is the SQLite version; `postgres/at_rest.rs` does the same on PostgreSQL.

use sqlx::{Row, SqlitePool};

use super::convert::uuid_from;
use super::{StoreError, StoreResult, DAY_MS};
use crate::pepper::Pepper;

/// `relay_meta` row naming the pepper the stored keys were made with.
const FINGERPRINT: &str = "pepper_fingerprint";
/// Rows read per statement.
const PAGE: i64 = 512;

/// Converts what an older relay stored, or checks the pepper of a converted database.
pub(super) async fn pepper_stored_rows(pool: &SqlitePool, pepper: &Pepper) -> StoreResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let stored: Option<String> = sqlx::query_scalar("SELECT value FROM relay_meta WHERE name = $1")
        .bind(FINGERPRINT)
        .fetch_optional(&mut *tx)
        .await?;
    match stored {
        Some(fingerprint) if fingerprint == pepper.fingerprint() => return Ok(()),
        Some(_) => {
            return Err(StoreError::Setup(
                "this database was written with another phone pepper: start the relay with the \
                 pepper it was created with (PRIVCOMM_PHONE_PEPPER or <data dir>/phone_pepper); \
                 every relay of one database must share it"
                    .into(),
            ))
        }
        None => {}
    }

    let users = rewrite_phone_keys(&mut tx, "users", "id", pepper).await?;
    rewrite_phone_keys(&mut tx, "auth_nonces", "nonce", pepper).await?;
    let records = convert_delivery_records(&mut tx, pepper).await?;
    sqlx::query("DROP TABLE delivered_messages")
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE users SET last_seen = last_seen - (last_seen % $1)")
        .bind(DAY_MS)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO relay_meta (name, value) VALUES ($1, $2)")
        .bind(FINGERPRINT)
        .bind(pepper.fingerprint())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if users > 0 || records > 0 {
        // secure_delete zeroes the replaced rows' cells; the WAL copies go at the checkpoint.
        tracing::info!(
            users,
            records,
            "stored phone hashes and delivery records peppered"
        );
    }
    Ok(())
}

/// Replaces every `phone_key` of `table` (still a plain phone hash) by its peppered form;
/// rows are found by `key_column`. Returns the rows rewritten.
async fn rewrite_phone_keys(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    table: &'static str,
    key_column: &'static str,
    pepper: &Pepper,
) -> StoreResult<u64> {
    // Only the fixed table and column names above are formatted in; all data is bound.
    let page = format!(
        "SELECT {key_column} AS k, phone_key FROM {table} WHERE {key_column} > $1
         ORDER BY {key_column} LIMIT $2"
    );
    let update = format!("UPDATE {table} SET phone_key = $2 WHERE {key_column} = $1");
    let mut after: Vec<u8> = Vec::new();
    let mut rewritten = 0u64;
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(page.clone()))
            .bind(after.clone())
            .bind(PAGE)
            .fetch_all(&mut **tx)
            .await?;
        if rows.is_empty() {
            return Ok(rewritten);
        }
        for row in &rows {
            let key: Vec<u8> = row.try_get("k")?;
            let hash: String = row.try_get("phone_key")?;
            sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                .bind(key.clone())
                .bind(pepper.phone_key_of(&hash).as_str().to_owned())
                .execute(&mut **tx)
                .await?;
            after = key;
            rewritten = rewritten.saturating_add(1);
        }
    }
}

/// Copies `delivered_messages` into `delivery_records` under keyed hashes. Returns the
/// records copied.
async fn convert_delivery_records(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    pepper: &Pepper,
) -> StoreResult<u64> {
    let mut after: (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
    let mut copied = 0u64;
    loop {
        let rows = sqlx::query(
            "SELECT sender_id, client_id, server_id, delivered_at FROM delivered_messages
             WHERE sender_id > $1 OR (sender_id = $1 AND client_id > $2)
             ORDER BY sender_id, client_id LIMIT $3",
        )
        .bind(after.0.clone())
        .bind(after.1.clone())
        .bind(PAGE)
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            return Ok(copied);
        }
        for row in &rows {
            let sender: Vec<u8> = row.try_get("sender_id")?;
            let client_id: Vec<u8> = row.try_get("client_id")?;
            let server_id: Vec<u8> = row.try_get("server_id")?;
            let delivered_at: i64 = row.try_get("delivered_at")?;
            let key = pepper.delivery_key(uuid_from(&sender)?, uuid_from(&client_id)?);
            sqlx::query(
                "INSERT INTO delivery_records (dedup_key, server_id, delivered_at)
                 VALUES ($1, $2, $3) ON CONFLICT (dedup_key) DO NOTHING",
            )
            .bind(key.to_vec())
            .bind(server_id)
            .bind(delivered_at)
            .execute(&mut **tx)
            .await?;
            after = (sender, client_id);
            copied = copied.saturating_add(1);
        }
    }
}
