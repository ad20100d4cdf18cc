//! Notifications pushed from an ordinary HTTP handler: `POST /notify` sends a JSON
//! notification to one user's connections (every tab and device they have open) or to
//! everyone.
//!
//! ```text
//! cargo run --example notifications -- 127.0.0.1:8080
//! ```
//!
//! Open `http://127.0.0.1:8080/` in a few tabs under different names, then send from the
//! page or from a shell:
//!
//! ```text
//! curl -d '{"user":"alice","title":"Build done","body":"main is green"}' \
//!      -H 'content-type: application/json' http://127.0.0.1:8080/notify
//! ```
//!
//! Without `"user"` the notification goes to everyone. The answer says how many
//! connections it reached: `{"delivered":2}`. The WebSocket is `ws://…/ws?user=alice`;
//! a real application would take the user from a verified token in the auth hook instead.

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::Html,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use wshub::{Hub, Identity, Message, Rejection, Server};

/// The body of `POST /notify`.
#[derive(Deserialize)]
struct Notify {
    /// The user to notify; everyone when absent.
    user: Option<String>,
    title: String,
    #[serde(default)]
    body: String,
}

/// What a connection receives.
#[derive(Serialize)]
struct Notification<'a> {
    r#type: &'static str,
    title: &'a str,
    body: &'a str,
    /// Seconds since the Unix epoch.
    sent_at: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let hub = Hub::builder()
        .auth(|request| async move {
            match request.query_param("user") {
                Some(user) if !user.is_empty() && user.len() <= 64 => Ok(Identity::new(user)),
                _ => Err(Rejection::unauthorized("connect with ?user=<name>")),
            }
        })
        .build();
    let app = app(&hub);
    let server = Server::start_with_router(addr, hub, app).await?;
    println!(
        "notifications: open http://{0}/ (POST http://{0}/notify); Ctrl-C to stop",
        server.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    server.stop(std::time::Duration::from_secs(5)).await;
    Ok(())
}

/// The page, the hub's `/ws`, and `POST /notify`.
fn app(hub: &Hub) -> Router {
    hub.router()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/websocket.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], WEBSOCKET_JS) }),
        )
        .route("/notify", post(notify).with_state(hub.clone()))
}

/// Any handler that can reach the hub can push: it is a cheap, cloneable handle.
async fn notify(
    State(hub): State<Hub>,
    Json(request): Json<Notify>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let sent_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let message = Message::json(&Notification {
        r#type: "notification",
        title: &request.title,
        body: &request.body,
        sent_at,
    })
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let delivered = match &request.user {
        Some(user) => hub.send_to_user(user, message),
        None => hub.broadcast(message),
    };
    Ok(Json(serde_json::json!({ "delivered": delivered })))
}

/// The browser's plain WebSocket client (`clients/js`), which the page imports: reconnects
/// with backoff and routes JSON by its `type`.
const WEBSOCKET_JS: &str = include_str!("../../../clients/js/src/websocket.js");

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wshub notifications</title>
<style>
  body { font: 16px system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; background: #f4f5f9; color: #222; }
  h1 { font-size: 1.4rem; }
  .card { background: #fff; border-radius: .7rem; padding: 1rem; box-shadow: 0 1px 4px #0002; margin-bottom: 1rem; }
  input, textarea { font: inherit; padding: .4rem .6rem; border: 1px solid #ccc; border-radius: .4rem; box-sizing: border-box; }
  button { font: inherit; padding: .45rem 1rem; border: 0; border-radius: .4rem; background: #6b4fd8; color: #fff; cursor: pointer; }
  .row { display: flex; gap: .5rem; margin: .4rem 0; } .row > input { flex: 1; }
  #state { font-size: .85rem; color: #888; }
  #toasts { position: fixed; top: 1rem; right: 1rem; width: 20rem; }
  .toast { background: #2d2a3e; color: #fff; border-radius: .6rem; padding: .7rem 1rem; margin-bottom: .5rem; box-shadow: 0 4px 12px #0004; animation: in .25s ease-out; }
  .toast b { display: block; } .toast small { opacity: .7; }
  @keyframes in { from { transform: translateX(120%); } to { transform: none; } }
  #history div { border-bottom: 1px solid #eee; padding: .4rem 0; }
</style>
</head>
<body>
<h1>🔔 wshub notifications</h1>
<div class="card">
  <div class="row"><input id="me" placeholder="your name"><button id="go">Connect</button></div>
  <span id="state">not connected</span>
</div>
<div class="card">
  <b>Send a notification</b>
  <div class="row"><input id="to" placeholder="to user (empty: everyone)"><input id="title" placeholder="title" value="Hello"></div>
  <div class="row"><input id="body" placeholder="body" value="from the notify form"><button id="send">Send</button></div>
  <span id="result"></span>
</div>
<div class="card"><b>Received</b><div id="history"></div></div>
<div id="toasts"></div>
<script type="module">
  import { WebSocketClient } from "/websocket.js";
  const $ = (id) => document.getElementById(id);
  $("me").value = localStorage.getItem("wshub-notify-name") || "alice";
  // The URL is read before every attempt, so a new name takes effect on reconnect.
  const client = new WebSocketClient(() => "/ws?user=" + encodeURIComponent($("me").value.trim()), { maxReconnectDelay: 5000 });
  client.on("open", () => { $("state").textContent = "connected as " + $("me").value.trim(); });
  client.on("reconnecting", () => { $("state").textContent = "disconnected; reconnecting…"; });
  client.route("notification", (n) => {
      const toast = document.createElement("div");
      toast.className = "toast";
      const title = document.createElement("b"); title.textContent = n.title;
      const when = document.createElement("small"); when.textContent = new Date(n.sent_at * 1000).toLocaleTimeString();
      toast.append(title, n.body, " ", when);
      $("toasts").prepend(toast);
      setTimeout(() => toast.remove(), 5000);
      const line = document.createElement("div");
      line.textContent = when.textContent + " — " + n.title + ": " + n.body;
      $("history").prepend(line);
  });
  function connect() {
    localStorage.setItem("wshub-notify-name", $("me").value.trim());
    if (client.state !== "idle") client.close(1000, "new name");
    client.connect();
  }
  $("go").onclick = connect;
  $("send").onclick = async () => {
    const to = $("to").value.trim();
    const request = { title: $("title").value, body: $("body").value };
    if (to) request.user = to;
    const response = await fetch("/notify", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(request) });
    const answer = await response.json();
    $("result").textContent = "delivered to " + answer.delivered + " connection(s)";
  };
  connect();
</script>
</body>
</html>
"#;
