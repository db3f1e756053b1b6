//! The accept loop: plain TCP or TLS, HTTP/1.1 and HTTP/2 (hyper's auto builder), the peer
//! address handed to the router, and a graceful drain when the shutdown signal flips.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{extract::ConnectInfo, Router};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
};
use tokio_rustls::TlsAcceptor;

use super::shutdown::shut_down;
use tower::ServiceExt;

/// A client that has not sent its request head by then is dropped (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to pause accepting when out of file descriptors, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The connection settings; `http1_only` skips the HTTP/2 detection.
fn connection_builder(http1_only: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if http1_only {
        builder.http1_only()
    } else {
        builder
    }
}

/// Serves `app` on `listener` until `shutdown` flips, then lets open connections finish their
/// requests for up to `grace` (parked long-polls answer 503 at once on the same signal).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    // HTTP/2 only where TLS negotiated it: on other connections the auto builder's version
    // sniffing hands its bytes back to hyper, whose read buffer then doubles to 16 KiB for
    // the life of the connection, which adds up over thousands of parked long-polls.
    let http1_only = Arc::new(connection_builder(true));
    let negotiating = Arc::new(connection_builder(false));
    // Every connection task holds a receiver; `closed()` resolves when the last one ends.
    let (open_tx, open_rx) = watch::channel(());

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    if !is_per_connection(&err) {
                        tracing::warn!("cannot accept connections: {err}; retrying");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
            _ = shut_down(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let (http1_only, negotiating) = (Arc::clone(&http1_only), Arc::clone(&negotiating));
        let tls = tls.clone();
        let mut shutdown = shutdown.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let (io, builder): (Box<dyn Io>, _) = match tls {
                None => (Box::new(stream), http1_only),
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                            (Box::new(stream), if h2 { negotiating } else { http1_only })
                        }
                        Ok(Err(err)) => {
                            tracing::debug!("TLS handshake with {peer} failed: {err}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake with {peer} timed out");
                            return;
                        }
                    }
                }
            };
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            let mut draining = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            tracing::trace!("connection from {peer} ended: {err}");
                        }
                        break;
                    }
                    _ = shut_down(&mut shutdown), if !draining => {
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(open);
        });
    }

    drop(listener);
    drop(open_rx);
    if tokio::time::timeout(grace, open_tx.closed()).await.is_err() {
        tracing::warn!(
            "{} connections still open after {grace:?}; leaving them",
            open_tx.receiver_count()
        );
    }
}

/// Errors that concern one connection only; anything else (EMFILE, ENFILE, ENOBUFS) is a
/// resource shortage worth a pause and a warning.
fn is_per_connection(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// The address to put in a URL for a listener on `addr`: a wildcard becomes loopback.
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}
