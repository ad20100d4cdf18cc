//! Three `wshub` nodes in-process, on three loopback ports, sharing a real Redis (started
//! here when none listens on 127.0.0.1:6379) or a real NATS with JetStream (started here
//! when none listens on 127.0.0.1:4222), with clients spread over them: the cluster behaves
//! as one server (docs/PROTOCOL.md's cluster sentences), whichever backplane it shares.

mod support;

use std::{
    hash::{BuildHasher, RandomState},
    net::TcpStream as StdTcpStream,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::*;
use wshub_server::{
    app::RunningServer,
    settings::Settings,
    state::{BackplaneOptions, ServerOptions},
};

const KEY: &str = "cluster-key";

/// Makes sure Redis listens on 127.0.0.1:6379, starting it as CI machines do when it does
/// not. False, said loudly, only when redis-server is not installed (a failure instead
/// with `WSHUB_REQUIRE_BACKPLANES` set, as in CI).
fn redis_available() -> bool {
    if StdTcpStream::connect("127.0.0.1:6379").is_ok() {
        return true;
    }
    let started = Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .status();
    if started.is_err() {
        skipped(
            "\n*** SKIPPED: no Redis on 127.0.0.1:6379 and no redis-server to start (apt-get install redis-server) ***\n",
        );
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if StdTcpStream::connect("127.0.0.1:6379").is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server was started but does not listen on 127.0.0.1:6379");
}

/// Makes sure NATS with JetStream listens on 127.0.0.1:4222, starting it as CI machines do
/// when it does not. False, said loudly, only when nats-server is not installed (a failure
/// instead with `WSHUB_REQUIRE_BACKPLANES` set, as in CI).
fn nats_available() -> bool {
    if StdTcpStream::connect("127.0.0.1:4222").is_ok() {
        return true;
    }
    let exec = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or("nats-server");
    let store = std::env::temp_dir().join("wshub-test-nats");
    let started = Command::new("start-stop-daemon")
        .args(["--start", "--oknodo", "--background", "--exec", exec])
        .args(["--", "-a", "127.0.0.1", "-p", "4222", "-js", "-sd"])
        .arg(&store)
        .status();
    if !matches!(started, Ok(status) if status.success()) {
        skipped(
            "\n*** SKIPPED: no NATS on 127.0.0.1:4222 and no nats-server to start (apt-get install nats-server) ***\n",
        );
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if StdTcpStream::connect("127.0.0.1:4222").is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nats-server was started but does not listen on 127.0.0.1:4222");
}

/// The backplane a test cluster shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shared {
    Redis,
    Nats,
}

impl Shared {
    fn available(self) -> bool {
        match self {
            Shared::Redis => redis_available(),
            Shared::Nats => nats_available(),
        }
    }

    /// The name `/stats` and `/metrics` report.
    fn kind(self) -> &'static str {
        match self {
            Shared::Redis => "redis",
            Shared::Nats => "nats",
        }
    }
}

struct Cluster {
    nodes: Vec<RunningServer>,
    shared: Shared,
    prefix: String,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        Cluster::start_on(Shared::Redis, name).await
    }

    async fn start_on(shared: Shared, name: &str) -> Cluster {
        let random = RandomState::new().hash_one(std::process::id()) & 0xffff_ffff_ffff;
        let prefix = match shared {
            Shared::Redis => format!("wshub:test:{random:012x}:{name}:"),
            Shared::Nats => format!("wshubtest{random:012x}-{name}"),
        };
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let backplane = match shared {
                Shared::Redis => BackplaneOptions::Redis {
                    url: "redis://127.0.0.1:6379".to_owned(),
                    prefix: prefix.clone(),
                },
                Shared::Nats => BackplaneOptions::Nats {
                    url: "nats://127.0.0.1:4222".to_owned(),
                    prefix: prefix.clone(),
                },
            };
            nodes.push(
                start(ServerOptions {
                    api_key: Some(KEY.to_owned()),
                    rate_limit: None,
                    backplane,
                    ..ServerOptions::default()
                })
                .await,
            );
        }
        Cluster {
            nodes,
            shared,
            prefix,
        }
    }

    fn addr(&self, node: usize) -> std::net::SocketAddr {
        self.nodes[node].local_addr()
    }

    async fn stop(self) {
        for node in self.nodes {
            stop(node).await;
        }
        match self.shared {
            Shared::Redis => {
                let script = format!(
                    "redis-cli --scan --pattern '{}*' | xargs -r redis-cli del > /dev/null",
                    self.prefix
                );
                let _ = Command::new("sh").args(["-c", &script]).status();
            }
            Shared::Nats => delete_nats_streams(&self.prefix).await,
        }
    }
}

/// Deletes the JetStream streams of a NATS cluster's prefix.
async fn delete_nats_streams(prefix: &str) {
    let Ok(Ok(client)) = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::connect("127.0.0.1:4222"),
    )
    .await
    else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    for stream in [format!("{prefix}_history"), format!("{prefix}_presence")] {
        let _ = tokio::time::timeout(Duration::from_secs(5), js.delete_stream(&stream)).await;
    }
}

/// Reads frames until `n` messages of `room` have come; returns them (other frames, such as
/// presence events, are skipped).
async fn messages(ws: &mut Client, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        let frame = next(ws).await;
        if frame["type"] == "message" {
            got.push(frame);
        }
    }
    got
}

/// Asserts that no message is pending: everything up to a pong is anything but a message.
async fn no_more_messages(ws: &mut Client) {
    send(ws, json!({"type": "ping", "id": "sync"})).await;
    loop {
        let frame = next(ws).await;
        assert_ne!(frame["type"], "message", "unexpected {frame}");
        if frame["type"] == "pong" {
            return;
        }
    }
}

async fn subscribe(ws: &mut Client, room: &str) -> Value {
    send(ws, json!({"type": "subscribe", "room": room, "id": "sub"})).await;
    loop {
        let frame = next(ws).await;
        if frame["id"] == "sub" {
            assert_eq!(frame["type"], "ok", "{frame}");
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_three_nodes_behaves_as_one_server() {
    behaves_as_one_server(Shared::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_three_nodes_on_nats_behaves_as_one_server() {
    behaves_as_one_server(Shared::Nats).await;
}

/// The main scenario, on either backplane.
async fn behaves_as_one_server(shared: Shared) {
    if !shared.available() {
        return;
    }
    let cluster = Cluster::start_on(shared, "one").await;

    // Two subscribers on each node.
    let mut subscribers = Vec::new();
    for node in 0..3 {
        for _ in 0..2 {
            let (mut ws, id) = connect(cluster.addr(node)).await;
            let ok = subscribe(&mut ws, "chat").await;
            assert_eq!(ok["offset"], 0);
            subscribers.push((ws, id, node));
        }
    }

    // Presence on any node lists every node's members.
    let mut ids: Vec<String> = subscribers.iter().map(|(_, id, _)| id.clone()).collect();
    ids.sort();
    for node in 0..3 {
        let (mut ws, _) = connect(cluster.addr(node)).await;
        let reply = request(
            &mut ws,
            json!({"type": "presence", "room": "chat", "id": 1}),
        )
        .await;
        let mut listed: Vec<String> = reply["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .map(|c| c["client"].as_str().expect("id").to_owned())
            .collect();
        listed.sort();
        assert_eq!(listed, ids, "presence on node {node}");
    }

    // Three publishers, one per node (two over WebSocket, one through the HTTP API),
    // publishing at once: every subscriber on every node gets every message exactly once,
    // in offset order, 1 to 30.
    let mut publishers = Vec::new();
    for node in 0..2 {
        let addr = cluster.addr(node);
        publishers.push(tokio::spawn(async move {
            let (mut ws, _) = connect(addr).await;
            for i in 0..10 {
                let reply = request(
                    &mut ws,
                    json!({"type": "publish", "room": "chat", "data": {"node": node, "i": i}, "id": i}),
                )
                .await;
                assert_eq!(reply["type"], "ok", "{reply}");
            }
        }));
    }
    let api_addr = cluster.addr(2);
    publishers.push(tokio::spawn(async move {
        for i in 0..10 {
            let (status, body) = api(
                api_addr,
                KEY,
                "/api/publish",
                json!({"room": "chat", "data": {"node": 2, "i": i}}),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    }));
    for publisher in publishers {
        within("publisher", publisher).await.expect("publisher");
    }
    let mut epoch = None;
    for (ws, id, node) in &mut subscribers {
        let got = messages(ws, 30).await;
        let offsets: Vec<u64> = got
            .iter()
            .map(|m| m["offset"].as_u64().expect("offset"))
            .collect();
        assert_eq!(
            offsets,
            (1..=30).collect::<Vec<u64>>(),
            "subscriber {id} on node {node}"
        );
        let epochs: std::collections::HashSet<&str> = got
            .iter()
            .map(|m| m["epoch"].as_str().expect("epoch"))
            .collect();
        assert_eq!(epochs.len(), 1, "one epoch");
        epoch.get_or_insert_with(|| epochs.into_iter().next().expect("epoch").to_owned());
        // Each publisher's messages in its own order.
        for publisher in 0..3 {
            let sequence: Vec<u64> = got
                .iter()
                .filter(|m| m["data"]["node"] == publisher)
                .map(|m| m["data"]["i"].as_u64().expect("i"))
                .collect();
            assert_eq!(sequence, (0..10).collect::<Vec<u64>>());
        }
        no_more_messages(ws).await;
    }
    let epoch = epoch.expect("epoch");

    // Send to a connection on another node, over WebSocket and through the API.
    let target = subscribers[5].1.clone();
    let (mut sender, sender_id) = connect(cluster.addr(0)).await;
    let reply = request(
        &mut sender,
        json!({"type": "send", "to": target, "data": "psst", "id": 1}),
    )
    .await;
    assert_eq!(reply, json!({"type": "ok", "id": 1}));
    let direct = next(&mut subscribers[5].0).await;
    assert_eq!(
        direct,
        json!({"type": "direct", "from": sender_id, "data": "psst"})
    );
    let (status, _) = api(
        cluster.addr(1),
        KEY,
        "/api/send",
        json!({"to": subscribers[0].1, "data": 7}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        next(&mut subscribers[0].0).await,
        json!({"type": "direct", "from": null, "data": 7})
    );
    // A connection id of no node is not found.
    let reply = request(
        &mut sender,
        json!({"type": "send", "to": "0000000dead0-1", "data": 1, "id": 2}),
    )
    .await;
    assert_eq!(reply["code"], "not_found", "{reply}");

    // A broadcast from one node reaches every connection of every node once.
    let reply = request(
        &mut sender,
        json!({"type": "broadcast", "data": "all", "id": 3}),
    )
    .await;
    // The sender gets its own broadcast before the ok (docs/PROTOCOL.md).
    assert_eq!(
        reply,
        json!({"type": "broadcast", "from": sender_id, "data": "all"})
    );
    assert_eq!(next(&mut sender).await, json!({"type": "ok", "id": 3}));
    for (ws, _, _) in &mut subscribers {
        assert_eq!(
            next(ws).await,
            json!({"type": "broadcast", "from": sender_id, "data": "all"})
        );
        no_more_messages(ws).await;
    }

    // A client that saw up to offset 30 on node 0 reconnects to node 2 after five more
    // were published, and recovers exactly those, then gets live ones.
    let (ws, _, node) = subscribers.remove(0);
    assert_eq!(node, 0);
    drop(ws);
    for i in 0..5 {
        api(
            cluster.addr(1),
            KEY,
            "/api/publish",
            json!({"room": "chat", "data": {"late": i}}),
        )
        .await;
    }
    let (mut back, _) = connect(cluster.addr(2)).await;
    send(&mut back, json!({"type": "subscribe", "room": "chat", "id": "sub", "since": {"epoch": epoch, "offset": 30}})).await;
    let ok = loop {
        let frame = next(&mut back).await;
        if frame["id"] == "sub" {
            break frame;
        }
    };
    assert_eq!(ok["recovered"], true, "{ok}");
    assert_eq!(ok["epoch"], epoch.as_str());
    let replayed = messages(&mut back, 5).await;
    let offsets: Vec<u64> = replayed
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, [31, 32, 33, 34, 35]);
    api(
        cluster.addr(0),
        KEY,
        "/api/publish",
        json!({"room": "chat", "data": "live"}),
    )
    .await;
    let live = messages(&mut back, 1).await;
    assert_eq!(live[0]["offset"], 36);
    no_more_messages(&mut back).await;

    // The API disconnects a connection on another node.
    let (status, _) = api(
        cluster.addr(0),
        KEY,
        "/api/disconnect",
        json!({"client": subscribers[4].1}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        close_frame(&mut subscribers[4].0).await,
        Some((1000, "disconnected by server".to_owned()))
    );

    // Every node reports its backplane.
    for node in 0..3 {
        let (status, body) = http(cluster.addr(node), "GET", "/healthz", &[], None).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        let (_, stats) = http(cluster.addr(node), "GET", "/stats", &[], None).await;
        let stats: Value = serde_json::from_str(&stats).expect("stats");
        assert_eq!(stats["backplane"], shared.kind());
        assert_eq!(stats["backplane_connected"], true);
        let (_, metrics) = http(cluster.addr(node), "GET", "/metrics", &[], None).await;
        assert!(
            metrics.contains(&format!(
                "wshub_backplane_up{{backplane=\"{}\"}} 1",
                shared.kind()
            )),
            "{metrics}"
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_are_seen_on_every_node() {
    if !redis_available() {
        return;
    }
    let cluster = Cluster::start("presence").await;
    let (mut watcher, _) = connect(cluster.addr(0)).await;
    subscribe(&mut watcher, "lobby").await;
    let (mut other, other_id) = connect(cluster.addr(1)).await;
    subscribe(&mut other, "lobby").await;
    assert_eq!(
        next(&mut watcher).await,
        json!({"type": "join", "room": "lobby", "client": other_id, "user": null})
    );
    let reply = request(
        &mut other,
        json!({"type": "unsubscribe", "room": "lobby", "id": 1}),
    )
    .await;
    assert_eq!(reply["type"], "ok");
    assert_eq!(
        next(&mut watcher).await,
        json!({"type": "leave", "room": "lobby", "client": other_id, "user": null})
    );
    let reply = request(
        &mut watcher,
        json!({"type": "presence", "room": "lobby", "id": 2}),
    )
    .await;
    assert_eq!(
        reply["clients"].as_array().map(Vec::len),
        Some(1),
        "{reply}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_to_a_closed_connection_on_another_node_is_not_found() {
    closed_connection_on_another_node(Shared::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_to_a_closed_connection_on_another_node_on_nats_is_not_found() {
    closed_connection_on_another_node(Shared::Nats).await;
}

/// A connection that has closed on a live node: `send` and `disconnect` from another node
/// answer exactly what the node itself answers, over WebSocket and the HTTP API.
async fn closed_connection_on_another_node(shared: Shared) {
    if !shared.available() {
        return;
    }
    let cluster = Cluster::start_on(shared, "gone").await;
    let (holder, others) = (cluster.addr(1), [cluster.addr(0), cluster.addr(2)]);
    let (mut gone, gone_id) = connect(holder).await;
    let (mut alive, alive_id) = connect(holder).await;
    within("close", futures_util::SinkExt::close(&mut gone))
        .await
        .expect("close");
    drop(gone);
    // Until the holding node has let it go (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = http(holder, "GET", "/stats", &[], None).await;
        let stats: Value = serde_json::from_str(&stats).expect("stats");
        if stats["clients"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "node 1 still has it: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What the holding node answers itself, for reference.
    let (mut local, _) = connect(holder).await;
    let send = json!({"type": "send", "to": gone_id, "data": "x", "id": 1});
    let local_reply = request(&mut local, send.clone()).await;
    assert_eq!(
        local_reply,
        json!({"type": "error", "id": 1, "code": "not_found", "message": format!("no connection {gone_id}")})
    );
    let (local_status, local_body) =
        api(holder, KEY, "/api/send", json!({"to": gone_id, "data": 1})).await;
    assert_eq!(local_status, 404, "{local_body}");
    let (local_disconnect_status, local_disconnect_body) =
        api(holder, KEY, "/api/disconnect", json!({"client": gone_id})).await;
    assert_eq!(local_disconnect_status, 404, "{local_disconnect_body}");

    // The same from the other nodes: over WebSocket, and through the API.
    for addr in others {
        let (mut remote, _) = connect(addr).await;
        assert_eq!(request(&mut remote, send.clone()).await, local_reply);
        assert_eq!(
            api(addr, KEY, "/api/send", json!({"to": gone_id, "data": 1})).await,
            (local_status, local_body.clone())
        );
        assert_eq!(
            api(addr, KEY, "/api/disconnect", json!({"client": gone_id})).await,
            (local_disconnect_status, local_disconnect_body.clone())
        );
        // A live connection of the same node still gets what is sent to it.
        let reply = request(
            &mut remote,
            json!({"type": "send", "to": alive_id, "data": "still here", "id": 2}),
        )
        .await;
        assert_eq!(reply, json!({"type": "ok", "id": 2}));
        assert_eq!(next(&mut alive).await["data"], "still here");
    }

    // How long the answer takes across nodes (printed for BENCHMARKS-style notes): sends
    // to the live connection and to the closed one, one at a time.
    let (mut remote, _) = connect(others[0]).await;
    for (what, to) in [("live", &alive_id), ("closed", &gone_id)] {
        let rounds = 50;
        let started = Instant::now();
        for i in 0..rounds {
            let reply = request(
                &mut remote,
                json!({"type": "send", "to": to, "data": i, "id": i}),
            )
            .await;
            assert_eq!(reply["id"], i, "{reply}");
        }
        eprintln!(
            "{}: cross-node send to a {what} connection answered in {:?} on average",
            shared.kind(),
            started.elapsed() / rounds
        );
    }
    for _ in 0..50 {
        next(&mut alive).await;
    }
    nothing_pending(&mut alive).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_with_different_prefixes_on_one_redis_do_not_see_each_other() {
    separate_prefixes(Shared::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_with_different_prefixes_on_one_nats_do_not_see_each_other() {
    separate_prefixes(Shared::Nats).await;
}

/// Two clusters of two nodes on the same Redis or NATS server, configured as an operator
/// would (`--backplane-prefix` through `WSHUB_BACKPLANE_PREFIX`; one cluster chooses its
/// backplane with `--backplane URL`, the other with the `--redis`/`--nats` alias): same room
/// name, and nothing crosses from one to the other.
async fn separate_prefixes(shared: Shared) {
    if !shared.available() {
        return;
    }
    let random = RandomState::new().hash_one(std::process::id()) & 0xffff_ffff_ffff;
    let prefixes = [
        format!("wshubtest{random:012x}-blue"),
        format!("wshubtest{random:012x}-green"),
    ];
    let (alias, url) = match shared {
        Shared::Redis => ("--redis", "redis://127.0.0.1:6379"),
        Shared::Nats => ("--nats", "nats://127.0.0.1:4222"),
    };
    let mut clusters: Vec<Vec<RunningServer>> = Vec::new();
    for (prefix, flag) in prefixes.iter().zip(["--backplane", alias]) {
        let args = ["wshub", flag, url, "--api-key", KEY, "--rate-limit", "off"];
        let settings = Settings::load_from(args, |name| {
            (name == "WSHUB_BACKPLANE_PREFIX").then(|| prefix.clone())
        })
        .expect("settings");
        let options = ServerOptions::from(&settings);
        assert!(
            matches!(
                (&options.backplane, shared),
                (BackplaneOptions::Redis { .. }, Shared::Redis)
                    | (BackplaneOptions::Nats { .. }, Shared::Nats)
            ),
            "{flag} {url}: {:?}",
            options.backplane
        );
        let mut nodes = Vec::new();
        for _ in 0..2 {
            nodes.push(start(options.clone()).await);
        }
        clusters.push(nodes);
    }
    let addr = |cluster: usize, node: usize| clusters[cluster][node].local_addr();

    // In each cluster, a subscriber of `chat` on each node.
    let mut subscribers = Vec::new();
    for cluster in 0..2 {
        let mut pair = Vec::new();
        for node in 0..2 {
            let (mut ws, id) = connect(addr(cluster, node)).await;
            let ok = subscribe(&mut ws, "chat").await;
            assert_eq!(ok["offset"], 0, "cluster {cluster}: {ok}");
            pair.push((ws, id));
        }
        // The first hears the second join: its own cluster's join, and only that.
        let join = next(&mut pair[0].0).await;
        assert_eq!(join["type"], "join", "{join}");
        assert_eq!(join["client"], pair[1].1.as_str());
        subscribers.push(pair);
    }

    // Each cluster numbers its own `chat` and delivers only to its own subscribers.
    for (cluster, data) in [(0, "blue"), (1, "green")] {
        let (status, body) = api(
            addr(cluster, 1),
            KEY,
            "/api/publish",
            json!({"room": "chat", "data": data}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["offset"], 1, "{body}");
        for (ws, _) in &mut subscribers[cluster] {
            let got = messages(ws, 1).await;
            assert_eq!(got[0]["data"], data);
            assert_eq!(got[0]["offset"], 1);
        }
    }

    // A broadcast reaches the other node of its cluster, not the other cluster.
    let (status, _) = api(addr(0, 0), KEY, "/api/broadcast", json!({"data": "b"})).await;
    assert_eq!(status, 200);
    for (ws, _) in &mut subscribers[0] {
        assert_eq!(next(ws).await["type"], "broadcast");
    }

    // Presence lists each cluster's own members.
    for (cluster, pair) in subscribers.iter().enumerate() {
        let (mut ws, _) = connect(addr(cluster, 1)).await;
        let reply = request(
            &mut ws,
            json!({"type": "presence", "room": "chat", "id": 1}),
        )
        .await;
        let mut listed: Vec<&str> = reply["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .filter_map(|c| c["client"].as_str())
            .collect();
        listed.sort_unstable();
        let mut own: Vec<&str> = pair.iter().map(|(_, id)| id.as_str()).collect();
        own.sort_unstable();
        assert_eq!(listed, own, "cluster {cluster}");
    }

    // A connection of the other cluster cannot be reached: no node of this prefix has it.
    let green = subscribers[1][0].1.clone();
    let (status, body) = api(
        addr(0, 0),
        KEY,
        "/api/send",
        json!({"to": green, "data": "psst"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api(addr(0, 1), KEY, "/api/disconnect", json!({"client": green})).await;
    assert_eq!(status, 404);

    // Nothing else arrived anywhere.
    for pair in &mut subscribers {
        for (ws, _) in pair {
            nothing_pending(ws).await;
        }
    }
    for nodes in clusters {
        for node in nodes {
            stop(node).await;
        }
    }
    for prefix in &prefixes {
        match shared {
            Shared::Redis => {
                let script = format!(
                    "redis-cli --scan --pattern '{prefix}:*' | xargs -r redis-cli del > /dev/null"
                );
                let _ = Command::new("sh").args(["-c", &script]).status();
            }
            Shared::Nats => delete_nats_streams(prefix).await,
        }
    }
}
