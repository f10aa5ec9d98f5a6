//! The HTTP server loop: accepts TCP connections under the connection caps and serves each
//! with hyper's HTTP/1.1, with a header timeout that also closes idle keep-alive
//! connections and a cap on the request head's size. (`axum::serve` installs no timer, so
//! its header timeout never fires, and it has no caps.)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Layer;

use crate::conn_limits::{ConnectionLimits, ConnectionPermit, Refusal};
use crate::metrics::Metrics;

/// Largest request line plus headers, in bytes; more is answered 431 and closed.
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in one request; more is answered 431 and closed.
pub const MAX_REQUEST_HEADERS: usize = 48;
/// How long in-flight requests may take to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);
/// Accept errors (out of file descriptors, mostly) are logged at most this often.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the loop needs besides the listener and the router.
pub struct ServeSettings {
    /// Connection caps.
    pub limits: Arc<ConnectionLimits>,
    /// Time a client has to send a request's head, and the longest a keep-alive connection
    /// may sit idle between requests.
    pub header_timeout: Duration,
    /// Metrics (open and refused connections).
    pub metrics: Arc<Metrics>,
}

/// Serves `app` on `listener` until `shutdown`, then lets in-flight requests finish (at
/// most `DRAIN`). Upgraded WebSockets outlive this; the relay drains them itself.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ServeSettings,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_header_size(MAX_REQUEST_HEAD_BYTES)
        .max_headers(MAX_REQUEST_HEADERS);
    let connections = TaskTracker::new();
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    settings.metrics.accept_errors.inc();
                    if last_accept_error.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_EVERY) {
                        tracing::warn!(error = %e, "accepting a connection failed (at the open file limit?)");
                        last_accept_error = Some(Instant::now());
                    }
                    // Out of descriptors: give closing connections a moment instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match settings.limits.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                let reason = match refusal {
                    Refusal::Full => "full",
                    Refusal::PerClient => "per_client",
                };
                settings.metrics.refused(reason);
                // Closed at once: a refused client holds nothing.
                drop(tcp);
                continue;
            }
        };
        // Frames are small and latency-bound: send each at once rather than wait for the
        // peer's ACK of the previous one (Nagle + delayed ACK cost up to 40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(Extension(ConnectInfo(peer)).layer(app.clone()));
        // The permit travels with the socket, so an upgraded WebSocket keeps holding it.
        let io = TokioIo::new(Counted {
            inner: tcp,
            _permit: permit,
        });
        let http = http.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let connection = http.serve_connection(io, service).with_upgrades();
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(DRAIN, connection.as_mut()).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = ended {
                // Timeouts, oversized heads, resets: the client's business, not the operator's.
                tracing::debug!(timeout = e.is_timeout(), error = %e, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// A TCP stream that holds its connection permit until it is dropped.
struct Counted {
    inner: TcpStream,
    _permit: ConnectionPermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises this process's open-file limit to its hard maximum (every connection is a file
/// descriptor), and says what it is. Returns the limit in effect.
#[cfg(unix)]
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the open file limit");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    // `None` is "unlimited".
    tracing::info!(
        open_file_limit = now.unwrap_or(u64::MAX),
        was = before.unwrap_or(u64::MAX),
        "open file limit (every connection uses one)"
    );
    now
}

/// Raises this process's open-file limit: nothing to do off Unix.
#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Option<u64> {
    None
}

/// This process's open-file limit (`None`: unlimited or unknown).
#[cfg(unix)]
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// This process's open-file limit: unknown off Unix.
#[cfg(not(unix))]
pub fn open_file_limit() -> Option<u64> {
    None
}
