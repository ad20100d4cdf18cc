//! The server assembled: the hub with its auth hook and protocol handler, the backplane and
//! the task delivering what it brings from other nodes, the HTTP routes around them, and the
//! background sweep of expired history.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use wshub::{Hub, Identity, Rejection, Server};
use wshub_protocol::RoomName;

use wshub_backplane::{
    Backplane, BackplaneConfig, Health, MemoryBackplane, MemoryConfig, NatsBackplane,
    RedisBackplane,
};

use crate::{
    api::{self, Api},
    assets, metrics, session,
    state::{BackplaneOptions, ServerOptions, ServerState},
};

/// How often expired history, and addresses whose command bucket has refilled, are
/// dropped.
const HISTORY_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The server's parts, before it listens anywhere.
#[derive(Debug)]
pub struct App {
    /// The hub of WebSocket connections.
    pub hub: Hub,
    /// History, tokens, options and counters.
    pub state: Arc<ServerState>,
    /// Every route: the WebSocket endpoint, the HTTP API, stats, metrics, the demo page.
    pub router: Router,
    /// The task delivering what other nodes send.
    pump: Option<tokio::task::JoinHandle<()>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen: {0}")]
    Listen(#[from] wshub::Error),
    /// The backplane could not be reached or configured.
    #[error("{0}")]
    Backplane(#[from] wshub_backplane::Error),
    /// The hub's overflow policy drops messages (`DropNewest`, `DropOldest`): the protocol
    /// promises every subscriber each offset once or an explicit report of what it lost,
    /// and a dropped message (or reply) would be lost silently. The server needs
    /// [`OverflowPolicy::Close`](wshub::OverflowPolicy::Close): a client that cannot keep
    /// up is closed with 1013, reconnects and recovers.
    #[error("the overflow policy {0:?} drops messages silently; the server needs Close")]
    LossyOverflowPolicy(wshub::OverflowPolicy),
}

/// Builds the server from its options, on the memory backplane (one node) whatever
/// `options.backplane` says; [`build_connected`] (or [`serve`]) connects the chosen one.
/// Call it inside a Tokio runtime.
///
/// # Errors
/// [`StartError::LossyOverflowPolicy`] for a hub overflow policy that drops messages.
pub fn build(options: ServerOptions) -> Result<App, StartError> {
    let (hub, state) = assemble(options)?;
    let backplane = Arc::new(MemoryBackplane::new(MemoryConfig {
        history: state.options.history,
        node_id: hub.node_id(),
    }));
    Ok(finish(hub, state, backplane))
}

/// Builds the server from its options and connects the backplane they choose.
///
/// # Errors
/// When the backplane cannot be reached, or is not available in this build;
/// [`StartError::LossyOverflowPolicy`] for a hub overflow policy that drops messages.
pub async fn build_connected(options: ServerOptions) -> Result<App, StartError> {
    let (hub, state) = assemble(options)?;
    let backplane: Arc<dyn Backplane> = match &state.options.backplane {
        BackplaneOptions::Memory => Arc::new(MemoryBackplane::new(MemoryConfig {
            history: state.options.history,
            node_id: hub.node_id(),
        })),
        BackplaneOptions::Redis { url, prefix } | BackplaneOptions::Nats { url, prefix } => {
            let config = BackplaneConfig {
                prefix: prefix.clone(),
                history: state.options.history,
                node_id: hub.node_id(),
                presence_ttl: state.options.presence_ttl,
                ..BackplaneConfig::new(url.clone())
            };
            if matches!(state.options.backplane, BackplaneOptions::Redis { .. }) {
                Arc::new(RedisBackplane::connect(config).await?)
            } else {
                Arc::new(NatsBackplane::connect(config).await?)
            }
        }
    };
    tracing::info!(backplane = backplane.kind(), node = %wshub_backplane::node_hex(hub.node_id()), "backplane connected");
    Ok(finish(hub, state, backplane))
}

/// The hub and the shared state, before the backplane is attached.
fn assemble(mut options: ServerOptions) -> Result<(Hub, Arc<ServerState>), StartError> {
    if options.hub.overflow_policy != wshub::OverflowPolicy::Close {
        return Err(StartError::LossyOverflowPolicy(options.hub.overflow_policy));
    }
    // A subscribe with recovery queues its replay at once: the send queue must hold as
    // many messages as a full history, with room to spare, or a recovering client would be
    // cut off as slow. Its bytes stay bounded as configured (4 MiB by default): a replay
    // is cut to half of them (the session gives up its oldest part, with
    // `recovered: false`), and a `history` reply to `MAX_HISTORY_REPLY_BYTES`.
    let replay_room = options
        .history
        .max_messages
        .saturating_mul(2)
        .saturating_add(64);
    options.hub.send_queue_capacity = options.hub.send_queue_capacity.max(replay_room);
    let state = ServerState::new(options);

    let mut builder = Hub::builder().config(state.options.hub.clone());
    if state.verifier.is_some() {
        let auth_state = Arc::clone(&state);
        builder = builder.auth(move |request| {
            let state = Arc::clone(&auth_state);
            async move {
                let Some(verifier) = &state.verifier else {
                    return Err(Rejection::unauthorized("no verifier"));
                };
                let header = request
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let query = request.query_param("token");
                match verifier.verify_request(header, query.as_deref()) {
                    Ok(claims) => Ok(Identity::new(claims.sub.clone()).with_data(claims)),
                    Err(error) => Err(Rejection::unauthorized(error.to_string())),
                }
            }
        });
    }
    let leave_state = Arc::clone(&state);
    let session_state = Arc::clone(&state);
    let hub = builder
        .on_disconnect(move |conn, _| {
            // The connection has left its rooms; tell their members, here and on the other
            // nodes, and drop it from the backplane's presence.
            for room in conn.rooms() {
                if let Ok(room) = RoomName::parse(&room) {
                    leave_state.presence_event(conn.hub(), &room, conn, false);
                    let (state, conn) = (Arc::clone(&leave_state), conn.clone());
                    tokio::spawn(async move { state.leave_backplane(&room, &conn).await });
                }
            }
        })
        .handler(move |conn| session::run(Arc::clone(&session_state), conn))
        .build();
    Ok((hub, state))
}

/// Attaches the backplane, starts delivering its events, and adds the routes.
fn finish(hub: Hub, state: Arc<ServerState>, backplane: Arc<dyn Backplane>) -> App {
    let events = backplane.take_events();
    state.attach(backplane);
    let pump = match (events, tokio::runtime::Handle::try_current()) {
        (Some(events), Ok(runtime)) => {
            Some(runtime.spawn(Arc::clone(&state).pump(hub.clone(), events)))
        }
        (None, _) => {
            tracing::error!("the backplane's events were already taken");
            None
        }
        (_, Err(_)) => {
            tracing::error!("built outside a Tokio runtime: nothing from other nodes is delivered");
            None
        }
    };

    let api = Api {
        hub: hub.clone(),
        state: Arc::clone(&state),
    };
    // The demo page connects to the configured WebSocket path, named in its meta tag.
    let meta = format!(
        r#"<meta name="wshub-path" content="{}">"#,
        html_attribute(&state.options.hub.path)
    );
    let demo_page = bytes::Bytes::from(assets::DEMO_HTML.replace(assets::DEMO_PATH_META, &meta));
    let router = hub.router().merge(api::routes(api.clone())).merge(
        Router::new()
            .route("/healthz", get(healthz))
            .route("/stats", get(stats))
            .route("/metrics", get(metrics_text))
            .route("/websocket", get(move || async move { Html(demo_page) }))
            .route("/client.js", get(|| javascript(assets::CLIENT_JS)))
            .route("/websocket.js", get(|| javascript(assets::WEBSOCKET_JS)))
            .with_state(api),
    );
    App {
        hub,
        state,
        router,
        pump,
    }
}

/// `ok`, or `degraded: backplane unreachable` when it is (still 200: the node keeps
/// serving its own connections). Why it is unreachable is in the logs, not here: the
/// backplane's errors can name hosts and credentials. 503 `draining` once a drain or
/// shutdown has begun, so that a load balancer sends no one new.
async fn healthz(State(api): State<Api>) -> Response {
    if api.hub.is_draining() || api.hub.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    match api.state.backplane_health() {
        Health::Connected => "ok".into_response(),
        Health::Degraded(_) => "degraded: backplane unreachable".into_response(),
    }
}

/// Escapes text for an HTML attribute value.
fn html_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A module script: browsers run it only with a JavaScript MIME type.
async fn javascript(source: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        source,
    )
        .into_response()
}

/// Rooms with history state on this node (the memory backplane), or rooms this node follows
/// (a shared backplane keeps the history elsewhere).
fn history_rooms(state: &ServerState) -> usize {
    state
        .backplane()
        .local_rooms()
        .unwrap_or_else(|| state.rooms.len())
}

async fn stats(State(api): State<Api>) -> Response {
    let stats = api.hub.stats();
    let health = api.state.backplane_health();
    axum::Json(serde_json::json!({
        "clients": stats.connections,
        "rooms": stats.rooms,
        "messages_in": stats.messages_in,
        "messages_out": stats.messages_out,
        "bytes_in": stats.bytes_in,
        "bytes_out": stats.bytes_out,
        "dropped": stats.dropped_messages,
        "slow_consumer_disconnects": stats.slow_consumer_disconnects,
        "total_connections": stats.total_connections,
        "rejected_handshakes": stats.rejected_handshakes,
        "address_connections_refused": api.state.counters.address_refused(),
        "addresses": api.state.addresses.len(),
        "http_connections": stats.http_connections,
        "refused_http_connections": stats.refused_http_connections,
        "history_rooms": history_rooms(&api.state),
        "history_bytes": api.state.backplane().history_usage().map(|usage| usage.bytes),
        "history_evicted": api.state.backplane().history_usage().map(|usage| usage.evicted),
        "history_rooms_evicted": api.state.backplane().history_usage().map(|usage| usage.rooms_evicted),
        "backplane": api.state.backplane().kind(),
        "backplane_connected": health.is_connected(),
        "uptime": api.state.started.elapsed().as_secs(),
    }))
    .into_response()
}

async fn metrics_text(State(api): State<Api>) -> Response {
    let mut body = metrics::render(
        &api.hub.stats(),
        &api.state.counters,
        history_rooms(&api.state),
        api.state.started.elapsed(),
    );
    body.push_str(&format!(
        "# HELP wshub_addresses Client IP addresses remembered for their connection count and command bucket.\n\
         # TYPE wshub_addresses gauge\n\
         wshub_addresses {}\n",
        api.state.addresses.len()
    ));
    if let Some(usage) = api.state.backplane().history_usage() {
        body.push_str(&format!(
            "# HELP wshub_history_bytes Bytes of history retained by this node (bounded by --history-max-bytes).\n\
             # TYPE wshub_history_bytes gauge\n\
             wshub_history_bytes {}\n\
             # HELP wshub_history_evicted_total Messages dropped from history to keep within --history-max-bytes.\n\
             # TYPE wshub_history_evicted_total counter\n\
             wshub_history_evicted_total {}\n\
             # HELP wshub_history_rooms_evicted_total Rooms forgotten, messages and all, to keep within --max-rooms.\n\
             # TYPE wshub_history_rooms_evicted_total counter\n\
             wshub_history_rooms_evicted_total {}\n",
            usage.bytes, usage.evicted, usage.rooms_evicted
        ));
    }
    let up = u8::from(api.state.backplane_health().is_connected());
    body.push_str(&format!(
        "# HELP wshub_backplane_up Whether the backplane is reachable (1) or the node is degraded (0).\n\
         # TYPE wshub_backplane_up gauge\n\
         wshub_backplane_up{{backplane=\"{}\"}} {up}\n",
        api.state.backplane().kind()
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// A server listening on an address.
#[derive(Debug)]
pub struct RunningServer {
    server: Server,
    state: Arc<ServerState>,
    sweeper: tokio::task::JoinHandle<()>,
    pump: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        self.server.hub()
    }

    /// History, options and counters.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Reads the TLS certificate chain and key files again (`--tls-cert`, `--tls-key`)
    /// and serves connections accepted from now on with them; open connections keep
    /// theirs. `Ok(false)` when the server does not serve TLS. On an error (a file missing,
    /// unparsable, or a key that does not fit) the current certificate stays; the error is
    /// logged and returned. SIGHUP calls this in the `wshub` binary
    /// ([`RunningServer::reload_tls_on_sighup`]).
    ///
    /// # Errors
    /// [`wshub::Error::Tls`] naming the file and what is wrong with it.
    pub fn reload_tls(&self) -> Result<bool, wshub::Error> {
        match &self.state.options.tls {
            Some(tls) => reload_tls(tls).map(|()| true),
            None => Ok(false),
        }
    }

    /// Calls [`RunningServer::reload_tls`] on every SIGHUP the process receives, from a
    /// task of its own. A server without TLS installs no handler: SIGHUP keeps its default
    /// effect.
    ///
    /// # Errors
    /// When the signal handler cannot be installed.
    #[cfg(unix)]
    pub fn reload_tls_on_sighup(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let Some(tls) = self.state.options.tls.clone() else {
            return Ok(());
        };
        let mut hangups = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the TLS certificate");
                // Logged inside; the old certificate stays on an error.
                let _ = reload_tls(&tls);
            }
        });
        Ok(())
    }

    /// Drains the node ([`Hub::drain`] over `--drain-window`): `/healthz` answers 503
    /// `draining`, new upgrades get 503, and each connection is closed with 1012 at its own
    /// random moment within the window. Returns when the last connection has ended or the
    /// window plus [`wshub::DRAIN_GRACE`] has passed; [`RunningServer::stop`] then ends the
    /// rest. Calling it while a drain runs (`POST /api/drain`) waits for that drain.
    pub async fn drain(&self) {
        self.hub().drain(self.state.options.drain_window).await;
    }

    /// Resolves when `POST /api/drain` has started a drain (at once if one was started
    /// before the call).
    pub async fn drain_requested(&self) {
        self.state.drain_requested.notified().await;
    }

    /// Stops accepting and closes every connection with 1001 within `deadline`.
    pub async fn stop(&self, deadline: Duration) {
        self.sweeper.abort();
        self.server.stop(deadline).await;
        if let Some(pump) = &self.pump {
            pump.abort();
        }
    }
}

/// Reloads `tls` from its files, logging the outcome.
fn reload_tls(tls: &wshub::TlsConfig) -> Result<(), wshub::Error> {
    match tls.reload() {
        Ok(()) => {
            tracing::info!("TLS certificate reloaded; new connections get it");
            Ok(())
        }
        Err(error) => {
            tracing::error!(%error, "TLS certificate not reloaded; the current one stays");
            Err(error)
        }
    }
}

/// Builds the server, connects its backplane and serves it on `addr`.
///
/// # Errors
/// When the backplane cannot be reached or the address cannot be bound.
pub async fn serve(options: ServerOptions, addr: SocketAddr) -> Result<RunningServer, StartError> {
    let tls = options.tls.clone();
    let App {
        hub,
        state,
        router,
        pump,
    } = build_connected(options).await?;
    let server = match tls {
        Some(tls) => Server::start_tls(addr, hub, router, tls).await?,
        None => Server::start_with_router(addr, hub, router).await?,
    };
    let sweep_state = Arc::clone(&state);
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HISTORY_SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            sweep_state.backplane().sweep();
            sweep_state.addresses.sweep(std::time::Instant::now());
        }
    });
    Ok(RunningServer {
        server,
        state,
        sweeper,
        pump,
    })
}
