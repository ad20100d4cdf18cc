//! The wshub protocol client against the real server: commands matched to replies,
//! typed errors, timeouts, subscriptions with presence events, unsubscribe.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use wshub_client::wshub_protocol::ErrorCode;
use wshub_client::{Error, SubscriptionEvent, WshubClient, WshubEvent};

#[tokio::test]
async fn commands_are_answered_by_their_replies() {
    let server = start().await;
    let addr = server.local_addr();
    let (alice, mut alice_events) = WshubClient::builder(ws_url(addr)).build().unwrap();
    let (bob, _bob_events) = WshubClient::builder(ws_url(addr)).build().unwrap();
    let welcome = within("alice ready", alice.ready()).await.unwrap();
    assert_eq!(welcome.version, 1);
    assert_eq!(
        alice.connection_id().as_deref(),
        Some(welcome.client.as_str())
    );
    let bob_id = within("bob ready", bob.ready()).await.unwrap().client;

    let mut room = within("subscribe", alice.subscribe("chat:lobby"))
        .await
        .unwrap();
    assert_eq!(room.room().as_str(), "chat:lobby");
    assert!(matches!(
        within("again", alice.subscribe("chat:lobby")).await,
        Err(Error::AlreadySubscribed(_))
    ));

    // Presence events about others, never about oneself.
    let mut bob_room = within("bob subscribes", bob.subscribe("chat:lobby"))
        .await
        .unwrap();
    let join = next_in(&mut room).await;
    assert!(
        matches!(&join, SubscriptionEvent::Join(p) if p.client == bob_id),
        "{join:?}"
    );

    // Many calls in flight at once, each answered by its own reply.
    let (one, two) = (json!({"n": 1}), json!({"n": 2}));
    let (a, b, c, d) = tokio::join!(
        alice.publish("chat:lobby", &one),
        bob.publish("chat:lobby", &two),
        alice.presence("chat:lobby"),
        alice.ping(),
    );
    // Two connections publish at once: either may get offset 1.
    let (alice_offset, bob_offset) = (a.unwrap().0, b.unwrap().0);
    let mut offsets = [alice_offset, bob_offset];
    offsets.sort_unstable();
    assert_eq!(offsets, [1, 2]);
    let mut present: Vec<String> = c.unwrap().into_iter().map(|p| p.client).collect();
    present.sort();
    let mut expected = vec![welcome.client.clone(), bob_id.clone()];
    expected.sort();
    assert_eq!(present, expected);
    assert!(d.unwrap() < Duration::from_secs(5));
    for sub in [&mut room, &mut bob_room] {
        let mut got = Vec::new();
        for _ in 0..2 {
            let message = within("message", sub.next_message()).await.unwrap();
            got.push((message.offset.0, message.data.get().to_owned()));
        }
        got.sort();
        let mut expected = [
            (alice_offset, r#"{"n":1}"#.to_owned()),
            (bob_offset, r#"{"n":2}"#.to_owned()),
        ];
        expected.sort();
        assert_eq!(got, expected);
    }

    // History, newest first page and paging forward with since.
    let history = within("history", alice.history("chat:lobby", None, Some(1)))
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].offset.0, 2);
    let since = history.messages[0].position();
    let first = wshub_client::wshub_protocol::StreamPosition::new(since.epoch.clone(), 0.into());
    let page = within(
        "history since",
        alice.history("chat:lobby", Some(first), None),
    )
    .await
    .unwrap();
    assert_eq!(page.recovered, Some(true));
    assert_eq!(page.messages.len(), 2);
    assert_eq!(alice.position(room.room()), Some(since));

    // send and broadcast arrive as client events.
    within("send", alice.send(&bob_id, &json!("psst")))
        .await
        .unwrap();
    within("broadcast", bob.broadcast(&json!("all")))
        .await
        .unwrap();
    let direct =
        next_wshub_event(&mut alice_events, |e| matches!(e, WshubEvent::Broadcast(_))).await;
    assert!(matches!(direct, WshubEvent::Broadcast(b) if b.data.get() == "\"all\""));

    // Server errors are typed.
    let err = within("send to nobody", alice.send("no-such-connection", &1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    assert!(matches!(
        within("bad room", alice.publish("has space", &1)).await,
        Err(Error::InvalidRoom(_))
    ));

    // Unsubscribing ends the stream for others' leave events.
    within("unsubscribe", bob_room.unsubscribe()).await.unwrap();
    let leave = next_in(&mut room).await;
    assert!(
        matches!(&leave, SubscriptionEvent::Leave(p) if p.client == bob_id),
        "{leave:?}"
    );
    within("unsubscribe by name", alice.unsubscribe("chat:lobby"))
        .await
        .unwrap();
    assert!(within("room ends", room.recv()).await.is_none());
    assert!(presence(addr, "chat:lobby").await.is_empty());

    alice.close().await;
    assert!(matches!(alice.ping().await, Err(Error::ClientClosed)));
    bob.close().await;
    stop(server).await;
}

#[tokio::test]
async fn a_reply_that_never_comes_times_out() {
    let (addr, _) = silent_server(Some(WELCOME)).await;
    let (client, _events) = WshubClient::builder(ws_url(addr))
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    within("ready", client.ready()).await.unwrap();
    let started = tokio::time::Instant::now();
    let err = within("publish", client.publish("r", &1))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    let err = within("subscribe", client.subscribe("r"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                command: "subscribe",
                ..
            }
        ),
        "{err}"
    );
    // A timed-out subscribe leaves nothing behind: subscribing again is allowed.
    let err = within("subscribe", client.subscribe("r"))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    client.close().await;
    assert!(client.connection().task_tracker().is_empty());
}

#[tokio::test]
async fn dropping_a_subscription_leaves_the_room() {
    let server = start().await;
    let addr = server.local_addr();
    let (client, _events) = WshubClient::builder(ws_url(addr)).build().unwrap();
    let id = within("ready", client.ready()).await.unwrap().client;
    let room = within("subscribe", client.subscribe("r")).await.unwrap();
    assert_eq!(presence(addr, "r").await, [id]);
    drop(room);
    within("left", async {
        for _ in 0..200 {
            if presence(addr, "r").await.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("still in the room");
    })
    .await;
    // The room can be followed again.
    let _room = within("subscribe again", client.subscribe("r"))
        .await
        .unwrap();
    let tracker = client.connection().task_tracker();
    drop(client);
    within("tasks end", tracker.wait()).await;
    stop(server).await;
}
