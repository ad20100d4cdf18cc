//! What a token does not grant: a token for some rooms cannot broadcast to everyone or
//! message anyone, and connection ids cannot be enumerated to find whom to message.

mod support;

use std::collections::HashSet;

use serde_json::json;
use support::*;
use wshub::ConnectionId;
use wshub_server::state::ServerOptions;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";

async fn connect_as(addr: std::net::SocketAddr, claims: serde_json::Value) -> (Client, String) {
    connect_query(addr, &format!("?token={}", token(SECRET, claims))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_and_send_need_the_tokens_claims() {
    let server = start(ServerOptions {
        jwt_secret: Some(SECRET.into()),
        ..ServerOptions::default()
    })
    .await;
    let addr = server.local_addr();
    let (mut alice, alice_id) = connect_as(addr, json!({"sub":"alice","rooms":["a"]})).await;
    let (mut carol, carol_id) = connect_as(addr, json!({"sub":"carol"})).await;
    let (mut herald, _) = connect_as(addr, json!({"sub":"herald","broadcast":true})).await;
    let (mut bob, _) = connect_as(addr, json!({"sub":"bob","send":["car*"]})).await;

    // A token for room `a` alone: no broadcast.
    let reply = request(&mut alice, json!({"type":"broadcast","id":1,"data":"all"})).await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{reply}"
    );
    // A token granting it: everyone gets it.
    send(&mut herald, json!({"type":"broadcast","id":1,"data":"all"})).await;
    let (first, second) = (next(&mut herald).await, next(&mut herald).await);
    assert!(
        [&first, &second].iter().any(|f| f["type"] == "ok"),
        "{first} {second}"
    );
    assert_eq!(next(&mut alice).await["data"], "all");
    assert_eq!(next(&mut carol).await["data"], "all");
    assert_eq!(next(&mut bob).await["data"], "all");

    // `send` limited to users matching `car*`: carol yes, alice no.
    let reply = request(
        &mut bob,
        json!({"type":"send","id":2,"to":alice_id,"data":"psst"}),
    )
    .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    let reply = request(
        &mut bob,
        json!({"type":"send","id":3,"to":carol_id,"data":"hi"}),
    )
    .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    let direct = next(&mut carol).await;
    assert_eq!(
        (direct["type"].as_str(), &direct["data"]),
        (Some("direct"), &json!("hi"))
    );
    // Without a `send` claim, any connection.
    let reply = request(
        &mut alice,
        json!({"type":"send","id":4,"to":carol_id,"data":"yo"}),
    )
    .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    assert_eq!(next(&mut carol).await["data"], "yo");
    nothing_pending(&mut alice).await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_ids_cannot_be_enumerated() {
    let server = start(ServerOptions::default()).await;
    let addr = server.local_addr();
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..50 {
        let (ws, id) = connect(addr).await;
        ids.push(id.parse::<ConnectionId>().expect("a connection id"));
        clients.push(ws);
    }
    // One node prefix (what a cluster routes by), 50 distinct ids…
    assert_eq!(
        ids.iter()
            .map(ConnectionId::node)
            .collect::<HashSet<_>>()
            .len(),
        1
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 50);
    // …none of which is its predecessor plus a small step.
    let guessable = ids
        .windows(2)
        .filter(|w| w[1].sequence().abs_diff(w[0].sequence()) < 1 << 32)
        .count();
    assert_eq!(guessable, 0, "{ids:?}");
    // A guessed neighbour of a real id is nobody.
    let (mut prober, _) = connect(addr).await;
    let guess = format!("{:012x}-{:x}", ids[0].node(), ids[0].sequence() + 1);
    let reply = request(
        &mut prober,
        json!({"type":"send","id":1,"to":guess,"data":"?"}),
    )
    .await;
    assert_eq!(reply["code"], "not_found", "{reply}");
    stop(server).await;
}
