//! The `connect` scenario: open N connections, `--connect-concurrency` handshakes at a time,
//! and report handshakes per second and handshake time quantiles. Connections stay open until
//! the end, so the server holds N at the finish, as a burst of reconnecting clients would leave
//! it.

use anyhow::Result;
use clap::Args;

use crate::Run;
use crate::report::Report;

/// Options of the `connect` scenario.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 5000)]
    clients: usize,
}

/// Runs the scenario.
pub(crate) async fn run(run: &Run, args: &ConnectArgs, mut report: Report) -> Result<Report> {
    let before = run.server.map(|s| s.sample()).transpose()?;
    let mut open = Vec::with_capacity(args.clients);
    let dial = run
        .dialer
        .dial_many(
            args.clients,
            run.common.connect_concurrency,
            run.deadline,
            |_, socket| open.push(socket),
        )
        .await;
    let after = run.server.map(|s| s.sample()).transpose()?;
    report.put_dial(args.clients, &dial);
    let rate = dial.connected as f64 / dial.elapsed.as_secs_f64().max(1e-9);
    report.put(
        "handshakes_per_s",
        rate,
        "handshakes per second",
        format!("{rate:.0}"),
    );
    report.put_quiet("concurrency", run.common.connect_concurrency);
    if let (Some(before), Some(after)) = (before, after) {
        let cpu = crate::server_process::cpu_between(&before, &after).as_secs_f64();
        let per = if dial.connected == 0 {
            0.0
        } else {
            cpu * 1e6 / dial.connected as f64
        };
        report.put("server_cpu_s", cpu, "server CPU", format!("{cpu:.2} s"));
        report.put(
            "server_cpu_us_per_handshake",
            per,
            "server CPU per handshake",
            format!("{per:.1} µs"),
        );
    }
    drop(open);
    Ok(report)
}
