//! A system monitor: once a second a background task samples the machine's CPU and memory
//! (from `/proc`) and the hub's own connections and messages per second, and pushes the
//! sample to every connected page, which draws it as a live chart.
//!
//! ```text
//! cargo run --example monitor -- 127.0.0.1:8080 [INTERVAL_MS]
//! ```
//!
//! Each sample is `{"type":"sample","cpu_percent":12.5,"memory_used_bytes":…,
//! "memory_total_bytes":…,"connections":3,"messages_per_second":4.0,"at_ms":…}`; a page
//! that connects first gets `{"type":"history","samples":[…]}` with the last minute, so its
//! chart is never empty. CPU and memory are `null` where `/proc` is not available.
//! `INTERVAL_MS` (default 1000) sets the sampling interval.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{http::header, response::Html, routing::get};
use serde::Serialize;
use wshub::{Hub, Message, Server};

/// How many samples a new page gets.
const HISTORY: usize = 60;

/// One reading of the machine and the hub.
#[derive(Clone, Serialize)]
struct Sample {
    cpu_percent: Option<f64>,
    memory_used_bytes: Option<u64>,
    memory_total_bytes: Option<u64>,
    connections: usize,
    messages_per_second: f64,
    at_ms: u64,
}

type History = Arc<Mutex<VecDeque<Sample>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let every = Duration::from_millis(args.next().map_or(Ok(1000), |ms| ms.parse())?);

    let history: History = Arc::default();
    let on_connect_history = Arc::clone(&history);
    let hub = Hub::builder()
        .on_connect(move |conn| {
            let samples: Vec<Sample> = lock(&on_connect_history).iter().cloned().collect();
            let _ = conn.send_json(&serde_json::json!({"type": "history", "samples": samples}));
        })
        .build();
    tokio::spawn(sample_forever(hub.clone(), every, history));

    let app = hub.router().route("/", get(|| async { Html(PAGE) })).route(
        "/websocket.js",
        get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], WEBSOCKET_JS) }),
    );
    let server = Server::start_with_router(addr, hub, app).await?;
    println!(
        "monitor: open http://{0}/ (WebSocket at ws://{0}/ws, a sample every {1:?}); Ctrl-C to stop",
        server.local_addr(),
        every
    );
    tokio::signal::ctrl_c().await?;
    server.stop(Duration::from_secs(5)).await;
    Ok(())
}

fn lock(history: &History) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
    history.lock().unwrap_or_else(|e| e.into_inner())
}

/// The background task: samples, keeps the last minute, and broadcasts each sample.
async fn sample_forever(hub: Hub, every: Duration, history: History) {
    // The first sample comes one interval in: CPU use is a difference of two readings.
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut cpu = CpuTimes::read();
    let mut messages = hub.stats().messages_in + hub.stats().messages_out;
    loop {
        interval.tick().await;
        let now_cpu = CpuTimes::read();
        let stats = hub.stats();
        let now_messages = stats.messages_in + stats.messages_out;
        let (used, total) = memory().unzip();
        let sample = Sample {
            cpu_percent: cpu.zip(now_cpu).and_then(|(a, b)| b.busy_percent_since(&a)),
            memory_used_bytes: used,
            memory_total_bytes: total,
            connections: stats.connections,
            messages_per_second: now_messages.saturating_sub(messages) as f64 / every.as_secs_f64(),
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        (cpu, messages) = (now_cpu, now_messages);
        {
            let mut history = lock(&history);
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(sample.clone());
        }
        let mut frame = serde_json::to_value(&sample).unwrap_or_default();
        frame["type"] = "sample".into();
        if let Ok(message) = Message::json(&frame) {
            hub.broadcast(message);
        }
    }
}

/// The counters of the first line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy)]
struct CpuTimes {
    idle: u64,
    total: u64,
}

impl CpuTimes {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
        let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
        Some(Self {
            idle,
            total: fields.iter().take(8).sum(),
        })
    }

    fn busy_percent_since(&self, before: &Self) -> Option<f64> {
        let total = self.total.checked_sub(before.total)?;
        let idle = self.idle.checked_sub(before.idle)?;
        (total > 0).then(|| 100.0 * (total - idle.min(total)) as f64 / total as f64)
    }
}

/// Used and total memory from `/proc/meminfo` (used = total - available).
fn memory() -> Option<(u64, u64)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some((total.saturating_sub(available), total))
}

/// The browser's plain WebSocket client (`clients/js`), which the page imports: reconnects
/// with backoff and routes JSON by its `type`.
const WEBSOCKET_JS: &str = include_str!("../../../clients/js/src/websocket.js");

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wshub monitor</title>
<style>
  body { font: 15px system-ui, sans-serif; max-width: 56rem; margin: 2rem auto; padding: 0 1rem; background: #11151c; color: #e3e7ee; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; } #state { color: #7d8799; font-size: .85rem; }
  #tiles { display: grid; grid-template-columns: repeat(4, 1fr); gap: .8rem; margin: 1rem 0; }
  .tile { background: #1a202b; border-radius: .7rem; padding: .8rem 1rem; }
  .tile small { color: #7d8799; display: block; } .tile span { font-size: 1.7rem; font-variant-numeric: tabular-nums; }
  canvas { width: 100%; height: 16rem; background: #1a202b; border-radius: .7rem; }
  .legend { display: flex; gap: 1.2rem; font-size: .85rem; margin-top: .4rem; color: #9aa3b2; }
  .legend i { display: inline-block; width: .8rem; height: .8rem; border-radius: .2rem; margin-right: .3rem; vertical-align: -1px; }
</style>
</head>
<body>
<h1>📊 wshub monitor</h1>
<span id="state">connecting…</span>
<div id="tiles">
  <div class="tile"><small>CPU</small><span id="cpu">–</span></div>
  <div class="tile"><small>Memory</small><span id="mem">–</span></div>
  <div class="tile"><small>Connections</small><span id="conns">–</span></div>
  <div class="tile"><small>Messages/s</small><span id="rate">–</span></div>
</div>
<canvas id="chart"></canvas>
<div class="legend"><span><i style="background:#4aa3ff"></i>CPU %</span><span><i style="background:#f5a524"></i>memory %</span><span><i style="background:#3ccf8e"></i>messages/s (scaled to its peak)</span></div>
<script type="module">
  import { WebSocketClient } from "/websocket.js";
  const $ = (id) => document.getElementById(id);
  const samples = [];
  const pct = (s) => s.memory_total_bytes ? 100 * s.memory_used_bytes / s.memory_total_bytes : null;
  function draw() {
    const canvas = $("chart"), dpr = window.devicePixelRatio || 1;
    canvas.width = canvas.clientWidth * dpr; canvas.height = canvas.clientHeight * dpr;
    const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height, pad = 8 * dpr;
    g.clearRect(0, 0, w, h);
    g.strokeStyle = "#2a3242"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) { const y = pad + (h - 2 * pad) * i / 4; g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke(); }
    const peak = Math.max(1, ...samples.map((s) => s.messages_per_second));
    const series = [["#4aa3ff", (s) => s.cpu_percent], ["#f5a524", pct], ["#3ccf8e", (s) => 100 * s.messages_per_second / peak]];
    for (const [color, value] of series) {
      g.strokeStyle = color; g.lineWidth = 2 * dpr; g.beginPath();
      let started = false;
      samples.forEach((s, i) => {
        const v = value(s); if (v == null) return;
        const x = w * i / 59, y = h - pad - (h - 2 * pad) * Math.min(v, 100) / 100;
        started ? g.lineTo(x, y) : g.moveTo(x, y); started = true;
      });
      g.stroke();
    }
    window.drawnSamples = samples.length;
  }
  function add(s) {
    samples.push(s); if (samples.length > 60) samples.shift();
    $("cpu").textContent = s.cpu_percent == null ? "n/a" : s.cpu_percent.toFixed(1) + "%";
    $("mem").textContent = s.memory_total_bytes == null ? "n/a" : (s.memory_used_bytes / 2 ** 30).toFixed(1) + " / " + (s.memory_total_bytes / 2 ** 30).toFixed(1) + " GiB";
    $("conns").textContent = s.connections;
    $("rate").textContent = s.messages_per_second.toFixed(1);
  }
  const client = new WebSocketClient("/ws", { maxReconnectDelay: 5000 });
  client.on("open", () => { $("state").textContent = "live"; });
  client.on("reconnecting", ({ delay }) => { $("state").textContent = "disconnected; reconnecting in " + Math.round(delay / 100) / 10 + " s…"; });
  client.route("history", (m) => { samples.length = 0; m.samples.forEach(add); draw(); });
  client.route("sample", (m) => { add(m); draw(); });
  window.onresize = draw;
  client.connect();
</script>
</body>
</html>
"##;
