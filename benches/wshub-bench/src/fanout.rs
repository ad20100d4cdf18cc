//! The `fanout` scenario: N clients connect, client 0 sends M numbered, timestamped messages,
//! every client (the sender too) counts what it receives.
//!
//! Each message is the text `"<seq> <nanos> "` padded with `x` to the requested size, where
//! `nanos` is the send time measured from one `Instant` shared by the sender and every
//! receiver in this process, so latency needs no clock synchronisation. Frames are split on
//! `\n` because some hubs (gorilla's chat example) join queued messages with newlines into
//! one frame.
//!
//! Before the measured messages, the sender repeats a warm-up message (`"w <k>"`) until every
//! client has received one: a server may answer the upgrade before it has registered the
//! connection in its hub, and a message sent in between would look lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_websockets::Message;

use crate::Run;
use crate::dial::Socket;
use crate::histogram::Histogram;
use crate::report::Report;
use crate::server_process::{ServerProcess, cpu_between};

/// Options of the `fanout` scenario.
#[derive(Debug, Args)]
pub(crate) struct FanoutArgs {
    /// Connected clients, the sender included.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Measured messages sent by client 0.
    #[arg(long, default_value_t = 50)]
    messages: u64,
    /// Message size in bytes (the header is never cut: at least ~25 bytes).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages per second from the sender; 0 sends as fast as the server accepts them.
    /// With a rate, latency is measured from each message's scheduled send time, so a
    /// sender held back by the server does not hide the delay.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Give up warming up after this many seconds.
    #[arg(long, default_value_t = 20.0)]
    warmup_timeout: f64,
    /// Stop waiting for deliveries once none has arrived for this many seconds.
    #[arg(long, default_value_t = 5.0)]
    drain_idle: f64,
    /// Speak wshub's JSON protocol through this room instead of raw text: every client
    /// subscribes to it, the sender publishes to it, and receivers read `data` out of the
    /// `message` frames. For the standalone server (start it with `--presence-events false
    /// --rate-limit off`, or joins and the rate limit measure something else).
    #[arg(long)]
    room: Option<String>,
    /// Spread the clients round-robin over these URLs (comma-separated; the nodes of a
    /// cluster) instead of `--url`: client `i` connects to URL `i % n`, and client 0, on the
    /// first URL, is the sender.
    #[arg(long, value_delimiter = ',')]
    urls: Vec<String>,
}

/// The frame that sends `text`: as is, or as a publish to the room.
fn outgoing(room: Option<&str>, text: String) -> Message {
    match room {
        None => Message::text(text),
        Some(room) => Message::text(
            serde_json::json!({"type": "publish", "room": room, "data": text}).to_string(),
        ),
    }
}

/// The measured text in a received frame: the frame itself for raw hubs, the `data` string
/// of a `message` frame for the JSON protocol (`None` for its other frames).
fn payload_of(text: &str) -> Option<&str> {
    if !text.starts_with('{') {
        return Some(text);
    }
    if !text.contains(r#""type":"message""#) {
        return None;
    }
    let start = text.find(r#""data":""#)? + r#""data":""#.len();
    let end = start + text[start..].find('"')?;
    Some(&text[start..end])
}

/// Counters shared by every receiver.
#[derive(Debug)]
struct Tally {
    /// Measured messages expected by each client.
    messages: u64,
    /// Send-to-receive time of each measured delivery.
    latency: Histogram,
    /// Measured deliveries over all clients.
    received: AtomicU64,
    /// Text frames that carried at least one measured message (a hub may join several).
    frames: AtomicU64,
    /// Deliveries whose sequence number was below one already seen by that client.
    out_of_order: AtomicU64,
    /// Texts that were neither warm-up nor measured messages.
    foreign: AtomicU64,
    /// Clients that have received a warm-up message.
    warmed: AtomicUsize,
    /// Clients that have received all measured messages.
    complete: AtomicUsize,
    /// Clients whose connection ended (close, error or EOF) before the run stopped it.
    closed: AtomicUsize,
    /// Nanoseconds after the origin of the latest measured delivery.
    last_receive_nanos: AtomicU64,
}

/// Runs the scenario.
pub(crate) async fn run(run: &Run, args: &FanoutArgs, mut report: Report) -> Result<Report> {
    if args.clients == 0 || args.messages == 0 {
        bail!("--clients and --messages must be positive");
    }
    let origin = Instant::now();
    let tally = Arc::new(Tally {
        messages: args.messages,
        latency: Histogram::new(),
        received: AtomicU64::new(0),
        frames: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        warmed: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        last_receive_nanos: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut receivers = JoinSet::new();
    let mut sender = None;

    let spread;
    let dialer = if args.urls.is_empty() {
        &run.dialer
    } else {
        let urls: Vec<&str> = args.urls.iter().map(String::as_str).collect();
        spread = crate::dial::Dialer::spread(
            &urls,
            run.common.source_ips,
            Duration::from_secs_f64(run.common.handshake_timeout),
        )?;
        report.put_quiet("urls", args.urls.join(","));
        &spread
    };
    let spread_over = dialer.targets();
    let dial = dialer
        .dial_many(
            args.clients,
            run.common.connect_concurrency,
            run.deadline,
            |index, mut socket: Socket| {
                let (tally, stop) = (tally.clone(), stop_rx.clone());
                let subscribe = args.room.as_ref().map(|room| {
                    Message::text(
                        serde_json::json!({"type": "subscribe", "room": room}).to_string(),
                    )
                });
                if sender.is_none() && (spread_over == 1 || index == 0) {
                    // The first client to open (whichever index) sends; it receives too.
                    // Spread over several URLs, client 0 does, on the first URL.
                    let (sink, stream) = socket.split();
                    sender = Some((sink, subscribe));
                    receivers.spawn(receive(stream, tally, origin, stop));
                } else {
                    let _ = index;
                    receivers.spawn(async move {
                        if let Some(subscribe) = subscribe
                            && socket.send(subscribe).await.is_err()
                        {
                            tally.closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        receive(socket, tally, origin, stop).await;
                    });
                }
            },
        )
        .await;
    report.put_dial(args.clients, &dial);
    let Some((mut sender, subscribe)) = sender else {
        bail!("no client connected (spread over several URLs: client 0 did not)");
    };
    if let Some(subscribe) = subscribe {
        sender.send(subscribe).await.context("subscribing")?;
    }
    let room = args.room.as_deref();
    let clients = dial.connected;
    report.put(
        "messages",
        args.messages,
        "messages",
        format!(
            "{} × {} B, rate {}",
            args.messages,
            args.size,
            rate_text(args.rate)
        ),
    );
    report.put_quiet("size_bytes", args.size);
    report.put_quiet("rate", args.rate);
    report.put_quiet("clients", clients);

    // Warm up: until every connected client has received a warm-up message.
    let warm_deadline =
        (Instant::now() + Duration::from_secs_f64(args.warmup_timeout)).min(run.deadline);
    let mut warmups = 0u64;
    let warm_start = Instant::now();
    while tally.warmed.load(Ordering::Relaxed) + tally.closed.load(Ordering::Relaxed) < clients {
        if Instant::now() >= warm_deadline {
            break;
        }
        sender
            .send(outgoing(room, pad(format!("w {warmups} "), args.size)))
            .await?;
        warmups += 1;
        let resend_at = Instant::now() + Duration::from_millis(250);
        while Instant::now() < resend_at.min(warm_deadline)
            && tally.warmed.load(Ordering::Relaxed) + tally.closed.load(Ordering::Relaxed) < clients
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let warmed = tally.warmed.load(Ordering::Relaxed);
    report.put(
        "warmed",
        warmed,
        "warmed up",
        format!(
            "{warmed} of {clients} clients, {warmups} warm-up messages, {:.3} s",
            warm_start.elapsed().as_secs_f64()
        ),
    );
    // Let stray warm-up messages drain before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let server_before = run.server.map(|s| s.sample()).transpose()?;
    let own_before = ServerProcess::current().sample()?;
    let first_send = origin.elapsed();
    let send_start = Instant::now();
    for seq in 0..args.messages {
        if Instant::now() >= run.deadline {
            break;
        }
        let stamp = if args.rate > 0.0 {
            let scheduled = first_send + Duration::from_secs_f64(seq as f64 / args.rate);
            tokio::time::sleep_until((origin + scheduled).into()).await;
            scheduled
        } else {
            origin.elapsed()
        };
        let text = pad(format!("{seq} {} ", stamp.as_nanos()), args.size);
        sender.send(outgoing(room, text)).await.context("sending")?;
    }
    let send_time = send_start.elapsed();

    // Drain: until every client has everything, or nothing has arrived for a while.
    let drain_idle = Duration::from_secs_f64(args.drain_idle);
    let mut last_count = tally.received.load(Ordering::Relaxed);
    let mut last_progress = Instant::now();
    loop {
        let done = tally.complete.load(Ordering::Relaxed) + tally.closed.load(Ordering::Relaxed);
        if done >= clients
            || Instant::now() >= run.deadline
            || last_progress.elapsed() >= drain_idle
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let count = tally.received.load(Ordering::Relaxed);
        if count != last_count {
            last_count = count;
            last_progress = Instant::now();
        }
    }
    let server_after = run.server.map(|s| s.sample()).transpose()?;
    let own_cpu = cpu_between(&own_before, &ServerProcess::current().sample()?);
    let _ = stop_tx.send(true);
    let closed_before_stop = tally.closed.load(Ordering::Relaxed);

    let expected = clients as u64 * args.messages;
    let received = tally.received.load(Ordering::Relaxed);
    let last = Duration::from_nanos(tally.last_receive_nanos.load(Ordering::Relaxed));
    let span = last.saturating_sub(first_send);
    let rate = if span.is_zero() {
        0.0
    } else {
        received as f64 / span.as_secs_f64()
    };
    report.put(
        "send_s",
        send_time.as_secs_f64(),
        "send time",
        format!(
            "{:.3} s ({:.0} msg/s)",
            send_time.as_secs_f64(),
            args.messages as f64 / send_time.as_secs_f64()
        ),
    );
    report.put(
        "expected",
        expected,
        "expected deliveries",
        expected.to_string(),
    );
    report.put("received", received, "received", received.to_string());
    let frames = tally.frames.load(Ordering::Relaxed);
    let per_frame = if frames == 0 {
        0.0
    } else {
        received as f64 / frames as f64
    };
    report.put(
        "frames",
        frames,
        "frames received",
        format!("{frames} ({per_frame:.2} messages per frame)"),
    );
    let lost = expected.saturating_sub(received);
    report.put("lost", lost, "lost", lost.to_string());
    let ooo = tally.out_of_order.load(Ordering::Relaxed);
    report.put("out_of_order", ooo, "out of order", ooo.to_string());
    let complete = tally.complete.load(Ordering::Relaxed);
    report.put(
        "complete_clients",
        complete,
        "clients with all messages",
        format!("{complete} of {clients}"),
    );
    report.put(
        "closed",
        closed_before_stop,
        "connections closed by server",
        closed_before_stop.to_string(),
    );
    let foreign = tally.foreign.load(Ordering::Relaxed);
    report.put_quiet("foreign", foreign);
    report.put(
        "duration_s",
        span.as_secs_f64(),
        "first send to last delivery",
        format!("{:.3} s", span.as_secs_f64()),
    );
    report.put(
        "deliveries_per_s",
        rate,
        "deliveries per second",
        format!("{rate:.0}"),
    );
    report.put_latencies("latency", "latency", &tally.latency);
    // Near `duration_s`, the load generator's core was the limit, not the server.
    report.put(
        "loadgen_cpu_s",
        own_cpu.as_secs_f64(),
        "load generator CPU (send+drain)",
        format!("{:.3} s", own_cpu.as_secs_f64()),
    );
    if let (Some(before), Some(after)) = (server_before, server_after) {
        let cpu = cpu_between(&before, &after).as_secs_f64();
        let per = if received == 0 {
            0.0
        } else {
            cpu * 1e6 / received as f64
        };
        report.put(
            "server_cpu_s",
            cpu,
            "server CPU (send+drain)",
            format!("{cpu:.2} s"),
        );
        report.put(
            "server_cpu_us_per_delivery",
            per,
            "server CPU per delivery",
            format!("{per:.3} µs"),
        );
        report.put(
            "server_rss_bytes",
            after.rss_bytes,
            "server RSS",
            format!("{:.1} MiB", after.rss_bytes as f64 / 1048576.0),
        );
    }

    // Receivers stop at the signal; bounded wait, then the runtime drops the rest.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while receivers.join_next().await.is_some() {}
    })
    .await;
    Ok(report)
}

/// Reads one client's messages until the stop signal or the end of the connection.
async fn receive<S>(
    mut stream: S,
    tally: Arc<Tally>,
    origin: Instant,
    mut stop: watch::Receiver<bool>,
) where
    S: Stream<Item = Result<Message, tokio_websockets::Error>> + Unpin,
{
    let mut next_seq = 0u64;
    let mut got = 0u64;
    let mut warmed = false;
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.changed() => return,
            message = stream.next() => message,
        };
        let Some(Ok(message)) = message else {
            tally.closed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(text) = message.as_text() else {
            if message.is_close() {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            continue;
        };
        let Some(text) = payload_of(text) else {
            continue;
        };
        let mut measured_in_frame = false;
        for line in text.split('\n') {
            let mut fields = line.split_ascii_whitespace();
            match (fields.next(), fields.next()) {
                (Some("w"), _) => {
                    if !warmed {
                        warmed = true;
                        tally.warmed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (Some(seq), Some(sent)) => {
                    let (Ok(seq), Ok(sent)) = (seq.parse::<u64>(), sent.parse::<u64>()) else {
                        tally.foreign.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let now = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    tally.latency.record_nanos(now.saturating_sub(sent));
                    tally.last_receive_nanos.fetch_max(now, Ordering::Relaxed);
                    tally.received.fetch_add(1, Ordering::Relaxed);
                    if seq < next_seq {
                        tally.out_of_order.fetch_add(1, Ordering::Relaxed);
                    } else {
                        next_seq = seq + 1;
                    }
                    got += 1;
                    measured_in_frame = true;
                    if got == tally.messages {
                        tally.complete.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {
                    tally.foreign.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if measured_in_frame {
            tally.frames.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `header` padded with `x` to `size` bytes (never cut).
fn pad(mut header: String, size: usize) -> String {
    if header.len() < size {
        header.extend(std::iter::repeat_n('x', size - header.len()));
    }
    header
}

fn rate_text(rate: f64) -> String {
    if rate > 0.0 {
        format!("{rate} msg/s")
    } else {
        "as fast as possible".into()
    }
}

#[cfg(test)]
mod tests {
    use super::{pad, payload_of};

    #[test]
    fn payloads_come_out_of_protocol_frames() {
        assert_eq!(payload_of("3 99 xx"), Some("3 99 xx"));
        let frame =
            r#"{"type":"message","room":"b","data":"3 99 xx","from":"a-1","offset":4,"epoch":"e"}"#;
        assert_eq!(payload_of(frame), Some("3 99 xx"));
        assert_eq!(payload_of(r#"{"type":"welcome","client":"a-1"}"#), None);
    }

    #[test]
    fn pads_to_size_without_cutting() {
        assert_eq!(pad("1 2 ".into(), 8), "1 2 xxxx");
        assert_eq!(pad("12345 678 ".into(), 4), "12345 678 ");
    }
}
