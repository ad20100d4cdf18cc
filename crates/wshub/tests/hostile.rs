//! Hostile clients, each against a real server over real sockets: bytes that are not HTTP,
//! a slow-loris handshake, a storm of connections over the limit, frames that break RFC 6455,
//! ping floods and a peer that never answers the close handshake. In every case the server
//! stays up and a well-behaved client beside the attacker keeps its service.
//!
//! (A reader that never reads is `slow_consumer.rs`.)

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use support::{raw::*, *};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};
use wshub::{CloseCode, Hub, HubConfig};

/// A hub that echoes every message to its sender.
fn echo_hub(config: HubConfig) -> Hub {
    Hub::builder()
        .config(config)
        .on_message(|conn, msg| {
            let _ = conn.send(msg);
        })
        .build()
}

/// Checks that a well-behaved client still gets its echo, promptly.
async fn still_served(client: &mut Client, what: &str) {
    let started = Instant::now();
    send_text(client, format!("still here after {what}")).await;
    assert_eq!(next_text(client).await, format!("still here after {what}"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the bystander waited {:?} during {what}",
        started.elapsed()
    );
}

/// The resident set size of this process (the server runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Reads until the server closes the TCP connection (or resets it); how long that took.
async fn until_eof(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0_u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open past {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_http_get_400_or_a_close_and_disturb_no_one() {
    let hub = echo_hub(HubConfig::default().handshake_timeout(Duration::from_millis(500)));
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut bystander = connect(addr).await;

    let mut garbage: Vec<(&str, Vec<u8>)> = vec![
        (
            "binary noise",
            (0..4096_u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        // A TLS ClientHello's first bytes, as from a client that expected wss://.
        (
            "a TLS hello",
            vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03,
            ],
        ),
        ("an SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        (
            "a bad method line",
            b"\x00\x01GET /ws HTTP/1.1\r\n\r\n".to_vec(),
        ),
        (
            "an unknown HTTP version",
            b"GET /ws HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "a header without a colon",
            b"GET /ws HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
        ),
        ("blank lines only", b"\r\n\r\n\r\n\r\n".to_vec()),
        ("a 1 MiB header line", {
            let mut v = b"GET /ws HTTP/1.1\r\nX-Long: ".to_vec();
            v.extend(std::iter::repeat_n(b'a', 1 << 20));
            v
        }),
        (
            "a WebSocket frame before any handshake",
            frame(0x81, b"hello"),
        ),
    ];
    // And a thousand headers.
    let mut many = b"GET /ws HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..1000 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    garbage.push(("a thousand headers", many));

    for (what, bytes) in garbage {
        let mut stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        // The server may close before everything is written; that is a fine answer.
        let _ = within("write", stream.write_all(&bytes)).await;
        let mut response = Vec::new();
        let mut buf = [0_u8; 4096];
        loop {
            match within(what, stream.read(&mut buf)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
            assert!(response.len() < 64 * 1024, "{what}: endless response");
        }
        let text = String::from_utf8_lossy(&response);
        assert!(
            response.is_empty() || text.starts_with("HTTP/1.1 4"),
            "{what}: answered {text:?}"
        );
        assert_eq!(hub.connection_count(), 1, "{what} got a connection");
        still_served(&mut bystander, what).await;
    }
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_sent_one_byte_at_a_time_is_closed_after_the_handshake_timeout() {
    let timeout = Duration::from_millis(400);
    let hub = echo_hub(HubConfig::default().handshake_timeout(timeout));
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut bystander = connect(addr).await;

    let mut slow = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let started = Instant::now();
    // One byte every 50 ms: the whole request would take about 8 s.
    let mut closed_after = None;
    for &byte in UPGRADE {
        if slow.write_all(&[byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0_u8; 256];
        match tokio::time::timeout(Duration::from_millis(50), slow.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0) | Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => {
                // An answer (408 or 400) is allowed before the close; a 101 is not.
                assert!(
                    !buf[..n].starts_with(b"HTTP/1.1 101"),
                    "upgraded a slow loris"
                );
            }
        }
        if started.elapsed() < timeout * 2 {
            still_served(&mut bystander, "a slow byte").await;
        }
    }
    let closed_after = closed_after.expect("the slow handshake was never closed");
    eprintln!("slow handshake closed after {closed_after:?}");
    assert!(
        closed_after >= timeout && closed_after < timeout * 4,
        "closed after {closed_after:?} with a handshake timeout of {timeout:?}"
    );
    assert_eq!(hub.connection_count(), 1);
    still_served(&mut bystander, "the slow loris").await;
    stop(server).await;
}

/// One upgrade attempt over a fresh TCP connection; returns the status line's code and how
/// long the answer took.
async fn attempt(addr: SocketAddr) -> (u16, Duration) {
    let started = Instant::now();
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    within("upgrade", stream.write_all(UPGRADE))
        .await
        .expect("write");
    let mut head = [0_u8; 12];
    within("status", stream.read_exact(&mut head))
        .await
        .expect("status line");
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, started.elapsed())
}

/// Runs `count` attempts, `parallel` at a time; returns the statuses seen and the slowest.
async fn storm(addr: SocketAddr, count: usize, parallel: usize) -> (Vec<u16>, Duration) {
    let mut statuses = Vec::with_capacity(count);
    let mut slowest = Duration::ZERO;
    let mut set = JoinSet::new();
    for _ in 0..count {
        if set.len() >= parallel {
            let (status, took) = within("attempt", set.join_next())
                .await
                .expect("a task")
                .expect("joined");
            statuses.push(status);
            slowest = slowest.max(took);
        }
        set.spawn(attempt(addr));
    }
    while let Some(done) = within("attempts", set.join_next()).await {
        let (status, took) = done.expect("joined");
        statuses.push(status);
        slowest = slowest.max(took);
    }
    (statuses, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_attempts_over_the_limit_get_503_fast_with_bounded_memory() {
    let hub = echo_hub(HubConfig::default().max_connections(2));
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut bystander = connect(addr).await;
    let _other = connect(addr).await;
    eventually("both admitted", || hub.connection_count() == 2).await;

    // Warm up: let the allocator and the runtime reach their working size first.
    let (statuses, _) = storm(addr, 500, 32).await;
    assert!(statuses.iter().all(|&s| s == 503), "{statuses:?}");
    let before = rss_kib();

    let started = Instant::now();
    let (statuses, slowest) = storm(addr, 4000, 32).await;
    let took = started.elapsed();
    let after = rss_kib();
    assert_eq!(statuses.len(), 4000);
    assert!(statuses.iter().all(|&s| s == 503), "not all 503");
    assert!(
        slowest < Duration::from_secs(1),
        "the slowest 503 took {slowest:?}"
    );
    assert_eq!(hub.connection_count(), 2);
    assert_eq!(hub.stats().rejected_unavailable, 4500);
    // Each attempt left nothing behind: 4000 more attempts cost less than 8 MiB (that is
    // under 2 KiB each, far below what 4000 held connections would take).
    let grown = after.saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "RSS grew by {grown} KiB ({before} -> {after})"
    );
    eprintln!(
        "4000 rejected attempts in {took:?} (slowest {slowest:?}); RSS {before} -> {after} KiB"
    );
    still_served(&mut bystander, "the connection storm").await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_break_the_protocol_get_their_close_codes() {
    let hub = echo_hub(
        HubConfig::default()
            .max_message_bytes(1024)
            .write_wait(Duration::from_millis(500)),
    );
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut bystander = connect(addr).await;

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("RSV1 without an extension", frame(0xC1, b"x"), 1002),
        ("RSV2", frame(0xA1, b"x"), 1002),
        ("RSV3 on a ping", frame(0x99, b""), 1002),
        ("reserved data opcode 0x3", frame(0x83, b"x"), 1002),
        ("reserved control opcode 0xB", frame(0x8B, b""), 1002),
        ("a ping of 126 bytes", frame(0x89, &[0; 126]), 1002),
        ("a close of 200 bytes", frame(0x88, &[0x03; 200]), 1002),
        ("a fragmented ping", frame(0x09, b"x"), 1002),
        ("an unmasked frame", vec![0x81, 0x01, b'x'], 1002),
        (
            "a continuation with nothing to continue",
            frame(0x80, b"x"),
            1002,
        ),
        (
            "fragments over the size limit",
            [frame(0x01, &[b'a'; 600]), frame(0x00, &[b'b'; 600])].concat(),
            1009,
        ),
        (
            "many small fragments over the size limit",
            frame(0x02, &[0; 8])
                .into_iter()
                .chain((0..200).flat_map(|_| frame(0x00, &[0; 8])))
                .collect(),
            1009,
        ),
        (
            "one frame announcing 2^62 bytes",
            {
                let mut v = vec![0x82, 0x80 | 127];
                v.extend_from_slice(&(1_u64 << 62).to_be_bytes());
                v.extend_from_slice(&[0; 4]);
                v
            },
            1009,
        ),
        (
            // "€" is E2 82 AC; here E2 82 is followed by "(" in the next fragment.
            "invalid UTF-8 split across fragments",
            [frame(0x01, &[b'a', 0xE2, 0x82]), frame(0x80, b"(")].concat(),
            1007,
        ),
        (
            "a truncated sequence at the end of the last fragment",
            [frame(0x01, b"ok"), frame(0x80, &[0xF0, 0x9F])].concat(),
            1007,
        ),
        (
            "a close reason that is not UTF-8",
            frame(0x88, &[0x03, 0xE8, 0xFF]),
            1007,
        ),
    ];
    for (what, bytes, expected) in cases {
        let mut attacker = raw_websocket(addr).await;
        within("write", attacker.write_all(&bytes))
            .await
            .expect("write");
        assert_eq!(read_close_code(&mut attacker).await, expected, "{what}");
        // The server waits for our close reply no longer than the write wait.
        until_eof(&mut attacker, Duration::from_secs(3)).await;
        still_served(&mut bystander, what).await;
    }

    // A valid character split across fragments is fine.
    let mut fine = raw_websocket(addr).await;
    let split = [frame(0x01, &[b'a', 0xE2, 0x82]), frame(0x80, &[0xAC])].concat();
    within("write", fine.write_all(&split))
        .await
        .expect("write");
    assert_eq!(
        read_frame(&mut fine).await,
        (0x81, "a€".as_bytes().to_vec())
    );
    eventually("only the two left", || hub.connection_count() == 2).await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_answered_in_order_and_the_connection_stays_usable() {
    let hub = echo_hub(HubConfig::default());
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut bystander = connect(addr).await;
    let flooder = raw_websocket(addr).await;
    let (mut reader, mut writer) = flooder.into_split();

    const PINGS: u32 = 20_000;
    let before = rss_kib();
    let writing = tokio::spawn(async move {
        let mut batch = Vec::new();
        for i in 0..PINGS {
            batch.extend(frame(0x89, &i.to_be_bytes()));
            if batch.len() > 16 * 1024 {
                within("flood", writer.write_all(&batch))
                    .await
                    .expect("write");
                batch.clear();
            }
        }
        batch.extend(frame(0x81, b"after the flood"));
        within("flood", writer.write_all(&batch))
            .await
            .expect("write");
        writer
    });
    // Pongs come back in order (the latest ping is always answered), and the text behind
    // the pings gets its echo.
    let started = Instant::now();
    let mut pongs = 0_u32;
    let mut last_pong = None;
    loop {
        let mut head = [0_u8; 2];
        within("pong", reader.read_exact(&mut head))
            .await
            .expect("read");
        let mut payload = vec![0_u8; usize::from(head[1] & 0x7F)];
        within("pong", reader.read_exact(&mut payload))
            .await
            .expect("read");
        match head[0] {
            0x8A => {
                // RFC 6455 §5.5.3: a pong may answer only the latest of several pings, so
                // some may be skipped, but never reordered.
                let n = u32::from_be_bytes(payload.try_into().expect("4-byte payload"));
                assert!(last_pong.is_none_or(|last| n > last), "pong out of order");
                last_pong = Some(n);
                pongs += 1;
            }
            0x81 => {
                assert_eq!(payload, b"after the flood");
                break;
            }
            other => panic!("unexpected frame {other:#x}"),
        }
        if pongs.is_multiple_of(5000) {
            still_served(&mut bystander, "pings").await;
        }
    }
    assert_eq!(last_pong, Some(PINGS - 1), "the latest ping is answered");
    assert!(pongs <= PINGS);
    let mut writer = within("writer", writing).await.expect("joined");
    let after = rss_kib();
    eprintln!(
        "{PINGS} pings answered in {:?}; RSS {before} -> {after} KiB",
        started.elapsed()
    );
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "{before} -> {after} KiB"
    );
    // Still a working connection.
    within("write", writer.write_all(&frame(0x81, b"again")))
        .await
        .expect("write");
    let mut head = [0_u8; 7];
    within("echo", reader.read_exact(&mut head))
        .await
        .expect("read");
    assert_eq!(&head, b"\x81\x05again");
    still_served(&mut bystander, "the ping flood").await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_the_close_handshake_is_dropped_after_the_write_wait() {
    let write_wait = Duration::from_millis(400);
    let hub = echo_hub(HubConfig::default().write_wait(write_wait));
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut bystander = connect(addr).await;
    eventually("registered", || hub.connection_count() == 1).await;
    let bystander_id = hub.connections()[0].id();

    // The server closes; the client reads the close frame and stays silent.
    let mut silent = raw_websocket(addr).await;
    eventually("registered", || hub.connection_count() == 2).await;
    // Connection ids are not ordered: the silent one is the other.
    let id = hub
        .connections()
        .into_iter()
        .map(|c| c.id())
        .find(|id| *id != bystander_id)
        .expect("a connection");
    hub.connection(id)
        .expect("the silent one")
        .close(CloseCode::NORMAL, "bye");
    assert_eq!(read_close_code(&mut silent).await, 1000);
    let took = until_eof(&mut silent, Duration::from_secs(5)).await;
    assert!(took < write_wait * 4, "dropped after {took:?}");
    eventually("dropped", || hub.connection_count() == 1).await;
    still_served(&mut bystander, "a silent close").await;

    // The same after a protocol error: the 1002 close is not answered either.
    let mut rude = raw_websocket(addr).await;
    within("write", rude.write_all(&frame(0x83, b"")))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut rude).await, 1002);
    let took = until_eof(&mut rude, Duration::from_secs(5)).await;
    assert!(took < write_wait * 4, "dropped after {took:?}");
    eventually("dropped", || hub.connection_count() == 1).await;
    still_served(&mut bystander, "an unanswered 1002").await;
    stop(server).await;
}

/// Every ping is answered, but at most one pong waits to be written (RFC 6455 §5.5.3 allows
/// answering only the most recent ping): before that, a peer that does not read made the
/// write queue grow without bound until the write wait ended the connection (in a release
/// build about 120 MB/s from one client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_from_a_client_that_never_reads_keeps_memory_bounded() {
    let hub = echo_hub(HubConfig::default());
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut bystander = connect(addr).await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("rcvbuf");
    let mut flooder = within("connect", socket.connect(addr))
        .await
        .expect("connect");
    within("upgrade", flooder.write_all(UPGRADE))
        .await
        .expect("write");
    let mut head = [0_u8; 129];
    within("101", flooder.read_exact(&mut head))
        .await
        .expect("101");
    assert!(head.starts_with(b"HTTP/1.1 101"));

    let before = rss_kib();
    // Pings with empty payloads, written for four seconds; the pongs are never read. A
    // server that bounds what it queues stops reading (our writes stall) or closes.
    let batch: Vec<u8> = (0..10_000).flat_map(|_| frame(0x89, b"")).collect();
    let started = Instant::now();
    let mut written = 0_usize;
    while started.elapsed() < Duration::from_secs(4) {
        // `write` (not `write_all`) so that a timeout never cuts a frame in two.
        let rest = &batch[written % batch.len()..];
        match tokio::time::timeout(Duration::from_millis(500), flooder.write(rest)).await {
            Ok(Ok(n)) if n > 0 => written += n,
            Ok(_) => break,
            Err(_) => {}
        }
    }
    let sent = written / 6;
    let after = rss_kib();
    eprintln!(
        "{sent} unread pings in {:?}; RSS {before} -> {after} KiB",
        started.elapsed()
    );
    still_served(&mut bystander, "an unread ping flood").await;
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "RSS grew by {} KiB after {sent} unread pings",
        after.saturating_sub(before)
    );
    stop(server).await;
}

/// Found by the `websocket_frames` fuzz target: when the last fragment of a text message
/// is empty, the UTF-8 sequence the fragment before left incomplete is never checked, so
/// the handler gets invalid UTF-8 as text (and the echo hub relays it to the client, whose
/// own conforming WebSocket stack would close with 1007; in a chat room, everyone's would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_before_an_empty_final_fragment_closes_with_1007() {
    let hub = echo_hub(HubConfig::default().write_wait(Duration::from_millis(500)));
    let server = start_server(hub.clone()).await;
    let addr = server.local_addr();
    let mut bystander = connect(addr).await;
    let mut attacker = raw_websocket(addr).await;
    let bytes = [frame(0x01, &[b'a', 0xE2, 0x82]), frame(0x80, b"")].concat();
    within("write", attacker.write_all(&bytes))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut attacker).await, 1007);
    still_served(&mut bystander, "an empty final fragment").await;
    stop(server).await;
}
