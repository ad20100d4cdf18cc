//! The wshub server's own logic: what the stand-alone `wshub` binary adds on top of the
//! `wshub` library. So far, the parts that need no network, each testable on its own:
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
//! - [`history`]: per-room history with gap-free offsets and epochs, bounded by count and
//!   age, and the room lock that makes subscribe-with-recovery atomic with publishes.
//! - [`token`]: HS256 JWT verification and the permissions its claims grant.
//! - [`rate_limit`]: a token bucket per connection and the detector of sustained abuse.
//! - [`clock`]: the time source of history expiry, replaceable in tests.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod assets;
pub mod clock;
pub mod history;
pub mod logging;
pub mod rate_limit;
pub mod settings;
pub mod token;
