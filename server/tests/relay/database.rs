//! The relay and its PostgreSQL in production conditions: TLS settings that cannot be met
//! stop it at start with a reason, TLS that can is used, and a database restart costs
//! clients retries (503 `database_unavailable`, `/health` saying so) but never the relay.

use std::time::Duration;

use privcomm_protocol::rest::SendMessageRequest;
use privcomm_protocol::Base64String;
use privcomm_server::{ManualClock, RelayServer};
use uuid::Uuid;

use crate::common::{pg_base, send_numbered, test_config, Db, Device, TestDb, TestRelay};
use crate::support::pg_cluster::PgCluster;

/// Starting a relay on `url`: its error, all causes on one line, or None if it started.
async fn start_error(url: String) -> Option<String> {
    let db = TestDb::new(Db::Sqlite).await;
    let mut config = test_config(&db);
    config.database_url = Some(url);
    let started = tokio::time::timeout(
        Duration::from_secs(60),
        RelayServer::start(config, std::sync::Arc::new(ManualClock::new())),
    )
    .await
    .expect("start-up ends, it does not hang");
    match started {
        Ok(server) => {
            server.shutdown().await.expect("shutdown");
            None
        }
        Err(e) => {
            let error = format!("{e:#}");
            println!("the relay refused to start: {error}");
            Some(error)
        }
    }
}

/// Acceptance 3: `sslmode=require` against a server without TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_requirement_the_server_cannot_meet_stops_the_relay_at_start() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .expect("cluster");
    let error = start_error(cluster.url("?sslmode=require"))
        .await
        .expect("the relay refuses to start");
    assert!(
        error.contains("sslmode=require"),
        "names the setting: {error}"
    );
    assert!(error.contains("TLS"), "says what failed: {error}");
    // Without the requirement the same server is fine.
    assert_eq!(start_error(cluster.url("")).await, None);
}

/// A production URL says verify-full: a server whose certificate cannot be verified (the
/// machine's PostgreSQL has a self-signed one, or no TLS at all) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_server_it_cannot_verify() {
    let error = start_error(format!("{}?sslmode=verify-full", pg_base()))
        .await
        .expect("the relay refuses to start");
    assert!(
        error.contains("sslmode=verify-full"),
        "names the setting: {error}"
    );
}

/// `sslmode=require` against a server with TLS: every connection of the relay is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_every_database_connection() {
    let tls_on = query_one_text(&pg_base(), "SHOW ssl").await;
    assert_eq!(
        tls_on, "on",
        "the machine's PostgreSQL serves TLS (Debian's default, snakeoil certificate)"
    );
    let name = format!("tls-{}", Uuid::new_v4().simple());
    let schema = TestDb::new(Db::Postgres).await;
    let url = format!(
        "{}&sslmode=require&application_name={name}",
        schema.url.clone().expect("postgres url")
    );
    let relay = TestRelay::start_with(Db::Sqlite, |config| config.database_url = Some(url)).await;
    let (_alice, _bob) = Device::pair(&relay).await;
    let counts = query_one_text(
        &pg_base(),
        &format!(
            "SELECT COUNT(*) FILTER (WHERE s.ssl) || '/' || COUNT(*)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = '{name}'"
        ),
    )
    .await;
    let (encrypted, all) = counts.split_once('/').expect("two counts");
    assert!(
        all.parse::<u32>().expect("count") > 0,
        "the relay is connected"
    );
    assert_eq!(encrypted, all, "every connection is encrypted");
    relay.finish().await;
    schema.cleanup().await;
}

/// Acceptance 2, at the relay: while its database restarts, sends fail with 503
/// `database_unavailable` and `/health` says the database is unreachable; the relay keeps
/// running and serves again once the database is back, with nothing stored lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_costs_retries_not_the_relay_or_messages() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .expect("cluster");
    let url = cluster.url("");
    let relay = TestRelay::start_with(Db::Sqlite, |config| config.database_url = Some(url)).await;
    let (alice, bob) = Device::pair(&relay).await;
    let send = |body: &'static [u8]| SendMessageRequest {
        to: bob.id(),
        id: Uuid::new_v4(),
        payload: Base64String::encode(body),
        registration_id: None,
    };
    let before = send(b"before");
    let (status, _) = relay
        .post("/api/v1/messages", &before, Some(alice.bearer()))
        .await;
    assert_eq!(status, 202);

    tokio::task::block_in_place(|| cluster.stop());
    let (status, body) = relay.get("/health", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["database"], "unreachable");
    let during = send(b"during");
    let (status, body) = relay
        .post("/api/v1/messages", &during, Some(alice.bearer()))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "database_unavailable", "{body}");

    tokio::task::block_in_place(|| cluster.start_again());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while relay.get("/health", None).await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay reconnects to its database"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The send that failed is sent again, as a client does; the one stored before stays.
    let (status, _) = relay
        .post("/api/v1/messages", &during, Some(alice.bearer()))
        .await;
    assert_eq!(status, 202);
    let store = relay.store();
    let pending = store.pending_messages(bob.id(), 0, 10).await.expect("read");
    let bodies: Vec<&[u8]> = pending.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(bodies, [&b"before"[..], &b"during"[..]]);
    relay.finish().await;
}

/// One text value of a query, through a short-lived connection.
/// Three relays on one database run retention at the same moment (issue 18, acceptance
/// 6): each expired message is deleted once, by one relay, and the mailboxes' counts stay
/// true. (Two passes at once each subtracted the same messages from the counts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_once_for_relays_sharing_a_database() {
    use privcomm_server::maintenance;

    const RECIPIENTS: usize = 40;
    const EACH: usize = 50;
    let first = TestRelay::start(Db::Postgres).await;
    // The same database and data directory (so the same pepper and secrets), own clocks.
    let mut others = Vec::new();
    for _ in 0..2 {
        let clock = ManualClock::new();
        let server = RelayServer::start(test_config(&first.db), std::sync::Arc::new(clock.clone()))
            .await
            .expect("another relay on the same database starts");
        others.push((server, clock));
    }
    let alice = Device::enrol(&first, 0).await;
    let mut recipients = Vec::new();
    for _ in 0..RECIPIENTS {
        recipients.push(Device::enrol(&first, 0).await.id());
    }
    let mut ws = alice.online(&first).await;
    for &to in &recipients {
        send_numbered(&mut ws, to, EACH).await;
    }
    ws.close().await;

    let month = Duration::from_secs(31 * 24 * 3600);
    first.clock.advance(month);
    for (_, clock) in &others {
        clock.advance(month);
    }
    let (a, b, c) = tokio::join!(
        maintenance::run_once(first.server().state()),
        maintenance::run_once(others[0].0.state()),
        maintenance::run_once(others[1].0.state()),
    );
    let mut purged: Vec<u64> = [a, b, c]
        .into_iter()
        .map(|r| r.expect("maintenance").messages)
        .collect();
    purged.sort_unstable();
    assert_eq!(
        purged,
        vec![0, 0, (RECIPIENTS * EACH) as u64],
        "one relay deletes every expired message"
    );
    let store = first.store();
    assert_eq!(store.pending_total().await.expect("count"), 0);
    for recipient in &recipients {
        let usage = store.mailbox_usage(*recipient).await.expect("usage");
        assert_eq!(
            (usage.messages, usage.bytes),
            (0, 0),
            "a mailbox's count after the purge"
        );
    }
    for (server, _) in others {
        server.shutdown().await.expect("clean shutdown");
    }
    first.finish().await;
}

async fn query_one_text(url: &str, sql: &str) -> String {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("connect");
    let value: String = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&pool)
        .await
        .expect("query")
        .try_get(0)
        .expect("text");
    pool.close().await;
    value
}
