//! A backplane server of a test's own (`redis-server`, or `nats-server -js`), on a free
//! loopback port, with its store in a fresh temporary directory that outlives restarts:
//! the test kills and restarts it at will. Never the shared one on 6379 or 4222.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::skipped;

/// See the [module docs](self).
pub struct OwnServer {
    /// `redis` or `nats`: the URL scheme and the name of the executable.
    kind: &'static str,
    port: u16,
    /// The server's store (Redis's `dump.rdb`, NATS's JetStream files), removed when the
    /// server is dropped. Redis writes it only when told (`SAVE`): a restart after a
    /// SIGKILL loads the last snapshot, or nothing.
    store: PathBuf,
    child: Option<Child>,
}

impl OwnServer {
    /// None, said loudly, when the server is not installed (a failure instead with
    /// `WSHUB_REQUIRE_BACKPLANES` set, as in CI).
    pub fn start(kind: &'static str) -> Option<OwnServer> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let store = std::env::temp_dir().join(format!("wshub-test-{kind}-{port}"));
        let _ = std::fs::remove_dir_all(&store);
        std::fs::create_dir_all(&store).expect("store directory");
        let mut server = OwnServer {
            kind,
            port,
            store,
            child: None,
        };
        if !server.restart() {
            skipped(&format!(
                "\n*** SKIPPED: no {kind}-server to start (apt-get install {kind}-server) ***\n"
            ));
            return None;
        }
        Some(server)
    }

    /// Starts it (again) on its port; false when it cannot be run.
    pub fn restart(&mut self) -> bool {
        let port = self.port.to_string();
        let mut command = if self.kind == "nats" {
            let exec = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
                .into_iter()
                .find(|path| std::path::Path::new(path).exists())
                .unwrap_or("nats-server");
            let mut command = Command::new(exec);
            command
                .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
                .arg(&self.store);
            command
        } else {
            let mut command = Command::new("redis-server");
            command
                .args(["--bind", "127.0.0.1", "--port", &port])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&self.store);
            command
        };
        let Ok(child) = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn() else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // Redis answers PING only once it has loaded its snapshot.
            let ready = if self.kind == "redis" {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                    && self
                        .try_redis(&["PING"])
                        .is_some_and(|reply| reply == "+PONG")
            } else {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            };
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{}-server does not listen on port {}", self.kind, self.port);
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.kind, self.port)
    }

    /// One Redis command on a connection of its own: a simple reply's line (`+OK`, `:1`,
    /// `-ERR ...`), or a bulk string's content. Blocking: for a test's own steps only.
    pub fn redis(&self, args: &[&str]) -> String {
        self.try_redis(args)
            .unwrap_or_else(|| panic!("redis {args:?}: no reply"))
    }

    fn try_redis(&self, args: &[&str]) -> Option<String> {
        RedisSession::open(self.port)?.try_command(args)
    }

    /// A Redis connection of the test's own, for commands that must share one (while new
    /// connections are refused, say).
    pub fn redis_session(&self) -> RedisSession {
        RedisSession::open(self.port).expect("a connection to redis")
    }
}

/// See [`OwnServer::redis_session`].
pub struct RedisSession {
    reader: BufReader<TcpStream>,
}

impl RedisSession {
    fn open(port: u16) -> Option<RedisSession> {
        let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        Some(RedisSession {
            reader: BufReader::new(stream),
        })
    }

    /// As [`OwnServer::redis`].
    pub fn command(&mut self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|| panic!("redis {args:?}: no reply"))
    }

    fn try_command(&mut self, args: &[&str]) -> Option<String> {
        let mut command = format!("*{}\r\n", args.len());
        for arg in args {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.reader.get_mut().write_all(command.as_bytes()).ok()?;
        let mut line = String::new();
        self.reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        match line
            .strip_prefix('$')
            .and_then(|len| len.parse::<usize>().ok())
        {
            Some(len) => {
                let mut content = vec![0; len + 2];
                self.reader.read_exact(&mut content).ok()?;
                content.truncate(len);
                String::from_utf8(content).ok()
            }
            None => Some(line.to_owned()),
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
