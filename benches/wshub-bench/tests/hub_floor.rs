//! The load generator against `hub-floor` over real sockets: a small fan-out arrives whole.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the server when the test ends, passed or not.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fanout_through_hub_floor_loses_nothing() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_hub-floor"))
            .arg(&addr)
            .stderr(Stdio::null())
            .spawn()
            .expect("start hub-floor"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "hub-floor did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let output = Command::new(env!("CARGO_BIN_EXE_wshub-bench"))
        .args([
            "--url",
            &format!("ws://{addr}/ws"),
            "--deadline",
            "30",
            "--json",
        ])
        .args([
            "fanout",
            "--clients",
            "20",
            "--messages",
            "30",
            "--size",
            "200",
        ])
        .output()
        .expect("run wshub-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wshub-bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = stdout
        .lines()
        .rfind(|line| line.starts_with('{'))
        .expect("a JSON result");
    let result: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(result["out_of_order"], 0, "{result}");
    assert_eq!(result["complete_clients"], 20, "{result}");
    assert_eq!(result["received"], 20 * 30, "{result}");
}
