//! Relay accounts for the raw load generator: registered and logged in over the real REST
//! API with real libsignal keys. One key set serves every account (the relay only checks
//! signatures), so enrolling thousands costs a signature each, not a Kyber key each.

use std::sync::Arc;

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use libsignal_protocol::{
    kem, GenericSignedPreKey, IdentityKeyPair, KeyPair, KyberPreKeyId, KyberPreKeyRecord,
    SignedPreKeyId, SignedPreKeyRecord, Timestamp,
};
use privcomm_protocol::rest::{
    ChallengeRequest, ChallengeResponse, RegisterRequest, RegisterResponse, SignedPreKey,
    TokenRequest, TokenResponse, VerificationRequest, VerificationResponse,
};
use privcomm_protocol::{signing, Base64String, PhoneNumber};
use rand::Rng;

use crate::relay_process::RelayProcess;
use uuid::Uuid;

/// Keys shared by the generated accounts.
pub struct Keys {
    identity: IdentityKeyPair,
    signed_prekey: SignedPreKey,
    kyber_prekey: SignedPreKey,
}

impl Keys {
    /// Fresh identity, signed prekey and Kyber prekey.
    pub fn generate() -> anyhow::Result<Self> {
        let mut rng = rand::rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let signed_pair = KeyPair::generate(&mut rng);
        let signature = identity
            .private_key()
            .calculate_signature(&signed_pair.public_key.serialize(), &mut rng)?;
        let signed = SignedPreKeyRecord::new(
            SignedPreKeyId::from(1u32),
            Timestamp::from_epoch_millis(1_700_000_000_000),
            &signed_pair,
            &signature,
        );
        let kyber = KyberPreKeyRecord::generate(
            kem::KeyType::Kyber1024,
            KyberPreKeyId::from(1u32),
            identity.private_key(),
        )?;
        Ok(Self {
            identity,
            signed_prekey: SignedPreKey {
                key_id: 1,
                public_key: Base64String::encode(signed.public_key()?.serialize()),
                signature: Base64String::encode(signed.signature()?),
            },
            kyber_prekey: SignedPreKey {
                key_id: 1,
                public_key: Base64String::encode(kyber.public_key()?.serialize()),
                signature: Base64String::encode(kyber.signature()?),
            },
        })
    }

    fn sign(&self, message: &[u8]) -> anyhow::Result<Base64String> {
        Ok(Base64String::encode(
            self.identity
                .private_key()
                .calculate_signature(message, &mut rand::rng())?,
        ))
    }
}

/// A registered, logged-in account.
#[derive(Clone, Debug)]
pub struct Account {
    /// The relay's user id.
    pub user_id: Uuid,
    /// A bearer token for it.
    pub token: String,
}

async fn challenge(
    http: &reqwest::Client,
    base: &str,
    phone_hash: &str,
) -> anyhow::Result<Vec<u8>> {
    let resp = http
        .post(format!("{base}/auth/challenge"))
        .json(&ChallengeRequest {
            phone_hash: phone_hash.to_owned(),
        })
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("challenge refused: {}", resp.status());
    }
    let body: ChallengeResponse = resp.json().await?;
    Ok(body.nonce.decode("nonce")?)
}

/// Registers a new account (a random number, verified through the relay's code inbox) and
/// logs it in.
pub async fn enrol(
    http: &reqwest::Client,
    relay: &RelayProcess,
    keys: &Keys,
) -> anyhow::Result<Account> {
    let base = relay.base.as_str();
    let number = format!(
        "+1{:013}",
        rand::rng().random_range(0..10_000_000_000_000u64)
    );
    let phone_hash = PhoneNumber::parse(&number)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .hash()
        .as_str()
        .to_owned();
    let resp = http
        .post(format!("{base}/api/v1/verification"))
        .json(&VerificationRequest {
            number: number.clone(),
            locale: None,
        })
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("verification refused: {}", resp.status());
    }
    let session = resp.json::<VerificationResponse>().await?.session;
    let code = relay.code_for(&number).await?;

    let nonce = challenge(http, base, &phone_hash).await?;
    let register = RegisterRequest {
        phone_hash: phone_hash.clone(),
        registration_id: 1,
        identity_key: Base64String::encode(keys.identity.identity_key().serialize()),
        nonce: Base64String::encode(&nonce),
        signature: keys.sign(&signing::register_message(&nonce, &phone_hash))?,
        signed_prekey: keys.signed_prekey.clone(),
        kyber_prekey: keys.kyber_prekey.clone(),
        one_time_prekeys: Vec::new(),
        verification_code: code,
        verification_session: session,
        registration_lock: None,
    };
    let resp = http
        .post(format!("{base}/api/v1/register"))
        .json(&register)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("registration refused: {}", resp.status());
    }
    let registered: RegisterResponse = resp.json().await?;

    let nonce = challenge(http, base, &phone_hash).await?;
    let login = TokenRequest {
        phone_hash: phone_hash.clone(),
        nonce: Base64String::encode(&nonce),
        signature: keys.sign(&signing::auth_message(&nonce, &phone_hash))?,
    };
    let resp = http
        .post(format!("{base}/auth/token"))
        .json(&login)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("login refused: {}", resp.status());
    }
    let token: TokenResponse = resp.json().await?;
    Ok(Account {
        user_id: registered.user_id,
        token: token.token,
    })
}

/// Enrols `count` accounts, `concurrency` at a time.
pub async fn enrol_many(
    relay: &RelayProcess,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Account>> {
    let keys = Arc::new(Keys::generate()?);
    let http = reqwest::Client::new();
    stream::iter(0..count)
        .map(|_| {
            let keys = keys.clone();
            let http = http.clone();
            async move {
                enrol(&http, relay, &keys)
                    .await
                    .context("enrolling an account")
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}
