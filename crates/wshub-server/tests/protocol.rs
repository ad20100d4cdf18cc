//! The JSON protocol over real sockets: every command, reply, error code and close code of
//! docs/PROTOCOL.md.

mod support;

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wshub_server::state::ServerOptions;

#[tokio::test]
async fn welcome_then_subscribe_publish_unsubscribe() {
    let server = start(ServerOptions::default()).await;
    let addr = server.local_addr();
    let mut ws = try_connect(addr, "", &[]).await.expect("connect");
    let welcome = next(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["user"], json!(null));
    assert_eq!(welcome["ping_interval_ms"], 25000);
    assert_eq!(welcome["version"], 1);
    let me = welcome["client"].as_str().expect("id").to_owned();
    let (mut other, other_id) = connect(addr).await;
    assert_ne!(me, other_id, "ids are unique");

    let ok = request(&mut ws, json!({"type":"subscribe","room":"chat","id":1})).await;
    assert_eq!(ok["type"], "ok");
    assert_eq!(ok["id"], 1);
    assert_eq!(ok["room"], "chat");
    assert_eq!(ok["offset"], 0);
    assert!(ok["epoch"].is_string());
    assert!(
        ok.get("recovered").is_none(),
        "recovered only with since: {ok}"
    );
    let epoch = ok["epoch"].clone();

    // The publisher need not be subscribed; the subscriber gets it with its position.
    let ok = request(
        &mut other,
        json!({"type":"publish","room":"chat","data":{"text":"hi"},"id":"p1"}),
    )
    .await;
    assert_eq!(ok, json!({"type":"ok","id":"p1","room":"chat","offset":1}));
    let message = next(&mut ws).await;
    assert_eq!(
        message,
        json!({"type":"message","room":"chat","data":{"text":"hi"},"from":other_id,"offset":1,"epoch":epoch})
    );
    // A subscribed publisher gets its own message too.
    send(
        &mut ws,
        json!({"type":"publish","room":"chat","data":[1,2,3]}),
    )
    .await;
    let own = next(&mut ws).await;
    assert_eq!(own["data"], json!([1, 2, 3]));
    assert_eq!(own["offset"], 2);
    assert_eq!(own["from"], me);

    let ok = request(&mut ws, json!({"type":"unsubscribe","room":"chat","id":2})).await;
    assert_eq!(ok, json!({"type":"ok","id":2,"room":"chat"}));
    send(
        &mut other,
        json!({"type":"publish","room":"chat","data":"after"}),
    )
    .await;
    nothing_pending(&mut ws).await;
    // Unsubscribing from a room one is not in is fine.
    let ok = request(&mut ws, json!({"type":"unsubscribe","room":"never","id":3})).await;
    assert_eq!(ok, json!({"type":"ok","id":3,"room":"never"}));
    stop(server).await;
}

#[tokio::test]
async fn commands_without_id_get_no_ok_but_errors_with_null_id() {
    let server = start(ServerOptions::default()).await;
    let (mut ws, _) = connect(server.local_addr()).await;
    send(&mut ws, json!({"type":"subscribe","room":"a"})).await;
    send(&mut ws, json!({"type":"subscribe","room":"bad room"})).await;
    let error = next(&mut ws).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], json!(null));
    assert_eq!(error["code"], "bad_request");
    // The silent subscribe did take effect.
    send(&mut ws, json!({"type":"publish","room":"a","data":1})).await;
    assert_eq!(next(&mut ws).await["type"], "message");
    stop(server).await;
}

#[tokio::test]
async fn every_error_code_of_a_bad_command() {
    // Room for the 200 000-byte nesting below: larger than the server's default
    // `--max-message-size`, which would close the connection with 1009 instead.
    let server = start(ServerOptions {
        hub: ServerOptions::default().hub.max_message_bytes(1 << 20),
        ..ServerOptions::default()
    })
    .await;
    let (mut ws, _) = connect(server.local_addr()).await;
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("not json", json!(null), "bad_request"),
        ("[1,2]", json!(null), "bad_request"),
        (r#"{"id":5}"#, json!(5), "bad_request"),
        (r#"{"type":"fly","id":6}"#, json!(6), "unknown_type"),
        (r#"{"type":"subscribe","id":7}"#, json!(7), "bad_request"),
        (
            r#"{"type":"subscribe","room":5,"id":8}"#,
            json!(8),
            "bad_request",
        ),
        (
            r#"{"type":"publish","room":"r","id":9}"#,
            json!(9),
            "bad_request",
        ),
        (
            r#"{"type":"ping","id":{"a":1}}"#,
            json!(null),
            "bad_request",
        ),
        (r#"{"type":"ping","id":true}"#, json!(null), "bad_request"),
        (
            r#"{"type":"send","to":"nobody","data":1,"id":10}"#,
            json!(10),
            "not_found",
        ),
        (
            r#"{"type":"send","to":"000000000000-1","data":1,"id":11}"#,
            json!(11),
            "not_found",
        ),
        (
            r#"{"type":"history","room":"r","limit":"x","id":12}"#,
            json!(12),
            "bad_request",
        ),
    ];
    for (text, id, code) in cases {
        send_raw(&mut ws, text).await;
        let error = next(&mut ws).await;
        assert_eq!(error["type"], "error", "{text}: {error}");
        assert_eq!(error["id"], id, "{text}: {error}");
        assert_eq!(error["code"], code, "{text}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let long_id = "x".repeat(65);
    send(&mut ws, json!({"type":"ping","id":long_id})).await;
    assert_eq!(next(&mut ws).await["id"], json!(null));
    let ok_id = "y".repeat(64);
    send(&mut ws, json!({"type":"ping","id":ok_id})).await;
    assert_eq!(next(&mut ws).await, json!({"type":"pong","id":ok_id}));

    // Room names: 1..=128 bytes, no whitespace or control characters.
    for (room, ok) in [
        ("x".repeat(128), true),
        ("x".repeat(129), false),
        (String::new(), false),
        ("a b".into(), false),
        ("a\tb".into(), false),
        ("a\u{85}b".into(), false),
        ("chat:é:1".into(), true),
    ] {
        let reply = request(&mut ws, json!({"type":"subscribe","room":room,"id":"r"})).await;
        assert_eq!(reply["type"] == "ok", ok, "{room:?}: {reply}");
    }
    // A deeply nested payload is refused without harm.
    let deep = format!(
        r#"{{"type":"publish","room":"r","id":"deep","data":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    send_raw(&mut ws, &deep).await;
    let error = next(&mut ws).await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("bad_request"), Some("deep"))
    );
    nothing_pending(&mut ws).await;
    stop(server).await;
}

#[tokio::test]
async fn send_broadcast_and_ping() {
    let server = start(ServerOptions::default()).await;
    let addr = server.local_addr();
    let (mut a, a_id) = connect(addr).await;
    let (mut b, b_id) = connect(addr).await;
    let ok = request(
        &mut a,
        json!({"type":"send","to":b_id,"data":{"x":1},"id":1}),
    )
    .await;
    assert_eq!(ok, json!({"type":"ok","id":1}));
    assert_eq!(
        next(&mut b).await,
        json!({"type":"direct","from":a_id,"data":{"x":1}})
    );
    // The sender gets its own broadcast first, then the ok (delivery happens before the
    // reply is queued).
    send(&mut b, json!({"type":"broadcast","data":"all","id":2})).await;
    assert_eq!(
        next(&mut b).await,
        json!({"type":"broadcast","from":b_id,"data":"all"})
    );
    assert_eq!(next(&mut b).await, json!({"type":"ok","id":2}));
    assert_eq!(
        next(&mut a).await,
        json!({"type":"broadcast","from":b_id,"data":"all"})
    );
    assert_eq!(
        request(&mut a, json!({"type":"ping","id":3})).await,
        json!({"type":"pong","id":3})
    );
    assert_eq!(
        request(&mut a, json!({"type":"ping"})).await,
        json!({"type":"pong","id":null})
    );
    stop(server).await;
}

#[tokio::test]
async fn presence_lists_members_and_announces_joins_and_leaves() {
    let server = start(ServerOptions::default()).await;
    let addr = server.local_addr();
    let (mut a, a_id) = connect(addr).await;
    let (mut b, b_id) = connect(addr).await;
    request(&mut a, json!({"type":"subscribe","room":"lobby","id":1})).await;
    request(&mut b, json!({"type":"subscribe","room":"lobby","id":1})).await;
    assert_eq!(
        next(&mut a).await,
        json!({"type":"join","room":"lobby","client":b_id,"user":null})
    );
    let presence = request(&mut a, json!({"type":"presence","room":"lobby","id":2})).await;
    let mut clients: Vec<String> = presence["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| c["client"].as_str().expect("id").to_owned())
        .collect();
    clients.sort();
    let mut expected = vec![a_id.clone(), b_id.clone()];
    expected.sort();
    assert_eq!(clients, expected);
    assert_eq!(presence["room"], "lobby");
    assert_eq!(presence["clients"][0]["user"], json!(null));

    request(&mut b, json!({"type":"unsubscribe","room":"lobby","id":3})).await;
    assert_eq!(
        next(&mut a).await,
        json!({"type":"leave","room":"lobby","client":b_id,"user":null})
    );
    request(&mut b, json!({"type":"subscribe","room":"lobby","id":4})).await;
    assert_eq!(next(&mut a).await["type"], "join");
    // Never about oneself.
    nothing_pending(&mut b).await;
    // Disconnecting counts as leaving.
    drop(b);
    assert_eq!(
        next(&mut a).await,
        json!({"type":"leave","room":"lobby","client":b_id,"user":null})
    );
    let presence = request(&mut a, json!({"type":"presence","room":"lobby","id":5})).await;
    assert_eq!(presence["clients"].as_array().map(Vec::len), Some(1));
    stop(server).await;
}

#[tokio::test]
async fn presence_events_can_be_turned_off() {
    let options = ServerOptions {
        presence_events: false,
        ..ServerOptions::default()
    };
    let server = start(options).await;
    let (mut a, _) = connect(server.local_addr()).await;
    let (mut b, _) = connect(server.local_addr()).await;
    request(&mut a, json!({"type":"subscribe","room":"q","id":1})).await;
    request(&mut b, json!({"type":"subscribe","room":"q","id":1})).await;
    nothing_pending(&mut a).await;
    stop(server).await;
}

#[tokio::test]
async fn history_newest_paging_and_epochs() {
    let server = start(ServerOptions::default()).await;
    let (mut ws, _) = connect(server.local_addr()).await;
    for i in 1..=10 {
        request(
            &mut ws,
            json!({"type":"publish","room":"h","data":i,"id":i}),
        )
        .await;
    }
    let newest = request(
        &mut ws,
        json!({"type":"history","room":"h","limit":3,"id":"n"}),
    )
    .await;
    let data: Vec<_> = newest["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, [json!(8), json!(9), json!(10)]);
    assert!(newest.get("recovered").is_none());
    let epoch = newest["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(newest["messages"][0]["type"], "message");

    let page = request(
        &mut ws,
        json!({"type":"history","room":"h","since":{"epoch":epoch,"offset":4},"limit":2,"id":"p"}),
    )
    .await;
    let offsets: Vec<_> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].clone())
        .collect();
    assert_eq!(offsets, [json!(5), json!(6)]);
    assert_eq!(page["recovered"], true);

    let other = request(
        &mut ws,
        json!({"type":"history","room":"h","since":{"epoch":"old","offset":4},"id":"e"}),
    )
    .await;
    assert_eq!(other["recovered"], false);
    assert_eq!(
        other["messages"].as_array().map(Vec::len),
        Some(10),
        "whole retained history"
    );
    stop(server).await;
}

#[tokio::test]
async fn recovery_replays_exactly_what_was_missed_in_order() {
    let options = ServerOptions {
        api_key: Some("k".into()),
        ..ServerOptions::default()
    };
    let server = start(options).await;
    let addr = server.local_addr();
    let (mut ws, _) = connect(addr).await;
    let ok = request(&mut ws, json!({"type":"subscribe","room":"feed","id":1})).await;
    let epoch = ok["epoch"].as_str().expect("epoch").to_owned();
    request(
        &mut ws,
        json!({"type":"publish","room":"feed","data":0,"id":2}),
    )
    .await;
    let seen = next(&mut ws).await;
    assert_eq!(seen["offset"], 1);
    drop(ws);

    for i in 1..=20 {
        let (status, body) = api(addr, "k", "/api/publish", json!({"room":"feed","data":i})).await;
        assert_eq!(status, 200, "{body}");
    }
    let (mut ws, _) = connect(addr).await;
    let ok = request(
        &mut ws,
        json!({"type":"subscribe","room":"feed","since":{"epoch":epoch,"offset":1},"id":3}),
    )
    .await;
    assert_eq!(ok["recovered"], true, "{ok}");
    assert_eq!(ok["offset"], 21);
    for i in 1..=20 {
        let message = next(&mut ws).await;
        assert_eq!(message["data"], i);
        assert_eq!(message["offset"], i + 1);
        assert_eq!(message["from"], json!(null), "published through the API");
    }
    // Then live ones, with no duplicate.
    api(
        addr,
        "k",
        "/api/publish",
        json!({"room":"feed","data":"live"}),
    )
    .await;
    let live = next(&mut ws).await;
    assert_eq!(
        (live["data"].as_str(), live["offset"].as_u64()),
        (Some("live"), Some(22))
    );
    stop(server).await;
}

#[tokio::test]
async fn recovery_past_the_trimmed_history_says_recovered_false() {
    let mut options = ServerOptions::default();
    options.history.max_messages = 5;
    let server = start(options).await;
    let (mut ws, _) = connect(server.local_addr()).await;
    let ok = request(&mut ws, json!({"type":"subscribe","room":"t","id":1})).await;
    let epoch = ok["epoch"].as_str().expect("epoch").to_owned();
    for i in 1..=12 {
        send(&mut ws, json!({"type":"publish","room":"t","data":i})).await;
        next(&mut ws).await;
    }
    request(&mut ws, json!({"type":"unsubscribe","room":"t","id":2})).await;
    let ok = request(
        &mut ws,
        json!({"type":"subscribe","room":"t","since":{"epoch":epoch,"offset":2},"id":3}),
    )
    .await;
    assert_eq!(ok["recovered"], false);
    // What is retained still comes, in order.
    for offset in 8..=12 {
        assert_eq!(next(&mut ws).await["offset"], offset);
    }
    // An unknown epoch: recovered false as well.
    request(&mut ws, json!({"type":"unsubscribe","room":"t","id":4})).await;
    let ok = request(
        &mut ws,
        json!({"type":"subscribe","room":"t","since":{"epoch":"gone","offset":12},"id":5}),
    )
    .await;
    assert_eq!(ok["recovered"], false);
    stop(server).await;
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let server = start(ServerOptions::default()).await;
    let (mut ws, _) = connect(server.local_addr()).await;
    within("send", ws.send(WsMessage::binary(vec![1_u8, 2])))
        .await
        .expect("send");
    assert_eq!(close_frame(&mut ws).await.map(|(c, _)| c), Some(1003));
    stop(server).await;
}

#[tokio::test]
async fn too_many_rooms_is_limit_exceeded() {
    let options = ServerOptions {
        max_rooms_per_connection: 2,
        ..ServerOptions::default()
    };
    let server = start(options).await;
    let (mut ws, _) = connect(server.local_addr()).await;
    for room in ["a", "b"] {
        assert_eq!(
            request(&mut ws, json!({"type":"subscribe","room":room,"id":1})).await["type"],
            "ok"
        );
    }
    let error = request(&mut ws, json!({"type":"subscribe","room":"c","id":2})).await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_i64()),
        (Some("limit_exceeded"), Some(2))
    );
    // Re-subscribing to a room one is in is not a new room.
    assert_eq!(
        request(&mut ws, json!({"type":"subscribe","room":"a","id":3})).await["type"],
        "ok"
    );
    stop(server).await;
}

#[tokio::test]
async fn rate_limits_answer_rate_limited_then_close_with_1008() {
    let options = ServerOptions {
        rate_limit: Some(wshub_server::rate_limit::RateLimitConfig {
            per_second: 1.0,
            burst: 5,
            max_rejections: 10,
            rejection_window: std::time::Duration::from_secs(10),
            per_address: None,
        }),
        ..ServerOptions::default()
    };
    let server = start(options).await;
    let addr = server.local_addr();
    let (mut abuser, _) = connect(addr).await;
    let (mut calm, _) = connect(addr).await;
    for i in 0..5 {
        assert_eq!(
            request(&mut abuser, json!({"type":"ping","id":i})).await["type"],
            "pong"
        );
    }
    let limited = request(&mut abuser, json!({"type":"ping","id":"over"})).await;
    assert_eq!(
        (limited["code"].as_str(), limited["id"].as_str()),
        (Some("rate_limited"), Some("over"))
    );
    for _ in 0..20 {
        send(&mut abuser, json!({"type":"ping"})).await;
    }
    assert_eq!(close_frame(&mut abuser).await.map(|(c, _)| c), Some(1008));
    // Nobody else was slowed.
    assert_eq!(
        request(&mut calm, json!({"type":"ping","id":1})).await["type"],
        "pong"
    );
    stop(server).await;
}

#[tokio::test]
async fn rejections_before_the_upgrade_have_a_json_body() {
    let mut options = ServerOptions::default();
    options.hub = options.hub.max_connections(1);
    let server = start(options).await;
    let addr = server.local_addr();

    let (status, body) = http(addr, "GET", "/ws", &[], None).await;
    assert_eq!(status, 400);
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["error"], "bad_request");
    assert!(body["message"].is_string());

    let upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let mut old = upgrade.to_vec();
    old.push(("Sec-WebSocket-Version", "12"));
    let (status, body) = http(addr, "GET", "/ws", &old, None).await;
    assert_eq!(status, 426, "{body}");

    let evil = [("origin", "https://evil.example")];
    assert_eq!(try_connect(addr, "", &evil).await.err(), Some(403));

    let (_first, _) = connect(addr).await;
    assert_eq!(try_connect(addr, "", &[]).await.err(), Some(503));
    stop(server).await;
}

#[tokio::test]
async fn oversized_and_invalid_utf8_frames_close_with_1009_and_1007() {
    let mut options = ServerOptions::default();
    options.hub = options.hub.max_message_bytes(256);
    let server = start(options).await;
    let addr = server.local_addr();
    let (mut big, _) = connect(addr).await;
    let payload = "x".repeat(300);
    send(
        &mut big,
        json!({"type":"publish","room":"r","data":payload}),
    )
    .await;
    assert_eq!(close_frame(&mut big).await.map(|(c, _)| c), Some(1009));

    let (mut bad, _) = connect(addr).await;
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let frame = Frame::message(vec![b'{', 0xc3, 0x28, b'}'], OpCode::Data(Data::Text), true);
    within("send", bad.send(WsMessage::Frame(frame)))
        .await
        .expect("send");
    assert_eq!(close_frame(&mut bad).await.map(|(c, _)| c), Some(1007));
    stop(server).await;
}
