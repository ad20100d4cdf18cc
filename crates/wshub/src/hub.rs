//! The registry of connections and rooms, and fan-out to them.
//!
//! Locks: `connections` and `rooms` are `std::sync::RwLock`s held only for map operations
//! and for the loop that pushes a shared message into each recipient's queue (which never
//! waits), never across an `.await`. Publishers take read locks, so any number of them fan
//! out in parallel; joins, leaves, connects and disconnects take the write lock briefly.
//! A connection's room list is changed only while holding the `rooms` write lock, so
//! `join` and `unregister` cannot interleave and leave a departed connection in a room.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio_util::task::TaskTracker;

use crate::{
    CloseCode, Connection, ConnectionId, Disconnect, Error, HandshakeRequest, HubConfig, Identity,
    Message, Rejection, Stats,
    connection::Shared,
    outbound::{CloseRequest, PushOutcome},
    stats::Counters,
    users::Users,
};

/// How long [`Hub::drain`] waits after its window for the last closing handshakes.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A boxed, sendable future, as the hub stores handlers and auth hooks.
type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;
type OnConnect = Arc<dyn Fn(&Connection) + Send + Sync>;
type OnMessage = Arc<dyn Fn(&Connection, Message) + Send + Sync>;
type OnDisconnect = Arc<dyn Fn(&Connection, &Disconnect) + Send + Sync>;
type OnError = Arc<dyn Fn(&Connection, &Error) + Send + Sync>;
pub(crate) type OnServerError = Arc<dyn Fn(&Error) + Send + Sync>;
pub(crate) type Handler = Arc<dyn Fn(Connection) -> BoxFuture<()> + Send + Sync>;
pub(crate) type AuthHook =
    Arc<dyn Fn(HandshakeRequest) -> BoxFuture<Result<Identity, Rejection>> + Send + Sync>;

/// The user's callbacks; each is optional.
#[derive(Default, Clone)]
pub(crate) struct Callbacks {
    pub(crate) on_connect: Option<OnConnect>,
    pub(crate) on_message: Option<OnMessage>,
    pub(crate) on_disconnect: Option<OnDisconnect>,
    pub(crate) on_error: Option<OnError>,
    pub(crate) on_server_error: Option<OnServerError>,
}

/// The members of one room, in a vector for fast fan-out and an index for O(1) removal.
#[derive(Debug, Default)]
struct Room {
    members: Vec<Arc<Shared>>,
    index: HashMap<ConnectionId, usize>,
}

impl Room {
    fn insert(&mut self, member: &Arc<Shared>) -> bool {
        let id = member.info.id;
        if self.index.contains_key(&id) {
            return false;
        }
        self.index.insert(id, self.members.len());
        self.members.push(Arc::clone(member));
        true
    }

    fn remove(&mut self, id: ConnectionId) -> bool {
        let Some(position) = self.index.remove(&id) else {
            return false;
        };
        self.members.swap_remove(position);
        if let Some(moved) = self.members.get(position) {
            self.index.insert(moved.info.id, position);
        }
        true
    }
}

/// The hub's state shared by every handle, connection task and route.
pub(crate) struct HubInner {
    pub(crate) config: HubConfig,
    node: u64,
    next_seq: AtomicU64,
    /// Turns `next_seq` into unguessable connection ids.
    ids: crate::connection::SequenceCipher,
    connections: RwLock<HashMap<ConnectionId, Arc<Shared>>>,
    rooms: RwLock<HashMap<Arc<str>, Room>>,
    /// Connections by user id, and the per-user cap.
    pub(crate) users: Users,
    pub(crate) callbacks: Callbacks,
    pub(crate) handler: Option<Handler>,
    pub(crate) auth: Option<AuthHook>,
    pub(crate) counters: Counters,
    /// Connections open or being upgraded; bounded by `config.max_connections`.
    admitted: AtomicUsize,
    shutting_down: AtomicBool,
    /// Set by [`Hub::drain`]: new connections are refused as during shutdown.
    draining: AtomicBool,
    /// Every connection task and handler task, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
}

impl fmt::Debug for HubInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("node", &format_args!("{:012x}", self.node))
            .field("connections", &self.read_connections().len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A slot under the connection limit, given back when dropped.
#[derive(Debug)]
pub(crate) struct Admission {
    hub: Arc<HubInner>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.hub.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HubInner {
    fn read_connections(&self) -> RwLockReadGuard<'_, HashMap<ConnectionId, Arc<Shared>>> {
        // Every critical section leaves the maps consistent, so a poisoned lock is usable.
        self.connections.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_connections(&self) -> RwLockWriteGuard<'_, HashMap<ConnectionId, Arc<Shared>>> {
        self.connections.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read_rooms(&self) -> RwLockReadGuard<'_, HashMap<Arc<str>, Room>> {
        self.rooms.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_rooms(&self) -> RwLockWriteGuard<'_, HashMap<Arc<str>, Room>> {
        self.rooms.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Whether new connections are refused: shutdown or a drain has begun.
    pub(crate) fn refuses_connections(&self) -> bool {
        self.is_shutting_down() || self.draining.load(Ordering::SeqCst)
    }

    /// Takes a slot under the connection limit, or `None` when the hub is full.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admission> {
        let max = self.config.max_connections;
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                // 0 means no limit, as in the Go hubs people arrive from.
                (max == 0 || n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Admission {
            hub: Arc::clone(self),
        })
    }

    pub(crate) fn next_id(&self) -> ConnectionId {
        let counter = self.next_seq.fetch_add(1, Ordering::Relaxed);
        ConnectionId::new(self.node, self.ids.permute(counter))
    }

    /// Adds a connection; refused (false) once shutdown has begun.
    pub(crate) fn register(&self, shared: &Arc<Shared>) -> bool {
        let mut connections = self.write_connections();
        // Checked under the lock: shutdown and drain set their flag before they walk the
        // map, so a connection is either refused here or seen (and closed) by them.
        if self.refuses_connections() {
            return false;
        }
        connections.insert(shared.info.id, Arc::clone(shared));
        self.counters
            .total_connections
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Removes a connection from the registry and from every room.
    pub(crate) fn unregister(&self, shared: &Arc<Shared>) {
        {
            let mut rooms = self.write_rooms();
            shared.gone.store(true, Ordering::Release);
            // The connection keeps its room list, so the disconnect callback can tell
            // which rooms it left (presence); `gone` stops it from joining more.
            for name in shared.rooms().iter() {
                remove_member(&mut rooms, name, shared.info.id);
            }
        }
        self.write_connections().remove(&shared.info.id);
        self.users.detach(shared);
    }

    pub(crate) fn join(&self, shared: &Arc<Shared>, room: &str) -> Result<bool, Error> {
        let mut rooms = self.write_rooms();
        if shared.gone.load(Ordering::Acquire) {
            return Err(Error::ConnectionClosed);
        }
        let inserted = match rooms.get_mut(room) {
            Some(members) => members.insert(shared),
            None => {
                let mut members = Room::default();
                members.insert(shared);
                rooms.insert(Arc::from(room), members);
                true
            }
        };
        if inserted {
            // The map owns one copy of the name; the connection's list shares it.
            let key = rooms
                .get_key_value(room)
                .map_or_else(|| Arc::from(room), |(k, _)| Arc::clone(k));
            shared.rooms().push(key);
        }
        Ok(inserted)
    }

    pub(crate) fn leave(&self, shared: &Arc<Shared>, room: &str) -> bool {
        let mut rooms = self.write_rooms();
        let removed = remove_member(&mut rooms, room, shared.info.id);
        if removed {
            shared.rooms().retain(|r| &**r != room);
        }
        removed
    }

    /// Counts what a single push did.
    pub(crate) fn count_push(&self, outcome: PushOutcome) {
        let mut tally = Tally::default();
        tally.record(outcome);
        tally.commit(&self.counters);
    }

    /// Pushes one shared message into every recipient's queue; returns how many took it.
    fn fan_out<'a>(
        &self,
        recipients: impl Iterator<Item = &'a Arc<Shared>>,
        message: &Message,
        except: Option<ConnectionId>,
    ) -> usize {
        let mut tally = Tally::default();
        for member in recipients {
            if Some(member.info.id) == except {
                continue;
            }
            tally.record(member.queue.push(message.clone()));
        }
        tally.commit(&self.counters);
        tally.queued
    }
}

fn remove_member(rooms: &mut HashMap<Arc<str>, Room>, room: &str, id: ConnectionId) -> bool {
    let Some(members) = rooms.get_mut(room) else {
        return false;
    };
    let removed = members.remove(id);
    if members.members.is_empty() {
        rooms.remove(room);
    }
    removed
}

/// Counts of one fan-out, added to the shared counters once at the end.
#[derive(Default)]
struct Tally {
    queued: usize,
    dropped: u64,
    overflowed: u64,
}

impl Tally {
    fn record(&mut self, outcome: PushOutcome) {
        match outcome {
            PushOutcome::Queued => self.queued += 1,
            PushOutcome::QueuedDroppingOldest => {
                self.queued += 1;
                self.dropped += 1;
            }
            PushOutcome::DroppedNewest => self.dropped += 1,
            PushOutcome::Overflowed { discarded } => {
                self.dropped += 1 + discarded as u64;
                self.overflowed += 1;
            }
            PushOutcome::Closed => {}
        }
    }

    fn commit(&self, counters: &Counters) {
        Counters::add(&counters.dropped_messages, self.dropped);
        Counters::add(&counters.slow_consumer_disconnects, self.overflowed);
    }
}

/// A hub of WebSocket connections: who is connected, which rooms they are in, and fan-out
/// to all of them, to a room, to one, or to all but one.
///
/// Cheap to clone; clones share the same connections. Mount it in axum with
/// [`router`](Self::router) or [`route`](Self::route), or serve it alone with
/// [`Server`](crate::Server).
#[derive(Clone, Debug)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl Hub {
    /// A hub with this configuration and no callbacks, handler or auth hook.
    pub fn new(config: HubConfig) -> Self {
        HubBuilder::new().config(config).build()
    }

    /// Starts building a hub with callbacks, an async handler or an auth hook.
    pub fn builder() -> HubBuilder {
        HubBuilder::new()
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The random prefix of this hub's connection ids.
    pub fn node_id(&self) -> u64 {
        self.inner.node
    }

    /// A connection by id.
    pub fn connection(&self, id: ConnectionId) -> Option<Connection> {
        self.inner
            .read_connections()
            .get(&id)
            .map(|shared| Connection {
                shared: Arc::clone(shared),
            })
    }

    /// Every open connection.
    pub fn connections(&self) -> Vec<Connection> {
        self.inner
            .read_connections()
            .values()
            .map(|shared| Connection {
                shared: Arc::clone(shared),
            })
            .collect()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.inner.read_connections().len()
    }

    /// The rooms with at least one member.
    pub fn rooms(&self) -> Vec<String> {
        self.inner
            .read_rooms()
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    /// The ids of a room's members (empty for an unknown room).
    pub fn room_members(&self, room: &str) -> Vec<ConnectionId> {
        self.inner
            .read_rooms()
            .get(room)
            .map_or_else(Vec::new, |r| r.members.iter().map(|m| m.info.id).collect())
    }

    /// How many members a room has.
    pub fn room_size(&self, room: &str) -> usize {
        self.inner
            .read_rooms()
            .get(room)
            .map_or(0, |r| r.members.len())
    }

    /// Adds a connection to a room. Returns false if it was already a member.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id.
    pub fn join(&self, id: ConnectionId, room: &str) -> Result<bool, Error> {
        let conn = self.connection(id).ok_or(Error::NotFound(id))?;
        self.inner.join(&conn.shared, room)
    }

    /// Removes a connection from a room. Returns false if it was not a member.
    pub fn leave(&self, id: ConnectionId, room: &str) -> bool {
        self.connection(id)
            .is_some_and(|conn| self.inner.leave(&conn.shared, room))
    }

    /// Sends a message to every connection. Returns how many connections it was queued for.
    /// Never waits on a slow connection.
    pub fn broadcast(&self, message: Message) -> usize {
        let connections = self.inner.read_connections();
        self.inner.fan_out(connections.values(), &message, None)
    }

    /// Sends a message to every connection but one (usually the sender).
    pub fn broadcast_except(&self, message: Message, except: ConnectionId) -> usize {
        let connections = self.inner.read_connections();
        self.inner
            .fan_out(connections.values(), &message, Some(except))
    }

    /// Sends a message to every member of a room. Returns how many it was queued for.
    pub fn broadcast_to_room(&self, room: &str, message: Message) -> usize {
        let rooms = self.inner.read_rooms();
        rooms
            .get(room)
            .map_or(0, |r| self.inner.fan_out(r.members.iter(), &message, None))
    }

    /// Sends a message to every member of a room but one.
    pub fn broadcast_to_room_except(
        &self,
        room: &str,
        message: Message,
        except: ConnectionId,
    ) -> usize {
        let rooms = self.inner.read_rooms();
        rooms.get(room).map_or(0, |r| {
            self.inner.fan_out(r.members.iter(), &message, Some(except))
        })
    }

    /// Sends a message to one connection.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id, or as [`Connection::send`].
    pub fn send_to(&self, id: ConnectionId, message: Message) -> Result<(), Error> {
        self.connection(id)
            .ok_or(Error::NotFound(id))?
            .send(message)
    }

    /// The open connections of one user (see [`Connection::user`]); empty for a user with
    /// none. One hash lookup, whatever the number of connections.
    pub fn connections_of_user(&self, user: &str) -> Vec<Connection> {
        self.inner.users.with_connections(user, |connections| {
            connections
                .iter()
                .map(|shared| Connection {
                    shared: Arc::clone(shared),
                })
                .collect()
        })
    }

    /// Sends a message to every connection of one user. Returns how many connections it was
    /// queued for (0 for a user with none). Never waits on a slow connection.
    pub fn send_to_user(&self, user: &str, message: Message) -> usize {
        self.inner.users.with_connections(user, |connections| {
            self.inner.fan_out(connections.iter(), &message, None)
        })
    }

    /// Closes every connection of one user with this code and reason, after what is queued
    /// for them. Returns how many connections it closed.
    pub fn disconnect_user(&self, user: &str, code: CloseCode, reason: &str) -> usize {
        let connections = self.connections_of_user(user);
        for conn in &connections {
            conn.close(code, reason);
        }
        connections.len()
    }

    /// How many users have at least one open connection.
    pub fn user_count(&self) -> usize {
        self.inner.users.count()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let connections = self.connection_count();
        let rooms = self.inner.read_rooms().len();
        self.inner.counters.snapshot(connections, rooms)
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.is_shutting_down()
    }

    /// Whether [`drain`](Self::drain) has begun.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Drains the hub without a reconnect storm: new upgrades get 503 (as during
    /// [`shutdown`](Self::shutdown)), and each open connection is closed at its own random
    /// moment within `window`, with [`CloseCode::SERVICE_RESTART`] (1012) and the reason
    /// `service restart`, after what was queued for it. Clients that reconnect promptly on
    /// 1012 thus arrive elsewhere spread over the window instead of all at once.
    ///
    /// Returns when every connection task and handler has ended, or when `window` plus
    /// [`DRAIN_GRACE`] has passed; call [`shutdown`](Self::shutdown) afterwards to drop
    /// what is left. Calling it again (or concurrently) starts nothing new: it waits in the
    /// same way. Needs a Tokio runtime (the closes are timed by a task of their own).
    pub async fn drain(&self, window: Duration) {
        if !self.inner.draining.swap(true, Ordering::SeqCst) {
            // The flag is set before the map is read: a connection registering now is
            // either refused or in this list.
            let keys = RandomState::new();
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            let mut closes: Vec<(Duration, Connection)> = self
                .connections()
                .into_iter()
                .map(|conn| {
                    let at = match window_ms {
                        0 => 0,
                        ms => keys.hash_one(conn.id()) % ms,
                    };
                    (Duration::from_millis(at), conn)
                })
                .collect();
            closes.sort_by_key(|(at, _)| *at);
            tracing::info!(connections = closes.len(), ?window, "draining");
            let start = tokio::time::Instant::now();
            tokio::spawn(async move {
                for (at, conn) in closes {
                    tokio::time::sleep_until(start + at).await;
                    conn.close(CloseCode::SERVICE_RESTART, "service restart");
                }
            });
            self.inner.tasks.close();
        }
        let _ = tokio::time::timeout(window + DRAIN_GRACE, self.inner.tasks.wait()).await;
    }

    /// Shuts the hub down gracefully: new upgrades get 503; every connection gets what was
    /// queued for it, then a close frame with 1001; once `deadline` has passed, connections
    /// still open are dropped. Returns when every connection task and handler has ended
    /// (handlers get one more second after the deadline, then are left running detached).
    pub async fn shutdown(&self, deadline: Duration) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        for conn in self.connections() {
            conn.shared.queue.close(CloseRequest {
                code: CloseCode::GOING_AWAY,
                reason: "server shutting down".to_owned(),
                discard_pending: false,
            });
        }
        self.inner.tasks.close();
        if tokio::time::timeout(deadline, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.inner.tasks.len(),
                "shutdown deadline passed; dropping connections still open"
            );
            for conn in self.connections() {
                conn.shared.queue.abort();
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.tasks.wait()).await;
        }
    }
}

/// Builds a [`Hub`] with callbacks, an async handler and an auth hook.
///
/// Callbacks run on the connection's own task: keep them short and non-blocking (queue
/// work elsewhere for anything slow). The async handler runs as its own task per
/// connection.
#[derive(Default)]
pub struct HubBuilder {
    config: HubConfig,
    callbacks: Callbacks,
    handler: Option<Handler>,
    auth: Option<AuthHook>,
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HubBuilder {
    /// A builder with the default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the configuration.
    pub fn config(mut self, config: HubConfig) -> Self {
        self.config = config;
        self
    }

    /// Called once a connection is registered, before any of its messages.
    pub fn on_connect(mut self, f: impl Fn(&Connection) + Send + Sync + 'static) -> Self {
        self.callbacks.on_connect = Some(Arc::new(f));
        self
    }

    /// Called for every message a peer sends.
    pub fn on_message(mut self, f: impl Fn(&Connection, Message) + Send + Sync + 'static) -> Self {
        self.callbacks.on_message = Some(Arc::new(f));
        self
    }

    /// Called once a connection has ended and left every room, with why it ended.
    pub fn on_disconnect(
        mut self,
        f: impl Fn(&Connection, &Disconnect) + Send + Sync + 'static,
    ) -> Self {
        self.callbacks.on_disconnect = Some(Arc::new(f));
        self
    }

    /// Called when an error ends or degrades a connection (protocol violation, oversized
    /// message, invalid UTF-8, send-queue overflow, pong or write timeout, I/O error).
    pub fn on_error(mut self, f: impl Fn(&Connection, &Error) + Send + Sync + 'static) -> Self {
        self.callbacks.on_error = Some(Arc::new(f));
        self
    }

    /// Called by the stand-alone [`Server`](crate::Server) for failures that belong to no
    /// connection: [`Error::Accept`] (out of file descriptors, say; the server keeps
    /// accepting) and [`Error::TlsHandshake`]. Beside [`on_error`](Self::on_error), which is
    /// per connection. A hub served by your own axum server never calls it.
    pub fn on_server_error(mut self, f: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.callbacks.on_server_error = Some(Arc::new(f));
        self
    }

    /// Runs `handler` as its own task for every connection; it reads with
    /// [`Connection::recv`]. When the handler returns, the connection is closed with 1000.
    pub fn handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handler = Some(Arc::new(move |conn| Box::pin(handler(conn))));
        self
    }

    /// Authenticates every upgrade request before it is accepted: return the connection's
    /// [`Identity`], or a [`Rejection`] (usually [`Rejection::unauthorized`], 401). It is
    /// bounded by [`HubConfig::handshake_timeout`].
    pub fn auth<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(HandshakeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Identity, Rejection>> + Send + 'static,
    {
        self.auth = Some(Arc::new(move |request| Box::pin(hook(request))));
        self
    }

    /// Builds the hub.
    pub fn build(self) -> Hub {
        // 48 random bits per hub (from the standard library's per-process random keys),
        // so ids from different hubs and processes do not collide.
        let node = RandomState::new().hash_one(std::process::id()) & 0xffff_ffff_ffff;
        Hub {
            inner: Arc::new(HubInner {
                config: self.config,
                node,
                next_seq: AtomicU64::new(1),
                ids: crate::connection::SequenceCipher::new(),
                connections: RwLock::new(HashMap::new()),
                rooms: RwLock::new(HashMap::new()),
                users: Users::default(),
                callbacks: self.callbacks,
                handler: self.handler,
                auth: self.auth,
                counters: Counters::default(),
                admitted: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                tasks: TaskTracker::new(),
            }),
        }
    }
}
