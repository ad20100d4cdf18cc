//! The classic chat hub: every text message from any client goes to every connected
//! client, the sender included.
//!
//! ```text
//! cargo run --release --example chat -- 127.0.0.1:8080
//! ```
//!
//! serves `ws://127.0.0.1:8080/ws` and a small chat page at `http://127.0.0.1:8080/`.

use std::time::Duration;

use axum::{response::Html, routing::get};
use wshub::{Hub, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());

    let hub = Hub::builder()
        .on_message(|conn, msg| {
            if msg.is_text() {
                conn.hub().broadcast(msg);
            }
        })
        .build();
    let app = hub.router().route("/", get(|| async { Html(PAGE) }));

    let server = Server::start_with_router(addr, hub, app).await?;
    println!(
        "chat: open http://{0}/ (WebSocket at ws://{0}/ws); Ctrl-C to stop",
        server.local_addr()
    );
    shutdown_signal().await;
    server.stop(Duration::from_secs(5)).await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wshub chat</title>
<style>
  body { font: 16px system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
  #log { height: 20rem; overflow-y: auto; border: 1px solid #ccc; padding: .5rem; }
  #log div { margin: .2rem 0; }
  form { display: flex; gap: .5rem; margin-top: .5rem; }
  #msg { flex: 1; }
  #state { color: #666; font-size: .9rem; }
</style>
</head>
<body>
<h1>wshub chat</h1>
<p id="state">connecting…</p>
<div id="log"></div>
<form id="form"><input id="msg" autocomplete="off" autofocus placeholder="Say something"><button>Send</button></form>
<script>
  const log = document.getElementById("log");
  const state = document.getElementById("state");
  const input = document.getElementById("msg");
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  let ws;
  function connect() {
    ws = new WebSocket(url);
    ws.onopen = () => { state.textContent = "connected"; };
    ws.onclose = () => { state.textContent = "disconnected; reconnecting…"; setTimeout(connect, 1000); };
    ws.onmessage = (event) => {
      const line = document.createElement("div");
      line.textContent = event.data;
      log.appendChild(line);
      log.scrollTop = log.scrollHeight;
    };
  }
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    if (input.value && ws.readyState === WebSocket.OPEN) { ws.send(input.value); input.value = ""; }
  };
  connect();
</script>
</body>
</html>
"#;
