//! The real `wshub` binary, started as a process and used as an outside client would.

mod support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
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

#[tokio::test]
async fn the_binary_serves_the_protocol_the_api_and_shuts_down_with_1001() {
    let (mut process, addr) = start_binary(
        &["--history-size", "10", "--presence-events", "false"],
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

    // SIGTERM: a graceful shutdown closes every client with 1001 and exits 0.
    let pid = process.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(close_frame(&mut ws).await.map(|(code, _)| code), Some(1001));
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = process.0.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
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
