//! Runs the schema migrations on PostgreSQL, keeping the ledger sqlx kept
//! (`_sqlx_migrations`, same columns and checksums), so databases set up by earlier relays
//! carry on. All of it runs in one transaction under an advisory lock: relays of one
//! database that start together migrate it once.

use deadpool_postgres::Object;

use super::super::migrations::{self, Source};
use super::super::{StoreError, StoreResult};

/// Any constant shared by every relay of one database ("privmigr").
const MIGRATION_LOCK: i64 = 0x7072_6976_6d69_6772;

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// Applies the migrations `client`'s database lacks, after checking that the applied ones
/// are the ones this relay knows.
pub(super) async fn run(client: &mut Object) -> StoreResult<()> {
    run_sources(client, migrations::POSTGRES).await
}

/// `run` for a given list (tests migrate to an older version with a prefix of it).
pub(crate) async fn run_sources(client: &mut Object, sources: &[Source]) -> StoreResult<()> {
    let failed = |e: tokio_postgres::Error| StoreError::Setup(format!("migration failed: {e}"));
    let tx = client.transaction().await.map_err(failed)?;
    // A migration of large tables may take longer than a request may.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed)?;
    tx.batch_execute(LEDGER).await.map_err(failed)?;
    let applied = tx
        .query(
            "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(failed)?;
    let mut known = std::collections::HashMap::new();
    for row in &applied {
        let version: i64 = row.try_get(0).map_err(failed)?;
        let checksum: Vec<u8> = row.try_get(1).map_err(failed)?;
        let success: bool = row.try_get(2).map_err(failed)?;
        migrations::check_applied(sources, version, &checksum, success)?;
        known.insert(version, ());
    }
    for source in sources.iter().filter(|s| !known.contains_key(&s.version)) {
        let started = std::time::Instant::now();
        tx.batch_execute(source.sql)
            .await
            .map_err(|e| StoreError::Setup(format!("migration {} failed: {e}", source.version)))?;
        let elapsed = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES ($1, $2, TRUE, $3, $4)",
            &[
                &source.version,
                &source.description,
                &&source.checksum()[..],
                &elapsed,
            ],
        )
        .await
        .map_err(failed)?;
        tracing::info!(version = source.version, "database migrated");
    }
    tx.commit().await.map_err(failed)?;
    Ok(())
}
