//! The wshub server: what the stand-alone `wshub` binary adds on top of the `wshub`
//! library, the JSON protocol of docs/PROTOCOL.md, the HTTP API, history, tokens, presence,
//! metrics and the demo page. `main.rs` only wires these together; [`app::serve`] runs the
//! whole server in-process (the tests do). The history at its heart:
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use wshub_protocol::{RoomName, StreamPosition, encode};
//! use wshub_server::history::{History, HistoryConfig};
//!
//! let history = History::new(HistoryConfig::default());
//! let room = RoomName::parse("chat:lobby")?;
//! let data = serde_json::value::RawValue::from_string("{\"text\":\"hi\"}".to_owned())?;
//!
//! // Publish: number the message and store its encoded frame, under the room's lock.
//! let appended = history.with_room(&room, |state| {
//!     let appended = state.append(|position| encode::message(&room, &data, None, position));
//!     // ...fan `appended.frame` out to the room's subscribers here, still under the lock.
//!     appended
//! });
//! assert_eq!(appended.position.offset.get(), 1);
//!
//! // A client that saw nothing of this epoch yet recovers the message.
//! let since = StreamPosition::new(appended.position.epoch.clone(), 0.into());
//! let recovery = history.since(&room, &since, usize::MAX);
//! assert!(recovery.recovered);
//! assert_eq!(recovery.messages, vec![appended.frame]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - [`app`]: the server assembled: the hub with its auth hook and handler, every route.
//! - [`session`]: one WebSocket connection speaking the protocol, command by command.
//! - `api`: the HTTP API for backends, behind the API key.
//! - [`state`]: what connections and handlers share; publish, send, broadcast, presence and
//!   history, all through the backplane (`wshub-backplane`: memory, or Redis in a cluster).
//! - `delivery`: what this node delivers to its own subscribers, per room in offset order,
//!   exactly once, and subscribe-with-recovery with no gap and no duplicate.
//! - [`metrics`]: the server's counters and `/metrics` in Prometheus text format.
//! - [`settings`]: flags, environment and TOML file; [`logging`]; [`assets`] (demo page,
//!   browser client).
//! - [`history`]: per-room history with gap-free offsets and epochs, bounded by count and
//!   age, and the room lock that makes subscribe-with-recovery atomic with publishes.
//! - [`presence_events`]: `join` and `leave` of big rooms, coalesced per tick.
//! - [`token`]: HS256 JWT verification and the permissions its claims grant.
//! - [`rate_limit`]: a token bucket per connection and the detector of sustained abuse.
//! - [`clock`]: the time source of history expiry, replaceable in tests.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub(crate) mod api;
pub mod app;
pub mod assets;
pub mod clock;
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
