//! Call setup time on loopback: from `start_call` (which sends the offer) to both sides
//! connected, and to the first frame of the caller's voice decoded at the callee. The callee
//! answers as soon as it rings. Run: `cargo bench -p privcomm-core --bench call_setup`
//! (`-- --calls N` to change the default of 20, `-- --check-interval-ms N` to try another ICE
//! check interval than the core's default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use privcomm_core::call::FRAME_SAMPLES;
use privcomm_core::{
    CallConfig, CallDirection, CallState, Client, ClientEvent, ClientOptions, EndReason,
    MemorySecretStore,
};
use tokio::sync::broadcast::Receiver;
use uuid::Uuid;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<32} median {:>7.1} ms   p95 {:>7.1} ms   min {:>7.1} ms   max {:>7.1} ms   (n={})",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.95).as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len()
    );
}

fn arg(name: &str) -> Option<u64> {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|n| n.parse().ok())
}

/// Where the relay's verification codes arrive.
static CODES: std::sync::OnceLock<Arc<privcomm_server::codes::inbox::CodeInbox>> =
    std::sync::OnceLock::new();

async fn client(dir: &std::path::Path, name: &str, url: &str, number: &str) -> Client {
    let mut call = CallConfig {
        bind_addrs: vec!["127.0.0.1:0".into()],
        ..CallConfig::default()
    };
    if let Some(ms) = arg("--check-interval-ms") {
        call.ice_check_interval = Duration::from_millis(ms);
    }
    let client = Client::open_with(
        dir.join(name),
        url,
        Arc::new(MemorySecretStore::new()),
        ClientOptions {
            call,
            ..ClientOptions::default()
        },
    )
    .await
    .expect("open");
    client
        .request_verification(number)
        .await
        .expect("code requested");
    let inbox = CODES.get().expect("code inbox");
    let code = inbox
        .take(number, Duration::from_secs(20))
        .await
        .expect("code");
    client
        .register(number, &code, None)
        .await
        .expect("register");
    client.connect().await.expect("connect");
    client
}

async fn until_state(events: &mut Receiver<ClientEvent>, call_id: Uuid, want: CallState) {
    loop {
        match events.recv().await {
            Ok(ClientEvent::CallStateChanged {
                call_id: id, state, ..
            }) if id == call_id => {
                if state == want {
                    return;
                }
                assert!(
                    !matches!(state, CallState::Ended(_)),
                    "call ended: {state:?}"
                );
            }
            Ok(_) => {}
            Err(e) => panic!("events: {e}"),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls = arg("--calls").map_or(20, |n| n as usize);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = privcomm_server::Config::with_defaults(dir.path());
    config.bind = "127.0.0.1:0".parse().expect("addr");
    config.register_per_hour = 1000;
    config.token_per_minute = 1000;
    config.challenge_per_minute = 1000;
    let codes = Arc::new(
        privcomm_server::codes::inbox::CodeInbox::start()
            .await
            .expect("code inbox"),
    );
    codes.configure(&mut config);
    let relay = privcomm_server::RelayServer::start(config, Arc::new(privcomm_server::SystemClock))
        .await
        .expect("relay");
    let url = relay.base_url();
    CODES.set(codes).ok();
    let alice = client(dir.path(), "alice", &url, "+4930200001").await;
    let bob = client(dir.path(), "bob", &url, "+4930200002").await;
    let bob_id = alice.resolve_peer("+4930200002").await.expect("resolve");
    bob.resolve_peer("+4930200001").await.expect("resolve");

    // Bob answers every call the moment it rings.
    let answering = bob.clone();
    let mut bob_events = bob.events();
    tokio::spawn(async move {
        while let Ok(event) = bob_events.recv().await {
            if let ClientEvent::CallStateChanged {
                call_id,
                direction: CallDirection::Incoming,
                state: CallState::IncomingRinging,
                ..
            } = event
            {
                let _ = answering.accept_call(call_id);
            }
        }
    });

    let mut to_connected = Vec::new();
    let mut to_audio = Vec::new();
    for _ in 0..calls {
        let mut alice_events = alice.events();
        let mut bob_audio = bob.audio_frames();
        let started = Instant::now();
        let call_id = alice.start_call(bob_id).await.expect("start");
        until_state(&mut alice_events, call_id, CallState::Connected).await;
        to_connected.push(started.elapsed());
        // The microphone runs from the moment the call connects, as in an app.
        let pumping = alice.clone();
        let pump = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let frame = vec![1000i16; FRAME_SAMPLES];
            loop {
                tick.tick().await;
                if pumping.push_audio_frame(call_id, &frame).is_err() {
                    return;
                }
            }
        });
        loop {
            let frame = bob_audio.recv().await.expect("audio");
            if frame.call_id == call_id {
                break;
            }
        }
        to_audio.push(started.elapsed());
        alice.hang_up(call_id).expect("hang up");
        until_state(
            &mut alice_events,
            call_id,
            CallState::Ended(EndReason::HungUp),
        )
        .await;
        let _ = pump.await;
        while bob.current_call().is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    summary("offer sent → connected", to_connected);
    summary("offer sent → first audio decoded", to_audio);
    alice.close().await;
    bob.close().await;
    let _ = relay.shutdown().await;
}
