//! WebSocket connection management: replacement (4409), the connection cap, keep-alive reaping
//! and graceful shutdown (1001).

use std::time::Duration;

use privcomm_protocol::ws::ServerFrame;

use crate::common::{send_and_confirm, ws_request, Db, Device, Incoming, TestRelay};

async fn wait_for_connections(relay: &TestRelay, want: usize) {
    for _ in 0..200 {
        if relay.server().state().connections.len() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "expected {want} connections, have {}",
        relay.server().state().connections.len()
    );
}

async fn second_connection_replaces_first_with_4409(db: Db) {
    let relay = TestRelay::start(db).await;
    let (alice, bob) = Device::pair(&relay).await;
    let mut first = bob.online(&relay).await;
    let mut second = bob.online(&relay).await;
    match first.next().await {
        Incoming::Closed(code) => assert_eq!(code, Some(4409)),
        Incoming::Frame(f) => panic!("old connection got {f:?}"),
    }
    // New messages go to the new connection.
    let mut alice_ws = alice.online(&relay).await;
    let id = send_and_confirm(&mut alice_ws, bob.id(), b"to the new one").await;
    let ServerFrame::EncryptedMessage { id: got, .. } = second.frame().await else {
        panic!("expected delivery on the new connection");
    };
    assert_eq!(got, id);
    wait_for_connections(&relay, 2).await;
    alice_ws.close().await;
    second.close().await;
    relay.finish().await;
}

async fn connections_beyond_the_limit_are_refused_cleanly(db: Db) {
    let relay = TestRelay::start_with(db, |c| c.max_connections = 2).await;
    let a = Device::enrol(&relay, 0).await;
    let b = Device::enrol(&relay, 0).await;
    let c = Device::enrol(&relay, 0).await;
    let mut wa = a.connect(&relay).await;
    let mut wb = b.connect(&relay).await;
    assert!(matches!(wa.frame().await, ServerFrame::QueueEmpty));
    assert!(matches!(wb.frame().await, ServerFrame::QueueEmpty));
    let refused = tokio_tungstenite::connect_async(ws_request(&relay.ws_url(), c.bearer())).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                    .expect("JSON body");
            assert_eq!(body["error"], "too_many_connections");
        }
        other => panic!("expected a 503 refusal, got {other:?}"),
    }
    // A reconnect by an already-connected user is a replacement, not a new slot.
    let wa2 = a.online(&relay).await;
    // Once someone leaves, there is room again.
    wb.close().await;
    wait_for_connections(&relay, 1).await;
    let wc = c.online(&relay).await;
    let (_, metrics) = relay.get("/metrics", None).await;
    assert!(metrics
        .as_str()
        .unwrap()
        .contains("privcomm_ws_connections_refused_total 1"));
    wa2.close().await;
    wc.close().await;
    let _ = wa;
    relay.finish().await;
}

async fn silent_connections_are_reaped(db: Db) {
    let relay = TestRelay::start_with(db, |c| c.ping_interval_secs = 1).await;
    let alice = Device::enrol(&relay, 0).await;
    // A raw TCP client that completes the upgrade and then never reads or answers pings.
    let (stream, _) = tokio_tungstenite::connect_async(ws_request(&relay.ws_url(), alice.bearer()))
        .await
        .expect("connects");
    wait_for_connections(&relay, 1).await;
    // Three missed ping intervals later the relay has dropped it.
    wait_for_connections(&relay, 0).await;
    drop(stream);
    relay.finish().await;
}

async fn shutdown_closes_sockets_with_1001(db: Db) {
    let mut relay = TestRelay::start(db).await;
    let alice = Device::enrol(&relay, 0).await;
    let mut ws = alice.online(&relay).await;
    let server = relay.server.take().expect("running");
    let shutdown = tokio::spawn(server.shutdown());
    assert_eq!(ws.expect_close().await, Some(1001));
    shutdown.await.expect("join").expect("clean shutdown");
    relay.finish().await;
}

crate::on_both_backends!(
    second_connection_replaces_first_with_4409,
    connections_beyond_the_limit_are_refused_cleanly,
    silent_connections_are_reaped,
    shutdown_closes_sockets_with_1001,
);
