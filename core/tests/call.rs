//! Voice calls end to end: two real clients, a real relay, real WebRTC on loopback, and
//! coturn for the relay-only path.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{free_port, relay_binary, relay_config, ChildRelay};
use privcomm_core::call::tone::{loudest_tone, tone_frame};
use privcomm_core::call::{ManualClock, FRAME_SAMPLES};
use privcomm_core::{
    AudioFrame, CallConfig, CallDirection, CallState, Client, ClientEvent, ClientOptions,
    CoreError, EndReason, MemorySecretStore,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// Call settings for loopback: host candidates on 127.0.0.1 only, and a quick verdict when
/// the peer goes silent.
fn loopback() -> CallConfig {
    CallConfig {
        bind_addrs: vec!["127.0.0.1:0".into()],
        ice_disconnected_timeout: Duration::from_secs(1),
        ice_failed_timeout: Duration::from_secs(2),
        ..CallConfig::default()
    }
}

/// A relay on its own runtime thread, so the test runtime's task count is the clients' alone.
struct Relay {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn start(turn: Option<(String, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = relay_config(dir.path());
        if let Some((secret, url)) = turn {
            config.turn_secret = Some(secret);
            config.turn_urls = vec![url];
        }
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let codes = Arc::new(
                    privcomm_server::codes::inbox::CodeInbox::start()
                        .await
                        .unwrap(),
                );
                codes.configure(&mut config);
                let server = privcomm_server::RelayServer::start(
                    config,
                    Arc::new(privcomm_server::SystemClock),
                )
                .await
                .unwrap();
                common::remember_codes(&server.base_url(), codes);
                url_tx.send(server.base_url()).unwrap();
                let _ = stopped.await;
                let _ = server.shutdown().await;
            });
        });
        let url = url_rx.recv().unwrap();
        Self {
            url,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A registered, connected client.
async fn client(dir: &Path, name: &str, url: &str, number: &str, call: CallConfig) -> Client {
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
    .unwrap();
    common::register(&client, url, number).await;
    client.connect().await.unwrap();
    client
}

/// Two connected clients that know each other.
struct Pair {
    alice: Client,
    bob: Client,
    /// Alice's id as Bob knows it.
    alice_id: Uuid,
    /// Bob's id as Alice knows it.
    bob_id: Uuid,
    _dir: tempfile::TempDir,
}

async fn pair(url: &str, alice_call: CallConfig, bob_call: CallConfig) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let alice = client(dir.path(), "alice", url, "+4930100001", alice_call).await;
    let bob = client(dir.path(), "bob", url, "+4930100002", bob_call).await;
    let bob_id = alice.resolve_peer("+4930100002").await.unwrap();
    let alice_id = bob.resolve_peer("+4930100001").await.unwrap();
    Pair {
        alice,
        bob,
        alice_id,
        bob_id,
        _dir: dir,
    }
}

/// Waits for `call_id` to reach `want`; fails if the call ends otherwise.
async fn reach(events: &mut Receiver<ClientEvent>, call_id: Uuid, want: CallState) {
    let reached = state_after(events, call_id, want).await;
    assert_eq!(reached, want, "call {call_id}");
}

/// Both sides see `call_id` reach `want`.
async fn both_reach(
    a: &mut Receiver<ClientEvent>,
    b: &mut Receiver<ClientEvent>,
    call_id: Uuid,
    want: CallState,
) {
    reach(a, call_id, want).await;
    reach(b, call_id, want).await;
}

/// Waits for `call_id` to reach `want`, or to end otherwise; returns the state reached.
async fn state_after(
    events: &mut Receiver<ClientEvent>,
    call_id: Uuid,
    want: CallState,
) -> CallState {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ClientEvent::CallStateChanged {
                call_id: id, state, ..
            })) if id == call_id => {
                if state == want || matches!(state, CallState::Ended(_)) {
                    return state;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(n))) => panic!("event receiver lagged by {n}"),
            Ok(Err(RecvError::Closed)) => panic!("event stream closed"),
            Err(_) => panic!("timed out waiting for call {call_id} to reach {want:?}"),
        }
    }
}

/// Waits for an incoming call; returns its id and caller.
async fn incoming(events: &mut Receiver<ClientEvent>) -> (Uuid, Uuid) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ClientEvent::CallStateChanged {
                call_id,
                peer,
                direction: CallDirection::Incoming,
                state: CallState::IncomingRinging,
            })) => return (call_id, peer),
            Ok(Ok(_)) => {}
            other => panic!("no incoming call: {other:?}"),
        }
    }
}

/// The probe frequency that dominates `samples`, and by what factor.
fn dominant(samples: &[i16]) -> (f64, f64) {
    loudest_tone(samples, &[300.0, 440.0, 660.0, 880.0, 1200.0]).unwrap()
}

/// Pushes a tone into the call every 20 ms until the call is gone.
fn pump(client: Client, call_id: Uuid, frequency: f64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut offset = 0;
        loop {
            tick.tick().await;
            match client.push_audio_frame(call_id, &tone_frame(frequency, offset)) {
                Ok(()) => offset += FRAME_SAMPLES,
                Err(CoreError::NoSuchCall { .. }) => return,
                Err(e) => panic!("pushing audio: {e}"),
            }
        }
    })
}

/// Half a second of the peer's decoded audio, after letting the codec settle.
async fn listen(frames: &mut Receiver<AudioFrame>, call_id: Uuid) -> Vec<i16> {
    let mut samples = Vec::new();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while samples.len() < FRAME_SAMPLES * 25 {
        match tokio::time::timeout_at(deadline, frames.recv()).await {
            Ok(Ok(frame)) if frame.call_id == call_id => {
                assert_eq!(
                    frame.samples.len(),
                    FRAME_SAMPLES,
                    "decoded frames are 20 ms"
                );
                seen += 1;
                if seen > 10 {
                    samples.extend_from_slice(&frame.samples);
                }
            }
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("audio stream closed"),
            Err(_) => panic!("timed out waiting for audio ({seen} frames so far)"),
        }
    }
    samples
}

/// UDP sockets this process holds (host candidates, TURN allocations).
fn udp_sockets() -> usize {
    let ours: HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| line.split_whitespace().nth(9).map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .filter(|inode| ours.contains(inode))
        .count()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Alice calls, Bob answers, both tones cross, both see connected then ended.
async fn talk(pair: &Pair) -> Uuid {
    let mut alice_events = pair.alice.events();
    let mut bob_events = pair.bob.events();
    let mut alice_audio = pair.alice.audio_frames();
    let mut bob_audio = pair.bob.audio_frames();

    let call_id = pair.alice.start_call(pair.bob_id).await.unwrap();
    let (incoming_id, caller) = incoming(&mut bob_events).await;
    assert_eq!((incoming_id, caller), (call_id, pair.alice_id));
    pair.bob.accept_call(call_id).unwrap();
    both_reach(
        &mut alice_events,
        &mut bob_events,
        call_id,
        CallState::Connected,
    )
    .await;

    let alice_pump = pump(pair.alice.clone(), call_id, 440.0);
    let bob_pump = pump(pair.bob.clone(), call_id, 880.0);
    let (heard_by_bob, ratio) = dominant(&listen(&mut bob_audio, call_id).await);
    assert_eq!(
        heard_by_bob, 440.0,
        "Bob hears Alice's 440 Hz (ratio {ratio:.1})"
    );
    assert!(ratio > 10.0, "440 Hz dominates Bob's audio by {ratio:.1}×");
    let (heard_by_alice, ratio) = dominant(&listen(&mut alice_audio, call_id).await);
    assert_eq!(
        heard_by_alice, 880.0,
        "Alice hears Bob's 880 Hz (ratio {ratio:.1})"
    );
    assert!(
        ratio > 10.0,
        "880 Hz dominates Alice's audio by {ratio:.1}×"
    );

    let stats = pair.alice.call_stats(call_id).await.unwrap();
    assert!(
        stats.packets_sent > 0 && stats.packets_received > 0,
        "{stats:?}"
    );
    // On loopback the interarrival jitter is well under a frame (it once came out in RTP
    // timestamp units taken as seconds: ~48,000 times too large).
    assert!(
        (0.0..10.0).contains(&stats.jitter_ms),
        "jitter on loopback: {stats:?}"
    );

    pair.alice.hang_up(call_id).unwrap();
    let hung_up = CallState::Ended(EndReason::HungUp);
    both_reach(&mut alice_events, &mut bob_events, call_id, hung_up).await;
    alice_pump.await.unwrap();
    bob_pump.await.unwrap();
    call_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_carries_a_tone_each_way_and_hangs_up_leaving_no_task_or_socket() {
    let relay = Relay::start(None);
    let pair = pair(&relay.url, loopback(), loopback()).await;
    let sockets_before = udp_sockets();
    let tasks_before = alive_tasks();

    let call_id = talk(&pair).await;
    assert_eq!(pair.alice.current_call(), None);
    assert_eq!(pair.bob.current_call(), None);
    assert!(matches!(
        pair.alice.hang_up(call_id),
        Err(CoreError::NoSuchCall { .. })
    ));

    // Everything of the call is released: sockets at once, tasks as they wind down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (sockets, tasks) = (udp_sockets(), alive_tasks());
        // At most as many: setup's own tasks, and other tests' sockets (the count is the
        // process's), may end meanwhile.
        if sockets <= sockets_before && tasks <= tasks_before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: {sockets} UDP sockets (before {sockets_before}), \
             {tasks} tasks (before {tasks_before})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // And the next call works the same.
    talk(&pair).await;
    pair.alice.close().await;
    pair.bob.close().await;
}

/// coturn on loopback with the TURN REST API secret, as the README describes.
struct Coturn {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Coturn {
    /// Starts coturn on a free port. The port is free for UDP when picked; coturn also
    /// listens on it over TCP, where another test's server may hold it, and then it never
    /// answers: a few tries, each on a new port.
    fn start(secret: &str) -> Self {
        for _ in 0..3 {
            let coturn = Self::start_once(secret);
            if coturn.wait_ready() {
                return coturn;
            }
        }
        panic!("coturn did not answer STUN");
    }

    fn start_once(secret: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let child = std::process::Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--min-port=49160",
                "--max-port=49400",
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=privcomm.test",
                "--allow-loopback-peers",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--no-tcp-relay",
                "--no-software-attribute",
                "--simple-log",
                &format!("--log-file={}", dir.path().join("turn.log").display()),
                &format!("--pidfile={}", dir.path().join("turn.pid").display()),
                &format!("--db={}", dir.path().join("turndb").display()),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("turnserver (coturn) runs; scripts/setup.sh installs it");
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// Sends STUN binding requests until coturn answers one (true), for about 10 s.
    fn wait_ready(&self) -> bool {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        request.extend_from_slice(&[7u8; 12]);
        let mut buf = [0u8; 512];
        for _ in 0..100 {
            let _ = socket.send_to(&request, ("127.0.0.1", self.port));
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                if n >= 20 && buf[0] == 0x01 && buf[1] == 0x01 {
                    return true;
                }
            }
        }
        false
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_call_goes_through_coturn_and_carries_audio_both_ways() {
    let secret = "call-test-turn-secret-of-32-bytes-or-more";
    let coturn = Coturn::start(secret);
    let relay = Relay::start(Some((
        secret.to_owned(),
        format!("turn:127.0.0.1:{}?transport=udp", coturn.port),
    )));
    let relay_only = CallConfig {
        relay_only: true,
        ..loopback()
    };
    let pair = pair(&relay.url, relay_only.clone(), relay_only).await;
    talk(&pair).await;
    pair.alice.close().await;
    pair.bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_without_turn_is_a_typed_error() {
    let relay = Relay::start(None);
    let relay_only = CallConfig {
        relay_only: true,
        ..loopback()
    };
    let pair = pair(&relay.url, relay_only, loopback()).await;
    assert!(matches!(
        pair.alice.start_call(pair.bob_id).await,
        Err(CoreError::TurnUnavailable)
    ));
    assert_eq!(pair.alice.current_call(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_api_rejects_bad_input_with_typed_errors() {
    let relay = Relay::start(None);
    let pair = pair(&relay.url, loopback(), loopback()).await;
    let stranger = Uuid::new_v4();
    assert!(matches!(
        pair.alice.start_call(stranger).await,
        Err(CoreError::UnknownPeer { peer }) if peer == stranger
    ));
    let nothing = Uuid::new_v4();
    assert!(matches!(
        pair.alice.accept_call(nothing),
        Err(CoreError::NoSuchCall { .. })
    ));
    assert!(matches!(
        pair.alice.push_audio_frame(nothing, &[0; FRAME_SAMPLES]),
        Err(CoreError::NoSuchCall { .. })
    ));

    let call_id = pair.alice.start_call(pair.bob_id).await.unwrap();
    assert!(matches!(
        pair.alice.start_call(pair.bob_id).await,
        Err(CoreError::CallInProgress)
    ));
    assert!(matches!(
        pair.alice.push_audio_frame(call_id, &[0; 100]),
        Err(CoreError::InvalidArgument(_))
    ));
    pair.alice.hang_up(call_id).unwrap();

    pair.alice.disconnect().await;
    assert!(matches!(
        pair.alice.start_call(pair.bob_id).await,
        Err(CoreError::NotConnected)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_call_ends_declined_on_both_sides() {
    let relay = Relay::start(None);
    let pair = pair(&relay.url, loopback(), loopback()).await;
    let mut alice_events = pair.alice.events();
    let mut bob_events = pair.bob.events();
    let call_id = pair.alice.start_call(pair.bob_id).await.unwrap();
    let (ringing, _) = incoming(&mut bob_events).await;
    pair.bob.decline_call(ringing).unwrap();
    let declined = CallState::Ended(EndReason::Declined);
    both_reach(&mut bob_events, &mut alice_events, call_id, declined).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_caller_hears_busy_and_the_callee_sees_it_as_busy() {
    let relay = Relay::start(None);
    let pair = pair(&relay.url, loopback(), loopback()).await;
    let carol = client(
        pair._dir.path(),
        "carol",
        &relay.url,
        "+4930100003",
        loopback(),
    )
    .await;
    let bob_for_carol = carol.resolve_peer("+4930100002").await.unwrap();
    let mut alice_events = pair.alice.events();
    let mut bob_events = pair.bob.events();
    let mut carol_events = carol.events();

    let call_id = pair.alice.start_call(pair.bob_id).await.unwrap();
    let (ringing, _) = incoming(&mut bob_events).await;
    pair.bob.accept_call(ringing).unwrap();
    reach(&mut alice_events, call_id, CallState::Connected).await;

    let carols_call = carol.start_call(bob_for_carol).await.unwrap();
    let busy = CallState::Ended(EndReason::Busy);
    both_reach(&mut carol_events, &mut bob_events, carols_call, busy).await;
    // The call in progress is untouched.
    assert_eq!(
        pair.bob.current_call().map(|c| (c.call_id, c.state)),
        Some((call_id, CallState::Connected))
    );
    pair.bob.hang_up(call_id).unwrap();
    let hung_up = CallState::Ended(EndReason::HungUp);
    reach(&mut alice_events, call_id, hung_up).await;
    carol.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_call_ends_no_answer_on_both_sides_when_the_ring_clock_runs_out() {
    let relay = Relay::start(None);
    let clock = Arc::new(ManualClock::new());
    let config = CallConfig {
        clock: clock.clone(),
        ..loopback()
    };
    let pair = pair(&relay.url, config.clone(), config).await;
    let mut alice_events = pair.alice.events();
    let mut bob_events = pair.bob.events();
    let call_id = pair.alice.start_call(pair.bob_id).await.unwrap();
    incoming(&mut bob_events).await;

    // Real time passes, ring time does not: still ringing.
    clock.advance(Duration::from_secs(59));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pair.alice.current_call().map(|c| c.state),
        Some(CallState::OutgoingRinging)
    );
    assert_eq!(
        pair.bob.current_call().map(|c| c.state),
        Some(CallState::IncomingRinging)
    );

    clock.advance(Duration::from_secs(1));
    let no_answer = CallState::Ended(EndReason::NoAnswer);
    both_reach(&mut alice_events, &mut bob_events, call_id, no_answer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glare_keeps_the_larger_call_connected_and_ends_the_other_as_glare_on_both_sides() {
    let relay = Relay::start(None);
    let pair = pair(&relay.url, loopback(), loopback()).await;
    let mut alice_events = pair.alice.events();
    let mut bob_events = pair.bob.events();
    let (alices, bobs) = tokio::join!(
        pair.alice.start_call(pair.bob_id),
        pair.bob.start_call(pair.alice_id)
    );
    let (alices, bobs) = (alices.unwrap(), bobs.unwrap());
    let (winner, loser) = if alices > bobs {
        (alices, bobs)
    } else {
        (bobs, alices)
    };
    let glare = CallState::Ended(EndReason::Glare);
    both_reach(&mut alice_events, &mut bob_events, loser, glare).await;
    both_reach(
        &mut alice_events,
        &mut bob_events,
        winner,
        CallState::Connected,
    )
    .await;
    pair.alice.hang_up(winner).unwrap();
    let hung_up = CallState::Ended(EndReason::HungUp);
    reach(&mut bob_events, winner, hung_up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_killed_mid_call_ends_the_call_as_connection_lost() {
    let relay = Relay::start(None);
    let dir = tempfile::tempdir().unwrap();
    let alice = client(dir.path(), "alice", &relay.url, "+4930100001", loopback()).await;
    // Bob lives on his own runtime; shutting it down drops every task and socket of his at
    // once, with no goodbye: what the peer sees when the app is killed.
    let bob_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bob_dir = dir.path().to_owned();
    let url = relay.url.clone();
    let bob = bob_runtime
        .spawn(async move {
            let bob = client(&bob_dir, "bob", &url, "+4930100002", loopback()).await;
            bob.resolve_peer("+4930100001").await.unwrap();
            bob
        })
        .await
        .unwrap();
    let bob_id = alice.resolve_peer("+4930100002").await.unwrap();
    let mut alice_events = alice.events();
    let mut bob_events = bob.events();

    let call_id = alice.start_call(bob_id).await.unwrap();
    incoming(&mut bob_events).await;
    bob.accept_call(call_id).unwrap();
    both_reach(
        &mut alice_events,
        &mut bob_events,
        call_id,
        CallState::Connected,
    )
    .await;
    let alice_pump = pump(alice.clone(), call_id, 440.0);

    bob_runtime.shutdown_background();
    let lost = CallState::Ended(EndReason::ConnectionLost);
    reach(&mut alice_events, call_id, lost).await;
    alice_pump.await.unwrap();
    assert_eq!(alice.current_call(), None);
    drop(bob);
    alice.close().await;
}

/// Forbidden in anything the relay stores or logs: SDP, candidates, fingerprints. Each is
/// long enough not to turn up by chance in megabytes of ciphertext (a bare `v=0` did, about
/// once in every few runs, in the relay's WAL): SDP's first line is `v=0` and a CRLF,
/// as raw bytes or escaped in a JSON log line.
const SDP_MARKERS: &[&str] = &[
    "v=0\r\n",
    "v=0\\r\\n",
    "a=fingerprint",
    "sha-256",
    "a=ice-ufrag",
    "a=ice-pwd",
    "candidate:",
    "typ host",
    "opus/48000",
    "a=setup",
];

fn assert_no_sdp(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes).to_lowercase();
    for marker in SDP_MARKERS {
        assert!(
            !text.contains(marker),
            "{what} contains call signalling text {marker:?}"
        );
    }
}

/// Every file of the relay's data dir (database, WAL, journal).
fn assert_data_dir_has_no_sdp(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_no_sdp(&path.display().to_string(), &std::fs::read(&path).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_stores_and_logs_no_sdp_candidate_or_fingerprint() {
    let binary = tokio::task::spawn_blocking(relay_binary).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("relay.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let relay_dir = data.path().join("relay");
    std::fs::create_dir_all(&relay_dir).unwrap();
    let codes = common::child_codes(port).await;
    let _relay = ChildRelay::start_with(
        &binary,
        &relay_dir,
        port,
        "debug",
        &codes.env(),
        std::process::Stdio::from(log),
    );
    ChildRelay::wait_ready(port).await;
    let url = format!("http://127.0.0.1:{port}");
    let pair = pair(&url, loopback(), loopback()).await;
    let mut alice_events = pair.alice.events();

    // Bob is away: the offer and Alice's candidates wait at the relay, in its database.
    pair.bob.disconnect().await;
    let mut bob_events = pair.bob.events();
    let call_id = pair.alice.start_call(pair.bob_id).await.unwrap();
    let db = relay_dir.join("privcomm.db");
    let deadline = tokio::time::Instant::now() + WAIT;
    // The offer and the first candidates: several signals waiting, none left at Alice.
    while pending_rows(&db) < 2 || pair.alice.outbox_len().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the offer never reached the relay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_data_dir_has_no_sdp(&relay_dir);

    pair.bob.connect().await.unwrap();
    let (ringing, _) = incoming(&mut bob_events).await;
    assert_eq!(ringing, call_id);
    pair.bob.accept_call(call_id).unwrap();
    reach(&mut alice_events, call_id, CallState::Connected).await;
    pair.alice.hang_up(call_id).unwrap();
    let hung_up = CallState::Ended(EndReason::HungUp);
    reach(&mut bob_events, call_id, hung_up).await;

    assert_data_dir_has_no_sdp(&relay_dir);
    let logged = std::fs::read(&log_path).unwrap();
    assert!(!logged.is_empty(), "the relay logged at debug level");
    assert_no_sdp("the relay's log", &logged);
    pair.alice.close().await;
    pair.bob.close().await;
}

/// Rows waiting for delivery in the relay's SQLite database.
fn pending_rows(db: &Path) -> i64 {
    let connection =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    connection
        .query_row("SELECT count(*) FROM pending_messages", [], |row| {
            row.get(0)
        })
        .unwrap()
}
