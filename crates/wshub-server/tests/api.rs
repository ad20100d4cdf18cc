//! The HTTP API for backends and the unauthenticated endpoints.

mod support;

use serde_json::json;
use support::*;
use wshub_server::state::ServerOptions;

fn with_key() -> ServerOptions {
    ServerOptions {
        api_key: Some("secret-key".into()),
        ..ServerOptions::default()
    }
}

#[tokio::test]
async fn the_api_key_is_required() {
    let server = start(with_key()).await;
    let addr = server.local_addr();
    let body = r#"{"room":"r","data":1}"#;
    let (status, text) = http(addr, "POST", "/api/publish", &[], Some(body)).await;
    assert_eq!(status, 401, "{text}");
    let error: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(error["error"], "unauthorized");
    let (status, _) = api(
        addr,
        "wrong-key",
        "/api/publish",
        json!({"room":"r","data":1}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = http(
        addr,
        "GET",
        "/api/rooms",
        &[("Authorization", "Basic c2VjcmV0LWtleQ==")],
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = api_get(addr, "secret-key", "/api/rooms").await;
    assert_eq!(status, 200);
    stop(server).await;

    // Without a configured key, the API is closed to everyone.
    let server = start(ServerOptions::default()).await;
    let (status, body) = api(server.local_addr(), "", "/api/broadcast", json!({"data":1})).await;
    assert_eq!(status, 401, "{body}");
    stop(server).await;
}

#[tokio::test]
async fn publish_broadcast_send_and_disconnect() {
    let server = start(with_key()).await;
    let addr = server.local_addr();
    let (mut ws, id) = connect(addr).await;
    request(&mut ws, json!({"type":"subscribe","room":"news","id":1})).await;

    let (status, body) = api(
        addr,
        "secret-key",
        "/api/publish",
        json!({"room":"news","data":{"h":"x"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["room"], "news");
    assert_eq!(body["offset"], 1);
    let message = next(&mut ws).await;
    assert_eq!(message["from"], json!(null));
    assert_eq!(message["data"], json!({"h":"x"}));
    assert_eq!(message["epoch"], body["epoch"]);

    let (status, body) = api(addr, "secret-key", "/api/broadcast", json!({"data":"all"})).await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(
        next(&mut ws).await,
        json!({"type":"broadcast","from":null,"data":"all"})
    );

    let (status, _) = api(addr, "secret-key", "/api/send", json!({"to":id,"data":7})).await;
    assert_eq!(status, 200);
    assert_eq!(
        next(&mut ws).await,
        json!({"type":"direct","from":null,"data":7})
    );
    let (status, body) = api(
        addr,
        "secret-key",
        "/api/send",
        json!({"to":"000000000000-99","data":7}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");

    // Bad bodies are 400 bad_request.
    for bad in [
        json!({"data":1}),
        json!({"room":"a b","data":1}),
        json!("x"),
    ] {
        let (status, body) = api(addr, "secret-key", "/api/publish", bad).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "bad_request");
    }
    let (status, _) = http(
        addr,
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer secret-key")],
        Some("{not json"),
    )
    .await;
    assert_eq!(status, 400);

    let (status, body) = api(
        addr,
        "secret-key",
        "/api/disconnect",
        json!({"client":"000000000000-99"}),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = api(addr, "secret-key", "/api/disconnect", json!({"client":id})).await;
    assert_eq!(status, 200);
    assert_eq!(
        close_frame(&mut ws).await,
        Some((1000, "disconnected by server".to_owned()))
    );
    stop(server).await;
}

#[tokio::test]
async fn rooms_presence_and_history() {
    let server = start(with_key()).await;
    let addr = server.local_addr();
    let (mut a, a_id) = connect(addr).await;
    let (mut b, _) = connect(addr).await;
    request(&mut a, json!({"type":"subscribe","room":"r1","id":1})).await;
    request(&mut b, json!({"type":"subscribe","room":"r1","id":1})).await;
    request(&mut b, json!({"type":"subscribe","room":"r2","id":2})).await;

    let (status, body) = api_get(addr, "secret-key", "/api/rooms").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"rooms":[{"room":"r1","clients":2},{"room":"r2","clients":1}]})
    );

    let (status, body) = api_get(addr, "secret-key", "/api/rooms/r1/presence").await;
    assert_eq!(status, 200);
    assert_eq!(body["room"], "r1");
    assert!(
        body["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .any(|c| c["client"] == a_id.as_str())
    );

    for i in 1..=5 {
        api(
            addr,
            "secret-key",
            "/api/publish",
            json!({"room":"r2","data":i}),
        )
        .await;
    }
    let (status, body) = api_get(addr, "secret-key", "/api/rooms/r2/history?limit=2").await;
    assert_eq!(status, 200);
    let data: Vec<_> = body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, [json!(4), json!(5)]);
    let epoch = body["epoch"].as_str().expect("epoch").to_owned();
    let (_, body) = api_get(
        addr,
        "secret-key",
        &format!("/api/rooms/r2/history?since_offset=1&epoch={epoch}&limit=2"),
    )
    .await;
    let offsets: Vec<_> = body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].clone())
        .collect();
    assert_eq!(offsets, [json!(2), json!(3)]);
    assert_eq!(body["recovered"], true);
    let (status, body) = api_get(addr, "secret-key", "/api/rooms/r2/history?limit=many").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let (status, _) = api_get(addr, "secret-key", "/api/rooms/a%20b/history").await;
    assert_eq!(status, 400);
    stop(server).await;
}

#[tokio::test]
async fn health_stats_metrics_demo_and_client() {
    let server = start(ServerOptions::default()).await;
    let addr = server.local_addr();
    let (mut ws, _) = connect(addr).await;
    request(&mut ws, json!({"type":"subscribe","room":"m","id":1})).await;
    request(
        &mut ws,
        json!({"type":"publish","room":"m","data":1,"id":2}),
    )
    .await;
    next(&mut ws).await;

    assert_eq!(
        http(addr, "GET", "/healthz", &[], None).await,
        (200, "ok".to_owned())
    );
    let (status, stats) = http(addr, "GET", "/stats", &[], None).await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("json");
    assert_eq!(stats["clients"], 1);
    assert_eq!(stats["rooms"], 1);
    assert_eq!(stats["messages_in"], 2);
    assert!(
        stats["messages_out"].as_u64().is_some_and(|n| n >= 3),
        "{stats}"
    );
    assert_eq!(stats["dropped"], 0);
    assert!(stats["uptime"].is_u64());

    let (status, metrics) = http(addr, "GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    for needle in [
        "wshub_connections 1\n",
        "wshub_commands_total{type=\"publish\"} 1\n",
        "wshub_commands_total{type=\"subscribe\"} 1\n",
        "wshub_frames_out_total{type=\"message\"} 1\n",
        "# TYPE wshub_publish_to_write_seconds histogram\n",
        "wshub_handshake_rejections_total{reason=\"limit\"} 0\n",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in\n{metrics}");
    }

    let (status, page) = http(addr, "GET", "/websocket", &[], None).await;
    assert_eq!(status, 200);
    assert!(page.contains("/client.js"), "the demo page uses the client");
    assert!(page.contains(r#"<meta name="wshub-path" content="/ws">"#));
    let (status, js) = http(addr, "GET", "/client.js", &[], None).await;
    assert_eq!(status, 200);
    assert!(js.contains("export"), "an ES module");
    // The client imports the plain WebSocket client from beside it.
    assert!(js.contains(r#"from "./websocket.js""#));
    let (status, plain) = http(addr, "GET", "/websocket.js", &[], None).await;
    assert_eq!(status, 200);
    assert!(plain.contains("export class WebSocketClient"));
    stop(server).await;
}

#[tokio::test]
async fn the_demo_page_follows_a_custom_path() {
    let mut options = ServerOptions::default();
    options.hub = options.hub.path("/live");
    let server = start(options).await;
    let (status, page) = http(server.local_addr(), "GET", "/websocket", &[], None).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(r#"<meta name="wshub-path" content="/live">"#),
        "{page}"
    );
    stop(server).await;
}

/// `POST /api/drain` behind the key: 202 with the window, again 202 changing nothing;
/// meanwhile `/healthz` answers 503 `draining`, upgrades get 503, and every client is
/// closed with 1012 at its own moment within the window.
#[tokio::test]
async fn drain_over_the_api_closes_the_clients_spread_over_the_window() {
    const CLIENTS: usize = 20;
    let server = start(ServerOptions {
        drain_window: std::time::Duration::from_secs(1),
        ..with_key()
    })
    .await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect(addr).await.0);
    }
    let (status, _) = api(addr, "wrong-key", "/api/drain", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(
        http(addr, "GET", "/healthz", &[], None).await,
        (200, "ok".to_owned())
    );

    let (status, body) = api(addr, "secret-key", "/api/drain", json!({})).await;
    assert_eq!(
        (status, &body),
        (202, &json!({"draining":true,"window_ms":1000}))
    );
    let (status, again) = api(addr, "secret-key", "/api/drain", json!({})).await;
    assert_eq!((status, again), (202, body));
    assert_eq!(
        http(addr, "GET", "/healthz", &[], None).await,
        (503, "draining".to_owned())
    );
    assert_eq!(try_connect(addr, "", &[]).await.err(), Some(503));

    let closes: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let close = close_frame(&mut ws).await;
                (close, std::time::Instant::now())
            })
        })
        .collect();
    let mut times = Vec::new();
    for close in closes {
        let (close, at) = close.await.expect("reader");
        assert_eq!(close, Some((1012, "service restart".to_owned())));
        times.push(at);
    }
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(
        spread >= std::time::Duration::from_millis(300),
        "20 closes within {spread:?} of a 1 s window"
    );
    within("drain ends", server.drain()).await;
    assert_eq!(server.hub().connection_count(), 0);
    stop(server).await;
}
