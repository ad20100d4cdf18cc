//! Shared setup for the server's tests: a real server on 127.0.0.1:0, clients that are not
//! our code (tokio-tungstenite), JSON helpers and a minimal HTTP client.
#![allow(dead_code, unreachable_pub)]

use std::{future::Future, net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message as WsMessage, client::IntoClientRequest},
};
use wshub_server::{
    app::{RunningServer, serve},
    state::ServerOptions,
};

pub mod own_server;

pub const STEP: Duration = Duration::from_secs(10);

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The variable that turns a backplane test skipped for want of its server into a failure.
/// CI sets it (`.ci/run`), so a cluster test never passes there by running nothing.
pub const REQUIRE_BACKPLANES: &str = "WSHUB_REQUIRE_BACKPLANES";

/// Whether [`REQUIRE_BACKPLANES`] is set (to anything but empty or `0`).
pub fn backplanes_required() -> bool {
    std::env::var_os(REQUIRE_BACKPLANES).is_some_and(|value| !value.is_empty() && value != "0")
}

/// A test that cannot run because its backplane server (redis-server, nats-server) is not
/// installed: said loudly on stderr for a developer without it, or a failure with the same
/// message when [`REQUIRE_BACKPLANES`] is set.
pub fn skipped(message: &str) {
    assert!(
        !backplanes_required(),
        "{message} ({REQUIRE_BACKPLANES} is set)"
    );
    eprintln!("{message}");
}

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

pub async fn start(options: ServerOptions) -> RunningServer {
    serve(options, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve")
}

pub async fn stop(server: RunningServer) {
    within("stop", server.stop(Duration::from_millis(300))).await;
}

/// Connects to `/ws` with an optional query string; returns the HTTP status on rejection.
pub async fn try_connect(
    addr: SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Client, u16> {
    let mut request = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    match within("connect", connect_async(request)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("connect failed: {other}"),
    }
}

/// Connects and reads the welcome frame; returns the client and its connection id.
pub async fn connect(addr: SocketAddr) -> (Client, String) {
    connect_query(addr, "").await
}

pub async fn connect_query(addr: SocketAddr, query: &str) -> (Client, String) {
    let mut ws = try_connect(addr, query, &[]).await.expect("connect");
    let welcome = next(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let id = welcome["client"].as_str().expect("client id").to_owned();
    (ws, id)
}

pub async fn send(ws: &mut Client, frame: Value) {
    within("send", ws.send(WsMessage::text(frame.to_string())))
        .await
        .expect("send");
}

pub async fn send_raw(ws: &mut Client, text: &str) {
    within("send", ws.send(WsMessage::text(text.to_owned())))
        .await
        .expect("send");
}

/// The next JSON frame (control frames skipped).
pub async fn next(ws: &mut Client) -> Value {
    loop {
        match within("next frame", ws.next()).await {
            Some(Ok(WsMessage::Text(text))) => {
                return serde_json::from_str(&text).expect("JSON frame");
            }
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// Sends a command and returns the next frame (its reply, when nothing else is pending).
pub async fn request(ws: &mut Client, frame: Value) -> Value {
    send(ws, frame).await;
    next(ws).await
}

/// Asserts that nothing arrives for a short while: sends a ping and expects its pong next.
pub async fn nothing_pending(ws: &mut Client) {
    let reply = request(ws, json!({"type": "ping", "id": "sync"})).await;
    assert_eq!(
        reply,
        json!({"type": "pong", "id": "sync"}),
        "something else was pending"
    );
}

/// Reads until the close frame and returns its code and reason.
pub async fn close_frame(ws: &mut Client) -> Option<(u16, String)> {
    loop {
        match within("close", ws.next()).await {
            Some(Ok(WsMessage::Close(frame))) => {
                // Keep polling so tungstenite sends its reply and the handshake completes.
                while let Some(Ok(_)) = within("close reply", ws.next()).await {}
                return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before close: {e}"),
            None => return None,
        }
    }
}

/// A minimal HTTP/1.1 client: returns the status and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = within("tcp", TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    within("write", stream.write_all(head.as_bytes()))
        .await
        .expect("write");
    let mut response = String::new();
    within("read", stream.read_to_string(&mut response))
        .await
        .expect("read");
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, decode_chunked(&body))
}

/// Undoes chunked transfer encoding when the body uses it.
fn decode_chunked(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if size == 0 {
            return out;
        }
        let Some(chunk) = after.get(..size) else {
            return body.to_owned();
        };
        out.push_str(chunk);
        rest = after.get(size + 2..).unwrap_or("");
    }
}

/// `POST` a JSON body to the API with this key.
pub async fn api(addr: SocketAddr, key: &str, path: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let (status, text) = http(
        addr,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(&body.to_string()),
    )
    .await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `GET` from the API with this key.
pub async fn api_get(addr: SocketAddr, key: &str, path: &str) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let (status, text) = http(addr, "GET", path, &[("Authorization", &auth)], None).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// An HS256 token for these claims.
pub fn token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Polls `/healthz` of `addr` until its body starts with `prefix` (bounded).
pub async fn wait_health(addr: SocketAddr, prefix: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http(addr, "GET", "/healthz", &[], None).await;
        if body.starts_with(prefix) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{addr}: /healthz still says {body:?}, waiting for {prefix:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
