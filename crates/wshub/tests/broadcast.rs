//! Fan-out over real sockets: to all, to a room, to one, to all but the sender.

mod support;

use std::collections::HashMap;

use futures_util::StreamExt;
use support::*;
use wshub::{Hub, Message};

/// Several senders, 200 clients: every client gets every message, each sender's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_every_message_in_each_senders_order() {
    const CLIENTS: usize = 200;
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 50;

    let hub = Hub::builder()
        .on_message(|conn, msg| {
            conn.hub().broadcast(msg);
        })
        .build();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect(addr).await);
    }
    eventually("all registered", || hub.connection_count() == CLIENTS).await;

    let mut senders: Vec<_> = clients.drain(..SENDERS).collect();
    let readers: Vec<_> = clients.into_iter().chain(std::iter::empty()).collect();
    // Senders also receive everything; read them after sending.
    let send_tasks: Vec<_> = senders
        .iter_mut()
        .enumerate()
        .map(|(s, ws)| async move {
            for i in 0..PER_SENDER {
                send_text(ws, format!("{s}:{i}")).await;
            }
        })
        .collect();
    futures_util::future::join_all(send_tasks).await;

    let expect = SENDERS * PER_SENDER;
    let mut all = readers;
    all.extend(senders);
    let checks = all.into_iter().map(|mut ws| async move {
        let mut last: HashMap<usize, usize> = HashMap::new();
        for _ in 0..expect {
            let text = next_text(&mut ws).await;
            let (s, i) = text.split_once(':').expect("s:i");
            let (s, i): (usize, usize) = (s.parse().expect("s"), i.parse().expect("i"));
            if let Some(prev) = last.insert(s, i) {
                assert_eq!(i, prev + 1, "sender {s} out of order");
            } else {
                assert_eq!(i, 0, "sender {s} started late");
            }
        }
        assert_eq!(last.len(), SENDERS);
        ws
    });
    let clients = futures_util::future::join_all(checks).await;

    let stats = hub.stats();
    assert_eq!(stats.messages_in, expect as u64);
    eventually("all writes counted", || {
        hub.stats().messages_out == (expect * CLIENTS) as u64
    })
    .await;
    assert_eq!(stats.dropped_messages, 0);
    // Each message is "s:i": 3 or 4 bytes; sum them as the server counted them.
    let bytes_per_round: u64 = (0..SENDERS)
        .flat_map(|s| (0..PER_SENDER).map(move |i| format!("{s}:{i}").len() as u64))
        .sum();
    assert_eq!(stats.bytes_in, bytes_per_round);
    assert_eq!(hub.stats().bytes_out, bytes_per_round * CLIENTS as u64);
    assert_eq!(stats.total_connections, CLIENTS as u64);
    assert_eq!(stats.rejected_handshakes, 0);
    drop(clients);
    stop(server).await;
}

#[tokio::test]
async fn rooms_are_isolated_and_all_but_sender_skips_the_sender() {
    let hub = Hub::builder()
        .on_message(|conn, msg| {
            let text = msg.as_text().unwrap_or_default().to_owned();
            let hub = conn.hub();
            if let Some(room) = text.strip_prefix("join ") {
                conn.join(room).expect("join");
                conn.send_text(format!("joined {room}")).expect("reply");
            } else if let Some(rest) = text.strip_prefix("say ") {
                let (room, body) = rest.split_once(' ').expect("room body");
                hub.broadcast_to_room(room, Message::text(body));
            } else if let Some(body) = text.strip_prefix("others ") {
                hub.broadcast_except(Message::text(body), conn.id());
            } else if let Some(body) = text.strip_prefix("room-others ") {
                let (room, body) = body.split_once(' ').expect("room body");
                hub.broadcast_to_room_except(room, Message::text(body), conn.id());
            }
        })
        .build();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();

    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    let mut c = connect(addr).await;
    send_text(&mut a, "join red").await;
    assert_eq!(next_text(&mut a).await, "joined red");
    send_text(&mut b, "join red").await;
    assert_eq!(next_text(&mut b).await, "joined red");
    send_text(&mut c, "join blue").await;
    assert_eq!(next_text(&mut c).await, "joined blue");

    assert_eq!(hub.room_size("red"), 2);
    let mut rooms = hub.rooms();
    rooms.sort();
    assert_eq!(rooms, ["blue", "red"]);

    send_text(&mut c, "say red to-red").await;
    send_text(&mut a, "say blue to-blue").await;
    assert_eq!(next_text(&mut a).await, "to-red");
    assert_eq!(next_text(&mut b).await, "to-red");
    assert_eq!(next_text(&mut c).await, "to-blue");

    send_text(&mut a, "room-others red hi-red").await;
    assert_eq!(next_text(&mut b).await, "hi-red");
    send_text(&mut b, "others hello").await;
    assert_eq!(next_text(&mut a).await, "hello");
    assert_eq!(next_text(&mut c).await, "hello");

    // Nothing else arrived at anyone: a marker sent to all is each one's next message.
    hub.broadcast(Message::text("marker"));
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(next_text(ws).await, "marker");
    }

    // Leaving and disconnecting empty the rooms.
    let b_id = hub
        .room_members("red")
        .into_iter()
        .find(|id| hub.connection(*id).is_some_and(|c| c.rooms() == ["red"]));
    assert!(b_id.is_some());
    close(&mut c).await;
    eventually("blue emptied", || hub.room_size("blue") == 0).await;
    assert_eq!(hub.rooms(), ["red"]);
    stop(server).await;
}

#[tokio::test]
async fn send_to_one_connection_by_id() {
    let hub = Hub::default();
    let server = start_server(hub.clone()).await;
    let mut a = connect(server.local_addr()).await;
    let mut b = connect(server.local_addr()).await;
    eventually("both registered", || hub.connection_count() == 2).await;

    let ids: Vec<_> = hub.connections().iter().map(|c| c.id()).collect();
    hub.send_to(ids[0], Message::text("for-0")).expect("send");
    hub.send_to(ids[1], Message::text("for-1")).expect("send");
    let got_a = next_text(&mut a).await;
    let got_b = next_text(&mut b).await;
    let mut got = [got_a, got_b];
    got.sort();
    assert_eq!(got, ["for-0", "for-1"]);

    let stranger = "000000000000-ffff".parse().expect("id");
    assert!(matches!(
        hub.send_to(stranger, Message::text("x")),
        Err(wshub::Error::NotFound(_))
    ));

    // JSON and binary go out as they should.
    hub.broadcast(Message::json(&serde_json::json!({"n": 1})).expect("json"));
    assert_eq!(next_text(&mut a).await, r#"{"n":1}"#);
    hub.broadcast(Message::binary(vec![1_u8, 2, 3]));
    let next = within("binary", a.next()).await;
    assert!(
        matches!(next, Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) if b[..] == [1, 2, 3])
    );
    stop(server).await;
}
