//! The reconnecting client on its own: events and callbacks, the backoff schedule in real
//! (paused) time, giving up, the heartbeat, cancellation.

mod support;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use support::*;
use tokio::time::Instant;
use wshub_client::{
    Backoff, Client, ConnectionState, Error, Event, FixedJitter, Heartbeat, Message,
    ReconnectPolicy,
};

#[tokio::test]
async fn events_and_callbacks_send_and_disconnect() {
    let server = start().await;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = |name: &'static str| {
        let seen = Arc::clone(&seen);
        move || seen.lock().unwrap().push(name.to_owned())
    };
    let on_connected = log("connected");
    let on_message = {
        let seen = Arc::clone(&seen);
        move |m: &Message| {
            seen.lock()
                .unwrap()
                .push(format!("message {}", m.as_text().is_some()))
        }
    };
    let on_disconnected = {
        let seen = Arc::clone(&seen);
        move |e: Option<&Error>| seen.lock().unwrap().push(format!("disconnected {e:?}"))
    };
    let (client, mut events) = Client::builder(ws_url(server.local_addr()))
        .header("X-Test", "yes")
        .on_connected(on_connected)
        .on_message(on_message)
        .on_disconnected(on_disconnected)
        .build()
        .unwrap();
    assert_eq!(client.state(), ConnectionState::Idle);
    assert!(matches!(
        client.send_text("early"),
        Err(Error::NotConnected)
    ));
    client.connect();
    within("connected", client.connected()).await.unwrap();
    assert!(client.is_connected());
    assert!(matches!(events.recv().await, Some(Event::Connected)));
    let Some(Event::Message(Message::Text(welcome))) = within("welcome", events.recv()).await
    else {
        panic!("expected the welcome frame");
    };
    assert!(welcome.contains(r#""type":"welcome""#), "{welcome}");

    // Text, JSON and binary; the server answers pings and closes on binary (1003).
    client
        .send_json(&serde_json::json!({"type": "ping", "id": "j"}))
        .unwrap();
    let pong = next_event(&mut events, |e| matches!(e, Event::Message(_))).await;
    assert!(matches!(pong, Event::Message(Message::Text(t)) if t == r#"{"type":"pong","id":"j"}"#));
    client.send_text(r#"{"type":"ping","id":2}"#).unwrap();
    let pong = next_event(&mut events, |e| matches!(e, Event::Message(_))).await;
    assert!(matches!(pong, Event::Message(Message::Text(t)) if t.contains(r#""id":2"#)));
    client.send_binary(vec![1u8, 2, 3]).unwrap();
    let closed = next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(
        matches!(
            &closed,
            Event::Disconnected {
                error: Some(Error::Closed { code: 1003, .. })
            }
        ),
        "{closed:?}"
    );
    // 1003 means "do not retry as is": the default policy stops.
    within("stopped", async {
        let mut state = client.watch_state();
        state
            .wait_for(|s| *s == ConnectionState::Stopped)
            .await
            .unwrap();
    })
    .await;

    // connect() starts over; disconnect() closes with 1000 and reports no error.
    client.connect();
    within("connected again", client.connected()).await.unwrap();
    client.disconnect().await;
    assert_eq!(client.state(), ConnectionState::Idle);
    let ended = next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(
        matches!(ended, Event::Disconnected { error: None }),
        "{ended:?}"
    );

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|s| *s == "connected").count(),
        2,
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.starts_with("disconnected Some(Closed")),
        "{seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("disconnected None"));
    assert!(seen.iter().filter(|s| *s == "message true").count() >= 3);

    client.close().await;
    assert!(client.task_tracker().is_empty());
    assert!(matches!(client.send_text("late"), Err(Error::ClientClosed)));
    stop(server).await;
}

/// The schedule in (paused) real time: every delay is the jittered ceiling, attempts stop at
/// `max_attempts`, and the last event is `GaveUp`.
#[tokio::test(start_paused = true)]
async fn backoff_delays_then_gave_up_with_paused_time() {
    let addr = closed_port().await;
    let gave_up = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&gave_up);
    let (client, mut events) = Client::builder(ws_url(addr))
        .backoff(Backoff {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_attempts: 4,
        })
        .jitter(FixedJitter(0.5))
        .on_gave_up(move |attempts| {
            counter.store(attempts as usize, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let started = Instant::now();
    client.connect();
    let mut log = Vec::new();
    let mut times = Vec::new();
    for _ in 0..50 {
        let event = within("event", events.recv()).await.unwrap();
        times.push(started.elapsed());
        let done = matches!(event, Event::GaveUp { .. });
        log.push(event);
        if done {
            break;
        }
    }
    let reconnecting: Vec<(u32, u128)> = log
        .iter()
        .filter_map(|e| match e {
            Event::Reconnecting { attempt, delay } => Some((*attempt, delay.as_millis())),
            _ => None,
        })
        .collect();
    // Ceilings 100, 200, 300 (cap), 300; half of each.
    assert_eq!(reconnecting, [(1, 50), (2, 100), (3, 150), (4, 150)]);
    let errors = log
        .iter()
        .filter(|e| matches!(e, Event::Error(Error::Connect(_))))
        .count();
    assert_eq!(errors, 5, "the first try and four retries: {log:?}");
    assert!(
        matches!(log.last(), Some(Event::GaveUp { attempts: 4 })),
        "{log:?}"
    );
    assert_eq!(gave_up.load(Ordering::SeqCst), 4);
    // The clock only moved by the delays.
    assert_eq!(times.last().copied(), Some(Duration::from_millis(450)));
    assert_eq!(client.state(), ConnectionState::Stopped);
    assert!(matches!(
        within("connected", client.connected()).await,
        Err(Error::GaveUp { attempts: 4 })
    ));
    client.close().await;
    assert!(client.task_tracker().is_empty());
}

/// A server that stops answering (no pong, no traffic) is noticed by the heartbeat, and
/// the client reconnects.
#[tokio::test]
async fn heartbeat_notices_a_silent_server_and_reconnects() {
    let (addr, accepted) = silent_server(None).await;
    let (client, mut events) = Client::builder(ws_url(addr))
        .heartbeat(Some(Heartbeat {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(150),
        }))
        .backoff(Backoff {
            initial_delay: Duration::from_millis(10),
            ..Backoff::default()
        })
        .build()
        .unwrap();
    let started = Instant::now();
    client.connect();
    next_event(&mut events, |e| matches!(e, Event::Connected)).await;
    let dropped = next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    let after = started.elapsed();
    assert!(
        matches!(
            dropped,
            Event::Disconnected {
                error: Some(Error::HeartbeatTimeout(_))
            }
        ),
        "{dropped:?}"
    );
    // Ping after 100 ms of silence, dead 150 ms later.
    assert!(after >= Duration::from_millis(250), "{after:?}");
    assert!(after < Duration::from_secs(3), "{after:?}");
    next_event(&mut events, |e| {
        matches!(e, Event::Reconnecting { attempt: 1, .. })
    })
    .await;
    next_event(&mut events, |e| matches!(e, Event::Connected)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    client.close().await;
}

/// Dropping every handle stops every task the client started, connected or not.
#[tokio::test]
async fn dropping_the_client_stops_its_tasks() {
    let server = start().await;
    let addr = server.local_addr();
    let (client, events) = Client::builder(ws_url(addr))
        .reconnect_policy(ReconnectPolicy::Always)
        .build()
        .unwrap();
    client.connect();
    within("connected", client.connected()).await.unwrap();
    let tracker = client.task_tracker();
    assert_eq!(tracker.len(), 1);
    drop(client);
    within("tasks end", tracker.wait()).await;
    assert!(tracker.is_empty());
    drop(events);
    // The server saw the connection go.
    within("server sees the close", async {
        for _ in 0..200 {
            if api_get(addr, "/stats").await["clients"] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("connection still open");
    })
    .await;

    // Also while waiting out a backoff delay.
    let (client, _events) = Client::builder(ws_url(closed_port().await))
        .backoff(Backoff {
            initial_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(60),
            max_attempts: 0,
        })
        .jitter(FixedJitter(1.0))
        .build()
        .unwrap();
    client.connect();
    let mut state = client.watch_state();
    within(
        "reconnecting",
        state.wait_for(|s| *s == ConnectionState::Reconnecting),
    )
    .await
    .unwrap();
    let tracker = client.task_tracker();
    drop(client);
    within("tasks end", tracker.wait()).await;
    stop(server).await;
}

/// With automatic reconnection off, a failed attempt is reported and nothing else happens.
#[tokio::test]
async fn no_reconnect_when_turned_off() {
    let (client, mut events) = Client::builder(ws_url(closed_port().await))
        .reconnect(false)
        .build()
        .unwrap();
    client.connect();
    let event = within("event", events.recv()).await.unwrap();
    assert!(
        matches!(event, Event::Error(Error::Connect(_))),
        "{event:?}"
    );
    let mut state = client.watch_state();
    within(
        "stopped",
        state.wait_for(|s| *s == ConnectionState::Stopped),
    )
    .await
    .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.recv())
            .await
            .is_err(),
        "no further event"
    );
    // Bad configuration is refused up front.
    assert!(matches!(
        Client::builder("http://x").build().map(drop),
        Err(Error::InvalidUrl { .. })
    ));
    assert!(matches!(
        Client::builder("ws://x/ws")
            .header("Upgrade", "no")
            .build()
            .map(drop),
        Err(Error::InvalidHeader { .. })
    ));
    client.close().await;
}

/// `reconnect_every` waits exactly its delay before every attempt, with no cap on attempts.
#[tokio::test(start_paused = true)]
async fn reconnect_every_waits_the_same_delay_every_time() {
    let addr = closed_port().await;
    let (client, mut events) = Client::builder(ws_url(addr))
        .reconnect_every(Duration::from_millis(250))
        .build()
        .unwrap();
    let started = Instant::now();
    client.connect();
    let mut reconnecting = Vec::new();
    for _ in 0..50 {
        if let Event::Reconnecting { attempt, delay } =
            within("event", events.recv()).await.unwrap()
        {
            reconnecting.push((attempt, delay.as_millis()));
            if attempt == 6 {
                break;
            }
        }
    }
    assert_eq!(
        reconnecting,
        [(1, 250), (2, 250), (3, 250), (4, 250), (5, 250), (6, 250)]
    );
    // Five waits of 250 ms have passed before the sixth is announced.
    assert_eq!(started.elapsed(), Duration::from_millis(1250));
    client.close().await;
}
