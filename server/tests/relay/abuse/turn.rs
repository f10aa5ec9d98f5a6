//! Finding 8 of issue 15: TURN. A guessable secret or a credential that lives for years
//! lets anyone relay through the operator's TURN server; a username carrying the account
//! id lets coturn's logs join accounts to IP addresses; unlimited issuance lets one account
//! mint credentials for a botnet; relaying into private ranges reaches the operator's LAN.

use std::net::IpAddr;
use std::str::FromStr;

use privcomm_server::routes::turn::turn_credential;

use crate::common::{ChildRelay, Db, Device, TestDb};

const SECRET: &str = "turn-secret-turn-secret-turn-secret-0123";

/// Settings the relay refuses to start with: a short secret, a long lifetime.
#[tokio::test]
async fn weak_turn_settings_stop_the_relay_from_starting() {
    let db = TestDb::new(Db::Sqlite).await;
    let output = ChildRelay::refused_start(&db, &[("PRIVCOMM_TURN_SECRET", "x")]).await;
    assert!(output.contains("PRIVCOMM_TURN_SECRET"), "{output}");
    let decade = (10 * 365 * 86_400u64).to_string();
    let output = ChildRelay::refused_start(
        &db,
        &[
            ("PRIVCOMM_TURN_SECRET", SECRET),
            ("PRIVCOMM_TURN_TTL", &decade),
        ],
    )
    .await;
    assert!(output.contains("PRIVCOMM_TURN_TTL"), "{output}");
}

/// Credentials name no one, differ every time, verify under the shared secret, live the
/// configured time, and an account gets a few per hour (then 429 with Retry-After), while
/// another account still gets its own.
#[tokio::test]
async fn turn_credentials_are_opaque_and_limited_per_account() {
    let db = TestDb::new(Db::Sqlite).await;
    let relay = ChildRelay::start_with(
        &db,
        "info",
        &[
            ("PRIVCOMM_TURN_SECRET", SECRET),
            ("PRIVCOMM_TURN_URLS", "turn:turn.example.org:3478"),
            ("PRIVCOMM_TURN_TTL", "600"),
            ("PRIVCOMM_TURN_PER_HOUR", "5"),
        ],
        None,
    )
    .await;
    let (alice, bob) = Device::pair(&relay).await;
    let id = alice.id();
    let id_forms = [id.to_string(), id.simple().to_string()];
    let mut usernames = std::collections::HashSet::new();
    for _ in 0..5 {
        let (status, creds) = relay
            .get("/api/v1/turn-credentials", Some(alice.bearer()))
            .await;
        assert_eq!(status, 200, "{creds}");
        let username = creds["username"].as_str().expect("username").to_owned();
        for form in &id_forms {
            // No 8-character piece of the account id appears in the username.
            for piece in form.as_bytes().windows(8) {
                let piece = std::str::from_utf8(piece).expect("ascii");
                assert!(!username.contains(piece), "{username} names the account");
            }
        }
        let (expiry, _) = username.split_once(':').expect("expiry:random");
        let expiry: i64 = expiry.parse().expect("expiry");
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs(),
        )
        .expect("secs");
        assert!((expiry - now - 600).abs() <= 5, "expiry {expiry} now {now}");
        assert_eq!(creds["ttl"], 600);
        assert_eq!(
            creds["credential"].as_str(),
            Some(
                turn_credential(SECRET.as_bytes(), &username)
                    .expect("hmac")
                    .as_str()
            )
        );
        assert!(usernames.insert(username), "usernames repeat");
    }
    let response = reqwest::Client::new()
        .get(relay.url("/api/v1/turn-credentials"))
        .bearer_auth(alice.bearer())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"], "rate_limited");
    let (status, _) = relay
        .get("/api/v1/turn-credentials", Some(bob.bearer()))
        .await;
    assert_eq!(status, 200);
    // The TURN REST names are not logged either.
    for username in &usernames {
        assert!(!relay.log_text().contains(username.as_str()));
    }
}

/// The coturn example denies relaying to every special-purpose range (RFC 6890 and the
/// IANA registries), IPv4 and IPv6, so a TURN allocation cannot reach the operator's
/// network, loopback services or cloud metadata endpoints.
#[test]
fn the_coturn_example_denies_every_special_purpose_range() {
    let config = include_str!("../../../coturn.conf.example");
    let denied: Vec<(IpAddr, IpAddr)> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("denied-peer-ip="))
        .map(|range| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            (
                IpAddr::from_str(low.trim()).expect("low address"),
                IpAddr::from_str(high.trim()).expect("high address"),
            )
        })
        .collect();
    let covered = |net: &str| {
        let net = ipnet::IpNet::from_str(net).expect("network");
        denied
            .iter()
            .any(|(low, high)| *low <= net.network() && net.broadcast() <= *high)
    };
    for net in [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ] {
        assert!(covered(net), "coturn.conf.example does not deny {net}");
    }
    assert!(config.lines().any(|l| l.trim() == "no-multicast-peers"));
    assert!(config.lines().any(|l| l.trim().starts_with("user-quota=")));
}
