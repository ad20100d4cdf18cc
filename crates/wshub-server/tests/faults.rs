//! Faults of a cluster, against a Redis server this test starts and kills itself (its own
//! port, nothing kept on disk; never the shared one on 6379):
//!
//! - Redis killed with SIGKILL in the middle of a stream and restarted empty on the same
//!   port: the nodes report degraded, keep serving their connections, resume once it is
//!   back, deliver nothing twice, and tell subscribers whose gap cannot be filled with an
//!   `unrecoverable` frame (docs/PROTOCOL.md).
//! - The same with NATS (its own `nats-server -js` on a free port), restarted with its
//!   JetStream store: nothing is lost, so every accepted publication reaches every
//!   subscriber exactly once and nobody is told anything.
//! - A `wshub` process killed with SIGKILL (on Redis, and on NATS): a send or disconnect to
//!   its connections is `not_found` (404); its clients reconnect to another node and recover
//!   everything they missed; its presence entries vanish within the presence ttl (30 s).
//! - After a restart, presence is whole again on every node.
//! - With a short `--presence-ttl` (1 s), a SIGKILLed node's presence entries vanish within
//!   it, while a live node's stay.

mod support;

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{own_server::OwnServer, *};
use wshub_server::state::{BackplaneOptions, ServerOptions};

const KEY: &str = "faults-key";

/// What one subscriber saw: `message` and `unrecoverable` frames, in order.
async fn read_until_data(ws: &mut Client, log: &mut Vec<Value>, data: &Value) {
    loop {
        let frame = next(ws).await;
        let done = frame["type"] == "message" && &frame["data"] == data;
        if frame["type"] == "message" || frame["type"] == "unrecoverable" {
            log.push(frame);
        }
        if done {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_stream_degrades_then_resumes_without_duplicates() {
    let Some(mut redis) = OwnServer::start("redis") else {
        return;
    };
    let backplane = BackplaneOptions::Redis {
        url: redis.url(),
        prefix: "wshub:faults:".to_owned(),
    };
    // Redis keeps nothing across its restart: the room gets a new epoch.
    restart_mid_stream(&mut redis, backplane, "redis", Restart::Empty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_stream_degrades_then_resumes_losing_nothing() {
    let Some(mut nats) = OwnServer::start("nats") else {
        return;
    };
    let backplane = BackplaneOptions::Nats {
        url: nats.url(),
        prefix: "wshubfaults".to_owned(),
    };
    // JetStream keeps its file store across the restart: history fills every gap.
    restart_mid_stream(&mut nats, backplane, "nats", Restart::KeepingData).await;
}

/// What a backplane server keeps across its restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    Empty,
    KeepingData,
}

async fn restart_mid_stream(
    server: &mut OwnServer,
    backplane: BackplaneOptions,
    kind: &str,
    restart: Restart,
) {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(
            start(ServerOptions {
                api_key: Some(KEY.to_owned()),
                rate_limit: None,
                presence_events: false,
                backplane: backplane.clone(),
                ..ServerOptions::default()
            })
            .await,
        );
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.local_addr()).collect();
    let mut subscribers = Vec::new();
    let mut subscriber_ids = Vec::new();
    for addr in &addrs {
        let (mut ws, id) = connect(*addr).await;
        subscriber_ids.push(id);
        send(
            &mut ws,
            json!({"type": "subscribe", "room": "stream", "id": "s"}),
        )
        .await;
        assert_eq!(next(&mut ws).await["type"], "ok");
        subscribers.push((ws, Vec::new()));
    }
    subscriber_ids.sort();

    // A publisher on every node in turn, through the API, every 5 ms, recording what was
    // accepted: (data, offset).
    let accepted = Arc::new(Mutex::new(Vec::<(Value, u64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (accepted, stop, addrs) = (Arc::clone(&accepted), Arc::clone(&stop), addrs.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            // Bounded: 60 s of publishing at most.
            while !stop.load(Ordering::Relaxed) && i < 12_000 {
                let data = json!({"i": i});
                let (status, body) = api(
                    addrs[(i % 3) as usize],
                    KEY,
                    "/api/publish",
                    json!({"room": "stream", "data": data}),
                )
                .await;
                if status == 200 {
                    let offset = body["offset"].as_u64().expect("offset");
                    accepted.lock().unwrap().push((data, offset));
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let accepted_count = |n: usize| {
        let accepted = Arc::clone(&accepted);
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while accepted.lock().unwrap().len() < n {
                assert!(Instant::now() < deadline, "publishes stopped succeeding");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    accepted_count(20).await;

    // The backplane dies mid-stream.
    server.kill();
    for addr in &addrs {
        let body = wait_health(*addr, "degraded").await;
        // The backplane's own error (hosts, ports, maybe credentials) is only logged.
        assert_eq!(body.trim(), "degraded: backplane unreachable");
        let (_, stats) = http(*addr, "GET", "/stats", &[], None).await;
        let stats: Value = serde_json::from_str(&stats).expect("stats");
        assert_eq!(stats["backplane_connected"], false, "{stats}");
        assert!(stats.get("backplane_error").is_none(), "{stats}");
        let (_, metrics) = http(*addr, "GET", "/metrics", &[], None).await;
        assert!(
            metrics.contains(&format!("wshub_backplane_up{{backplane=\"{kind}\"}} 0")),
            "{metrics}"
        );
    }
    let before_restart = accepted.lock().unwrap().len();
    // Local connections are still served: new ones are welcomed and answered, and a
    // publish is refused with an error frame rather than a closed connection.
    for addr in &addrs {
        let (mut ws, _) = connect(*addr).await;
        assert_eq!(
            request(&mut ws, json!({"type": "ping", "id": 1})).await,
            json!({"type": "pong", "id": 1})
        );
        let reply = request(
            &mut ws,
            json!({"type": "publish", "room": "elsewhere", "data": 1, "id": 2}),
        )
        .await;
        assert_eq!(reply["type"], "error", "{reply}");
    }

    // It comes back on the same port.
    assert!(server.restart());
    for addr in &addrs {
        wait_health(*addr, "ok").await;
    }
    // Presence is whole again on every node (each node writes its members again as soon
    // as the backplane is back, whatever the backplane kept).
    for addr in &addrs {
        let (mut ws, _) = connect(*addr).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = request(
                &mut ws,
                json!({"type": "presence", "room": "stream", "id": 1}),
            )
            .await;
            let mut listed: Vec<&str> = reply["clients"]
                .as_array()
                .map(|clients| {
                    clients
                        .iter()
                        .filter_map(|c| c["client"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            listed.sort_unstable();
            if listed
                == subscriber_ids
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{addr}: presence after the restart: {reply}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    accepted_count(before_restart + 30).await;
    stop.store(true, Ordering::Relaxed);
    within("publisher", publisher).await.expect("publisher");
    let last = json!("end");
    let (status, _) = api(
        addrs[0],
        KEY,
        "/api/publish",
        json!({"room": "stream", "data": last}),
    )
    .await;
    assert_eq!(status, 200);

    let accepted = accepted.lock().unwrap().clone();
    for (node, (ws, log)) in subscribers.iter_mut().enumerate() {
        read_until_data(ws, log, &last).await;
        // Nothing twice, and offsets increasing within each epoch.
        let mut seen = HashSet::new();
        let mut previous: Option<(String, u64)> = None;
        let mut unrecoverable = 0;
        for frame in log.iter() {
            let epoch = frame["epoch"].as_str().expect("epoch").to_owned();
            let offset = frame["offset"].as_u64().expect("offset");
            if frame["type"] == "unrecoverable" {
                assert_eq!(frame["recovered"], false);
                unrecoverable += 1;
                previous = Some((epoch, offset));
                continue;
            }
            assert!(
                seen.insert(frame["data"].to_string()),
                "node {node}: {frame} twice"
            );
            if let Some((previous_epoch, previous_offset)) = &previous {
                assert!(
                    *previous_epoch != epoch || offset == previous_offset + 1,
                    "node {node}: {frame} after {previous_epoch}/{previous_offset} \
                     without an unrecoverable frame"
                );
                if *previous_epoch != epoch {
                    // A new epoch only after the frame announcing it.
                    panic!("node {node}: epoch changed to {frame} without an unrecoverable frame");
                }
            }
            previous = Some((epoch, offset));
        }
        let must_arrive = match restart {
            Restart::Empty => {
                // The backplane lost everything: the room has a new epoch, which the
                // subscriber was told about before its first message. What was accepted
                // before and did not arrive is covered by that frame.
                assert!(unrecoverable >= 1, "node {node}: never told");
                &accepted[before_restart..]
            }
            Restart::KeepingData => {
                assert_eq!(unrecoverable, 0, "node {node}: {log:?}");
                &accepted[..]
            }
        };
        for (data, _) in must_arrive {
            assert!(
                seen.contains(&data.to_string()),
                "node {node}: {data} accepted but not delivered"
            );
        }
        // The connection is still fine.
        nothing_pending(ws).await;
    }
    for node in nodes {
        stop_server(node).await;
    }
}

async fn stop_server(node: wshub_server::app::RunningServer) {
    stop(node).await;
}

/// A `wshub` process of this test, listening on a loopback port it chose.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    /// A node on the backplane `flag` (`--redis` or `--nats`) at `url`.
    fn spawn(flag: &str, url: &str) -> Node {
        Node::spawn_with(flag, url, &[])
    }

    /// The same, with more environment variables.
    fn spawn_with(flag: &str, url: &str, env: &[(&str, &str)]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
            .args(["--listen", "127.0.0.1:0", flag, url, "--api-key", KEY])
            .args(["--rate-limit", "off", "--log-level", "warn"])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("wshub starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the listening line");
        let addr = line
            .strip_prefix("wshub listening on ")
            .and_then(|rest| {
                rest.split(':')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(":")
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Node { child, addr }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_loses_no_clients_and_its_presence_vanishes() {
    let Some(redis) = OwnServer::start("redis") else {
        return;
    };
    node_killed_with_sigkill("--redis", &redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_on_nats_loses_no_clients_and_its_presence_vanishes() {
    let Some(nats) = OwnServer::start("nats") else {
        return;
    };
    node_killed_with_sigkill("--nats", &nats.url()).await;
}

/// Three `wshub` processes on the backplane `flag` at `url`; one dies by SIGKILL.
async fn node_killed_with_sigkill(flag: &str, url: &str) {
    let nodes: Vec<Node> = (0..3).map(|_| Node::spawn(flag, url)).collect();
    let (doomed, survivors) = (nodes[0].addr, [nodes[1].addr, nodes[2].addr]);

    // Four clients on the doomed node, one watcher on a survivor.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (mut ws, id) = connect(doomed).await;
        send(
            &mut ws,
            json!({"type": "subscribe", "room": "r", "id": "s"}),
        )
        .await;
        let ok = loop {
            let frame = next(&mut ws).await;
            if frame["id"] == "s" {
                break frame;
            }
        };
        clients.push((ws, id, ok["epoch"].as_str().expect("epoch").to_owned()));
    }
    let (mut watcher, _) = connect(survivors[0]).await;
    let reply = request(
        &mut watcher,
        json!({"type": "presence", "room": "r", "id": 1}),
    )
    .await;
    assert_eq!(
        reply["clients"].as_array().map(Vec::len),
        Some(4),
        "{reply}"
    );

    // Ten publications reach them; then the node dies without a word.
    for i in 0..10 {
        api(
            survivors[1],
            KEY,
            "/api/publish",
            json!({"room": "r", "data": i}),
        )
        .await;
    }
    let mut last_seen = Vec::new();
    for (ws, _, _) in &mut clients {
        let mut offset = 0;
        while offset < 10 {
            let frame = next(ws).await;
            if frame["type"] == "message" {
                offset = frame["offset"].as_u64().expect("offset");
            }
        }
        last_seen.push(offset);
    }
    let mut doomed_node = nodes.into_iter();
    let mut first = doomed_node.next().expect("node");
    let _ = first.child.kill();
    let _ = first.child.wait();
    let killed_at = Instant::now();

    // A send or disconnect to a connection of the dead node is not found, as for any
    // connection that is gone: at once when the backplane has dropped the dead node's
    // subscription, after the answer timeout (2 s) when it still routes there.
    let asked_at = Instant::now();
    let (status, body) = api(
        survivors[1],
        KEY,
        "/api/send",
        json!({"to": clients[0].1, "data": "anyone?"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "not_found", "{body}");
    let (status, body) = api(
        survivors[0],
        KEY,
        "/api/disconnect",
        json!({"client": clients[1].1}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    eprintln!(
        "{flag}: send and disconnect to the dead node's connections answered 404 in {:?}",
        asked_at.elapsed()
    );

    // Ten more while its clients are gone.
    for i in 10..20 {
        let (status, _) = api(
            survivors[1],
            KEY,
            "/api/publish",
            json!({"room": "r", "data": i}),
        )
        .await;
        assert_eq!(status, 200);
    }
    // Each client reconnects to a surviving node and recovers exactly what it missed.
    for (n, (ws, _, epoch)) in clients.iter_mut().enumerate() {
        assert!(
            close_or_error(ws).await,
            "the connection to the dead node ended"
        );
        let (mut back, _) = connect(survivors[n % 2]).await;
        send(
            &mut back,
            json!({"type": "subscribe", "room": "r", "id": "s", "since": {"epoch": epoch, "offset": last_seen[n]}}),
        )
        .await;
        let ok = loop {
            let frame = next(&mut back).await;
            if frame["id"] == "s" {
                break frame;
            }
        };
        assert_eq!(ok["recovered"], true, "{ok}");
        let mut offsets = Vec::new();
        while offsets.len() < 10 {
            let frame = next(&mut back).await;
            if frame["type"] == "message" {
                offsets.push(frame["offset"].as_u64().expect("offset"));
            }
        }
        assert_eq!(offsets, (11..=20).collect::<Vec<u64>>());
    }

    // The dead node's presence entries vanish within the presence ttl (30 s).
    let deadline = killed_at + Duration::from_secs(40);
    loop {
        let reply = request(
            &mut watcher,
            json!({"type": "presence", "room": "r", "id": 2}),
        )
        .await;
        let ghosts = reply["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .filter(|c| clients.iter().any(|(_, id, _)| c["client"] == id.as_str()))
            .count();
        if ghosts == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ghosts} dead entries after 40 s: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "the dead node's presence vanished {:?} after SIGKILL",
        killed_at.elapsed()
    );
}

/// Reads until the connection ends (a close frame, or an error): true when it did.
async fn close_or_error(ws: &mut Client) -> bool {
    use futures_util::StreamExt;
    loop {
        match within("end of connection", ws.next()).await {
            None | Some(Err(_)) => return true,
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return true,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_presence_ttl_removes_a_killed_nodes_presence_within_it() {
    let Some(redis) = OwnServer::start("redis") else {
        return;
    };
    short_presence_ttl("--backplane", &redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_presence_ttl_on_nats_removes_a_killed_nodes_presence_within_it() {
    let Some(nats) = OwnServer::start("nats") else {
        return;
    };
    short_presence_ttl("--backplane", &nats.url()).await;
}

/// The members a presence request on `ws` lists, sorted.
async fn presence_of(ws: &mut Client, room: &str) -> Vec<String> {
    let reply = request(ws, json!({"type": "presence", "room": room, "id": "p"})).await;
    let mut listed: Vec<String> = reply["clients"]
        .as_array()
        .unwrap_or_else(|| panic!("no clients in {reply}"))
        .iter()
        .filter_map(|c| c["client"].as_str().map(str::to_owned))
        .collect();
    listed.sort();
    listed
}

/// Three `wshub` processes with `WSHUB_PRESENCE_TTL=1s`: two members on the doomed node, one
/// on a survivor, a watcher on the third. After SIGKILL the doomed node's entries are gone
/// within the ttl; the survivor's, rewritten every third of it, never leave.
async fn short_presence_ttl(flag: &str, url: &str) {
    let ttl = Duration::from_secs(1);
    let env = [("WSHUB_PRESENCE_TTL", "1s")];
    let mut nodes: Vec<Node> = (0..3).map(|_| Node::spawn_with(flag, url, &env)).collect();
    let (doomed, survivor, watching) = (nodes[0].addr, nodes[1].addr, nodes[2].addr);
    let mut members = Vec::new();
    for addr in [doomed, doomed, survivor] {
        let (mut ws, id) = connect(addr).await;
        send(
            &mut ws,
            json!({"type": "subscribe", "room": "p", "id": "s"}),
        )
        .await;
        loop {
            let frame = next(&mut ws).await;
            if frame["id"] == "s" {
                assert_eq!(frame["type"], "ok", "{frame}");
                break;
            }
        }
        members.push((ws, id));
    }
    let mut all: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
    all.sort();
    let survivor_id = vec![members[2].1.clone()];
    let (mut watcher, _) = connect(watching).await;
    assert_eq!(presence_of(&mut watcher, "p").await, all);

    let mut first = nodes.remove(0);
    let _ = first.child.kill();
    let _ = first.child.wait();
    let killed_at = Instant::now();
    // Every entry was rewritten at most a third of the ttl before the kill, so it expires at
    // most a ttl after it; the slack covers this polling and NATS's expiry timer.
    let slack = Duration::from_millis(500);
    loop {
        let listed = presence_of(&mut watcher, "p").await;
        if listed == survivor_id {
            break;
        }
        assert!(
            killed_at.elapsed() < ttl + slack,
            "{:?} after SIGKILL with a {ttl:?} ttl, presence still lists {listed:?}",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{flag}: with a {ttl:?} presence ttl, the killed node's presence vanished {:?} after SIGKILL",
        killed_at.elapsed()
    );
    // The survivor's entry stays over three ttls (bounded: 3 s of checks).
    let until = Instant::now() + 3 * ttl;
    while Instant::now() < until {
        assert_eq!(presence_of(&mut watcher, "p").await, survivor_id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
