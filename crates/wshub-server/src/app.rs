//! The server assembled: the hub with its auth hook and protocol handler, the HTTP routes
//! around it, and the background sweep of expired history.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::header,
    response::{Html, IntoResponse, Response},
    routing::get,
};
use wshub::{Hub, Identity, Rejection, Server};
use wshub_protocol::RoomName;

use crate::{
    api::{self, Api},
    assets, metrics, session,
    state::{ServerOptions, ServerState},
};

/// How often expired history is dropped.
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
}

/// Builds the server from its options.
pub fn build(mut options: ServerOptions) -> App {
    // A subscribe with recovery queues its whole replay at once: the send queue must hold
    // a full history with room to spare, or a recovering client would be cut off as slow.
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
            // The connection has left its rooms; tell their members.
            for room in conn.rooms() {
                if let Ok(room) = RoomName::parse(&room) {
                    leave_state.presence_event(conn.hub(), &room, conn, false);
                }
            }
        })
        .handler(move |conn| session::run(Arc::clone(&session_state), conn))
        .build();

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
            .route("/healthz", get(|| async { "ok" }))
            .route("/stats", get(stats))
            .route("/metrics", get(metrics_text))
            .route("/websocket", get(move || async move { Html(demo_page) }))
            .route("/client.js", get(client_js))
            .with_state(api),
    );
    App { hub, state, router }
}

/// Escapes text for an HTML attribute value.
fn html_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn client_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        assets::CLIENT_JS,
    )
        .into_response()
}

async fn stats(State(api): State<Api>) -> Response {
    let stats = api.hub.stats();
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
        "history_rooms": api.state.history.room_count(),
        "uptime": api.state.started.elapsed().as_secs(),
    }))
    .into_response()
}

async fn metrics_text(State(api): State<Api>) -> Response {
    let body = metrics::render(
        &api.hub.stats(),
        &api.state.counters,
        api.state.history.room_count(),
        api.state.started.elapsed(),
    );
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

    /// Stops accepting and closes every connection with 1001 within `deadline`.
    pub async fn stop(&self, deadline: Duration) {
        self.sweeper.abort();
        self.server.stop(deadline).await;
    }
}

/// Builds the server and serves it on `addr`.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    options: ServerOptions,
    addr: SocketAddr,
) -> Result<RunningServer, wshub::Error> {
    let App { hub, state, router } = build(options);
    let server = Server::start_with_router(addr, hub, router).await?;
    let sweep_state = Arc::clone(&state);
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HISTORY_SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            sweep_state.history.sweep();
        }
    });
    Ok(RunningServer {
        server,
        state,
        sweeper,
    })
}
