//! The wire protocol of wshub, as serde types and pure functions: no I/O, no async.
//!
//! `docs/PROTOCOL.md` is the contract; this crate is its executable form, shared by the `wshub`
//! server, the Rust client and anything else that speaks to a hub. It decodes client
//! commands with every validation rule of the protocol, encodes server frames straight into
//! [`bytes::Bytes`] (once per message, whatever the number of recipients), and keeps every
//! `data` payload as the exact JSON text its publisher sent, so nothing re-parses or
//! re-encodes it on the way through.
//!
//! ```
//! use wshub_protocol::{Command, CommandId, ErrorCode, encode};
//!
//! // The server decodes one text frame...
//! let command = Command::decode(r#"{"type":"publish","id":7,"room":"chat:lobby","data":{"text":"hi"}}"#)
//!     .map_err(|err| err.to_frame())?;
//! let Command::Publish(publish) = command else { unreachable!() };
//! assert_eq!(publish.room.as_str(), "chat:lobby");
//! assert_eq!(publish.data.get(), r#"{"text":"hi"}"#);
//!
//! // ...and answers with frames encoded once.
//! let ok = encode::ok_publish(&CommandId::from(7), &publish.room, 42.into());
//! assert_eq!(&ok[..], br#"{"type":"ok","id":7,"room":"chat:lobby","offset":42}"#);
//!
//! // Bad input becomes an error frame that carries the command's id when it had a valid one.
//! let err = Command::decode(r#"{"type":"subscribe","id":"a","room":"has space"}"#).unwrap_err();
//! assert_eq!(err.code(), ErrorCode::BadRequest);
//! assert_eq!(err.id(), Some(&CommandId::from("a".to_owned())));
//! # Ok::<(), bytes::Bytes>(())
//! ```
//!
//! # Layout
//!
//! - [`command`]: client → server commands ([`Command`]) and [`Command::decode`], the one
//!   function that turns a text frame into a command or a [`ProtocolError`].
//! - [`frame`]: server → client frames as owned types ([`ServerFrame`]), for clients
//!   that decode them and for tests.
//! - [`encode`]: the server's encoders, one function per frame, each returning `Bytes`.
//! - [`id`]: [`CommandId`], the optional `id` a client puts on a command.
//! - [`connection`]: [`ConnectionId`], the id of one connection across a cluster.
//! - [`room`]: [`RoomName`], a validated room name.
//! - [`stream`]: [`Offset`], [`Epoch`] and [`StreamPosition`], a room's place in its history.
//! - [`payload`]: [`Payload`], an application's `data`, kept as raw JSON.
//! - [`error`]: [`ErrorCode`] and [`ProtocolError`], the protocol's error vocabulary.
//! - [`close`]: [`CloseCode`], the WebSocket close codes (RFC 6455 and the protocol's).
//! - [`http`]: request and response bodies of the HTTP API for backends.
//! - [`claims`]: [`Claims`] of a JWT and the room pattern matcher.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod claims;
pub mod close;
pub mod command;
pub mod connection;
pub mod encode;
pub mod error;
pub mod frame;
pub mod http;
pub mod id;
pub mod payload;
pub mod room;
pub mod stream;

pub use claims::{Claims, pattern_matches};
pub use close::{CloseCode, InvalidCloseCode};
pub use command::{
    Broadcast, Command, HistoryQuery, Ping, PresenceQuery, Publish, SendTo, Subscribe, Unsubscribe,
};
pub use connection::{ConnectionId, InvalidConnectionId};
pub use error::{ErrorCode, ProtocolError};
pub use frame::{
    BroadcastFrame, DirectFrame, ErrorFrame, MessageFrame, OkFrame, PongFrame, PresenceClient,
    PresenceEvent, ServerFrame, UnrecoverableFrame, WelcomeFrame,
};
pub use id::CommandId;
pub use payload::Payload;
pub use room::{RoomName, RoomNameError};
pub use stream::{Epoch, LostRange, Offset, StreamPosition};

/// The protocol version this crate implements, sent as `version` in the `welcome` frame.
pub const PROTOCOL_VERSION: u32 = 1;
