//! The shared suite against a real NATS server with JetStream on 127.0.0.1:4222, started
//! here when none runs. Every test uses its own subject prefix (so its own streams) and
//! deletes its streams at the end.
#![cfg(feature = "nats")]

mod suite;

use std::{
    hash::{BuildHasher, RandomState},
    net::TcpStream,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use wshub_backplane::{Backplane, BackplaneConfig, NatsBackplane, PresenceMember};

const URL: &str = "nats://127.0.0.1:4222";

/// Makes sure a NATS server with JetStream listens on 127.0.0.1:4222, starting one (as CI
/// machines do) when none does. Returns false, after saying so loudly, only when
/// `nats-server` is not installed; with `WSHUB_REQUIRE_BACKPLANES` set (CI) that is a
/// failure instead.
fn nats_available() -> bool {
    if TcpStream::connect("127.0.0.1:4222").is_ok() {
        return true;
    }
    let store = std::env::temp_dir().join("wshub-test-nats");
    let started = Command::new("start-stop-daemon")
        .args(["--start", "--oknodo", "--background", "--exec"])
        .arg(which_nats_server())
        .args(["--", "-a", "127.0.0.1", "-p", "4222", "-js", "-sd"])
        .arg(&store)
        .status();
    if !matches!(started, Ok(status) if status.success()) {
        suite::skipped(
            "\n*** SKIPPED: no NATS on 127.0.0.1:4222 and no nats-server to start (apt-get install nats-server) ***\n",
        );
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect("127.0.0.1:4222").is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nats-server was started but does not listen on 127.0.0.1:4222");
}

fn which_nats_server() -> String {
    for path in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if std::path::Path::new(path).exists() {
            return path.to_owned();
        }
    }
    "nats-server".to_owned()
}

/// A subject prefix no other test run shares.
fn unique_prefix(name: &str) -> String {
    let random = RandomState::new().hash_one(std::process::id()) & 0xffff_ffff_ffff;
    format!("wshubtest{random:012x}-{name}")
}

/// Deletes the streams of `prefix`. Every backplane using them must be dropped first: a
/// live one recreates them when it writes presence.
async fn clean(prefix: &str) {
    let config = BackplaneConfig {
        prefix: prefix.to_owned(),
        ..BackplaneConfig::new(URL)
    };
    let Ok(Ok(client)) =
        tokio::time::timeout(suite::STEP, async_nats::connect("127.0.0.1:4222")).await
    else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    for stream in [config.history_stream(), config.presence_stream()] {
        let _ = tokio::time::timeout(suite::STEP, js.delete_stream(&stream)).await;
    }
}

fn config(prefix: &str, node_id: u64) -> BackplaneConfig {
    BackplaneConfig {
        prefix: prefix.to_owned(),
        node_id,
        presence_ttl: Duration::from_millis(600),
        answer_timeout: Duration::from_secs(1),
        ..BackplaneConfig::new(URL)
    }
}

fn factory(prefix: &str) -> suite::Factory {
    let prefix = prefix.to_owned();
    Arc::new(move |node_id| {
        let config = config(&prefix, node_id);
        Box::pin(async move {
            Arc::new(
                suite::within("connect", NatsBackplane::connect(config))
                    .await
                    .unwrap(),
            ) as Arc<dyn Backplane>
        })
    })
}

#[tokio::test]
async fn nats_backplane_passes_the_single_node_suite() {
    if !nats_available() {
        return;
    }
    let prefix = unique_prefix("single");
    suite::single_node(factory(&prefix)).await;
    clean(&prefix).await;
}

#[tokio::test]
async fn nats_backplane_passes_the_multi_node_suite() {
    if !nats_available() {
        return;
    }
    let prefix = unique_prefix("multi");
    suite::multi_node(factory(&prefix)).await;
    clean(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_racing_on_one_room_get_distinct_consecutive_offsets() {
    if !nats_available() {
        return;
    }
    let prefix = unique_prefix("race");
    let make = factory(&prefix);
    let nodes = [make(1).await, make(2).await, make(3).await];
    let room = suite::room("race");
    let mut tasks = Vec::new();
    for node in &nodes {
        let (node, room) = (Arc::clone(node), room.clone());
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for _ in 0..20 {
                let publication = node
                    .publish(&room, bytes::Bytes::from_static(b"r"))
                    .await
                    .unwrap();
                offsets.push(publication.position.offset.get());
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(suite::within("publisher", task).await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=60).collect::<Vec<u64>>());
    // Live nodes would write presence again, recreating the streams.
    drop(nodes);
    clean(&prefix).await;
}

#[tokio::test]
async fn a_dead_nodes_presence_vanishes_within_the_ttl() {
    if !nats_available() {
        return;
    }
    let prefix = unique_prefix("presence");
    let make = factory(&prefix);
    let survivor = make(1).await;
    let doomed = make(2).await;
    let room = suite::room("presence:ttl");
    let alive = PresenceMember {
        client: suite::client(1, 1),
        user: None,
    };
    let dead = PresenceMember {
        client: suite::client(2, 1),
        user: Some("d".to_owned()),
    };
    suite::within("add", survivor.presence_add(&room, alive.clone()))
        .await
        .unwrap();
    suite::within("add", doomed.presence_add(&room, dead.clone()))
        .await
        .unwrap();
    assert_eq!(
        suite::within("list", survivor.presence(&room))
            .await
            .unwrap()
            .len(),
        2
    );
    // The doomed node stops refreshing (as one killed would); the survivor keeps refreshing.
    drop(doomed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        suite::within("list", survivor.presence(&room))
            .await
            .unwrap(),
        [alive]
    );
    drop(survivor);
    clean(&prefix).await;
}

#[tokio::test]
async fn an_unreachable_nats_is_an_error_at_connect() {
    let config = BackplaneConfig {
        response_timeout: Duration::from_millis(500),
        ..BackplaneConfig::new("nats://127.0.0.1:1")
    };
    let error = suite::within("connect", NatsBackplane::connect(config))
        .await
        .unwrap_err();
    assert!(
        matches!(error, wshub_backplane::Error::Unavailable(_)),
        "{error}"
    );
    let error = NatsBackplane::connect(BackplaneConfig {
        prefix: "has.dots".to_owned(),
        ..BackplaneConfig::new(URL)
    })
    .await
    .unwrap_err();
    assert!(
        matches!(error, wshub_backplane::Error::InvalidConfig(_)),
        "{error}"
    );
}

#[tokio::test]
async fn a_node_with_another_presence_ttl_sets_the_presence_streams_max_age() {
    if !nats_available() {
        return;
    }
    let prefix = unique_prefix("ttl");
    let max_age = |prefix: String| async move {
        let client = suite::within("connect", async_nats::connect("127.0.0.1:4222"))
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let name = BackplaneConfig {
            prefix,
            ..BackplaneConfig::new(URL)
        }
        .presence_stream();
        let mut stream = suite::within("stream", js.get_stream(name)).await.unwrap();
        suite::within("info", stream.info())
            .await
            .unwrap()
            .config
            .max_age
    };
    let first = suite::within("connect", NatsBackplane::connect(config(&prefix, 1)))
        .await
        .unwrap();
    assert_eq!(max_age(prefix.clone()).await, Duration::from_millis(600));
    let second = suite::within(
        "connect",
        NatsBackplane::connect(BackplaneConfig {
            presence_ttl: Duration::from_secs(2),
            ..config(&prefix, 2)
        }),
    )
    .await
    .unwrap();
    assert_eq!(max_age(prefix.clone()).await, Duration::from_secs(2));
    drop((first, second));
    clean(&prefix).await;
}
