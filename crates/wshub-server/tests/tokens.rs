//! JWT: good, badly signed, expired at connect, expiring while connected, and forbidden by
//! the `rooms` and `publish` patterns.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use wshub_server::state::ServerOptions;

const SECRET: &str = "test-secret";

fn options() -> ServerOptions {
    ServerOptions {
        jwt_secret: Some(SECRET.into()),
        ..ServerOptions::default()
    }
}

#[tokio::test]
async fn tokens_are_checked_at_connect() {
    let server = start(options()).await;
    let addr = server.local_addr();
    assert_eq!(
        try_connect(addr, "", &[]).await.err(),
        Some(401),
        "token required"
    );
    let forged = token("another-secret", json!({"sub":"mallory"}));
    assert_eq!(
        try_connect(addr, &format!("?token={forged}"), &[])
            .await
            .err(),
        Some(401)
    );
    let expired = token(SECRET, json!({"sub":"late","exp":unix_now() - 60}));
    assert_eq!(
        try_connect(addr, &format!("?token={expired}"), &[])
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        try_connect(addr, "?token=not.a.jwt", &[]).await.err(),
        Some(401)
    );

    let good = token(SECRET, json!({"sub":"alice"}));
    let (mut ws, _) = connect_query(addr, &format!("?token={good}")).await;
    let presence_check = request(&mut ws, json!({"type":"subscribe","room":"any","id":1})).await;
    assert_eq!(presence_check["type"], "ok");
    let presence = request(&mut ws, json!({"type":"presence","room":"any","id":2})).await;
    assert_eq!(presence["clients"][0]["user"], "alice");

    // The header wins over the query parameter.
    let bearer = format!("Bearer {good}");
    let mut ws = try_connect(addr, "?token=garbage", &[("authorization", &bearer)])
        .await
        .expect("header token accepted");
    let welcome = next(&mut ws).await;
    assert_eq!(welcome["user"], "alice");
    stop(server).await;
}

#[tokio::test]
async fn a_token_expiring_while_connected_closes_with_1008() {
    let server = start(options()).await;
    let soon = token(SECRET, json!({"sub":"brief","exp":unix_now() + 2}));
    let started = Instant::now();
    let (mut ws, _) = connect_query(server.local_addr(), &format!("?token={soon}")).await;
    let (code, reason) = close_frame(&mut ws).await.expect("close frame");
    assert_eq!(code, 1008);
    assert!(reason.contains("expired"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(4));
    stop(server).await;
}

#[tokio::test]
async fn room_and_publish_patterns_forbid() {
    let server = start(options()).await;
    let limited = token(
        SECRET,
        json!({"sub":"bob","rooms":["chat:*","news"],"publish":["chat:*"]}),
    );
    let (mut ws, _) = connect_query(server.local_addr(), &format!("?token={limited}")).await;
    assert_eq!(
        request(&mut ws, json!({"type":"subscribe","room":"chat:1","id":1})).await["type"],
        "ok"
    );
    assert_eq!(
        request(&mut ws, json!({"type":"subscribe","room":"news","id":2})).await["type"],
        "ok"
    );
    let error = request(&mut ws, json!({"type":"subscribe","room":"admin","id":3})).await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_i64()),
        (Some("forbidden"), Some(3))
    );
    let error = request(&mut ws, json!({"type":"presence","room":"admin","id":4})).await;
    assert_eq!(error["code"], "forbidden");
    let error = request(&mut ws, json!({"type":"history","room":"admin","id":5})).await;
    assert_eq!(error["code"], "forbidden");
    let error = request(
        &mut ws,
        json!({"type":"publish","room":"news","data":1,"id":6}),
    )
    .await;
    assert_eq!(
        error["code"], "forbidden",
        "may read news but not publish there"
    );
    send(
        &mut ws,
        json!({"type":"publish","room":"chat:1","data":1,"id":7}),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "message");
    assert_eq!(next(&mut ws).await["type"], "ok");
    stop(server).await;
}
