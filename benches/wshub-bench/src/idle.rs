//! The `idle` scenario: hold N connections open and read what they cost the server.
//!
//! RSS per connection is the growth of the server's `VmRSS` from before the first connect to
//! the end of the settle time, divided by the connections open; the CPU the server spends while
//! they sit idle is its heartbeat cost. Every client keeps reading (answering pings), so a
//! close during the hold is the server's doing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Run;
use crate::dial::Socket;
use crate::report::Report;

/// Options of the `idle` scenario.
#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    /// Connections to hold.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Seconds to wait after the last connect before reading RSS.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Seconds to hold the connections after settling, watching for closes.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// After connecting, each client sends one message compressed with permessage-deflate
    /// (with `--extensions permessage-deflate`), so that the server makes the connection's
    /// decompressor: what compression costs a connection that uses it. The message is short
    /// enough (under 128 bytes) that an echo server's reply goes uncompressed.
    #[arg(long)]
    send_compressed: bool,
}

/// A masked text frame with RSV1 holding ~100 bytes of JSON compressed (no context).
fn compressed_frame() -> Vec<u8> {
    let text = br#"{"type":"publish","room":"lobby","data":{"text":"hello hello hello hello hello hello hello"}}"#;
    let mut compressor = flate2::Compress::new(flate2::Compression::default(), false);
    let mut payload = wshub_ws::deflate_message(&mut compressor, text).expect("compresses");
    let mask = [0x12, 0x34, 0x56, 0x78];
    let (header, header_len) =
        wshub_ws::encode_header(wshub_ws::OpCode::Text, true, payload.len(), Some(mask));
    wshub_ws::apply_mask(&mut payload, mask, 0);
    [&header[..header_len], &payload[..]].concat()
}

/// Runs the scenario.
pub(crate) async fn run(run: &Run, args: &IdleArgs, mut report: Report) -> Result<Report> {
    let before = run.server.map(|s| s.sample()).transpose()?;
    let closed = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut holders = JoinSet::new();
    // Compressed once; every client writes the same bytes.
    let first: Option<Arc<[u8]>> = args.send_compressed.then(|| compressed_frame().into());
    let dial = run
        .dialer
        .dial_many(
            args.clients,
            run.common.connect_concurrency,
            run.deadline,
            |_, mut socket: Socket| {
                let first = first.clone();
                let (closed, stop_rx) = (closed.clone(), stop_rx.clone());
                holders.spawn(async move {
                    if let Some(frame) = first {
                        // Straight onto the socket: the library has nothing buffered to
                        // write after the handshake, and knows no RSV1.
                        use tokio::io::AsyncWriteExt;
                        if socket.get_mut().write_all(&frame).await.is_err() {
                            closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    hold(socket, closed, stop_rx).await;
                });
            },
        )
        .await;
    report.put_dial(args.clients, &dial);

    let settle_end = (Instant::now() + Duration::from_secs_f64(args.settle)).min(run.deadline);
    tokio::time::sleep_until(settle_end.into()).await;
    let settled = run.server.map(|s| s.sample()).transpose()?;
    let hold_end = (Instant::now() + Duration::from_secs_f64(args.hold)).min(run.deadline);
    let hold_start = Instant::now();
    tokio::time::sleep_until(hold_end.into()).await;
    let held = hold_start.elapsed();
    let after = run.server.map(|s| s.sample()).transpose()?;
    let closed_count = closed.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);

    report.put(
        "clients",
        dial.connected,
        "held",
        format!(
            "{} connections for {:.1} s",
            dial.connected,
            held.as_secs_f64()
        ),
    );
    report.put(
        "closed",
        closed_count,
        "closed during the run",
        closed_count.to_string(),
    );
    if let (Some(before), Some(settled), Some(after)) = (before, settled, after) {
        let growth = settled.rss_bytes.saturating_sub(before.rss_bytes);
        let per = if dial.connected == 0 {
            0.0
        } else {
            growth as f64 / dial.connected as f64
        };
        report.put(
            "server_rss_before_bytes",
            before.rss_bytes,
            "server RSS before",
            mib(before.rss_bytes),
        );
        report.put(
            "server_rss_bytes",
            settled.rss_bytes,
            "server RSS with connections",
            mib(settled.rss_bytes),
        );
        report.put(
            "server_rss_after_hold_bytes",
            after.rss_bytes,
            "server RSS after hold",
            mib(after.rss_bytes),
        );
        report.put(
            "rss_per_conn_bytes",
            per,
            "server RSS per connection",
            format!("{per:.0} B ({:.2} KiB)", per / 1024.0),
        );
        let connect_cpu = crate::server_process::cpu_between(&before, &settled).as_secs_f64();
        report.put(
            "server_connect_cpu_s",
            connect_cpu,
            "server CPU connect+settle",
            format!("{connect_cpu:.2} s"),
        );
        let idle_cpu = crate::server_process::cpu_between(&settled, &after).as_secs_f64();
        report.put(
            "server_idle_cpu_s",
            idle_cpu,
            "server CPU while idle",
            format!("{idle_cpu:.2} s"),
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while holders.join_next().await.is_some() {}
    })
    .await;
    Ok(report)
}

/// Keeps one connection open, reading (so pings get answered) until told to stop.
async fn hold(mut socket: Socket, closed: Arc<AtomicUsize>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            message = socket.next() => match message {
                Some(Ok(message)) if !message.is_close() => {}
                _ => {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}
