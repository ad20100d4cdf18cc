//! The real `wshub` binary, started as a process and used as an outside client would.

mod support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use support::*;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_binary(args: &[&str], env: &[(&str, &str)]) -> (Process, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wshub"));
    command
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("WSHUB_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start wshub");
    let stdout = child.stdout.take().expect("stdout");
    let process = Process(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .split_whitespace()
        .nth(3)
        .and_then(|word| word.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (process, addr)
}

fn sigterm(process: &Process) {
    let pid = process.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
}

/// Waits (bounded) for the process to exit; its status, or `None` if it is still running.
async fn exit_within(process: &mut Process, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = process.0.try_wait().expect("wait") {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

#[tokio::test]
async fn the_binary_serves_the_protocol_the_api_and_drains_with_1012_on_sigterm() {
    let (mut process, addr) = start_binary(
        &[
            "--history-size",
            "10",
            "--presence-events",
            "false",
            "--drain-window",
            "100ms",
        ],
        &[("WSHUB_API_KEY", "from-env")],
    );
    let (mut ws, _) = connect(addr).await;
    let ok = request(&mut ws, json!({"type":"subscribe","room":"ops","id":1})).await;
    assert_eq!(ok["type"], "ok");
    let (status, body) = api(
        addr,
        "from-env",
        "/api/publish",
        json!({"room":"ops","data":"deploy"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(next(&mut ws).await["data"], "deploy");
    assert_eq!(http(addr, "GET", "/healthz", &[], None).await.0, 200);

    // SIGTERM: a drain closes every client with 1012 and exits 0.
    sigterm(&process);
    assert_eq!(close_frame(&mut ws).await.map(|(code, _)| code), Some(1012));
    let status = exit_within(&mut process, Duration::from_secs(5)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
}

/// What one client saw during a drain: whether the last publish reached it, and its close.
struct Seen {
    got_last_words: bool,
    close: Option<(u16, String)>,
    closed_at: Instant,
}

/// Reads `ws` until the server closes it (bounded), noting the publish `last words`.
async fn watch_until_closed(mut ws: Client) -> Seen {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let mut got_last_words = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(WsMessage::Text(text)))) => {
                let frame: serde_json::Value = serde_json::from_str(&text).expect("json");
                if frame["type"] == "message" && frame["data"] == "last words" {
                    got_last_words = true;
                }
            }
            Ok(Some(Ok(WsMessage::Close(frame)))) => {
                let closed_at = Instant::now();
                // Keep polling so the closing handshake completes.
                while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, ws.next()).await {}
                return Seen {
                    got_last_words,
                    close: frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    closed_at,
                };
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => {
                return Seen {
                    got_last_words,
                    close: None,
                    closed_at: Instant::now(),
                };
            }
        }
    }
}

#[tokio::test]
async fn sigterm_drains_the_clients_over_the_window_with_1012_and_exits_0() {
    const CLIENTS: usize = 40;
    let (mut process, addr) = start_binary(&["--drain-window", "2s"], &[]);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (mut ws, _) = connect(addr).await;
        let ok = request(&mut ws, json!({"type":"subscribe","room":"r","id":1})).await;
        assert_eq!(ok["type"], "ok", "{ok}");
        clients.push(ws);
    }
    assert_eq!(
        http(addr, "GET", "/healthz", &[], None).await,
        (200, "ok".to_owned())
    );

    // A publish sent just before SIGTERM, not yet answered, still reaches every subscriber.
    let mut publisher = clients.pop().expect("a client");
    send(
        &mut publisher,
        json!({"type":"publish","room":"r","data":"last words","id":2}),
    )
    .await;
    sigterm(&process);
    let watchers: Vec<_> = clients
        .into_iter()
        .chain([publisher])
        .map(|ws| tokio::spawn(watch_until_closed(ws)))
        .collect();

    // During the window: the load balancer's check fails and no one new gets in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        http(addr, "GET", "/healthz", &[], None).await,
        (503, "draining".to_owned())
    );
    assert_eq!(try_connect(addr, "", &[]).await.err(), Some(503));

    let mut seen = Vec::new();
    for watcher in watchers {
        seen.push(watcher.await.expect("watcher"));
    }
    for (i, client) in seen.iter().enumerate() {
        assert!(client.got_last_words, "client {i} lost the last publish");
        assert_eq!(
            client.close,
            Some((1012, "service restart".to_owned())),
            "client {i}"
        );
    }
    let first = seen.iter().map(|s| s.closed_at).min().expect("closes");
    let last = seen.iter().map(|s| s.closed_at).max().expect("closes");
    assert!(
        last - first >= Duration::from_secs(1),
        "closes not spread over the 2 s window: {:?} between the first and the last",
        last - first
    );
    let status = exit_within(&mut process, Duration::from_secs(6)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    eprintln!(
        "{CLIENTS} closes spread over {:?}; exit {:?} after the first close",
        last - first,
        first.elapsed()
    );
}

#[tokio::test]
async fn post_api_drain_drains_the_binary_which_then_exits_0() {
    let (mut process, addr) = start_binary(&["--drain-window", "300ms"], &[("WSHUB_API_KEY", "k")]);
    let (mut ws, _) = connect(addr).await;
    let (status, body) = api(addr, "k", "/api/drain", json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        close_frame(&mut ws).await,
        Some((1012, "service restart".to_owned()))
    );
    let status = exit_within(&mut process, Duration::from_secs(5)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
}

#[tokio::test]
async fn a_second_sigterm_during_the_drain_stops_at_once() {
    let (mut process, addr) = start_binary(&["--drain-window", "60s"], &[]);
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(connect(addr).await.0);
    }
    sigterm(&process);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        http(addr, "GET", "/healthz", &[], None).await,
        (503, "draining".to_owned())
    );
    sigterm(&process);
    let status = exit_within(&mut process, Duration::from_secs(5)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    // Those the drain had not reached yet were closed by the shutdown, with 1001.
    let mut codes = Vec::new();
    for mut ws in clients {
        codes.push(close_frame(&mut ws).await.map(|(code, _)| code));
    }
    assert!(codes.contains(&Some(1001)), "{codes:?}");
    assert!(
        codes.iter().all(|c| matches!(c, Some(1001 | 1012))),
        "{codes:?}"
    );
}

#[test]
fn a_bad_setting_stops_the_server_with_a_message_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--listen", "127.0.0.1:0"])
        .env("WSHUB_HISTORY_TTL", "forever")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WSHUB_HISTORY_TTL"), "{stderr}");
}

#[test]
fn settings_that_conflict_stop_the_server_with_a_message_naming_both() {
    for (args, env, names) in [
        (
            vec![
                "--redis",
                "redis://127.0.0.1:1",
                "--nats",
                "nats://127.0.0.1:1",
            ],
            vec![],
            ["--redis (from flag --redis)", "--nats (from flag --nats)"],
        ),
        (
            vec!["--backplane", "nats://127.0.0.1:1"],
            vec![("WSHUB_REDIS", "redis://127.0.0.1:1")],
            [
                "--backplane (from flag --backplane)",
                "--redis (from environment variable WSHUB_REDIS)",
            ],
        ),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wshub"));
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(&args)
            .env_remove("WSHUB_CONFIG");
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().expect("run");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for name in names {
            assert!(stderr.contains(name), "{name} in {stderr}");
        }
        assert!(stderr.contains("give only one"), "{stderr}");
    }
}

#[tokio::test]
async fn on_a_loopback_address_browsers_must_use_a_loopback_name() {
    // DNS rebinding: a page at http://evil.example:PORT whose name now resolves to
    // 127.0.0.1 sends Origin and Host naming evil.example, which looks same-origin.
    let (_process, addr) = start_binary(&[], &[]);
    let port = addr.port();
    let rebound = format!("evil.example:{port}");
    let rebound_origin = format!("http://{rebound}");
    assert_eq!(
        try_connect(addr, "", &[("host", &rebound), ("origin", &rebound_origin)])
            .await
            .err(),
        Some(403)
    );
    let local = format!("localhost:{port}");
    let local_origin = format!("http://{local}");
    assert!(
        try_connect(addr, "", &[("host", &local), ("origin", &local_origin)])
            .await
            .is_ok(),
        "the demo page under localhost connects"
    );
    // Named explicitly, the rebound name is allowed (as a real deployment's name would be).
    let (_named, addr) = start_binary(&["--allowed-hosts", "evil.example"], &[]);
    let rebound = format!("evil.example:{}", addr.port());
    let rebound_origin = format!("http://{rebound}");
    assert!(
        try_connect(addr, "", &[("host", &rebound), ("origin", &rebound_origin)])
            .await
            .is_ok()
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_binary_raises_its_open_files_limit_to_the_hard_limit() {
    // Started with a soft limit of 256 (a shell's `ulimit -Sn`), it runs with the hard one.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 256 && exec {} --listen 127.0.0.1:0",
            env!("CARGO_BIN_EXE_wshub")
        ))
        .env_remove("WSHUB_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wshub");
    let stdout = child.stdout.take().expect("stdout");
    let process = Process(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    assert!(line.starts_with("wshub listening"), "{line:?}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", process.0.id()))
        .expect("/proc/PID/limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("the open files line");
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{open_files}");
    assert_ne!(numbers[0], "256", "{open_files}");
    assert_eq!(
        numbers[0], numbers[1],
        "soft limit raised to the hard one: {open_files}"
    );
}
