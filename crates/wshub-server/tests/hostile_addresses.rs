//! One IP address against the server: many WebSocket connections at once, and commands
//! spread over reconnections to get a fresh rate limit each time. The address's bounds
//! hold, and a client from another address keeps its service.

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::*;
use tokio::net::TcpSocket;
use tokio_tungstenite::{
    MaybeTlsStream, client_async,
    tungstenite::{Message as WsMessage, client::IntoClientRequest},
};
use wshub_server::{rate_limit::RateLimitConfig, state::ServerOptions};

/// A WebSocket client connected from the loopback address `source`.
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> Client {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from(source), 0))
        .expect("bind source address");
    let stream = within("tcp connect", socket.connect(addr))
        .await
        .expect("connect");
    let request = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    let (ws, _) = within(
        "upgrade",
        client_async(request, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("upgrade");
    ws
}

/// The bystander, from 127.0.0.1, subscribed to `calm`; checks a prompt round trip.
async fn still_served(bystander: &mut Client, what: &str) {
    let started = Instant::now();
    let reply = request(
        bystander,
        json!({"type":"publish","room":"calm","id":"p","data":what}),
    )
    .await;
    let other = next(bystander).await;
    assert!(
        [&reply, &other].iter().any(|f| f["type"] == "ok")
            && [&reply, &other].iter().any(|f| f["data"] == what),
        "{what}: {reply} {other}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the bystander waited {:?} during {what}",
        started.elapsed()
    );
}

async fn bystander(addr: SocketAddr) -> Client {
    let (mut ws, _) = connect(addr).await;
    let reply = request(&mut ws, json!({"type":"subscribe","room":"calm","id":1})).await;
    assert_eq!(reply["type"], "ok", "{reply}");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_capped() {
    let server = start(ServerOptions {
        max_connections_per_ip: 20,
        ..ServerOptions::default()
    })
    .await;
    let addr = server.local_addr();
    let mut calm = bystander(addr).await;

    // 30 connections from one address: 20 are welcomed, 10 closed with 1008 before any
    // welcome.
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..30 {
        let mut ws = connect_from([127, 0, 0, 2], addr).await;
        match within("first frame", ws.next()).await {
            Some(Ok(WsMessage::Text(text))) => {
                assert!(text.contains("\"welcome\""), "{text}");
                open.push(ws);
            }
            Some(Ok(WsMessage::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1008));
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((open.len(), refused), (20, 10));
    still_served(&mut calm, "one address at its connection limit").await;
    // Another address is not affected, and places free up as connections close.
    let (mut other, _) = connect(addr).await;
    nothing_pending(&mut other).await;
    drop(open);
    let mut reopened = false;
    for _ in 0..100 {
        let mut ws = connect_from([127, 0, 0, 2], addr).await;
        if let Some(Ok(WsMessage::Text(_))) = within("first frame", ws.next()).await {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened, "the address's places were not given back");
    let (status, stats) = http(addr, "GET", "/stats", &[], None).await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats");
    assert!(
        stats["address_connections_refused"].as_u64() >= Some(10),
        "{stats}"
    );
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_does_not_refill_the_address_command_budget() {
    let server = start(ServerOptions {
        rate_limit: Some(RateLimitConfig {
            per_address: Some((100.0, 200)),
            ..RateLimitConfig::default()
        }),
        ..ServerOptions::default()
    })
    .await;
    let addr = server.local_addr();
    let mut calm = bystander(addr).await;

    // 30 connections one after the other, each sending 100 pings at once (its own full
    // burst): without an address budget all 3000 would be answered.
    let started = Instant::now();
    let (mut answered, mut limited) = (0_u64, 0_u64);
    for _ in 0..30 {
        let mut ws = connect_from([127, 0, 0, 2], addr).await;
        assert_eq!(next(&mut ws).await["type"], "welcome");
        for i in 0..100 {
            within(
                "feed",
                ws.feed(WsMessage::text(json!({"type":"ping","id":i}).to_string())),
            )
            .await
            .expect("feed");
        }
        within("flush", ws.flush()).await.expect("flush");
        for _ in 0..100 {
            let reply = next(&mut ws).await;
            match (reply["type"].as_str(), reply["code"].as_str()) {
                (Some("pong"), _) => answered += 1,
                (Some("error"), Some("rate_limited")) => limited += 1,
                _ => panic!("unexpected {reply}"),
            }
        }
        drop(ws);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(answered + limited, 3000);
    // The address's burst, plus what it refilled meanwhile (100/s), plus a margin.
    let allowed = 200.0 + 100.0 * elapsed + 20.0;
    assert!(
        (answered as f64) <= allowed,
        "{answered} answered in {elapsed:.2} s (at most {allowed:.0})"
    );
    still_served(&mut calm, "reconnections from another address").await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_from_an_address_gets_a_smaller_first_burst() {
    // The defaults: 50 commands/s with bursts of 100 per connection, and an address budget.
    let server = start(ServerOptions::default()).await;
    let addr = server.local_addr();
    // 100 pings at once on a fresh connection, then again on a second connection from the
    // same address (the first still open, so the address is known for sure; an address is
    // also known for a while after its last connection closed).
    let mut answered = Vec::new();
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut ws = connect_from([127, 0, 0, 3], addr).await;
        assert_eq!(next(&mut ws).await["type"], "welcome");
        for i in 0..100 {
            within(
                "feed",
                ws.feed(WsMessage::text(json!({"type":"ping","id":i}).to_string())),
            )
            .await
            .expect("feed");
        }
        within("flush", ws.flush()).await.expect("flush");
        let mut pongs = 0;
        for _ in 0..100 {
            let reply = next(&mut ws).await;
            match (reply["type"].as_str(), reply["code"].as_str()) {
                (Some("pong"), _) => pongs += 1,
                (Some("error"), Some("rate_limited")) => {}
                _ => panic!("unexpected {reply}"),
            }
        }
        answered.push(pongs);
        open.push(ws);
    }
    assert_eq!(answered[0], 100, "a new address gets the whole burst");
    // One second's worth (50), and what refilled while the 100 arrived.
    assert!(
        (50..70).contains(&answered[1]),
        "the second connection was answered {} of 100",
        answered[1]
    );
    stop(server).await;
}
