//! Runs the schema migrations on SQLite, keeping the ledger sqlx kept (`_sqlx_migrations`,
//! same columns and checksums), so databases set up by earlier relays carry on. Each
//! migration runs in its own transaction with its ledger row.

use rusqlite::{params, Connection, TransactionBehavior};

use super::super::migrations::{self, Source};
use super::super::{StoreError, StoreResult};

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// Applies the migrations the database lacks, after checking that the applied ones are
/// the ones this relay knows.
pub(super) fn run(conn: &mut Connection) -> StoreResult<()> {
    run_sources(conn, migrations::SQLITE)
}

fn run_sources(conn: &mut Connection, sources: &[Source]) -> StoreResult<()> {
    let failed = |e: rusqlite::Error| StoreError::Setup(format!("migration failed: {e}"));
    conn.execute_batch(LEDGER).map_err(failed)?;
    let applied: Vec<(i64, Vec<u8>, bool)> = {
        let mut statement = conn
            .prepare("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")
            .map_err(failed)?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .map_err(failed)?;
        rows.collect::<Result<_, _>>().map_err(failed)?
    };
    for (version, checksum, success) in &applied {
        migrations::check_applied(sources, *version, checksum, *success)?;
    }
    for source in sources
        .iter()
        .filter(|s| !applied.iter().any(|(v, _, _)| *v == s.version))
    {
        let started = std::time::Instant::now();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        tx.execute_batch(source.sql)
            .map_err(|e| StoreError::Setup(format!("migration {} failed: {e}", source.version)))?;
        let elapsed = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            params![
                source.version,
                source.description,
                &source.checksum()[..],
                elapsed
            ],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(version = source.version, "database migrated");
    }
    Ok(())
}
