//! One peer: its id, what we know about it, and the handle used to talk to it.

use std::{
    any::Any,
    fmt,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use http::HeaderMap;
use serde::Serialize;
use tokio::sync::mpsc;

pub use wshub_protocol::{ConnectionId, InvalidConnectionId};

use crate::{
    CloseCode, Error, Hub, Message,
    outbound::{CloseRequest, PushOutcome, SendQueue},
};

/// A keyed permutation of `u64`, drawn at random per hub: it turns the hub's counter into
/// the second part of its connection ids. A permutation keeps them unique; its key keeps
/// them unguessable. Four Feistel rounds over 32-bit halves, each round SipHash (the
/// standard library's `RandomState`, randomly keyed) of the round and the right half.
#[derive(Debug, Clone)]
pub(crate) struct SequenceCipher {
    keys: std::collections::hash_map::RandomState,
}

impl SequenceCipher {
    pub(crate) fn new() -> Self {
        Self {
            keys: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The image of `counter`: distinct counters give distinct results.
    pub(crate) fn permute(&self, counter: u64) -> u64 {
        use std::hash::BuildHasher;
        let (mut left, mut right) = ((counter >> 32) as u32, counter as u32);
        for round in 0_u8..4 {
            let mixed = self.keys.hash_one((round, right)) as u32;
            (left, right) = (right, left ^ mixed);
        }
        (u64::from(left) << 32) | u64::from(right)
    }
}

/// Who a connection belongs to, as returned by the auth hook.
#[derive(Clone)]
pub struct Identity {
    user: String,
    data: Option<Arc<dyn Any + Send + Sync>>,
}

impl Identity {
    /// An identity for this user id.
    pub fn new(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            data: None,
        }
    }

    /// Attaches application data (token claims, permissions) to read back with
    /// [`data`](Self::data).
    pub fn with_data<T: Any + Send + Sync>(mut self, data: T) -> Self {
        self.data = Some(Arc::new(data));
        self
    }

    /// The user id.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The attached data, if it is of type `T`.
    pub fn data<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.data.as_deref().and_then(|d| d.downcast_ref())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("data", &self.data.as_ref().map(|_| ".."))
            .finish()
    }
}

/// The headers of an upgrade request, kept compactly: one allocation of `name\0value\0`
/// pairs, turned into a [`HeaderMap`] only when someone asks. Most connections never
/// have their headers read, and a `HeaderMap` costs several times the bytes it holds.
#[derive(Debug, Default)]
pub(crate) struct RequestHeaders {
    raw: Box<[u8]>,
    map: std::sync::OnceLock<Box<HeaderMap>>,
}

impl RequestHeaders {
    pub(crate) fn new(headers: &HeaderMap) -> Self {
        let len = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 2)
            .sum();
        let mut raw = Vec::with_capacity(len);
        for (name, value) in headers {
            // Neither a header name nor a header value can contain a NUL byte.
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.push(0);
            raw.extend_from_slice(value.as_bytes());
            raw.push(0);
        }
        Self {
            raw: raw.into_boxed_slice(),
            map: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn map(&self) -> &HeaderMap {
        self.map.get_or_init(|| {
            let mut map = HeaderMap::new();
            let mut parts = self.raw.split(|b| *b == 0);
            while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name),
                    http::HeaderValue::from_bytes(value),
                ) {
                    map.append(name, value);
                }
            }
            Box::new(map)
        })
    }
}

/// What the hub knows about a connection from its handshake.
#[derive(Debug)]
pub struct ConnectionInfo {
    pub(crate) id: ConnectionId,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) connected_at: SystemTime,
    pub(crate) started: Instant,
    pub(crate) user_agent: Option<String>,
    pub(crate) headers: RequestHeaders,
    pub(crate) identity: Option<Identity>,
    /// permessage-deflate was negotiated.
    pub(crate) compressed: bool,
}

/// The state a connection shares between its task, the hub and every [`Connection`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) info: ConnectionInfo,
    pub(crate) queue: SendQueue,
    /// Rooms this connection is in; changed only under the hub's room lock.
    pub(crate) rooms: Mutex<Vec<Arc<str>>>,
    /// Set when the connection has been unregistered; changed only under the room lock.
    pub(crate) gone: AtomicBool,
    /// The user this connection is filed under in the hub's user index; changed only under
    /// that index's lock.
    pub(crate) user: Mutex<Option<Arc<str>>>,
    /// Received messages waiting for the async handler, when the hub has one.
    pub(crate) inbox: Option<Box<tokio::sync::Mutex<mpsc::Receiver<Message>>>>,
    /// The hub this connection belongs to. A strong handle: the hub's map points back
    /// here only until the connection ends and unregisters, so no cycle outlives it.
    pub(crate) hub: Hub,
}

impl Shared {
    pub(crate) fn rooms(&self) -> MutexGuard<'_, Vec<Arc<str>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn user(&self) -> MutexGuard<'_, Option<Arc<str>>> {
        self.user.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle to one WebSocket connection. Cheap to clone; every clone talks to the same peer.
///
/// Sending never waits: messages go into the connection's bounded send queue and its own
/// task writes them (see [`HubConfig::send_queue_capacity`](crate::HubConfig)).
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.shared.info.id)
            .field("remote_addr", &self.shared.info.remote_addr)
            .finish()
    }
}

impl Connection {
    /// The hub this connection belongs to.
    pub fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.shared.info.id
    }

    /// Everything known from the handshake.
    pub fn info(&self) -> &ConnectionInfo {
        &self.shared.info
    }

    /// The peer's address (`None` only when the server could not tell).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.shared.info.remote_addr
    }

    /// When the connection was accepted (wall clock).
    pub fn connected_at(&self) -> SystemTime {
        self.shared.info.connected_at
    }

    /// How long the connection has been open.
    pub fn uptime(&self) -> Duration {
        self.shared.info.started.elapsed()
    }

    /// The `User-Agent` of the upgrade request (its first 256 bytes).
    pub fn user_agent(&self) -> Option<&str> {
        self.shared.info.user_agent.as_deref()
    }

    /// The headers of the upgrade request (empty when
    /// [`HubConfig::keep_headers`](crate::HubConfig::keep_headers) is off).
    pub fn headers(&self) -> &HeaderMap {
        self.shared.info.headers.map()
    }

    /// The identity the auth hook returned, if the hub has one.
    pub fn identity(&self) -> Option<&Identity> {
        self.shared.info.identity.as_ref()
    }

    /// The user id this connection belongs to: the auth hook's [`Identity::user`] (when not
    /// empty), or what [`set_user`](Self::set_user) set last. The hub finds a user's
    /// connections with [`Hub::connections_of_user`].
    pub fn user(&self) -> Option<Arc<str>> {
        self.shared.user().clone()
    }

    /// Files this connection under `user` in the hub's user index (an application's
    /// `Register(id)`), moving it from the user it had; `None` (or an empty id) takes it out
    /// of the index.
    ///
    /// # Errors
    /// [`Error::UserConnectionLimit`] when `user` already has
    /// [`HubConfig::max_connections_per_user`](crate::HubConfig::max_connections_per_user)
    /// connections (the connection keeps the user it had), [`Error::ConnectionClosed`] once
    /// the connection has ended.
    pub fn set_user(&self, user: Option<&str>) -> Result<(), Error> {
        let inner = &self.shared.hub.inner;
        // An empty id is no user, as from the auth hook.
        let user = user.filter(|user| !user.is_empty());
        inner
            .users
            .assign(&self.shared, user, inner.config.max_connections_per_user)
            .map_err(|refusal| match refusal {
                crate::users::Refusal::Full => Error::UserConnectionLimit {
                    user: user.unwrap_or_default().to_owned(),
                    max: inner.config.max_connections_per_user,
                },
                crate::users::Refusal::Gone => Error::ConnectionClosed,
            })
    }

    /// Queues a message for this peer without waiting.
    ///
    /// # Errors
    /// [`Error::ConnectionClosed`] if the connection is closing, [`Error::SendQueueFull`] if
    /// the queue was full (what then happens to the message and the connection follows the
    /// overflow policy).
    pub fn send(&self, message: Message) -> Result<(), Error> {
        let outcome = self.shared.queue.push(message);
        self.shared.hub.inner.count_push(outcome);
        match outcome {
            PushOutcome::Queued | PushOutcome::QueuedDroppingOldest => Ok(()),
            PushOutcome::DroppedNewest | PushOutcome::Overflowed { .. } => {
                Err(Error::SendQueueFull)
            }
            PushOutcome::Closed => Err(Error::ConnectionClosed),
        }
    }

    /// Queues a text message.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), Error> {
        self.send(Message::text(text))
    }

    /// Queues a binary message.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_binary(&self, bytes: impl Into<bytes::Bytes>) -> Result<(), Error> {
        self.send(Message::binary(bytes))
    }

    /// Queues `value` serialized as a JSON text message.
    ///
    /// # Errors
    /// [`Error::Json`], or as [`send`](Self::send).
    pub fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        self.send(Message::json(value)?)
    }

    /// Receives the next message from the peer, or `None` once the connection has ended.
    ///
    /// Only connections of a hub built with an async handler
    /// ([`HubBuilder::handler`](crate::HubBuilder::handler)) have an inbox; on others this
    /// returns `None` at once and messages go to the `on_message` callback. Cancel-safe.
    pub async fn recv(&self) -> Option<Message> {
        let inbox = self.shared.inbox.as_ref()?;
        inbox.lock().await.recv().await
    }

    /// Closes the connection with this code and reason after sending what is queued.
    /// The reason is cut to the 123 bytes a close frame can carry. Closing twice does nothing.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.shared.queue.close(CloseRequest {
            code,
            reason: reason.to_owned(),
            discard_pending: false,
        });
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.shared.gone.load(Ordering::Acquire) || self.shared.queue.is_closing()
    }

    /// How many messages wait in the send queue.
    pub fn queued(&self) -> usize {
        self.shared.queue.len()
    }

    /// Adds this connection to a room. Returns false if it was already a member.
    ///
    /// # Errors
    /// [`Error::ConnectionClosed`] once the connection has ended.
    pub fn join(&self, room: &str) -> Result<bool, Error> {
        self.shared.hub.inner.join(&self.shared, room)
    }

    /// Removes this connection from a room. Returns false if it was not a member.
    pub fn leave(&self, room: &str) -> bool {
        self.shared.hub.inner.leave(&self.shared, room)
    }

    /// The rooms this connection is in; once it has ended (in the disconnect callback),
    /// the rooms it was in when it ended.
    pub fn rooms(&self) -> Vec<String> {
        self.shared.rooms().iter().map(|r| r.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn permuted_sequences_are_unique_and_not_sequential() {
        let cipher = SequenceCipher::new();
        let ids: Vec<u64> = (0..100_000).map(|n| cipher.permute(n)).collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        // Consecutive counters land far apart: no two neighbours within 2^32 of each other.
        let close = ids
            .windows(2)
            .filter(|w| w[0].abs_diff(w[1]) < 1 << 32)
            .count();
        assert!(close < 10, "{close} neighbouring ids are close");
        // Another hub permutes differently.
        assert_ne!(SequenceCipher::new().permute(1), cipher.permute(1));
    }

    #[test]
    fn ids_print_and_parse_back() {
        let id = ConnectionId::new(0x3fa2_c91b_0e7d, SequenceCipher::new().permute(7));
        assert_eq!(id.to_string().parse::<ConnectionId>(), Ok(id));
    }

    #[test]
    fn headers_survive_the_compact_form() {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", http::HeaderValue::from_static("test/1"));
        headers.append("x-many", http::HeaderValue::from_static("a"));
        headers.append("x-many", http::HeaderValue::from_static("b"));
        headers.insert("x-empty", http::HeaderValue::from_static(""));
        let compact = RequestHeaders::new(&headers);
        assert_eq!(compact.map(), &headers);
        assert!(RequestHeaders::default().map().is_empty());
    }

    #[test]
    fn identity_carries_typed_data() {
        let identity = Identity::new("alice").with_data(7_u32);
        assert_eq!(identity.user(), "alice");
        assert_eq!(identity.data::<u32>(), Some(&7));
        assert_eq!(identity.data::<String>(), None);
    }
}
