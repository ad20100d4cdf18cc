//! The `unrecoverable` frame (docs/PROTOCOL.md): a cluster whose backplane lost
//! publications says so, and the client reports the loss and resumes after it. Driven by a
//! scripted server, since a real one only sends it after a backplane failure.

mod support;

use futures_util::{SinkExt, StreamExt};
use support::*;
use wshub_client::{SubscriptionEvent, WshubClient};
use wshub_protocol::{Epoch, LostRange, Offset, StreamPosition};

#[tokio::test]
async fn a_lost_stretch_is_reported_and_delivery_resumes_after_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (_request, mut ws) = tokio_websockets::ServerBuilder::new()
            .accept(stream)
            .await
            .expect("upgrade");
        let send = |text: String| tokio_websockets::Message::text(text);
        ws.send(send(WELCOME.to_owned())).await.expect("welcome");
        // The client's subscribe; answer it, then a message, the loss, and the next one.
        let subscribe = loop {
            let frame = ws.next().await.expect("open").expect("frame");
            if let Some(text) = frame.as_text() {
                break serde_json::from_str::<serde_json::Value>(text).expect("json");
            }
        };
        assert_eq!(subscribe["type"], "subscribe");
        let id = subscribe["id"].clone();
        let frames = [
            serde_json::json!({"type":"ok","id":id,"room":"r","epoch":"e1","offset":0}),
            serde_json::json!({"type":"message","room":"r","data":1,"from":null,"offset":1,"epoch":"e1"}),
            serde_json::json!({"type":"unrecoverable","room":"r","epoch":"e2","offset":5,"recovered":false,
                "lost":[{"epoch":"e1","from":2},{"epoch":"e2","from":1,"to":5}]}),
            serde_json::json!({"type":"message","room":"r","data":6,"from":null,"offset":6,"epoch":"e2"}),
        ];
        for frame in frames {
            ws.send(send(frame.to_string())).await.expect("send");
        }
        // Hold the connection until the client is done.
        while let Some(Ok(_)) = ws.next().await {}
    });

    let (client, _events) = WshubClient::builder(ws_url(addr)).build().expect("client");
    within("ready", client.ready()).await.expect("welcome");
    let mut room = within("subscribe", client.subscribe("r"))
        .await
        .expect("subscribed");
    match next_in(&mut room).await {
        SubscriptionEvent::Message(m) => assert_eq!(m.offset, Offset(1)),
        other => panic!("expected message 1, got {other:?}"),
    }
    match next_in(&mut room).await {
        SubscriptionEvent::RecoveryFailed {
            since,
            epoch,
            latest,
            lost,
        } => {
            assert_eq!(since, StreamPosition::new(Epoch::from("e1"), Offset(1)));
            assert_eq!(epoch, Epoch::from("e2"));
            assert_eq!(latest, Offset(5));
            assert_eq!(
                lost,
                [
                    LostRange {
                        epoch: Epoch::from("e1"),
                        from: Offset(2),
                        to: None,
                    },
                    LostRange {
                        epoch: Epoch::from("e2"),
                        from: Offset(1),
                        to: Some(Offset(5)),
                    },
                ]
            );
        }
        other => panic!("expected the loss, got {other:?}"),
    }
    match next_in(&mut room).await {
        SubscriptionEvent::Message(m) => {
            assert_eq!((m.epoch.as_str(), m.offset), ("e2", Offset(6)));
        }
        other => panic!("expected message 6, got {other:?}"),
    }
    assert_eq!(
        room.position(),
        Some(StreamPosition::new(Epoch::from("e2"), Offset(6)))
    );
    client.close().await;
    server.abort();
}
