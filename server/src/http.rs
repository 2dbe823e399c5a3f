//! The HTTP accept loop: hyper's HTTP/1 server (with WebSocket upgrades)
//! under the limits `axum::serve` does not offer.
//!
//! - The first byte and then the whole request head must each arrive within
//!   the header timeout, or the connection is closed (slowloris: partial heads and silent TCP connections used to
//!   be held forever, until the process ran out of file descriptors).
//! - Shutdown is bounded: the listener stops, idle keep-alive connections
//!   close at once, and connections still mid-request when the drain time is
//!   over are dropped (a client holding a partial head used to keep a SIGTERM
//!   from ever finishing).
//! - Accepted sockets get `TCP_NODELAY`: small frames are not held back by
//!   Nagle's algorithm.
//!
//! Upgraded WebSockets leave this loop: axum hands them to their own tasks,
//! which the server's [`Shutdown`](crate::shutdown::Shutdown) tracks.

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Pause after a failed `accept` (out of file descriptors, usually), so the
/// loop does not spin while the process is at its limit.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `stop` is cancelled, then lets
/// in-flight requests finish for at most `drain`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    stop: CancellationToken,
    drain: Duration,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // Shared by every connection task (it is only read).
    let builder = std::sync::Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut failures_logged = 0u32;
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            // Reap finished connection tasks so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => {
                failures_logged = 0;
                accepted
            }
            Err(error) => {
                // Log the first failures of a run, not one per attempt.
                if failures_logged < 3 {
                    tracing::warn!(%error, "accept failed; pausing");
                    failures_logged += 1;
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "set_nodelay failed");
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move { router.oneshot(request).await }
        });
        let builder = std::sync::Arc::clone(&builder);
        let watcher = graceful.watcher();
        connections.spawn(async move {
            // hyper-util's builder reads the first bytes (to tell HTTP/1
            // from HTTP/2) before hyper's header timer starts, with no timer
            // of its own: a connection that never sends a byte would be held
            // forever. The first byte must come within the header timeout.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_timeout, socket.peek(&mut first)).await {
                Ok(Ok(read)) if read > 0 => {}
                _ => return,
            }
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(socket), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    // Idle keep-alive connections close now; requests in flight may finish.
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "http connections still open after the drain; dropping them"
        );
    }
    connections.shutdown().await;
}
