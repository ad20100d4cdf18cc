//! [`Server`]: a hub served on its own listener, for programs that do not use axum.
//!
//! It owns the accept loop so that it can bound the time a client takes to send its
//! request headers (a slow-loris guard) and stop accepting before the hub shuts down.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::ConnectInfo, http::Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, ToSocketAddrs},
    task::JoinHandle,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_service::Service;

use crate::{Error, Hub};

/// A hub listening on an address by itself.
///
/// ```no_run
/// # async fn run() -> Result<(), wshub::Error> {
/// use std::time::Duration;
/// use wshub::{Hub, Server};
///
/// let hub = Hub::builder()
///     .on_message(|conn, msg| {
///         conn.hub().broadcast(msg);
///     })
///     .build();
/// let server = Server::start("127.0.0.1:8080", hub).await?;
/// println!("listening on ws://{}/ws", server.local_addr());
/// tokio::signal::ctrl_c().await?;
/// server.stop(Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server {
    hub: Hub,
    local_addr: SocketAddr,
    running: Arc<AtomicBool>,
    stop: CancellationToken,
    accept_loop: Mutex<Option<JoinHandle<()>>>,
    http_connections: TaskTracker,
}

impl Server {
    /// Binds `addr` and serves the hub at its configured path
    /// ([`HubConfig::path`](crate::HubConfig::path)).
    ///
    /// # Errors
    /// [`Error::Io`] when the address cannot be bound.
    pub async fn start(addr: impl ToSocketAddrs, hub: Hub) -> Result<Self, Error> {
        let router = hub.router();
        Self::start_with_router(addr, hub, router).await
    }

    /// Binds `addr` and serves `router`, which should include the hub's route (for
    /// example `hub.router().route("/", get(page))`).
    ///
    /// # Errors
    /// [`Error::Io`] when the address cannot be bound.
    pub async fn start_with_router(
        addr: impl ToSocketAddrs,
        hub: Hub,
        router: Router,
    ) -> Result<Self, Error> {
        Self::start_inner(addr, hub, router, None).await
    }

    /// Like [`start_with_router`](Self::start_with_router), over TLS: `wss://` and
    /// `https://`. The TLS handshake shares [`HubConfig::handshake_timeout`](crate::HubConfig)
    /// with the HTTP request.
    ///
    /// # Errors
    /// [`Error::Io`] when the address cannot be bound.
    #[cfg(feature = "tls")]
    pub async fn start_tls(
        addr: impl ToSocketAddrs,
        hub: Hub,
        router: Router,
        tls: crate::TlsConfig,
    ) -> Result<Self, Error> {
        Self::start_inner(addr, hub, router, Some(tls)).await
    }

    async fn start_inner(
        addr: impl ToSocketAddrs,
        hub: Hub,
        router: Router,
        tls: Option<Tls>,
    ) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let running = Arc::new(AtomicBool::new(true));
        let stop = CancellationToken::new();
        let http_connections = TaskTracker::new();
        let secure = tls.is_some();
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            router,
            tls,
            Arc::new(HttpSlots::new(&hub)),
            stop.clone(),
            http_connections.clone(),
        ));
        tracing::info!(%local_addr, path = %hub.config().path, tls = secure, "wshub server listening");
        Ok(Self {
            hub,
            local_addr,
            running,
            stop,
            accept_loop: Mutex::new(Some(accept_loop)),
            http_connections,
        })
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The hub being served.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Whether the server still accepts connections.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Stops accepting, then shuts the hub down gracefully (see [`Hub::shutdown`]): every
    /// connection gets what is queued for it and a close frame with 1001, within `deadline`.
    pub async fn stop(&self, deadline: Duration) {
        if !self.running.swap(false, Ordering::AcqRel) {
            return;
        }
        self.stop.cancel();
        let accept_loop = self
            .accept_loop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(accept_loop) = accept_loop {
            let _ = accept_loop.await;
        }
        self.hub.shutdown(deadline).await;
        self.http_connections.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.http_connections.wait()).await;
        tracing::info!("wshub server stopped");
    }
}

#[cfg(feature = "tls")]
type Tls = crate::TlsConfig;
/// Without the `tls` feature no TLS configuration can exist.
#[cfg(not(feature = "tls"))]
type Tls = std::convert::Infallible;

/// How often a lasting accept failure (out of file descriptors) is logged.
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The answer to a connection over [`HubConfig::max_http_connections`](crate::HubConfig)
/// or its per-IP bound, written without waiting before the socket is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
    Connection: close\r\nContent-Length: 0\r\n\r\n";

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<Tls>,
    slots: Arc<HttpSlots>,
    stop: CancellationToken,
    http_connections: TaskTracker,
) {
    let handshake_timeout = slots.hub.config().handshake_timeout;
    let mut last_warning: Option<Instant> = None;
    let mut unlogged_failures = 0_u64;
    let on_error = slots.hub.inner.callbacks.on_server_error.clone();
    let report = move |error: Error| {
        if let Some(on_error) = &on_error {
            // A panicking callback must not end the accept loop.
            let call = std::panic::AssertUnwindSafe(|| on_error(&error));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!("the server's on_server_error callback panicked");
            }
        }
    };
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a connection reset before accept: keep
                    // serving, but do not spin, nor log, while the condition lasts.
                    if last_warning.is_none_or(|at| at.elapsed() >= ACCEPT_WARNING_INTERVAL) {
                        tracing::warn!(%error, since_last_warning = unlogged_failures, "accept failed");
                        last_warning = Some(Instant::now());
                        unlogged_failures = 0;
                    } else {
                        unlogged_failures += 1;
                    }
                    report(Error::Accept(error));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = HttpSlots::take(&slots, peer.ip()) else {
            slots
                .hub
                .inner
                .counters
                .refused_http_connections
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "too many HTTP connections: refused");
            // A fresh socket's send buffer is empty: this never blocks, and what does not
            // fit is not worth waiting for.
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            continue;
        };
        let router = router.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        #[cfg(feature = "tls")]
        let report = report.clone();
        http_connections.spawn(async move {
            // Held until the connection ends or becomes a WebSocket (hyper then hands the
            // socket to the upgrade and `serve_http` returns).
            let _slot = slot;
            match tls {
                None => serve_http(stream, peer, router, handshake_timeout, stop).await,
                #[cfg(feature = "tls")]
                Some(tls) => {
                    match tokio::time::timeout(handshake_timeout, tls.acceptor().accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            serve_http(stream, peer, router, handshake_timeout, stop).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            let reason = error.to_string();
                            report(Error::TlsHandshake { peer, reason });
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            let reason = "timed out".to_owned();
                            report(Error::TlsHandshake { peer, reason });
                        }
                    }
                }
                #[cfg(not(feature = "tls"))]
                Some(never) => match never {},
            }
        });
    }
}

/// The HTTP connections open now that are not WebSockets, against their bounds
/// ([`HubConfig::max_http_connections`](crate::HubConfig) and its per-IP bound).
#[derive(Debug)]
struct HttpSlots {
    hub: Hub,
    /// Connections open per client IP address; an address leaves the map with its last one.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`HttpSlots`], given back when dropped.
#[derive(Debug)]
struct HttpSlot {
    slots: Arc<HttpSlots>,
    ip: IpAddr,
}

impl HttpSlots {
    fn new(hub: &Hub) -> Self {
        Self {
            hub: hub.clone(),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// A place for a connection from `ip`, or `None` when a bound is reached.
    fn take(slots: &Arc<HttpSlots>, ip: IpAddr) -> Option<HttpSlot> {
        let ip = ip.to_canonical();
        let config = slots.hub.config();
        let open = &slots.hub.inner.counters.http_connections;
        let mut per_ip = slots.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = per_ip.get(&ip).copied().unwrap_or(0);
        if open.load(Ordering::Relaxed) >= config.max_http_connections as u64
            || from_ip >= config.max_http_connections_per_ip
        {
            return None;
        }
        per_ip.insert(ip, from_ip + 1);
        open.fetch_add(1, Ordering::Relaxed);
        Some(HttpSlot {
            slots: Arc::clone(slots),
            ip,
        })
    }
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        let mut per_ip = self.slots.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.slots
            .hub
            .inner
            .counters
            .http_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves HTTP/1.1 (and upgrades) on one accepted stream until it ends or the server stops.
async fn serve_http<I>(
    stream: I,
    peer: SocketAddr,
    router: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move {
            let response = router.call(request.map(Body::new)).await;
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "http connection ended");
            }
        }
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
        }
    }
}
