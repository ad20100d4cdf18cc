//! What waits for a connection when the server's close is final (the reconnect policy does
//! not retry after it): publishes queued while offline and subscriptions waiting for their
//! `ok` fail with that close instead of waiting for their timeouts.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use tokio::net::TcpListener;
use wshub_client::{Backoff, Error, FixedJitter, WshubClient};

#[tokio::test]
async fn a_final_close_fails_what_waits_for_a_connection() {
    let server = start().await;
    let addr = server.local_addr();
    let (client, _events) = WshubClient::builder(ws_url(addr))
        .request_timeout(Duration::from_secs(30))
        .connection(|c| {
            c.backoff(Backoff {
                initial_delay: Duration::from_millis(300),
                max_delay: Duration::from_millis(300),
                max_attempts: 0,
            })
            .jitter(FixedJitter(1.0))
        })
        .build()
        .unwrap();
    within("ready", client.ready()).await.unwrap();
    let _room = within("subscribe", client.subscribe("a")).await.unwrap();

    // The server goes away (1001: the client retries); meanwhile the application publishes
    // and subscribes, both waiting for the next connection.
    stop(server).await;
    let publish = client.publish("a", &json!({"n": 1}));
    let subscribe = tokio::spawn({
        let client = client.clone();
        async move { client.subscribe("b").await.map(|_| ()) }
    });

    // What answers on the port next closes every connection with 1000 at once: final.
    let listener = TcpListener::bind(addr).await.expect("rebind the port");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if let Ok((_request, mut ws)) =
                tokio_websockets::ServerBuilder::new().accept(stream).await
            {
                let _ = ws
                    .send(tokio_websockets::Message::close(
                        Some(tokio_websockets::CloseCode::NORMAL_CLOSURE),
                        "bye",
                    ))
                    .await;
            }
        }
    });

    let started = tokio::time::Instant::now();
    let published = within("publish fails", publish).await;
    assert!(
        matches!(published, Err(Error::Closed { code: 1000, .. })),
        "{published:?}"
    );
    let subscribed = within("subscribe fails", subscribe).await.expect("task");
    assert!(
        matches!(subscribed, Err(Error::Closed { code: 1000, .. })),
        "{subscribed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
