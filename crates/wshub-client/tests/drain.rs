//! A node drained for a restart (`POST /api/drain`): the client is closed with 1012, comes
//! back promptly (not as a failure: the attempt count starts over), and resumes on the node
//! that replaced it, on the same Redis, with nothing lost and nothing twice.

mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../../wshub-server/tests/support/own_server.rs"]
mod own_server;

use std::{net::SocketAddr, time::Duration};

use own_server::OwnServer;
use serde_json::json;
use support::*;
use wshub_client::{Backoff, Error, SubscriptionEvent, WshubClient, WshubEvent};
use wshub_server::{
    app::{RunningServer, serve},
    state::{BackplaneOptions, ServerOptions},
};

/// What `OwnServer::start` calls when redis-server is missing: said loudly, or a failure
/// when `WSHUB_REQUIRE_BACKPLANES` is set (as in CI).
fn skipped(message: &str) {
    let required = std::env::var_os("WSHUB_REQUIRE_BACKPLANES")
        .is_some_and(|value| !value.is_empty() && value != "0");
    assert!(!required, "{message} (WSHUB_REQUIRE_BACKPLANES is set)");
    eprintln!("{message}");
}

/// A node on `addr` with the Redis backplane at `url` and a 300 ms drain window; retries
/// briefly while the port is still being released.
async fn node(addr: SocketAddr, url: &str) -> RunningServer {
    for _ in 0..100 {
        let options = ServerOptions {
            backplane: BackplaneOptions::Redis {
                url: url.to_owned(),
                prefix: "drain:".to_owned(),
            },
            drain_window: Duration::from_millis(300),
            ..options()
        };
        if let Ok(server) = serve(options, addr).await {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not serve on {addr}");
}

/// The next `count` messages of `sub` as their (offset, n) pairs; any other event fails.
async fn messages(sub: &mut wshub_client::Subscription, count: usize) -> Vec<(u64, u64)> {
    let mut got = Vec::with_capacity(count);
    for _ in 0..count {
        match next_in(sub).await {
            SubscriptionEvent::Message(m) => {
                let n: serde_json::Value = m.data.parse().unwrap();
                got.push((m.offset.0, n["n"].as_u64().unwrap_or(u64::MAX)));
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_client_reconnects_promptly_and_resumes_on_the_next_node() {
    // Without redis-server this says so loudly (and fails with WSHUB_REQUIRE_BACKPLANES).
    let Some(redis) = OwnServer::start("redis") else {
        return;
    };
    // The client starts before the node: its first attempts fail, and with a connection
    // never "stable" they would go on counting; only the 1012 rule starts them over.
    let addr = closed_port().await;
    let (client, mut events) = WshubClient::builder(ws_url(addr))
        .connection(|c| {
            c.backoff(Backoff {
                initial_delay: Duration::from_millis(100),
                max_delay: Duration::from_millis(400),
                max_attempts: 0,
            })
            .stable_after(Duration::from_secs(3600))
        })
        .build()
        .unwrap();
    next_wshub_event(
        &mut events,
        |e| matches!(e, WshubEvent::Reconnecting { attempt, .. } if *attempt >= 2),
    )
    .await;
    let a = node(addr, &redis.url()).await;
    within("ready", client.ready()).await.unwrap();
    let mut sub = within("subscribe", client.subscribe("feed")).await.unwrap();
    for n in 0..3 {
        publish(addr, "feed", json!({"n": n})).await;
    }
    assert_eq!(messages(&mut sub, 3).await, [(1, 0), (2, 1), (3, 2)]);

    let (status, body) = http(addr, "POST", "/api/drain", Some("{}")).await;
    assert_eq!(status, 202, "{body}");
    let dropped = next_wshub_event(&mut events, |e| {
        matches!(e, WshubEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            &dropped,
            WshubEvent::Disconnected {
                error: Some(Error::Closed { code: 1012, .. })
            }
        ),
        "{dropped:?}"
    );
    // Not a failure: the first attempt of a new run, within the first backoff bound.
    match next_wshub_event(&mut events, |e| {
        matches!(e, WshubEvent::Reconnecting { .. })
    })
    .await
    {
        WshubEvent::Reconnecting { attempt, delay } => {
            assert_eq!(attempt, 1);
            assert!(delay <= Duration::from_millis(100), "{delay:?}");
        }
        other => panic!("{other:?}"),
    }
    // Published while the client is away (the draining node still serves its API).
    for n in 3..8 {
        publish(addr, "feed", json!({"n": n})).await;
    }
    within("drain", a.drain()).await;
    stop(a).await;
    let b = node(addr, &redis.url()).await;

    match next_in(&mut sub).await {
        SubscriptionEvent::Recovered { since, latest } => {
            assert_eq!(since.offset.0, 3);
            assert_eq!(latest.0, 8);
        }
        other => panic!("expected Recovered, got {other:?}"),
    }
    assert_eq!(
        messages(&mut sub, 5).await,
        (4..=8).zip(3..8).collect::<Vec<_>>()
    );
    // Nothing twice: the next message is the next offset.
    publish(addr, "feed", json!({"n": 999})).await;
    assert_eq!(messages(&mut sub, 1).await, [(9, 999)]);
    client.close().await;
    stop(b).await;
}
