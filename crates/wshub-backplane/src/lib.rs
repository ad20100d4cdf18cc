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
//! use wshub_backplane::{Backplane, HistoryRange, MemoryBackplane};
//! use wshub_protocol::RoomName;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let backplane = MemoryBackplane::new(Default::default());
//! let room = RoomName::parse("chat:lobby")?;
//! let first = backplane.publish(&room, Bytes::from_static(b"hello")).await?;
//! assert_eq!(first.position.offset.get(), 1);
//!
//! let page = backplane
//!     .history(&room, HistoryRange::Latest { limit: 10 })
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

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use wshub_protocol::{ConnectionId, Offset, RoomName, StreamPosition};

use crate::history::HistoryConfig;

pub mod clock;
pub mod history;
pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod redis;

pub use memory::{MemoryBackplane, MemoryConfig};
#[cfg(feature = "nats")]
pub use nats::NatsBackplane;
#[cfg(feature = "redis")]
pub use redis::RedisBackplane;

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
pub enum HistoryRange {
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
    /// For [`HistoryRange::Since`]: true when the epoch matched and the retained history
    /// reached back to the publication right after the requested offset (nothing missed was
    /// lost); false when it did not, when the epoch differed, or when the requested offset
    /// is beyond the latest one. Always true for [`HistoryRange::Latest`]. It does not
    /// depend on `limit`.
    pub recovered: bool,
}

impl HistoryPage {
    /// The page of a room that has no state, for [`Backplane::read_history`]: empty, under
    /// an epoch nobody has seen, so that a client resuming from any position learns that
    /// nothing can be recovered.
    pub fn of_unused_room(query: &HistoryRange) -> Self {
        Self {
            publications: Vec::new(),
            position: StreamPosition::new(history::new_epoch(), Offset::ZERO),
            recovered: matches!(query, HistoryRange::Latest { .. }),
        }
    }
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
    /// A payload another node gave [`Backplane::send`] for a connection of this node. The
    /// node hands it to the connection and tells the sender what happened through `reply`.
    Send {
        /// The connection, on this node.
        to: ConnectionId,
        /// The payload, unchanged.
        payload: Bytes,
        /// Where this node answers; see [`Reply`].
        reply: Reply,
    },
    /// Another node asked [`Backplane::disconnect`] for a connection of this node. The node
    /// closes it and tells the asker what happened through `reply`.
    Disconnect {
        /// The connection, on this node.
        client: ConnectionId,
        /// Where this node answers; see [`Reply`].
        reply: Reply,
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

/// How long a [`Backplane::send`] or [`Backplane::disconnect`] waits for the answer of the
/// node holding the connection, unless configured otherwise: 2 s. A live node answers in
/// well under a millisecond plus whatever its event queue holds; one that takes longer is
/// hung or badly overloaded.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the names of a cluster's data in a shared backplane start with, unless configured
/// otherwise: `wshub`.
pub const DEFAULT_PREFIX: &str = "wshub";

/// How long a presence entry outlives the node that stopped refreshing it (it was killed, or
/// lost the backplane), unless configured otherwise: 30 s. Each node rewrites its entries
/// every third of it.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(30);

/// How long one request to a shared backplane's server may take before it fails, unless
/// configured otherwise: 5 s.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings of a backplane that the nodes of a cluster share: one struct for Redis
/// (`RedisBackplane::connect`) and NATS (`NatsBackplane::connect`), so that a node
/// configures either the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackplaneConfig {
    /// The server: `redis://` or `rediss://` for Redis, `nats://` or `tls://` for NATS (with
    /// JetStream), e.g. `redis://127.0.0.1:6379` (`--backplane`).
    pub url: String,
    /// What the names of this cluster's data start with (`--backplane-prefix`). Default
    /// [`DEFAULT_PREFIX`]. Redis keys and channels start with `<prefix>:` (a prefix that
    /// already ends with `:` is used as it is); NATS subjects with `<prefix>.`, and its
    /// streams are `<prefix>_history` and `<prefix>_presence`, so for NATS it is letters,
    /// digits, `-` and `_` only. Nodes of one cluster share it; clusters sharing one server
    /// need different ones.
    pub prefix: String,
    /// How much history each room keeps (count, age, and how long a room's epoch and offset
    /// outlive its last use).
    pub history: HistoryConfig,
    /// This node's id (`Hub::node_id`): its own channel or subject.
    pub node_id: u64,
    /// How long a presence entry outlives the node that stopped refreshing it
    /// (`--presence-ttl`). Default [`DEFAULT_PRESENCE_TTL`].
    pub presence_ttl: Duration,
    /// How long one command or request may take before it fails. Default
    /// [`DEFAULT_RESPONSE_TIMEOUT`].
    pub response_timeout: Duration,
    /// How long a send or disconnect waits for the answer of the node holding the
    /// connection before it is [`Routed::Unanswered`]. Default [`DEFAULT_ANSWER_TIMEOUT`].
    pub answer_timeout: Duration,
}

impl BackplaneConfig {
    /// Settings for `url` with every default.
    pub fn new(url: impl Into<String>) -> BackplaneConfig {
        BackplaneConfig {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            history: HistoryConfig::default(),
            node_id: 0,
            presence_ttl: DEFAULT_PRESENCE_TTL,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            answer_timeout: DEFAULT_ANSWER_TIMEOUT,
        }
    }
}

/// What the node holding a connection did with an [`Event::Send`] or
/// [`Event::Disconnect`]: its answer, which travels back to the node that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The payload was queued for the connection, or the connection was closed.
    Delivered,
    /// This node has no such connection (it has closed, or never existed).
    NoSuchConnection,
    /// The connection exists but will not take it: it is closing, or its send queue is
    /// full.
    Refused,
}

/// Where the node that received an [`Event::Send`] or [`Event::Disconnect`] gives its
/// [`Answer`]; the backplane carries it to the node waiting in [`Backplane::send`] or
/// [`Backplane::disconnect`].
///
/// Answer once, as soon as the connection has it (answering is cheap and never blocks). A
/// reply dropped without an answer counts as [`Answer::NoSuchConnection`]: the node did not
/// hand the payload to anyone. Clones share one answer (the first given counts), and every
/// reply compares equal to every other, so that events compare by what they carry.
#[derive(Clone, Default)]
pub struct Reply(Option<Arc<Mutex<Option<oneshot::Sender<Answer>>>>>);

impl Reply {
    /// A reply nobody waits for: for events built by hand, and for requests of nodes that
    /// do not wait for answers.
    pub fn none() -> Reply {
        Reply(None)
    }

    /// A reply, and the receiver of its answer (for implementations).
    pub(crate) fn channel() -> (Reply, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        (Reply(Some(Arc::new(Mutex::new(Some(tx))))), rx)
    }

    /// Gives the answer (the first one given counts; later ones are ignored).
    pub fn answer(self, answer: Answer) {
        let Some(slot) = self.0 else { return };
        let sender = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(sender) = sender {
            // The asker may have stopped waiting (it timed out): nothing to do then.
            let _ = sender.send(answer);
        }
    }

    /// Whether someone waits for the answer.
    pub fn is_awaited(&self) -> bool {
        self.0.is_some()
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_awaited() {
            "Reply"
        } else {
            "Reply(none)"
        })
    }
}

impl PartialEq for Reply {
    fn eq(&self, _other: &Reply) -> bool {
        true
    }
}

impl Eq for Reply {}

/// The answer of the node that received a [`Reply`], waited for at most `timeout`: `None`
/// when it did not come in time; [`Answer::NoSuchConnection`] when the reply was dropped
/// unanswered.
pub(crate) async fn answer_within(
    answer: oneshot::Receiver<Answer>,
    timeout: Duration,
) -> Option<Answer> {
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(_)) => Some(Answer::NoSuchConnection),
        Err(_) => None,
    }
}

/// An [`Answer`] as it travels between nodes: one word.
#[cfg(any(feature = "redis", feature = "nats"))]
pub(crate) fn answer_word(answer: Answer) -> &'static str {
    match answer {
        Answer::Delivered => "ok",
        Answer::NoSuchConnection => "none",
        Answer::Refused => "refused",
    }
}

/// The [`Answer`] of one of [`answer_word`]'s words; `None` for any other.
#[cfg(any(feature = "redis", feature = "nats"))]
pub(crate) fn parse_answer(word: &[u8]) -> Option<Answer> {
    match word {
        b"ok" => Some(Answer::Delivered),
        b"none" => Some(Answer::NoSuchConnection),
        b"refused" => Some(Answer::Refused),
        _ => None,
    }
}

/// What became of a [`Backplane::send`] or [`Backplane::disconnect`]: the answer of the
/// node holding the connection, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// The node that holds the connection (by its id's node prefix) queued the payload for
    /// it, or closed it.
    Delivered,
    /// That node answered that it has no such connection (it has closed).
    NoSuchConnection,
    /// That node answered that the connection is closing or its send queue is full.
    Refused,
    /// No node with that prefix is listening: the connection cannot exist (its node is
    /// gone, or never was).
    NoSuchNode,
    /// A node with that prefix received it but gave no answer within the backplane's answer
    /// timeout (it is hung or overloaded, or runs a version that does not answer): whether
    /// the connection got it is unknown, and it may still get it later.
    Unanswered,
}

impl From<Answer> for Routed {
    fn from(answer: Answer) -> Routed {
        match answer {
            Answer::Delivered => Routed::Delivered,
            Answer::NoSuchConnection => Routed::NoSuchConnection,
            Answer::Refused => Routed::Refused,
        }
    }
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
/// - **Epochs.** A room's epoch changes whenever its history may not continue what was
///   numbered before: expired after a long quiet spell, the backplane's storage wiped or
///   restored from an older copy, a failover to a replica that may lag (Redis: its
///   process is not the one that wrote the room's record); offsets then start again at 1.
///   Within one epoch an offset names one publication, everywhere and forever. A reader
///   compares epochs to tell a clean recovery from a replaced history. A node that finds
///   a room's latest offset below one it has seen in the same epoch (history went back
///   without the implementation noticing) calls [`renew_epoch`](Backplane::renew_epoch).
/// - **Delivery.** [`Event::Publication`]s of one room reach every subscribed node in
///   offset order, at most once per channel message. Across a lost connection some may be
///   missing; [`Event::Resumed`] says so, and [`history`](Backplane::history) fills the
///   gap for as long as it is retained.
/// - **Routing.** Each node listens on its own channel, named by its node id (the 48-bit
///   prefix of every [`ConnectionId`] it issues), so [`send`](Backplane::send) and
///   [`disconnect`](Backplane::disconnect) go to exactly one node, and that node's
///   [`Answer`] comes back: a send to a connection that has closed on a live node is
///   [`Routed::NoSuchConnection`], as it would be on the node itself. No listener at all is
///   [`Routed::NoSuchNode`]; a listener that does not answer within the answer timeout is
///   [`Routed::Unanswered`].
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
        query: HistoryRange,
    ) -> BoxFuture<'a, Result<HistoryPage, Error>>;

    /// The room's history does not continue what was numbered before: `seen` is a
    /// position this node saw, and the room's latest offset in `seen.epoch` is below it.
    /// Gives the room a new epoch (its retained history dropped, offsets from 1 again),
    /// unless the room has moved on meanwhile (another epoch, or an offset at or beyond
    /// `seen.offset`: another node renewed it, or it was a stale read). Returns the room's
    /// position afterwards.
    fn renew_epoch<'a>(
        &'a self,
        room: &'a RoomName,
        seen: &'a StreamPosition,
    ) -> BoxFuture<'a, Result<StreamPosition, Error>>;

    /// Reads a room's history and position for a client's or the API's `history`: like
    /// [`Backplane::history`], except that it creates no state for a room that has none
    /// (it answers [`HistoryPage::of_unused_room`]), so reading unused names costs nothing
    /// to keep, in this process or in the shared server. Default: [`Backplane::history`].
    fn read_history<'a>(
        &'a self,
        room: &'a RoomName,
        query: HistoryRange,
    ) -> BoxFuture<'a, Result<HistoryPage, Error>> {
        self.history(room, query)
    }

    /// Starts receiving the room's [`Event::Publication`]s and [`Event::RoomEvent`]s. When
    /// the future resolves, every later publish to the room reaches this node. Not
    /// reference-counted: the caller subscribes once per room.
    fn subscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), Error>>;

    /// Stops receiving the room's events.
    fn unsubscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), Error>>;

    /// Hands `payload` to every other node as an [`Event::Broadcast`] (this node delivers
    /// its own broadcasts itself).
    fn broadcast(&self, payload: Bytes) -> BoxFuture<'_, Result<(), Error>>;

    /// Hands `payload` to the node holding `to` as an [`Event::Send`] and waits for that
    /// node's [`Answer`] (at most the implementation's answer timeout; see [`Routed`]).
    /// Dropping the future stops the wait, not the send.
    fn send(&self, to: ConnectionId, payload: Bytes) -> BoxFuture<'_, Result<Routed, Error>>;

    /// Asks the node holding `client` to close it ([`Event::Disconnect`]) and waits for
    /// that node's [`Answer`], as [`send`](Backplane::send) does.
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

    /// The history kept in this process against its byte budget, when it is kept here
    /// (the memory backplane; `None` for shared stores, which bound their own memory).
    fn history_usage(&self) -> Option<history::HistoryUsage> {
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
