//! The wshub server: what the stand-alone `wshub` binary adds on top of the `wshub`
//! library: the JSON protocol of docs/PROTOCOL.md, the HTTP API for backends, history and
//! recovery, tokens, presence, metrics and the demo page, on one node or a cluster sharing
//! Redis or NATS. `main.rs` only reads the settings and wires these together;
//! [`app::serve`] runs the whole server in-process, as the tests do:
//!
//! ```
//! use std::time::Duration;
//! use wshub_server::{app, state::ServerOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let options = ServerOptions::default(); // the binary's defaults, the memory backplane
//! let server = app::serve(options, "127.0.0.1:0".parse()?).await?;
//! println!("clients connect to ws://{}/ws", server.local_addr());
//! server.stop(Duration::from_secs(1)).await; // every client gets 1001
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`app`]: the server assembled: the hub with its auth hook and handler, every route.
//! - [`session`]: one WebSocket connection speaking the protocol, command by command.
//! - `api`: the HTTP API for backends, behind the API key.
//! - [`state`]: what connections and handlers share; publish, send, broadcast, presence and
//!   history, all through the backplane (`wshub-backplane`: memory on one node, Redis or
//!   NATS in a cluster).
//! - `delivery`: what this node delivers to its own subscribers, per room in offset order,
//!   exactly once, and subscribe-with-recovery with no gap and no duplicate.
//! - [`presence_events`]: `join` and `leave` of big rooms, coalesced per tick.
//! - [`history`]: history replies and recovery replays cut to a number of bytes.
//! - [`metrics`]: the server's counters and `/metrics` in Prometheus text format.
//! - [`settings`]: one row per setting, read from flags, environment and TOML file;
//!   [`logging`]; [`assets`] (demo page, browser clients).
//! - [`token`]: HS256 JWT verification and the permissions its claims grant.
//! - [`rate_limit`]: the per-address limits on top of the library's token bucket.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub(crate) mod api;
pub mod app;
pub mod assets;
pub(crate) mod delivery;
pub mod history;
pub mod logging;
pub mod metrics;
pub mod presence_events;
pub mod rate_limit;
pub mod session;
pub mod settings;
pub mod state;
pub mod token;
