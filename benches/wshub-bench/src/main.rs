//! `wshub-bench`: a load generator for WebSocket hubs in which every text message from any
//! client goes to every connected client.
//!
//! It drives wshub's `examples/chat.rs` and the peers in `benches/peers` the same way, over
//! loopback, and reads the server's CPU time and memory from `/proc/PID` (pass `--server-pid`).
//! Scenarios:
//!
//! - `fanout`: N clients connect; client 0 sends M messages, each carrying its sequence number
//!   and send time (`"<seq> <nanos> xxx…"`); every client counts deliveries, gaps, reordering
//!   and end-to-end latency against one monotonic clock shared by sender and receivers.
//! - `idle`: N connections held open; server RSS per connection, and whether any closed.
//! - `connect`: handshakes per second and handshake time quantiles.
//! - `soak`: for the `wshub` server's protocol, clients that connect, subscribe, publish
//!   and leave in churn for minutes (`scripts/soak.sh` checks the server's resources).
//!
//! Every phase is bounded in time by `--deadline`; the last line of output is a JSON object
//! with `--json`. See `benches/README.md`.

mod connect;
mod dial;
mod fanout;
mod histogram;
mod idle;
mod report;
mod server_process;
mod soak;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::dial::Dialer;
use crate::report::Report;
use crate::server_process::ServerProcess;

/// Command line.
#[derive(Debug, Parser)]
#[command(version, about = "Load generator for WebSocket broadcast hubs")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options shared by every scenario.
#[derive(Debug, Args)]
pub(crate) struct Common {
    /// Server URL.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/ws")]
    pub(crate) url: String,
    /// PID of the server process, to read its CPU time and RSS from /proc.
    #[arg(long, global = true)]
    pub(crate) server_pid: Option<u32>,
    /// Spread clients over this many source addresses 127.0.0.1..=127.0.0.N (1: let the
    /// kernel choose).
    #[arg(long, global = true, default_value_t = 1)]
    pub(crate) source_ips: u8,
    /// Handshakes in flight at once.
    #[arg(long, global = true, default_value_t = 64)]
    pub(crate) connect_concurrency: usize,
    /// Limit for one handshake, in seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub(crate) handshake_timeout: f64,
    /// Limit for the whole run, in seconds.
    #[arg(long, global = true, default_value_t = 300.0)]
    pub(crate) deadline: f64,
    /// Tokio worker threads (1: a current-thread runtime).
    #[arg(long, global = true, default_value_t = 1)]
    pub(crate) threads: usize,
    /// A `Sec-WebSocket-Extensions` offer sent with every handshake, e.g.
    /// `permessage-deflate`. The client inflates nothing: use it where the server sends no
    /// compressed message (`idle`, `connect`).
    #[arg(long, global = true)]
    pub(crate) extensions: Option<String>,
    /// A name for the server under test, copied into the JSON line.
    #[arg(long, global = true, default_value = "")]
    pub(crate) label: String,
    /// End the output with one line of JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// What to measure.
#[derive(Debug, Subcommand)]
enum Scenario {
    /// One client sends, every client receives: throughput, latency, loss.
    Fanout(fanout::FanoutArgs),
    /// Hold connections open: server memory per connection.
    Idle(idle::IdleArgs),
    /// Open connections: handshakes per second.
    Connect(connect::ConnectArgs),
    /// Connect, subscribe, publish and leave in churn (the `wshub` server's protocol).
    Soak(soak::SoakArgs),
}

/// What every scenario gets from `main`.
#[derive(Debug)]
pub(crate) struct Run {
    /// The shared options.
    pub(crate) common: Common,
    /// Opens client connections.
    pub(crate) dialer: Dialer,
    /// The server process, when its PID was given.
    pub(crate) server: Option<ServerProcess>,
    /// No phase may go on after this.
    pub(crate) deadline: Instant,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // One client socket per connection: the soft open-files limit must be the hard one.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    let runtime = if cli.common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.common.threads)
            .enable_all()
            .build()?
    };
    let dialer = Dialer::new(
        &cli.common.url,
        cli.common.source_ips,
        Duration::from_secs_f64(cli.common.handshake_timeout),
    )?
    .with_extensions(cli.common.extensions.as_deref())?;
    let server = cli.common.server_pid.map(ServerProcess::new).transpose()?;
    let deadline = Instant::now() + Duration::from_secs_f64(cli.common.deadline);
    let run = Run {
        common: cli.common,
        dialer,
        server,
        deadline,
    };
    let name = match &cli.scenario {
        Scenario::Fanout(_) => "fanout",
        Scenario::Idle(_) => "idle",
        Scenario::Connect(_) => "connect",
        Scenario::Soak(_) => "soak",
    };
    println!(
        "wshub-bench {name} against {} {}",
        run.common.url, run.common.label
    );
    let mut report = Report::default();
    report.put_quiet("nofile_limit", nofile);
    report.put_quiet("url", run.common.url.as_str());
    let own = ServerProcess::current().sample()?;
    let report = runtime.block_on(async {
        match cli.scenario {
            Scenario::Fanout(args) => fanout::run(&run, &args, report).await,
            Scenario::Idle(args) => idle::run(&run, &args, report).await,
            Scenario::Connect(args) => connect::run(&run, &args, report).await,
            Scenario::Soak(args) => soak::run(&run, &args, report).await,
        }
    })?;
    let own_cpu = server_process::cpu_between(&own, &ServerProcess::current().sample()?);
    let mut report = report;
    report.put(
        "loadgen_total_cpu_s",
        own_cpu.as_secs_f64(),
        "load generator CPU (run)",
        format!("{:.2} s", own_cpu.as_secs_f64()),
    );
    if run.common.json {
        println!("{}", report.into_json(name, &run.common.label));
    }
    // Connections still open are closed by the exit; tasks are not awaited further.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
