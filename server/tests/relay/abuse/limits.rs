//! Findings 5 and 6 of issue 15: whose bucket a request counts in (behind a trusted proxy,
//! IPv6 networks, phone hashes, accounts), and what one account can learn from or take of
//! other users' prekeys.

use std::net::IpAddr;

use serde_json::json;

use super::{client, connect_from, exchange, health_answers, status_of};
use crate::common::{random_phone_hash, ChildRelay, Db, Device, TestDb};

const PROXY: [u8; 4] = [127, 0, 2, 1];

/// `POST path` with `body` from `from`, with extra header lines; the answer's status.
async fn post_from(
    relay: &ChildRelay,
    from: IpAddr,
    path: &str,
    extra_headers: &str,
    body: &str,
) -> u16 {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    status_of(&exchange(relay.addr(), from, request.as_bytes()).await)
}

fn junk_token_request() -> String {
    json!({
        "phone_hash": random_phone_hash(),
        "nonce": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "signature": "AAAA",
    })
    .to_string()
}

/// Statuses of `n` junk token requests through the proxy for the client `forwarded_for`.
async fn tokens_via_proxy(relay: &ChildRelay, forwarded_for: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        let header = format!("X-Forwarded-For: {forwarded_for}\r\n");
        statuses.push(
            post_from(
                relay,
                IpAddr::from(PROXY),
                "/auth/token",
                &header,
                &junk_token_request(),
            )
            .await,
        );
    }
    statuses
}

/// Finding 5: behind a trusted proxy each client has its own bucket (IPv6 clients one per
/// /64), a client that is not the proxy cannot pick its bucket with a forged header, and
/// the proxy is not held to the per-client socket cap.
#[tokio::test]
async fn limits_key_on_the_client_behind_a_trusted_proxy() {
    let db = TestDb::new(Db::Sqlite).await;
    let relay = ChildRelay::start_with(
        &db,
        "info",
        &[
            ("PRIVCOMM_TRUSTED_PROXIES", "127.0.2.1"),
            ("PRIVCOMM_TOKEN_PER_MINUTE", "10"),
            ("PRIVCOMM_REGISTER_PER_HOUR", "10"),
            ("PRIVCOMM_MAX_SOCKETS_PER_CLIENT", "4"),
        ],
        None,
    )
    .await;

    // Ten junk token requests from one client lock out only that client.
    let statuses = tokens_via_proxy(&relay, "203.0.113.7", 11).await;
    assert_eq!(statuses[..10], [401; 10]);
    assert_eq!(statuses[10], 429);
    assert_eq!(tokens_via_proxy(&relay, "203.0.113.8", 1).await, [401]);
    // The proxy's own chain: the nearest untrusted hop counts, not what the client wrote.
    assert_eq!(
        tokens_via_proxy(&relay, "203.0.113.8, 203.0.113.7", 1).await,
        [429]
    );

    // IPv6 clients are counted per /64.
    for i in 1..=10 {
        assert_eq!(
            tokens_via_proxy(&relay, &format!("2001:db8:1:2::{i:x}"), 1).await,
            [401]
        );
    }
    assert_eq!(
        tokens_via_proxy(&relay, "2001:db8:1:2:ffff::1", 1).await,
        [429]
    );
    assert_eq!(tokens_via_proxy(&relay, "2001:db8:1:3::1", 1).await, [401]);

    // Thirty addresses of one /64 cannot register thirty accounts.
    let mut registered = 0;
    for i in 1..=30 {
        let header = format!("X-Forwarded-For: 2001:db8:9:9::{i:x}\r\n");
        let device = Device::new(0);
        let status = post_from(
            &relay,
            IpAddr::from(PROXY),
            "/api/v1/register",
            &header,
            &serde_json::to_string(&device.register_request(&[0u8; 32])).expect("json"),
        )
        .await;
        if status != 429 {
            registered += 1;
        }
    }
    assert_eq!(registered, 10, "register attempts past the /64's limit");

    // A client that is not the proxy: forged headers do not move it to another bucket.
    let direct = client(9);
    let mut statuses = Vec::new();
    for i in 0..11 {
        let header = format!("X-Forwarded-For: 198.51.100.{i}\r\n");
        statuses.push(
            post_from(
                &relay,
                direct,
                "/auth/token",
                &header,
                &junk_token_request(),
            )
            .await,
        );
    }
    assert_eq!(statuses[10], 429, "{statuses:?}");

    // The proxy carries many clients: the per-client socket cap does not apply to it.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(
            connect_from(relay.addr(), IpAddr::from(PROXY))
                .await
                .expect("connect"),
        );
    }
    assert!(health_answers(relay.addr(), IpAddr::from(PROXY)).await);
    for _ in 0..4 {
        held.push(
            connect_from(relay.addr(), client(10))
                .await
                .expect("connect"),
        );
    }
    assert!(
        !health_answers(relay.addr(), client(10)).await,
        "fifth socket of a client"
    );
    db.cleanup().await;
}

/// Finding 5: challenge and token requests for one phone hash are limited whatever
/// address they come from, and every authenticated endpoint has a per-account budget.
#[tokio::test]
async fn phone_hashes_and_accounts_have_budgets_of_their_own() {
    let db = TestDb::new(Db::Sqlite).await;
    let relay = ChildRelay::start_with(
        &db,
        "info",
        &[
            ("PRIVCOMM_PHONE_HASH_PER_MINUTE", "5"),
            ("PRIVCOMM_ACCOUNT_PER_MINUTE", "20"),
        ],
        None,
    )
    .await;
    let victim = random_phone_hash();
    let body = json!({ "phone_hash": victim }).to_string();
    let mut statuses = Vec::new();
    for n in 20..26 {
        statuses.push(post_from(&relay, client(n), "/auth/challenge", "", &body).await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    let other = json!({ "phone_hash": random_phone_hash() }).to_string();
    assert_eq!(
        post_from(&relay, client(26), "/auth/challenge", "", &other).await,
        200
    );

    let (alice, bob) = Device::pair(&relay).await;
    let mut statuses = Vec::new();
    for _ in 0..21 {
        statuses.push(
            relay
                .status_of("/api/v1/prekeys/count", Some(alice.bearer()))
                .await,
        );
    }
    assert_eq!(statuses[..20], [200; 20]);
    assert_eq!(statuses[20], 429);
    assert_eq!(
        relay
            .status_of("/api/v1/prekeys/count", Some(bob.bearer()))
            .await,
        200
    );
    db.cleanup().await;
}

/// Finding 6: one account cannot drain another's one-time prekeys (a repeat fetch within
/// the window carries none, and each user's prekeys are handed out within an hourly
/// budget), nor enumerate registered numbers quickly (lookups have an hourly budget).
async fn prekeys_cannot_be_drained_or_numbers_enumerated(db: Db) {
    let db = TestDb::new(db).await;
    let relay = ChildRelay::start_with(
        &db,
        "info",
        &[
            ("PRIVCOMM_KEY_LOOKUPS_PER_HOUR", "20"),
            ("PRIVCOMM_PREKEYS_PER_TARGET_PER_HOUR", "5"),
        ],
        None,
    )
    .await;
    let bob = Device::enrol(&relay, 100).await;
    let alice = Device::enrol(&relay, 0).await;
    let path = format!("/keys/{}", bob.phone_hash);
    let mut with_key = 0;
    for _ in 0..20 {
        let (status, bundle) = relay.get(&path, Some(alice.bearer())).await;
        assert_eq!(status, 200);
        if !bundle["one_time_prekey"].is_null() {
            with_key += 1;
        }
    }
    assert_eq!(
        with_key, 1,
        "only the first fetch within the window carries a prekey"
    );
    let (status, body) = relay.get(&path, Some(alice.bearer())).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited"))
    );

    // Eight other callers: the user's hourly budget of 5 leaves 4 prekeys for them.
    let mut others_with_key = 0;
    for _ in 0..8 {
        let caller = Device::enrol(&relay, 0).await;
        let (status, bundle) = relay.get(&path, Some(caller.bearer())).await;
        assert_eq!(status, 200);
        if !bundle["one_time_prekey"].is_null() {
            others_with_key += 1;
        }
    }
    assert_eq!(others_with_key, 4);
    let (_, count) = relay.get("/api/v1/prekeys/count", Some(bob.bearer())).await;
    assert_eq!(count["one_time_prekeys"], 95);

    // Unknown numbers count too: a scan stops at the budget.
    let carol = Device::enrol(&relay, 0).await;
    let mut statuses = Vec::new();
    for _ in 0..21 {
        let (status, _) = relay
            .get(
                &format!("/keys/{}", random_phone_hash()),
                Some(carol.bearer()),
            )
            .await;
        statuses.push(status);
    }
    assert_eq!(statuses[..20], [404; 20]);
    assert_eq!(statuses[20], 429);
    db.cleanup().await;
}

crate::on_both_backends!(prekeys_cannot_be_drained_or_numbers_enumerated);
