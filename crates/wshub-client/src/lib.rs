//! The Rust client of wshub: a reconnecting WebSocket client for any server, and the wshub
//! protocol client on top of it.
//!
//! [`WshubClient`] follows rooms across reconnects without losing or repeating a message:
//! it remembers the last `offset` and `epoch` delivered in each room, joins again with
//! `since` after every reconnect, drops anything at or below what it already delivered,
//! and says so ([`SubscriptionEvent::RecoveryFailed`]) when the server could not replay
//! everything. Commands (`publish`, `presence`, `history`, ...) are async calls matched to
//! their replies by `id`, with timeouts; publishes made while disconnected wait in a
//! bounded queue and go out after reconnecting.
//!
//! ```no_run
//! use std::time::Duration;
//! use wshub_client::{SubscriptionEvent, WshubClient};
//!
//! # async fn run() -> Result<(), wshub_client::Error> {
//! let (client, _events) = WshubClient::builder("ws://127.0.0.1:8080/ws")
//!     .request_timeout(Duration::from_secs(5))
//!     .build()?;
//! tokio::time::timeout(Duration::from_secs(10), client.ready())
//!     .await
//!     .map_err(|_| wshub_client::Error::NotConnected)??;
//! let mut room = client.subscribe("chat:lobby").await?;
//! let offset = client.publish("chat:lobby", &serde_json::json!({"text": "hi"})).await?;
//! while let Some(event) = room.recv().await {
//!     match event {
//!         SubscriptionEvent::Message(message) => println!("{} {}", message.offset, message.data),
//!         SubscriptionEvent::RecoveryFailed { .. } => println!("some messages were lost"),
//!         _ => {}
//!     }
//! #   let _ = offset; break;
//! }
//! client.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`Client`] is the layer below, usable with any WebSocket server: it reconnects with
//! exponential backoff and full jitter ([`Backoff`]), pings a silent server to notice
//! when it is gone ([`Heartbeat`]), and reports [`Event`]s to callbacks and to a stream.
//!
//! # Layout
//!
//! - [`connection`]: [`Client`], [`ClientBuilder`], [`Event`], [`Events`] — the
//!   reconnecting WebSocket client.
//! - [`backoff`]: [`Backoff`] and [`BackoffSchedule`], the reconnect delays, pure and
//!   driven by an injectable [`Jitter`].
//! - [`heartbeat`]: [`Heartbeat`], the dead-peer detection.
//! - [`transport`]: the only module naming the WebSocket crate; [`Message`].
//! - [`protocol`]: [`WshubClient`], the wshub protocol client, and its events.
//! - [`subscription`]: [`Subscription`], one room's stream.
//! - `cursor` (private): the per-room position and the duplicate rule.
//! - `pending` (private): matching replies to commands by `id`.
//! - [`error`][mod@error]: [`Error`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backoff;
pub mod connection;
mod cursor;
mod deflate;
pub mod error;
pub mod heartbeat;
mod pending;
pub mod protocol;
pub mod subscription;
pub mod transport;

pub use backoff::{Backoff, BackoffSchedule, FixedJitter, Jitter, RandomJitter, Step};
pub use connection::{Client, ClientBuilder, ConnectionState, Event, Events, ReconnectPolicy};
pub use error::Error;
pub use heartbeat::Heartbeat;
pub use protocol::{
    History, PublishReply, WshubClient, WshubClientBuilder, WshubEvent, WshubEvents,
};
pub use subscription::{Subscription, SubscriptionEvent};
/// The TLS library `wss://` connections use, to build a [`ClientBuilder::tls_config`].
pub use tokio_rustls::rustls;
pub use transport::Message;
pub use wshub_protocol;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
