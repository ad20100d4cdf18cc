//! TLS: `wss://` and `https://` from the stand-alone server, with a certificate generated
//! in the test.
#![cfg(feature = "tls")]

mod support;

use std::sync::Arc;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{
    TlsConnector,
    rustls::{self, pki_types::ServerName},
};
use wshub::{Hub, Server, TlsConfig};

/// A self-signed certificate for `localhost`, and a client that trusts only it.
fn certificate() -> (TlsConfig, TlsConnector) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let tls = TlsConfig::from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    (tls, TlsConnector::from(Arc::new(client)))
}

async fn tls_stream(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = within("tcp", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    within("tls handshake", connector.connect(name, tcp))
        .await
        .expect("tls")
}

#[tokio::test]
async fn wss_and_https_work_with_a_generated_certificate() {
    let (tls, connector) = certificate();
    let hub = Hub::builder()
        .on_message(|conn, msg| {
            conn.hub().broadcast(msg);
        })
        .build();
    let router = hub
        .router()
        .route("/health", axum::routing::get(|| async { "secure ok" }));
    let server = Server::start_tls("127.0.0.1:0", hub.clone(), router, tls)
        .await
        .expect("start");
    let addr = server.local_addr();

    // wss://
    let stream = tls_stream(&connector, addr).await;
    let (mut ws, _) = within(
        "handshake",
        tokio_tungstenite::client_async("wss://localhost/ws", stream),
    )
    .await
    .expect("websocket over TLS");
    send_text(&mut ws, "over tls").await;
    assert_eq!(next_text(&mut ws).await, "over tls");
    // Large messages cross many TLS records.
    let big = "t".repeat(200_000);
    send_text(&mut ws, big.clone()).await;
    assert_eq!(next_text(&mut ws).await, big);

    // https://
    let mut https = tls_stream(&connector, addr).await;
    https
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    within("https", https.read_to_string(&mut response))
        .await
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("secure ok"));

    // Plain bytes on the TLS port get nowhere, and disturb no one.
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = within("plain refused", plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 101"));
    send_text(&mut ws, "still here").await;
    assert_eq!(next_text(&mut ws).await, "still here");
    stop(server).await;
}

#[test]
fn bad_certificates_are_named_errors() {
    let error = TlsConfig::from_pem(b"not pem", b"not pem").expect_err("garbage");
    assert!(matches!(error, wshub::Error::Tls(_)), "{error}");
    let missing = TlsConfig::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
        .expect_err("missing files");
    assert!(
        missing.to_string().contains("/nonexistent/cert.pem"),
        "{missing}"
    );
    // A key that does not belong to the certificate.
    let a = rcgen::generate_simple_self_signed(vec!["a".to_owned()]).expect("a");
    let b = rcgen::generate_simple_self_signed(vec!["b".to_owned()]).expect("b");
    let mismatch = TlsConfig::from_pem(
        a.cert.pem().as_bytes(),
        b.signing_key.serialize_pem().as_bytes(),
    );
    assert!(mismatch.is_err());
}

#[tokio::test]
async fn replace_serves_new_connections_the_new_certificate_and_keeps_open_ones() {
    let (tls, trusts_a) = certificate();
    let hub = Hub::builder()
        .on_message(|conn, msg| {
            let _ = conn.send(msg);
        })
        .build();
    let router = hub.router();
    let server = Server::start_tls("127.0.0.1:0", hub, router, tls.clone())
        .await
        .expect("start");
    let addr = server.local_addr();
    let (mut open, _) = within(
        "handshake",
        tokio_tungstenite::client_async("wss://localhost/ws", tls_stream(&trusts_a, addr).await),
    )
    .await
    .expect("websocket over TLS");

    // The caller's clone is the server's: replacing it changes what new connections get.
    let (b, trusts_b) = certificate();
    tls.replace(&b);
    let stream = tls_stream(&trusts_b, addr).await;
    drop(stream);
    let tcp = within("tcp", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    assert!(
        within("refused", trusts_a.connect(name, tcp))
            .await
            .is_err(),
        "a client that trusts only the old certificate is refused"
    );
    // The open connection keeps working.
    send_text(&mut open, "still here").await;
    assert_eq!(next_text(&mut open).await, "still here");

    // Not read from files: nothing to reload, and nothing changes.
    let error = tls.reload().expect_err("no files");
    assert!(error.to_string().contains("not read from files"), "{error}");
    drop(tls_stream(&trusts_b, addr).await);
    server.stop(std::time::Duration::from_millis(200)).await;
}
