//! The server behind the reverse proxies users put in front of it, nginx and HAProxy, each
//! run from the configuration in `deploy/` that the documentation shows: the upgrade goes
//! through, messages flow both ways, a client reconnecting through the proxy recovers
//! what it missed, and the HTTP API answers. The proxies are Debian's `nginx` and
//! `haproxy`; without them the test says SKIPPED (a failure with
//! `WSHUB_REQUIRE_BACKPLANES` set, as in CI, which installs them).

mod support;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use support::*;
use wshub_server::state::ServerOptions;

const API_KEY: &str = "a-key-of-sixteen-bytes-or-more";

/// A proxy process of the test's own, on a free port, in a fresh directory.
struct Proxy {
    addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Proxy {
    /// Starts `program` with `deploy/<config>` pointed at `node`; None when the program is
    /// not installed.
    fn start(program: &str, config: &str, node: SocketAddr) -> Option<Proxy> {
        let exec = [
            format!("/usr/sbin/{program}"),
            format!("/usr/bin/{program}"),
        ]
        .into_iter()
        .find(|path| Path::new(path).exists())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = std::env::temp_dir().join(format!("wshub-test-{program}-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).expect("proxy directory");
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy")
            .join(config);
        let text = std::fs::read_to_string(&shipped).expect("the shipped configuration");
        assert!(
            text.contains("127.0.0.1:8000") && text.contains("127.0.0.1:8080"),
            "{config} no longer names the addresses this test replaces"
        );
        let text = text
            .replace("127.0.0.1:8000", &addr.to_string())
            .replace("127.0.0.1:8080", &node.to_string());
        let config_path = dir.join(config);
        std::fs::write(&config_path, text).expect("write the configuration");
        let mut command = Command::new(exec);
        if program == "nginx" {
            command
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&config_path)
                .args(["-g", "daemon off; master_process off;"]);
        } else {
            command.arg("-f").arg(&config_path).arg("-db");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the proxy");
        let mut proxy = Proxy { addr, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("{program} exited with {status} (its messages are above)");
            }
            assert!(
                Instant::now() < deadline,
                "{program} does not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(proxy)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn behind(program: &str, config: &str) {
    let options = ServerOptions {
        api_key: Some(API_KEY.to_owned()),
        ..ServerOptions::default()
    };
    let server = start(options).await;
    let node = server.local_addr();
    let Some(proxy) = Proxy::start(program, config, node) else {
        skipped(&format!(
            "\n*** SKIPPED: no {program} to start (apt-get install {program}) ***\n"
        ));
        stop(server).await;
        return;
    };
    let via = proxy.addr;

    // A health-checking proxy routes once its first check passed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http(via, "GET", "/healthz", &[], None).await;
        if status == 200 {
            assert!(body.starts_with("ok"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{program}: /healthz answers {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The upgrade through the proxy, and messages both ways.
    let (mut subscriber, _) = connect(via).await;
    let reply = request(
        &mut subscriber,
        json!({"type":"subscribe","room":"proxied","id":1}),
    )
    .await;
    assert_eq!(reply["type"], "ok", "{program}: {reply}");
    let (mut direct, _) = connect(node).await;
    let reply = request(
        &mut direct,
        json!({"type":"publish","room":"proxied","id":1,"data":{"n":1}}),
    )
    .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    let message = next(&mut subscriber).await;
    assert_eq!(message["data"], json!({"n":1}), "{program}: {message}");
    let position = (message["epoch"].clone(), message["offset"].clone());

    // Away, then back through the proxy: what was published meanwhile is recovered.
    drop(subscriber);
    for n in 2..=4 {
        let (status, body) = api(
            via,
            API_KEY,
            "/api/publish",
            json!({"room":"proxied","data":{"n":n}}),
        )
        .await;
        assert_eq!(status, 200, "{program}: the API through the proxy: {body}");
    }
    let (mut back, _) = connect(via).await;
    let reply = request(
        &mut back,
        json!({"type":"subscribe","room":"proxied","id":2,
               "since":{"epoch":position.0,"offset":position.1}}),
    )
    .await;
    assert_eq!(reply["type"], "ok", "{program}: {reply}");
    assert_eq!(reply["recovered"], true, "{program}: {reply}");
    for n in 2..=4 {
        let message = next(&mut back).await;
        assert_eq!(message["data"], json!({"n":n}), "{program}: {message}");
    }
    nothing_pending(&mut back).await;
    drop(proxy);
    stop(server).await;
}

#[tokio::test]
async fn behind_nginx() {
    behind("nginx", "nginx.conf").await;
}

#[tokio::test]
async fn behind_haproxy() {
    behind("haproxy", "haproxy.cfg").await;
}
