//! The data step of migration 0003: rows written before the pepper existed are rewritten in
//! their peppered form, once, and the database remembers which pepper wrote it.
//!
//! SQL alone cannot compute an HMAC with a key it does not hold, so this runs in the relay
//! right after the schema migrations, in one transaction: phone hashes (users and pending
//! auth nonces) become phone keys, de-duplication records of delivered messages become
//! keyed hashes and the table that held sender and client ids in the clear is dropped, and
//! `last_seen` is rounded down to the day. A database already converted only has its pepper
//! checked: opening it with another pepper would make every stored number unfindable.

use sqlx::{AnyPool, Row};

use super::batch::{chunk_lengths, value_rows};
use super::dialect::Backend;
use super::{StoreError, StoreResult, DAY_MS};
use crate::pepper::Pepper;

/// `relay_meta` row naming the pepper the stored keys were made with.
const FINGERPRINT: &str = "pepper_fingerprint";
/// Rows read and rewritten per statement.
const PAGE: usize = 512;
/// Any constant shared by every relay of one PostgreSQL database: instances starting
/// together convert the rows once.
const CONVERSION_LOCK: i64 = 0x7072_6976_636f_6d6d; // "privcomm"

/// Converts what an older relay stored, or checks the pepper of a converted database.
pub(super) async fn pepper_stored_rows(
    pool: &AnyPool,
    backend: Backend,
    pepper: &Pepper,
) -> StoreResult<()> {
    let mut tx = pool.begin_with(backend.begin_write()).await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CONVERSION_LOCK)
            .execute(&mut *tx)
            .await?;
    }
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
        tracing::info!(
            users,
            records,
            "stored phone hashes and delivery records peppered"
        );
        if backend == Backend::Postgres {
            // PostgreSQL keeps the rows an UPDATE replaced until vacuum reuses their space:
            // rewrite the tables so the plain phone hashes leave the data files.
            sqlx::query("VACUUM FULL users, auth_nonces")
                .execute(pool)
                .await?;
            tracing::warn!(
                "the plain phone hashes are gone from the tables; the WAL archives and \
                 backups from before this upgrade still hold them: expire them"
            );
        }
    }
    Ok(())
}

/// Replaces every `phone_key` of `table` (still a plain phone hash) by its peppered form;
/// rows are found by `key_column`. Returns the rows rewritten.
async fn rewrite_phone_keys(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &'static str,
    key_column: &'static str,
    pepper: &Pepper,
) -> StoreResult<u64> {
    let mut after: Option<Vec<u8>> = None;
    let mut rewritten = 0u64;
    loop {
        // Only the fixed table and column names above are formatted in; all data is bound.
        let page_sql = match after {
            None => format!(
                "SELECT {key_column} AS k, phone_key FROM {table} ORDER BY {key_column} LIMIT {PAGE}"
            ),
            Some(_) => format!(
                "SELECT {key_column} AS k, phone_key FROM {table} WHERE {key_column} > $1
                 ORDER BY {key_column} LIMIT {PAGE}"
            ),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(page_sql));
        if let Some(last) = &after {
            query = query.bind(last.clone());
        }
        let rows = query.fetch_all(&mut **tx).await?;
        if rows.is_empty() {
            return Ok(rewritten);
        }
        let mut pairs = Vec::with_capacity(rows.len());
        for row in &rows {
            let key: Vec<u8> = row.try_get("k")?;
            let hash: String = row.try_get("phone_key")?;
            pairs.push((key, pepper.phone_key_of(&hash)));
        }
        after = pairs.last().map(|(key, _)| key.clone());
        let mut start = 0;
        for len in chunk_lengths(pairs.len(), PAGE) {
            let chunk = &pairs[start..start + len];
            start += len;
            let sql = format!(
                "UPDATE {table} SET phone_key = v.column2 FROM (VALUES {}) AS v
                 WHERE {table}.{key_column} = v.column1",
                value_rows(len, 2)
            );
            let mut update = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (key, phone_key) in chunk {
                update = update.bind(key.clone()).bind(phone_key.as_str().to_owned());
            }
            update.execute(&mut **tx).await?;
        }
        rewritten = rewritten.saturating_add(pairs.len() as u64);
    }
}

/// Copies `delivered_messages` into `delivery_records` under keyed hashes. Returns the
/// records copied.
async fn convert_delivery_records(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    pepper: &Pepper,
) -> StoreResult<u64> {
    let mut after: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut copied = 0u64;
    loop {
        let rows =
            match &after {
                None => sqlx::query(
                    "SELECT sender_id, client_id, server_id, delivered_at FROM delivered_messages
                     ORDER BY sender_id, client_id LIMIT 512",
                )
                .fetch_all(&mut **tx)
                .await?,
                Some((sender, client_id)) => sqlx::query(
                    "SELECT sender_id, client_id, server_id, delivered_at FROM delivered_messages
                     WHERE sender_id > $1 OR (sender_id = $1 AND client_id > $2)
                     ORDER BY sender_id, client_id LIMIT 512",
                )
                .bind(sender.clone())
                .bind(client_id.clone())
                .fetch_all(&mut **tx)
                .await?,
            };
        if rows.is_empty() {
            return Ok(copied);
        }
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let sender: Vec<u8> = row.try_get("sender_id")?;
            let client_id: Vec<u8> = row.try_get("client_id")?;
            let server_id: Vec<u8> = row.try_get("server_id")?;
            let delivered_at: i64 = row.try_get("delivered_at")?;
            let key = pepper.delivery_key(
                super::sql::uuid_from(&sender)?,
                super::sql::uuid_from(&client_id)?,
            );
            records.push((key, server_id, delivered_at));
            after = Some((sender, client_id));
        }
        let mut start = 0;
        for len in chunk_lengths(records.len(), PAGE) {
            let chunk = &records[start..start + len];
            start += len;
            let sql = format!(
                "INSERT INTO delivery_records (dedup_key, server_id, delivered_at) VALUES {}
                 ON CONFLICT (dedup_key) DO NOTHING",
                value_rows(len, 3)
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (key, server_id, delivered_at) in chunk {
                insert = insert
                    .bind(key.to_vec())
                    .bind(server_id.clone())
                    .bind(*delivered_at);
            }
            insert.execute(&mut **tx).await?;
        }
        copied = copied.saturating_add(records.len() as u64);
    }
}
