//! permessage-deflate (RFC 7692) over real sockets: negotiation, compressed messages in
//! both directions (with and without context takeover, fragmented), one compression per
//! broadcast shared by every compressing recipient beside uncompressed ones, and the
//! failures: RSV1 without the extension, a decompression bomb, data that does not inflate.
//! The compressing client is written by hand (`support::raw`) with flate2, so every bit
//! on the wire is the test's own.

mod support;

use std::{net::SocketAddr, time::Duration};

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress};
use support::{raw::*, *};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use wshub::{Compression, Hub, HubConfig, Message};

/// An upgrade request offering `extensions`.
fn upgrade_offering(extensions: &str) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Extensions: {extensions}\r\n\r\n"
    )
    .into_bytes()
}

/// The response's `Sec-WebSocket-Extensions`, if any.
fn extensions_of(head: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_owned())
    })
}

/// A hub that echoes every message to its sender, with compression as given.
fn echo_hub(compression: Option<Compression>) -> Hub {
    let mut config = HubConfig::default();
    config.compression = compression;
    Hub::builder()
        .config(config)
        .on_message(|conn, msg| {
            let _ = conn.send(msg);
        })
        .build()
}

/// Compresses like a browser: context kept across messages, sync flush, tail removed.
fn deflate(compressor: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let start = compressor.total_in();
    loop {
        let done = (compressor.total_in() - start) as usize;
        compressor
            .compress_vec(&data[done..], &mut out, FlushCompress::Sync)
            .expect("compress");
        if (compressor.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Inflates one server message (the server never keeps context: a fresh decompressor).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut decompressor = Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    decompressor
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("inflates");
    assert_eq!(
        decompressor.total_in() as usize,
        input.len(),
        "all consumed"
    );
    out
}

/// A JSON-ish text of `n` bytes that compresses well, as chat messages do.
fn chatty(n: usize, tag: usize) -> String {
    let mut text = String::new();
    while text.len() < n {
        text.push_str(&format!(
            "{{\"room\":\"lobby\",\"seq\":{tag},\"text\":\"hello there\"}},"
        ));
    }
    text.truncate(n);
    text
}

async fn compressing_client(addr: SocketAddr, offer: &str) -> (TcpStream, String) {
    let (stream, head) = raw_websocket_with(addr, &upgrade_offering(offer)).await;
    let agreed = extensions_of(&head).expect("the server accepted permessage-deflate");
    (stream, agreed)
}

#[tokio::test]
async fn negotiates_and_echoes_compressed_messages_with_context_takeover() {
    let server = start_server(echo_hub(Some(Compression::default()))).await;
    let addr = server.local_addr();
    let (mut stream, agreed) =
        compressing_client(addr, "permessage-deflate; client_max_window_bits").await;
    assert_eq!(agreed, "permessage-deflate; server_no_context_takeover");

    // Three messages compressed with one context, as browsers do: the later ones are
    // mostly back-references into the earlier, which only a kept decompressor resolves.
    let mut compressor = Compress::new(flate2::Compression::default(), false);
    for i in 0..3 {
        let text = chatty(2000, 7);
        let compressed = deflate(&mut compressor, text.as_bytes());
        if i > 0 {
            assert!(
                compressed.len() < 40,
                "context takeover: {} bytes",
                compressed.len()
            );
        }
        within("send", stream.write_all(&frame(0xC1, &compressed)))
            .await
            .expect("write");
        let (first, payload) = read_frame(&mut stream).await;
        assert_eq!(first, 0xC1, "a compressed, final text frame");
        assert!(payload.len() < text.len() / 10, "{} bytes", payload.len());
        assert_eq!(inflate(&payload), text.as_bytes());
    }

    // Short messages go as they are; so does binary that does not compress.
    within("send", stream.write_all(&frame(0x81, b"short")))
        .await
        .expect("write");
    assert_eq!(read_frame(&mut stream).await, (0x81, b"short".to_vec()));
    let noise: Vec<u8> = (0..4096_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    within("send", stream.write_all(&frame(0x82, &noise)))
        .await
        .expect("write");
    let (first, payload) = read_frame(&mut stream).await;
    if first == 0xC2 {
        assert_eq!(inflate(&payload), noise);
    } else {
        assert_eq!((first, payload), (0x82, noise));
    }
    stop(server).await;
}

#[tokio::test]
async fn fragmented_compressed_message_without_context_takeover() {
    let config = Compression::default()
        .client_no_context_takeover(true)
        .client_max_window_bits(10);
    let server = start_server(echo_hub(Some(config))).await;
    let (mut stream, agreed) = compressing_client(
        server.local_addr(),
        "permessage-deflate; client_max_window_bits; server_max_window_bits=10",
    )
    .await;
    assert_eq!(
        agreed,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=10; client_max_window_bits=10"
    );
    for _ in 0..2 {
        let text = chatty(5000, 3);
        // A fresh 10-bit context per message, as agreed.
        let mut compressor =
            Compress::new_with_window_bits(flate2::Compression::default(), false, 10);
        let compressed = deflate(&mut compressor, text.as_bytes());
        // RSV1 on the first fragment only.
        let (a, rest) = compressed.split_at(compressed.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        let mut bytes = frame(0x41, a);
        bytes.extend(frame(0x00, b));
        bytes.extend(frame(0x80, c));
        within("send", stream.write_all(&bytes))
            .await
            .expect("write");
        let (first, payload) = read_frame(&mut stream).await;
        assert_eq!(first, 0xC1);
        assert_eq!(inflate(&payload), text.as_bytes());
    }
    stop(server).await;
}

#[tokio::test]
async fn a_broadcast_reaches_compressing_and_plain_clients() {
    let hub = Hub::builder()
        .config(HubConfig::default().compression(Compression::default()))
        .build();
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut compressing = Vec::new();
    for _ in 0..3 {
        compressing.push(compressing_client(addr, "permessage-deflate").await.0);
    }
    // tokio-tungstenite offers no extension: it gets plain frames.
    let mut plain = connect(addr).await;
    eventually("4 connections", || hub.connection_count() == 4).await;
    assert_eq!(
        hub.connections()
            .iter()
            .filter(|c| c.info().compressed())
            .count(),
        3
    );

    let text = chatty(3000, 42);
    assert_eq!(hub.broadcast(Message::text(text.clone())), 4);
    hub.broadcast(Message::text("tiny"));
    for stream in &mut compressing {
        let (first, payload) = read_frame(stream).await;
        assert_eq!(first, 0xC1);
        assert_eq!(inflate(&payload), text.as_bytes());
        assert_eq!(read_frame(stream).await, (0x81, b"tiny".to_vec()));
    }
    assert_eq!(next_text(&mut plain).await, text);
    assert_eq!(next_text(&mut plain).await, "tiny");
    // A message sent to one connection is compressed by that connection's task.
    let target = hub
        .connections()
        .into_iter()
        .find(|c| c.info().compressed())
        .expect("a compressing connection");
    target.send(Message::text(text.clone())).expect("send");
    let mut got = 0;
    for stream in &mut compressing {
        let ready = tokio::time::timeout(Duration::from_millis(300), read_frame(stream)).await;
        if let Ok((first, payload)) = ready {
            assert_eq!(first, 0xC1);
            assert_eq!(inflate(&payload), text.as_bytes());
            got += 1;
        }
    }
    assert_eq!(got, 1);
    stop(server).await;
}

#[tokio::test]
async fn compression_off_declines_the_offer_and_rsv1_is_a_protocol_error() {
    let server = start_server(echo_hub(None)).await;
    let (mut stream, head) =
        raw_websocket_with(server.local_addr(), &upgrade_offering("permessage-deflate")).await;
    assert_eq!(extensions_of(&head), None);
    let mut compressor = Compress::new(flate2::Compression::default(), false);
    let compressed = deflate(&mut compressor, chatty(500, 1).as_bytes());
    within("send", stream.write_all(&frame(0xC1, &compressed)))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut stream).await, 1002);
    stop(server).await;
}

#[tokio::test]
async fn bombs_and_garbage_close_the_connection_and_bystanders_keep_service() {
    let mut config = HubConfig::default()
        .compression(Compression::default())
        .max_message_bytes(64 * 1024);
    config.compression = config.compression.map(|c| c.min_message_bytes(16));
    let hub = Hub::builder()
        .config(config)
        .on_message(|conn, msg| {
            let _ = conn.send(msg);
        })
        .build();
    let server = start_server(hub).await;
    let addr = server.local_addr();
    let mut bystander = connect(addr).await;

    // 8 MiB of zeros compress to about 8 KiB; the limit is 64 KiB of output.
    let (mut stream, _) = compressing_client(addr, "permessage-deflate").await;
    let mut compressor = Compress::new(flate2::Compression::best(), false);
    let bomb = deflate(&mut compressor, &vec![0_u8; 8 << 20]);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    within("send", stream.write_all(&frame(0xC2, &bomb)))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut stream).await, 1009);

    let (mut stream, _) = compressing_client(addr, "permessage-deflate").await;
    within("send", stream.write_all(&frame(0xC1, &[0xff; 40])))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut stream).await, 1007);

    // Valid DEFLATE, invalid UTF-8 inside a text message.
    let (mut stream, _) = compressing_client(addr, "permessage-deflate").await;
    let mut compressor = Compress::new(flate2::Compression::default(), false);
    let bad_text = deflate(&mut compressor, &[b'a', 0xC3, 0x28, b'b']);
    within("send", stream.write_all(&frame(0xC1, &bad_text)))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut stream).await, 1007);

    // RSV1 on a continuation frame.
    let (mut stream, _) = compressing_client(addr, "permessage-deflate").await;
    let mut bytes = frame(0x01, b"part");
    bytes.extend(frame(0xC0, b"more"));
    within("send", stream.write_all(&bytes))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut stream).await, 1002);

    send_text(&mut bystander, "still here").await;
    assert_eq!(next_text(&mut bystander).await, "still here");
    stop(server).await;
}
