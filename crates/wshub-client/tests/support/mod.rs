//! Shared setup for the client's tests: the real wshub server in-process on 127.0.0.1
//! (port 0, or a given address to restart on the same port), its HTTP API through a
//! minimal HTTP client, scripted fake servers for what a real one never does (stay silent),
//! and `within`, which bounds every await.
#![allow(dead_code, unreachable_pub)]

use std::{future::Future, net::SocketAddr, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use wshub_client::{Event, Events, SubscriptionEvent, WshubEvent, WshubEvents};
use wshub_server::{
    app::{RunningServer, serve},
    state::ServerOptions,
};

/// The bound on any single step of a test.
pub const STEP: Duration = Duration::from_secs(10);
pub const API_KEY: &str = "test-key";

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

pub fn options() -> ServerOptions {
    ServerOptions {
        api_key: Some(API_KEY.to_owned()),
        rate_limit: None,
        ..ServerOptions::default()
    }
}

/// A wshub server on 127.0.0.1:0.
pub async fn start() -> RunningServer {
    start_on("127.0.0.1:0".parse().expect("addr")).await
}

/// A wshub server on `addr` (to restart one on the port it had). Retries briefly while the
/// port is still being released.
pub async fn start_on(addr: SocketAddr) -> RunningServer {
    for _ in 0..100 {
        match serve(options(), addr).await {
            Ok(server) => return server,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("could not bind {addr}");
}

pub async fn stop(server: RunningServer) {
    within("stop", server.stop(Duration::from_millis(300))).await;
}

pub fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// A minimal HTTP/1.1 client: returns the status and the body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = within("tcp", TcpStream::connect(addr))
        .await
        .expect("connect");
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
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

/// `POST` a JSON body to the API.
pub async fn api(addr: SocketAddr, path: &str, body: Value) -> Value {
    let (status, text) = http(addr, "POST", path, Some(&body.to_string())).await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).expect("JSON answer")
}

/// `GET` from the API.
pub async fn api_get(addr: SocketAddr, path: &str) -> Value {
    let (status, text) = http(addr, "GET", path, None).await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).expect("JSON answer")
}

/// Publishes `data` to `room` through the HTTP API; returns the answer.
pub async fn publish(addr: SocketAddr, room: &str, data: Value) -> Value {
    api(addr, "/api/publish", json!({"room": room, "data": data})).await
}

/// The connection ids in `room`, from the HTTP API.
pub async fn presence(addr: SocketAddr, room: &str) -> Vec<String> {
    let answer = api_get(addr, &format!("/api/rooms/{room}/presence")).await;
    answer["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| c["client"].as_str().expect("client").to_owned())
        .collect()
}

/// The next connection event matching `pred`, skipping the others (at most 1000).
pub async fn next_event(events: &mut Events, pred: impl Fn(&Event) -> bool) -> Event {
    for _ in 0..1000 {
        let event = within("connection event", events.recv())
            .await
            .expect("events ended");
        if pred(&event) {
            return event;
        }
    }
    panic!("no matching event in 1000");
}

/// The next client event matching `pred`, skipping the others (at most 1000).
pub async fn next_wshub_event(
    events: &mut WshubEvents,
    pred: impl Fn(&WshubEvent) -> bool,
) -> WshubEvent {
    for _ in 0..1000 {
        let event = within("client event", events.recv())
            .await
            .expect("events ended");
        if pred(&event) {
            return event;
        }
    }
    panic!("no matching event in 1000");
}

/// The next subscription event.
pub async fn next_in(sub: &mut wshub_client::Subscription) -> SubscriptionEvent {
    within("subscription event", sub.recv())
        .await
        .expect("subscription ended")
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A WebSocket server that accepts connections, sends `first` (if any) as a text frame, and
/// then never reads or writes again: a peer that went silent (no pong, no reply).
/// Returns its address and the number of connections accepted so far.
pub async fn silent_server(
    first: Option<&'static str>,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use futures_util::SinkExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            let Ok((_request, mut ws)) =
                tokio_websockets::ServerBuilder::new().accept(stream).await
            else {
                continue;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(first) = first {
                let _ = ws.send(tokio_websockets::Message::text(first)).await;
            }
            // Held, never polled: pings go unanswered.
            held.push(ws);
        }
    });
    (addr, accepted)
}

pub const WELCOME: &str =
    r#"{"type":"welcome","client":"fake","user":null,"ping_interval_ms":25000,"version":1}"#;
