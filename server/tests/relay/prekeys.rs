//! Acceptance 3 and prekey upkeep: atomic one-time prekey claims, counts, uploads.

use std::collections::HashSet;

use libsignal_protocol::{GenericSignedPreKey, KeyPair, PreKeyId, PreKeyRecord};
use privcomm_protocol::rest::{PreKeyBundleResponse, PreKeyUploadRequest};
use privcomm_protocol::Base64String;

use crate::common::{Db, Device, TestRelay};

async fn upload_prekeys(
    relay: &TestRelay,
    owner: &Device,
    upload: &PreKeyUploadRequest,
) -> (u16, serde_json::Value) {
    relay
        .put("/api/v1/prekeys", upload, Some(owner.bearer()))
        .await
}

async fn bundle_of(relay: &TestRelay, reader: &Device, owner: &Device) -> serde_json::Value {
    let (status, bundle) = relay
        .get(
            &format!("/keys/{}", owner.phone_hash),
            Some(reader.bearer()),
        )
        .await;
    assert_eq!(status, 200, "{bundle}");
    bundle
}

async fn concurrent_fetches_never_share_a_one_time_prekey(db: Db) {
    let relay = TestRelay::start(db).await;
    let bob = Device::enrol(&relay, 20).await;
    let mut callers = Vec::new();
    for _ in 0..30 {
        callers.push(Device::enrol(&relay, 0).await);
    }
    let path = format!("/keys/{}", bob.phone_hash);
    let fetches = callers.iter().map(|caller| {
        let http = relay.http.clone();
        let url = relay.url(&path);
        let token = caller.bearer().to_owned();
        tokio::spawn(async move {
            let resp = http.get(url).bearer_auth(token).send().await.expect("sent");
            assert_eq!(resp.status().as_u16(), 200);
            resp.json::<PreKeyBundleResponse>().await.expect("bundle")
        })
    });
    let bundles: Vec<PreKeyBundleResponse> = futures_util::future::join_all(fetches)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let claimed: Vec<u32> = bundles
        .iter()
        .filter_map(|b| b.one_time_prekey.as_ref().map(|k| k.key_id))
        .collect();
    let distinct: HashSet<u32> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 20, "20 bundles carry a one-time prekey");
    assert_eq!(distinct.len(), 20, "no key is handed out twice");
    assert_eq!(
        bundles
            .iter()
            .filter(|b| b.one_time_prekey.is_none())
            .count(),
        10
    );
    assert!(bundles
        .iter()
        .all(|b| b.user_id == bob.id() && b.registration_id == bob.registration_id));
    let (_, count) = relay.get("/api/v1/prekeys/count", Some(bob.bearer())).await;
    assert_eq!(count["one_time_prekeys"], 0);
    relay.finish().await;
}

async fn upload_tops_up_and_rotates_prekeys(db: Db) {
    let relay = TestRelay::start(db).await;
    let alice = Device::enrol(&relay, 0).await;
    let mut bob = Device::enrol(&relay, 3).await;
    let (status, count) = relay.get("/api/v1/prekeys/count", Some(bob.bearer())).await;
    assert_eq!((status, count["one_time_prekeys"].as_u64()), (200, Some(3)));

    // Ten more one-time prekeys (ids 4..=13), plus a retried id that is ignored.
    let mut rng = rand::rng();
    bob.one_time_prekeys = (3..=13)
        .map(|id| PreKeyRecord::new(PreKeyId::from(id), &KeyPair::generate(&mut rng)))
        .collect();
    let upload = PreKeyUploadRequest {
        one_time_prekeys: bob.one_time_prekey_bodies(),
        ..Default::default()
    };
    let (status, body) = upload_prekeys(&relay, &bob, &upload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["one_time_prekeys"], 13);

    // Rotate the signed prekey: a new id is served in bundles from now on.
    let pair = KeyPair::generate(&mut rng);
    let signature = bob.sign(&pair.public_key.serialize());
    let mut new_signed = bob.signed_prekey_body();
    new_signed.key_id = 2;
    new_signed.public_key = Base64String::encode(pair.public_key.serialize());
    new_signed.signature = Base64String::encode(&signature);
    let upload = PreKeyUploadRequest {
        signed_prekey: Some(new_signed.clone()),
        ..Default::default()
    };
    let (status, body) = upload_prekeys(&relay, &bob, &upload).await;
    assert_eq!(status, 200, "{body}");
    let bundle = bundle_of(&relay, &alice, &bob).await;
    assert_eq!(bundle["signed_prekey"]["key_id"], 2);
    assert_eq!(
        bundle["signed_prekey"]["public_key"],
        new_signed.public_key.as_str()
    );

    // A rotation signed by someone else is refused and changes nothing.
    let mut forged = new_signed.clone();
    forged.key_id = 3;
    forged.signature = Base64String::encode(alice.sign(&pair.public_key.serialize()));
    let upload = PreKeyUploadRequest {
        signed_prekey: Some(forged),
        ..Default::default()
    };
    let (status, body) = upload_prekeys(&relay, &bob, &upload).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_signature"))
    );
    let bundle = bundle_of(&relay, &alice, &bob).await;
    assert_eq!(bundle["signed_prekey"]["key_id"], 2);

    // Kyber rotation with a real Kyber1024 key.
    let kyber = libsignal_protocol::KyberPreKeyRecord::generate(
        libsignal_protocol::kem::KeyType::Kyber1024,
        7u32.into(),
        bob.identity.private_key(),
    )
    .expect("kyber");
    bob.kyber_prekey = kyber;
    let upload = PreKeyUploadRequest {
        kyber_prekey: Some(bob.kyber_prekey_body()),
        ..Default::default()
    };
    let (status, body) = upload_prekeys(&relay, &bob, &upload).await;
    assert_eq!(status, 200, "{body}");
    let bundle = bundle_of(&relay, &alice, &bob).await;
    assert_eq!(bundle["kyber_prekey"]["key_id"], 7);
    assert_eq!(bob.kyber_prekey.id().map(u32::from).ok(), Some(7));

    // Duplicate ids within one upload are refused as a whole.
    let mut dup = bob.one_time_prekey_bodies();
    dup.truncate(2);
    dup[1].key_id = dup[0].key_id;
    let upload = PreKeyUploadRequest {
        one_time_prekeys: dup,
        ..Default::default()
    };
    let (status, body) = upload_prekeys(&relay, &bob, &upload).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("duplicate_key_id"))
    );

    // Unknown users are a 404, not an empty bundle.
    let (status, body) = relay
        .get(
            &format!("/keys/{}", crate::common::random_phone_hash()),
            Some(alice.bearer()),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    relay.finish().await;
}

crate::on_both_backends!(
    concurrent_fetches_never_share_a_one_time_prekey,
    upload_tops_up_and_rotates_prekeys,
);
