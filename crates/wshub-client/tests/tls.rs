//! `wss://`: the protocol client against the real server over TLS, trusting a certificate
//! generated in the test.

mod support;

use std::sync::Arc;

use support::*;
use wshub_client::{SubscriptionEvent, WshubClient, rustls};

#[tokio::test]
async fn the_protocol_client_speaks_wss() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let mut server_options = options();
    server_options.tls = Some(
        wshub::TlsConfig::from_pem(
            cert.cert.pem().as_bytes(),
            cert.signing_key.serialize_pem().as_bytes(),
        )
        .expect("server tls"),
    );
    let server = wshub_server::app::serve(server_options, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let port = server.local_addr().port();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (client, _events) = WshubClient::builder(format!("wss://localhost:{port}/ws"))
        .connection(|c| c.tls_config(Arc::new(tls)))
        .build()
        .expect("client");
    within("ready", client.ready())
        .await
        .expect("welcome over TLS");
    let mut room = within("subscribe", client.subscribe("secure"))
        .await
        .expect("subscribed");
    let offset = within("publish", client.publish("secure", &"over tls"))
        .await
        .expect("published");
    match next_in(&mut room).await {
        SubscriptionEvent::Message(m) => {
            assert_eq!(m.offset, offset);
            assert_eq!(m.data.get(), r#""over tls""#);
        }
        other => panic!("expected the message, got {other:?}"),
    }
    client.close().await;

    // Without the test's root, the server's certificate is refused.
    let (untrusting, _events) = WshubClient::builder(format!("wss://localhost:{port}/ws"))
        .connection(|c| c.reconnect(false))
        .build()
        .expect("client");
    let refused = tokio::time::timeout(std::time::Duration::from_secs(3), untrusting.ready()).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a self-signed certificate must not be trusted by default"
    );
    untrusting.close().await;
    stop(server).await;
}
