//! permessage-deflate between this client and the real server: negotiated when both want
//! it, large messages compressed by the server arrive intact (one compression per broadcast,
//! with context kept by nobody), small ones and the client's own go uncompressed, and
//! either side turning it off leaves the connection plain.

mod support;

use serde_json::json;
use support::*;
use wshub::Compression;
use wshub_client::{SubscriptionEvent, WshubClient};
use wshub_server::app::serve;

async fn start_compressing(compression: Option<Compression>) -> wshub_server::app::RunningServer {
    let mut options = options();
    options.hub.compression = compression;
    serve(options, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve")
}

async fn next_data(sub: &mut wshub_client::Subscription) -> serde_json::Value {
    loop {
        match next_in(sub).await {
            SubscriptionEvent::Message(m) => return m.data.parse().expect("JSON"),
            SubscriptionEvent::Join(_) | SubscriptionEvent::Leave(_) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn compressed_broadcasts_arrive_intact() {
    let server = start_compressing(Some(Compression::default())).await;
    let url = ws_url(server.local_addr());
    let (alice, _a) = WshubClient::builder(&url).build().unwrap();
    let (bob, _b) = WshubClient::builder(&url).build().unwrap();
    within("alice", alice.ready()).await.unwrap();
    within("bob", bob.ready()).await.unwrap();
    assert_eq!(
        server
            .hub()
            .connections()
            .iter()
            .filter(|c| c.info().compressed())
            .count(),
        2,
        "both negotiated permessage-deflate"
    );
    let mut alice_room = within("subscribe", alice.subscribe("big")).await.unwrap();
    let mut bob_room = within("subscribe", bob.subscribe("big")).await.unwrap();
    let bytes_before = server.hub().stats().bytes_out;

    // Many messages, large and small, from both; a compressing server that kept context
    // across messages would break the order-independent checks below.
    let mut sent = Vec::new();
    for i in 0..20 {
        let text = if i % 3 == 0 {
            "x".to_owned()
        } else {
            format!("message {i}: ").repeat(200 + i * 50)
        };
        let data = json!({"i": i, "text": text});
        let from = if i % 2 == 0 { &alice } else { &bob };
        within("publish", from.publish("big", &data)).await.unwrap();
        sent.push(data);
    }
    for want in &sent {
        assert_eq!(&next_data(&mut alice_room).await, want);
        assert_eq!(&next_data(&mut bob_room).await, want);
    }
    // The counters count payload bytes before compression; nothing is lost or doubled.
    assert!(server.hub().stats().bytes_out > bytes_before);
    stop(server).await;
}

#[tokio::test]
async fn either_side_can_leave_it_off() {
    // The server does not compress: the client's offer is declined.
    let server = start_compressing(None).await;
    let url = ws_url(server.local_addr());
    let (client, _events) = WshubClient::builder(&url).build().unwrap();
    within("ready", client.ready()).await.unwrap();
    assert!(!server.hub().connections()[0].info().compressed());
    stop(server).await;

    // The client does not offer it.
    let server = start_compressing(Some(Compression::default())).await;
    let url = ws_url(server.local_addr());
    let (client, _events) = WshubClient::builder(&url)
        .connection(|c| c.compression(false))
        .build()
        .unwrap();
    within("ready", client.ready()).await.unwrap();
    assert!(!server.hub().connections()[0].info().compressed());
    let mut room = within("subscribe", client.subscribe("plain"))
        .await
        .unwrap();
    let data = json!({"text": "plain ".repeat(1000)});
    within("publish", client.publish("plain", &data))
        .await
        .unwrap();
    assert_eq!(next_data(&mut room).await, data);
    stop(server).await;
}
