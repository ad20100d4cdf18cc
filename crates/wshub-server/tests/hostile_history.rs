//! Anonymous publishers against the server's memory: history spread over many rooms, and
//! one connection publishing large payloads as fast as it can. The history stays within
//! its byte budget, oldest messages first, a client whose history was cut learns it
//! (`recovered: false`), and a bystander keeps its service.

mod support;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wshub_backplane::history::HistoryConfig;
use wshub_server::state::ServerOptions;

/// The resident memory of this process (the server runs in it), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmRSS")
        * 1024
}

async fn bystander(addr: std::net::SocketAddr) -> Client {
    let (mut ws, _) = connect(addr).await;
    let reply = request(&mut ws, json!({"type":"subscribe","room":"calm","id":1})).await;
    assert_eq!(reply["type"], "ok", "{reply}");
    ws
}

async fn still_served(bystander: &mut Client, what: &str) {
    let started = Instant::now();
    let reply = request(
        bystander,
        json!({"type":"publish","room":"calm","id":"p","data":what}),
    )
    .await;
    let other = next(bystander).await;
    assert!(
        [&reply, &other].iter().any(|f| f["type"] == "ok")
            && [&reply, &other].iter().any(|f| f["data"] == what),
        "{what}: {reply} {other}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the bystander waited {:?} during {what}",
        started.elapsed()
    );
}

async fn stats(addr: std::net::SocketAddr) -> Value {
    let (status, body) = http(addr, "GET", "/stats", &[], None).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_over_many_rooms_stays_within_its_byte_budget() {
    const BUDGET: usize = 8 * 1024 * 1024;
    let server = start(ServerOptions {
        history: HistoryConfig {
            max_bytes: BUDGET,
            ..HistoryConfig::default()
        },
        rate_limit: None,
        max_publish_bytes_per_second: None,
        ..ServerOptions::default()
    })
    .await;
    let addr = server.local_addr();
    let mut calm = bystander(addr).await;

    // A client that read offset 1 of `victim` before the attack.
    let (mut victim, _) = connect(addr).await;
    let ok = request(
        &mut victim,
        json!({"type":"subscribe","room":"victim","id":1}),
    )
    .await;
    let epoch = ok["epoch"].clone();
    for i in 0..3 {
        send(
            &mut victim,
            json!({"type":"publish","room":"victim","data":i}),
        )
        .await;
        assert_eq!(next(&mut victim).await["data"], i);
    }
    drop(victim);

    // Four connections publish 60 KB messages to 200 rooms: 48 MB in all.
    let before = rss_bytes();
    let payload = "x".repeat(60_000);
    let mut attackers = Vec::new();
    for a in 0..4 {
        let (mut ws, _) = connect(addr).await;
        for i in 0..200 {
            let frame =
                json!({"type":"publish","room":format!("spam:{a}:{}", i % 50),"data":payload});
            within("feed", ws.feed(WsMessage::text(frame.to_string())))
                .await
                .expect("feed");
        }
        within("flush", ws.flush()).await.expect("flush");
        attackers.push(ws);
    }
    still_served(&mut calm, "48 MB of history published").await;
    // Every publish is done once a ping after them is answered.
    for ws in &mut attackers {
        nothing_pending(ws).await;
    }
    let grown = rss_bytes().saturating_sub(before);
    let stats = stats(addr).await;
    let kept = stats["history_bytes"].as_u64().expect("history_bytes");
    assert!(kept <= BUDGET as u64, "{kept} bytes of history kept");
    assert!(stats["history_evicted"].as_u64() > Some(600), "{stats}");
    // Without the budget the history alone would hold the 48 MB. With it: 8 MiB of
    // history, plus what is in flight (each attacker's inbox holds up to 64 messages of
    // 60 KB: ~15 MiB for four), plus the allocator's slack, which varies from run to run
    // (up to 33 MiB seen on the CI machine).
    assert!(
        grown < 40 * 1024 * 1024,
        "RSS grew by {} KiB for 48 MB published",
        grown / 1024
    );

    // The oldest messages went first: `victim`'s, so resuming it is not a recovery.
    let (mut resumed, _) = connect(addr).await;
    let ok = request(
        &mut resumed,
        json!({"type":"subscribe","room":"victim","id":2,"since":{"epoch":epoch,"offset":1}}),
    )
    .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["recovered"], false, "{ok}");
    nothing_pending(&mut resumed).await;
    still_served(&mut calm, "eviction").await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_publish_more_bytes_than_its_budget() {
    let server = start(ServerOptions {
        rate_limit: None,
        ..ServerOptions::default()
    })
    .await;
    let addr = server.local_addr();
    let mut calm = bystander(addr).await;
    let (mut attacker, _) = connect(addr).await;

    // 100 publishes of 60 KB at once: the default budget (256 KiB/s, bursts of 1 MiB)
    // lets the first 17 through.
    let payload = "x".repeat(60_000);
    for i in 0..100 {
        let frame = json!({"type":"publish","room":"big","id":i,"data":payload});
        within("feed", attacker.feed(WsMessage::text(frame.to_string())))
            .await
            .expect("feed");
    }
    within("flush", attacker.flush()).await.expect("flush");
    let (mut published, mut limited) = (0, 0);
    for _ in 0..100 {
        let reply = next(&mut attacker).await;
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("ok"), _) => published += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            _ => panic!("unexpected {reply}"),
        }
    }
    assert!((17..=20).contains(&published), "{published} published");
    assert_eq!(published + limited, 100);
    still_served(&mut calm, "a large-payload flood").await;
    // Small messages from the same connection still pass once the budget refills.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = request(
        &mut attacker,
        json!({"type":"publish","room":"big","id":"small","data":"hi"}),
    )
    .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_unused_rooms_creates_nothing_and_rooms_are_capped() {
    let server = start(ServerOptions {
        history: HistoryConfig {
            max_rooms: 1000,
            ..HistoryConfig::default()
        },
        rate_limit: None,
        ..ServerOptions::default()
    })
    .await;
    let addr = server.local_addr();
    let mut calm = bystander(addr).await;
    let (mut reader, _) = connect(addr).await;

    // 5000 `history` and 5000 `presence` reads of names nobody uses.
    for i in 0..5000 {
        for kind in ["history", "presence"] {
            let frame = json!({"type":kind,"room":format!("unused:{i}"),"id":i});
            within("feed", reader.feed(WsMessage::text(frame.to_string())))
                .await
                .expect("feed");
        }
    }
    within("flush", reader.flush()).await.expect("flush");
    for _ in 0..10_000 {
        let reply = next(&mut reader).await;
        assert_eq!(reply["type"], "ok", "{reply}");
        if reply["messages"].is_array() {
            assert_eq!(reply["messages"], json!([]), "{reply}");
        }
    }
    still_served(&mut calm, "10 000 reads of unused rooms").await;
    // Only the bystander's room has state.
    assert_eq!(stats(addr).await["history_rooms"], 1);

    // Publishing to 3000 rooms: never more than 1000 are kept, the least used go first.
    for i in 0..3000 {
        let frame = json!({"type":"publish","room":format!("made:{i}"),"data":i});
        within("feed", reader.feed(WsMessage::text(frame.to_string())))
            .await
            .expect("feed");
    }
    within("flush", reader.flush()).await.expect("flush");
    nothing_pending(&mut reader).await;
    let stats = stats(addr).await;
    assert!(stats["history_rooms"].as_u64() <= Some(1000), "{stats}");
    assert!(
        stats["history_rooms_evicted"].as_u64() >= Some(2000),
        "{stats}"
    );
    // The newest rooms are still there.
    let reply = request(
        &mut reader,
        json!({"type":"history","room":"made:2999","id":"h"}),
    )
    .await;
    assert_eq!(
        reply["messages"].as_array().map(Vec::len),
        Some(1),
        "{reply}"
    );
    still_served(&mut calm, "3000 rooms made").await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_replies_and_replays_are_bounded_in_bytes() {
    let server = start(ServerOptions {
        rate_limit: None,
        max_publish_bytes_per_second: None,
        ..ServerOptions::default()
    })
    .await;
    let addr = server.local_addr();
    let mut calm = bystander(addr).await;

    // 100 messages of 60 KB: 6 MB of history in one room.
    let (mut publisher, _) = connect(addr).await;
    let ok = request(
        &mut publisher,
        json!({"type":"subscribe","room":"big","id":0}),
    )
    .await;
    let epoch = ok["epoch"].as_str().expect("epoch").to_owned();
    let payload = "x".repeat(60_000);
    for i in 0..100 {
        let frame = json!({"type":"publish","room":"big","data":{"i":i,"pad":payload}});
        within("feed", publisher.feed(WsMessage::text(frame.to_string())))
            .await
            .expect("feed");
    }
    within("flush", publisher.flush()).await.expect("flush");
    for _ in 0..100 {
        assert_eq!(next(&mut publisher).await["type"], "message");
    }

    // Ten clients ask for it three times each and never read.
    let before = rss_bytes();
    let mut hoarders = Vec::new();
    for _ in 0..10 {
        let (mut ws, _) = connect(addr).await;
        for id in 0..3 {
            send(&mut ws, json!({"type":"history","room":"big","id":id})).await;
        }
        hoarders.push(ws);
    }
    still_served(&mut calm, "history hoarders").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = rss_bytes().saturating_sub(before);
    // 30 full replies would be 180 MB; each is at most 1 MiB now.
    assert!(grown < 64 * 1024 * 1024, "RSS grew by {} KiB", grown / 1024);
    drop(hoarders);

    // A reader pages through the whole history with `since`, a page at most 1 MiB.
    let (mut reader, _) = connect(addr).await;
    let mut offset = 0;
    let mut seen = 0;
    for page in 0..20 {
        let reply = request(
            &mut reader,
            json!({"type":"history","room":"big","id":page,"since":{"epoch":epoch,"offset":offset}}),
        )
        .await;
        let messages = reply["messages"].as_array().expect("messages").clone();
        assert!(
            reply.to_string().len() < 1024 * 1024 + 4096,
            "page {page} too large"
        );
        for message in &messages {
            assert_eq!(message["data"]["i"], seen, "in order, none missing");
            seen += 1;
            offset = message["offset"].as_u64().expect("offset");
        }
        if reply["more"] != true {
            break;
        }
    }
    assert_eq!(seen, 100);

    // Recovering from the start replays at most half the send queue (2 MiB) and says the
    // rest was not recovered; the client is not cut off.
    let (mut late, _) = connect(addr).await;
    let ok = request(
        &mut late,
        json!({"type":"subscribe","room":"big","id":1,"since":{"epoch":epoch,"offset":0}}),
    )
    .await;
    assert_eq!(
        (ok["type"].as_str(), &ok["recovered"]),
        (Some("ok"), &json!(false)),
        "{ok}"
    );
    let mut replayed = 0;
    loop {
        let frame = next(&mut late).await;
        if frame["type"] == "pong" {
            break;
        }
        if replayed == 0 {
            // The newest part: it runs to the last message.
            send(&mut late, json!({"type":"ping","id":"end"})).await;
        }
        assert_eq!(frame["type"], "message", "{frame}");
        replayed += 1;
    }
    assert!((20..=35).contains(&replayed), "{replayed} replayed");
    send(
        &mut publisher,
        json!({"type":"publish","room":"big","data":"live"}),
    )
    .await;
    assert_eq!(next(&mut late).await["data"], "live");
    still_served(&mut calm, "a bounded replay").await;
    stop(server).await;
}
