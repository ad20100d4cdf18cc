//! The `wshub` binary: read the settings, start logging, serve until SIGINT or SIGTERM,
//! then shut down gracefully (every client gets 1001). SIGHUP reloads the TLS certificate.

use std::{process::ExitCode, time::Duration};

use wshub_server::{app, logging, settings::Settings, state::ServerOptions};

/// How long connections get to drain and close at shutdown.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

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
    shutdown_signal().await;
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
