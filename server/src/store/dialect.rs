//! The few statements whose SQL differs between SQLite and PostgreSQL.

/// Which database a `SqlStore` talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Statement that opens a write transaction. SQLite must take the write lock up front,
    /// or a deferred transaction that later writes fails with SQLITE_BUSY instead of waiting.
    pub fn begin_write(self) -> &'static str {
        match self {
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN",
        }
    }

    /// Claims the oldest unused one-time prekey of `$1` at time `$2`. PostgreSQL skips rows
    /// another transaction is claiming, so concurrent fetches never share a key; SQLite
    /// serialises writers, so the plain statement is already atomic.
    pub fn claim_prekey(self) -> &'static str {
        match self {
            Self::Sqlite => {
                "UPDATE one_time_prekeys SET used_at = $2 WHERE id = (
                     SELECT id FROM one_time_prekeys WHERE user_id = $1 AND used_at IS NULL
                     ORDER BY id LIMIT 1)
                 RETURNING key_id, public_key"
            }
            Self::Postgres => {
                "UPDATE one_time_prekeys SET used_at = $2 WHERE id = (
                     SELECT id FROM one_time_prekeys WHERE user_id = $1 AND used_at IS NULL
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING key_id, public_key"
            }
        }
    }
}
