//! Echoes every message back as is, text or binary, on any path: the server the Autobahn
//! conformance suite drives.
//!
//! ```text
//! cargo run --release --example echo -- 127.0.0.1:9001
//! ```

use std::time::Duration;

use wshub::{Compression, Hub, HubConfig, OverflowPolicy, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());

    let config = HubConfig::default()
        // The conformance suite sends messages of up to 16 MiB.
        .max_message_bytes(64 * 1024 * 1024)
        // An echo peer may send a burst before reading its replies; wait rather than drop.
        .send_queue_capacity(16 * 1024)
        .send_queue_max_bytes(256 * 1024 * 1024)
        .overflow_policy(OverflowPolicy::Close)
        // permessage-deflate for clients that offer it (the suite's groups 12 and 13).
        .compression(Compression::default());
    let hub = Hub::builder()
        .config(config)
        .on_message(|conn, msg| {
            let _ = conn.send(msg);
        })
        .build();
    let app = axum::Router::new().fallback_service(hub.route());

    let server = Server::start_with_router(addr, hub, app).await?;
    println!(
        "echo: ws://{}/ (any path); Ctrl-C to stop",
        server.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    server.stop(Duration::from_secs(5)).await;
    Ok(())
}
