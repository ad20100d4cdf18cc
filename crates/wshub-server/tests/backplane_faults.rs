//! The delivery promise when the backplane's data or connection is disturbed, against a
//! Redis server (and a NATS server) this test starts on its own port: every subscriber
//! either receives each offset of its room once and in order, or is told, with an
//! `unrecoverable` frame, exactly which ones it lost. Scenarios:
//!
//! - Redis restarted from a snapshot older than what was numbered since: a new epoch,
//!   announced; a client resuming from the lost offsets is told `recovered: false`.
//! - A Redis server resynchronised from a lagging replica (as after a failover) and made
//!   primary again: the same process, an older dataset; a new epoch, announced.
//! - A room's history going back without a restart (its record rewritten to an older
//!   state): the node that delivered more renews the epoch and announces it.
//! - On NATS, the history stream purged: a new epoch, announced.
//! - On NATS, the room's messages replaced by older ones (as a restore from an older copy
//!   would leave them): the next publish starts a new epoch, announced to every node's
//!   subscribers, whether it goes through the node that published before or through one
//!   that only followed the room.
//! - A node's Redis connection killed and refused for a moment while another node
//!   publishes (on NATS: the node's connection cut by a relay in between): the node
//!   catches up at once, without waiting for a later publish.
//! - The same, and a client that already saw those publications on the other node
//!   resumes on the lagging one: `recovered: true`, nothing twice.
//! - A room's history lost and found first by a subscribe (Redis and NATS): the room's
//!   existing subscribers are told.
//! - A publication of an old epoch arriving late: it changes nothing.
//! - A subscribe while Redis (or NATS) is down: the retryable `unavailable` error, at once.

mod support;

use std::{
    collections::HashSet,
    future::IntoFuture,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{own_server::OwnServer, *};
use wshub_server::{
    app::RunningServer,
    state::{BackplaneOptions, ServerOptions},
};

const KEY: &str = "backplane-faults-key";

async fn node(backplane: &BackplaneOptions) -> RunningServer {
    start(ServerOptions {
        api_key: Some(KEY.to_owned()),
        rate_limit: None,
        presence_events: false,
        backplane: backplane.clone(),
        ..ServerOptions::default()
    })
    .await
}

fn redis_backplane(redis: &OwnServer) -> BackplaneOptions {
    BackplaneOptions::Redis {
        url: redis.url(),
        prefix: "t:".to_owned(),
    }
}

/// A publication the API accepted.
#[derive(Debug, Clone)]
struct Accepted {
    data: Value,
    epoch: String,
    offset: u64,
}

async fn publish(addr: SocketAddr, room: &str, data: Value) -> Accepted {
    let (status, body) = api(
        addr,
        KEY,
        "/api/publish",
        json!({"room": room, "data": data}),
    )
    .await;
    assert_eq!(status, 200, "publish {data}: {body}");
    Accepted {
        data,
        epoch: body["epoch"].as_str().expect("epoch").to_owned(),
        offset: body["offset"].as_u64().expect("offset"),
    }
}

async fn publish_all(
    addr: SocketAddr,
    room: &str,
    data: impl IntoIterator<Item = Value>,
) -> Vec<Accepted> {
    let mut accepted = Vec::new();
    for data in data {
        accepted.push(publish(addr, room, data).await);
    }
    accepted
}

/// A subscriber, and every `message` and `unrecoverable` frame it received, in order,
/// after its subscribe's `ok` (whose position starts the log).
struct Watcher {
    ws: Client,
    start: (String, u64),
    log: Vec<Value>,
}

impl Watcher {
    async fn subscribe(addr: SocketAddr, room: &str) -> Watcher {
        let (mut ws, _) = connect(addr).await;
        let ok = request(
            &mut ws,
            json!({"type": "subscribe", "room": room, "id": "s"}),
        )
        .await;
        assert_eq!(ok["type"], "ok", "{ok}");
        Watcher {
            ws,
            start: (
                ok["epoch"].as_str().expect("epoch").to_owned(),
                ok["offset"].as_u64().expect("offset"),
            ),
            log: Vec::new(),
        }
    }

    /// Reads until a message carrying `data` (bounded by the support's step timeout).
    async fn read_until(&mut self, data: &Value) {
        loop {
            let frame = next(&mut self.ws).await;
            let done = frame["type"] == "message" && &frame["data"] == data;
            if frame["type"] == "message" || frame["type"] == "unrecoverable" {
                self.log.push(frame);
            }
            if done {
                return;
            }
        }
    }

    /// The `unrecoverable` frames received so far.
    fn told(&self) -> Vec<&Value> {
        self.log
            .iter()
            .filter(|frame| frame["type"] == "unrecoverable")
            .collect()
    }
}

/// The outside view: walking `watcher`'s log from its subscribe's position, each message
/// follows the previous position directly (same epoch, next offset), nothing arrives twice,
/// no `unrecoverable` moves back within an epoch, and every accepted publication either
/// arrived or lies in a range an `unrecoverable` frame declared lost.
fn assert_each_offset_once_or_told(who: &str, watcher: &Watcher, accepted: &[Accepted]) {
    let (mut epoch, mut offset) = watcher.start.clone();
    // (epoch, after, up to and including): what the subscriber was told it lost.
    let mut lost: Vec<(String, u64, u64)> = Vec::new();
    let mut seen = HashSet::new();
    for frame in &watcher.log {
        let frame_epoch = frame["epoch"].as_str().expect("epoch").to_owned();
        let frame_offset = frame["offset"].as_u64().expect("offset");
        if frame["type"] == "unrecoverable" {
            assert_eq!(frame["recovered"], false, "{who}: {frame}");
            // What the frame must name as lost: everything between the subscriber's
            // position and the frame's.
            let mut expected = Vec::new();
            if frame_epoch == epoch {
                assert!(
                    frame_offset >= offset,
                    "{who}: {frame} moves back from {epoch}/{offset}"
                );
                if frame_offset > offset {
                    expected.push(json!({"epoch": epoch, "from": offset + 1, "to": frame_offset}));
                }
            } else {
                expected.push(json!({"epoch": epoch, "from": offset + 1}));
                if frame_offset > 0 {
                    expected.push(json!({"epoch": frame_epoch, "from": 1, "to": frame_offset}));
                }
            }
            let told = frame.get("lost").cloned().unwrap_or(json!([]));
            assert_eq!(
                told,
                json!(expected),
                "{who}: {frame} after {epoch}/{offset}"
            );
            // The subscriber trusts the frame's ranges.
            for range in told.as_array().expect("lost ranges") {
                lost.push((
                    range["epoch"].as_str().expect("epoch").to_owned(),
                    range["from"].as_u64().expect("from") - 1,
                    range["to"].as_u64().unwrap_or(u64::MAX),
                ));
            }
        } else {
            assert!(
                seen.insert(frame["data"].to_string()),
                "{who}: {frame} twice"
            );
            assert!(
                frame_epoch == epoch && frame_offset == offset + 1,
                "{who}: {frame} after {epoch}/{offset} without being told what was lost \
                 (log: {:?})",
                watcher.log
            );
        }
        (epoch, offset) = (frame_epoch, frame_offset);
    }
    for publication in accepted {
        if seen.contains(&publication.data.to_string()) {
            continue;
        }
        assert!(
            lost.iter()
                .any(|(epoch, after, up_to)| *epoch == publication.epoch
                    && publication.offset > *after
                    && publication.offset <= *up_to),
            "{who}: {publication:?} lost without being told (log: {:?})",
            watcher.log
        );
    }
}

fn data(range: std::ops::RangeInclusive<u64>) -> Vec<Value> {
    range.map(|i| json!(i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restored_from_an_older_snapshot_starts_a_new_epoch_and_says_so() {
    let Some(mut redis) = OwnServer::start("redis") else {
        return;
    };
    let backplane = redis_backplane(&redis);
    let node = node(&backplane).await;
    let addr = node.local_addr();
    let mut watcher = Watcher::subscribe(addr, "r").await;
    let mut accepted = publish_all(addr, "r", data(1..=5)).await;
    // The snapshot holds offsets 1 to 5; 6 to 10 are numbered after it.
    assert_eq!(redis.redis(&["SAVE"]), "+OK");
    accepted.extend(publish_all(addr, "r", data(6..=10)).await);
    watcher.read_until(&json!(10)).await;
    let old_epoch = accepted[0].epoch.clone();
    assert_eq!(accepted[9].offset, 10);

    redis.kill();
    assert!(redis.restart());
    wait_health(addr, "ok").await;
    let after = publish_all(addr, "r", data(11..=15)).await;
    // Not offsets 6 to 10 again in the old epoch: they name other publications.
    assert!(
        after.iter().all(|p| p.epoch != old_epoch),
        "numbered again in the old epoch: {after:?}"
    );
    accepted.extend(after);
    watcher.read_until(&json!(15)).await;
    assert_each_offset_once_or_told("subscriber", &watcher, &accepted);
    assert!(!watcher.told().is_empty(), "never told: {:?}", watcher.log);

    // A client resuming after offset 10 of the old epoch learns that history is gone.
    let (mut ws, _) = connect(addr).await;
    let ok = request(
        &mut ws,
        json!({"type": "subscribe", "room": "r", "id": 1,
               "since": {"epoch": old_epoch, "offset": 10}}),
    )
    .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["recovered"], false, "{ok}");
    assert_ne!(ok["epoch"], json!(old_epoch), "{ok}");
    // The rest of the old epoch is lost; the new one is replayed from its start, each
    // offset once, up to the `ok`'s.
    let latest = ok["offset"].as_u64().expect("offset");
    assert_eq!(
        ok["lost"],
        json!([{"epoch": old_epoch, "from": 11}]),
        "{ok}"
    );
    for offset in 1..=latest {
        let message = next(&mut ws).await;
        assert_eq!(
            (&message["epoch"], message["offset"].as_u64()),
            (&ok["epoch"], Some(offset)),
            "{message}"
        );
    }
    nothing_pending(&mut ws).await;
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_resynchronised_from_a_lagging_replica_starts_a_new_epoch() {
    let (Some(primary), Some(replica)) = (OwnServer::start("redis"), OwnServer::start("redis"))
    else {
        return;
    };
    let backplane = redis_backplane(&primary);
    let node = node(&backplane).await;
    let addr = node.local_addr();
    let mut watcher = Watcher::subscribe(addr, "r").await;
    let mut accepted = publish_all(addr, "r", data(1..=5)).await;
    // The replica copies offsets 1 to 5, then leaves (promoted elsewhere, lagging).
    follow(&replica, &primary);
    wait_for_offset(&replica, "5");
    assert_eq!(replica.redis(&["REPLICAOF", "NO", "ONE"]), "+OK");
    accepted.extend(publish_all(addr, "r", data(6..=10)).await);
    watcher.read_until(&json!(10)).await;

    // The same server process takes the lagging copy by a full resynchronisation, then is
    // made primary again: its run id is the one that wrote the room's record.
    follow(&primary, &replica);
    wait_for_offset(&primary, "5");
    assert_eq!(primary.redis(&["REPLICAOF", "NO", "ONE"]), "+OK");
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let (status, body) = api(addr, KEY, "/api/publish", json!({"room": "r", "data": 11})).await;
        if status == 200 {
            break Accepted {
                data: json!(11),
                epoch: body["epoch"].as_str().expect("epoch").to_owned(),
                offset: body["offset"].as_u64().expect("offset"),
            };
        }
        // The node's connection may be cut by the role changes: it comes back.
        assert!(Instant::now() < deadline, "publish: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(
        first.epoch, accepted[0].epoch,
        "numbered again in the old epoch: {first:?}"
    );
    accepted.push(first);
    accepted.extend(publish_all(addr, "r", data(12..=13)).await);
    watcher.read_until(&json!(13)).await;
    assert_each_offset_once_or_told("subscriber", &watcher, &accepted);
    assert_eq!(watcher.told().len(), 1, "{:?}", watcher.log);
    stop(node).await;
}

/// Makes `server` a replica of `primary`, which sends its dataset at once (it would wait
/// 5 s for more replicas by default).
fn follow(server: &OwnServer, primary: &OwnServer) {
    assert_eq!(
        primary.redis(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]),
        "+OK"
    );
    let url = primary.url();
    let port = url.rsplit(':').next().expect("port");
    assert_eq!(server.redis(&["REPLICAOF", "127.0.0.1", port]), "+OK");
}

/// Waits until `server` holds room `r`'s record at `offset` (bounded).
fn wait_for_offset(server: &OwnServer, offset: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.redis(&["HGET", "t:meta:r", "s"]) != offset {
        assert!(
            Instant::now() < deadline,
            "{} never reached offset {offset}",
            server.url()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_that_goes_back_without_a_restart_gets_a_new_epoch() {
    let Some(redis) = OwnServer::start("redis") else {
        return;
    };
    let backplane = redis_backplane(&redis);
    let (publisher, follower) = (node(&backplane).await, node(&backplane).await);
    let mut watcher = Watcher::subscribe(follower.local_addr(), "r").await;
    let mut accepted = publish_all(publisher.local_addr(), "r", data(1..=10)).await;
    watcher.read_until(&json!(10)).await;

    // The room's record and stream rewritten to what they were at offset 5.
    assert_eq!(redis.redis(&["HSET", "t:meta:r", "s", "5"]), ":0");
    for offset in 6..=10 {
        assert_eq!(
            redis.redis(&["XDEL", "t:stream:r", &format!("{offset}-0")]),
            ":1"
        );
    }
    // Any read of the room by the follower finds it behind what it delivered: here a new
    // subscriber's.
    let late = Watcher::subscribe(follower.local_addr(), "r").await;
    assert_ne!(
        late.start.0, accepted[0].epoch,
        "the subscribe saw the old epoch"
    );
    let after = publish_all(publisher.local_addr(), "r", data(11..=13)).await;
    assert!(after.iter().all(|p| p.epoch == late.start.0), "{after:?}");
    accepted.extend(after);
    watcher.read_until(&json!(13)).await;
    assert_each_offset_once_or_told("subscriber", &watcher, &accepted);
    assert_eq!(watcher.told().len(), 1, "{:?}", watcher.log);
    stop(publisher).await;
    stop(follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_stream_that_goes_back_starts_a_new_epoch_and_says_so() {
    nats_stream_goes_back(Next::Publisher, "bpback").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_stream_that_goes_back_is_caught_by_a_node_that_only_followed_the_room() {
    nats_stream_goes_back(Next::Follower, "bpbackf").await;
}

/// Which node publishes after the stream went back: the one that published before (it
/// remembers the room's last message it wrote), or the one that only received them live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Publisher,
    Follower,
}

async fn nats_stream_goes_back(next: Next, prefix: &str) {
    let Some(nats) = OwnServer::start("nats") else {
        return;
    };
    let backplane = BackplaneOptions::Nats {
        url: nats.url(),
        prefix: prefix.to_owned(),
    };
    let (publisher, follower) = (node(&backplane).await, node(&backplane).await);
    let mut watcher = Watcher::subscribe(follower.local_addr(), "r").await;
    let mut accepted = publish_all(publisher.local_addr(), "r", data(1..=10)).await;
    watcher.read_until(&json!(10)).await;

    // The room's messages replaced by its first five, as a restore from a copy taken at
    // offset 5 would leave them: its record says offset 5 of the same epoch.
    let (js, stream) = nats_history(&nats, prefix).await;
    let subject = format!("{prefix}.h.{}", hex("r"));
    within("purge", stream.purge().filter(&subject).into_future())
        .await
        .expect("purge");
    for publication in &accepted[..5] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Wshub-Offset", publication.offset.to_string());
        headers.insert("Wshub-Epoch", publication.epoch.as_str());
        let payload = format!("\n{}", publication.data);
        let ack = within(
            "restore",
            js.publish_with_headers(subject.clone(), headers, payload.into()),
        )
        .await
        .expect("publish");
        within("ack", ack.into_future()).await.expect("ack");
    }
    let through = match next {
        Next::Publisher => publisher.local_addr(),
        Next::Follower => follower.local_addr(),
    };
    let after = publish_all(through, "r", data(11..=13)).await;
    assert!(
        after.iter().all(|p| p.epoch != accepted[0].epoch),
        "numbered again in the old epoch: {after:?}"
    );
    accepted.extend(after);
    watcher.read_until(&json!(13)).await;
    assert_each_offset_once_or_told("subscriber", &watcher, &accepted);
    assert_eq!(watcher.told().len(), 1, "{:?}", watcher.log);
    stop(publisher).await;
    stop(follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_nats_stream_starts_a_new_epoch_and_says_so() {
    let Some(nats) = OwnServer::start("nats") else {
        return;
    };
    let prefix = "bppurge";
    let backplane = BackplaneOptions::Nats {
        url: nats.url(),
        prefix: prefix.to_owned(),
    };
    let (publisher, follower) = (node(&backplane).await, node(&backplane).await);
    let mut watcher = Watcher::subscribe(follower.local_addr(), "r").await;
    let mut accepted = publish_all(publisher.local_addr(), "r", data(1..=5)).await;
    watcher.read_until(&json!(5)).await;

    let (_, stream) = nats_history(&nats, prefix).await;
    within("purge", stream.purge().into_future())
        .await
        .expect("purge");
    let after = publish_all(publisher.local_addr(), "r", data(6..=8)).await;
    assert!(
        after.iter().all(|p| p.epoch != accepted[0].epoch),
        "numbered again in the old epoch: {after:?}"
    );
    accepted.extend(after);
    watcher.read_until(&json!(8)).await;
    assert_each_offset_once_or_told("subscriber", &watcher, &accepted);
    assert_eq!(watcher.told().len(), 1, "{:?}", watcher.log);
    stop(publisher).await;
    stop(follower).await;
}

/// A room name as the NATS backplane's subjects spell it.
fn hex(room: &str) -> String {
    room.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brief_redis_disconnect_is_caught_up_at_once() {
    if let Some(setup) = Outage::redis() {
        brief_disconnect(setup).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brief_nats_disconnect_is_caught_up_at_once() {
    if let Some(setup) = Outage::nats().await {
        brief_disconnect(setup).await;
    }
}

async fn brief_disconnect(outage: Outage) {
    let (publisher, follower) = outage.nodes().await;
    let mut watcher = Watcher::subscribe(follower.local_addr(), "r").await;
    let _marker = Watcher::subscribe(follower.local_addr(), "marker").await;
    let mut accepted = vec![publish(publisher.local_addr(), "r", json!(1)).await];
    watcher.read_until(&json!(1)).await;

    accepted.extend(
        outage
            .cut_off_while_published(publisher.local_addr(), data(2..=4))
            .await,
    );
    // No later publish, no other client: the follower catches up by itself.
    watcher.read_until(&json!(4)).await;
    assert_each_offset_once_or_told("follower's subscriber", &watcher, &accepted);
    assert!(watcher.told().is_empty(), "{:?}", watcher.log);
    stop(publisher).await;
    stop(follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ahead_of_a_lagging_node_resumes_with_everything() {
    if let Some(setup) = Outage::redis() {
        client_ahead(setup).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ahead_of_a_lagging_nats_node_resumes_with_everything() {
    if let Some(setup) = Outage::nats().await {
        client_ahead(setup).await;
    }
}

async fn client_ahead(outage: Outage) {
    let (publisher, follower) = outage.nodes().await;
    let mut watcher = Watcher::subscribe(follower.local_addr(), "r").await;
    let _marker = Watcher::subscribe(follower.local_addr(), "marker").await;
    let mut elsewhere = Watcher::subscribe(publisher.local_addr(), "r").await;
    let mut accepted = vec![publish(publisher.local_addr(), "r", json!(1)).await];
    watcher.read_until(&json!(1)).await;

    accepted.extend(
        outage
            .cut_off_while_published(publisher.local_addr(), data(2..=4))
            .await,
    );
    elsewhere.read_until(&json!(4)).await;
    // A client that saw offset 4 on the publisher's node resumes on the follower as soon
    // as it answers (most often before the follower has caught up): it is served from
    // offset 5 and told it recovered, never sent 2 to 4 again.
    let (mut ws, _) = connect(follower.local_addr()).await;
    let since = json!({"epoch": accepted[3].epoch, "offset": accepted[3].offset});
    let deadline = Instant::now() + Duration::from_secs(10);
    let ok = loop {
        let reply = request(
            &mut ws,
            json!({"type": "subscribe", "room": "r", "id": 1, "since": since}),
        )
        .await;
        if reply["type"] == "ok" {
            break reply;
        }
        // The follower has not reconnected yet: a retryable error.
        assert_eq!(reply["code"], "unavailable", "{reply}");
        assert!(Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ok["recovered"], true, "{ok}");
    assert!(ok["offset"].as_u64().expect("offset") >= 4, "{ok}");
    let mut resumed = Watcher {
        ws,
        start: (accepted[3].epoch.clone(), accepted[3].offset),
        log: Vec::new(),
    };
    accepted.push(publish(publisher.local_addr(), "r", json!(5)).await);
    resumed.read_until(&json!(5)).await;
    assert_each_offset_once_or_told("resumed client", &resumed, &accepted[4..]);
    watcher.read_until(&json!(5)).await;
    assert_each_offset_once_or_told("follower's subscriber", &watcher, &accepted);
    stop(publisher).await;
    stop(follower).await;
}

/// Two nodes on one backplane, the publisher and the follower, and a way to cut the
/// follower off its backplane for a moment far shorter than its health check while the
/// publisher goes on.
enum Outage {
    /// The follower's Redis connection is killed and its reconnection refused.
    Redis(OwnServer),
    /// The follower reaches NATS through a relay of the test's, which drops its
    /// connections and refuses new ones.
    Nats { nats: OwnServer, relay: Relay },
}

impl Outage {
    fn redis() -> Option<Outage> {
        OwnServer::start("redis").map(Outage::Redis)
    }

    async fn nats() -> Option<Outage> {
        let nats = OwnServer::start("nats")?;
        let relay = Relay::start(&nats).await;
        Some(Outage::Nats { nats, relay })
    }

    /// The publisher and the follower.
    async fn nodes(&self) -> (RunningServer, RunningServer) {
        match self {
            Outage::Redis(redis) => {
                let backplane = redis_backplane(redis);
                (node(&backplane).await, node(&backplane).await)
            }
            Outage::Nats { nats, relay } => {
                let nats_at = |url: String| BackplaneOptions::Nats {
                    url,
                    prefix: "bpcut".to_owned(),
                };
                (
                    node(&nats_at(nats.url())).await,
                    node(&nats_at(format!("nats://{}", relay.addr))).await,
                )
            }
        }
    }

    /// Cuts the follower off while `data` is published through `publisher`, then lets it
    /// back in.
    async fn cut_off_while_published(
        &self,
        publisher: SocketAddr,
        data: Vec<Value>,
    ) -> Vec<Accepted> {
        match self {
            // Its connection is the only one with four channels: its node channel, the
            // broadcast channel and two rooms'. No new connection over a limit of 1.
            Outage::Redis(redis) => {
                let id = redis_client_with_channels(redis, 4);
                let mut session = redis.redis_session();
                assert_eq!(
                    session.command(&["CONFIG", "SET", "maxclients", "1"]),
                    "+OK"
                );
                assert_eq!(session.command(&["CLIENT", "KILL", "ID", &id]), ":1");
                let accepted = publish_all(publisher, "r", data).await;
                assert_eq!(
                    session.command(&["CONFIG", "SET", "maxclients", "10000"]),
                    "+OK"
                );
                accepted
            }
            Outage::Nats { relay, .. } => {
                relay.cut();
                let accepted = publish_all(publisher, "r", data).await;
                relay.reopen();
                accepted
            }
        }
    }
}

/// A TCP relay on a free loopback port in front of a test's own server: what passes
/// through it can be cut at once, and new connections refused for a while.
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(server: &OwnServer) -> Relay {
        let upstream: SocketAddr = server
            .url()
            .split_once("://")
            .and_then(|(_, addr)| addr.parse().ok())
            .expect("the server's address");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (accept_open, accept_links) = (Arc::clone(&open), Arc::clone(&links));
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_open.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                accept_links.lock().expect("links").push(link);
            }
        });
        Relay {
            addr,
            open,
            links,
            accept,
        }
    }

    /// Drops every connection through the relay and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    /// Lets new connections through again.
    fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// The id of the one Redis client subscribed to `channels` channels.
fn redis_client_with_channels(redis: &OwnServer, channels: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = redis.redis(&["CLIENT", "LIST"]);
        let matching: Vec<&str> = list
            .lines()
            .filter(|line| line.contains(&format!(" sub={channels} ")))
            .collect();
        if let [line] = matching[..] {
            return line
                .split(' ')
                .find_map(|field| field.strip_prefix("id="))
                .expect("id")
                .to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no single client with {channels} channels: {list}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_change_found_by_a_subscribe_is_announced() {
    let Some(redis) = OwnServer::start("redis") else {
        return;
    };
    found_by_a_subscribe(&redis_backplane(&redis), || async {
        assert_eq!(redis.redis(&["DEL", "t:meta:r", "t:stream:r"]), ":2");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_change_found_by_a_subscribe_is_announced_on_nats() {
    let Some(nats) = OwnServer::start("nats") else {
        return;
    };
    let prefix = "bpfound";
    let backplane = BackplaneOptions::Nats {
        url: nats.url(),
        prefix: prefix.to_owned(),
    };
    found_by_a_subscribe(&backplane, || async {
        let (_, stream) = nats_history(&nats, prefix).await;
        let subject = format!("{prefix}.h.{}", hex("r"));
        within("purge", stream.purge().filter(&subject).into_future())
            .await
            .expect("purge");
    })
    .await;
}

/// A JetStream client of the test's own, and the history stream of the NATS backplane
/// with this prefix.
async fn nats_history(
    nats: &OwnServer,
    prefix: &str,
) -> (
    async_nats::jetstream::Context,
    async_nats::jetstream::stream::Stream,
) {
    let client = within("nats", async_nats::connect(nats.url()))
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(client);
    let stream = within("stream", js.get_stream(format!("{prefix}_history")))
        .await
        .expect("stream");
    (js, stream)
}

/// A room's history lost (by `lose`) and found first by a subscribe: the room's existing
/// subscriber is told before anything of the new epoch.
async fn found_by_a_subscribe<F: std::future::Future<Output = ()>>(
    backplane: &BackplaneOptions,
    lose: impl FnOnce() -> F,
) {
    let node = node(backplane).await;
    let addr = node.local_addr();
    let mut watcher = Watcher::subscribe(addr, "r").await;
    let mut accepted = publish_all(addr, "r", data(1..=3)).await;
    watcher.read_until(&json!(3)).await;

    // The room's history is lost; a new subscriber is the first to read the room again.
    lose().await;
    let late = Watcher::subscribe(addr, "r").await;
    assert_ne!(late.start.0, accepted[0].epoch);
    // The existing subscriber is told before anything of the new epoch.
    let told = next(&mut watcher.ws).await;
    assert_eq!(told["type"], "unrecoverable", "{told}");
    assert_eq!(told["epoch"], json!(late.start.0), "{told}");
    watcher.log.push(told);
    accepted.extend(publish_all(addr, "r", data(4..=5)).await);
    watcher.read_until(&json!(5)).await;
    assert_each_offset_once_or_told("subscriber", &watcher, &accepted);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_publication_of_an_old_epoch_changes_nothing() {
    let Some(redis) = OwnServer::start("redis") else {
        return;
    };
    let backplane = redis_backplane(&redis);
    let node = node(&backplane).await;
    let addr = node.local_addr();
    let mut watcher = Watcher::subscribe(addr, "r").await;
    let mut accepted = publish_all(addr, "r", data(1..=3)).await;
    watcher.read_until(&json!(3)).await;
    assert_eq!(redis.redis(&["DEL", "t:meta:r", "t:stream:r"]), ":2");
    accepted.push(publish(addr, "r", json!(4)).await);
    watcher.read_until(&json!(4)).await;
    assert_eq!(watcher.told().len(), 1, "{:?}", watcher.log);

    // Offset 4 of the old epoch, as if it had been on its way all along.
    let old = &accepted[0].epoch;
    let late = format!("P 4 {old} \n\"late\"");
    assert_eq!(redis.redis(&["PUBLISH", "t:room:r", &late]), ":1");
    accepted.push(publish(addr, "r", json!(5)).await);
    watcher.read_until(&json!(5)).await;
    assert_each_offset_once_or_told("subscriber", &watcher, &accepted);
    assert_eq!(watcher.told().len(), 1, "{:?}", watcher.log);
    nothing_pending(&mut watcher.ws).await;
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_while_redis_is_down_is_told_to_try_again_at_once() {
    let Some(mut redis) = OwnServer::start("redis") else {
        return;
    };
    let backplane = redis_backplane(&redis);
    subscribe_while_down(&mut redis, &backplane).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_while_nats_is_down_is_told_to_try_again_at_once() {
    let Some(mut nats) = OwnServer::start("nats") else {
        return;
    };
    let backplane = BackplaneOptions::Nats {
        url: nats.url(),
        prefix: "bpdown".to_owned(),
    };
    subscribe_while_down(&mut nats, &backplane).await;
}

async fn subscribe_while_down(server: &mut OwnServer, backplane: &BackplaneOptions) {
    let node = node(backplane).await;
    let addr = node.local_addr();
    server.kill();
    wait_health(addr, "degraded").await;
    let (mut ws, _) = connect(addr).await;
    let asked = Instant::now();
    let reply = request(&mut ws, json!({"type": "subscribe", "room": "r", "id": 1})).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");
    // At once: the node knows the backplane is out of reach (5 s is a command's timeout).
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    // The connection is fine, and the subscribe works once the backplane is back.
    assert!(server.restart());
    wait_health(addr, "ok").await;
    let reply = request(&mut ws, json!({"type": "subscribe", "room": "r", "id": 2})).await;
    assert_eq!(reply["type"], "ok", "{reply}");
    stop(node).await;
}
