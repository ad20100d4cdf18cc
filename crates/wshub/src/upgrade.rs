//! The HTTP side of a new connection: validate the upgrade request, apply the connection
//! limit, the origin check and the auth hook, answer 101, then hand the socket to its task.
//!
//! The upgrade is done here with hyper rather than axum's `ws` feature, so that the
//! protocol crate, the buffers and the task that owns the socket are ours (and tracked for
//! graceful shutdown).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use axum::{
    Json,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::{
    CloseCode, Connection, ConnectionInfo, Hub, Identity,
    connection::{RequestHeaders, Shared},
    deflate::{self, Agreed},
    driver::{ConnectionTask, Driver},
    guard,
    hub::{Admission, HubInner},
    outbound::SendQueue,
    transport::{Io, Transport},
    users::UserSlot,
};

/// The parts of an upgrade request the auth hook sees.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HandshakeRequest {
    /// The request URI (path and query, e.g. `/ws?token=...`).
    pub uri: Uri,
    /// The request headers.
    pub headers: HeaderMap,
    /// The peer's address, when the server provides it (the stand-alone
    /// [`Server`](crate::Server) always does; with axum, serve with
    /// `into_make_service_with_connect_info::<SocketAddr>()`).
    pub remote_addr: Option<SocketAddr>,
}

impl HandshakeRequest {
    /// The value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.uri.query()?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key)? == name).then(|| percent_decode(value))?
        })
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// An upgrade request refused before the upgrade, answered with an HTTP status and a JSON
/// body `{"error": "<code>", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    code: String,
    message: String,
}

impl Rejection {
    /// A rejection with any status and error code.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 401 `unauthorized`: missing or invalid credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`: valid credentials that do not permit this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "limit_exceeded", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable error code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (
            status,
            Json(serde_json::json!({"error": self.code, "message": self.message})),
        )
            .into_response();
        let headers = response.headers_mut();
        match status {
            // RFC 6455 §4.4: tell the client which version we speak.
            StatusCode::UPGRADE_REQUIRED => {
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The axum handler behind [`Hub::route`](crate::Hub::route).
pub(crate) async fn upgrade(hub: Hub, request: Request<Body>) -> Response {
    match accept(&hub, request).await {
        Ok(response) => response,
        Err(rejection) => {
            let counters = &hub.inner.counters;
            let counter = match rejection.status {
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                    &counters.rejected_unavailable
                }
                StatusCode::FORBIDDEN => &counters.rejected_forbidden,
                StatusCode::UNAUTHORIZED => &counters.rejected_unauthorized,
                _ => &counters.rejected_bad_request,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(status = %rejection.status, code = %rejection.code, message = %rejection.message, "upgrade rejected");
            rejection.into_response()
        }
    }
}

async fn accept(hub: &Hub, mut request: Request<Body>) -> Result<Response, Rejection> {
    let accept_key = validate(&request)?;
    let inner = &hub.inner;
    if inner.refuses_connections() {
        return Err(Rejection::unavailable("the server is shutting down"));
    }
    let admission = inner
        .admit()
        .ok_or_else(|| Rejection::unavailable("connection limit reached"))?;

    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin
            .to_str()
            .map_err(|_| Rejection::forbidden("origin not allowed"))?;
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !inner.config.host_allowed(host) {
            return Err(Rejection::forbidden("host not allowed"));
        }
        if !inner.config.origin_policy.allows(origin, host) {
            return Err(Rejection::forbidden("origin not allowed"));
        }
    }

    let remote_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let identity = match &inner.auth {
        None => None,
        Some(auth) => {
            let handshake = HandshakeRequest {
                uri: request.uri().clone(),
                headers: request.headers().clone(),
                remote_addr,
            };
            match tokio::time::timeout(inner.config.handshake_timeout, auth(handshake)).await {
                Ok(Ok(identity)) => Some(identity),
                Ok(Err(rejection)) => return Err(rejection),
                Err(_) => {
                    return Err(Rejection::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "internal",
                        "authentication timed out",
                    ));
                }
            }
        }
    };

    let user_slot = match identity.as_ref().map(Identity::user) {
        Some(user) if !user.is_empty() => Some(UserSlot::take(inner, user).ok_or_else(|| {
            Rejection::new(
                StatusCode::TOO_MANY_REQUESTS,
                "limit_exceeded",
                format!(
                    "this user already has {} connections, the most allowed",
                    inner.config.max_connections_per_user
                ),
            )
        })?),
        _ => None,
    };

    let deflate = inner.config.compression.as_ref().and_then(|config| {
        let offers = request
            .headers()
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|value| value.to_str().ok());
        deflate::negotiate(config, offers)
    });
    let on_upgrade = hyper::upgrade::on(&mut request);
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|agent| truncated(agent, MAX_USER_AGENT_BYTES).to_owned());
    let headers = if inner.config.keep_headers {
        RequestHeaders::new(request.headers())
    } else {
        RequestHeaders::default()
    };
    let pending = PendingConnection {
        hub: hub.clone(),
        admission,
        remote_addr,
        user_agent,
        headers,
        identity,
        user_slot,
        deflate: deflate.as_ref().map(|(agreed, _)| *agreed),
    };
    let timeout = inner.config.handshake_timeout;
    inner.tasks.spawn(async move {
        match tokio::time::timeout(timeout, on_upgrade).await {
            Ok(Ok(upgraded)) => pending.start(Io::from_upgraded(upgraded)),
            Ok(Err(error)) => tracing::debug!(%error, "upgrade failed"),
            Err(_) => tracing::debug!("upgrade timed out"),
        }
    });

    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(header::CONNECTION, HeaderValue::from_static("upgrade"))
        .header(header::SEC_WEBSOCKET_ACCEPT, accept_key);
    if let Some((_, extension)) = deflate {
        response = response.header(header::SEC_WEBSOCKET_EXTENSIONS, extension);
    }
    Ok(response.body(Body::empty()).unwrap_or_default())
}

/// Checks an upgrade request (RFC 6455 §4.2.1) and computes its `Sec-WebSocket-Accept`.
/// The longest `User-Agent` a connection keeps; a longer one is cut, so that it cannot
/// make each connection cost hundreds of kilobytes.
const MAX_USER_AGENT_BYTES: usize = 256;

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn validate(request: &Request<Body>) -> Result<HeaderValue, Rejection> {
    if request.method() != Method::GET {
        return Err(Rejection::bad_request("a WebSocket upgrade must be a GET"));
    }
    if request.version() < Version::HTTP_11 {
        return Err(Rejection::bad_request("a WebSocket upgrade needs HTTP/1.1"));
    }
    let headers = request.headers();
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Rejection::bad_request(
            "not a WebSocket upgrade request (Connection: Upgrade and Upgrade: websocket expected)",
        ));
    }
    match headers.get(header::SEC_WEBSOCKET_VERSION) {
        None => {
            return Err(Rejection::bad_request("missing Sec-WebSocket-Version"));
        }
        Some(v) if v.as_bytes() != b"13" => {
            return Err(Rejection::new(
                StatusCode::UPGRADE_REQUIRED,
                "bad_request",
                "unsupported Sec-WebSocket-Version; this server speaks 13",
            ));
        }
        Some(_) => {}
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| Rejection::bad_request("missing Sec-WebSocket-Key"))?;
    let decoded = BASE64.decode(key.as_bytes()).unwrap_or_default();
    if decoded.len() != 16 {
        return Err(Rejection::bad_request("malformed Sec-WebSocket-Key"));
    }
    Ok(accept_key(key.as_bytes()))
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `Sec-WebSocket-Accept`: base64(SHA-1(key + GUID)), RFC 6455 §4.2.2.
fn accept_key(key: &[u8]) -> HeaderValue {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let encoded = BASE64.encode(sha.digest().bytes());
    // Base64 output is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// An accepted upgrade waiting for hyper to hand over the socket.
struct PendingConnection {
    hub: Hub,
    admission: Admission,
    remote_addr: Option<SocketAddr>,
    user_agent: Option<String>,
    headers: RequestHeaders,
    identity: Option<Identity>,
    /// The slot under the per-user cap, for a connection the auth hook named a user for.
    user_slot: Option<UserSlot>,
    /// What permessage-deflate negotiation agreed, if it was offered and is on.
    deflate: Option<Agreed>,
}

impl PendingConnection {
    /// Registers the upgraded connection and spawns its task; returns at once.
    fn start(self, io: Io) {
        let inner: &Arc<HubInner> = &self.hub.inner;
        let config = &inner.config;
        if let Some(tcp) = io.tcp() {
            tune_socket(
                tcp,
                config.socket_recv_buffer_bytes,
                config.socket_send_buffer_bytes,
            );
        }
        let remote_addr = self
            .remote_addr
            .or_else(|| io.tcp().and_then(|s| s.peer_addr().ok()));
        let (inbox_tx, inbox_rx) = match inner.handler {
            Some(_) => {
                let (tx, rx) = tokio::sync::mpsc::channel(config.inbox_capacity.max(1));
                (Some(tx), Some(Box::new(tokio::sync::Mutex::new(rx))))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            info: ConnectionInfo {
                id: inner.next_id(),
                remote_addr,
                connected_at: SystemTime::now(),
                started: Instant::now(),
                user_agent: self.user_agent,
                headers: self.headers,
                identity: self.identity,
                compressed: self.deflate.is_some(),
            },
            queue: SendQueue::new(
                config.send_queue_capacity,
                config.send_queue_max_bytes,
                config.overflow_policy,
            ),
            rooms: Mutex::new(Vec::new()),
            gone: std::sync::atomic::AtomicBool::new(false),
            user: Mutex::new(None),
            inbox: inbox_rx,
            hub: self.hub.clone(),
        });
        let conn = Connection {
            shared: Arc::clone(&shared),
        };
        let span = tracing::debug_span!("conn", conn_id = %conn.id(), peer = ?remote_addr);
        let _entered = span.enter();
        if inner.register(&shared) {
            if let Some(slot) = self.user_slot {
                slot.attach(&shared);
            }
        } else {
            // Shutdown began between the 101 and now: say so and leave.
            conn.close(CloseCode::GOING_AWAY, "server shutting down");
        }
        tracing::debug!("connected");
        if let Some(on_connect) = &inner.callbacks.on_connect {
            guard::call("on_connect", &conn, || on_connect(&conn));
        }
        if let Some(handler) = &inner.handler {
            let handler_conn = conn.clone();
            guard::call("the connection's handler", &conn, || {
                let fut = handler(handler_conn.clone());
                inner
                    .tasks
                    .spawn(guard::Handler::new(fut, handler_conn).in_current_span());
            });
        }
        let mut transport = Transport::server(io, config.max_message_bytes);
        if let (Some(agreed), Some(compression)) = (self.deflate, &config.compression) {
            transport = transport.with_deflate(agreed, compression);
        }
        let driver = Driver::new(conn, Arc::clone(inner), transport, inbox_tx);
        // The connection's task holds only the driver and what its end needs: a
        // hand-written future, a fraction of the size of an `async` block's state machine.
        inner.tasks.spawn(
            ConnectionTask {
                driver,
                admission: Some(self.admission),
            }
            .instrument(span.clone()),
        );
    }
}

fn tune_socket(stream: &TcpStream, recv: Option<usize>, send: Option<usize>) {
    // Real-time messages should leave at once; batching is done by the send queue.
    let _ = stream.set_nodelay(true);
    let socket = socket2::SockRef::from(stream);
    if let Some(bytes) = recv
        && let Err(error) = socket.set_recv_buffer_size(bytes)
    {
        tracing::warn!(%error, "cannot set SO_RCVBUF");
    }
    if let Some(bytes) = send
        && let Err(error) = socket.set_send_buffer_size(bytes)
    {
        tracing::warn!(%error, "cannot set SO_SNDBUF");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn query_params_and_bearer_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def"),
        );
        let request = HandshakeRequest {
            uri: "/ws?room=a%20b&token=x%2By".parse().expect("uri"),
            headers,
            remote_addr: None,
        };
        assert_eq!(request.query_param("token").as_deref(), Some("x+y"));
        assert_eq!(request.query_param("room").as_deref(), Some("a b"));
        assert_eq!(request.query_param("missing"), None);
        assert_eq!(request.bearer_token(), Some("abc.def"));
    }
}
