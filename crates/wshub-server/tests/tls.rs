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
