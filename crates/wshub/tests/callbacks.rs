//! The two styles of use, callbacks and an async handler, and what a connection knows about
//! its peer.

mod support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use support::*;
use wshub::{Error, Hub, HubConfig};

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Connect(String),
    Message(String),
    Error(String),
    Disconnect(Option<u16>, bool),
}

#[tokio::test]
async fn callbacks_see_connect_message_error_and_disconnect() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = |events: &Arc<Mutex<Vec<Event>>>, e| events.lock().expect("lock").push(e);
    let (e1, e2, e3, e4) = (
        events.clone(),
        events.clone(),
        events.clone(),
        events.clone(),
    );
    let hub = Hub::builder()
        .config(HubConfig::default().max_message_bytes(16))
        .on_connect(move |conn| {
            log(
                &e1,
                Event::Connect(conn.user_agent().unwrap_or("?").to_owned()),
            );
        })
        .on_message(move |_, msg| log(&e2, Event::Message(msg.as_text().unwrap_or("").into())))
        .on_error(move |_, err| {
            let kind = match err {
                Error::MessageTooLarge { .. } => "too large".to_owned(),
                other => other.to_string(),
            };
            log(&e3, Event::Error(kind));
        })
        .on_disconnect(move |_, d| {
            log(
                &e4,
                Event::Disconnect(d.code.map(u16::from), d.initiated_by_server),
            );
        })
        .build();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();

    let mut ws = connect_with_headers(addr, "/ws", &[("user-agent", "test-agent/1")])
        .await
        .expect("connect");
    send_text(&mut ws, "hi").await;
    send_text(&mut ws, "x".repeat(17)).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
    eventually("disconnected", || hub.connection_count() == 0).await;
    eventually("disconnect callback", || {
        events.lock().expect("lock").len() == 4
    })
    .await;
    assert_eq!(
        *events.lock().expect("lock"),
        [
            Event::Connect("test-agent/1".into()),
            Event::Message("hi".into()),
            Event::Error("too large".into()),
            Event::Disconnect(Some(1009), true),
        ]
    );

    // A clean close by the client.
    events.lock().expect("lock").clear();
    let mut ws = connect(addr).await;
    eventually("connected", || hub.connection_count() == 1).await;
    close(&mut ws).await;
    eventually("disconnect callback", || {
        events.lock().expect("lock").len() == 2
    })
    .await;
    assert_eq!(
        events.lock().expect("lock")[1],
        Event::Disconnect(Some(1000), false)
    );
    stop(server).await;
}

#[tokio::test]
async fn an_async_handler_reads_with_recv_and_its_return_closes_with_1000() {
    let hub = Hub::builder()
        .config(HubConfig::default().keep_headers(true))
        .handler(|conn| async move {
            let info = conn.info();
            let _ = conn.send_text(format!(
                "you are {} from {} with {} headers",
                conn.id(),
                info.remote_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default(),
                if conn.headers().contains_key("x-custom") {
                    "custom"
                } else {
                    "plain"
                },
            ));
            while let Some(msg) = conn.recv().await {
                if msg.as_text() == Some("bye") {
                    return;
                }
                let _ = conn.send(msg);
            }
        })
        .build();
    let server = start_server(hub.clone()).await;
    let mut ws = connect_with_headers(server.local_addr(), "/ws", &[("x-custom", "1")])
        .await
        .expect("connect");
    let hello = next_text(&mut ws).await;
    let id = hub.connections()[0].id();
    assert_eq!(
        hello,
        format!("you are {id} from 127.0.0.1 with custom headers")
    );
    let conn = hub.connection(id).expect("by id");
    assert!(conn.uptime() < std::time::Duration::from_secs(10));
    assert!(conn.connected_at() <= std::time::SystemTime::now());

    for i in 0..100 {
        send_text(&mut ws, format!("echo {i}")).await;
    }
    for i in 0..100 {
        assert_eq!(next_text(&mut ws).await, format!("echo {i}"));
    }
    send_text(&mut ws, "bye").await;
    assert_eq!(close_code(&mut ws).await, Some(1000));
    stop(server).await;
}

#[tokio::test]
async fn embedded_in_an_axum_app_with_the_peer_address() {
    let hub = Hub::builder()
        .on_connect(|conn| {
            let _ = conn.send_text(
                conn.remote_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_else(|| "unknown".into()),
            );
        })
        .build();
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .route("/live", hub.route());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let mut ws = connect_with_headers(addr, "/live", &[])
        .await
        .expect("connect");
    assert_eq!(next_text(&mut ws).await, "127.0.0.1");
    hub.shutdown(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn server_lifecycle() {
    let server = start_server(Hub::default()).await;
    assert!(server.is_running());
    assert_ne!(server.local_addr().port(), 0);
    server.stop(std::time::Duration::from_millis(100)).await;
    assert!(!server.is_running());
    // Stopping twice is harmless.
    server.stop(std::time::Duration::from_millis(100)).await;
}

/// A panic in user code closes that connection with 1011 and unregisters it; the hub and
/// every other connection carry on.
#[tokio::test]
async fn a_panicking_callback_or_handler_closes_its_connection_with_1011() {
    // on_message: "boom" panics, anything else is echoed.
    let disconnects = Arc::new(Mutex::new(Vec::new()));
    let seen = disconnects.clone();
    let hub = Hub::builder()
        .on_message(|conn, msg| {
            assert_ne!(msg.as_text(), Some("boom"), "the application's bug");
            let _ = conn.send(msg);
        })
        .on_disconnect(move |_, d| seen.lock().expect("lock").push(d.code.map(|c| c.as_u16())))
        .build();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut victim = connect(addr).await;
    let mut bystander = connect(addr).await;
    eventually("2 connections", || hub.connection_count() == 2).await;
    send_text(&mut victim, "boom").await;
    assert_eq!(close_code(&mut victim).await, Some(1011));
    drop(victim); // rather than answer the close
    eventually("unregistered", || hub.connection_count() == 1).await;
    eventually("on_disconnect", || {
        disconnects.lock().expect("lock").as_slice() == [Some(1011)]
    })
    .await;
    send_text(&mut bystander, "still fine").await;
    assert_eq!(next_text(&mut bystander).await, "still fine");
    stop(server).await;

    // on_connect panics for the second connection only.
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hub = Hub::builder()
        .on_connect(move |_| {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert_ne!(n, 1, "the application's bug");
        })
        .on_message(|conn, msg| {
            let _ = conn.send(msg);
        })
        .build();
    let server = start_server(hub.clone()).await;
    let mut first = connect(server.local_addr()).await;
    let mut second = connect(server.local_addr()).await;
    assert_eq!(close_code(&mut second).await, Some(1011));
    drop(second);
    eventually("unregistered", || hub.connection_count() == 1).await;
    send_text(&mut first, "ok").await;
    assert_eq!(next_text(&mut first).await, "ok");
    stop(server).await;

    // An async handler that panics on its second message.
    let hub = Hub::builder()
        .handler(|conn| async move {
            let mut n = 0;
            while let Some(msg) = conn.recv().await {
                n += 1;
                assert!(n < 2, "the application's bug");
                let _ = conn.send(msg);
            }
        })
        .build();
    let server = start_server(hub.clone()).await;
    let mut client = connect(server.local_addr()).await;
    let mut other = connect(server.local_addr()).await;
    send_text(&mut client, "one").await;
    assert_eq!(next_text(&mut client).await, "one");
    send_text(&mut client, "two").await;
    assert_eq!(close_code(&mut client).await, Some(1011));
    drop(client);
    eventually("unregistered", || hub.connection_count() == 1).await;
    send_text(&mut other, "three").await;
    assert_eq!(next_text(&mut other).await, "three");
    stop(server).await;
}
