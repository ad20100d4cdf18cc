//! The `soak` scenario, for the `wshub` server's protocol: `--clients` workers, each a loop
//! of sessions for `--duration` seconds. A session connects, reads the welcome, subscribes
//! to one of `--rooms` rooms, publishes `--publishes` messages spread over a random
//! lifetime of up to `--session-ms` while reading whatever the room delivers, then leaves:
//! two times in three with a close handshake, otherwise by dropping the TCP connection
//! (as a crashed client or a lost network would). Then the worker connects again.
//!
//! Churn is the point: connections, subscriptions, presence entries and queues are made and
//! torn down thousands of times, so whatever one of them leaks shows up in the server's
//! memory, file descriptors and tasks at the end. `scripts/soak.sh` reads those before and
//! after; this scenario reports the traffic and any failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio_websockets::Message;

use crate::Run;
use crate::dial::Socket;
use crate::report::Report;

/// Options of the `soak` scenario.
#[derive(Debug, Args)]
pub(crate) struct SoakArgs {
    /// Workers, so clients connected at once (each reconnects after it leaves).
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// How long the churn lasts, in seconds.
    #[arg(long, default_value_t = 120.0)]
    duration: f64,
    /// Rooms the sessions pick from.
    #[arg(long, default_value_t = 50)]
    rooms: usize,
    /// Messages each session publishes.
    #[arg(long, default_value_t = 3)]
    publishes: usize,
    /// Longest a session lasts, in milliseconds; each lasts a random time up to this.
    #[arg(long, default_value_t = 3000)]
    session_ms: u64,
}

/// Counters shared by every worker.
#[derive(Debug, Default)]
struct Tally {
    sessions: AtomicU64,
    graceful_leaves: AtomicU64,
    abrupt_leaves: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    failed_sessions: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, error: &anyhow::Error) {
        self.failed_sessions.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| format!("{error:#}"));
    }
}

/// A small deterministic generator (xorshift64*), one per worker: sessions differ, runs
/// repeat.
#[derive(Debug)]
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Limit for any single read, write or close within a session.
const STEP: Duration = Duration::from_secs(10);

/// Runs the scenario.
pub(crate) async fn run(run: &Run, args: &SoakArgs, mut report: Report) -> Result<Report> {
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let end = (start + Duration::from_secs_f64(args.duration)).min(run.deadline);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.clients {
        let dialer = run.dialer.clone();
        let tally = Arc::clone(&tally);
        let rooms = args.rooms.max(1) as u64;
        let publishes = args.publishes;
        let session_ms = args.session_ms.max(10);
        workers.spawn(async move {
            let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1));
            // Stagger the first connects over the first second.
            tokio::time::sleep(Duration::from_millis(dice.below(1000))).await;
            let mut session = 0_usize;
            while Instant::now() < end {
                let room = format!("soak:{}", dice.below(rooms));
                let lifetime = Duration::from_millis(session_ms / 10 + dice.below(session_ms));
                let abrupt = dice.below(3) == 0;
                let index = worker + session * 7919;
                session += 1;
                let outcome = tokio::time::timeout(
                    lifetime + 3 * STEP,
                    one_session(&dialer, index, &room, publishes, lifetime, abrupt, &tally),
                )
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("session overran its bound")));
                tally.sessions.fetch_add(1, Ordering::Relaxed);
                if let Err(error) = outcome {
                    tally.fail(&error);
                    // Do not hammer a server that refuses: back off a little.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
    }
    let hard_stop = end + 4 * STEP;
    while !workers.is_empty() {
        let left = hard_stop.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, workers.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                workers.abort_all();
                bail!("{} workers still running past the hard stop", workers.len());
            }
        }
    }
    let elapsed = start.elapsed();

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let sessions = get(&tally.sessions);
    let failed = get(&tally.failed_sessions);
    report.put("clients", args.clients, "workers", args.clients.to_string());
    report.put(
        "sessions",
        sessions,
        "sessions (connect, subscribe, publish, leave)",
        format!(
            "{sessions} in {:.0} s ({:.0}/s)",
            elapsed.as_secs_f64(),
            sessions as f64 / elapsed.as_secs_f64().max(1e-9)
        ),
    );
    report.put(
        "graceful_leaves",
        get(&tally.graceful_leaves),
        "left with a close handshake",
        get(&tally.graceful_leaves).to_string(),
    );
    report.put(
        "abrupt_leaves",
        get(&tally.abrupt_leaves),
        "left by dropping the TCP connection",
        get(&tally.abrupt_leaves).to_string(),
    );
    report.put(
        "published",
        get(&tally.published),
        "publishes acknowledged",
        get(&tally.published).to_string(),
    );
    report.put(
        "delivered",
        get(&tally.delivered),
        "messages delivered to subscribers",
        get(&tally.delivered).to_string(),
    );
    let first_error = tally
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default();
    report.put(
        "failed_sessions",
        failed,
        "failed sessions",
        if failed == 0 {
            "0".to_owned()
        } else {
            format!("{failed} (first: {first_error})")
        },
    );
    Ok(report)
}

async fn one_session(
    dialer: &crate::dial::Dialer,
    index: usize,
    room: &str,
    publishes: usize,
    lifetime: Duration,
    abrupt: bool,
    tally: &Tally,
) -> Result<()> {
    let (mut socket, _) = dialer.dial(index).await?;
    let welcome = next_frame(&mut socket).await?;
    if welcome["type"] != "welcome" {
        bail!("expected the welcome, got {welcome}");
    }
    let subscribe = serde_json::json!({"type":"subscribe","room":room,"id":0});
    send(&mut socket, subscribe.to_string()).await?;
    let started = Instant::now();
    let mut sent = 0_usize;
    let mut acked = 0_usize;
    let mut subscribed = false;
    // Frames read while the session lives, bounded so a flood cannot keep it forever.
    for _ in 0..100_000 {
        let due = started + lifetime.mul_f64((sent + 1) as f64 / (publishes + 1) as f64);
        let publish_now = subscribed && sent < publishes && Instant::now() >= due;
        if publish_now {
            sent += 1;
            let publish = serde_json::json!({
                "type": "publish", "room": room, "id": sent,
                "data": {"from": index, "n": sent},
            });
            send(&mut socket, publish.to_string()).await?;
            continue;
        }
        if started.elapsed() >= lifetime && acked >= sent {
            break;
        }
        let wait = if subscribed && sent < publishes {
            due.saturating_duration_since(Instant::now())
        } else {
            (started + lifetime).saturating_duration_since(Instant::now())
        };
        let frame =
            match tokio::time::timeout(wait.max(Duration::from_millis(1)), socket.next()).await {
                Err(_) => continue,
                Ok(None) => bail!("the server closed the connection"),
                Ok(Some(message)) => message.context("reading")?,
            };
        let Some(text) = frame.as_text() else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(text).context("a JSON frame")?;
        match value["type"].as_str() {
            Some("ok") if value["id"] == 0 => subscribed = true,
            Some("ok") => {
                acked += 1;
                tally.published.fetch_add(1, Ordering::Relaxed);
            }
            Some("message") => {
                tally.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Some("join" | "leave" | "pong") => {}
            _ => bail!("unexpected frame {value}"),
        }
    }
    if abrupt {
        tally.abrupt_leaves.fetch_add(1, Ordering::Relaxed);
        drop(socket);
        return Ok(());
    }
    tokio::time::timeout(STEP, socket.close())
        .await
        .context("close timed out")?
        .context("closing")?;
    // Read until the server's reply ends the stream (it may still deliver room messages).
    for _ in 0..10_000 {
        match tokio::time::timeout(STEP, socket.next()).await {
            Err(_) => bail!("no close reply"),
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(_))) => {}
        }
    }
    tally.graceful_leaves.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn send(socket: &mut Socket, text: String) -> Result<()> {
    tokio::time::timeout(STEP, socket.send(Message::text(text)))
        .await
        .context("send timed out")?
        .context("sending")
}

async fn next_frame(socket: &mut Socket) -> Result<serde_json::Value> {
    for _ in 0..100 {
        let message = tokio::time::timeout(STEP, socket.next())
            .await
            .context("read timed out")?
            .context("the server closed the connection")?
            .context("reading")?;
        if let Some(text) = message.as_text() {
            return serde_json::from_str(text).context("a JSON frame");
        }
    }
    bail!("no text frame in 100 frames")
}
