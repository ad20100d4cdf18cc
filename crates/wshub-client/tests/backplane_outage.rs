//! A subscribe while the server's backplane (a Redis server this test starts on its own
//! port) is down: the server answers the retryable `unavailable`, and the client tries
//! again with backoff until Redis is back, instead of ending the subscription.

mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../../wshub-server/tests/support/own_server.rs"]
mod own_server;

use std::time::Duration;

use own_server::OwnServer;
use serde_json::json;
use support::*;
use wshub_client::{SubscriptionEvent, WshubClient};
use wshub_server::{
    app::serve,
    state::{BackplaneOptions, ServerOptions},
};

/// A test that cannot run without redis-server: said loudly, or a failure when
/// `WSHUB_REQUIRE_BACKPLANES` is set (as in CI).
fn skipped(message: &str) {
    let required = std::env::var_os("WSHUB_REQUIRE_BACKPLANES")
        .is_some_and(|value| !value.is_empty() && value != "0");
    assert!(!required, "{message} (WSHUB_REQUIRE_BACKPLANES is set)");
    eprintln!("{message}");
}

/// Polls `/healthz` until its body starts with `prefix` (bounded).
async fn wait_health(addr: std::net::SocketAddr, prefix: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http(addr, "GET", "/healthz", None).await;
        if body.starts_with(prefix) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz still says {body:?}, waiting for {prefix:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_during_a_backplane_outage_is_tried_again_until_it_works() {
    let Some(mut redis) = OwnServer::start("redis") else {
        return;
    };
    let server = within(
        "serve",
        serve(
            ServerOptions {
                backplane: BackplaneOptions::Redis {
                    url: redis.url(),
                    prefix: "c:".to_owned(),
                },
                ..options()
            },
            "127.0.0.1:0".parse().expect("addr"),
        ),
    )
    .await
    .expect("serve");
    let addr = server.local_addr();
    let (client, _events) = WshubClient::builder(ws_url(addr)).build().unwrap();
    within("ready", client.ready()).await.unwrap();

    redis.kill();
    wait_health(addr, "degraded").await;
    // Redis comes back while the subscribe is being answered `unavailable`.
    let restarted = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(700));
        assert!(redis.restart());
        redis
    });
    let mut sub = within("subscribe", client.subscribe("r"))
        .await
        .expect("the subscribe is tried again until the backplane is back");
    let _redis = within("restart", restarted).await.expect("restart");

    publish(addr, "r", json!("after the outage")).await;
    match next_in(&mut sub).await {
        SubscriptionEvent::Message(message) => {
            assert_eq!(message.data.get(), r#""after the outage""#);
        }
        other => panic!("expected the message, got {other:?}"),
    }
    client.close().await;
    stop(server).await;
}
