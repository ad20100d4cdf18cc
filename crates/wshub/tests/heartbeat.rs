//! Heartbeats: a peer that stops answering pings is dropped within the pong wait; one that
//! answers stays.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wshub::{Error, Hub, HubConfig};

fn config() -> HubConfig {
    HubConfig::default()
        .ping_interval(Duration::from_millis(50))
        .pong_wait(Duration::from_millis(200))
}

/// Opens a WebSocket by hand and then never reads or writes again: no pongs.
async fn silent_peer(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        within("101", stream.read_exact(&mut byte))
            .await
            .expect("read");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    stream
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped_within_the_pong_wait() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&errors);
    let hub = Hub::builder()
        .config(config())
        .on_disconnect(move |_, disconnect| {
            let is_pong_timeout = matches!(disconnect.error, Some(Error::PongTimeout));
            seen.lock().expect("lock").push(is_pong_timeout);
        })
        .build();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();

    let mut healthy = connect(addr).await;
    let _silent = silent_peer(addr).await;
    eventually("both registered", || hub.connection_count() == 2).await;
    let start = Instant::now();

    // tokio-tungstenite answers pings while it is polled; keep it polled.
    let reader = tokio::spawn(async move {
        let deadline = tokio::time::sleep(Duration::from_millis(800));
        tokio::pin!(deadline);
        let mut pings = 0;
        loop {
            tokio::select! {
                () = &mut deadline => return (healthy, pings),
                msg = healthy.next() => match msg {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => pings += 1,
                    other => panic!("healthy client got {other:?}"),
                },
            }
        }
    });
    eventually("silent peer dropped", || hub.connection_count() == 1).await;
    let elapsed = start.elapsed();
    // Ping at 50 ms, then 200 ms of silence: dropped soon after 250 ms.
    assert!(
        elapsed >= Duration::from_millis(200),
        "dropped too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "dropped too late: {elapsed:?}"
    );
    assert_eq!(*errors.lock().expect("lock"), [true]);

    let (_healthy, pings) = within("reader", reader).await.expect("reader");
    assert!(pings >= 5, "the healthy client was pinged ({pings} pings)");
    assert_eq!(hub.connection_count(), 1, "the healthy client stays");
    stop(server).await;
}

#[tokio::test]
async fn a_write_stalled_past_the_write_wait_drops_the_connection() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&errors);
    let hub = Hub::builder()
        .config(
            HubConfig::default()
                .write_wait(Duration::from_millis(300))
                .socket_send_buffer_bytes(8 * 1024)
                // A queue too deep to overflow: only the write wait can end it.
                .send_queue_capacity(100_000)
                .send_queue_max_bytes(usize::MAX),
        )
        .on_disconnect(move |_, disconnect| {
            let is_write_timeout = matches!(disconnect.error, Some(Error::WriteTimeout));
            seen.lock().expect("lock").push(is_write_timeout);
        })
        .build();
    let server = start_server(hub.clone()).await;
    // Raw peer: answers nothing and reads nothing, so the server's writes stall.
    let _stalled = silent_peer(server.local_addr()).await;
    eventually("registered", || hub.connection_count() == 1).await;
    let payload = "w".repeat(64 * 1024);
    for _ in 0..200 {
        hub.broadcast(wshub::Message::text(payload.clone()));
    }
    let start = Instant::now();
    eventually("stalled peer dropped", || hub.connection_count() == 0).await;
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(*errors.lock().expect("lock"), [true]);
    assert_eq!(hub.stats().slow_consumer_disconnects, 0);
    stop(server).await;
}
