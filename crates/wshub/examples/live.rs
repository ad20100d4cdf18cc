//! Live data from a background task: a ticker pushes a new price, every 5 seconds, to the
//! subscribers of each symbol's room.
//!
//! ```text
//! cargo run --example live -- 127.0.0.1:8080 [TICK_MS]
//! ```
//!
//! A client subscribes with `{"subscribe":"BTC"}` and stops with `{"unsubscribe":"BTC"}`;
//! each tick it receives `{"type":"tick","symbol":"BTC","price":101.25,"seq":7}` for every
//! symbol it follows. Only rooms with subscribers get ticks, so an unwatched symbol costs
//! nothing. `TICK_MS` (default 5000) sets the interval.

use std::{collections::HashMap, time::Duration};

use axum::{response::Html, routing::get};
use serde::Deserialize;
use wshub::{Hub, Message, Server};

/// What a client may send.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Request {
    Subscribe(String),
    Unsubscribe(String),
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let tick = Duration::from_millis(args.next().map_or(Ok(5000), |ms| ms.parse())?);

    let hub = Hub::builder()
        .on_message(|conn, msg| {
            let request = msg
                .as_text()
                .and_then(|text| serde_json::from_str::<Request>(text).ok());
            match request {
                Some(Request::Subscribe(symbol)) if valid_symbol(&symbol) => {
                    let _ = conn.join(&symbol);
                    let _ = conn.send_json(&serde_json::json!({"type": "subscribed", "symbol": symbol}));
                }
                Some(Request::Unsubscribe(symbol)) => {
                    conn.leave(&symbol);
                }
                _ => {
                    let _ = conn.send_json(&serde_json::json!({
                        "type": "error",
                        "message": r#"send {"subscribe":"SYMBOL"} or {"unsubscribe":"SYMBOL"} (1 to 10 letters)"#,
                    }));
                }
            }
        })
        .build();
    tokio::spawn(ticker(hub.clone(), tick));

    let app = hub.router().route("/", get(|| async { Html(PAGE) }));
    let server = Server::start_with_router(addr, hub, app).await?;
    println!(
        "live: open http://{0}/ (WebSocket at ws://{0}/ws, a tick every {1:?}); Ctrl-C to stop",
        server.local_addr(),
        tick
    );
    tokio::signal::ctrl_c().await?;
    server.stop(Duration::from_secs(5)).await;
    Ok(())
}

fn valid_symbol(symbol: &str) -> bool {
    (1..=10).contains(&symbol.len()) && symbol.bytes().all(|b| b.is_ascii_alphabetic())
}

/// The background task: any task holding a clone of the hub can push to its rooms.
async fn ticker(hub: Hub, every: Duration) {
    let mut interval = tokio::time::interval(every);
    let mut prices: HashMap<String, f64> = HashMap::new();
    let mut random = Random::seeded();
    let mut seq = 0_u64;
    loop {
        interval.tick().await;
        seq += 1;
        let rooms = hub.rooms();
        prices.retain(|symbol, _| rooms.contains(symbol));
        for symbol in rooms {
            let price = prices.entry(symbol.clone()).or_insert(100.0);
            // A random walk of at most ±2% a tick.
            *price = (*price * (1.0 + (random.unit() - 0.5) * 0.04)).max(0.01);
            let tick = serde_json::json!({
                "type": "tick",
                "symbol": symbol,
                "price": (*price * 100.0).round() / 100.0,
                "seq": seq,
            });
            if let Ok(message) = Message::json(&tick) {
                hub.broadcast_to_room(&symbol, message);
            }
        }
    }
}

/// xorshift64: plenty for made-up prices, and no dependency.
struct Random(u64);

impl Random {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Self(u64::from(nanos) | 1)
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1_u64 << 53) as f64
    }
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wshub live data</title>
<style>
  body { font: 16px system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; background: #0f1420; color: #e6e9f0; }
  h1 { font-size: 1.4rem; } #state { color: #8a93a8; font-size: .85rem; }
  form { display: flex; gap: .5rem; margin: 1rem 0; }
  input { font: inherit; padding: .4rem .6rem; border-radius: .4rem; border: 1px solid #334; background: #182030; color: inherit; text-transform: uppercase; }
  button { font: inherit; padding: .4rem 1rem; border: 0; border-radius: .4rem; background: #2f7de1; color: #fff; cursor: pointer; }
  #cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(15rem, 1fr)); gap: 1rem; }
  .card { background: #182030; border-radius: .7rem; padding: 1rem; position: relative; }
  .card h2 { margin: 0; font-size: 1rem; color: #8a93a8; }
  .card .price { font-size: 2rem; font-variant-numeric: tabular-nums; margin: .3rem 0; transition: color .6s; }
  .up { color: #35d07f; } .down { color: #ff5c6c; }
  .card svg { width: 100%; height: 3rem; }
  .card .x { position: absolute; top: .5rem; right: .7rem; cursor: pointer; color: #8a93a8; background: none; padding: 0; }
</style>
</head>
<body>
<h1>📈 wshub live data</h1>
<span id="state">connecting…</span>
<form id="add"><input id="symbol" placeholder="symbol, e.g. BTC" maxlength="10"><button>Subscribe</button></form>
<div id="cards"></div>
<script>
  const $ = (id) => document.getElementById(id);
  const cards = {};
  let ws;
  const wanted = new Set(JSON.parse(localStorage.getItem("wshub-live") || '["BTC","ETH","ACME"]'));
  function save() { localStorage.setItem("wshub-live", JSON.stringify([...wanted])); }
  function card(symbol) {
    if (cards[symbol]) return cards[symbol];
    const el = document.createElement("div");
    el.className = "card";
    el.innerHTML = '<button class="x" title="unsubscribe">✕</button><h2></h2><div class="price">…</div><svg viewBox="0 0 100 30" preserveAspectRatio="none"><polyline fill="none" stroke="#2f7de1" stroke-width="1.5"/></svg>';
    el.querySelector("h2").textContent = symbol;
    el.querySelector(".x").onclick = () => {
      wanted.delete(symbol); save(); el.remove(); delete cards[symbol];
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ unsubscribe: symbol }));
    };
    $("cards").appendChild(el);
    return (cards[symbol] = { el, history: [] });
  }
  function draw(c) {
    const h = c.history, min = Math.min(...h), max = Math.max(...h), span = max - min || 1;
    const points = h.map((p, i) => (i * 100 / Math.max(h.length - 1, 1)).toFixed(1) + "," + (28 - (p - min) / span * 26).toFixed(1));
    c.el.querySelector("polyline").setAttribute("points", points.join(" "));
  }
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + "/ws");
    ws.onopen = () => { $("state").textContent = "connected"; wanted.forEach((s) => { card(s); ws.send(JSON.stringify({ subscribe: s })); }); };
    ws.onclose = () => { $("state").textContent = "disconnected; reconnecting…"; setTimeout(connect, 1000); };
    ws.onmessage = (event) => {
      const m = JSON.parse(event.data);
      if (m.type !== "tick" || !wanted.has(m.symbol)) return;
      const c = card(m.symbol), price = c.el.querySelector(".price");
      const last = c.history[c.history.length - 1];
      price.textContent = m.price.toFixed(2);
      price.className = "price " + (last === undefined ? "" : m.price >= last ? "up" : "down");
      c.history.push(m.price); if (c.history.length > 40) c.history.shift();
      draw(c);
    };
  }
  $("add").onsubmit = (event) => {
    event.preventDefault();
    const symbol = $("symbol").value.trim().toUpperCase();
    if (!/^[A-Z]{1,10}$/.test(symbol) || wanted.has(symbol)) return;
    wanted.add(symbol); save(); card(symbol); $("symbol").value = "";
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ subscribe: symbol }));
  };
  connect();
</script>
</body>
</html>
"##;
