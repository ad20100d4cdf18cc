#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
//!
//! # Layout
//!
//! - [`hub`](Hub): the registry of connections and rooms, and fan-out to them.
//! - [`connection`](Connection): one peer, its id and handshake info, and the handle to it.
//! - `outbound`: the bounded per-connection send queue and its [`OverflowPolicy`].
//! - `driver`: the single task per connection that moves frames both ways.
//! - `heartbeat`: ping interval, pong wait, write wait.
//! - `transport`: one WebSocket connection over its byte stream; frame headers, masking
//!   and permessage-deflate's per-message work come from `wshub-ws` (shared with the Rust
//!   client), and `frame` adds UTF-8 validation as bytes arrive and close payloads.
//! - [`rate_limit`]: the per-connection token bucket and the detector of sustained abuse.
//! - `users`: the index of connections by user id, and the per-user cap.
//! - `upgrade`: the axum route: limits, origin check, auth hook, then the upgrade.
//! - [`server`](Server): a stand-alone server for programs without axum, with TLS
//!   ([`TlsConfig`], feature `tls`, on by default).
//! - [`config`](HubConfig), [`error`](Error), [`close`](CloseCode), [`stats`](Stats),
//!   [`message`](Message).

mod close;
mod config;
mod connection;
mod deflate;
mod driver;
mod error;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod heartbeat;
mod hub;
mod message;
mod outbound;
pub mod rate_limit;
mod server;
mod stats;
#[cfg(feature = "tls")]
mod tls;
mod transport;
mod upgrade;
mod users;

pub use close::{CloseCode, Disconnect};
pub use config::{HubConfig, LOOPBACK_HOSTS, OriginCheck, OriginPolicy, OverflowPolicy};
pub use connection::{Connection, ConnectionId, ConnectionInfo, Identity, InvalidConnectionId};
pub use deflate::Compression;
pub use error::Error;
pub use hub::{DRAIN_GRACE, Hub, HubBuilder};
pub use message::{Message, MessageKind};
pub use rate_limit::RateLimitConfig;
pub use server::Server;
pub use stats::{LATENCY_BUCKET_BOUNDS_MICROS, LatencyHistogram, Stats};
#[cfg(feature = "tls")]
pub use tls::TlsConfig;
pub use upgrade::{HandshakeRequest, Rejection};

impl Hub {
    /// An axum router with the hub's route at [`HubConfig::path`]. Merge it into your app,
    /// or serve it alone.
    pub fn router(&self) -> axum::Router {
        axum::Router::new().route(&self.inner.config.path, self.route())
    }

    /// The hub's upgrade handler as an axum method router, to mount at any path:
    /// `Router::new().route("/live", hub.route())`. Requests that are not WebSocket
    /// upgrades get 400 (or 426 for an unsupported version).
    pub fn route(&self) -> axum::routing::MethodRouter {
        let hub = self.clone();
        axum::routing::any(move |request: axum::extract::Request| {
            let hub = hub.clone();
            async move { upgrade::upgrade(hub, request).await }
        })
    }
}

impl ConnectionInfo {
    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.id
    }
    /// Whether permessage-deflate was negotiated (see [`HubConfig::compression`]).
    pub fn compressed(&self) -> bool {
        self.compressed
    }
    /// The peer's address.
    pub fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.remote_addr
    }
    /// When the connection was accepted.
    pub fn connected_at(&self) -> std::time::SystemTime {
        self.connected_at
    }
    /// How long the connection has been open.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }
    /// The request's `User-Agent`.
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }
    /// The request headers.
    pub fn headers(&self) -> &http::HeaderMap {
        self.headers.map()
    }
    /// The identity from the auth hook.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }
}
