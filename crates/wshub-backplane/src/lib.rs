//! The way out of one wshub node to the others: the [`Backplane`] trait and its
//! implementations.
//!
//! Several `wshub` nodes behind a load balancer behave as one server when they share a
//! backplane: a room's offsets are numbered by the backplane, so they are gap-free and the
//! same on every node; history lives in the backplane, so a client that reconnects to
//! another node recovers what it missed; `send`, `disconnect` and `broadcast` reach
//! connections on any node; presence lists every node's members.
//!
//! ```
//! use bytes::Bytes;
//! use wshub_backplane::{Backplane, HistoryQuery, MemoryBackplane};
//! use wshub_protocol::RoomName;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let backplane = MemoryBackplane::new(Default::default());
//! let room = RoomName::parse("chat:lobby")?;
//! let first = backplane.publish(&room, Bytes::from_static(b"hello")).await?;
//! assert_eq!(first.position.offset.get(), 1);
//!
//! let page = backplane
//!     .history(&room, HistoryQuery::Latest { limit: 10 })
//!     .await?;
//! assert_eq!(page.publications, vec![first]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - [`Backplane`]: the contract every implementation keeps, written on each method.
//! - [`MemoryBackplane`] (`memory`): one node, everything in this process; the default.
//! - `RedisBackplane` (`redis`, feature `redis`): Redis pub/sub for delivery, a Lua script
//!   per publish for gap-free offsets, streams for history, sorted sets for presence.
//! - `NatsBackplane` (`nats`, feature `nats`): one JetStream stream per deployment, offsets
//!   allocated by `Nats-Expected-Last-Subject-Sequence`, live delivery by the stream's
//!   republication on core NATS subjects, presence in a stream with a `max_age`.
//! - [`history`]: per-room history bounded by count and age, the memory backplane's store.
//! - [`clock`]: the time source of history expiry, replaceable in tests.
//!
//! # What the backplane does not do
//!
//! It does not deliver to connections: each node receives [`Event`]s and delivers them to
//! its own connections. The node keeps, per room, the last offset it delivered, and
//! deduplicates and orders by offset (a publication can reach a node twice: as the reply
//! to its own publish and through the room's channel), filling a gap from
//! [`Backplane::history`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::{fmt, future::Future, pin::Pin};

use bytes::Bytes;
use tokio::sync::mpsc;
use wshub::ConnectionId;
use wshub_protocol::{RoomName, StreamPosition};

pub mod clock;
pub mod history;
mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "redis")]
mod redis;

pub use memory::{MemoryBackplane, MemoryConfig};
#[cfg(feature = "nats")]
pub use nats::{NatsBackplane, NatsConfig};
#[cfg(feature = "redis")]
pub use redis::{RedisBackplane, RedisConfig};

/// A boxed future, as the [`Backplane`] methods return them (the trait is used as
/// `Arc<dyn Backplane>`, so its async methods cannot be `async fn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message published to a room, numbered by the backplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The room it was published to.
    pub room: RoomName,
    /// Its offset, and the epoch that offset belongs to.
    pub position: StreamPosition,
    /// What the publisher gave [`Backplane::publish`], unchanged (opaque to the backplane).
    pub payload: Bytes,
}

/// What [`Backplane::history`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryQuery {
    /// The oldest `limit` publications after `position` (a client resuming, or paging
    /// forward). When `position.epoch` is not the room's epoch, the retained history from
    /// its start.
    Since {
        /// The last position the reader has.
        position: StreamPosition,
        /// The most publications returned.
        limit: usize,
    },
    /// The newest `limit` publications (0 reads only the room's position).
    Latest {
        /// The most publications returned.
        limit: usize,
    },
}

/// The answer of [`Backplane::history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Publications, oldest first, with consecutive offsets.
    pub publications: Vec<Publication>,
    /// The room's epoch and latest offset when it was read.
    pub position: StreamPosition,
    /// For [`HistoryQuery::Since`]: true when the epoch matched and the retained history
    /// reached back to the publication right after the requested offset (nothing missed was
    /// lost); false when it did not, when the epoch differed, or when the requested offset
    /// is beyond the latest one. Always true for [`HistoryQuery::Latest`]. It does not
    /// depend on `limit`.
    pub recovered: bool,
}

/// One member of a room, as [`Backplane::presence`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresenceMember {
    /// The member's connection id (its node prefix tells which node holds it).
    pub client: ConnectionId,
    /// The member's user (a token's `sub`), if any.
    pub user: Option<String>,
}

/// What a node receives from the others, in the order the backplane received it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A publication to a room this node is subscribed to ([`Backplane::subscribe`]).
    /// Within one room they arrive in offset order, but one may arrive twice (this node's
    /// own publications may come back) or be missing (after the backplane connection was
    /// lost: see [`Event::Resumed`]).
    Publication(Publication),
    /// A payload another node gave [`Backplane::broadcast`]: deliver it to every local
    /// connection. A node never receives its own broadcasts.
    Broadcast {
        /// The payload, unchanged.
        payload: Bytes,
    },
    /// A payload another node gave [`Backplane::send`] for a connection of this node.
    Send {
        /// The connection, on this node.
        to: ConnectionId,
        /// The payload, unchanged.
        payload: Bytes,
    },
    /// Another node asked [`Backplane::disconnect`] for a connection of this node.
    Disconnect {
        /// The connection, on this node.
        client: ConnectionId,
    },
    /// A payload another node gave [`Backplane::room_event`]: deliver it to this node's
    /// members of the room (not numbered, not kept: presence `join` and `leave` events).
    RoomEvent {
        /// The room.
        room: RoomName,
        /// The payload, unchanged.
        payload: Bytes,
    },
    /// The backplane connection was lost and is back: publications, broadcasts and sends
    /// of the meantime may be lost. The node should catch up each room it follows from
    /// [`Backplane::history`].
    Resumed,
}

/// Whether a [`Backplane::send`] or [`Backplane::disconnect`] found a node to hand it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// The node that holds the connection (by its id's node prefix) received it; whether
    /// the connection still exists there is that node's business.
    Delivered,
    /// No node with that prefix is listening: the connection cannot exist.
    NoSuchNode,
}

/// The state of the backplane connection, for `/healthz`, `/stats` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Working.
    Connected,
    /// Unreachable (or failing): local connections are still served, but nothing crosses
    /// to other nodes, and publishes fail. The text says why.
    Degraded(String),
}

impl Health {
    /// Whether the backplane is working.
    pub fn is_connected(&self) -> bool {
        matches!(self, Health::Connected)
    }
}

/// Why a backplane operation failed. The `Display` text is for humans, not for matching.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backplane could not be reached, or did not answer in time. The operation may or
    /// may not have taken effect.
    #[error("backplane unavailable: {0}")]
    Unavailable(String),
    /// The backplane answered something this crate cannot read (a bug, or a foreign
    /// writer under our key prefix).
    #[error("unexpected answer from the backplane: {0}")]
    Protocol(String),
    /// The backplane's configuration cannot be used (a malformed URL).
    #[error("invalid backplane configuration: {0}")]
    InvalidConfig(String),
}

/// The receiving end of a node's [`Event`]s, taken once with [`Backplane::take_events`].
pub type Events = mpsc::UnboundedReceiver<Event>;

/// The contract between a node and the others. One instance per node, shared as
/// `Arc<dyn Backplane>`; every method may be called concurrently.
///
/// # Ordering and atomicity (what each implementation guarantees)
///
/// - **Gap-free offsets.** [`publish`](Backplane::publish) numbers a room's publications
///   1, 2, 3, ... in its epoch, atomically with appending them to the room's history and
///   handing them to the room's channel: two publishes on any two nodes never get the same
///   offset, no offset is skipped, and history order, channel order and offset order are
///   the same.
/// - **Epochs.** A room's epoch changes only when its history is lost (expired after a
///   long quiet spell, or the backplane's storage was wiped); offsets then start again at
///   1. A reader compares epochs to tell a clean recovery from a replaced history.
/// - **Delivery.** [`Event::Publication`]s of one room reach every subscribed node in
///   offset order, at most once per channel message. Across a lost connection some may be
///   missing; [`Event::Resumed`] says so, and [`history`](Backplane::history) fills the
///   gap for as long as it is retained.
/// - **Routing.** Each node listens on its own channel, named by its node id (the 48-bit
///   prefix of every [`ConnectionId`] it issues), so [`send`](Backplane::send) and
///   [`disconnect`](Backplane::disconnect) go to exactly one node.
/// - **Presence.** Entries added by a node are kept alive by that node while it runs; when
///   a node dies its entries vanish within the implementation's presence ttl.
pub trait Backplane: Send + Sync + fmt::Debug + 'static {
    /// The node id this backplane routes for (its own channel).
    fn node_id(&self) -> u64;

    /// The node's events, once: the first call returns them, later calls `None`.
    fn take_events(&self) -> Option<Events>;

    /// Numbers `payload` with the room's next offset, appends it to the room's history and
    /// hands it to every node subscribed to the room, atomically (see the trait docs).
    /// Returns the publication. On [`Error::Unavailable`] it may or may not have happened.
    fn publish<'a>(
        &'a self,
        room: &'a RoomName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Publication, Error>>;

    /// Reads a room's history and position (creating the room's epoch when it has none,
    /// which counts as a use of the room, as a publish does).
    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, Error>>;

    /// Starts receiving the room's [`Event::Publication`]s and [`Event::RoomEvent`]s. When
    /// the future resolves, every later publish to the room reaches this node. Not
    /// reference-counted: the caller subscribes once per room.
    fn subscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), Error>>;

    /// Stops receiving the room's events.
    fn unsubscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), Error>>;

    /// Hands `payload` to every other node as an [`Event::Broadcast`] (this node delivers
    /// its own broadcasts itself).
    fn broadcast(&self, payload: Bytes) -> BoxFuture<'_, Result<(), Error>>;

    /// Hands `payload` to the node holding `to` as an [`Event::Send`].
    fn send(&self, to: ConnectionId, payload: Bytes) -> BoxFuture<'_, Result<Routed, Error>>;

    /// Asks the node holding `client` to close it ([`Event::Disconnect`]).
    fn disconnect(&self, client: ConnectionId) -> BoxFuture<'_, Result<Routed, Error>>;

    /// Hands `payload` to the other nodes subscribed to `room` as an [`Event::RoomEvent`]
    /// (never to this one).
    fn room_event<'a>(
        &'a self,
        room: &'a RoomName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Adds (or refreshes) a member of a room. The entry lives while this node does.
    fn presence_add<'a>(
        &'a self,
        room: &'a RoomName,
        member: PresenceMember,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Removes a member of a room (nothing when it is not one).
    fn presence_remove<'a>(
        &'a self,
        room: &'a RoomName,
        client: ConnectionId,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// The members of a room on every node, in no particular order.
    fn presence<'a>(
        &'a self,
        room: &'a RoomName,
    ) -> BoxFuture<'a, Result<Vec<PresenceMember>, Error>>;

    /// How the backplane is doing now (no I/O: the last known state).
    fn health(&self) -> Health;

    /// The effective `limit` of a history request: the requested one, defaulted to and
    /// capped by the history size.
    fn clamp_limit(&self, requested: Option<usize>) -> usize;

    /// How many rooms the backplane keeps state for on this node, when it knows (the
    /// memory backplane; `None` for shared stores).
    fn local_rooms(&self) -> Option<usize> {
        None
    }

    /// Drops expired state; the server calls it every few seconds. Default: nothing.
    fn sweep(&self) {}

    /// A short name for logs and metrics: `memory`, `redis`, `nats`.
    fn kind(&self) -> &'static str;
}

/// The node id of a connection id's node, as channel names spell it: 12 hex digits.
pub fn node_hex(node: u64) -> String {
    format!("{node:012x}")
}
