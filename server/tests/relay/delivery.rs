//! Acceptance 2: an offline recipient's backlog arrives whole and in order, and messages not
//! acknowledged before a connection drops are delivered again.

use privcomm_protocol::ws::{ClientFrame, ServerFrame};
use privcomm_protocol::Base64String;
use uuid::Uuid;

use crate::common::{send_numbered, Db, Device, TestRelay};

fn number_of(payload: &Base64String) -> usize {
    number_in(&payload.decode("payload").expect("b64"))
}

fn number_in(payload: &[u8]) -> usize {
    let text = std::str::from_utf8(payload).expect("utf8");
    text.trim_start_matches("message ")
        .parse()
        .expect("numbered payload")
}

async fn offline_backlog_arrives_in_order_then_queue_empty(db: Db) {
    const COUNT: usize = 5_000;
    let relay = TestRelay::start(db).await;
    let (alice, bob) = Device::pair(&relay).await;
    let mut alice_ws = alice.online(&relay).await;
    send_numbered(&mut alice_ws, bob.id(), COUNT).await;
    assert_eq!(
        relay.store().pending_total().await.expect("count"),
        COUNT as u64
    );

    let mut bob_ws = bob.connect(&relay).await;
    let mut next = 0;
    loop {
        match bob_ws.frame().await {
            ServerFrame::EncryptedMessage {
                id,
                sender,
                payload,
                ..
            } => {
                assert_eq!(sender, alice.id());
                assert_eq!(number_of(&payload), next, "messages arrive in order");
                next += 1;
                bob_ws.ack(id).await;
            }
            ServerFrame::QueueEmpty => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        next, COUNT,
        "every queued message arrives before queue_empty"
    );
    // All acked: storage drains to empty.
    let mut remaining = u64::MAX;
    for _ in 0..200 {
        remaining = relay.store().pending_total().await.expect("count");
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(remaining, 0);
    alice_ws.close().await;
    bob_ws.close().await;
    relay.finish().await;
}

async fn unacked_messages_are_redelivered_after_a_drop(db: Db) {
    const COUNT: usize = 150;
    let relay = TestRelay::start(db).await;
    let (alice, bob) = Device::pair(&relay).await;
    let mut alice_ws = alice.online(&relay).await;
    send_numbered(&mut alice_ws, bob.id(), COUNT).await;

    // Bob reads 100 messages, acks none, and his connection dies.
    let mut bob_ws = bob.connect(&relay).await;
    for expected in 0..100 {
        let ServerFrame::EncryptedMessage { payload, .. } = bob_ws.frame().await else {
            panic!("expected a message");
        };
        assert_eq!(number_of(&payload), expected);
    }
    bob_ws.abort();

    // On the next connection all 150 arrive again, in order, the first 100 included.
    let mut bob_ws = bob.connect(&relay).await;
    let seen: Vec<usize> = bob_ws
        .drain()
        .await
        .iter()
        .map(|(_, p)| number_in(p))
        .collect();
    assert_eq!(seen, (0..COUNT).collect::<Vec<_>>());
    alice_ws.close().await;
    bob_ws.close().await;
    relay.finish().await;
}

/// Bob acks every message and connects again at once, while his old connection still has
/// frames the relay has not read (5,000 acks of unknown ids first, then the real ones).
/// The new connection replaces the old one (4409); the acks it had not read yet still
/// count, and the new connection reads the mailbox only once they are written, so nothing
/// arrives again. (They were dropped: each reconnect got the same messages again; then
/// they counted, but a reconnect could still read the mailbox before they were written.)
async fn acks_sent_before_a_reconnect_still_count(db: Db) {
    const COUNT: usize = 20;
    let relay = TestRelay::start(db).await;
    let (alice, bob) = Device::pair(&relay).await;
    let mut alice_ws = alice.online(&relay).await;
    send_numbered(&mut alice_ws, bob.id(), COUNT).await;

    let mut old = bob.connect(&relay).await;
    let mut ids = Vec::new();
    while ids.len() < COUNT {
        if let ServerFrame::EncryptedMessage { id, .. } = old.frame().await {
            ids.push(id);
        }
    }
    for _ in 0..5_000 {
        old.ack(Uuid::new_v4()).await;
    }
    for id in &ids {
        old.ack(*id).await;
    }
    // The old socket stays open (dropping it with the relay's close frame unread would
    // make this side reset it, and a reset discards what the relay had not read).
    let mut new = bob.connect(&relay).await;
    assert_eq!(
        new.drain().await.len(),
        0,
        "the new connection read the mailbox before the old one's acks were written"
    );
    assert_eq!(old.expect_close().await, Some(4409));
    alice_ws.close().await;
    new.close().await;
    relay.finish().await;
}

/// Bob acks every message of a 500-message backlog, closes cleanly and connects again at
/// once, three times over: the new connection waits for the writes of the one before, so
/// nothing he acked is delivered again (issue 18, acceptance 3). Before, the acks were
/// often still queued for the database when the new connection read its backlog.
async fn acked_messages_are_not_delivered_again_after_an_immediate_reconnect(db: Db) {
    const COUNT: usize = 500;
    let relay = TestRelay::start(db).await;
    let (alice, bob) = Device::pair(&relay).await;
    let mut alice_ws = alice.online(&relay).await;
    for round in 0..3 {
        send_numbered(&mut alice_ws, bob.id(), COUNT).await;
        let mut bob_ws = bob.connect(&relay).await;
        let got = bob_ws.drain().await;
        assert_eq!(got.len(), COUNT, "round {round}: the whole backlog arrives");
        bob_ws.close().await;
        let mut again = bob.connect(&relay).await;
        let redelivered = again.drain().await.len();
        assert_eq!(
            redelivered, 0,
            "round {round}: messages acked before a clean close were delivered again"
        );
        again.close().await;
    }
    alice_ws.close().await;
    relay.finish().await;
}

async fn live_messages_keep_order_while_backlog_flushes(db: Db) {
    let relay = TestRelay::start(db).await;
    let (alice, bob) = Device::pair(&relay).await;
    let mut alice_ws = alice.online(&relay).await;
    send_numbered(&mut alice_ws, bob.id(), 600).await;
    // Bob connects and, while the backlog is flushing, Alice keeps sending.
    let mut bob_ws = bob.connect(&relay).await;
    let sender = tokio::spawn(async move {
        for i in 600..900 {
            let frame = ClientFrame::Send {
                to: bob.id(),
                id: Uuid::new_v4(),
                payload: Base64String::encode(format!("message {i:05}")),
                registration_id: None,
            };
            alice_ws.send(&frame).await;
            assert!(matches!(alice_ws.frame().await, ServerFrame::Sent { .. }));
        }
        alice_ws
    });
    let mut seen = Vec::new();
    while seen.len() < 900 {
        match bob_ws.frame().await {
            ServerFrame::EncryptedMessage { id, payload, .. } => {
                seen.push(number_of(&payload));
                bob_ws.ack(id).await;
            }
            ServerFrame::QueueEmpty => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        (0..900).collect::<Vec<_>>(),
        "one sender's messages stay in order"
    );
    let alice_ws = sender.await.expect("sender task");
    alice_ws.close().await;
    bob_ws.close().await;
    relay.finish().await;
}

crate::on_both_backends!(
    offline_backlog_arrives_in_order_then_queue_empty,
    unacked_messages_are_redelivered_after_a_drop,
    live_messages_keep_order_while_backlog_flushes,
    acks_sent_before_a_reconnect_still_count,
    acked_messages_are_not_delivered_again_after_an_immediate_reconnect,
);
