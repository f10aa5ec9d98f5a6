//! A hostile relay in the middle: forwards every REST call and WebSocket frame between a
//! client and a real relay, records what the client sends, rewrites chosen answers and
//! injects frames of its own: what a compromised relay can do to a client.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as UpMessage;

/// Answers of the real relay to rewrite: a JSON field of the body at a path, set to a value.
#[derive(Clone, Debug)]
pub struct Rewrite {
    /// REST path whose answer is rewritten (`/auth/token`).
    pub path: &'static str,
    /// Field of its JSON body.
    pub field: &'static str,
    /// The value to put there (any JSON, also out of range or of the wrong type).
    pub value: Value,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    http: reqwest::Client,
    rewrites: Arc<Mutex<Vec<Rewrite>>>,
    client_frames: Arc<Mutex<Vec<Value>>>,
    requests: Arc<Mutex<Vec<String>>>,
    inject: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>>,
}

/// The relay in the middle, listening on an ephemeral loopback port.
pub struct Mitm {
    /// The base URL clients should use.
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Mitm {
    /// Starts forwarding to the relay at `upstream` (`http://127.0.0.1:port`).
    pub async fn start(upstream: &str) -> Self {
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            rewrites: Arc::default(),
            client_frames: Arc::default(),
            requests: Arc::default(),
            inject: Arc::default(),
        };
        let app = Router::new()
            .fallback(any(forward))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        // Codes requested through the proxy arrive where the relay behind it sends them.
        super::remember_codes(&url, super::codes_of(upstream));
        Self { url, shared, task }
    }

    /// From now on, answers to `path` get `field` set to `value`.
    pub fn rewrite(&self, path: &'static str, field: &'static str, value: Value) {
        self.shared
            .rewrites
            .lock()
            .unwrap()
            .push(Rewrite { path, field, value });
    }

    /// Drops every rewrite: answers pass unchanged again.
    pub fn clear_rewrites(&self) {
        self.shared.rewrites.lock().unwrap().clear();
    }

    /// The paths of the REST calls forwarded so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Every frame the client sent on its WebSockets so far, as JSON.
    pub fn client_frames(&self) -> Vec<Value> {
        self.shared.client_frames.lock().unwrap().clone()
    }

    /// Sends `frame` to the client on its current WebSocket; false if it has none.
    pub fn inject(&self, frame: &Value) -> bool {
        self.shared
            .inject
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|tx| tx.send(frame.to_string()).is_ok())
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(shared): State<Shared>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    if parts.uri.path() == "/ws" {
        let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let auth = parts.headers.get("authorization").cloned();
        return upgrade.on_upgrade(move |socket| relay_socket(socket, shared, auth));
    }
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    rest(shared, parts.method, parts.uri, parts.headers, body).await
}

async fn rest(
    shared: Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    shared.requests.lock().unwrap().push(path.clone());
    let target = format!(
        "{}{}",
        shared.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = shared.http.request(method, target).body(body);
    for name in ["authorization", "content-type"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.clone());
        }
    }
    let Ok(answer) = request.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let bytes = answer.bytes().await.unwrap_or_default();
    let rewrites: Vec<Rewrite> = shared
        .rewrites
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == path)
        .cloned()
        .collect();
    let bytes = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut json) if !rewrites.is_empty() => {
            for r in rewrites {
                json[r.field] = r.value;
            }
            Bytes::from(json.to_string())
        }
        _ => bytes,
    };
    (
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
        [("content-type", "application/json")],
        bytes,
    )
        .into_response()
}

async fn relay_socket(client: WebSocket, shared: Shared, auth: Option<axum::http::HeaderValue>) {
    let url = format!("{}/ws", shared.upstream.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    if let Some(auth) = auth {
        request.headers_mut().insert("authorization", auth);
    }
    let Ok((upstream, _)) = tokio_tungstenite::connect_async(request).await else {
        return;
    };
    let (tx, mut injected) = mpsc::unbounded_channel::<String>();
    *shared.inject.lock().unwrap() = Some(tx);
    let (mut up_tx, mut up_rx) = upstream.split();
    let (mut client_tx, mut client_rx) = client.split();
    loop {
        tokio::select! {
            from_client = client_rx.next() => match from_client {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(value) = serde_json::from_str::<Value>(text.as_str()) {
                        shared.client_frames.lock().unwrap().push(value);
                    }
                    if up_tx.send(UpMessage::text(text.as_str())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            from_relay = up_rx.next() => match from_relay {
                Some(Ok(UpMessage::Text(text))) => {
                    if client_tx.send(Message::Text(text.as_str().into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(UpMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            Some(frame) = injected.recv() => {
                if client_tx.send(Message::Text(frame.into())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = client_tx.send(Message::Close(None)).await;
    let _ = up_tx.close().await;
}
