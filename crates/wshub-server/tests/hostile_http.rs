//! Hostile clients of the server's HTTP side: API requests without the key or with bodies
//! too large or too slow, and clients holding HTTP connections open. Each gets its
//! documented answer at once, and a bystander keeps its WebSocket service and `/healthz`.

mod support;

use std::{
    io::{BufRead, BufReader, Read},
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use wshub_server::state::ServerOptions;

const KEY: &str = "an-api-key-long-enough-to-be-real";

/// A bystander subscribed to `calm`: each call publishes there and times the round trip.
struct Bystander(Client);

impl Bystander {
    async fn join(addr: SocketAddr) -> Self {
        let (mut ws, _) = connect(addr).await;
        let reply = request(&mut ws, json!({"type":"subscribe","room":"calm","id":1})).await;
        assert_eq!(reply["type"], "ok", "{reply}");
        Bystander(ws)
    }

    async fn still_served(&mut self, what: &str) {
        let started = Instant::now();
        send(
            &mut self.0,
            json!({"type":"publish","room":"calm","id":"p","data":what}),
        )
        .await;
        let (mut replied, mut delivered) = (false, false);
        for _ in 0..2 {
            let frame = next(&mut self.0).await;
            replied |= frame["type"] == "ok";
            delivered |= frame["type"] == "message" && frame["data"] == what;
        }
        assert!(replied && delivered, "{what}: publish not served");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "the bystander waited {:?} during {what}",
            started.elapsed()
        );
    }
}

/// A TCP connection from the loopback address `source` (127.0.0.0/8 is all local).
async fn dial_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from(source), 0))
        .expect("bind source address");
    within("tcp connect", socket.connect(addr))
        .await
        .expect("connect")
}

/// What arrives within `wait`, up to the end of the headers or the end of the stream.
async fn response_head(stream: &mut TcpStream, wait: Duration) -> String {
    let mut read = Vec::new();
    let mut buf = [0_u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    while !read.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => read.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&read).into_owned()
}

/// Whether the server closed the stream within `wait` (a read returns end of stream or a
/// reset, after whatever it still had to say).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0_u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// The value of an unlabelled or labelled sample in `/metrics`.
async fn metric(addr: SocketAddr, sample: &str) -> u64 {
    let (status, body) = http(addr, "GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_are_answered_from_their_headers_and_bodies_are_bounded() {
    let server = start(ServerOptions {
        api_key: Some(KEY.to_owned()),
        api_body_timeout: Duration::from_secs(1),
        rate_limit: None,
        ..ServerOptions::default()
    })
    .await;
    let addr = server.local_addr();
    let mut calm = Bystander::join(addr).await;

    // 50 requests announcing a 1 MB body without the key, each sending a little of it and
    // then nothing: each is answered 401 at once, without waiting for the body.
    let head = |auth: &str, length: usize| {
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: \
             application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    let mut attackers = Vec::new();
    for _ in 0..50 {
        let mut stream = within("dial", TcpStream::connect(addr))
            .await
            .expect("dial");
        let mut request = head("", 1_000_000).into_bytes();
        request.extend_from_slice(&[b' '; 1000]);
        within("write", stream.write_all(&request))
            .await
            .expect("write");
        attackers.push(stream);
    }
    calm.still_served("50 unauthorized bodies").await;
    for stream in &mut attackers {
        let answer = response_head(stream, Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
        assert!(closed_within(stream, Duration::from_secs(3)).await);
    }
    drop(attackers);

    // With the key: a declared body over the limit is refused before it is read…
    let bearer = format!("Authorization: Bearer {KEY}\r\n");
    let mut stream = TcpStream::connect(addr).await.expect("dial");
    within(
        "write",
        stream.write_all(head(&bearer, 1_000_000).as_bytes()),
    )
    .await
    .expect("write");
    let answer = response_head(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    // …and so is a chunked one once it passes the limit (64 KiB by default).
    let mut stream = TcpStream::connect(addr).await.expect("dial");
    let chunked = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {addr}\r\n{bearer}Transfer-Encoding: chunked\r\n\r\n"
    );
    within("write", stream.write_all(chunked.as_bytes()))
        .await
        .expect("write");
    for _ in 0..3 {
        let chunk = format!("8000\r\n{}\r\n", " ".repeat(0x8000));
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let answer = response_head(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    // A body that stops arriving is answered 408 after the body timeout, and closed.
    let mut stream = TcpStream::connect(addr).await.expect("dial");
    let started = Instant::now();
    let mut request = head(&bearer, 100).into_bytes();
    request.extend_from_slice(b"{\"room\":");
    within("write", stream.write_all(&request))
        .await
        .expect("write");
    let answer = response_head(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(closed_within(&mut stream, Duration::from_secs(3)).await);

    // A proper request is still served, and every refusal was counted.
    let (status, body) = api(
        addr,
        KEY,
        "/api/publish",
        json!({"room":"elsewhere","data":1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        metric(addr, "wshub_api_refused_total{reason=\"unauthorized\"}").await,
        50
    );
    assert_eq!(
        metric(addr, "wshub_api_refused_total{reason=\"too_large\"}").await,
        2
    );
    assert_eq!(
        metric(addr, "wshub_api_refused_total{reason=\"body_timeout\"}").await,
        1
    );
    calm.still_served("the refused API requests").await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_http_connections_are_capped_per_address_and_in_total() {
    let mut options = ServerOptions {
        rate_limit: None,
        ..ServerOptions::default()
    };
    options.hub = options
        .hub
        .max_http_connections(48)
        .max_http_connections_per_ip(16);
    let server = start(options).await;
    let addr = server.local_addr();
    let mut calm = Bystander::join(addr).await;

    // One address opens 40 connections and sends each an unfinished request: 16 are held
    // (until the header timeout), the 24 others are answered 503 and closed at once.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let mut stream = dial_from([127, 0, 0, 2], addr).await;
        let _ = stream
            .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
            .await;
        held.push(stream);
    }
    for stream in &mut held {
        let answer = response_head(stream, Duration::from_millis(100)).await;
        if answer.starts_with("HTTP/1.1 503") {
            assert!(answer.contains("retry-after") || answer.contains("Retry-After"));
            assert!(closed_within(stream, Duration::from_secs(3)).await);
            refused += 1;
        } else {
            assert_eq!(answer, "", "a held connection got an answer");
        }
    }
    assert_eq!(refused, 24);
    assert_eq!(server.hub().stats().http_connections, 16);

    // Everyone else is served: `/healthz`, a new WebSocket, the bystander.
    assert_eq!(http(addr, "GET", "/healthz", &[], None).await.0, 200);
    let (mut fresh, _) = connect(addr).await;
    nothing_pending(&mut fresh).await;
    calm.still_served("one address holding HTTP connections")
        .await;

    // Two more addresses take the rest of the 48: a fourth is refused at the total bound.
    for source in [[127, 0, 0, 3], [127, 0, 0, 4]] {
        for _ in 0..16 {
            let mut stream = dial_from(source, addr).await;
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\n").await;
            held.push(stream);
        }
    }
    let mut stream = dial_from([127, 0, 0, 5], addr).await;
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\n").await;
    let answer = response_head(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert_eq!(server.hub().stats().http_connections, 48);
    // WebSockets already open are not HTTP connections any more: they keep their service.
    calm.still_served("every HTTP slot taken").await;
    nothing_pending(&mut fresh).await;

    // Once the holders leave, their places are free again.
    drop(held);
    let mut freed = false;
    for _ in 0..100 {
        if server.hub().stats().http_connections == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "slots not given back");
    assert_eq!(http(addr, "GET", "/healthz", &[], None).await.0, 200);
    assert_eq!(
        metric(addr, "wshub_http_connections_refused_total").await,
        25
    );
    stop(server).await;
}

/// The `wshub` process, killed when the test ends however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary with few file descriptors, flooded with connections it cannot accept: it
/// says so once per interval, not at every retry (20 times a second).
#[tokio::test]
async fn running_out_of_descriptors_is_logged_once_not_per_retry() {
    let child = Command::new("sh")
        .args([
            "-c",
            r#"ulimit -n 48 && exec "$0" --listen 127.0.0.1:0 --log-format text"#,
            env!("CARGO_BIN_EXE_wshub"),
        ])
        .env_remove("WSHUB_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wshub");
    let mut process = Process(child);
    let stdout = process.0.stdout.take().expect("stdout");
    let mut stderr = process.0.stderr.take().expect("stderr");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr: SocketAddr = line
        .split_whitespace()
        .nth(3)
        .and_then(|word| word.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));

    // More connections than descriptors; each keeps its request unfinished.
    let mut held = Vec::new();
    for _ in 0..80 {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
        else {
            continue;
        };
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\n").await;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(process);
    drop(held);
    let mut log = String::new();
    stderr.read_to_string(&mut log).expect("stderr");
    let warnings = log.matches("accept failed").count();
    assert_eq!(warnings, 1, "accept warnings in 2 s:\n{log}");
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_request_headers_are_not_kept_for_the_connections_life() {
    let server = start(ServerOptions {
        rate_limit: None,
        ..ServerOptions::default()
    })
    .await;
    let addr = server.local_addr();
    let mut calm = Bystander::join(addr).await;

    // 200 WebSockets whose upgrade requests carry 320 KB of headers each, a 64 KB
    // User-Agent among them, all kept open.
    let padding: String = (0..39)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "p".repeat(8000)))
        .collect();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         User-Agent: {}\r\n{padding}\r\n",
        "u".repeat(8000)
    );
    let before = rss_bytes();
    let mut open = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(addr).await.expect("dial");
        within("write", stream.write_all(request.as_bytes()))
            .await
            .expect("write");
        let answer = response_head(&mut stream, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer:?}");
        open.push(stream);
    }
    // The hub may count a connection just after its 101 reached the client: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.hub().connection_count() < 201 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.hub().connection_count(), 201);
    let grown = rss_bytes().saturating_sub(before);
    // 200 x 320 KB kept would be 64 MB; what stays is the connections themselves.
    assert!(
        grown < 16 * 1024 * 1024,
        "RSS grew by {} KiB for 200 connections",
        grown / 1024
    );
    calm.still_served("200 connections with large headers")
        .await;
    drop(open);
    stop(server).await;
}
