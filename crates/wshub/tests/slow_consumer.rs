//! A client that never reads does not delay the others, and is closed with 1013 once its
//! send queue is full.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wshub::{Hub, HubConfig, Message, OverflowPolicy};

const PAYLOAD: usize = 64 * 1024;

/// A client whose socket buffers are small, so that not reading fills them quickly.
async fn small_buffer_client(addr: std::net::SocketAddr) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("rcvbuf");
    let stream = socket.connect(addr).await.expect("connect");
    let (ws, _) = within(
        "handshake",
        tokio_tungstenite::client_async(
            ws_url(addr),
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        ),
    )
    .await
    .expect("handshake");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_closed_with_1013_and_delays_no_one() {
    // The queue fills by its count of messages, then (room for many messages) by bytes.
    for bound in [
        HubConfig::default().send_queue_capacity(8),
        HubConfig::default()
            .send_queue_capacity(100_000)
            .send_queue_max_bytes(4 * PAYLOAD),
    ] {
        cut_off_when_the_queue_fills(bound).await;
    }
}

async fn cut_off_when_the_queue_fills(bound: HubConfig) {
    let hub = Hub::new(
        bound
            .socket_send_buffer_bytes(16 * 1024)
            .write_wait(Duration::from_secs(60)),
    );
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut slow = small_buffer_client(addr).await;
    let mut fast = connect(addr).await;
    eventually("both registered", || hub.connection_count() == 2).await;

    let payload = "x".repeat(PAYLOAD);
    let mut worst = Duration::ZERO;
    for i in 0..100 {
        let sent = Instant::now();
        hub.broadcast(Message::text(format!("{i:05}{payload}")));
        let got = next_text(&mut fast).await;
        assert_eq!(&got[..5], format!("{i:05}"));
        worst = worst.max(sent.elapsed());
    }
    // Loopback delivery of 64 KiB takes well under a millisecond; a fast client waiting on
    // a stalled one would take seconds (the write wait).
    assert!(
        worst < Duration::from_secs(1),
        "fast client delayed: {worst:?}"
    );

    eventually("slow consumer detected", || {
        hub.stats().slow_consumer_disconnects == 1
    })
    .await;
    assert!(hub.stats().dropped_messages > 0);

    // Now the slow client reads: what was already in flight, then the 1013 close.
    let mut data = 0;
    let code = loop {
        match within("slow reads", slow.next()).await {
            Some(Ok(WsMessage::Text(_))) => data += 1,
            Some(Ok(WsMessage::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, Some(1013));
    // Polling on sends tungstenite's reply to the close, completing the handshake.
    while let Some(Ok(_)) = within("close handshake", slow.next()).await {}
    assert!(
        data < 100,
        "the slow client got {data} messages before being cut off"
    );
    eventually("slow unregistered", || hub.connection_count() == 1).await;
    stop(server).await;
}

#[tokio::test]
async fn drop_policies_keep_the_connection() {
    for policy in [OverflowPolicy::DropNewest, OverflowPolicy::DropOldest] {
        let hub = Hub::new(
            HubConfig::default()
                .send_queue_capacity(4)
                .overflow_policy(policy),
        );
        let server = start_server(hub.clone()).await;
        let mut slow = small_buffer_client(server.local_addr()).await;
        eventually("registered", || hub.connection_count() == 1).await;
        let payload = "y".repeat(PAYLOAD);
        for _ in 0..100 {
            hub.broadcast(Message::text(payload.clone()));
        }
        eventually("drops counted", || hub.stats().dropped_messages > 0).await;
        assert_eq!(hub.stats().slow_consumer_disconnects, 0);
        // The connection survives and delivers again once the client reads.
        let mut read = 0;
        while read < 3 {
            if let Some(Ok(WsMessage::Text(_))) = within("read", slow.next()).await {
                read += 1;
            }
        }
        assert_eq!(hub.connection_count(), 1, "{policy:?} keeps the connection");
        stop(server).await;
    }
}
