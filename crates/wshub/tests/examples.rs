//! The examples, run as the programs a user starts: `examples/chat.rs` and
//! `examples/echo.rs` (which `cargo test` builds next to this test).

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

/// Starts `target/<profile>/examples/<name> 127.0.0.1:0` and reads the address it prints.
fn start_example(name: &str) -> (Example, SocketAddr) {
    let mut path: PathBuf = std::env::current_exe().expect("test path");
    path.pop(); // deps
    path.pop(); // profile dir
    path.push("examples");
    path.push(name);
    let mut child = Command::new(&path)
        .arg("127.0.0.1:0")
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
    let (_chat, addr) = start_example("chat");
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
    let (_echo, addr) = start_example("echo");
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
