//! The classic chat hub: every text message goes to everyone in the sender's room, the
//! sender included.
//!
//! ```text
//! cargo run --release --example chat -- 127.0.0.1:8080
//! ```
//!
//! serves `ws://127.0.0.1:8080/ws` and a chat page at `http://127.0.0.1:8080/` (and at
//! `/websocket`, where the Go chat examples serve theirs).
//!
//! A client that connects with `?username=alice` is alice: its messages reach the room as
//! `alice: text`, and the room is told `alice joined` and `alice left`. `?room=` picks a
//! room; without it the room is everyone. A client without a username is anonymous and
//! silent: its messages are relayed as they are, with no announcements, which is what the
//! benchmarks in `benches/` measure.

use std::time::Duration;

use axum::{http::StatusCode, response::Html, routing::get};
use wshub::{Hub, Identity, Message, Rejection, Server};

/// The room a connection chats in, chosen with `?room=`.
struct Room(String);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());

    let hub = Hub::builder()
        // Not authentication: the username names the connection (`Connection::user`).
        .auth(|request| async move {
            let username = request.query_param("username").unwrap_or_default();
            let room = request.query_param("room").filter(|room| !room.is_empty());
            let fields = [("username", Some(&username)), ("room", room.as_ref())];
            for (what, value) in fields.into_iter().filter_map(|(w, v)| Some((w, v?))) {
                if value.chars().count() > 32 || value.chars().any(char::is_control) {
                    return Err(Rejection::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("{what} must be at most 32 printable characters"),
                    ));
                }
            }
            let identity = Identity::new(username);
            Ok(match room {
                Some(room) => identity.with_data(Room(room)),
                None => identity,
            })
        })
        .on_connect(|conn| {
            if let Some(room) = room_of(conn) {
                let _ = conn.join(room);
            }
            if let Some(user) = conn.user() {
                tell_room(conn, Message::text(format!("{user} joined")));
            }
        })
        .on_message(|conn, msg| {
            let Some(text) = msg.as_text() else { return };
            let msg = match conn.user() {
                Some(user) => Message::text(format!("{user}: {text}")),
                None => msg,
            };
            tell_room(conn, msg);
        })
        .on_disconnect(|conn, _| {
            if let Some(user) = conn.user() {
                tell_room(conn, Message::text(format!("{user} left")));
            }
        })
        .build();
    let app = hub
        .router()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/websocket", get(|| async { Html(PAGE) }));

    let server = Server::start_with_router(addr, hub, app).await?;
    println!(
        "chat: open http://{0}/ (WebSocket at ws://{0}/ws); Ctrl-C to stop",
        server.local_addr()
    );
    shutdown_signal().await;
    server.stop(Duration::from_secs(5)).await;
    Ok(())
}

fn room_of(conn: &wshub::Connection) -> Option<&str> {
    conn.identity()?.data::<Room>().map(|room| room.0.as_str())
}

/// Sends to the connection's room, or to everyone when it has none.
fn tell_room(conn: &wshub::Connection, msg: Message) {
    match room_of(conn) {
        Some(room) => conn.hub().broadcast_to_room(room, msg),
        None => conn.hub().broadcast(msg),
    };
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
  body { font: 16px system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; background: #f6f7fb; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .3rem; }
  #who { display: flex; gap: .5rem; margin-bottom: .8rem; }
  #log { height: 22rem; overflow-y: auto; background: #fff; border-radius: .6rem; padding: .8rem; box-shadow: 0 1px 4px #0002; }
  .line { margin: .35rem 0; }
  .line b { color: #3558c8; }
  .line.mine b { color: #1a8a4a; }
  .notice { color: #888; font-style: italic; text-align: center; font-size: .9rem; }
  form#say { display: flex; gap: .5rem; margin-top: .6rem; }
  input { font: inherit; padding: .45rem .6rem; border: 1px solid #ccc; border-radius: .4rem; }
  #msg { flex: 1; }
  button { font: inherit; padding: .45rem 1rem; border: 0; border-radius: .4rem; background: #3558c8; color: #fff; cursor: pointer; }
  #state { font-size: .85rem; }
  #state.on { color: #1a8a4a; } #state.off { color: #c0392b; }
</style>
</head>
<body>
<h1>wshub chat</h1>
<form id="who"><input id="name" placeholder="your name"><input id="room" placeholder="room" value="lobby"><button>Join</button> <span id="state" class="off">not connected</span></form>
<div id="log"></div>
<form id="say"><input id="msg" autocomplete="off" placeholder="Say something"><button>Send</button></form>
<script>
  const $ = (id) => document.getElementById(id);
  const log = $("log"), state = $("state"), input = $("msg");
  $("name").value = localStorage.getItem("wshub-chat-name") || "guest-" + Math.floor(Math.random() * 1000);
  let ws, me;
  function show(text) {
    const line = document.createElement("div");
    const colon = text.indexOf(": ");
    if (colon < 0) { line.className = "notice"; line.textContent = text; }
    else {
      const who = text.slice(0, colon);
      line.className = "line" + (who === me ? " mine" : "");
      const b = document.createElement("b"); b.textContent = who;
      line.append(b, ": " + text.slice(colon + 2));
    }
    log.appendChild(line);
    log.scrollTop = log.scrollHeight;
  }
  function connect() {
    if (ws) { ws.onclose = null; ws.close(); }
    me = $("name").value.trim();
    localStorage.setItem("wshub-chat-name", me);
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const query = "?username=" + encodeURIComponent(me) + "&room=" + encodeURIComponent($("room").value.trim() || "lobby");
    ws = new WebSocket(scheme + location.host + "/ws" + query);
    ws.onopen = () => { state.textContent = "connected as " + me; state.className = "on"; input.focus(); };
    ws.onclose = () => { state.textContent = "disconnected; reconnecting…"; state.className = "off"; setTimeout(connect, 1000); };
    ws.onmessage = (event) => show(event.data);
  }
  $("who").onsubmit = (event) => { event.preventDefault(); log.textContent = ""; connect(); };
  $("say").onsubmit = (event) => {
    event.preventDefault();
    if (input.value && ws && ws.readyState === WebSocket.OPEN) { ws.send(input.value); input.value = ""; }
  };
  connect();
</script>
</body>
</html>
"#;
