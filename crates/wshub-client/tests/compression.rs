//! permessage-deflate between this client and the real server: negotiated when both want
//! it, large messages compressed by either side arrive intact (the server compresses once
//! per broadcast and keeps no context; the client keeps its context unless told not to),
//! small ones go uncompressed, and either side turning it off leaves the connection plain.
//! A hand-written server checks the client's compressed frames byte by byte.

mod support;

use serde_json::json;
use support::*;
use wshub::Compression;
use wshub_client::{SubscriptionEvent, WshubClient};
use wshub_server::app::serve;

async fn start_compressing(compression: Option<Compression>) -> wshub_server::app::RunningServer {
    let mut options = options();
    options.hub.compression = compression;
    serve(options, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve")
}

async fn next_data(sub: &mut wshub_client::Subscription) -> serde_json::Value {
    loop {
        match next_in(sub).await {
            SubscriptionEvent::Message(m) => return m.data.parse().expect("JSON"),
            SubscriptionEvent::Join(_) | SubscriptionEvent::Leave(_) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn compressed_broadcasts_arrive_intact() {
    let server = start_compressing(Some(Compression::default())).await;
    let url = ws_url(server.local_addr());
    let (alice, _a) = WshubClient::builder(&url).build().unwrap();
    let (bob, _b) = WshubClient::builder(&url).build().unwrap();
    within("alice", alice.ready()).await.unwrap();
    within("bob", bob.ready()).await.unwrap();
    assert_eq!(
        server
            .hub()
            .connections()
            .iter()
            .filter(|c| c.info().compressed())
            .count(),
        2,
        "both negotiated permessage-deflate"
    );
    let mut alice_room = within("subscribe", alice.subscribe("big")).await.unwrap();
    let mut bob_room = within("subscribe", bob.subscribe("big")).await.unwrap();
    let bytes_before = server.hub().stats().bytes_out;

    // Many messages, large and small, from both; a compressing server that kept context
    // across messages would break the order-independent checks below.
    let mut sent = Vec::new();
    for i in 0..20 {
        let text = if i % 3 == 0 {
            "x".to_owned()
        } else {
            format!("message {i}: ").repeat(200 + i * 50)
        };
        let data = json!({"i": i, "text": text});
        let from = if i % 2 == 0 { &alice } else { &bob };
        within("publish", from.publish("big", &data)).await.unwrap();
        sent.push(data);
    }
    for want in &sent {
        assert_eq!(&next_data(&mut alice_room).await, want);
        assert_eq!(&next_data(&mut bob_room).await, want);
    }
    // The counters count payload bytes before compression; nothing is lost or doubled.
    assert!(server.hub().stats().bytes_out > bytes_before);
    stop(server).await;
}

#[tokio::test]
async fn either_side_can_leave_it_off() {
    // The server does not compress: the client's offer is declined.
    let server = start_compressing(None).await;
    let url = ws_url(server.local_addr());
    let (client, _events) = WshubClient::builder(&url).build().unwrap();
    within("ready", client.ready()).await.unwrap();
    assert!(!server.hub().connections()[0].info().compressed());
    stop(server).await;

    // The client does not offer it.
    let server = start_compressing(Some(Compression::default())).await;
    let url = ws_url(server.local_addr());
    let (client, _events) = WshubClient::builder(&url)
        .connection(|c| c.compression(false))
        .build()
        .unwrap();
    within("ready", client.ready()).await.unwrap();
    assert!(!server.hub().connections()[0].info().compressed());
    let mut room = within("subscribe", client.subscribe("plain"))
        .await
        .unwrap();
    let data = json!({"text": "plain ".repeat(1000)});
    within("publish", client.publish("plain", &data))
        .await
        .unwrap();
    assert_eq!(next_data(&mut room).await, data);
    stop(server).await;
}

/// Accepts one WebSocket connection by hand, agreeing to permessage-deflate with
/// `extensions`; returns the socket past the handshake.
async fn accept_by_hand(
    listener: &tokio::net::TcpListener,
    extensions: &str,
) -> tokio::net::TcpStream {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut socket, _) = within("accept", listener.accept()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        within("request", socket.read_exact(&mut byte))
            .await
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let header = |name: &str| {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    assert_eq!(
        header("sec-websocket-extensions").as_deref(),
        Some("permessage-deflate; client_max_window_bits"),
        "the client's offer"
    );
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(header("sec-websocket-key").unwrap().as_bytes());
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"
    );
    socket.write_all(response.as_bytes()).await.unwrap();
    socket
}

/// The next data frame from the client: whether RSV1 was set, its opcode, its unmasked
/// payload (control frames, e.g. heartbeat pings, are skipped).
async fn next_data_frame(socket: &mut tokio::net::TcpStream) -> (bool, u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    loop {
        let mut head = [0_u8; 2];
        within("frame", socket.read_exact(&mut head)).await.unwrap();
        assert!(head[1] & 0x80 != 0, "client frames are masked");
        let len = match head[1] & 0x7F {
            126 => usize::from(socket.read_u16().await.unwrap()),
            127 => usize::try_from(socket.read_u64().await.unwrap()).unwrap(),
            n => usize::from(n),
        };
        let mut mask = [0_u8; 4];
        socket.read_exact(&mut mask).await.unwrap();
        let mut payload = vec![0_u8; len];
        socket.read_exact(&mut payload).await.unwrap();
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        let opcode = head[0] & 0x0F;
        if opcode & 0x8 == 0 {
            assert!(head[0] & 0x80 != 0, "whole messages");
            return (head[0] & 0x40 != 0, opcode, payload);
        }
    }
}

fn inflate(decompressor: &mut flate2::Decompress, compressed: &[u8]) -> Vec<u8> {
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    decompressor
        .decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
        .expect("the client's message inflates");
    out
}

#[tokio::test]
async fn the_client_compresses_what_it_sends() {
    use wshub_client::Client;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    for (extensions, takeover) in [
        ("permessage-deflate", true),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
            false,
        ),
    ] {
        let (client, _events) = Client::builder(&url).reconnect(false).build().unwrap();
        client.connect();
        let mut socket = accept_by_hand(&listener, extensions).await;
        within("connected", client.connected()).await.unwrap();

        let big = serde_json::to_string(&json!({"rows": vec!["wshub row"; 300]})).unwrap();
        client.send_text(big.clone()).unwrap();
        client.send_text("small").unwrap();
        client.send_text(big.clone()).unwrap();
        client.send_binary(vec![7_u8; 5000]).unwrap();

        let mut decompressor = flate2::Decompress::new(false);
        let (rsv1, opcode, first) = next_data_frame(&mut socket).await;
        assert!(
            rsv1 && opcode == 0x1,
            "{extensions}: the big text is compressed"
        );
        assert!(
            first.len() * 10 < big.len(),
            "{} of {} bytes",
            first.len(),
            big.len()
        );
        assert_eq!(inflate(&mut decompressor, &first), big.as_bytes());
        assert_eq!(
            next_data_frame(&mut socket).await,
            (false, 0x1, b"small".to_vec()),
            "{extensions}: small messages go as they are"
        );
        let (rsv1, _, again) = next_data_frame(&mut socket).await;
        assert!(rsv1);
        if takeover {
            assert!(again.len() < first.len(), "refers back to the first copy");
        } else {
            decompressor = flate2::Decompress::new(false);
            assert_eq!(again, first, "no context: compressed the same way again");
        }
        assert_eq!(inflate(&mut decompressor, &again), big.as_bytes());
        let (rsv1, opcode, binary) = next_data_frame(&mut socket).await;
        assert!(rsv1 && opcode == 0x2);
        if !takeover {
            decompressor = flate2::Decompress::new(false);
        }
        assert_eq!(inflate(&mut decompressor, &binary), vec![7_u8; 5000]);
        drop(client);
    }
}
