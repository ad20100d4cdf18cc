//! The client's examples, run as the programs a user starts (`cargo test` builds them next
//! to this test): `plain` against a hub built with the `wshub` library, `follow` against the
//! wshub server.

mod support;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::json;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStderr, ChildStdout};

/// A running example, killed when dropped.
struct Example {
    child: tokio::process::Child,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn example_path(name: &str) -> PathBuf {
    let mut path: PathBuf = std::env::current_exe().expect("test path");
    path.pop(); // deps
    path.pop(); // profile dir
    path.push("examples");
    path.push(name);
    path
}

/// Starts `target/<profile>/examples/<name> <args>`, with its stdout and stderr as lines.
fn start_example(
    name: &str,
    args: &[&str],
) -> (
    Example,
    Lines<BufReader<ChildStdout>>,
    Lines<BufReader<ChildStderr>>,
) {
    let path = example_path(name);
    let mut command = Command::new(&path);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
    let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    (Example { child }, stdout, stderr)
}

/// The next line of a child's output.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut Lines<R>) -> String {
    within("a line of output", lines.next_line())
        .await
        .expect("read")
        .expect("the example ended early")
}

#[tokio::test]
async fn plain_talks_to_a_hub_built_with_the_library() {
    let hub = wshub::Hub::builder()
        .on_message(|conn, msg| {
            let _ = conn.send(msg);
        })
        .build();
    let server = wshub::Server::start("127.0.0.1:0", hub)
        .await
        .expect("bind");
    let url = format!("ws://{}/ws", server.local_addr());
    let (_plain, mut stdout, mut stderr) =
        start_example("plain", &[&url, "hello", r#"{"type":"ping"}"#]);
    assert_eq!(next_line(&mut stderr).await, "connected");
    assert_eq!(next_line(&mut stdout).await, "hello");
    assert_eq!(next_line(&mut stdout).await, r#"{"type":"ping"}"#);
    // A message from the server side reaches it too.
    server.hub().broadcast(wshub::Message::text("from the hub"));
    assert_eq!(next_line(&mut stdout).await, "from the hub");
    within("stop", server.stop(Duration::from_millis(300))).await;
    // The hub closed with 1001: the example says so and retries a second later.
    for _ in 0..10 {
        if next_line(&mut stderr)
            .await
            .starts_with("reconnecting (attempt 1) in 1s")
        {
            return;
        }
    }
    panic!("no reconnect announced");
}

#[tokio::test]
async fn follow_prints_a_rooms_messages() {
    let server = start().await;
    let url = ws_url(server.local_addr());
    let (_follow, mut stdout, mut stderr) = start_example("follow", &[&url, "news"]);
    for _ in 0..10 {
        if next_line(&mut stderr).await == "following news" {
            break;
        }
    }
    publish(
        server.local_addr(),
        "news",
        json!({"headline": "wshub 1.0"}),
    )
    .await;
    let line = next_line(&mut stdout).await;
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 3, "{line}");
    assert_eq!(fields[0], "1", "the first offset: {line}");
    assert_eq!(fields[2], r#"{"headline":"wshub 1.0"}"#);
    stop(server).await;
}
