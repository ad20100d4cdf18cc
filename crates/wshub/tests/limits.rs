//! Rejections before the upgrade (400, 426, 503, 403, 401) and limits after it (1009, 1007),
//! none of which disturbs any other connection.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{
    Message as WsMessage,
    protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    },
};
use wshub::{Hub, HubConfig, Identity, Rejection};

/// Sends a raw HTTP request and returns the whole response head and body.
async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = within("tcp connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    within("write", stream.write_all(request.as_bytes()))
        .await
        .expect("write");
    let mut response = Vec::new();
    let mut buf = [0_u8; 4096];
    // Read until the body (Content-Length) is in, bounded by STEP.
    loop {
        let n = within("read", stream.read(&mut buf)).await.expect("read");
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn malformed_upgrades_get_400_and_wrong_versions_426() {
    let hub = Hub::default();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();

    let plain = raw_http(addr, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    assert!(plain.contains(r#""error":"bad_request""#), "{plain}");

    let bad_key = raw_http(
        addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n",
    )
    .await;
    assert!(bad_key.starts_with("HTTP/1.1 400"), "{bad_key}");

    let old = raw_http(
        addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(old.starts_with("HTTP/1.1 426"), "{old}");
    assert!(
        old.to_lowercase().contains("sec-websocket-version: 13"),
        "{old}"
    );

    assert_eq!(hub.stats().rejected_handshakes, 3);
    assert_eq!(hub.stats().rejected_bad_request, 3);
    assert_eq!(hub.connection_count(), 0);
    stop(server).await;
}

#[tokio::test]
async fn over_the_connection_limit_gets_503_and_others_stay() {
    let hub = Hub::new(HubConfig::default().max_connections(2));
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut a = connect(addr).await;
    let _b = connect(addr).await;
    assert_eq!(
        connect_with_headers(addr, "/ws", &[]).await.err(),
        Some(503)
    );
    let response = raw_http(
        addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        response.to_lowercase().contains("retry-after:"),
        "{response}"
    );
    assert!(
        response.contains(r#""error":"limit_exceeded""#),
        "{response}"
    );

    // The open connections still work, and a slot frees when one leaves.
    hub.broadcast(wshub::Message::text("still here"));
    assert_eq!(next_text(&mut a).await, "still here");
    close(&mut a).await;
    eventually("slot freed", || hub.connection_count() == 1).await;
    let mut c = None;
    for _ in 0..100 {
        // The slot is returned when the closed connection's task has fully ended.
        if let Ok(ws) = connect_with_headers(addr, "/ws", &[]).await {
            c = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(c.is_some(), "a freed slot admits a new connection");
    stop(server).await;
}

#[tokio::test]
async fn origins_are_checked() {
    let hub = Hub::new(HubConfig::default().allowed_origins(["https://app.example.com"]));
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    assert_eq!(
        connect_with_headers(addr, "/ws", &[("origin", "https://evil.example")])
            .await
            .err(),
        Some(403)
    );
    let same = format!("http://{addr}");
    assert!(
        connect_with_headers(addr, "/ws", &[("origin", &same)])
            .await
            .is_ok()
    );
    assert!(
        connect_with_headers(addr, "/ws", &[("origin", "https://app.example.com")])
            .await
            .is_ok()
    );
    // No Origin header: not a browser, allowed.
    assert!(connect_with_headers(addr, "/ws", &[]).await.is_ok());
    assert_eq!(hub.stats().rejected_forbidden, 1);
    stop(server).await;
}

#[tokio::test]
async fn the_auth_hook_rejects_with_401_and_its_identity_reaches_the_handler() {
    let hub = Hub::builder()
        .auth(|request| async move {
            match request.query_param("token").as_deref() {
                Some("alice-token") => Ok(Identity::new("alice").with_data(42_u32)),
                _ => match request.bearer_token() {
                    Some("bob-token") => Ok(Identity::new("bob")),
                    _ => Err(Rejection::unauthorized("bad token")),
                },
            }
        })
        .handler(|conn| async move {
            let identity = conn.identity().expect("identity");
            let data = identity.data::<u32>().copied().unwrap_or(0);
            let _ = conn.send_text(format!("hello {} {data}", identity.user()));
            while let Some(msg) = conn.recv().await {
                let _ = conn.send(msg);
            }
        })
        .build();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();

    assert_eq!(
        connect_with_headers(addr, "/ws", &[]).await.err(),
        Some(401)
    );
    assert_eq!(
        connect_with_headers(addr, "/ws?token=wrong", &[])
            .await
            .err(),
        Some(401)
    );
    let mut alice = connect_with_headers(addr, "/ws?token=alice-token", &[])
        .await
        .expect("alice admitted");
    assert_eq!(next_text(&mut alice).await, "hello alice 42");
    let mut bob = connect_with_headers(addr, "/ws", &[("authorization", "Bearer bob-token")])
        .await
        .expect("bob admitted");
    assert_eq!(next_text(&mut bob).await, "hello bob 0");
    send_text(&mut bob, "echo").await;
    assert_eq!(next_text(&mut bob).await, "echo");
    assert_eq!(hub.stats().rejected_handshakes, 2);
    assert_eq!(hub.stats().rejected_unauthorized, 2);
    stop(server).await;
}

#[tokio::test]
async fn oversized_messages_close_with_1009_and_others_carry_on() {
    let hub = Hub::builder()
        .config(HubConfig::default().max_message_bytes(1024))
        .on_message(|conn, msg| {
            conn.hub().broadcast(msg);
        })
        .build();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut big = connect(addr).await;
    let mut other = connect(addr).await;
    eventually("both registered", || hub.connection_count() == 2).await;

    send_text(&mut big, "x".repeat(1024)).await;
    assert_eq!(
        next_text(&mut other).await.len(),
        1024,
        "at the limit is fine"
    );
    send_text(&mut big, "x".repeat(1025)).await;
    assert_eq!(close_code(&mut big).await, Some(1009));

    eventually("big dropped", || hub.connection_count() == 1).await;
    send_text(&mut other, "still fine").await;
    // `other` gets its own broadcast; the earlier 1024-byte one was already read.
    assert_eq!(next_text(&mut other).await, "still fine");
    stop(server).await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let hub = Hub::default();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut bad = connect(addr).await;
    let mut other = connect(addr).await;
    let frame = Frame::message(vec![b'o', b'k', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    within("send raw frame", bad.send(WsMessage::Frame(frame)))
        .await
        .expect("send");
    assert_eq!(close_code(&mut bad).await, Some(1007));
    eventually("bad dropped", || hub.connection_count() == 1).await;
    hub.broadcast(wshub::Message::text("ok"));
    assert_eq!(next_text(&mut other).await, "ok");
    stop(server).await;
}

#[tokio::test]
async fn browsers_must_use_an_allowed_host_name() {
    // DNS rebinding: a page at http://evil.example:PORT whose name now resolves to this
    // server sends Origin and Host both naming evil.example, which looks same-origin.
    let hub = Hub::new(HubConfig::default().allowed_hosts(wshub::LOOPBACK_HOSTS));
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let port = addr.port();
    let rebound = format!("evil.example:{port}");
    let rebound_origin = format!("http://{rebound}");
    assert_eq!(
        connect_with_headers(
            addr,
            "/ws",
            &[("host", &rebound), ("origin", &rebound_origin)]
        )
        .await
        .err(),
        Some(403),
        "a browser on a rebound name is refused"
    );
    let local = format!("localhost:{port}");
    let local_origin = format!("http://{local}");
    assert!(
        connect_with_headers(addr, "/ws", &[("host", &local), ("origin", &local_origin)])
            .await
            .is_ok(),
        "a page served by this server under localhost connects"
    );
    assert!(
        connect_with_headers(addr, "/ws", &[("host", &rebound)])
            .await
            .is_ok(),
        "a client that is not a browser (no Origin) is not checked"
    );
    let extension = format!("chrome-extension://{local}");
    assert_eq!(
        connect_with_headers(addr, "/ws", &[("host", &local), ("origin", &extension)])
            .await
            .err(),
        Some(403),
        "an origin that is not a web page's is never the same origin"
    );
    assert_eq!(hub.stats().rejected_forbidden, 2);
    stop(server).await;
}
