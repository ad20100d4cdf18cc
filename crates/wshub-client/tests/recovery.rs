//! Recovery after reconnects against the real server: nothing lost, nothing twice, and an
//! honest report when the server could not replay everything.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::time::Instant;
use wshub_client::{
    Backoff, Error, FixedJitter, ReconnectPolicy, Subscription, SubscriptionEvent, WshubClient,
    WshubClientBuilder, WshubEvent,
};
use wshub_protocol::{LostRange, Offset};

/// A client whose first reconnect attempt comes exactly `delay` after a drop, so a test
/// can act "while the client is away" without racing it.
fn client_with_fixed_delay(url: String, delay: Duration) -> WshubClientBuilder {
    WshubClient::builder(url).connection(move |c| {
        c.backoff(Backoff {
            initial_delay: delay,
            max_delay: delay,
            max_attempts: 0,
        })
        .jitter(FixedJitter(1.0))
    })
}

/// Reads `count` messages and returns their (offset, n) pairs, failing on any other event.
async fn messages(sub: &mut Subscription, count: usize) -> Vec<(u64, u64)> {
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

/// Publishes a marker and checks it is the very next message: nothing was pending, so
/// nothing was delivered twice.
async fn marker_is_next(addr: std::net::SocketAddr, sub: &mut Subscription, offset: u64) {
    publish(addr, "feed", json!({"n": 999_999})).await;
    assert_eq!(messages(sub, 1).await, [(offset, 999_999)]);
}

#[tokio::test]
async fn missed_messages_are_recovered_after_a_dropped_connection() {
    let server = start().await;
    let addr = server.local_addr();
    let (client, mut events) = client_with_fixed_delay(ws_url(addr), Duration::from_secs(1))
        // `/api/disconnect` closes with 1000, which by default means "do not reconnect".
        .connection(|c| c.reconnect_policy(ReconnectPolicy::Always))
        .build()
        .unwrap();
    let first_id = within("ready", client.ready()).await.unwrap().client;
    let mut sub = within("subscribe", client.subscribe("feed")).await.unwrap();
    for n in 0..5 {
        publish(addr, "feed", json!({"n": n})).await;
    }
    let live = messages(&mut sub, 5).await;
    assert_eq!(live, (1..=5).zip(0..5).collect::<Vec<_>>());
    let epoch = sub.position().unwrap().epoch;

    api(addr, "/api/disconnect", json!({"client": first_id})).await;
    let dropped = next_wshub_event(&mut events, |e| {
        matches!(e, WshubEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            &dropped,
            WshubEvent::Disconnected {
                error: Some(Error::Closed { code: 1000, .. })
            }
        ),
        "{dropped:?}"
    );
    for n in 5..25 {
        publish(addr, "feed", json!({"n": n})).await;
    }
    assert!(
        !client.is_ready(),
        "the 20 were published while the client was away"
    );

    let recovered = next_in(&mut sub).await;
    match recovered {
        SubscriptionEvent::Recovered { since, latest } => {
            assert_eq!(since.epoch, epoch);
            assert_eq!(since.offset.0, 5);
            assert_eq!(latest.0, 25);
        }
        other => panic!("expected Recovered, got {other:?}"),
    }
    let replayed = messages(&mut sub, 20).await;
    assert_eq!(replayed, (6..=25).zip(5..25).collect::<Vec<_>>());
    marker_is_next(addr, &mut sub, 26).await;

    let second_id = client.connection_id().unwrap();
    assert_ne!(second_id, first_id);
    assert_eq!(presence(addr, "feed").await, [second_id]);
    client.close().await;
    stop(server).await;
}

/// Resuming past what the history keeps (5 messages here): `RecoveryFailed` names exactly
/// the trimmed offsets, and every offset after the client's is either named there or
/// delivered, once.
#[tokio::test]
async fn a_trimmed_history_is_reported_with_the_exact_lost_offsets() {
    let mut small = options();
    small.history.max_messages = 5;
    let server = wshub_server::app::serve(small, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve");
    let addr = server.local_addr();
    let (client, mut events) = client_with_fixed_delay(ws_url(addr), Duration::from_secs(1))
        .connection(|c| c.reconnect_policy(ReconnectPolicy::Always))
        .build()
        .unwrap();
    let first_id = within("ready", client.ready()).await.unwrap().client;
    let mut sub = within("subscribe", client.subscribe("feed")).await.unwrap();
    for n in 0..3 {
        publish(addr, "feed", json!({"n": n})).await;
    }
    assert_eq!(messages(&mut sub, 3).await, [(1, 0), (2, 1), (3, 2)]);
    let old = sub.position().unwrap();

    api(addr, "/api/disconnect", json!({"client": first_id})).await;
    next_wshub_event(&mut events, |e| {
        matches!(e, WshubEvent::Disconnected { .. })
    })
    .await;
    // 20 while away: offsets 4 to 23, of which the history keeps 19 to 23.
    for n in 3..23 {
        publish(addr, "feed", json!({"n": n})).await;
    }
    assert!(!client.is_ready(), "published while the client was away");

    let lost = match next_in(&mut sub).await {
        SubscriptionEvent::RecoveryFailed {
            since,
            epoch,
            latest,
            lost,
        } => {
            assert_eq!(since, old);
            assert_eq!((epoch, latest), (old.epoch.clone(), Offset(23)));
            lost
        }
        other => panic!("expected RecoveryFailed, got {other:?}"),
    };
    assert_eq!(
        lost,
        [LostRange {
            epoch: old.epoch.clone(),
            from: Offset(4),
            to: Some(Offset(18)),
        }]
    );
    let replayed = messages(&mut sub, 5).await;
    assert_eq!(replayed, (19..=23).zip(18..23).collect::<Vec<_>>());
    let mut every: Vec<u64> = (lost[0].from.0..=lost[0].to.unwrap().0)
        .chain(replayed.iter().map(|(offset, _)| *offset))
        .collect();
    every.sort_unstable();
    assert_eq!(every, (4..=23).collect::<Vec<_>>());
    marker_is_next(addr, &mut sub, 24).await;
    client.close().await;
    stop(server).await;
}

/// The test: the server is killed and started again on the same port while the
/// client is subscribed; 50 messages are published through the HTTP API while the client
/// is away; it receives all 50, in order, once, with its subscription back.
///
/// The restarted server has a new history (new epoch), so the client's `since` names an
/// epoch it does not know: it replays its whole retained history (the 50) and answers
/// `recovered: false`, which the subscription reports as `RecoveryFailed` (anything
/// published to the old server after the client's last message would indeed be lost).
#[tokio::test]
async fn server_restart_on_the_same_port_delivers_the_50_once_in_order() {
    let server = start().await;
    let addr = server.local_addr();
    let (client, mut events) = client_with_fixed_delay(ws_url(addr), Duration::from_secs(1))
        .build()
        .unwrap();
    let first_id = within("ready", client.ready()).await.unwrap().client;
    let mut sub = within("subscribe", client.subscribe("feed")).await.unwrap();
    for n in 0..3 {
        publish(addr, "feed", json!({"n": n})).await;
    }
    assert_eq!(messages(&mut sub, 3).await, [(1, 0), (2, 1), (3, 2)]);
    let old = sub.position().unwrap();

    // Kill: the server shuts down (clients are closed with 1001), then comes back.
    stop(server).await;
    let dropped = next_wshub_event(&mut events, |e| {
        matches!(e, WshubEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            &dropped,
            WshubEvent::Disconnected {
                error: Some(Error::Closed { code: 1001, .. })
            }
        ),
        "{dropped:?}"
    );
    let server = start_on(addr).await;
    assert_eq!(server.local_addr(), addr);
    let restarted = Instant::now();
    for n in 0..50 {
        publish(addr, "feed", json!({"n": n})).await;
    }
    assert!(
        !client.is_ready(),
        "the 50 were published while the client was away"
    );

    let report = next_in(&mut sub).await;
    let new_epoch = match report {
        SubscriptionEvent::RecoveryFailed {
            since,
            epoch,
            latest,
            lost,
        } => {
            assert_eq!(since, old);
            assert_ne!(epoch, old.epoch);
            assert_eq!(latest.0, 50);
            // Whatever the old server numbered after offset 3 is gone (its end unknown);
            // the new epoch is replayed whole.
            assert_eq!(
                lost,
                [LostRange {
                    epoch: old.epoch.clone(),
                    from: Offset(4),
                    to: None,
                }]
            );
            epoch
        }
        other => panic!("expected RecoveryFailed, got {other:?}"),
    };
    let got = messages(&mut sub, 50).await;
    let caught_up = restarted.elapsed();
    assert_eq!(got, (1..=50).zip(0..50).collect::<Vec<_>>());
    assert_eq!(sub.position().unwrap().epoch, new_epoch);
    marker_is_next(addr, &mut sub, 51).await;

    // The subscription is back on the new server.
    let second_id = client.connection_id().unwrap();
    assert_ne!(second_id, first_id);
    assert_eq!(presence(addr, "feed").await, [second_id]);
    // One reconnect attempt, made after the fixed 1 s delay.
    assert!(caught_up >= Duration::from_millis(900), "{caught_up:?}");
    assert!(caught_up < Duration::from_secs(5), "{caught_up:?}");
    eprintln!("restart to 50 recovered messages: {caught_up:?}");
    client.close().await;
    stop(server).await;
}

#[tokio::test]
async fn publishes_made_while_away_are_sent_after_reconnecting() {
    let server = start().await;
    let addr = server.local_addr();
    let (client, mut events) = client_with_fixed_delay(ws_url(addr), Duration::from_millis(500))
        .offline_queue_capacity(3)
        .build()
        .unwrap();
    within("ready", client.ready()).await.unwrap();
    let mut sub = within("subscribe", client.subscribe("feed")).await.unwrap();

    stop(server).await;
    next_wshub_event(&mut events, |e| {
        matches!(e, WshubEvent::Disconnected { .. })
    })
    .await;
    // Written to the queue at the call, in call order; the fourth does not fit.
    let queued: Vec<_> = (0..3)
        .map(|n| client.publish("feed", &json!({"n": n})))
        .collect();
    let overflow = within("overflow", client.publish("feed", &json!({"n": 3}))).await;
    assert!(
        matches!(overflow, Err(Error::OfflineQueueFull { capacity: 3 })),
        "{overflow:?}"
    );
    // Other commands do not wait for a connection.
    assert!(matches!(
        within("ping", client.ping()).await,
        Err(Error::NotConnected)
    ));

    let server = start_on(addr).await;
    let mut offsets = Vec::new();
    for publish in queued {
        offsets.push(within("queued publish", publish).await.unwrap().0);
    }
    assert_eq!(offsets, [1, 2, 3]);
    // The room was joined again before the queue was sent: the client sees its own
    // messages (the new server's history starts with them).
    assert!(matches!(
        next_in(&mut sub).await,
        SubscriptionEvent::RecoveryFailed { .. }
    ));
    assert_eq!(messages(&mut sub, 3).await, [(1, 0), (2, 1), (3, 2)]);
    marker_is_next(addr, &mut sub, 4).await;
    client.close().await;
    stop(server).await;
}

/// A publish in flight when the connection drops fails with `Disconnected`, and one that
/// times out while queued is never sent.
#[tokio::test]
async fn queued_publishes_that_timed_out_are_not_sent() {
    let server = start().await;
    let addr = server.local_addr();
    let (client, mut events) = client_with_fixed_delay(ws_url(addr), Duration::from_millis(600))
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    within("ready", client.ready()).await.unwrap();
    let mut sub = within("subscribe", client.subscribe("feed")).await.unwrap();
    stop(server).await;
    next_wshub_event(&mut events, |e| {
        matches!(e, WshubEvent::Disconnected { .. })
    })
    .await;
    let late = within("times out", client.publish("feed", &json!({"n": 1}))).await;
    assert!(
        matches!(
            late,
            Err(Error::Timeout {
                command: "publish",
                ..
            })
        ),
        "{late:?}"
    );

    let server = start_on(addr).await;
    within("ready again", client.ready()).await.unwrap();
    assert!(matches!(
        next_in(&mut sub).await,
        SubscriptionEvent::RecoveryFailed { .. }
    ));
    // The first message the new server numbers is the marker: the timed-out one was dropped.
    marker_is_next(addr, &mut sub, 1).await;
    client.close().await;
    stop(server).await;
}
