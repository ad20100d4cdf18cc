//! The examples, run as the programs a user starts (`cargo test` builds every example next
//! to this test): chat, echo, notifications, live, monitor and game.

mod support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A running example, killed when dropped.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `target/<profile>/examples/<name> 127.0.0.1:0 <args>` and reads the address it
/// prints.
fn start_example(name: &str, args: &[&str]) -> (Example, SocketAddr) {
    let mut path: PathBuf = std::env::current_exe().expect("test path");
    path.pop(); // deps
    path.pop(); // profile dir
    path.push("examples");
    path.push(name);
    let mut child = Command::new(&path)
        .arg("127.0.0.1:0")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
    let stdout = child.stdout.take().expect("stdout");
    let example = Example(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .split_whitespace()
        .find_map(|word| {
            let word = word
                .trim_start_matches("http://")
                .trim_start_matches("ws://");
            word.trim_end_matches('/').parse::<SocketAddr>().ok()
        })
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (example, addr)
}

#[tokio::test]
async fn chat_sends_every_text_message_to_everyone_and_serves_a_page() {
    let (_chat, addr) = start_example("chat", &[]);
    let mut alice = connect(addr).await;
    let mut bob = connect(addr).await;
    send_text(&mut alice, "hello from alice").await;
    assert_eq!(next_text(&mut alice).await, "hello from alice");
    assert_eq!(next_text(&mut bob).await, "hello from alice");
    send_text(&mut bob, "hi alice").await;
    assert_eq!(next_text(&mut alice).await, "hi alice");
    assert_eq!(next_text(&mut bob).await, "hi alice");

    let mut http = tokio::net::TcpStream::connect(addr).await.expect("connect");
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut page = String::new();
    within("page", http.read_to_string(&mut page))
        .await
        .expect("read");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("new WebSocket("),
        "the page opens a WebSocket"
    );
}

#[tokio::test]
async fn echo_returns_text_and_binary_on_any_path() {
    let (_echo, addr) = start_example("echo", &[]);
    let mut ws = connect_with_headers(addr, "/any/path", &[])
        .await
        .expect("connect");
    send_text(&mut ws, "ping?").await;
    assert_eq!(next_text(&mut ws).await, "ping?");
    within("send", ws.send(WsMessage::binary(vec![0_u8, 1, 2, 255])))
        .await
        .expect("send");
    match within("binary", ws.next()).await {
        Some(Ok(WsMessage::Binary(b))) => assert_eq!(&b[..], [0, 1, 2, 255]),
        other => panic!("expected binary, got {other:?}"),
    }
    // A large message comes back whole.
    let big = "z".repeat(3 * 1024 * 1024);
    send_text(&mut ws, big.clone()).await;
    assert_eq!(next_text(&mut ws).await, big);
}

/// Sends a raw HTTP/1.1 request (with `Connection: close`) and returns the whole response.
async fn http(addr: SocketAddr, method: &str, path: &str, json_body: Option<&str>) -> String {
    let mut stream = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let body = json_body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    within("write", stream.write_all(request.as_bytes()))
        .await
        .expect("write");
    let mut response = String::new();
    within("response", stream.read_to_string(&mut response))
        .await
        .expect("read");
    response
}

/// Asserts that `path` serves an HTML page that opens a WebSocket.
async fn assert_serves_page(addr: SocketAddr, path: &str) {
    let page = http(addr, "GET", path, None).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{path}: {page}");
    assert!(page.contains("<!doctype html>"), "{path} is a page");
    assert!(
        page.contains("new WebSocket(") || page.contains("new WebSocketClient("),
        "{path} opens a WebSocket"
    );
}

/// Asserts that the example serves the browser's plain WebSocket client its page imports.
async fn assert_serves_the_js_client(addr: SocketAddr) {
    let script = http(addr, "GET", "/websocket.js", None).await;
    assert!(script.starts_with("HTTP/1.1 200"), "{script}");
    assert!(
        script
            .to_ascii_lowercase()
            .contains("content-type: text/javascript"),
        "a module script needs a JavaScript type: {script}"
    );
    assert!(script.contains("export class WebSocketClient"));
}

/// The next text message parsed as JSON.
async fn next_json(ws: &mut Client) -> serde_json::Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The next JSON message whose `type` is `kind`, skipping others (at most 50).
async fn next_of_type(ws: &mut Client, kind: &str) -> serde_json::Value {
    for _ in 0..50 {
        let value = next_json(ws).await;
        if value["type"] == kind {
            return value;
        }
    }
    panic!("no {kind} message in 50");
}

#[tokio::test]
async fn chat_names_users_announces_them_and_keeps_rooms_apart() {
    let (_chat, addr) = start_example("chat", &[]);
    let path = |user: &str, room: &str| format!("/ws?username={user}&room={room}");
    let mut alice = connect_with_headers(addr, &path("alice", "rust"), &[])
        .await
        .expect("alice");
    assert_eq!(next_text(&mut alice).await, "alice joined");
    let mut carol = connect_with_headers(addr, &path("carol", "go"), &[])
        .await
        .expect("carol");
    assert_eq!(next_text(&mut carol).await, "carol joined");
    let mut bob = connect_with_headers(addr, &path("bob", "rust"), &[])
        .await
        .expect("bob");
    assert_eq!(next_text(&mut alice).await, "bob joined");
    assert_eq!(next_text(&mut bob).await, "bob joined");

    send_text(&mut bob, "hi").await;
    assert_eq!(next_text(&mut alice).await, "bob: hi");
    assert_eq!(next_text(&mut bob).await, "bob: hi");
    drop(bob);
    assert_eq!(next_text(&mut alice).await, "bob left");

    // carol, in another room, saw none of it: her next message is her own.
    send_text(&mut carol, "anyone?").await;
    assert_eq!(next_text(&mut carol).await, "carol: anyone?");

    let long = "x".repeat(33);
    assert_eq!(
        connect_with_headers(addr, &format!("/ws?username={long}"), &[])
            .await
            .err(),
        Some(400)
    );
    assert_serves_page(addr, "/").await;
    assert_serves_page(addr, "/websocket").await;
}

#[tokio::test]
async fn notifications_reach_one_users_connections_or_everyone() {
    let (_notifications, addr) = start_example("notifications", &[]);
    let mut alice_phone = connect_with_headers(addr, "/ws?user=alice", &[])
        .await
        .expect("alice 1");
    let mut alice_laptop = connect_with_headers(addr, "/ws?user=alice", &[])
        .await
        .expect("alice 2");
    let mut bob = connect_with_headers(addr, "/ws?user=bob", &[])
        .await
        .expect("bob");
    assert_eq!(
        connect_with_headers(addr, "/ws", &[]).await.err(),
        Some(401),
        "a connection needs a user"
    );

    // The WebSocket handshake can answer before the hub has registered the connection;
    // retry the first notification until both of alice's connections are counted.
    let mut response = String::new();
    for _ in 0..100 {
        response = http(
            addr,
            "POST",
            "/notify",
            Some(r#"{"user":"alice","title":"Build done","body":"main is green"}"#),
        )
        .await;
        if response.contains(r#"{"delivered":2}"#) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(response.contains(r#"{"delivered":2}"#), "{response}");
    for ws in [&mut alice_phone, &mut alice_laptop] {
        let n = next_of_type(ws, "notification").await;
        assert_eq!(n["title"], "Build done");
        assert_eq!(n["body"], "main is green");
        assert!(n["sent_at"].as_u64().is_some_and(|t| t > 1_600_000_000));
    }

    let response = http(addr, "POST", "/notify", Some(r#"{"title":"Maintenance"}"#)).await;
    assert!(response.contains(r#"{"delivered":3}"#), "{response}");
    for ws in [&mut alice_phone, &mut alice_laptop, &mut bob] {
        assert_eq!(
            next_of_type(ws, "notification").await["title"],
            "Maintenance"
        );
    }
    let bad = http(addr, "POST", "/notify", Some(r#"{"user":"alice"}"#)).await;
    assert!(bad.starts_with("HTTP/1.1 422"), "no title: {bad}");
    assert_serves_page(addr, "/").await;
    assert_serves_the_js_client(addr).await;
}

#[tokio::test]
async fn live_ticks_reach_only_the_subscribers_of_each_room() {
    let (_live, addr) = start_example("live", &["50"]);
    let mut btc = connect(addr).await;
    let mut eth = connect(addr).await;
    send_text(&mut btc, r#"{"subscribe":"BTC"}"#).await;
    send_text(&mut eth, r#"{"subscribe":"ETH"}"#).await;
    assert_eq!(next_json(&mut btc).await["type"], "subscribed");
    assert_eq!(next_json(&mut eth).await["type"], "subscribed");
    let mut last_seq = 0;
    for _ in 0..3 {
        let tick = next_of_type(&mut btc, "tick").await;
        assert_eq!(tick["symbol"], "BTC");
        assert!(tick["price"].as_f64().is_some_and(|p| p > 0.0), "{tick}");
        let seq = tick["seq"].as_u64().expect("seq");
        assert!(seq > last_seq, "ticks come in order");
        last_seq = seq;
        assert_eq!(next_of_type(&mut eth, "tick").await["symbol"], "ETH");
    }
    send_text(&mut btc, "subscribe me").await;
    assert_eq!(next_of_type(&mut btc, "error").await["type"], "error");
    assert_serves_page(addr, "/").await;
}

#[tokio::test]
async fn monitor_pushes_samples_of_the_machine_and_the_hub() {
    let (_monitor, addr) = start_example("monitor", &["50"]);
    let mut first = connect(addr).await;
    let history = next_json(&mut first).await;
    assert_eq!(history["type"], "history");
    assert!(history["samples"].is_array());
    let mut second = connect(addr).await;
    // Samples keep coming; within a bounded number, one counts both connections.
    let mut seen_both = false;
    for _ in 0..100 {
        let sample = next_of_type(&mut first, "sample").await;
        assert!(sample["messages_per_second"].as_f64().is_some(), "{sample}");
        if cfg!(target_os = "linux") {
            let cpu = sample["cpu_percent"].as_f64().expect("cpu on Linux");
            assert!((0.0..=100.0).contains(&cpu), "{sample}");
            let used = sample["memory_used_bytes"].as_u64().expect("memory");
            let total = sample["memory_total_bytes"].as_u64().expect("memory");
            assert!(0 < used && used <= total, "{sample}");
        }
        if sample["connections"] == 2 {
            seen_both = true;
            break;
        }
    }
    assert!(seen_both, "a sample counted both connections");
    assert_eq!(next_of_type(&mut second, "sample").await["type"], "sample");
    let page = http(addr, "GET", "/", None).await;
    assert!(page.contains("<canvas"), "the page draws a chart");
    assert!(!page.contains("<script src"), "without external scripts");
    assert_serves_the_js_client(addr).await;
}

#[tokio::test]
async fn game_rooms_share_moves_and_a_late_joiner_gets_the_board() {
    let (_game, addr) = start_example("game", &[]);
    let mut alice = connect(addr).await;
    send_text(&mut alice, r#"{"type":"move","cell":0}"#).await;
    assert_eq!(
        next_of_type(&mut alice, "error").await["message"],
        "join a room first"
    );
    send_text(&mut alice, r#"{"type":"join","room":"r1","name":"alice"}"#).await;
    let state = next_of_type(&mut alice, "state").await;
    assert_eq!(state["players"], serde_json::json!(["alice"]));
    send_text(&mut alice, r#"{"type":"move","cell":4}"#).await;
    let state = next_of_type(&mut alice, "state").await;
    assert_eq!(state["board"][4], "X");
    assert_eq!(state["next"], "O");

    // A player in another room sees nothing of r1.
    let mut carol = connect(addr).await;
    send_text(&mut carol, r#"{"type":"join","room":"r2","name":"carol"}"#).await;
    let state = next_of_type(&mut carol, "state").await;
    assert_eq!(state["board"][4], "");

    // bob joins late and gets the board as it stands.
    let mut bob = connect(addr).await;
    send_text(&mut bob, r#"{"type":"join","room":"r1","name":"bob"}"#).await;
    let state = next_of_type(&mut bob, "state").await;
    assert_eq!(state["board"][4], "X");
    assert_eq!(state["players"], serde_json::json!(["alice", "bob"]));
    assert_eq!(next_of_type(&mut alice, "state").await["players"][1], "bob");

    send_text(&mut bob, r#"{"type":"move","cell":4}"#).await;
    assert_eq!(
        next_of_type(&mut bob, "error").await["message"],
        "that cell is taken"
    );
    send_text(&mut bob, r#"{"type":"move","cell":0}"#).await;
    let state = next_of_type(&mut alice, "state").await;
    assert_eq!(state["board"][0], "O");
    assert_eq!(state["last"]["by"], "bob");

    drop(bob);
    let state = next_of_type(&mut alice, "state").await;
    assert_eq!(state["players"], serde_json::json!(["alice"]));
    send_text(&mut carol, r#"{"type":"move","cell":8}"#).await;
    assert_eq!(next_of_type(&mut carol, "state").await["board"][0], "");
    assert_serves_page(addr, "/").await;
}
