//! Test harness: a real relay on an ephemeral port (SQLite file or a fresh PostgreSQL schema),
//! real libsignal identities, real HTTP and WebSocket clients.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use libsignal_protocol::{
    kem, DeviceId, GenericSignedPreKey, IdentityKeyPair, KeyPair, KyberPreKeyId, KyberPreKeyRecord,
    PreKeyId, PreKeyRecord, SignedPreKeyId, SignedPreKeyRecord, Timestamp,
};
use privcomm_protocol::rest::{
    ChallengeResponse, OneTimePreKey, RegisterRequest, RegisterResponse, SignedPreKey,
    TokenRequest, TokenResponse,
};
use privcomm_protocol::ws::{ClientFrame, ServerFrame};
use privcomm_protocol::{signing, Base64String};
use privcomm_server::codes::inbox::CodeInbox;
use privcomm_server::store::Store;
use privcomm_server::{Config, ManualClock, RelayServer};
use rand::{Rng, RngCore};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// PostgreSQL used by the tests: `PRIVCOMM_TEST_POSTGRES_URL`, else the machine's local server
/// (trust auth, database `test`).
pub fn pg_base() -> String {
    std::env::var("PRIVCOMM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Storage for one test: a temp dir, and for PostgreSQL a schema of its own.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub url: Option<String>,
    schema: Option<String>,
}

impl TestDb {
    pub async fn new(db: Db) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match db {
            Db::Sqlite => Self {
                dir,
                url: None,
                schema: None,
            },
            Db::Postgres => {
                let schema = format!("t_{}", Uuid::new_v4().simple());
                pg_exec(&format!("CREATE SCHEMA {schema}")).await;
                let url = format!("{}?options=-c%20search_path%3D{schema}", pg_base());
                Self {
                    dir,
                    url: Some(url),
                    schema: Some(schema),
                }
            }
        }
    }

    /// Drops the PostgreSQL schema.
    pub async fn cleanup(&self) {
        if let Some(schema) = &self.schema {
            pg_exec(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
        }
    }
}

async fn pg_exec(sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg_base())
        .await
        .expect("connect to local PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .expect("pg statement");
    let _ = conn.close().await;
}

/// HTTP and WebSocket access to a relay, wherever it runs.
pub struct Endpoint {
    pub http: reqwest::Client,
    pub base: String,
    /// Where the relay's verification codes arrive (its webhook points here).
    pub codes: Option<Arc<CodeInbox>>,
}

/// A relay running in this process.
pub struct TestRelay {
    pub server: Option<RelayServer>,
    pub clock: ManualClock,
    pub db: TestDb,
    pub endpoint: Endpoint,
}

impl std::ops::Deref for TestRelay {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// Test defaults: ephemeral port, generous rate limits (tests register many users from one IP).
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::with_defaults(db.dir.path());
    config.bind = "127.0.0.1:0".parse().expect("addr");
    config.database_url = db.url.clone();
    config.register_per_hour = 10_000;
    config.verification_per_hour = 10_000;
    // Tests register numbers again within seconds; the per-number limits have a test.
    config.verification_per_number_per_minute = 1_000;
    config.verification_per_number_per_day = 1_000;
    config.token_per_minute = 10_000;
    config.challenge_per_minute = 10_000;
    config.send_per_minute = 1_000_000;
    config.send_kib_per_minute = 100_000_000;
    config.min_free_disk_mb = 16;
    config
}

impl TestRelay {
    pub async fn start(db: Db) -> Self {
        Self::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: Db, adjust: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new(db).await;
        let codes = Arc::new(CodeInbox::start().await.expect("code inbox"));
        let mut config = test_config(&db);
        codes.configure(&mut config);
        adjust(&mut config);
        let clock = ManualClock::new();
        let server = RelayServer::start(config, Arc::new(clock.clone()))
            .await
            .expect("relay starts");
        let endpoint = Endpoint::with_codes(server.base_url(), codes);
        Self {
            server: Some(server),
            clock,
            db,
            endpoint,
        }
    }

    pub fn server(&self) -> &RelayServer {
        self.server.as_ref().expect("running")
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.server().state().store.clone()
    }

    /// The relay clock now, in Unix seconds.
    pub fn clock_secs(&self) -> i64 {
        use privcomm_server::Clock;
        self.clock.now_secs()
    }

    /// Shuts the relay down and removes its storage.
    pub async fn finish(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
        self.db.cleanup().await;
    }
}

impl Endpoint {
    pub fn new(base: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            base,
            codes: None,
        }
    }

    pub fn with_codes(base: String, codes: Arc<CodeInbox>) -> Self {
        Self {
            codes: Some(codes),
            ..Self::new(base)
        }
    }

    /// The code the relay sent to `number` (waiting up to 10 s for it).
    pub async fn code_for(&self, number: &str) -> String {
        let inbox = self
            .codes
            .as_ref()
            .expect("this relay sends codes to the test");
        inbox
            .take(number, Duration::from_secs(10))
            .await
            .expect("a code arrived")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.base.replacen("http://", "ws://", 1))
    }

    /// POSTs JSON, returning status and body.
    pub async fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        respond(req).await
    }

    /// POSTs raw text as JSON content.
    pub async fn post_raw(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        respond(req).await
    }

    /// GETs, returning the status only.
    pub async fn status_of(&self, path: &str, token: Option<&str>) -> u16 {
        self.get(path, token).await.0
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        respond(req).await
    }

    pub async fn put(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.put(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        respond(req).await
    }
}

async fn respond(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// A client device with a real libsignal identity and prekeys.
pub struct Device {
    pub identity: IdentityKeyPair,
    pub registration_id: u32,
    /// The device's phone number (E.164).
    pub number: String,
    /// SHA-256 of `number`, as clients send it.
    pub phone_hash: String,
    /// The verification code to register with (empty until `verify`).
    pub code: String,
    /// The verification session the code was sent in.
    pub session: String,
    /// The registration lock token to register with, if any.
    pub lock: Option<Vec<u8>>,
    pub signed_prekey: SignedPreKeyRecord,
    pub kyber_prekey: KyberPreKeyRecord,
    pub one_time_prekeys: Vec<PreKeyRecord>,
    pub user_id: Option<Uuid>,
    pub token: Option<String>,
}

/// A random E.164 number (13 digits after `+1`: two tests never draw the same one).
pub fn random_number() -> String {
    format!(
        "+1{:013}",
        rand::rng().random_range(0..10_000_000_000_000u64)
    )
}

/// The phone hash clients send for `number`.
pub fn phone_hash_of(number: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(number.as_bytes()))
}

pub fn random_phone_hash() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Device {
    pub fn new(one_time_prekeys: u32) -> Self {
        Self::with_number(&random_number(), one_time_prekeys)
    }

    /// A new device for `number`.
    pub fn with_number(number: &str, one_time_prekeys: u32) -> Self {
        let mut rng = rand::rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let signed_pair = KeyPair::generate(&mut rng);
        let signature = identity
            .private_key()
            .calculate_signature(&signed_pair.public_key.serialize(), &mut rng)
            .expect("sign");
        let now = Timestamp::from_epoch_millis(1_700_000_000_000);
        let signed_prekey =
            SignedPreKeyRecord::new(SignedPreKeyId::from(1u32), now, &signed_pair, &signature);
        let kyber_prekey = KyberPreKeyRecord::generate(
            kem::KeyType::Kyber1024,
            KyberPreKeyId::from(1u32),
            identity.private_key(),
        )
        .expect("kyber");
        let one_time_prekeys = (1..=one_time_prekeys)
            .map(|id| PreKeyRecord::new(PreKeyId::from(id), &KeyPair::generate(&mut rng)))
            .collect();
        Self {
            identity,
            registration_id: rng.random_range(1..=0x3FFF),
            number: number.to_owned(),
            phone_hash: phone_hash_of(number),
            code: String::new(),
            session: String::new(),
            lock: None,
            signed_prekey,
            kyber_prekey,
            one_time_prekeys,
            user_id: None,
            token: None,
        }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.identity
            .private_key()
            .calculate_signature(message, &mut rand::rng())
            .expect("sign")
            .into_vec()
    }

    pub fn signed_prekey_body(&self) -> SignedPreKey {
        SignedPreKey {
            key_id: self.signed_prekey.id().expect("id").into(),
            public_key: Base64String::encode(
                self.signed_prekey.public_key().expect("pk").serialize(),
            ),
            signature: Base64String::encode(self.signed_prekey.signature().expect("sig")),
        }
    }

    pub fn kyber_prekey_body(&self) -> SignedPreKey {
        SignedPreKey {
            key_id: self.kyber_prekey.id().expect("id").into(),
            public_key: Base64String::encode(
                self.kyber_prekey.public_key().expect("pk").serialize(),
            ),
            signature: Base64String::encode(self.kyber_prekey.signature().expect("sig")),
        }
    }

    pub fn one_time_prekey_bodies(&self) -> Vec<OneTimePreKey> {
        self.one_time_prekeys
            .iter()
            .map(|k| OneTimePreKey {
                key_id: k.id().expect("id").into(),
                public_key: Base64String::encode(k.public_key().expect("pk").serialize()),
            })
            .collect()
    }

    pub fn register_request(&self, nonce: &[u8]) -> RegisterRequest {
        RegisterRequest {
            phone_hash: self.phone_hash.clone(),
            registration_id: self.registration_id,
            identity_key: Base64String::encode(self.identity.identity_key().serialize()),
            nonce: Base64String::encode(nonce),
            signature: Base64String::encode(
                self.sign(&signing::register_message(nonce, &self.phone_hash)),
            ),
            signed_prekey: self.signed_prekey_body(),
            kyber_prekey: self.kyber_prekey_body(),
            one_time_prekeys: self.one_time_prekey_bodies(),
            verification_code: self.code.clone(),
            verification_session: self.session.clone(),
            registration_lock: self.lock.as_ref().map(Base64String::encode),
        }
    }

    /// Asks the relay to send a code to this device's number; returns its answer.
    pub async fn request_code(&self, relay: &Endpoint) -> (u16, Value) {
        relay
            .post(
                "/api/v1/verification",
                &serde_json::json!({ "number": self.number }),
                None,
            )
            .await
    }

    /// Has a code sent to the number and keeps it for `register`.
    pub async fn verify(&mut self, relay: &Endpoint) {
        let (status, body) = self.request_code(relay).await;
        assert_eq!(status, 202, "{body}");
        self.session = body["session"].as_str().expect("session").to_owned();
        self.code = relay.code_for(&self.number).await;
    }

    pub async fn challenge(&self, relay: &Endpoint) -> Vec<u8> {
        let (status, body) = relay
            .post(
                "/auth/challenge",
                &serde_json::json!({"phone_hash": self.phone_hash}),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let resp: ChallengeResponse = serde_json::from_value(body).expect("challenge body");
        resp.nonce.decode("nonce").expect("nonce b64")
    }

    /// Verifies the number and registers.
    pub async fn register(&mut self, relay: &Endpoint) -> Uuid {
        self.verify(relay).await;
        let nonce = self.challenge(relay).await;
        let body = serde_json::to_value(self.register_request(&nonce)).expect("json");
        let (status, body) = relay.post("/api/v1/register", &body, None).await;
        assert_eq!(status, 201, "{body}");
        let resp: RegisterResponse = serde_json::from_value(body).expect("register body");
        self.user_id = Some(resp.user_id);
        resp.user_id
    }

    pub fn token_request(&self, nonce: &[u8]) -> TokenRequest {
        TokenRequest {
            phone_hash: self.phone_hash.clone(),
            nonce: Base64String::encode(nonce),
            signature: Base64String::encode(
                self.sign(&signing::auth_message(nonce, &self.phone_hash)),
            ),
        }
    }

    pub async fn login(&mut self, relay: &Endpoint) -> String {
        let nonce = self.challenge(relay).await;
        let body = serde_json::to_value(self.token_request(&nonce)).expect("json");
        let (status, body) = relay.post("/auth/token", &body, None).await;
        assert_eq!(status, 200, "{body}");
        let resp: TokenResponse = serde_json::from_value(body).expect("token body");
        assert_eq!(Some(resp.user_id), self.user_id);
        assert_eq!(resp.expires_in, 1800);
        self.token = Some(resp.token.clone());
        resp.token
    }

    /// Registers and logs in.
    pub async fn enrol(relay: &Endpoint, one_time_prekeys: u32) -> Self {
        let mut device = Self::new(one_time_prekeys);
        device.register(relay).await;
        device.login(relay).await;
        device
    }

    /// Alice and Bob, registered and logged in, without one-time prekeys.
    pub async fn pair(relay: &Endpoint) -> (Self, Self) {
        (Self::enrol(relay, 0).await, Self::enrol(relay, 0).await)
    }

    pub fn id(&self) -> Uuid {
        self.user_id.expect("registered")
    }

    pub fn bearer(&self) -> &str {
        self.token.as_deref().expect("logged in")
    }

    pub async fn connect(&self, relay: &Endpoint) -> WsClient {
        WsClient::connect(&relay.ws_url(), self.bearer()).await
    }

    /// Connects with nothing queued: the first frame must be `queue_empty`.
    pub async fn online(&self, relay: &Endpoint) -> WsClient {
        let mut ws = self.connect(relay).await;
        match ws.frame().await {
            ServerFrame::QueueEmpty => ws,
            other => panic!("expected queue_empty first, got {other:?}"),
        }
    }

    pub fn device_id() -> DeviceId {
        DeviceId::new(1).expect("device id")
    }
}

/// A WebSocket client speaking the relay's frames.
pub struct WsClient {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// What the next read produced.
#[derive(Debug)]
pub enum Incoming {
    Frame(ServerFrame),
    Closed(Option<u16>),
}

/// The upgrade request for `ws_url` with `token` in the `Authorization` header (the only
/// place the relay takes it from).
pub fn ws_request(
    ws_url: &str,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = ws_url.into_client_request().expect("ws url");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

impl WsClient {
    pub async fn connect(ws_url: &str, token: &str) -> Self {
        let (stream, _) = tokio_tungstenite::connect_async(ws_request(ws_url, token))
            .await
            .expect("websocket connects");
        Self { stream }
    }

    /// Connects over a socket whose kernel receive buffer is `bytes` (set before connecting,
    /// so the window never grows): a client that stops reading stalls the relay's writes
    /// at once instead of after megabytes.
    pub async fn connect_with_receive_buffer(ws_url: &str, token: &str, bytes: u32) -> Self {
        let request = ws_request(ws_url, token);
        let authority = request
            .uri()
            .authority()
            .expect("ws url has a host")
            .as_str();
        let addr: std::net::SocketAddr = authority.parse().expect("ws url names an address");
        let socket = tokio::net::TcpSocket::new_v4().expect("tcp socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let tcp = socket.connect(addr).await.expect("tcp connects");
        let (stream, _) =
            tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
                .await
                .expect("websocket connects");
        Self { stream }
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        let text = serde_json::to_string(frame).expect("json");
        self.stream
            .send(Message::text(text))
            .await
            .expect("ws send");
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_owned()))
            .await
            .expect("ws send");
    }

    /// Queues a frame without flushing (for pipelining many sends).
    pub async fn feed(&mut self, frame: &ClientFrame) {
        let text = serde_json::to_string(frame).expect("json");
        self.stream
            .feed(Message::text(text))
            .await
            .expect("ws feed");
    }

    pub async fn flush(&mut self) {
        self.stream.flush().await.expect("ws flush");
    }

    /// Next frame or close, within 20 s.
    pub async fn next(&mut self) -> Incoming {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), self.stream.next())
                .await
                .expect("a frame within 20 s");
            match msg {
                Some(Ok(Message::Text(text))) => {
                    return Incoming::Frame(serde_json::from_str(&text).expect("server frame json"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Incoming::Closed(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Incoming::Closed(None),
            }
        }
    }

    pub async fn frame(&mut self) -> ServerFrame {
        match self.next().await {
            Incoming::Frame(f) => f,
            Incoming::Closed(code) => {
                panic!("connection closed ({code:?}) while expecting a frame")
            }
        }
    }

    /// Expects no frame for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(wait, self.stream.next()).await
        {
            panic!("unexpected frame: {t}");
        }
    }

    /// Reads messages until `queue_empty`, acking each; returns (server id, payload) in order.
    pub async fn drain(&mut self) -> Vec<(Uuid, Vec<u8>)> {
        let mut got = Vec::new();
        loop {
            match self.frame().await {
                ServerFrame::EncryptedMessage { id, payload, .. } => {
                    got.push((id, payload.decode("payload").expect("b64")));
                    self.ack(id).await;
                }
                ServerFrame::QueueEmpty => return got,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Skips frames until the relay closes; returns the close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            if let Incoming::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    pub async fn ack(&mut self, id: Uuid) {
        self.send(&ClientFrame::Ack { id }).await;
    }

    pub async fn close(mut self) {
        let _ = self
            .stream
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }

    /// The underlying stream (tests that read and write at once split it).
    pub fn into_inner(
        self,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
    {
        self.stream
    }

    /// Drops the TCP connection without a close handshake.
    pub fn abort(self) {
        drop(self.stream);
    }
}

/// Sends `count` messages numbered from 0 over one WebSocket, pipelined, and waits for every
/// `sent`.
pub async fn send_numbered(ws: &mut WsClient, to: Uuid, count: usize) {
    for chunk in (0..count).collect::<Vec<_>>().chunks(250) {
        for &i in chunk {
            let frame = ClientFrame::Send {
                to,
                id: Uuid::new_v4(),
                payload: Base64String::encode(format!("message {i:05}")),
                registration_id: None,
            };
            ws.feed(&frame).await;
        }
        ws.flush().await;
        for _ in chunk {
            match ws.frame().await {
                ServerFrame::Sent { .. } | ServerFrame::QueueEmpty => {}
                other => panic!("expected sent, got {other:?}"),
            }
        }
    }
}

/// Sends `payload` and waits for `sent`, returning the server id.
pub async fn send_and_confirm(ws: &mut WsClient, to: Uuid, payload: &[u8]) -> Uuid {
    let id = Uuid::new_v4();
    ws.send(&ClientFrame::Send {
        to,
        id,
        payload: Base64String::encode(payload),
        registration_id: None,
    })
    .await;
    match ws.frame().await {
        ServerFrame::Sent { id: got, server_id } => {
            assert_eq!(got, id);
            server_id
        }
        other => panic!("expected sent, got {other:?}"),
    }
}

pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Runs each named `async fn(Db)` test on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Postgres).await
                }
            )*
        }
    };
}

/// The relay binary running as a child process, its stdout (JSON logs) captured.
pub struct ChildRelay {
    child: std::process::Child,
    pub endpoint: Endpoint,
    pub logs: Arc<std::sync::Mutex<Vec<String>>>,
}

impl std::ops::Deref for ChildRelay {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl ChildRelay {
    /// Starts `privcomm-server` on an ephemeral port with the given storage and log level.
    pub async fn start(db: &TestDb, log: &str) -> Self {
        Self::start_with(db, log, &[], None).await
    }

    /// `start` with extra `PRIVCOMM_*` settings (later ones win over the test defaults) and,
    /// if given, a soft open-file limit set before the relay starts.
    pub async fn start_with(
        db: &TestDb,
        log: &str,
        settings: &[(&str, &str)],
        soft_open_files: Option<u32>,
    ) -> Self {
        let codes = Self::inbox().await;
        let mut cmd = Self::command(db, log, settings, soft_open_files);
        Self::send_codes_to(&mut cmd, &codes, settings);
        Self::launch(cmd, codes).await
    }

    async fn inbox() -> Arc<CodeInbox> {
        Arc::new(CodeInbox::start().await.expect("code inbox"))
    }

    /// Points the relay's code webhook at `codes`, unless `settings` choose another sender.
    fn send_codes_to(
        cmd: &mut std::process::Command,
        codes: &CodeInbox,
        settings: &[(&str, &str)],
    ) {
        for (name, value) in codes.env() {
            if !settings.iter().any(|(n, _)| *n == name) {
                cmd.env(name, value);
            }
        }
    }

    /// `start_with` in the working directory `cwd`.
    pub async fn start_in(
        db: &TestDb,
        log: &str,
        settings: &[(&str, &str)],
        cwd: &std::path::Path,
    ) -> Self {
        let codes = Self::inbox().await;
        let mut cmd = Self::command(db, log, settings, None);
        Self::send_codes_to(&mut cmd, &codes, settings);
        cmd.current_dir(cwd);
        Self::launch(cmd, codes).await
    }

    /// Runs the relay with `settings` expecting it to refuse to start: asserts it exits
    /// with a failure within 30 s and returns what it printed (stdout and stderr).
    pub async fn refused_start(db: &TestDb, settings: &[(&str, &str)]) -> String {
        let mut cmd = Self::command(db, "info", settings, None);
        cmd.stderr(std::process::Stdio::piped());
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::from(cmd).output(),
        )
        .await
        .expect("the relay exits within 30 s")
        .expect("run relay binary");
        assert!(
            !output.status.success(),
            "the relay must refuse to start with {settings:?}"
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// The relay command with the test defaults, `settings` on top.
    fn command(
        db: &TestDb,
        log: &str,
        settings: &[(&str, &str)],
        soft_open_files: Option<u32>,
    ) -> std::process::Command {
        let binary = env!("CARGO_BIN_EXE_privcomm-server");
        let mut cmd = match soft_open_files {
            Some(n) => {
                let mut cmd = std::process::Command::new("sh");
                cmd.args(["-c", &format!("ulimit -Sn {n} && exec \"$0\""), binary]);
                cmd
            }
            None => std::process::Command::new(binary),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PRIVCOMM_BIND", "127.0.0.1:0")
            .env("PRIVCOMM_DATA_DIR", db.dir.path())
            .env("PRIVCOMM_LOG", log)
            .env("PRIVCOMM_REGISTER_PER_HOUR", "10000")
            .env("PRIVCOMM_VERIFICATION_PER_HOUR", "10000")
            .env("PRIVCOMM_VERIFICATION_PER_NUMBER_PER_MINUTE", "1000")
            .env("PRIVCOMM_VERIFICATION_PER_NUMBER_PER_DAY", "1000")
            .env("PRIVCOMM_TOKEN_PER_MINUTE", "10000")
            .env("PRIVCOMM_CHALLENGE_PER_MINUTE", "10000")
            .env("PRIVCOMM_SEND_PER_MINUTE", "1000000")
            .env("PRIVCOMM_SEND_KIB_PER_MINUTE", "100000000")
            .env("PRIVCOMM_MIN_FREE_DISK_MB", "16")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        if let Some(url) = &db.url {
            cmd.env("PRIVCOMM_DATABASE_URL", url);
        }
        for (name, value) in settings {
            cmd.env(name, value);
        }
        cmd
    }

    async fn launch(mut cmd: std::process::Command, codes: Arc<CodeInbox>) -> Self {
        use std::io::BufRead;
        let mut child = cmd.spawn().expect("spawn relay binary");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["fields"]["message"] == "relay listening" {
                        let _ = addr_tx
                            .send(v["fields"]["addr"].as_str().unwrap_or_default().to_owned());
                    }
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let addr =
            tokio::task::spawn_blocking(move || addr_rx.recv_timeout(Duration::from_secs(60)))
                .await
                .expect("join")
                .expect("relay printed its address");
        Self {
            child,
            endpoint: Endpoint::with_codes(format!("http://{addr}"), codes),
            logs,
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("relay did not exit within 30 s of SIGTERM");
    }

    /// The relay's resident memory, in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("relay status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    /// The relay's listening address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.endpoint
            .base
            .trim_start_matches("http://")
            .parse()
            .expect("relay address")
    }

    /// Every log line so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().expect("log lock").join("\n")
    }
}

impl Drop for ChildRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
