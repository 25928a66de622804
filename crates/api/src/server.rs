//! The API's HTTP/1.1 server: an accept loop over hyper, because `axum::serve` has no
//! header-read timeout and no connection cap, and without them a few hundred clients that
//! open connections and dribble their headers hold the process's sockets for as long as
//! they like (a "slowloris").
//!
//! * At most `max_connections` connections are served at once; the loop takes a slot
//!   before it accepts, so further clients wait in the kernel's listen backlog rather
//!   than being accepted and starved.
//! * A client must finish a request's headers within `header_read_timeout` of the
//!   server starting to read them, which includes the idle time of a kept-alive
//!   connection before its next request; else the connection is closed.
//! * The request timeout (time until a response starts) is a layer of the router
//!   ([`crate::app`]), so that its 503 has the API's error shape.
//! * Each request carries its peer's address (`ConnectInfo<SocketAddr>`), which the
//!   failed-authentication limit keys on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// How the server treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// `api.header_read_timeout`.
    pub header_read_timeout: Duration,
    /// `api.max_connections`.
    pub max_connections: usize,
    /// How long requests in flight may take to finish after shutdown begins
    /// (`worker.shutdown_grace`).
    pub grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets
/// requests in flight finish (at most `options.grace`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    // Cancelled when the grace period ends, to close connections still open.
    let closing = tokio_util::sync::CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Per-connection failures (reset before accept) are the client's;
                    // running out of descriptors is ours and passes when connections
                    // close. Either way the listener stays up.
                    tracing::warn!(error = %e, "accept failed");
                    if !is_per_connection(&e) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let closing = closing.clone();
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    // Header timeouts, resets and malformed requests end here: the
                    // client's doing, worth a debug line at most.
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                },
                () = closing.cancelled() => {}
            }
            drop(slot);
        });
    }
    drop(listener);
    // Shutdown has begun: idle connections close now, busy ones after their response;
    // in-flight requests get `grace` to complete.
    if tokio::time::timeout(options.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = options.grace.as_millis() as u64,
            "requests still running after the grace period; closing"
        );
        closing.cancel();
    }
    Ok(())
}

fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
