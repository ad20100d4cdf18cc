//! Rate limiting in the library: a token bucket per connection drops messages over the
//! limit, and sustained abuse closes the connection with 1008; and the stand-alone
//! server's error callback for failures that belong to no connection.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wshub::{Error, Hub, HubConfig, RateLimitConfig};

/// An echo hub with this rate limit, recording the errors its connections report.
fn limited_echo(limit: RateLimitConfig) -> (Hub, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&errors);
    let hub = Hub::builder()
        .config(HubConfig::default().rate_limit(limit))
        .on_message(|conn, msg| {
            let _ = conn.send(msg);
        })
        .on_error(move |_, error| {
            recorded.lock().expect("lock").push(format!("{error:?}"));
        })
        .build();
    (hub, errors)
}

#[tokio::test]
async fn messages_over_the_limit_are_dropped_and_the_connection_stays() {
    // A burst of 5, then one message per 10 s: the rest of a quick burst is dropped.
    let (hub, errors) = limited_echo(RateLimitConfig {
        per_second: 0.1,
        burst: 5,
        max_rejections: 100,
        rejection_window: Duration::from_secs(10),
    });
    let server = start_server(hub.clone()).await;
    let mut ws = connect(server.local_addr()).await;
    let mut calm = connect(server.local_addr()).await;
    for i in 0..8 {
        send_text(&mut ws, format!("m{i}")).await;
    }
    for i in 0..5 {
        assert_eq!(next_text(&mut ws).await, format!("m{i}"));
    }
    eventually("three dropped", || hub.stats().rate_limited_messages == 3).await;
    // Every connection has its own bucket.
    send_text(&mut calm, "calm").await;
    assert_eq!(next_text(&mut calm).await, "calm");
    // Nothing more came back, and the connection is still open.
    hub.broadcast(wshub::Message::text("still open"));
    assert_eq!(next_text(&mut ws).await, "still open");
    assert!(errors.lock().expect("lock").is_empty());
    assert_eq!(hub.connection_count(), 2);
    stop(server).await;
}

#[tokio::test]
async fn sustained_abuse_closes_with_1008_and_others_carry_on() {
    let (hub, errors) = limited_echo(RateLimitConfig {
        per_second: 1.0,
        burst: 2,
        max_rejections: 10,
        rejection_window: Duration::from_secs(10),
    });
    let server = start_server(hub.clone()).await;
    let mut flood = connect(server.local_addr()).await;
    let mut calm = connect(server.local_addr()).await;
    for i in 0..20 {
        send_text(&mut flood, format!("{i}")).await;
    }
    assert_eq!(close_code(&mut flood).await, Some(1008));
    assert_eq!(errors.lock().expect("lock").as_slice(), ["RateLimited"]);
    send_text(&mut calm, "hello").await;
    assert_eq!(next_text(&mut calm).await, "hello");
    assert!(hub.stats().rate_limited_messages >= 11);
    stop(server).await;
}

#[tokio::test]
async fn without_a_limit_nothing_is_dropped() {
    let hub = Hub::builder()
        .on_message(|conn, msg| {
            let _ = conn.send(msg);
        })
        .build();
    assert!(hub.config().rate_limit.is_none(), "off by default");
    let server = start_server(hub.clone()).await;
    let mut ws = connect(server.local_addr()).await;
    for i in 0..500 {
        send_text(&mut ws, format!("{i}")).await;
    }
    for i in 0..500 {
        assert_eq!(next_text(&mut ws).await, format!("{i}"));
    }
    assert_eq!(hub.stats().rate_limited_messages, 0);
    stop(server).await;
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn failed_tls_handshakes_reach_the_server_error_callback() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let tls = wshub::TlsConfig::from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .expect("server config");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    let hub = Hub::builder()
        .on_server_error(move |error| {
            if let Error::TlsHandshake { peer, .. } = error {
                recorded.lock().expect("lock").push(*peer);
            }
            panic!("a panicking callback does not stop the server");
        })
        .build();
    let router = hub.router();
    let server = wshub::Server::start_tls("127.0.0.1:0", hub, router, tls)
        .await
        .expect("bind");
    for _ in 0..2 {
        // Plain HTTP to a TLS port: not a TLS ClientHello.
        let mut tcp = within(
            "connect",
            tokio::net::TcpStream::connect(server.local_addr()),
        )
        .await
        .expect("connect");
        let local = tcp.local_addr().expect("local addr");
        tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut rest = Vec::new();
        let _ = within("server closes", tcp.read_to_end(&mut rest)).await;
        eventually("the callback saw this client", || {
            seen.lock().expect("lock").contains(&local)
        })
        .await;
    }
    assert!(server.is_running());
    stop(server).await;
}
