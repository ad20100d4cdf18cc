//! The `wshub` binary: read the settings, start logging, serve until SIGINT, SIGTERM or
//! `POST /api/drain`, then drain (`/healthz` answers 503 `draining`, no new connections,
//! every client closed with 1012 at its own random moment within `--drain-window`) and exit
//! 0. A second SIGINT or SIGTERM during the drain stops at once (1001 to those left).
//! SIGHUP reloads the TLS certificate.

use std::{process::ExitCode, time::Duration};

use wshub_server::{app, logging, settings::Settings, state::ServerOptions};

/// How long connections still open after the drain get to close (with 1001).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => error.exit(),
    };
    if let Err(error) = logging::init(&settings.log_level, settings.log_format) {
        eprintln!("wshub: {error}");
        return ExitCode::FAILURE;
    }
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    // One descriptor per connection: take the hard limit of open files rather than the
    // soft one (often 1024), as Go programs do by themselves.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
    }
    let mut options = ServerOptions::from(&settings);
    // The settings hold both or neither (a `SettingsError::Conflict` otherwise).
    if let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) {
        match wshub::TlsConfig::from_pem_files(cert, key) {
            Ok(tls) => options.tls = Some(tls),
            Err(error) => {
                eprintln!("wshub: --tls-cert/--tls-key: {error}");
                return ExitCode::from(2);
            }
        }
    }
    let secure = options.tls.is_some();
    let server = match app::serve(options, settings.listen).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("wshub: cannot start on {}: {error}", settings.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = server.local_addr();
    let (ws, http) = if secure {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    println!(
        "wshub listening on {addr}: WebSocket {ws}://{addr}{path}, demo page {http}://{addr}/websocket",
        path = settings.path
    );
    #[cfg(unix)]
    if let Err(error) = server.reload_tls_on_sighup() {
        tracing::warn!(%error, "cannot listen for SIGHUP; the TLS certificate is not reloaded on it");
    }
    tokio::select! {
        () = shutdown_signal() => tracing::info!("signal received: draining"),
        () = server.drain_requested() => {}
    }
    tokio::select! {
        () = server.drain() => {}
        () = shutdown_signal() => tracing::warn!("second signal: stopping without waiting for the drain"),
    }
    tracing::info!("shutting down");
    server.stop(SHUTDOWN_DEADLINE).await;
    ExitCode::SUCCESS
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
