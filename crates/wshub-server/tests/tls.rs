//! `--tls-cert` and `--tls-key`: the real binary serves `wss://` and `https://` with a
//! certificate generated in the test.

mod support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{
    TlsConnector,
    rustls::{self, pki_types::ServerName},
};
use tokio_tungstenite::tungstenite::Message as WsMessage;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a fresh certificate and key for `localhost`; returns their paths and a client
/// that trusts only that certificate.
fn certificate(dir: &std::path::Path) -> (String, String, TlsConnector) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    std::fs::create_dir_all(dir).expect("dir");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
        TlsConnector::from(Arc::new(client)),
    )
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("wshub-tls-{name}-{}", std::process::id()))
}

#[tokio::test]
async fn the_binary_serves_wss_and_https() {
    let dir = temp_dir("serve");
    let (cert, key, connector) = certificate(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ])
        .env_remove("WSHUB_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wshub");
    let stdout = child.stdout.take().expect("stdout");
    let _process = Process(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    assert!(line.contains("wss://"), "{line}");
    let addr: SocketAddr = line
        .split_whitespace()
        .nth(3)
        .and_then(|w| w.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));

    let connect = || async {
        let tcp = within("tcp", tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        within("tls", connector.connect(name, tcp))
            .await
            .expect("tls handshake")
    };

    let (mut ws, _) = within(
        "websocket",
        tokio_tungstenite::client_async("wss://localhost/ws", connect().await),
    )
    .await
    .expect("wss handshake");
    let next = |text: Option<Result<WsMessage, _>>| -> serde_json::Value {
        match text {
            Some(Ok(WsMessage::Text(t))) => serde_json::from_str(&t).expect("json"),
            other => panic!("expected a frame, got {other:?}"),
        }
    };
    let welcome = next(within("welcome", ws.next()).await);
    assert_eq!(welcome["type"], "welcome");
    let subscribe = json!({"type":"subscribe","room":"secure","id":1}).to_string();
    within("send", ws.send(WsMessage::text(subscribe)))
        .await
        .expect("send");
    assert_eq!(next(within("ok", ws.next()).await)["type"], "ok");
    let publish = json!({"type":"publish","room":"secure","data":"hi"}).to_string();
    within("send", ws.send(WsMessage::text(publish)))
        .await
        .expect("send");
    assert_eq!(next(within("message", ws.next()).await)["data"], "hi");

    let mut https = connect().await;
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    within("https", https.read_to_string(&mut response))
        .await
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_settings_are_checked_at_start() {
    let dir = temp_dir("check");
    let (cert, key, _) = certificate(&dir);
    let only_cert = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert", &cert])
        .env_remove("WSHUB_CONFIG")
        .output()
        .expect("run");
    assert_eq!(only_cert.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&only_cert.stderr).contains("--tls-key"));

    let swapped = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &key,
            "--tls-key",
            &cert,
        ])
        .env_remove("WSHUB_CONFIG")
        .output()
        .expect("run");
    assert_eq!(swapped.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&swapped.stderr).contains("TLS"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS connection to `addr` as `localhost`, or the handshake's error.
async fn tls_connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = within("tcp", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    within("tls", connector.connect(name, tcp)).await
}

/// The DER of the certificate the server presented on `stream`.
fn presented(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .to_vec()
}

/// The DER of the certificate in the PEM file at `path`.
fn der_of(path: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_file(path)
        .expect("certificate PEM")
        .to_vec()
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A WebSocket over `connector`, past its welcome, subscribed to `room`.
async fn wss_subscribed(addr: SocketAddr, connector: &TlsConnector, room: &str) -> Wss {
    let tls = tls_connect(addr, connector).await.expect("tls handshake");
    let (mut ws, _) = within(
        "websocket",
        tokio_tungstenite::client_async("wss://localhost/ws", tls),
    )
    .await
    .expect("wss handshake");
    assert_eq!(wss_next(&mut ws).await["type"], "welcome");
    let subscribe = json!({"type": "subscribe", "room": room, "id": 1}).to_string();
    within("send", ws.send(WsMessage::text(subscribe)))
        .await
        .expect("send");
    assert_eq!(wss_next(&mut ws).await["type"], "ok");
    ws
}

async fn wss_next(ws: &mut Wss) -> serde_json::Value {
    loop {
        match within("frame", ws.next()).await {
            Some(Ok(WsMessage::Text(t))) => return serde_json::from_str(&t).expect("json"),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// The next `message` frame (presence events skipped).
async fn wss_message(ws: &mut Wss) -> serde_json::Value {
    loop {
        let frame = wss_next(ws).await;
        if frame["type"] != "join" && frame["type"] != "leave" {
            return frame;
        }
    }
}

/// Publishes `data` on `ws` (subscribed to `room`) and reads it back: the connection works.
async fn still_works(ws: &mut Wss, room: &str, data: &str) {
    let publish = json!({"type": "publish", "room": room, "data": data}).to_string();
    within("send", ws.send(WsMessage::text(publish)))
        .await
        .expect("send on the open connection");
    assert_eq!(wss_message(ws).await["data"], data);
}

#[tokio::test]
async fn reload_tls_serves_new_connections_the_new_certificate_and_keeps_open_ones() {
    let dir = temp_dir("reload");
    let (cert, key, trusts_a) = certificate(&dir);
    let cert_a = der_of(&cert);
    let options = wshub_server::state::ServerOptions {
        tls: Some(wshub::TlsConfig::from_pem_files(&cert, &key).expect("tls")),
        ..wshub_server::state::ServerOptions::default()
    };
    let server = support::start(options).await;
    let addr = server.local_addr();
    let mut open = wss_subscribed(addr, &trusts_a, "r").await;

    // The files now hold certificate B; nothing changes until the reload.
    let (_, _, trusts_b) = certificate(&dir);
    let cert_b = der_of(&cert);
    assert_ne!(cert_a, cert_b);
    let before = tls_connect(addr, &trusts_a).await.expect("still A");
    assert_eq!(presented(&before), cert_a);
    assert!(matches!(server.reload_tls(), Ok(true)));

    let after = tls_connect(addr, &trusts_b)
        .await
        .expect("B after the reload");
    assert_eq!(presented(&after), cert_b);
    assert!(
        tls_connect(addr, &trusts_a).await.is_err(),
        "a client that trusts only A is refused now"
    );
    let mut fresh = wss_subscribed(addr, &trusts_b, "r").await;
    still_works(&mut open, "r", "old connection").await;
    assert_eq!(wss_message(&mut fresh).await["data"], "old connection");

    // A bad file: an error, and B stays.
    std::fs::write(&cert, "not a certificate").expect("write");
    let error = server.reload_tls().expect_err("a bad certificate file");
    assert!(error.to_string().contains("cert.pem"), "{error}");
    // A key that does not fit the certificate: an error too.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    std::fs::write(&cert, other.cert.pem()).expect("write");
    assert!(server.reload_tls().is_err(), "a key that does not fit");
    let kept = tls_connect(addr, &trusts_b).await.expect("B kept");
    assert_eq!(presented(&kept), cert_b);
    still_works(&mut open, "r", "after bad files").await;
    support::stop(server).await;

    // Without TLS there is nothing to reload.
    let plain = support::start(wshub_server::state::ServerOptions::default()).await;
    assert!(matches!(plain.reload_tls(), Ok(false)));
    support::stop(plain).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sighup_reloads_the_binary_s_certificate() {
    let dir = temp_dir("sighup");
    let (cert, key, trusts_a) = certificate(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ])
        .env_remove("WSHUB_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wshub");
    let stdout = child.stdout.take().expect("stdout");
    let pid = child.id().to_string();
    let mut process = Process(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr: SocketAddr = line
        .split_whitespace()
        .nth(3)
        .and_then(|w| w.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let mut open = wss_subscribed(addr, &trusts_a, "r").await;

    let (_, _, trusts_b) = certificate(&dir);
    let cert_b = der_of(&cert);
    let hangup = |what: &str| {
        let status = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "SIGHUP {what}");
    };
    hangup("with certificate B");
    // The signal is handled asynchronously: poll, bounded, until B is presented.
    let mut served_b = false;
    for _ in 0..50 {
        if let Ok(stream) = tls_connect(addr, &trusts_b).await {
            assert_eq!(presented(&stream), cert_b);
            served_b = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(served_b, "certificate B not served within 5 s of SIGHUP");
    still_works(&mut open, "r", "open across SIGHUP").await;

    // A bad file and another SIGHUP: the process lives on with B.
    std::fs::write(&key, "not a key").expect("write");
    hangup("with a bad key");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        process.0.try_wait().expect("try_wait").is_none(),
        "the server exited on a bad file"
    );
    let kept = tls_connect(addr, &trusts_b).await.expect("B kept");
    assert_eq!(presented(&kept), cert_b);
    still_works(&mut open, "r", "after a bad file").await;
    let _ = std::fs::remove_dir_all(&dir);
}
