//! The shared test suite every backplane passes (as centrifuge's map brokers share one):
//! each test takes a factory that makes a fresh backplane for a node id, all of them
//! sharing one store.
#![allow(dead_code, unreachable_pub)]

use std::{collections::HashSet, future::Future, pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use wshub_backplane::{
    Answer, Backplane, Event, Events, HistoryRange, PresenceMember, Publication, Reply, Routed,
};
use wshub_protocol::ConnectionId;
use wshub_protocol::{Epoch, Offset, RoomName, StreamPosition};

/// The bound on any single step.
pub const STEP: Duration = Duration::from_secs(10);

/// Makes a backplane for a node id; every backplane of one factory shares one store.
pub type Factory = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = Arc<dyn Backplane>>>>>;

/// The variable that turns a backplane test skipped for want of its server into a failure.
/// CI sets it (`.ci/run`), so a backplane test never passes there by running nothing.
pub const REQUIRE_BACKPLANES: &str = "WSHUB_REQUIRE_BACKPLANES";

/// Whether [`REQUIRE_BACKPLANES`] is set (to anything but empty or `0`).
pub fn backplanes_required() -> bool {
    std::env::var_os(REQUIRE_BACKPLANES).is_some_and(|value| !value.is_empty() && value != "0")
}

/// A test that cannot run because its backplane server is missing: said loudly on stderr
/// (a developer without Redis or NATS installed), or a failure with the same message when
/// [`REQUIRE_BACKPLANES`] is set.
pub fn skipped(message: &str) {
    assert!(
        !backplanes_required(),
        "{message} ({REQUIRE_BACKPLANES} is set)"
    );
    eprintln!("{message}");
}

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

pub fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

pub fn client(node: u64, seq: u64) -> ConnectionId {
    format!("{node:012x}-{seq:x}").parse().unwrap()
}

fn payloads(publications: &[Publication]) -> Vec<&[u8]> {
    publications.iter().map(|p| p.payload.as_ref()).collect()
}

async fn publish(backplane: &dyn Backplane, room: &RoomName, payload: &'static str) -> Publication {
    within(
        "publish",
        backplane.publish(room, Bytes::from_static(payload.as_bytes())),
    )
    .await
    .unwrap()
}

async fn history(
    backplane: &dyn Backplane,
    room: &RoomName,
    query: HistoryRange,
) -> wshub_backplane::HistoryPage {
    within("history", backplane.history(room, query))
        .await
        .unwrap()
}

/// Every single-node behaviour, in one go.
pub async fn single_node(factory: Factory) {
    let backplane = factory(1).await;
    offsets_start_at_one_and_have_no_gaps(&*backplane).await;
    history_since_and_latest(&*backplane).await;
    concurrent_publishes_get_distinct_consecutive_offsets(Arc::clone(&backplane)).await;
    presence_add_list_remove(&*backplane).await;
    reading_an_unused_room_keeps_nothing(&*backplane).await;
    assert_eq!(backplane.clamp_limit(None), 100);
    assert_eq!(backplane.clamp_limit(Some(5)), 5);
    assert_eq!(backplane.clamp_limit(Some(500)), 100);
    assert!(backplane.health().is_connected());
    assert!(backplane.take_events().is_some());
    assert!(backplane.take_events().is_none(), "events are taken once");
}

/// `read_history` (a client's `history`) of a room that has no state keeps none: each read
/// answers an empty page under an epoch of its own, where `history` (a subscribe's read)
/// creates the room's epoch, which later reads of either kind then see.
async fn reading_an_unused_room_keeps_nothing(backplane: &dyn Backplane) {
    let r = room("read:unused");
    let read = || async {
        within(
            "read_history",
            backplane.read_history(
                &r,
                HistoryRange::Since {
                    position: StreamPosition::new(Epoch::from("gone"), Offset(3)),
                    limit: 10,
                },
            ),
        )
        .await
        .unwrap()
    };
    let first = read().await;
    let second = read().await;
    for page in [&first, &second] {
        assert!(page.publications.is_empty());
        assert_eq!(page.position.offset, Offset::ZERO);
        assert!(!page.recovered, "nothing of epoch `gone` can be recovered");
    }
    assert_ne!(
        first.position.epoch, second.position.epoch,
        "the first read kept the room's state"
    );
    let created = history(backplane, &r, HistoryRange::Latest { limit: 0 }).await;
    assert_eq!(read().await.position.epoch, created.position.epoch);
    let published = publish(backplane, &r, "z").await;
    assert_eq!(published.position.epoch, created.position.epoch);
}

async fn offsets_start_at_one_and_have_no_gaps(backplane: &dyn Backplane) {
    let r = room("offsets");
    let start = history(backplane, &r, HistoryRange::Latest { limit: 0 }).await;
    assert_eq!(start.position.offset, Offset::ZERO);
    assert!(start.publications.is_empty());
    for expected in 1..=5 {
        let publication = publish(backplane, &r, "x").await;
        assert_eq!(publication.position.offset, Offset(expected));
        assert_eq!(
            publication.position.epoch, start.position.epoch,
            "reading created the epoch"
        );
        assert_eq!(publication.room, r);
    }
    let other = publish(backplane, &room("offsets:other"), "y").await;
    assert_eq!(
        other.position.offset,
        Offset(1),
        "rooms are numbered separately"
    );
    assert_ne!(other.position.epoch, start.position.epoch);
}

async fn history_since_and_latest(backplane: &dyn Backplane) {
    let r = room("history");
    let mut published = Vec::new();
    for payload in ["m1", "m2", "m3", "m4", "m5"] {
        published.push(publish(backplane, &r, payload).await);
    }
    let epoch = published[0].position.epoch.clone();
    let at = |offset| StreamPosition::new(epoch.clone(), Offset(offset));

    let latest = history(backplane, &r, HistoryRange::Latest { limit: 2 }).await;
    assert_eq!(payloads(&latest.publications), [b"m4", b"m5"]);
    assert_eq!(latest.publications, published[3..]);
    assert_eq!(latest.position, at(5));

    let since = history(
        backplane,
        &r,
        HistoryRange::Since {
            position: at(2),
            limit: 100,
        },
    )
    .await;
    assert!(since.recovered);
    assert_eq!(since.publications, published[2..]);

    let page = history(
        backplane,
        &r,
        HistoryRange::Since {
            position: at(1),
            limit: 2,
        },
    )
    .await;
    assert!(page.recovered, "recovered does not depend on the limit");
    assert_eq!(payloads(&page.publications), [b"m2", b"m3"]);

    let nothing_missed = history(
        backplane,
        &r,
        HistoryRange::Since {
            position: at(5),
            limit: 100,
        },
    )
    .await;
    assert!(nothing_missed.recovered);
    assert!(nothing_missed.publications.is_empty());

    let beyond = history(
        backplane,
        &r,
        HistoryRange::Since {
            position: at(9),
            limit: 100,
        },
    )
    .await;
    assert!(!beyond.recovered);
    assert!(beyond.publications.is_empty());

    let stale = StreamPosition::new(Epoch::from("stale"), Offset(3));
    let other_epoch = history(
        backplane,
        &r,
        HistoryRange::Since {
            position: stale,
            limit: 100,
        },
    )
    .await;
    assert!(!other_epoch.recovered);
    assert_eq!(
        other_epoch.publications, published,
        "the retained history from its start"
    );
    assert_eq!(other_epoch.position, at(5));
}

async fn concurrent_publishes_get_distinct_consecutive_offsets(backplane: Arc<dyn Backplane>) {
    let r = room("concurrent");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (backplane, r) = (Arc::clone(&backplane), r.clone());
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for _ in 0..25 {
                let publication = backplane
                    .publish(&r, Bytes::from_static(b"c"))
                    .await
                    .unwrap();
                offsets.push(publication.position.offset.get());
            }
            offsets
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        let offsets = within("publisher", task).await.unwrap();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "one publisher's offsets increase"
        );
        all.extend(offsets);
    }
    assert_eq!(all, (1..=100).collect::<HashSet<u64>>());
    let page = history(&*backplane, &r, HistoryRange::Latest { limit: 100 }).await;
    let offsets: Vec<u64> = page
        .publications
        .iter()
        .map(|p| p.position.offset.get())
        .collect();
    assert_eq!(
        offsets,
        (1..=100).collect::<Vec<u64>>(),
        "history in offset order"
    );
}

async fn presence_add_list_remove(backplane: &dyn Backplane) {
    let r = room("presence");
    let node = backplane.node_id();
    let alice = PresenceMember {
        client: client(node, 1),
        user: Some("alice".to_owned()),
    };
    let anonymous = PresenceMember {
        client: client(node, 2),
        user: None,
    };
    within("add", backplane.presence_add(&r, alice.clone()))
        .await
        .unwrap();
    within("add", backplane.presence_add(&r, anonymous.clone()))
        .await
        .unwrap();
    within("add again", backplane.presence_add(&r, alice.clone()))
        .await
        .unwrap();
    let mut members = within("list", backplane.presence(&r)).await.unwrap();
    members.sort_by_key(|m| m.client.to_string());
    assert_eq!(members, [alice.clone(), anonymous.clone()]);
    within("remove", backplane.presence_remove(&r, alice.client))
        .await
        .unwrap();
    within(
        "remove absent",
        backplane.presence_remove(&r, client(node, 99)),
    )
    .await
    .unwrap();
    assert_eq!(
        within("list", backplane.presence(&r)).await.unwrap(),
        std::slice::from_ref(&anonymous)
    );
    within("remove", backplane.presence_remove(&r, anonymous.client))
        .await
        .unwrap();
    assert!(
        within("list", backplane.presence(&r))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        within("other room", backplane.presence(&room("presence:empty")))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The next event, skipping none.
pub async fn next_event(events: &mut Events) -> Event {
    within("event", events.recv()).await.expect("events end")
}

/// A send or a disconnect one node asks of another.
#[derive(Debug, Clone, Copy)]
pub enum Ask {
    Send(ConnectionId, &'static str),
    Disconnect(ConnectionId),
}

/// What the holding node does with the event the request brings it.
#[derive(Debug, Clone, Copy)]
pub enum Reaction {
    /// Answers this.
    Answer(Answer),
    /// Drops the event (its reply) without answering.
    Drop,
    /// Keeps the event without ever answering (a hung node).
    Hold,
}

/// `asker` asks `ask` of the node whose events are `holder`, which reacts to the event as
/// told; returns the event and what the asker got.
pub async fn ask(
    asker: &Arc<dyn Backplane>,
    ask: Ask,
    holder: &mut Events,
    reaction: Reaction,
) -> (Event, Routed) {
    let asker = Arc::clone(asker);
    let asking = tokio::spawn(async move {
        match ask {
            Ask::Send(to, payload) => asker.send(to, Bytes::from_static(payload.as_bytes())).await,
            Ask::Disconnect(client) => asker.disconnect(client).await,
        }
    });
    let event = next_event(holder).await;
    let reply = match &event {
        Event::Send { reply, .. } | Event::Disconnect { reply, .. } => reply.clone(),
        other => panic!("expected a send or disconnect, got {other:?}"),
    };
    assert!(reply.is_awaited(), "the asker waits for an answer");
    let kept = match reaction {
        Reaction::Answer(answer) => {
            reply.answer(answer);
            Some(event)
        }
        Reaction::Drop => {
            drop(reply);
            drop(event);
            None
        }
        Reaction::Hold => {
            drop(reply);
            Some(event)
        }
    };
    let routed = within("the asker's answer", asking).await.unwrap().unwrap();
    let event = kept.unwrap_or(Event::Resumed);
    (event, routed)
}

/// Several nodes on one store: delivery, routing, presence across nodes.
pub async fn multi_node(factory: Factory) {
    let one = factory(0xa1).await;
    let two = factory(0xb2).await;
    let mut one_events = one.take_events().unwrap();
    let mut two_events = two.take_events().unwrap();
    let r = room("cluster:room");

    // Publications reach a subscribed node in offset order.
    within("subscribe", two.subscribe(&r)).await.unwrap();
    let mut published = Vec::new();
    for payload in ["a", "b", "c"] {
        published.push(publish(&*one, &r, payload).await);
    }
    for expected in &published {
        assert_eq!(
            next_event(&mut two_events).await,
            Event::Publication(expected.clone())
        );
    }
    // Node two's own publication comes back to it (deduplicated by offset in the server).
    let own = publish(&*two, &r, "d").await;
    assert_eq!(own.position.offset, Offset(4));
    assert_eq!(next_event(&mut two_events).await, Event::Publication(own));

    // Room events reach subscribed nodes.
    within(
        "room event",
        one.room_event(&r, Bytes::from_static(b"joined")),
    )
    .await
    .unwrap();
    assert_eq!(
        next_event(&mut two_events).await,
        Event::RoomEvent {
            room: r.clone(),
            payload: Bytes::from_static(b"joined")
        }
    );

    // Broadcasts reach the other nodes, not the sender.
    within("broadcast", one.broadcast(Bytes::from_static(b"all")))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut two_events).await,
        Event::Broadcast {
            payload: Bytes::from_static(b"all")
        }
    );

    // Sends and disconnects go to the node named by the id's prefix, and what that node
    // answers comes back.
    let on_two = client(0xb2, 7);
    let delivered = Reaction::Answer(Answer::Delivered);
    let (event, routed) = ask(&one, Ask::Send(on_two, "psst"), &mut two_events, delivered).await;
    assert_eq!(
        event,
        Event::Send {
            to: on_two,
            payload: Bytes::from_static(b"psst"),
            reply: Reply::none(),
        }
    );
    assert_eq!(routed, Routed::Delivered);
    let (event, routed) = ask(&one, Ask::Disconnect(on_two), &mut two_events, delivered).await;
    assert_eq!(
        event,
        Event::Disconnect {
            client: on_two,
            reply: Reply::none(),
        }
    );
    assert_eq!(routed, Routed::Delivered);
    for (reaction, expected) in [
        // A connection that has closed on a live node.
        (
            Reaction::Answer(Answer::NoSuchConnection),
            Routed::NoSuchConnection,
        ),
        (Reaction::Answer(Answer::Refused), Routed::Refused),
        // A node that drops the event did not hand it to anyone.
        (Reaction::Drop, Routed::NoSuchConnection),
    ] {
        let (_, routed) = ask(&one, Ask::Send(on_two, "gone?"), &mut two_events, reaction).await;
        assert_eq!(routed, expected, "{reaction:?}");
    }
    let (_, routed) = ask(
        &one,
        Ask::Disconnect(on_two),
        &mut two_events,
        Reaction::Answer(Answer::NoSuchConnection),
    )
    .await;
    assert_eq!(routed, Routed::NoSuchConnection);
    // A node that never answers (hung): unanswered after the answer timeout, within STEP.
    let (_, routed) = ask(
        &one,
        Ask::Send(on_two, "hung"),
        &mut two_events,
        Reaction::Hold,
    )
    .await;
    assert_eq!(routed, Routed::Unanswered);
    // Answers find their way back when several requests are in flight, in any order.
    let asks: Vec<_> = (0..3u64)
        .map(|seq| {
            let one = Arc::clone(&one);
            tokio::spawn(async move { one.send(client(0xb2, seq), Bytes::new()).await })
        })
        .collect();
    let mut replies = Vec::new();
    for _ in 0..3 {
        match next_event(&mut two_events).await {
            Event::Send { to, reply, .. } => replies.push((to, reply)),
            other => panic!("expected a send, got {other:?}"),
        }
    }
    replies.sort_by_key(|(to, _)| std::cmp::Reverse(to.to_string()));
    for (to, reply) in replies {
        let answer = if to == client(0xb2, 1) {
            Answer::NoSuchConnection
        } else {
            Answer::Delivered
        };
        reply.answer(answer);
    }
    let mut answers = Vec::new();
    for asking in asks {
        answers.push(within("ask", asking).await.unwrap().unwrap());
    }
    assert_eq!(
        answers,
        [
            Routed::Delivered,
            Routed::NoSuchConnection,
            Routed::Delivered
        ]
    );
    // An id of no node.
    let nowhere = client(0xdead, 1);
    assert_eq!(
        within("send", one.send(nowhere, Bytes::from_static(b"?")))
            .await
            .unwrap(),
        Routed::NoSuchNode
    );
    // A node that is gone (its backplane dropped, as a killed process's connection closes):
    // no such node, once the backplane server has noticed (bounded).
    let three = factory(0xc3).await;
    drop(three);
    let on_three = client(0xc3, 1);
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let routed = within("send", one.send(on_three, Bytes::from_static(b"?")))
            .await
            .unwrap();
        if routed == Routed::NoSuchNode {
            break;
        }
        assert_eq!(routed, Routed::Unanswered, "a gone node answers nothing");
        assert!(
            tokio::time::Instant::now() < deadline,
            "node three still listed"
        );
    }

    // After unsubscribing, node two no longer gets the room; node one got nothing at all.
    within("unsubscribe", two.unsubscribe(&r)).await.unwrap();
    publish(&*one, &r, "e").await;
    within("broadcast", two.broadcast(Bytes::from_static(b"from two")))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut one_events).await,
        Event::Broadcast {
            payload: Bytes::from_static(b"from two")
        }
    );
    assert!(
        two_events.try_recv().is_err(),
        "nothing after unsubscribing"
    );

    // Presence lists every node's members.
    let p = room("cluster:presence");
    let a = PresenceMember {
        client: client(0xa1, 1),
        user: Some("a".to_owned()),
    };
    let b = PresenceMember {
        client: client(0xb2, 1),
        user: None,
    };
    within("add", one.presence_add(&p, a.clone()))
        .await
        .unwrap();
    within("add", two.presence_add(&p, b.clone()))
        .await
        .unwrap();
    for node in [&one, &two] {
        let mut members = within("list", node.presence(&p)).await.unwrap();
        members.sort_by_key(|m| m.client.to_string());
        assert_eq!(members, [a.clone(), b.clone()]);
    }
}
