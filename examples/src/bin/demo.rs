//! End-to-end demo: an embedded relay, Alice and Bob, messages both ways, Bob's app
//! restarting while Alice keeps writing, delivery after he is back, safety numbers, and a
//! voice call on loopback with a tone each way.
//!
//! `cargo run -p privcomm-examples --bin demo`

use std::sync::Arc;
use std::time::Duration;

use privcomm_core::call::tone::{loudest_tone, tone_frame};
use privcomm_core::call::FRAME_SAMPLES;
use privcomm_core::{
    CallConfig, CallState, Client, ClientEvent, ClientOptions, MemorySecretStore, MessageState,
    SecretStore,
};
use privcomm_examples::{short, wait_for};
use privcomm_server::codes::{CodeMessage, CodeSendError, CodeSender};
use privcomm_server::{Config, RelayServer, SystemClock};

/// The demo's phones: the relay's code sender for this process. Each code is printed and
/// kept until the phone's owner types it in (`register`).
#[derive(Default)]
struct DemoPhones {
    inbox: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

#[async_trait::async_trait]
impl CodeSender for DemoPhones {
    async fn send(&self, message: &CodeMessage) -> Result<(), CodeSendError> {
        println!(
            "sms      {} receives code {}",
            message.number.as_str(),
            message.code.as_str()
        );
        if let Ok(mut inbox) = self.inbox.lock() {
            inbox.insert(message.number.as_str().to_owned(), message.code.to_string());
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "demo"
    }
}

impl DemoPhones {
    /// Verifies `number` and registers `client` with the code its phone received.
    async fn register(&self, client: &Client, number: &str) -> anyhow::Result<uuid::Uuid> {
        client.request_verification(number).await?;
        let e164 = privcomm_core::client::phone::normalize(number)?;
        let code = self
            .inbox
            .lock()
            .ok()
            .and_then(|mut inbox| inbox.remove(&e164))
            .ok_or_else(|| anyhow::anyhow!("no code arrived for {e164}"))?;
        Ok(client.register(number, &code, None).await?)
    }
}

const STEP: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        // The embedded relay has no TURN server, so its 503 for TURN credentials is expected;
        // webrtc-rs warns about normal trickle-ICE ordering.
        .with_env_filter("warn,tower_http=off,rtc_ice=error,rtc_dtls=error")
        .with_writer(std::io::stderr)
        .init();
    match tokio::time::timeout(Duration::from_secs(120), run()).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("the demo did not finish within two minutes"),
    }
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::with_defaults(dir.path().join("relay"));
    config.bind = "127.0.0.1:0".parse()?;
    // No SMS here: the embedded relay hands each code to the demo's phones, which print it
    // (what `PRIVCOMM_CODE_SENDER=stdout` does for a development relay).
    let phones = Arc::new(DemoPhones::default());
    let relay = RelayServer::start_with_codes(
        config,
        Arc::new(SystemClock),
        Some(phones.clone() as Arc<dyn CodeSender>),
    )
    .await?;
    let url = relay.base_url();
    println!("relay    listening on {url} (SQLite in a temporary directory)");

    let alice_secrets: Arc<dyn SecretStore> = Arc::new(MemorySecretStore::new());
    let bob_secrets: Arc<dyn SecretStore> = Arc::new(MemorySecretStore::new());
    // The demo's calls stay on this machine: host candidates on loopback only.
    let options = ClientOptions {
        call: CallConfig {
            bind_addrs: vec!["127.0.0.1:0".into()],
            ..CallConfig::default()
        },
        ..ClientOptions::default()
    };
    let alice = Client::open_with(
        dir.path().join("alice"),
        &url,
        alice_secrets,
        options.clone(),
    )
    .await?;
    let mut bob = Client::open_with(
        dir.path().join("bob"),
        &url,
        bob_secrets.clone(),
        options.clone(),
    )
    .await?;
    let alice_id = phones.register(&alice, "+1 555 0100 001").await?;
    let bob_id = phones.register(&bob, "+1 555 0100 002").await?;
    println!(
        "alice    registered as {} (the relay verified the number and keeps only a peppered hash)",
        short(alice_id)
    );
    println!("bob      registered as {}", short(bob_id));

    let mut alice_events = alice.events();
    let mut bob_events = bob.events();
    alice.connect().await?;
    bob.connect().await?;
    println!("both     connected");

    let peer = alice.resolve_peer("+15550100002").await?;
    println!("alice    fetched Bob's prekey bundle and started a Signal session (PQXDH)");
    for text in ["Hi Bob!", "Are you there?", "This is end-to-end encrypted."] {
        let id = alice.send_text(peer, text).await?;
        println!("alice →  {text:?} queued as {}", short(id));
    }
    let mut got = 0;
    wait_for(&mut bob_events, STEP, |event| {
        if let ClientEvent::MessageReceived(m) = event {
            println!("bob   ←  {:?} from {}", m.body, short(m.peer));
            got += 1;
        }
        got == 3
    })
    .await?;
    let mut delivered = 0;
    wait_for(&mut alice_events, STEP, |event| {
        if let ClientEvent::MessageStateChanged {
            id,
            state: MessageState::Delivered,
        } = event
        {
            println!(
                "alice    {} delivered (receipt from Bob's device)",
                short(*id)
            );
            delivered += 1;
        }
        delivered == 3
    })
    .await?;

    bob.send_text(alice_id, "Hi Alice, loud and clear.").await?;
    wait_for(&mut alice_events, STEP, |event| match event {
        ClientEvent::MessageReceived(m) => {
            println!("alice ←  {:?}", m.body);
            true
        }
        _ => false,
    })
    .await?;

    println!("bob      app closes");
    bob.close().await;
    for text in ["Message while you were away", "And another one"] {
        let id = alice.send_text(peer, text).await?;
        println!("alice →  {text:?} queued as {}", short(id));
    }
    let mut stored = 0;
    wait_for(&mut alice_events, STEP, |event| {
        if let ClientEvent::MessageStateChanged {
            id,
            state: MessageState::Sent,
        } = event
        {
            println!(
                "alice    {} stored at the relay (Bob is offline)",
                short(*id)
            );
            stored += 1;
        }
        stored == 2
    })
    .await?;

    println!("bob      app restarts (same data dir, key from the secret store)");
    bob = Client::open_with(dir.path().join("bob"), &url, bob_secrets, options).await?;
    let mut bob_events = bob.events();
    bob.connect().await?;
    let mut got = 0;
    wait_for(&mut bob_events, STEP, |event| {
        if let ClientEvent::MessageReceived(m) = event {
            println!("bob   ←  {:?} (delivered after reconnect)", m.body);
            got += 1;
        }
        got == 2
    })
    .await?;
    let mut delivered = 0;
    wait_for(&mut alice_events, STEP, |event| {
        if let ClientEvent::MessageStateChanged {
            state: MessageState::Delivered,
            ..
        } = event
        {
            delivered += 1;
        }
        delivered == 2
    })
    .await?;
    println!("alice    both delivered");

    let ours = alice.safety_number(bob_id).await?;
    let theirs = bob.safety_number(alice_id).await?;
    anyhow::ensure!(ours.digits == theirs.digits, "safety numbers differ");
    let grouped: Vec<&str> = (0..ours.digits.len())
        .step_by(5)
        .map(|i| &ours.digits[i..i + 5])
        .collect();
    println!("both     see safety number {}", grouped.join(" "));
    let history = bob.history(alice_id, None, 50).await?;
    println!(
        "bob      has {} messages with Alice in his encrypted history",
        history.len()
    );

    call(&alice, &bob, peer, &mut alice_events, &mut bob_events).await?;

    alice.close().await;
    bob.close().await;
    relay.shutdown().await?;
    println!("done     everything delivered, nothing lost");
    Ok(())
}

/// Alice calls Bob; each sends a tone and hears the other's; Alice hangs up.
async fn call(
    alice: &Client,
    bob: &Client,
    bob_id: uuid::Uuid,
    alice_events: &mut tokio::sync::broadcast::Receiver<ClientEvent>,
    bob_events: &mut tokio::sync::broadcast::Receiver<ClientEvent>,
) -> anyhow::Result<()> {
    let mut bob_audio = bob.audio_frames();
    let mut alice_audio = alice.audio_frames();
    let call_id = alice.start_call(bob_id).await?;
    println!("alice    calls Bob (offer, answer and candidates travel inside the Signal session)");
    wait_for(bob_events, STEP, |event| {
        matches!(
            event,
            ClientEvent::CallStateChanged {
                state: CallState::IncomingRinging,
                ..
            }
        )
    })
    .await?;
    println!("bob      phone rings; he answers");
    bob.accept_call(call_id)?;
    wait_for(alice_events, STEP, |event| {
        matches!(
            event,
            ClientEvent::CallStateChanged {
                state: CallState::Connected,
                ..
            }
        )
    })
    .await?;
    println!("both     connected (WebRTC, DTLS-SRTP, Opus)");
    let microphones = [(alice.clone(), 440.0), (bob.clone(), 880.0)].map(|(client, hz)| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut offset = 0;
            loop {
                tick.tick().await;
                if client
                    .push_audio_frame(call_id, &tone_frame(hz, offset))
                    .is_err()
                {
                    return;
                }
                offset += FRAME_SAMPLES;
            }
        })
    });
    for (name, audio, expected) in [
        ("bob", &mut bob_audio, 440.0),
        ("alice", &mut alice_audio, 880.0),
    ] {
        let mut heard = Vec::new();
        let mut frames = 0;
        while heard.len() < FRAME_SAMPLES * 25 {
            let frame = tokio::time::timeout(STEP, audio.recv()).await??;
            frames += 1;
            if frames > 10 {
                heard.extend_from_slice(&frame.samples);
            }
        }
        let (hz, _) = loudest_tone(&heard, &[440.0, 880.0]).unwrap_or_default();
        println!("{name:<8} hears a {hz} Hz tone");
        anyhow::ensure!(
            hz == expected,
            "{name} heard {hz} Hz instead of {expected} Hz"
        );
    }
    let stats = alice.call_stats(call_id).await?;
    println!(
        "alice    call stats: {} packets sent, {} received, {} lost, RTT {:.1} ms",
        stats.packets_sent,
        stats.packets_received,
        stats.packets_lost,
        stats.rtt_ms.unwrap_or(0.0)
    );
    alice.hang_up(call_id)?;
    wait_for(bob_events, STEP, |event| {
        matches!(
            event,
            ClientEvent::CallStateChanged {
                state: CallState::Ended(_),
                ..
            }
        )
    })
    .await?;
    for microphone in microphones {
        microphone.await?;
    }
    println!("both     call ended: hung up");
    Ok(())
}
