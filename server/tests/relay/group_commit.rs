//! The writer's group commit: many stores and acks in one transaction must answer each
//! write exactly as one-by-one writes would (duplicates, unknown recipients, foreign acks).

use std::sync::Arc;

use privcomm_server::store::{
    AckRequest, MailboxQuota, MailboxUsage, NewMessage, StoreError, StoreOutcome, WriteBatch,
};
use uuid::Uuid;

use crate::common::{Db, Device, TestRelay};

fn message(sender: Uuid, recipient: Uuid, client_id: Uuid, body: &str) -> NewMessage {
    NewMessage {
        id: Uuid::new_v4(),
        sender,
        client_id,
        recipient,
        payload: body.as_bytes().to_vec().into(),
        // Far in the future, so no retention run can touch it during the test.
        created_at: i64::MAX / 2,
        recipient_registration_id: None,
    }
}

async fn batch_answers_each_write_like_single_writes(db: Db) {
    let relay = TestRelay::start(db).await;
    let (alice, bob) = Device::pair(&relay).await;
    let store = relay.store();
    let repeated = Uuid::new_v4();
    // 300 messages (more than one multi-row chunk), a resend inside the batch, and one for
    // a recipient that does not exist.
    let mut messages: Vec<NewMessage> = (0..300)
        .map(|i| message(alice.id(), bob.id(), Uuid::new_v4(), &format!("m{i}")))
        .collect();
    messages.push(message(alice.id(), bob.id(), repeated, "first"));
    messages.push(message(
        alice.id(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        "nobody",
    ));
    messages.push(message(alice.id(), bob.id(), repeated, "resend"));
    let outcome = store
        .write_batch(Arc::new(WriteBatch {
            messages: messages.clone(),
            now: 10,
            ..WriteBatch::default()
        }))
        .await
        .expect("batch commits");
    assert_eq!(outcome.messages.len(), messages.len());
    let mut seqs = Vec::new();
    for result in &outcome.messages[..300] {
        match result {
            Ok(StoreOutcome::Stored(p)) => seqs.push(p.seq),
            other => panic!("expected stored, got {other:?}"),
        }
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "storage order follows arrival order"
    );
    let first_id = match &outcome.messages[300] {
        Ok(StoreOutcome::Stored(p)) => p.id,
        other => panic!("expected stored, got {other:?}"),
    };
    assert!(matches!(
        outcome.messages[301],
        Err(StoreError::MissingReference)
    ));
    assert_eq!(
        outcome.messages[302].as_ref().ok(),
        Some(&StoreOutcome::Duplicate {
            server_id: first_id
        })
    );
    assert_eq!(store.pending_total().await.expect("count"), 301);

    // Acks: Bob's own, Alice acking Bob's message (ignored), a repeat, an unknown id.
    let pending = store
        .pending_messages(bob.id(), 0, 1000)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 301);
    let mut acks: Vec<AckRequest> = pending
        .iter()
        .take(200)
        .map(|p| AckRequest {
            recipient: bob.id(),
            id: p.id,
        })
        .collect();
    acks.push(AckRequest {
        recipient: alice.id(),
        id: pending[250].id,
    });
    acks.push(AckRequest {
        recipient: bob.id(),
        id: pending[0].id,
    });
    acks.push(AckRequest {
        recipient: bob.id(),
        id: Uuid::new_v4(),
    });
    let outcome = store
        .write_batch(Arc::new(WriteBatch {
            acks,
            now: 20,
            ..WriteBatch::default()
        }))
        .await
        .expect("batch commits");
    assert!(outcome.acks[..200].iter().all(|deleted| *deleted));
    assert_eq!(&outcome.acks[200..], [false, false, false]);
    assert_eq!(
        store.pending_total().await.expect("count"),
        101,
        "only Bob's acks deleted"
    );

    // An acked message sent again is answered with its first server id, not stored again
    // (the last acked one: Alice's window holds her last 256 of 301).
    let again = NewMessage {
        id: Uuid::new_v4(),
        ..message(alice.id(), bob.id(), Uuid::nil(), "x")
    };
    let acked_client_id = {
        let first = &messages[199];
        NewMessage {
            client_id: first.client_id,
            ..again
        }
    };
    let outcome = store
        .write_batch(Arc::new(WriteBatch {
            messages: vec![acked_client_id],
            now: 30,
            ..WriteBatch::default()
        }))
        .await
        .expect("batch commits");
    assert_eq!(
        outcome.messages[0].as_ref().ok(),
        Some(&StoreOutcome::Duplicate {
            server_id: pending[199].id
        })
    );
    assert_eq!(store.pending_total().await.expect("count"), 101);
    relay.finish().await;
}

/// The mailbox quota inside the store: messages past it are refused as `MailboxFull` in
/// arrival order, a resend of a stored one is still a duplicate, and the usage the quota
/// counts follows stores, acks and retention exactly.
async fn mailbox_quota_counts_messages_and_bytes(db: Db) {
    let relay = TestRelay::start(db).await;
    let (alice, bob) = Device::pair(&relay).await;
    let store = relay.store();
    let quota = MailboxQuota {
        max_messages: 3,
        max_bytes: 1000,
    };
    let first = message(alice.id(), bob.id(), Uuid::new_v4(), "0123456789");
    let mut messages = vec![first.clone()];
    messages
        .extend((0..4).map(|i| message(alice.id(), bob.id(), Uuid::new_v4(), &format!("{i:010}"))));
    let outcome = store
        .write_batch(Arc::new(WriteBatch {
            messages,
            now: 10,
            quota,
            ..WriteBatch::default()
        }))
        .await
        .expect("batch commits");
    let kinds: Vec<&str> = outcome
        .messages
        .iter()
        .map(|r| match r {
            Ok(StoreOutcome::Stored(_)) => "stored",
            Ok(StoreOutcome::Duplicate { .. }) => "duplicate",
            Err(StoreError::MailboxFull) => "full",
            Err(_) => "other",
        })
        .collect();
    assert_eq!(kinds, ["stored", "stored", "stored", "full", "full"]);
    let usage = store.mailbox_usage(bob.id()).await.expect("usage");
    assert_eq!(
        usage,
        MailboxUsage {
            messages: 3,
            bytes: 30
        }
    );

    // Full, but a resend of a stored message still answers with its server id.
    let resend = store
        .write_batch(Arc::new(WriteBatch {
            messages: vec![NewMessage {
                id: Uuid::new_v4(),
                ..first.clone()
            }],
            now: 11,
            quota,
            ..WriteBatch::default()
        }))
        .await
        .expect("batch commits");
    assert!(matches!(
        resend.messages[0],
        Ok(StoreOutcome::Duplicate { .. })
    ));

    // An ack frees a place; bytes count too (a 995-byte message no longer fits).
    let pending = store
        .pending_messages(bob.id(), 0, 10)
        .await
        .expect("pending");
    let outcome = store
        .write_batch(Arc::new(WriteBatch {
            acks: vec![AckRequest {
                recipient: bob.id(),
                id: pending[0].id,
            }],
            messages: vec![message(
                alice.id(),
                bob.id(),
                Uuid::new_v4(),
                &"x".repeat(995),
            )],
            now: 12,
            quota,
            ..WriteBatch::default()
        }))
        .await
        .expect("batch commits");
    assert_eq!(outcome.acks, [true]);
    assert!(matches!(outcome.messages[0], Err(StoreError::MailboxFull)));
    assert_eq!(
        store.mailbox_usage(bob.id()).await.expect("usage"),
        MailboxUsage {
            messages: 2,
            bytes: 20
        }
    );

    // Retention deletes the rest and their count with them.
    let report = store
        .purge(privcomm_server::store::PurgeCutoffs {
            now: 0,
            messages_before: i64::MAX,
            used_prekeys_before: 0,
            sends_before: 0,
        })
        .await
        .expect("purge");
    assert_eq!(report.messages, 2);
    assert_eq!(
        store.mailbox_usage(bob.id()).await.expect("usage"),
        MailboxUsage::default()
    );
    relay.finish().await;
}

crate::on_both_backends!(
    batch_answers_each_write_like_single_writes,
    mailbox_quota_counts_messages_and_bytes
);
