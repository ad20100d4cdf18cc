//! The exact lost range over real sockets: a subscribe whose recovery cannot replay
//! everything says, in its `ok`'s `lost`, which offsets are gone (docs/PROTOCOL.md, "Lost
//! ranges"), and every offset after its `since` is either replayed, delivered live, or
//! named there, once. Cases: history trimmed by count, a replay cut to its newest part for
//! size, and a new epoch (the server restarted on the memory backplane).

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::*;
use wshub_server::state::ServerOptions;

/// Publishes `count` messages to `room` from a connection of its own, each acknowledged;
/// their data is `first`, `first + 1`, ... padded with `padding` bytes.
async fn publish_many(
    addr: std::net::SocketAddr,
    room: &str,
    first: u64,
    count: u64,
    padding: usize,
) {
    let (mut ws, _) = connect(addr).await;
    let pad = "x".repeat(padding);
    for n in first..first + count {
        let ok = request(
            &mut ws,
            json!({"type": "publish", "room": room, "id": n, "data": {"n": n, "pad": pad}}),
        )
        .await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
}

/// Reads `message` frames until the one at `offset` in `epoch`; returns their offsets,
/// each checked to be of `epoch` and to follow the previous one.
async fn read_to(ws: &mut Client, epoch: &Value, offset: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    loop {
        let frame = next(ws).await;
        assert_eq!(frame["type"], "message", "{frame}");
        assert_eq!(&frame["epoch"], epoch, "{frame}");
        let at = frame["offset"].as_u64().expect("offset");
        if let Some(previous) = offsets.last() {
            assert_eq!(at, previous + 1, "in order, no gap: {frame}");
        }
        offsets.push(at);
        if at == offset {
            return offsets;
        }
    }
}

/// The offsets a `lost` range of `epoch` names (one with no `to` in another epoch is
/// checked by the caller).
fn lost_in(lost: &Value, epoch: &Value) -> Vec<u64> {
    lost.as_array()
        .expect("lost is an array")
        .iter()
        .filter(|range| &range["epoch"] == epoch)
        .flat_map(|range| {
            let from = range["from"].as_u64().expect("from");
            let to = range["to"].as_u64().expect("to within the room's epoch");
            from..=to
        })
        .collect()
}

/// Every offset from `after + 1` to `latest` exactly once across `lost` and `delivered`.
fn each_offset_once(after: u64, latest: u64, lost: &[u64], delivered: &[u64]) {
    let mut all: Vec<u64> = lost.iter().chain(delivered).copied().collect();
    all.sort_unstable();
    let expected: Vec<u64> = (after + 1..=latest).collect();
    assert_eq!(all, expected, "lost {lost:?}, delivered {delivered:?}");
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "an offset both lost and delivered"
    );
}

#[tokio::test]
async fn history_trimmed_by_count_names_exactly_the_trimmed_offsets() {
    let mut options = ServerOptions::default();
    options.history.max_messages = 5;
    let server = start(options).await;
    let addr = server.local_addr();

    // A subscriber sees offsets 1 to 3, then goes away.
    let (mut ws, _) = connect(addr).await;
    let ok = request(&mut ws, json!({"type": "subscribe", "room": "t", "id": 1})).await;
    let epoch = ok["epoch"].clone();
    publish_many(addr, "t", 1, 3, 0).await;
    assert_eq!(read_to(&mut ws, &epoch, 3).await, [1, 2, 3]);
    drop(ws);

    // 20 more while away: offsets 4 to 23; the history keeps 19 to 23.
    publish_many(addr, "t", 4, 20, 0).await;
    let (mut ws, _) = connect(addr).await;
    let ok = request(
        &mut ws,
        json!({"type": "subscribe", "room": "t", "id": 2, "since": {"epoch": epoch, "offset": 3}}),
    )
    .await;
    assert_eq!(ok["recovered"], false, "{ok}");
    assert_eq!(ok["offset"], 23, "{ok}");
    assert_eq!(
        ok["lost"],
        json!([{"epoch": epoch, "from": 4, "to": 18}]),
        "{ok}"
    );
    let replayed = read_to(&mut ws, &epoch, 23).await;
    assert_eq!(replayed, [19, 20, 21, 22, 23]);
    each_offset_once(3, 23, &lost_in(&ok["lost"], &epoch), &replayed);

    // Live delivery carries on right after the replay.
    publish_many(addr, "t", 24, 1, 0).await;
    assert_eq!(read_to(&mut ws, &epoch, 24).await, [24]);
    nothing_pending(&mut ws).await;

    // A subscribe that recovers everything carries no `lost`.
    let (mut again, _) = connect(addr).await;
    let ok = request(
        &mut again,
        json!({"type": "subscribe", "room": "t", "id": 3, "since": {"epoch": epoch, "offset": 21}}),
    )
    .await;
    assert_eq!(ok["recovered"], true, "{ok}");
    assert!(ok.get("lost").is_none(), "{ok}");
    assert_eq!(read_to(&mut again, &epoch, 24).await, [22, 23, 24]);
    stop(server).await;
}

#[tokio::test]
async fn a_replay_cut_for_size_names_the_dropped_oldest_part() {
    let mut options = ServerOptions::default();
    // Replays are cut to half the send queue: 32 KiB here, about 7 of the 4 KiB messages.
    options.hub.send_queue_max_bytes = 64 * 1024;
    let server = start(options).await;
    let addr = server.local_addr();
    let (mut ws, _) = connect(addr).await;
    let ok = request(
        &mut ws,
        json!({"type": "subscribe", "room": "big", "id": 1}),
    )
    .await;
    let epoch = ok["epoch"].clone();
    drop(ws);

    publish_many(addr, "big", 1, 30, 4096).await;
    let (mut ws, _) = connect(addr).await;
    let ok = request(
        &mut ws,
        json!({"type": "subscribe", "room": "big", "id": 2, "since": {"epoch": epoch, "offset": 0}}),
    )
    .await;
    assert_eq!(ok["recovered"], false, "{ok}");
    assert_eq!(ok["offset"], 30, "{ok}");
    let replayed = read_to(&mut ws, &epoch, 30).await;
    let first = replayed[0];
    assert!(
        (2..30).contains(&first),
        "replay cut to its newest part: {replayed:?}"
    );
    assert_eq!(
        ok["lost"],
        json!([{"epoch": epoch, "from": 1, "to": first - 1}]),
        "{ok}"
    );
    each_offset_once(0, 30, &lost_in(&ok["lost"], &epoch), &replayed);
    nothing_pending(&mut ws).await;
    stop(server).await;
}

#[tokio::test]
async fn a_new_epoch_names_the_rest_of_the_old_one_and_what_the_new_one_no_longer_has() {
    let mut options = ServerOptions::default();
    options.history.max_messages = 5;

    // The first run: a client sees offsets 1 to 4 of the room.
    let server = start(options.clone()).await;
    let (mut ws, _) = connect(server.local_addr()).await;
    let ok = request(&mut ws, json!({"type": "subscribe", "room": "e", "id": 1})).await;
    let old = ok["epoch"].clone();
    publish_many(server.local_addr(), "e", 1, 4, 0).await;
    assert_eq!(read_to(&mut ws, &old, 4).await, [1, 2, 3, 4]);
    drop(ws);
    stop(server).await;

    // The server restarts on the memory backplane: the room's history is gone, a new epoch
    // begins, and 8 are published to it (the history keeps 4 to 8).
    let server = start(options).await;
    let addr = server.local_addr();
    publish_many(addr, "e", 1, 8, 0).await;
    let (mut ws, _) = connect(addr).await;
    let ok = request(
        &mut ws,
        json!({"type": "subscribe", "room": "e", "id": 2, "since": {"epoch": old, "offset": 4}}),
    )
    .await;
    let new = ok["epoch"].clone();
    assert_ne!(new, old, "{ok}");
    assert_eq!(ok["recovered"], false, "{ok}");
    assert_eq!(ok["offset"], 8, "{ok}");
    // Everything after offset 4 of the old epoch (its end is unknown), and 1 to 3 of the
    // new one, which its history no longer holds.
    assert_eq!(
        ok["lost"],
        json!([{"epoch": old, "from": 5}, {"epoch": new, "from": 1, "to": 3}]),
        "{ok}"
    );
    let replayed = read_to(&mut ws, &new, 8).await;
    assert_eq!(replayed, [4, 5, 6, 7, 8]);
    each_offset_once(0, 8, &lost_in(&ok["lost"], &new), &replayed);
    nothing_pending(&mut ws).await;

    // A client of an epoch nobody knows, resuming a room whose new epoch is fully kept:
    // only the old epoch's rest is lost.
    let (mut other, _) = connect(addr).await;
    publish_many(addr, "f", 1, 2, 0).await;
    let ok = request(
        &mut other,
        json!({"type": "subscribe", "room": "f", "id": 3, "since": {"epoch": "gone", "offset": 7}}),
    )
    .await;
    assert_eq!(ok["recovered"], false, "{ok}");
    assert_eq!(ok["lost"], json!([{"epoch": "gone", "from": 8}]), "{ok}");
    let current = ok["epoch"].clone();
    assert_eq!(read_to(&mut other, &current, 2).await, [1, 2]);
    stop(server).await;
}
