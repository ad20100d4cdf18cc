//! Hostile clients of the protocol server: a subscribe flood, deeply nested JSON wherever a
//! command can carry it, and ids of every odd shape. Each is answered with error frames or
//! a close for the attacker alone, and a well-behaved client beside it keeps its service.

mod support;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wshub_server::state::ServerOptions;

/// The bystander publishes to a room it is in and gets its message back promptly.
async fn still_served(bystander: &mut Client, what: &str) {
    let started = Instant::now();
    send(
        bystander,
        json!({"type":"publish","room":"calm","id":"p","data":{"after":what}}),
    )
    .await;
    // The reply and the message itself, in either order.
    let (mut replied, mut delivered) = (false, false);
    for _ in 0..2 {
        let frame = next(bystander).await;
        match frame["type"].as_str() {
            Some("ok") => replied = frame["id"] == "p",
            Some("message") => delivered = frame["data"]["after"] == what,
            _ => panic!("{what}: unexpected {frame}"),
        }
    }
    assert!(replied && delivered, "{what}: publish not served");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the bystander waited {:?} during {what}",
        started.elapsed()
    );
}

async fn bystander(addr: std::net::SocketAddr) -> Client {
    let (mut ws, _) = connect(addr).await;
    let reply = request(&mut ws, json!({"type":"subscribe","room":"calm","id":1})).await;
    assert_eq!(reply["type"], "ok", "{reply}");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_flood_gets_limit_exceeded_beyond_the_room_limit() {
    let options = ServerOptions {
        max_rooms_per_connection: 50,
        rate_limit: None,
        ..ServerOptions::default()
    };
    let server = start(options).await;
    let addr = server.local_addr();
    let mut calm = bystander(addr).await;
    let (mut flooder, _) = connect(addr).await;

    // 5000 subscribes to distinct rooms, pipelined in one burst.
    const FLOOD: usize = 5000;
    for i in 0..FLOOD {
        within(
            "feed",
            flooder.feed(WsMessage::text(
                json!({"type":"subscribe","room":format!("flood:{i}"),"id":i}).to_string(),
            )),
        )
        .await
        .expect("feed");
    }
    within("flush", flooder.flush()).await.expect("flush");
    still_served(&mut calm, "a subscribe flood").await;

    let (mut ok, mut limited) = (0, 0);
    for i in 0..FLOOD {
        let reply = next(&mut flooder).await;
        assert_eq!(reply["id"], json!(i), "replies in order: {reply}");
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("ok"), _) => ok += 1,
            (Some("error"), Some("limit_exceeded")) => limited += 1,
            _ => panic!("unexpected reply {reply}"),
        }
    }
    assert_eq!((ok, limited), (50, FLOOD - 50));
    // The flooder is still connected and usable; nobody else was touched.
    nothing_pending(&mut flooder).await;
    assert_eq!(server.hub().connection_count(), 2);
    still_served(&mut calm, "the replies to the flood").await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_anywhere_in_a_command_is_refused_without_harm() {
    let server = start(ServerOptions {
        rate_limit: None,
        // Room for the 200 000-byte nestings below: larger than the server's default
        // `--max-message-size`, which would close the connection with 1009 instead.
        hub: ServerOptions::default().hub.max_message_bytes(1 << 20),
        ..ServerOptions::default()
    })
    .await;
    let addr = server.local_addr();
    let mut calm = bystander(addr).await;
    let (mut attacker, _) = connect(addr).await;

    const DEPTH: usize = 100_000;
    let arrays = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(DEPTH), "}".repeat(DEPTH));
    let unclosed = "[".repeat(DEPTH);
    // (`data` 100 000 deep is in tests/protocol.rs.)
    let cases: Vec<(&str, String)> = vec![
        ("the whole frame", arrays.clone()),
        ("the whole frame, unclosed", unclosed.clone()),
        ("the id", format!(r#"{{"type":"ping","id":{arrays}}}"#)),
        (
            "the id, before the type",
            format!(r#"{{"id":{objects},"type":"ping"}}"#),
        ),
        ("the type", format!(r#"{{"type":{arrays},"id":"t"}}"#)),
        (
            "the room",
            format!(r#"{{"type":"subscribe","id":"r","room":{objects}}}"#),
        ),
        (
            "since",
            format!(r#"{{"type":"subscribe","id":"s","room":"a","since":{arrays}}}"#),
        ),
        (
            "an unknown field",
            format!(r#"{{"type":"ping","id":"u","extra":{objects}}}"#),
        ),
        (
            "an unknown field, unclosed",
            format!(r#"{{"type":"ping","id":"v","extra":{unclosed}"#),
        ),
        (
            "send's to",
            format!(r#"{{"type":"send","id":"w","to":{arrays},"data":1}}"#),
        ),
        (
            "history's limit",
            format!(r#"{{"type":"history","id":"h","room":"a","limit":{arrays}}}"#),
        ),
        (
            "data, as objects",
            format!(r#"{{"type":"publish","id":"d","room":"a","data":{objects}}}"#),
        ),
        (
            "broadcast's data",
            format!(r#"{{"type":"broadcast","id":"b","data":{arrays}}}"#),
        ),
    ];
    for (what, text) in cases {
        send_raw(&mut attacker, &text).await;
        let reply = next(&mut attacker).await;
        if what == "an unknown field" {
            // Unknown fields are skipped (docs/PROTOCOL.md), however deep, without recursion.
            assert_eq!(reply, json!({"type":"pong","id":"u"}), "{what}");
        } else {
            assert_eq!(reply["type"], "error", "{what}: {reply}");
            assert!(
                matches!(reply["code"].as_str(), Some("bad_request" | "unknown_type")),
                "{what}: {reply}"
            );
        }
        nothing_pending(&mut attacker).await;
        still_served(&mut calm, what).await;
    }
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_odd_ids_are_echoed_exactly_or_answered_with_a_null_id() {
    let server = start(ServerOptions {
        rate_limit: None,
        // Room for the half-megabyte id below: larger than the server's default
        // `--max-message-size`, which would close the connection with 1009 instead.
        hub: ServerOptions::default().hub.max_message_bytes(1 << 20),
        ..ServerOptions::default()
    })
    .await;
    let addr = server.local_addr();
    let mut calm = bystander(addr).await;
    let (mut ws, _) = connect(addr).await;

    // Ids that are valid and must come back as the same JSON value.
    let echoed: Vec<(String, Value)> = vec![
        ("0".into(), json!(0)),
        ("18446744073709551615".into(), json!(u64::MAX)),
        ("-9223372036854775808".into(), json!(i64::MIN)),
        ("1.5".into(), json!(1.5)),
        ("1e308".into(), json!(1e308)),
        ("5e-324".into(), json!(5e-324)),
        ("0.30000000000000004".into(), json!(0.30000000000000004)),
        // Above u64: kept as the nearest f64, echoed exactly (see wshub-protocol's id tests).
        (
            "18446740407674040737093709551616".into(),
            json!(18446740407674040737093709551616.0_f64),
        ),
        (r#""""#.into(), json!("")),
        (r#""\u0000""#.into(), json!("\u{0}")),
        (
            r#""\"\\\/\b\f\n\r\t""#.into(),
            json!("\"\\/\u{8}\u{c}\n\r\t"),
        ),
        (r#""é𝄞""#.into(), json!("é𝄞")),
        // 64 bytes exactly, of four-byte characters.
        (format!("\"{}\"", "𝄞".repeat(16)), json!("𝄞".repeat(16))),
    ];
    for (raw, expected) in echoed {
        send_raw(&mut ws, &format!(r#"{{"type":"ping","id":{raw}}}"#)).await;
        let reply = next(&mut ws).await;
        assert_eq!(reply["type"], "pong", "{raw}: {reply}");
        assert_eq!(reply["id"], expected, "{raw}: {reply}");
    }

    // Ids that are not valid: the command is refused with `"id": null`.
    let long = format!("\"{}\"", "x".repeat(65));
    let half_megabyte = format!("\"{}\"", "x".repeat(512 * 1024));
    let digits = "9".repeat(100_000);
    let refused: Vec<(&str, String)> = vec![
        ("a number out of f64's range", "1e400".to_owned()),
        ("100 000 digits", digits),
        ("65 bytes", long),
        ("half a megabyte", half_megabyte),
        ("a lone surrogate", r#""\ud800""#.to_owned()),
        ("null", "null".to_owned()),
        ("an object", r#"{"id":1}"#.to_owned()),
        ("NaN", "NaN".to_owned()),
        ("a leading zero", "01".to_owned()),
    ];
    for (what, raw) in refused {
        send_raw(&mut ws, &format!(r#"{{"type":"ping","id":{raw}}}"#)).await;
        let reply = next(&mut ws).await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str(), &reply["id"]),
            (Some("error"), Some("bad_request"), &Value::Null),
            "{what}: {reply}"
        );
        nothing_pending(&mut ws).await;
        still_served(&mut calm, what).await;
    }

    // Invalid JSON right after a number: the id is the number read before the syntax error
    // (`Command::decode` keeps the id whenever one was read), here 0 of `0x10`.
    send_raw(&mut ws, r#"{"type":"ping","id":0x10}"#).await;
    let reply = next(&mut ws).await;
    assert_eq!(
        (reply["code"].as_str(), &reply["id"]),
        (Some("bad_request"), &json!(0))
    );

    // The same ids on a command that fails for another reason come back on its error.
    let reply = request(
        &mut ws,
        json!({"type":"subscribe","room":"has space","id":18446744073709551615_u64}),
    )
    .await;
    assert_eq!(
        (reply["code"].as_str(), &reply["id"]),
        (Some("bad_request"), &json!(u64::MAX))
    );
    nothing_pending(&mut ws).await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_commands_are_charged_to_the_rate_limit_and_a_flood_of_them_is_closed() {
    // The default limit: 50 commands/s, bursts of 100, closed after 100 refusals in 10 s.
    let server = start(ServerOptions::default()).await;
    let addr = server.local_addr();
    let mut calm = bystander(addr).await;
    let (attacker, _) = connect(addr).await;
    let (mut sink, mut stream) = futures_util::StreamExt::split(attacker);

    // Up to 5000 frames of 60 KB that are not JSON, as fast as they go.
    const FLOOD: usize = 5000;
    let garbage = "x".repeat(60_000);
    let writer = tokio::spawn(async move {
        for _ in 0..FLOOD {
            if sink.send(WsMessage::text(garbage.clone())).await.is_err() {
                break;
            }
        }
    });
    let (mut bad_request, mut rate_limited, mut closed) = (0, 0, None);
    let started = Instant::now();
    while closed.is_none() && started.elapsed() < Duration::from_secs(20) {
        match within("flood reply", futures_util::StreamExt::next(&mut stream)).await {
            Some(Ok(WsMessage::Text(text))) => {
                let reply: Value = serde_json::from_str(&text).expect("JSON");
                match reply["code"].as_str() {
                    Some("bad_request") => bad_request += 1,
                    Some("rate_limited") => rate_limited += 1,
                    _ => panic!("unexpected {reply}"),
                }
            }
            Some(Ok(WsMessage::Close(frame))) => {
                closed = Some(frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("error before the close: {error}"),
            None => break,
        }
    }
    let _ = within("writer", writer).await;
    // The first burst is answered (one second's worth, 50: the attacker's address already
    // has the bystander's connection), then refusals, then the close for sustained abuse.
    assert_eq!(closed, Some(Some(1008)));
    assert!((50..=80).contains(&bad_request), "{bad_request} answered");
    assert_eq!(rate_limited, 101, "refusals before the close");
    still_served(&mut calm, "a flood of invalid commands").await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_names_with_invisible_or_bidirectional_characters_are_refused() {
    let server = start(ServerOptions::default()).await;
    let (mut ws, _) = connect(server.local_addr()).await;
    for name in [
        "admin\u{202E}nimda",
        "lob\u{200B}by",
        "\u{2066}x\u{2069}",
        "\u{FEFF}a",
    ] {
        for kind in ["subscribe", "publish", "history"] {
            let reply = request(&mut ws, json!({"type":kind,"room":name,"id":kind,"data":1})).await;
            assert_eq!(
                (reply["type"].as_str(), reply["code"].as_str()),
                (Some("error"), Some("bad_request")),
                "{kind} {name:?}: {reply}"
            );
        }
    }
    nothing_pending(&mut ws).await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_churn_in_a_big_room_is_coalesced_per_tick() {
    use wshub_server::presence_events::{COALESCE_FROM_MEMBERS, TICK};
    let options = ServerOptions {
        rate_limit: None,
        ..ServerOptions::default()
    };
    let server = start(options).await;
    let addr = server.local_addr();
    let (mut watcher, _) = connect(addr).await;
    let reply = request(
        &mut watcher,
        json!({"type":"subscribe","room":"big","id":0}),
    )
    .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    let mut members = Vec::new();
    for i in 0..COALESCE_FROM_MEMBERS {
        let (mut member, _) = connect(addr).await;
        let reply = request(&mut member, json!({"type":"subscribe","room":"big","id":i})).await;
        assert_eq!(reply["type"], "ok", "{reply}");
        members.push(member);
    }
    // The watcher hears of every member, the last ones at the end of a tick.
    for _ in 0..COALESCE_FROM_MEMBERS {
        assert_eq!(next(&mut watcher).await["type"], "join");
    }
    nothing_pending(&mut watcher).await;

    // 50 subscribes and unsubscribes, pipelined: 100 events in a room of 101 without
    // coalescing; at most one per tick with it.
    let (mut churner, churner_id) = connect(addr).await;
    let started = Instant::now();
    for i in 0..50 {
        for kind in ["subscribe", "unsubscribe"] {
            within(
                "feed",
                churner.feed(WsMessage::text(
                    json!({"type":kind,"room":"big","id":i}).to_string(),
                )),
            )
            .await
            .expect("feed");
        }
    }
    within("flush", churner.flush()).await.expect("flush");
    for _ in 0..100 {
        assert_eq!(next(&mut churner).await["type"], "ok");
    }
    let ticks = (started.elapsed().as_millis() / TICK.as_millis()) as usize + 1;
    tokio::time::sleep(TICK * 3).await;
    // Everything the watcher heard, up to the pong of a ping sent now.
    send(&mut watcher, json!({"type":"ping","id":"sync"})).await;
    let mut heard = Vec::new();
    loop {
        let frame = next(&mut watcher).await;
        if frame["type"] == "pong" {
            break;
        }
        assert_eq!(frame["client"], churner_id.as_str(), "{frame}");
        heard.push(frame["type"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        heard.len() <= 2 * ticks && heard.len() < 20,
        "{} events in {ticks} ticks: {heard:?}",
        heard.len()
    );
    // What was heard alternates and ends where the churner is: outside the room.
    for (i, kind) in heard.iter().enumerate() {
        assert_eq!(kind, if i % 2 == 0 { "join" } else { "leave" }, "{heard:?}");
    }
    assert_eq!(heard.len() % 2, 0, "{heard:?}");
    let (_, metrics) = http(addr, "GET", "/metrics", &[], None).await;
    let coalesced: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("wshub_presence_events_coalesced_total "))
        .and_then(|value| value.parse().ok())
        .expect("the coalescing metric");
    assert!(coalesced >= 100 - heard.len() as u64, "{coalesced}");

    // A join that stays is announced once, within a tick or two.
    let reply = request(
        &mut churner,
        json!({"type":"subscribe","room":"big","id":"stay"}),
    )
    .await;
    assert_eq!(reply["type"], "ok");
    let join = next(&mut watcher).await;
    assert_eq!(join["type"], "join");
    assert_eq!(join["client"], churner_id.as_str());
    nothing_pending(&mut watcher).await;
    drop(members);
    stop(server).await;
}
