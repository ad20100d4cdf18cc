//! Graceful shutdown: stop accepting, flush what is queued, close with 1001, bounded by a
//! deadline; and the drain before it: closes with 1012 spread over a window.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wshub::{Hub, Message};

#[tokio::test]
async fn every_client_gets_what_was_queued_then_1001() {
    let hub = Hub::default();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(connect(addr).await);
    }
    eventually("registered", || hub.connection_count() == 20).await;
    assert!(server.is_running());

    for i in 0..100 {
        hub.broadcast(Message::text(format!("m{i}")));
    }
    // Clients read concurrently with the shutdown, as real ones do.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let code = loop {
                    match within("read", ws.next()).await {
                        Some(Ok(WsMessage::Text(t))) => got.push(t.to_string()),
                        Some(Ok(WsMessage::Close(frame))) => {
                            break frame.map(|f| u16::from(f.code));
                        }
                        Some(Ok(_)) => {}
                        other => panic!("unexpected {other:?}"),
                    }
                };
                // Finish the close handshake.
                while let Some(Ok(_)) = within("drain", ws.next()).await {}
                (got, code)
            })
        })
        .collect();
    let started = Instant::now();
    within("stop", server.stop(Duration::from_secs(5))).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "clients that answer the close let shutdown finish early"
    );
    assert!(!server.is_running());
    for reader in readers {
        let (got, code) = within("reader", reader).await.expect("reader");
        assert_eq!(code, Some(1001));
        let expected: Vec<_> = (0..100).map(|i| format!("m{i}")).collect();
        assert_eq!(got, expected);
    }
    assert_eq!(hub.connection_count(), 0);

    // Nothing is accepted any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_is_bounded_by_its_deadline_and_refuses_new_upgrades() {
    let hub = Hub::default();
    // An axum app of the user's: the hub mounted in it, served by axum.
    let app = hub.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    // A client that never reads, so it never answers the close frame.
    let _deaf = connect(addr).await;
    eventually("registered", || hub.connection_count() == 1).await;
    let started = Instant::now();
    let shutdown = tokio::spawn({
        let hub = hub.clone();
        async move { hub.shutdown(Duration::from_millis(300)).await }
    });
    eventually("shutting down", || hub.is_shutting_down()).await;
    assert_eq!(
        connect_with_headers(addr, "/ws", &[]).await.err(),
        Some(503)
    );
    within("shutdown", shutdown).await.expect("shutdown");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "returned before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "deadline not enforced: {took:?}"
    );
    assert_eq!(hub.connection_count(), 0);
}

/// `Hub::drain`: new upgrades get 503, each client gets what was queued for it and then
/// 1012 at its own moment within the window, and the call returns once they are gone.
#[tokio::test]
async fn drain_closes_each_client_with_1012_at_its_own_moment_within_the_window() {
    const CLIENTS: usize = 20;
    let hub = Hub::default();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect(addr).await);
    }
    eventually("registered", || hub.connection_count() == CLIENTS).await;
    hub.broadcast(Message::text("before the drain"));
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let (code, reason) = loop {
                    match within("read", ws.next()).await {
                        Some(Ok(WsMessage::Text(t))) => got.push(t.to_string()),
                        Some(Ok(WsMessage::Close(frame))) => {
                            let frame = frame.expect("a close frame with a code");
                            break (u16::from(frame.code), frame.reason.to_string());
                        }
                        Some(Ok(_)) => {}
                        other => panic!("unexpected {other:?}"),
                    }
                };
                let at = Instant::now();
                while let Some(Ok(_)) = within("handshake", ws.next()).await {}
                (got, code, reason, at)
            })
        })
        .collect();

    let started = Instant::now();
    let drain = tokio::spawn({
        let hub = hub.clone();
        async move { hub.drain(Duration::from_secs(1)).await }
    });
    eventually("draining", || hub.is_draining()).await;
    assert!(!hub.is_shutting_down());
    assert_eq!(
        connect_with_headers(addr, "/ws", &[]).await.err(),
        Some(503)
    );
    within("drain", drain).await.expect("drain");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "drain took {took:?}");
    assert_eq!(hub.connection_count(), 0);

    let mut times = Vec::new();
    for reader in readers {
        let (got, code, reason, at) = within("reader", reader).await.expect("reader");
        assert_eq!(got, ["before the drain"]);
        assert_eq!((code, reason.as_str()), (1012, "service restart"));
        times.push(at);
    }
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(
        spread >= Duration::from_millis(300),
        "{CLIENTS} closes within {spread:?} of a 1 s window"
    );
    // A second drain starts nothing and returns at once: nobody is left.
    within("second drain", hub.drain(Duration::from_secs(1))).await;
    stop(server).await;
}
