//! The HTTP/1 accept loop, with the limits `axum::serve` does not offer: a deadline for a
//! request's headers, an idle timeout, and a cap on open connections.
//!
//! Without them, a client that opens a connection and sends nothing (or half a request, or reads
//! nothing) holds a socket and a task forever; a few hundred such clients exhaust the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::{ApiError, HttpCode};

/// Connection limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client has to send a request's headers, from the moment the connection is
    /// ready for them (so also how long an idle keep-alive connection waits for its next
    /// request).
    pub header_timeout: Duration,
    /// How long a connection may see no byte in either direction, during a request as well
    /// (a stalled body, a client that stopped reading).
    pub idle_timeout: Duration,
    /// Open connections at most; above it, new ones get a 503 and are closed at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// How long open requests may still run after shutdown begins (event streams never end).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused: u64 = 0;
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Logged at 1, 2, 4, 8, … refusals: a flood must not flood the log too.
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, limit = limits.max_connections, "connection cap reached: refusing");
            }
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let service = TowerToHyperService::new(router.clone());
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(io, service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                result = connection => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                }
                () = activity.idle_for(limits.idle_timeout) => {
                    tracing::debug!(%peer, "idle connection closed");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("open connections (event streams) closed at shutdown");
    }
    Ok(())
}

/// Answers an over-the-cap client with a 503 in the hub's error shape, and closes.
async fn refuse(mut stream: TcpStream) {
    let error = ApiError::http(HttpCode::Overloaded, "too many open connections; try again");
    let status = error.status();
    let body = error.to_json();
    let response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n\
         connection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(response.as_bytes()),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// When a connection last moved a byte, and whether it is waiting on its client.
///
/// Idle means *the client* is holding things up: the request is still arriving (the last byte
/// moved was read, no answer begun) or the answer cannot be written (the client stopped
/// reading). A quiet answer in progress (a followed log, an event stream between events) is
/// the server's own pace, not idleness; between requests, the header timeout applies.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    last_was_read: AtomicBool,
    write_blocked: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            last_was_read: AtomicBool::new(true),
            write_blocked: AtomicBool::new(false),
        }
    }

    fn touch(&self, read: bool) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
        self.last_was_read.store(read, Ordering::Relaxed);
        if !read {
            self.write_blocked.store(false, Ordering::Relaxed);
        }
    }

    fn waiting_on_client(&self) -> bool {
        self.last_was_read.load(Ordering::Relaxed) || self.write_blocked.load(Ordering::Relaxed)
    }

    /// Resolves once the connection has waited on its client for `limit` (detected within
    /// twice that).
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            let now = Instant::now();
            if now >= deadline && self.waiting_on_client() {
                return;
            }
            // Quiet but serving at its own pace: look again a period later.
            let wake = if now >= deadline {
                now + limit
            } else {
                deadline
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// A stream that records its activity.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch(true);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        match polled {
            Poll::Ready(Ok(n)) if n > 0 => self.activity.touch(false),
            Poll::Pending => self.activity.write_blocked.store(true, Ordering::Relaxed),
            _ => {}
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
