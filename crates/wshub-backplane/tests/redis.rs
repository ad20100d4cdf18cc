//! The shared suite against a real Redis on 127.0.0.1:6379, started here when none runs.
#![cfg(feature = "redis")]

mod suite;

use std::{
    hash::{BuildHasher, RandomState},
    net::TcpStream,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use wshub_backplane::{Backplane, BackplaneConfig, PresenceMember, RedisBackplane};

const URL: &str = "redis://127.0.0.1:6379";

/// Makes sure a Redis server listens on 127.0.0.1:6379, starting one (as CI machines do)
/// when none does. Returns false, after saying so loudly, only when `redis-server` is not
/// installed; with `WSHUB_REQUIRE_BACKPLANES` set (CI) that is a failure instead.
fn redis_available() -> bool {
    if TcpStream::connect("127.0.0.1:6379").is_ok() {
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
        suite::skipped(
            "\n*** SKIPPED: no Redis on 127.0.0.1:6379 and no redis-server to start (apt-get install redis-server) ***\n",
        );
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect("127.0.0.1:6379").is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server was started but does not listen on 127.0.0.1:6379");
}

/// A key prefix no other test run shares.
fn unique_prefix() -> String {
    let random = RandomState::new().hash_one(std::process::id()) & 0xffff_ffff_ffff;
    format!("wshub:test:{random:012x}:")
}

/// Deletes every key under `prefix`.
fn clean(prefix: &str) {
    let script =
        format!("redis-cli --scan --pattern '{prefix}*' | xargs -r redis-cli del > /dev/null");
    let _ = Command::new("sh").args(["-c", &script]).status();
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
                suite::within("connect", RedisBackplane::connect(config))
                    .await
                    .unwrap(),
            ) as Arc<dyn Backplane>
        })
    })
}

#[tokio::test]
async fn redis_backplane_passes_the_single_node_suite() {
    if !redis_available() {
        return;
    }
    let prefix = unique_prefix() + "single:";
    suite::single_node(factory(&prefix)).await;
    clean(&prefix);
}

#[tokio::test]
async fn redis_backplane_passes_the_multi_node_suite() {
    if !redis_available() {
        return;
    }
    let prefix = unique_prefix() + "multi:";
    suite::multi_node(factory(&prefix)).await;
    clean(&prefix);
}

#[tokio::test]
async fn a_dead_nodes_presence_vanishes_within_the_ttl() {
    if !redis_available() {
        return;
    }
    let prefix = unique_prefix() + "presence:";
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
        user: None,
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
    clean(&prefix);
}

/// The prefix the server gives (`--backplane-prefix`, the same for NATS) is followed by
/// `:`; one that already ends with it is used as it is.
#[tokio::test]
async fn a_prefix_is_followed_by_a_colon() {
    if !redis_available() {
        return;
    }
    let plain = unique_prefix() + "plain";
    let backplane = suite::within("connect", RedisBackplane::connect(config(&plain, 1)))
        .await
        .unwrap();
    assert_eq!(backplane.config().prefix, format!("{plain}:"));
    suite::within(
        "publish",
        backplane.publish(&suite::room("r"), bytes::Bytes::from_static(b"x")),
    )
    .await
    .unwrap();
    let exists = Command::new("redis-cli")
        .args(["EXISTS", &format!("{plain}:meta:r")])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&exists.stdout).trim(), "1");
    drop(backplane);
    clean(&plain);

    let colon = unique_prefix() + "colon:";
    let backplane = suite::within("connect", RedisBackplane::connect(config(&colon, 1)))
        .await
        .unwrap();
    assert_eq!(backplane.config().prefix, colon);
    drop(backplane);
    clean(&colon);
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_at_connect() {
    let config = BackplaneConfig {
        response_timeout: Duration::from_millis(500),
        ..BackplaneConfig::new("redis://127.0.0.1:1")
    };
    let error = suite::within("connect", RedisBackplane::connect(config))
        .await
        .unwrap_err();
    assert!(
        matches!(error, wshub_backplane::Error::Unavailable(_)),
        "{error}"
    );
    let error = RedisBackplane::connect(BackplaneConfig::new("not a url"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, wshub_backplane::Error::InvalidConfig(_)),
        "{error}"
    );
}
