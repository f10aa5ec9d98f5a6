//! Data-key rotation: every sealed value re-encrypted, every lookup hash recomputed.

use rusqlite::{params, Connection};

use crate::crypto::codec::Reader;
use crate::crypto::StoreKeys;
use crate::error::{CoreError, CoreResult};

/// How a table's row key is formed.
enum RowKey {
    /// A clear key (an id) that does not change.
    Fixed,
    /// A lookup hash of `kind` over an identifier found in the sealed value.
    Hashed {
        kind: &'static str,
        identifier: fn(&[u8], &'static str) -> CoreResult<Vec<u8>>,
    },
}

/// Identifier stored as the first length-prefixed field of the value.
fn first_field(plain: &[u8], table: &'static str) -> CoreResult<Vec<u8>> {
    Ok(Reader::new(plain, table).bytes()?.to_vec())
}

/// The whole value is the identifier.
fn whole_value(plain: &[u8], _table: &'static str) -> CoreResult<Vec<u8>> {
    Ok(plain.to_vec())
}

struct Table {
    name: &'static str,
    key_column: &'static str,
    select: &'static str,
    row_key: RowKey,
}

const TABLES: &[Table] = &[
    Table {
        name: "sessions",
        key_column: "address_hash",
        select: "SELECT address_hash, sealed FROM sessions",
        row_key: RowKey::Hashed {
            kind: "address",
            identifier: first_field,
        },
    },
    Table {
        name: "peer_identities",
        key_column: "address_hash",
        select: "SELECT address_hash, sealed FROM peer_identities",
        row_key: RowKey::Hashed {
            kind: "address",
            identifier: first_field,
        },
    },
    Table {
        name: "conversations",
        key_column: "peer_hash",
        select: "SELECT peer_hash, sealed FROM conversations",
        row_key: RowKey::Hashed {
            kind: "peer",
            identifier: whole_value,
        },
    },
    Table {
        name: "contacts",
        key_column: "peer_hash",
        select: "SELECT peer_hash, sealed FROM contacts",
        row_key: RowKey::Hashed {
            kind: "peer",
            identifier: first_field,
        },
    },
    Table {
        name: "blocked_peers",
        key_column: "peer_hash",
        select: "SELECT peer_hash, sealed FROM blocked_peers",
        row_key: RowKey::Hashed {
            kind: "peer",
            identifier: whole_value,
        },
    },
    Table {
        name: "receive_quota",
        key_column: "peer_hash",
        select: "SELECT peer_hash, sealed FROM receive_quota",
        row_key: RowKey::Hashed {
            kind: "peer",
            identifier: whole_value,
        },
    },
    Table {
        name: "outbox",
        key_column: "id",
        select: "SELECT id, sealed FROM outbox",
        row_key: RowKey::Fixed,
    },
    Table {
        name: "prekeys",
        key_column: "id",
        select: "SELECT id, sealed FROM prekeys",
        row_key: RowKey::Fixed,
    },
    Table {
        name: "signed_prekeys",
        key_column: "id",
        select: "SELECT id, sealed FROM signed_prekeys",
        row_key: RowKey::Fixed,
    },
    Table {
        name: "kyber_prekeys",
        key_column: "id",
        select: "SELECT id, sealed FROM kyber_prekeys",
        row_key: RowKey::Fixed,
    },
];

/// Re-seals every row from `old` to `new`. Runs inside the caller's transaction.
pub fn reseal_all(conn: &Connection, old: &StoreKeys, new: &StoreKeys) -> CoreResult<()> {
    reseal_account(conn, old, new)?;
    for table in TABLES {
        reseal_table(conn, table, old, new)?;
    }
    reseal_messages(conn, old, new)
}

fn reseal_account(conn: &Connection, old: &StoreKeys, new: &StoreKeys) -> CoreResult<()> {
    let rows: Vec<Vec<u8>> = conn
        .prepare("SELECT sealed FROM account WHERE id = 1")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for sealed in rows {
        let plain = old.open("account", b"account", &sealed)?;
        let resealed = new.seal("account", b"account", &plain);
        conn.execute("UPDATE account SET sealed = ?1 WHERE id = 1", [resealed])?;
    }
    Ok(())
}

fn reseal_table(
    conn: &Connection,
    table: &Table,
    old: &StoreKeys,
    new: &StoreKeys,
) -> CoreResult<()> {
    let rows: Vec<(rusqlite::types::Value, Vec<u8>)> = conn
        .prepare(table.select)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (key, sealed) in rows {
        let old_row_key = row_key_bytes(&key, table.name)?;
        let plain = old.open(table.name, &old_row_key, &sealed)?;
        match table.row_key {
            RowKey::Fixed => {
                let resealed = new.seal(table.name, &old_row_key, &plain);
                let sql = format!(
                    "UPDATE {} SET sealed = ?1 WHERE {} = ?2",
                    table.name, table.key_column
                );
                conn.execute(&sql, params![resealed, key])?;
            }
            RowKey::Hashed { kind, identifier } => {
                let id = identifier(&plain, table.name)?;
                let new_hash = new.lookup(kind, &id);
                let resealed = new.seal(table.name, &new_hash, &plain);
                let sql = format!(
                    "UPDATE {} SET {} = ?1, sealed = ?2 WHERE {} = ?3",
                    table.name, table.key_column, table.key_column
                );
                conn.execute(&sql, params![&new_hash[..], resealed, key])?;
            }
        }
    }
    Ok(())
}

fn row_key_bytes(key: &rusqlite::types::Value, table: &'static str) -> CoreResult<Vec<u8>> {
    match key {
        rusqlite::types::Value::Blob(b) => Ok(b.clone()),
        rusqlite::types::Value::Integer(i) => {
            let id = u32::try_from(*i).map_err(|_| CoreError::Tampered { table })?;
            Ok(id.to_be_bytes().to_vec())
        }
        _ => Err(CoreError::Tampered { table }),
    }
}

fn reseal_messages(conn: &Connection, old: &StoreKeys, new: &StoreKeys) -> CoreResult<()> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = conn
        .prepare("SELECT id, sealed FROM messages")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, sealed) in rows {
        let plain = old.open("messages", &id, &sealed)?;
        let peer = first_field(&plain, "messages")?;
        let resealed = new.seal("messages", &id, &plain);
        conn.execute(
            "UPDATE messages SET peer_hash = ?1, sealed = ?2 WHERE id = ?3",
            params![&new.lookup("peer", &peer)[..], resealed, id],
        )?;
    }
    Ok(())
}
