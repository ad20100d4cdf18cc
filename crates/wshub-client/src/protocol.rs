//! The wshub protocol client, [`WshubClient`], on top of the reconnecting [`Client`].
//!
//! One task, the *dispatcher*, reads the connection's events in order and routes each
//! server frame: `welcome` makes the connection ready (rooms are joined again with `since`,
//! then the publishes queued while offline are sent), replies go to the command that
//! waits for their `id`, `message`/`join`/`leave` go to their room's [`Subscription`]
//! (after the duplicate check of the private `cursor` module), `direct` and `broadcast` to
//! [`WshubEvents`].
//!
//! Commands are written under the state lock, so their order on the wire is the order in
//! which they were made; the lock is never held across an `.await`. Deliveries to a
//! subscription wait for room in its channel: a reader that falls behind slows the whole
//! connection down (and, past the server's send queue, gets it closed with 1013, after
//! which the client reconnects and recovers) rather than losing messages.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wshub_protocol::{
    Broadcast, BroadcastFrame, Command, CommandId, DirectFrame, Epoch, ErrorCode, HistoryQuery,
    MessageFrame, Offset, Payload, Ping, PresenceClient, PresenceQuery, Publish, RoomName, SendTo,
    ServerFrame, StreamPosition, Subscribe, Unsubscribe, WelcomeFrame,
};

use crate::backoff::{Backoff, Jitter, RandomJitter};
use crate::connection::{Client, ClientBuilder, ConnectionState, Event, Events, Outlet};
use crate::cursor::{Cursor, Resumed};
use crate::error::Error;
use crate::pending::Pending;
use crate::subscription::{Subscription, SubscriptionEvent};
use crate::transport::Message;

/// Something that happened to a [`WshubClient`] outside any room.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WshubEvent {
    /// The server's `welcome` arrived: the connection is ready and rooms are being joined
    /// again.
    Connected(WelcomeFrame),
    /// The connection ended; `error` says why, `None` when the client closed it.
    Disconnected {
        /// Why it ended, unless the client itself closed it.
        error: Option<Error>,
    },
    /// Reconnect attempt `attempt` starts in `delay`.
    Reconnecting {
        /// 1 for the first attempt after a drop.
        attempt: u32,
        /// The jittered wait before it.
        delay: Duration,
    },
    /// Every allowed reconnect attempt failed.
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
    },
    /// A `send` to this connection.
    Direct(DirectFrame),
    /// A broadcast.
    Broadcast(BroadcastFrame),
    /// A failure no call is waiting for: a failed connection attempt, an `error` frame
    /// without an `id`, a frame that could not be decoded.
    Error(Error),
}

/// The stream of a [`WshubClient`]'s [`WshubEvent`]s. Read it or drop it: while it is
/// full, the client waits.
#[derive(Debug)]
pub struct WshubEvents {
    rx: mpsc::Receiver<WshubEvent>,
}

impl WshubEvents {
    /// The next event; `None` once the client is closed. Cancel-safe.
    pub async fn recv(&mut self) -> Option<WshubEvent> {
        self.rx.recv().await
    }
}

impl Stream for WshubEvents {
    type Item = WshubEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WshubEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// The reply to a [`WshubClient::publish`]: resolves to the message's offset, or fails
/// with the server's error, [`Error::Timeout`] or [`Error::Disconnected`]. The publish was
/// already written (or queued) when this was returned; dropping it before it resolves
/// keeps a queued publish from being sent.
#[must_use = "the publish fails silently unless its reply is awaited"]
pub struct PublishReply {
    reply: Pin<Box<dyn Future<Output = Result<Offset, Error>> + Send>>,
}

impl fmt::Debug for PublishReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishReply").finish_non_exhaustive()
    }
}

impl Future for PublishReply {
    type Output = Result<Offset, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.reply.as_mut().poll(cx)
    }
}

/// A page of a room's history.
#[derive(Debug, Clone)]
pub struct History {
    /// The room's epoch.
    pub epoch: Epoch,
    /// The messages, oldest first.
    pub messages: Vec<MessageFrame>,
    /// With `since`: whether the history reached back to it in the same epoch.
    pub recovered: Option<bool>,
}

/// Configures and builds a [`WshubClient`].
#[derive(Debug)]
pub struct WshubClientBuilder {
    connection: ClientBuilder,
    settings: Settings,
    event_capacity: usize,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    request_timeout: Duration,
    offline_queue_capacity: usize,
    subscription_capacity: usize,
}

impl WshubClientBuilder {
    /// A builder for a client of the wshub endpoint at `url` (e.g. `ws://host:8080/ws`).
    pub fn new(url: impl Into<String>) -> WshubClientBuilder {
        WshubClientBuilder {
            connection: ClientBuilder::new(url),
            settings: Settings {
                request_timeout: Duration::from_secs(10),
                offline_queue_capacity: 256,
                subscription_capacity: 1024,
            },
            event_capacity: 1024,
        }
    }

    /// Configures the underlying connection: headers (`Authorization: Bearer <JWT>`),
    /// backoff, heartbeat, queue sizes, callbacks.
    pub fn connection(mut self, configure: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Self {
        self.connection = configure(self.connection);
        self
    }

    /// How long a command waits for its reply (a publish made while offline: from the
    /// call). Default: 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// How many publishes made while disconnected are kept to be sent after reconnecting;
    /// 0 turns the queue off (such publishes fail with [`Error::NotConnected`]).
    /// Default: 256.
    pub fn offline_queue_capacity(mut self, capacity: usize) -> Self {
        self.settings.offline_queue_capacity = capacity;
        self
    }

    /// How many events each [`Subscription`] buffers. Default: 1024.
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.settings.subscription_capacity = capacity.max(1);
        self
    }

    /// How many events [`WshubEvents`] buffers. Default: 1024.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Builds the client and starts connecting. Must be called inside a Tokio runtime.
    pub fn build(self) -> Result<(WshubClient, WshubEvents), Error> {
        let (client, events) = self.connection.build()?;
        let (welcome, _) = watch::channel(None);
        let core = Arc::new(Core {
            outlet: client.outlet(),
            settings: self.settings,
            state: Mutex::new(State::default()),
            welcome,
        });
        let (events_tx, events_rx) = mpsc::channel(self.event_capacity);
        client.spawn(dispatch(
            Arc::clone(&core),
            events,
            events_tx,
            client.watch_state(),
            client.cancellation(),
        ));
        client.connect();
        let inner = Arc::new(Inner { client, core });
        Ok((WshubClient { inner }, WshubEvents { rx: events_rx }))
    }
}

/// A client of a wshub server: rooms, request/reply commands, recovery after reconnects.
///
/// Cheap to clone. Dropping the last clone stops its tasks; [`WshubClient::close`] does so
/// and waits for them.
#[derive(Debug, Clone)]
pub struct WshubClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    core: Arc<Core>,
}

impl WshubClient {
    /// A builder for a client of `url`.
    pub fn builder(url: impl Into<String>) -> WshubClientBuilder {
        WshubClientBuilder::new(url)
    }

    /// Waits until the server's `welcome` arrived on an open connection and returns it.
    /// Fails when the client gave up or was closed. Cancel-safe; bound it with a timeout.
    pub async fn ready(&self) -> Result<WelcomeFrame, Error> {
        let mut welcome = self.inner.core.welcome.subscribe();
        let mut state = self.inner.client.watch_state();
        loop {
            if let Some(frame) = welcome.borrow_and_update().clone() {
                return Ok(frame);
            }
            match *state.borrow_and_update() {
                ConnectionState::Stopped => return Err(Error::NotConnected),
                ConnectionState::Closed => return Err(Error::ClientClosed),
                _ => {}
            }
            tokio::select! {
                changed = welcome.changed() => changed.map_err(|_| Error::ClientClosed)?,
                changed = state.changed() => changed.map_err(|_| Error::ClientClosed)?,
            }
        }
    }

    /// Whether the connection is open and welcomed.
    pub fn is_ready(&self) -> bool {
        self.inner.core.welcome.borrow().is_some()
    }

    /// This connection's id (from `welcome`), while connected.
    pub fn connection_id(&self) -> Option<String> {
        self.inner
            .core
            .welcome
            .borrow()
            .as_ref()
            .map(|w| w.client.clone())
    }

    /// The underlying reconnecting connection.
    pub fn connection(&self) -> &Client {
        &self.inner.client
    }

    /// Joins `room` and waits for the server's `ok`. While disconnected, the room is
    /// joined as soon as a connection is ready (within the request timeout). A subscribe
    /// answered `unavailable` (the server's backplane is out of reach) is sent again with
    /// backoff, within the request timeout here, and for as long as the subscription lives
    /// once it has been confirmed.
    ///
    /// Fails with [`Error::AlreadySubscribed`] when this client already follows the room,
    /// [`Error::Server`] when the server refuses (`forbidden`, `limit_exceeded`, ...),
    /// [`Error::Timeout`].
    pub async fn subscribe(&self, room: impl AsRef<str>) -> Result<Subscription, Error> {
        let room = RoomName::parse(room.as_ref())?;
        self.inner.core.subscribe(room).await
    }

    /// Leaves `room` (its [`Subscription`] ends) and waits for the reply. Nothing to do
    /// while disconnected: the server forgot the connection's rooms with it.
    pub async fn unsubscribe(&self, room: impl AsRef<str>) -> Result<(), Error> {
        let room = RoomName::parse(room.as_ref())?;
        self.inner.core.unsubscribe(&room, None).await
    }

    /// Publishes `data` (serialized to JSON) to `room`; the future resolves to the
    /// message's offset.
    ///
    /// The command is written, or queued, when `publish` is called, not when the future is
    /// first polled: publishes go out in call order, and the future is `'static`. While
    /// disconnected the publish waits in the offline queue (when enabled) and is sent after
    /// reconnecting; a full queue fails at once with [`Error::OfflineQueueFull`]. A queued
    /// publish whose future timed out or was dropped is not sent. A publish in flight when
    /// the connection drops fails with [`Error::Disconnected`]: it may or may not have
    /// been delivered.
    pub fn publish<T: Serialize + ?Sized>(&self, room: impl AsRef<str>, data: &T) -> PublishReply {
        let started = RoomName::parse(room.as_ref())
            .map_err(Error::from)
            .and_then(|room| {
                let data = Payload::from_value(data).map_err(Error::json)?;
                self.inner.core.start_publish(room, data)
            });
        self.finish_publish(started)
    }

    /// Publishes raw JSON data, as [`WshubClient::publish`].
    pub fn publish_payload(&self, room: &RoomName, data: Payload) -> PublishReply {
        let started = self.inner.core.start_publish(room.clone(), data);
        self.finish_publish(started)
    }

    fn finish_publish(&self, started: Result<Started, Error>) -> PublishReply {
        let core = Arc::clone(&self.inner.core);
        PublishReply {
            reply: Box::pin(async move {
                let (id, reply) = started?;
                match core.wait("publish", id, reply).await? {
                    ServerFrame::Ok(ok) => ok
                        .offset
                        .ok_or(Error::UnexpectedReply { command: "publish" }),
                    _ => Err(Error::UnexpectedReply { command: "publish" }),
                }
            }),
        }
    }

    /// Sends `data` to one connection (by its connection id). [`Error::Server`] with
    /// `not_found` when there is none.
    pub async fn send<T: Serialize + ?Sized>(&self, to: &str, data: &T) -> Result<(), Error> {
        let data = Payload::from_value(data).map_err(Error::json)?;
        let to = to.to_owned();
        self.inner
            .core
            .request("send", |id| {
                Command::Send(SendTo {
                    id: Some(id),
                    to,
                    data,
                })
            })
            .await
            .map(drop)
    }

    /// Sends `data` to every connection.
    pub async fn broadcast<T: Serialize + ?Sized>(&self, data: &T) -> Result<(), Error> {
        let data = Payload::from_value(data).map_err(Error::json)?;
        self.inner
            .core
            .request("broadcast", |id| {
                Command::Broadcast(Broadcast { id: Some(id), data })
            })
            .await
            .map(drop)
    }

    /// The connections in `room`.
    pub async fn presence(&self, room: impl AsRef<str>) -> Result<Vec<PresenceClient>, Error> {
        let room = RoomName::parse(room.as_ref())?;
        let reply = self
            .inner
            .core
            .request("presence", |id| {
                Command::Presence(PresenceQuery { id: Some(id), room })
            })
            .await?;
        match reply {
            ServerFrame::Ok(ok) => ok.clients.ok_or(Error::UnexpectedReply {
                command: "presence",
            }),
            _ => Err(Error::UnexpectedReply {
                command: "presence",
            }),
        }
    }

    /// A page of `room`'s history: with `since`, the oldest `limit` messages after it;
    /// without, the newest `limit` (docs/PROTOCOL.md, `history`).
    pub async fn history(
        &self,
        room: impl AsRef<str>,
        since: Option<StreamPosition>,
        limit: Option<usize>,
    ) -> Result<History, Error> {
        let room = RoomName::parse(room.as_ref())?;
        let reply = self
            .inner
            .core
            .request("history", |id| {
                Command::History(HistoryQuery {
                    id: Some(id),
                    room,
                    since,
                    limit,
                })
            })
            .await?;
        match reply {
            ServerFrame::Ok(ok) => match ok.epoch {
                Some(epoch) => Ok(History {
                    epoch,
                    messages: ok.messages.unwrap_or_default(),
                    recovered: ok.recovered,
                }),
                None => Err(Error::UnexpectedReply { command: "history" }),
            },
            _ => Err(Error::UnexpectedReply { command: "history" }),
        }
    }

    /// Sends a protocol `ping` and returns the round-trip time to its `pong`.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let started = Instant::now();
        self.inner
            .core
            .request("ping", |id| Command::Ping(Ping { id: Some(id) }))
            .await?;
        Ok(started.elapsed())
    }

    /// The position of the last message delivered in `room`, if subscribed.
    pub fn position(&self, room: &RoomName) -> Option<StreamPosition> {
        self.inner.core.position(room)
    }

    /// Starts connecting again after [`WshubClient::disconnect`] or after giving up.
    pub fn connect(&self) {
        self.inner.client.connect();
    }

    /// Closes the connection and stops reconnecting; subscriptions are kept and joined
    /// again on [`WshubClient::connect`].
    pub async fn disconnect(&self) {
        self.inner.client.disconnect().await;
    }

    /// Closes the client for good and waits for its tasks; pending calls fail with
    /// [`Error::ClientClosed`] and subscriptions end.
    pub async fn close(&self) {
        self.inner.client.close().await;
    }
}

/// A room this client follows.
struct Room {
    /// Tells this subscription from an earlier one to the same room.
    generation: u64,
    cursor: Cursor,
    events: mpsc::Sender<SubscriptionEvent>,
    /// The `subscribe` call waiting for the first `ok`.
    confirm: Option<oneshot::Sender<Result<(), Error>>>,
    /// `unavailable` answers in a row to this room's subscribe (see [`UNAVAILABLE_RETRY`]).
    unavailable: u32,
}

/// How a subscribe answered `unavailable` (the server's backplane is out of reach for now)
/// is tried again: after a jittered delay doubling from 100 ms up to 5 s, for as long as
/// the subscription lives. Every other error ends the subscription.
const UNAVAILABLE_RETRY: Backoff = Backoff {
    initial_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(5),
    max_attempts: 0,
};

/// A publish made while disconnected.
struct Queued {
    room: RoomName,
    data: Payload,
    reply: oneshot::Sender<Result<ServerFrame, Error>>,
}

/// What waits for a reply.
enum Waiter {
    /// A call: gets the `ok`/`pong` frame or the error.
    Request {
        command: &'static str,
        reply: oneshot::Sender<Result<ServerFrame, Error>>,
    },
    /// A (re)subscription: the reply updates the room's cursor.
    Subscribe {
        room: RoomName,
        generation: u64,
        since: Option<StreamPosition>,
    },
}

#[derive(Default)]
struct State {
    /// The `welcome` of the open connection arrived.
    ready: bool,
    closed: bool,
    pending: Pending<Waiter>,
    rooms: HashMap<RoomName, Room>,
    offline: VecDeque<Queued>,
    last_generation: u64,
}

/// The protocol state shared by the handles, the subscriptions and the dispatcher. It does
/// not own the connection, so it keeps no task alive.
pub(crate) struct Core {
    outlet: Outlet,
    settings: Settings,
    state: Mutex<State>,
    welcome: watch::Sender<Option<WelcomeFrame>>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Core")
            .field("ready", &state.ready)
            .field("rooms", &state.rooms.len())
            .field("pending", &state.pending.len())
            .field("offline", &state.offline.len())
            .finish_non_exhaustive()
    }
}

type Deliveries = Vec<(mpsc::Sender<SubscriptionEvent>, SubscriptionEvent)>;

/// A written or queued publish: its id (`None` while queued) and where its reply arrives.
type Started = (
    Option<CommandId>,
    oneshot::Receiver<Result<ServerFrame, Error>>,
);

impl Core {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `waiter`, writes the command built with its id. On failure nothing stays
    /// registered and the waiter is handed back.
    fn send_command(
        &self,
        state: &mut State,
        waiter: Waiter,
        make: impl FnOnce(CommandId) -> Command,
    ) -> Result<CommandId, (Error, Option<Waiter>)> {
        let id = state.pending.register(waiter);
        let text = make(id.clone()).to_json();
        match self.outlet.send(Message::Text(text)) {
            Ok(()) => Ok(id),
            Err(error) => Err((error, state.pending.take(&id))),
        }
    }

    /// Waits for the reply of a command (or of a queued publish, `id: None`).
    async fn wait(
        &self,
        command: &'static str,
        id: Option<CommandId>,
        reply: oneshot::Receiver<Result<ServerFrame, Error>>,
    ) -> Result<ServerFrame, Error> {
        let timeout = self.settings.request_timeout;
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ClientClosed),
            Err(_) => {
                if let Some(id) = id {
                    self.lock().pending.take(&id);
                }
                Err(Error::Timeout { command, timeout })
            }
        }
    }

    /// Sends a command on the ready connection and waits for its reply.
    async fn request(
        &self,
        command: &'static str,
        make: impl FnOnce(CommandId) -> Command,
    ) -> Result<ServerFrame, Error> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut state = self.lock();
            if state.closed {
                return Err(Error::ClientClosed);
            }
            if !state.ready {
                return Err(Error::NotConnected);
            }
            let waiter = Waiter::Request { command, reply: tx };
            self.send_command(&mut state, waiter, make)
                .map_err(|(error, _)| error)?
        };
        self.wait(command, Some(id), rx).await
    }

    /// Writes a publish, or queues it while offline; returns what to wait on.
    fn start_publish(&self, room: RoomName, data: Payload) -> Result<Started, Error> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        if state.closed {
            return Err(Error::ClientClosed);
        }
        if !state.ready {
            self.enqueue(
                &mut state,
                Queued {
                    room,
                    data,
                    reply: tx,
                },
            )?;
            return Ok((None, rx));
        }
        let waiter = Waiter::Request {
            command: "publish",
            reply: tx,
        };
        let (r, d) = (room.clone(), data.clone());
        match self.send_command(&mut state, waiter, |id| publish_command(id, r, d)) {
            Ok(id) => Ok((Some(id), rx)),
            Err((Error::NotConnected, Some(Waiter::Request { reply, .. }))) => {
                // The connection dropped under us: queue as if offline.
                self.enqueue(&mut state, Queued { room, data, reply })?;
                Ok((None, rx))
            }
            Err((error, _)) => Err(error),
        }
    }

    fn enqueue(&self, state: &mut State, queued: Queued) -> Result<(), Error> {
        let capacity = self.settings.offline_queue_capacity;
        if capacity == 0 {
            return Err(Error::NotConnected);
        }
        // Publishes nobody waits for any more are not sent: make room.
        state.offline.retain(|q| !q.reply.is_closed());
        if state.offline.len() >= capacity {
            return Err(Error::OfflineQueueFull { capacity });
        }
        state.offline.push_back(queued);
        Ok(())
    }

    async fn subscribe(self: &Arc<Self>, room: RoomName) -> Result<Subscription, Error> {
        let (events_tx, events_rx) = mpsc::channel(self.settings.subscription_capacity);
        let (confirm_tx, confirm_rx) = oneshot::channel();
        let generation = {
            let mut state = self.lock();
            if state.closed {
                return Err(Error::ClientClosed);
            }
            if state.rooms.contains_key(&room) {
                return Err(Error::AlreadySubscribed(room));
            }
            state.last_generation = state.last_generation.wrapping_add(1);
            let generation = state.last_generation;
            state.rooms.insert(
                room.clone(),
                Room {
                    generation,
                    cursor: Cursor::default(),
                    events: events_tx,
                    confirm: Some(confirm_tx),
                    unavailable: 0,
                },
            );
            if state.ready {
                // On failure the room is joined with the next `welcome`.
                let _ = self.send_subscribe(&mut state, &room, generation, None);
            }
            generation
        };
        // Built before waiting: if this call is dropped, its drop forgets the room.
        let subscription = Subscription::new(room, generation, events_rx, Arc::clone(self));
        let timeout = self.settings.request_timeout;
        match tokio::time::timeout(timeout, confirm_rx).await {
            Ok(Ok(Ok(()))) => Ok(subscription),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => Err(Error::ClientClosed),
            Err(_) => Err(Error::Timeout {
                command: "subscribe",
                timeout,
            }),
        }
    }

    fn send_subscribe(
        &self,
        state: &mut State,
        room: &RoomName,
        generation: u64,
        since: Option<StreamPosition>,
    ) -> Result<CommandId, Error> {
        let waiter = Waiter::Subscribe {
            room: room.clone(),
            generation,
            since: since.clone(),
        };
        self.send_command(state, waiter, |id| {
            Command::Subscribe(Subscribe {
                id: Some(id),
                room: room.clone(),
                since,
            })
        })
        .map_err(|(error, _)| error)
    }

    pub(crate) async fn unsubscribe(
        &self,
        room: &RoomName,
        generation: Option<u64>,
    ) -> Result<(), Error> {
        let removed = {
            let mut state = self.lock();
            let matches = state
                .rooms
                .get(room)
                .is_some_and(|r| generation.is_none_or(|g| g == r.generation));
            if matches {
                state.rooms.remove(room);
            }
            if !state.ready {
                return Ok(());
            }
            matches
        };
        if !removed && generation.is_some() {
            return Ok(());
        }
        let room = room.clone();
        self.request("unsubscribe", |id| {
            Command::Unsubscribe(Unsubscribe { id: Some(id), room })
        })
        .await
        .map(drop)
    }

    /// A dropped [`Subscription`]: leave the room without waiting for the reply.
    pub(crate) fn forget(&self, room: &RoomName, generation: u64) {
        let mut state = self.lock();
        if state
            .rooms
            .get(room)
            .is_none_or(|r| r.generation != generation)
        {
            return;
        }
        state.rooms.remove(room);
        if state.ready {
            let command = Command::Unsubscribe(Unsubscribe {
                id: None,
                room: room.clone(),
            });
            let _ = self.outlet.send(Message::Text(command.to_json()));
        }
    }

    /// Sends a room's subscribe again (after an `unavailable` answer), from its cursor,
    /// unless the subscription has ended or the connection is down (the next `welcome`
    /// joins every room again anyway).
    fn subscribe_again(&self, room: &RoomName, generation: u64) {
        let mut state = self.lock();
        if state.closed || !state.ready {
            return;
        }
        let Some(since) = state
            .rooms
            .get(room)
            .filter(|r| r.generation == generation)
            .map(|r| r.cursor.since())
        else {
            return;
        };
        if let Err(error) = self.send_subscribe(&mut state, room, generation, since) {
            tracing::debug!(%room, %error, "could not send the subscribe again");
        }
    }

    pub(crate) fn position(&self, room: &RoomName) -> Option<StreamPosition> {
        self.lock().rooms.get(room).and_then(|r| r.cursor.since())
    }

    /// The `welcome` frame: join every room again with `since`, then send the publishes
    /// queued while offline (after the joins, so a subscriber gets its own messages).
    fn on_welcome(&self, welcome: WelcomeFrame) {
        let mut state = self.lock();
        state.ready = true;
        let rooms: Vec<(RoomName, u64, Option<StreamPosition>)> = state
            .rooms
            .iter()
            .map(|(name, room)| (name.clone(), room.generation, room.cursor.since()))
            .collect();
        for (room, generation, since) in rooms {
            if let Err(error) = self.send_subscribe(&mut state, &room, generation, since) {
                tracing::debug!(%room, %error, "could not join the room again");
            }
        }
        while let Some(queued) = state.offline.pop_front() {
            if queued.reply.is_closed() {
                continue;
            }
            let Queued { room, data, reply } = queued;
            let waiter = Waiter::Request {
                command: "publish",
                reply,
            };
            let (r, d) = (room.clone(), data.clone());
            if let Err((error, waiter)) =
                self.send_command(&mut state, waiter, |id| publish_command(id, r, d))
            {
                tracing::debug!(%error, "could not send a queued publish");
                if let Some(Waiter::Request { reply, .. }) = waiter {
                    state.offline.push_front(Queued { room, data, reply });
                }
                break;
            }
        }
        drop(state);
        self.welcome.send_replace(Some(welcome));
    }

    /// The connection dropped: replies will not come.
    fn on_disconnected(&self) {
        let mut state = self.lock();
        state.ready = false;
        for (id, waiter) in state.pending.drain() {
            if let Waiter::Request { command, reply } = waiter {
                let _ = reply.send(Err(Error::Disconnected { command, id }));
            }
            // Subscriptions are sent again with the next `welcome`.
        }
        drop(state);
        self.welcome.send_replace(None);
    }

    /// Every reconnect attempt failed: nothing queued will be sent.
    fn on_gave_up(&self, attempts: u32) {
        self.fail_waiting(&Error::GaveUp { attempts });
    }

    /// The connection ended and will not be reopened (a close the reconnect policy treats
    /// as final): what waits fails with the close's error.
    fn on_stopped(&self, error: Option<Error>) {
        self.fail_waiting(&error.unwrap_or(Error::NotConnected));
    }

    /// No connection is coming: publishes queued while offline and subscriptions waiting
    /// for their confirmation fail with `error`.
    fn fail_waiting(&self, error: &Error) {
        let mut state = self.lock();
        for queued in state.offline.drain(..) {
            let _ = queued.reply.send(Err(error.clone()));
        }
        for room in state.rooms.values_mut() {
            if let Some(confirm) = room.confirm.take() {
                let _ = confirm.send(Err(error.clone()));
            }
        }
    }

    /// The client is closed: fail every call, end every subscription.
    fn shut_down(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.ready = false;
        for (_, waiter) in state.pending.drain() {
            if let Waiter::Request { reply, .. } = waiter {
                let _ = reply.send(Err(Error::ClientClosed));
            }
        }
        for queued in state.offline.drain(..) {
            let _ = queued.reply.send(Err(Error::ClientClosed));
        }
        state.rooms.clear();
        drop(state);
        self.welcome.send_replace(None);
    }

    /// Routes one frame; returns what to deliver to subscriptions and to the event stream.
    fn on_frame(self: &Arc<Self>, frame: ServerFrame) -> (Deliveries, Option<WshubEvent>) {
        let mut deliveries = Vec::new();
        let event = match frame {
            ServerFrame::Welcome(welcome) => {
                self.on_welcome(welcome.clone());
                Some(WshubEvent::Connected(welcome))
            }
            ServerFrame::Message(message) => {
                let mut state = self.lock();
                if let Some(room) = state.rooms.get_mut(&message.room)
                    && room.cursor.accept(&message)
                {
                    deliveries.push((room.events.clone(), SubscriptionEvent::Message(message)));
                }
                None
            }
            ServerFrame::Join(presence) => {
                let room = presence.room.clone();
                self.room_event(&mut deliveries, &room, SubscriptionEvent::Join(presence));
                None
            }
            ServerFrame::Leave(presence) => {
                let room = presence.room.clone();
                self.room_event(&mut deliveries, &room, SubscriptionEvent::Leave(presence));
                None
            }
            ServerFrame::Unrecoverable(lost) => {
                // The server lost publications of the room (a cluster's backplane lost
                // them): say so, and take its position, so that what follows is delivered.
                let mut state = self.lock();
                if let Some(room) = state.rooms.get_mut(&lost.room) {
                    let since = room.cursor.since();
                    room.cursor.lost(lost.position());
                    if let Some(since) = since {
                        let event = SubscriptionEvent::RecoveryFailed {
                            since,
                            epoch: lost.epoch.clone(),
                            latest: lost.offset,
                            lost: lost.lost.clone(),
                        };
                        deliveries.push((room.events.clone(), event));
                    }
                }
                None
            }
            ServerFrame::Direct(direct) => Some(WshubEvent::Direct(direct)),
            ServerFrame::Broadcast(broadcast) => Some(WshubEvent::Broadcast(broadcast)),
            reply @ (ServerFrame::Ok(_) | ServerFrame::Pong(_) | ServerFrame::Error(_)) => {
                self.on_reply(reply, &mut deliveries)
            }
        };
        (deliveries, event)
    }

    fn room_event(&self, deliveries: &mut Deliveries, room: &RoomName, event: SubscriptionEvent) {
        if let Some(room) = self.lock().rooms.get(room) {
            deliveries.push((room.events.clone(), event));
        }
    }

    fn on_reply(
        self: &Arc<Self>,
        frame: ServerFrame,
        deliveries: &mut Deliveries,
    ) -> Option<WshubEvent> {
        let Some(id) = frame.reply_id().cloned() else {
            return match frame {
                ServerFrame::Error(error) => Some(WshubEvent::Error(Error::Server {
                    command: "unknown",
                    code: error.code,
                    message: error.message,
                })),
                // A `pong` without id answers nobody's ping.
                _ => None,
            };
        };
        let mut state = self.lock();
        match state.pending.take(&id)? {
            Waiter::Request { command, reply } => {
                let result = match frame {
                    ServerFrame::Error(error) => Err(Error::Server {
                        command,
                        code: error.code,
                        message: error.message,
                    }),
                    other => Ok(other),
                };
                let _ = reply.send(result);
            }
            Waiter::Subscribe {
                room,
                generation,
                since,
            } => {
                let entry = state
                    .rooms
                    .get_mut(&room)
                    .filter(|r| r.generation == generation)?;
                let ok = match frame {
                    ServerFrame::Ok(ok) => ok,
                    ServerFrame::Error(error) if error.code == ErrorCode::Unavailable => {
                        // Not a refusal: the server cannot reach its backplane now.
                        entry.unavailable = entry.unavailable.saturating_add(1);
                        let delay = UNAVAILABLE_RETRY
                            .delay(entry.unavailable, RandomJitter::new().fraction());
                        tracing::debug!(%room, ?delay, "subscribe unavailable; trying again");
                        let core = Arc::downgrade(self);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            if let Some(core) = core.upgrade() {
                                core.subscribe_again(&room, generation);
                            }
                        });
                        return None;
                    }
                    ServerFrame::Error(error) => {
                        let error = Error::Server {
                            command: "subscribe",
                            code: error.code,
                            message: error.message,
                        };
                        // Refused: the subscription ends.
                        if let Some(entry) = state.rooms.remove(&room) {
                            match entry.confirm {
                                Some(confirm) => {
                                    let _ = confirm.send(Err(error));
                                }
                                None => deliveries
                                    .push((entry.events, SubscriptionEvent::Failed(error))),
                            }
                        }
                        return None;
                    }
                    _ => return None,
                };
                let (Some(epoch), Some(latest)) = (ok.epoch, ok.offset) else {
                    return Some(WshubEvent::Error(Error::UnexpectedReply {
                        command: "subscribe",
                    }));
                };
                entry.unavailable = 0;
                let resumed =
                    entry
                        .cursor
                        .subscribed(since.as_ref(), epoch.clone(), latest, ok.recovered);
                if let Some(confirm) = entry.confirm.take() {
                    let _ = confirm.send(Ok(()));
                }
                let event = match (resumed, since) {
                    (Resumed::Recovered, Some(since)) => {
                        Some(SubscriptionEvent::Recovered { since, latest })
                    }
                    (Resumed::Failed, Some(since)) => Some(SubscriptionEvent::RecoveryFailed {
                        since,
                        epoch,
                        latest,
                        lost: ok.lost,
                    }),
                    _ => None,
                };
                if let Some(event) = event {
                    deliveries.push((entry.events.clone(), event));
                }
            }
        }
        None
    }
}

fn publish_command(id: CommandId, room: RoomName, data: Payload) -> Command {
    Command::Publish(Publish {
        id: Some(id),
        room,
        data,
    })
}

/// The dispatcher: reads the connection's events in order until the client is closed.
async fn dispatch(
    core: Arc<Core>,
    mut events: Events,
    out: mpsc::Sender<WshubEvent>,
    connection_state: watch::Receiver<ConnectionState>,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        let (deliveries, event) = match event {
            Event::Connected => continue,
            Event::Message(Message::Text(text)) => match ServerFrame::decode(&text) {
                Ok(frame) => core.on_frame(frame),
                Err(error) if error.code() == wshub_protocol::ErrorCode::UnknownType => {
                    // A newer server's frame type: skip it (docs/PROTOCOL.md may grow).
                    tracing::debug!(%error, "skipping an unknown frame type");
                    continue;
                }
                Err(error) => (
                    Vec::new(),
                    Some(WshubEvent::Error(Error::InvalidFrame(error.to_string()))),
                ),
            },
            Event::Message(Message::Binary(_)) => {
                tracing::debug!("skipping a binary frame");
                continue;
            }
            Event::Disconnected { error } => {
                core.on_disconnected();
                if *connection_state.borrow() == ConnectionState::Stopped {
                    // A final close (the reconnect policy): nothing queued will be sent.
                    core.on_stopped(error.clone());
                }
                (Vec::new(), Some(WshubEvent::Disconnected { error }))
            }
            Event::Reconnecting { attempt, delay } => (
                Vec::new(),
                Some(WshubEvent::Reconnecting { attempt, delay }),
            ),
            Event::GaveUp { attempts } => {
                core.on_gave_up(attempts);
                (Vec::new(), Some(WshubEvent::GaveUp { attempts }))
            }
            Event::Error(error) => (Vec::new(), Some(WshubEvent::Error(error))),
        };
        for (tx, delivery) in deliveries {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                // A closed channel is a dropped subscription: nothing to do.
                _ = tx.send(delivery) => {}
            }
        }
        if let Some(event) = event
            && !out.is_closed()
        {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                _ = out.send(event) => {}
            }
        }
    }
    core.shut_down();
}
