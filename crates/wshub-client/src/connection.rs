//! A reconnecting WebSocket client for any server: [`Client`], configured by
//! [`ClientBuilder`], reporting [`Event`]s to callbacks and to an [`Events`] stream.
//!
//! # Tasks and ownership
//!
//! `connect` starts one task, the *supervisor*, which owns the socket: it opens a
//! connection, then reads, writes and pings it in one `select!` loop until it ends, then
//! waits out the backoff delay and starts over. Sends from any thread go through a bounded
//! queue to that task (one writer per socket). Every task is spawned on the client's
//! [`TaskTracker`] under a child of its [`CancellationToken`]; `disconnect` cancels the
//! current run, and `close` or dropping the last handle cancels everything and closes the
//! tracker, so no task outlives the client.
//!
//! A close with 1012 (service restart: the server is draining) is not counted as a
//! failure: the attempt count starts over and the next attempt comes after a small random
//! delay within the backoff's first bound ([`Backoff::initial_delay`], 500 ms by default).
//!
//! # Events
//!
//! Events are delivered in order, first to the callbacks (synchronously, on the
//! supervisor task: keep them short) and then to the [`Events`] stream. The stream is
//! bounded: while it is full the supervisor stops reading the socket, which pushes back on
//! the server. Read it, or drop it to receive nothing through it.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::{Backoff, BackoffSchedule, FixedJitter, Jitter, RandomJitter, Step};
use crate::error::Error;
use crate::heartbeat::{Beat, Heartbeat, HeartbeatState};
use crate::transport::{Incoming, Message, Socket, Target};

/// Something that happened to a [`Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A connection is open.
    Connected,
    /// The open connection ended; `error` says why, `None` when the client closed it.
    Disconnected {
        /// Why it ended, unless the client itself closed it.
        error: Option<Error>,
    },
    /// A message arrived.
    Message(Message),
    /// Something failed without ending an open connection: mostly a failed connection
    /// attempt, which is followed by `Reconnecting` or `GaveUp`.
    Error(Error),
    /// Attempt `attempt` of the current run of failures starts in `delay`.
    Reconnecting {
        /// 1 for the first attempt after a drop or a failed connect.
        attempt: u32,
        /// The (jittered) wait before it.
        delay: Duration,
    },
    /// Every allowed attempt failed; the client stays disconnected until `connect` is
    /// called again.
    GaveUp {
        /// How many reconnect attempts were made.
        attempts: u32,
    },
}

/// Where a [`Client`] is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// `connect` was not called, or `disconnect` was.
    Idle,
    /// The first connection of a run is being opened.
    Connecting,
    /// A connection is open.
    Connected,
    /// Waiting for, or making, a reconnect attempt.
    Reconnecting,
    /// Every allowed attempt failed, or the server closed with a code that forbids
    /// reconnecting (see [`ReconnectPolicy`]).
    Stopped,
    /// `close` was called or every handle dropped.
    Closed,
}

/// After which server closes to reconnect automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReconnectPolicy {
    /// Unless the close code says not to: 1000 (closed on purpose), 1003, 1007 and 1009
    /// (the client's own input was refused), as `wshub_protocol::CloseCode::should_reconnect`
    /// says. The default.
    #[default]
    ByCloseCode,
    /// After every close and every failure.
    Always,
}

impl ReconnectPolicy {
    fn allows(self, close_code: Option<u16>) -> bool {
        match (self, close_code) {
            (ReconnectPolicy::Always, _) | (_, None) => true,
            (ReconnectPolicy::ByCloseCode, Some(code)) => wshub_protocol::CloseCode::new(code)
                .is_none_or(wshub_protocol::CloseCode::should_reconnect),
        }
    }
}

type Callback = Arc<dyn Fn(&Event) + Send + Sync>;

/// Configures and builds a [`Client`].
pub struct ClientBuilder {
    url: String,
    headers: Vec<(String, String)>,
    reconnect: bool,
    policy: ReconnectPolicy,
    backoff: Backoff,
    jitter: Box<dyn Jitter>,
    stable_after: Duration,
    connect_timeout: Duration,
    close_timeout: Duration,
    heartbeat: Option<Heartbeat>,
    send_queue_capacity: usize,
    event_capacity: usize,
    max_message_bytes: usize,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    compression: bool,
    callbacks: Vec<Callback>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("headers", &self.headers.len())
            .field("reconnect", &self.reconnect)
            .field("policy", &self.policy)
            .field("backoff", &self.backoff)
            .field("stable_after", &self.stable_after)
            .field("connect_timeout", &self.connect_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("send_queue_capacity", &self.send_queue_capacity)
            .field("event_capacity", &self.event_capacity)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("compression", &self.compression)
            .field("callbacks", &self.callbacks.len())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A builder for a client of `url` (`ws://` or `wss://`; `wss` needs one of
    /// `tokio-websockets`' TLS features enabled in the final binary).
    pub fn new(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            headers: Vec::new(),
            reconnect: true,
            policy: ReconnectPolicy::default(),
            backoff: Backoff::default(),
            jitter: Box::new(RandomJitter::new()),
            stable_after: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(1),
            heartbeat: Some(Heartbeat::default()),
            send_queue_capacity: 1024,
            event_capacity: 1024,
            max_message_bytes: 16 << 20,
            tls: None,
            compression: true,
            callbacks: Vec::new(),
        }
    }

    /// Adds a header to the handshake request (e.g. `Authorization`). Names the handshake
    /// sets itself (`Host`, `Upgrade`, `Connection`, `Sec-WebSocket-*`) are refused by
    /// [`ClientBuilder::build`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Whether to reconnect after a drop or a failed attempt. Default: true.
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// After which server closes to reconnect. Default: [`ReconnectPolicy::ByCloseCode`].
    pub fn reconnect_policy(mut self, policy: ReconnectPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The backoff: first delay bound, cap and maximum attempts. Default:
    /// [`Backoff::default`] (500 ms, 30 s, no limit).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Reconnects after exactly `delay`, every time, for as long as it takes: a
    /// [`Backoff::fixed`] schedule without jitter. Many clients dropped together then
    /// come back together; prefer the default backoff for a fleet.
    pub fn reconnect_every(self, delay: Duration) -> Self {
        self.reconnect(true)
            .backoff(Backoff::fixed(delay))
            .jitter(FixedJitter(1.0))
    }

    /// The jitter source. Default: [`RandomJitter`].
    pub fn jitter(mut self, jitter: impl Jitter + 'static) -> Self {
        self.jitter = Box::new(jitter);
        self
    }

    /// How long a connection must stay open for the attempt count to start over. A server
    /// that accepts and drops at once is then retried with growing delays, not in a tight
    /// loop. Default: 5 s.
    pub fn stable_after(mut self, duration: Duration) -> Self {
        self.stable_after = duration;
        self
    }

    /// The limit on opening one connection (TCP, TLS, upgrade). Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long `disconnect` waits for the server's close frame. Default: 1 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The heartbeat, `None` to turn it off. Default: [`Heartbeat::default`] (ping after
    /// 20 s of silence, dead after 10 s more).
    pub fn heartbeat(mut self, heartbeat: Option<Heartbeat>) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// How many outgoing messages may wait for the socket. Default: 1024.
    pub fn send_queue_capacity(mut self, capacity: usize) -> Self {
        self.send_queue_capacity = capacity.max(1);
        self
    }

    /// How many events the [`Events`] stream holds before the client waits for its
    /// reader. Default: 1024.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// The TLS configuration for `wss://` URLs (your own roots or client certificates);
    /// without it, servers are verified against the Mozilla roots (webpki-roots). Build it
    /// with [`rustls`](crate::rustls).
    pub fn tls_config(mut self, config: Arc<tokio_rustls::rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Whether to offer permessage-deflate (RFC 7692) in the handshake. Default: `true`.
    /// When the server agrees, the messages it compresses are inflated as they arrive
    /// (bounded by [`max_message_bytes`](Self::max_message_bytes)), and this client's own
    /// text and binary messages of 128 bytes or more go out compressed (DEFLATE level 1)
    /// when that makes them smaller, keeping context between messages unless the server
    /// asks for `client_no_context_takeover`. Costs a decompressor of about 40 KiB once the
    /// first compressed message arrives, and a compressor of about 256 KiB (zlib's figure
    /// for a 15-bit window) once the first message worth compressing is sent.
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// The largest message accepted from the server. Default: 16 MiB.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Calls `f` for every event, before it goes to the stream.
    ///
    /// Callbacks run on the connection's task, so they must not block; in exchange, what a
    /// callback sends in answer to a message is written before the next frame is read
    /// (an answer from the event stream may come after it).
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Arc::new(f));
        self
    }

    /// Calls `f` when a connection opens.
    pub fn on_connected(self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_event(move |event| {
            if let Event::Connected = event {
                f();
            }
        })
    }

    /// Calls `f` when an open connection ends, with the error unless the client closed it.
    pub fn on_disconnected(self, f: impl Fn(Option<&Error>) + Send + Sync + 'static) -> Self {
        self.on_event(move |event| {
            if let Event::Disconnected { error } = event {
                f(error.as_ref());
            }
        })
    }

    /// Calls `f` for every message.
    pub fn on_message(self, f: impl Fn(&Message) + Send + Sync + 'static) -> Self {
        self.on_event(move |event| {
            if let Event::Message(message) = event {
                f(message);
            }
        })
    }

    /// Calls `f` for every error that did not end an open connection.
    pub fn on_error(self, f: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.on_event(move |event| {
            if let Event::Error(error) = event {
                f(error);
            }
        })
    }

    /// Calls `f(attempt, delay)` when a reconnect attempt is scheduled.
    pub fn on_reconnecting(self, f: impl Fn(u32, Duration) + Send + Sync + 'static) -> Self {
        self.on_event(move |event| {
            if let Event::Reconnecting { attempt, delay } = event {
                f(*attempt, *delay);
            }
        })
    }

    /// Calls `f(attempts)` when the client gives up.
    pub fn on_gave_up(self, f: impl Fn(u32) + Send + Sync + 'static) -> Self {
        self.on_event(move |event| {
            if let Event::GaveUp { attempts } = event {
                f(*attempts);
            }
        })
    }

    /// Validates the configuration and builds the client, not connected yet (call
    /// [`Client::connect`]), with its event stream. Must be called inside a Tokio runtime
    /// only when `connect` is.
    pub fn build(self) -> Result<(Client, Events), Error> {
        let target = Target::new(
            &self.url,
            &self.headers,
            self.max_message_bytes,
            self.tls.clone(),
            self.compression,
        )?;
        let (events_tx, events_rx) = mpsc::channel(self.event_capacity);
        let (state_tx, _) = watch::channel(ConnectionState::Idle);
        let shared = Arc::new(Shared {
            settings: Settings {
                target,
                reconnect: self.reconnect,
                policy: self.policy,
                stable_after: self.stable_after,
                connect_timeout: self.connect_timeout,
                close_timeout: self.close_timeout,
                heartbeat: self.heartbeat,
                send_queue_capacity: self.send_queue_capacity,
            },
            schedule: Mutex::new(BackoffSchedule::new(self.backoff, self.jitter)),
            outgoing: Mutex::new(None),
            state: state_tx,
            callbacks: self.callbacks,
            events: events_tx,
        });
        let root = CancellationToken::new();
        let client = Client {
            handle: Arc::new(Handle {
                shared,
                tracker: TaskTracker::new(),
                run: Mutex::new(None),
                root,
            }),
        };
        Ok((client, Events { rx: events_rx }))
    }
}

/// The stream of a client's [`Event`]s, in order. Ends once the client is dropped (every
/// handle) and its tasks have ended.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client is closed and every event was read.
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// A reconnecting WebSocket client. Cheap to clone; the last clone dropped stops it.
#[derive(Debug, Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

/// Owns the tasks: dropping it (with the last [`Client`]) cancels them.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    /// The current run of the supervisor, if any.
    run: Mutex<Option<Run>>,
    root: CancellationToken,
}

#[derive(Debug)]
struct Run {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.root.cancel();
        self.tracker.close();
    }
}

/// What the supervisor and the handles share.
struct Shared {
    settings: Settings,
    schedule: Mutex<BackoffSchedule>,
    /// The queue into the open connection, `None` while disconnected.
    outgoing: Mutex<Option<mpsc::Sender<Message>>>,
    state: watch::Sender<ConnectionState>,
    callbacks: Vec<Callback>,
    events: mpsc::Sender<Event>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Settings {
    target: Target,
    reconnect: bool,
    policy: ReconnectPolicy,
    stable_after: Duration,
    connect_timeout: Duration,
    close_timeout: Duration,
    heartbeat: Option<Heartbeat>,
    send_queue_capacity: usize,
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves its data valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Client {
    /// A builder for a client of `url`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// Starts connecting (and reconnecting) in the background; does nothing when already
    /// running. Must be called inside a Tokio runtime. Wait for the connection with
    /// [`Client::connected`] or the [`Event::Connected`] event.
    pub fn connect(&self) {
        let mut run = lock(&self.handle.run);
        if self.handle.root.is_cancelled() {
            return;
        }
        if run.as_ref().is_some_and(|run| !run.task.is_finished()) {
            return;
        }
        let cancel = self.handle.root.child_token();
        lock(&self.handle.shared.schedule).reset();
        self.handle
            .shared
            .state
            .send_replace(ConnectionState::Connecting);
        let task = self
            .handle
            .tracker
            .spawn(supervise(Arc::clone(&self.handle.shared), cancel.clone()));
        *run = Some(Run { cancel, task });
    }

    /// Closes the connection (close code 1000), stops reconnecting and waits for the
    /// supervisor to end (at most the close timeout plus a little). The client can
    /// `connect` again.
    pub async fn disconnect(&self) {
        let run = lock(&self.handle.run).take();
        if let Some(run) = run {
            run.cancel.cancel();
            let _ = run.task.await;
        }
        self.handle.shared.state.send_if_modified(|state| {
            let idle = *state != ConnectionState::Closed;
            if idle {
                *state = ConnectionState::Idle;
            }
            idle
        });
    }

    /// Disconnects for good and waits until every task the client started has ended.
    /// Further sends fail with [`Error::ClientClosed`] (or [`Error::NotConnected`]).
    pub async fn close(&self) {
        self.handle.root.cancel();
        self.disconnect().await;
        self.handle.tracker.close();
        self.handle.tracker.wait().await;
        self.handle
            .shared
            .state
            .send_replace(ConnectionState::Closed);
    }

    /// Whether a connection is open right now.
    pub fn is_connected(&self) -> bool {
        self.state() == ConnectionState::Connected
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        *self.handle.shared.state.borrow()
    }

    /// A receiver of state changes.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.handle.shared.state.subscribe()
    }

    /// Waits until a connection is open. Fails with [`Error::ClientClosed`] when the
    /// client is closed or not running, and [`Error::GaveUp`] when it stopped retrying.
    /// Cancel-safe; bound it with a timeout.
    pub async fn connected(&self) -> Result<(), Error> {
        let mut rx = self.handle.shared.state.subscribe();
        let state = rx
            .wait_for(|state| {
                !matches!(
                    state,
                    ConnectionState::Connecting | ConnectionState::Reconnecting
                )
            })
            .await
            .map(|state| *state)
            .map_err(|_| Error::ClientClosed)?;
        match state {
            ConnectionState::Connected => Ok(()),
            ConnectionState::Stopped => Err(Error::GaveUp {
                attempts: lock(&self.handle.shared.schedule).attempts(),
            }),
            _ => Err(Error::ClientClosed),
        }
    }

    /// Queues a message for the open connection. Fails at once, without waiting, with
    /// [`Error::NotConnected`] or [`Error::SendQueueFull`]. A message still queued when the
    /// connection drops is lost.
    pub fn send(&self, message: Message) -> Result<(), Error> {
        if self.handle.root.is_cancelled() {
            return Err(Error::ClientClosed);
        }
        self.outlet().send(message)
    }

    /// Queues a text message.
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), Error> {
        self.send(Message::Text(text.into()))
    }

    /// Queues a binary message.
    pub fn send_binary(&self, bytes: impl Into<Bytes>) -> Result<(), Error> {
        self.send(Message::Binary(bytes.into()))
    }

    /// Serializes `value` to JSON and queues it as a text message.
    pub fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let text = serde_json::to_string(value).map_err(Error::json)?;
        self.send_text(text)
    }

    /// The tracker of every task this client started. After [`Client::close`], or once
    /// the last handle is dropped, it is closed and [`TaskTracker::wait`] returns when
    /// the last of them has ended.
    pub fn task_tracker(&self) -> TaskTracker {
        self.handle.tracker.clone()
    }

    /// A token cancelled when the client is closed or dropped, for tasks built on it.
    pub(crate) fn cancellation(&self) -> CancellationToken {
        self.handle.root.child_token()
    }

    /// A way to send that does not keep the client alive (tasks built on the client hold
    /// it instead of a `Client`, so dropping the last `Client` still stops everything).
    pub(crate) fn outlet(&self) -> Outlet {
        Outlet {
            shared: Arc::clone(&self.handle.shared),
        }
    }

    /// Spawns a task on the client's tracker.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.handle.tracker.spawn(task);
    }
}

/// Sends on a client's open connection without owning the client.
#[derive(Debug, Clone)]
pub(crate) struct Outlet {
    shared: Arc<Shared>,
}

impl Outlet {
    /// See [`Client::send`].
    pub(crate) fn send(&self, message: Message) -> Result<(), Error> {
        let outgoing = lock(&self.shared.outgoing);
        let Some(tx) = outgoing.as_ref() else {
            return Err(Error::NotConnected);
        };
        tx.try_send(message).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => Error::SendQueueFull {
                capacity: self.shared.settings.send_queue_capacity,
            },
            mpsc::error::TrySendError::Closed(_) => Error::NotConnected,
        })
    }
}

impl Shared {
    /// Delivers an event to the callbacks, then to the stream (waiting for room, unless
    /// `cancel` fires first). Returns false when cancelled.
    async fn emit(&self, event: Event, cancel: &CancellationToken) -> bool {
        for callback in &self.callbacks {
            callback(&event);
        }
        if self.events.is_closed() {
            return true;
        }
        tokio::select! {
            biased;
            _ = self.events.send(event) => true,
            () = cancel.cancelled() => false,
        }
    }

    fn set_state(&self, state: ConnectionState) {
        self.state.send_if_modified(|current| {
            let changed = *current != state && *current != ConnectionState::Closed;
            if changed {
                *current = state;
            }
            changed
        });
    }
}

/// How one connection ended.
struct Ended {
    error: Option<Error>,
    /// The server's close code, when it sent a close frame.
    close_code: Option<u16>,
    /// Whether the client was asked to disconnect.
    cancelled: bool,
}

/// The supervisor: connect, serve the connection, back off, repeat.
async fn supervise(shared: Arc<Shared>, cancel: CancellationToken) {
    let settings = &shared.settings;
    loop {
        let opened = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            opened = settings.target.open(settings.connect_timeout) => opened,
        };
        match opened {
            Ok(socket) => {
                let (tx, rx) = mpsc::channel(settings.send_queue_capacity);
                *lock(&shared.outgoing) = Some(tx);
                shared.set_state(ConnectionState::Connected);
                tracing::debug!("connected");
                let started = Instant::now();
                let ended = if shared.emit(Event::Connected, &cancel).await {
                    serve(&shared, socket, rx, &cancel).await
                } else {
                    socket.close(settings.close_timeout).await;
                    Ended {
                        error: None,
                        close_code: None,
                        cancelled: true,
                    }
                };
                *lock(&shared.outgoing) = None;
                tracing::debug!(error = ?ended.error, "disconnected");
                // The disconnect is reported even when cancelled: callbacks run anyway,
                // and the stream gets it if it has room.
                let event = Event::Disconnected {
                    error: ended.error.clone(),
                };
                if ended.cancelled {
                    for callback in &shared.callbacks {
                        callback(&event);
                    }
                    let _ = shared.events.try_send(event);
                    break;
                }
                // A final disconnect is reported with the state already `Stopped`, so that
                // whoever handles the event knows that nothing will reconnect.
                let stopping = !settings.reconnect || !settings.policy.allows(ended.close_code);
                if stopping {
                    shared.set_state(ConnectionState::Stopped);
                }
                if !shared.emit(event, &cancel).await {
                    break;
                }
                // A draining node (1012) is not a failure: the next attempt is the first of
                // a new run, after a small random delay within the backoff's first bound.
                let restart =
                    ended.close_code == Some(wshub_protocol::CloseCode::SERVICE_RESTART.as_u16());
                if restart || started.elapsed() >= settings.stable_after {
                    lock(&shared.schedule).reset();
                }
                if stopping {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "connection attempt failed");
                if !shared.emit(Event::Error(error), &cancel).await {
                    break;
                }
                if !settings.reconnect {
                    shared.set_state(ConnectionState::Stopped);
                    return;
                }
            }
        }
        let step = lock(&shared.schedule).next(Instant::now());
        match step {
            Step::Retry { attempt, delay, at } => {
                shared.set_state(ConnectionState::Reconnecting);
                if !shared
                    .emit(Event::Reconnecting { attempt, delay }, &cancel)
                    .await
                {
                    break;
                }
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            Step::GiveUp { attempts } => {
                shared.set_state(ConnectionState::Stopped);
                let _ = shared.emit(Event::GaveUp { attempts }, &cancel).await;
                return;
            }
        }
    }
    shared.set_state(ConnectionState::Idle);
}

/// Serves one open connection until it ends: reads, writes from the queue, heartbeats.
async fn serve(
    shared: &Shared,
    mut socket: Socket,
    mut outgoing: mpsc::Receiver<Message>,
    cancel: &CancellationToken,
) -> Ended {
    let settings = &shared.settings;
    let mut heartbeat = settings
        .heartbeat
        .map(|config| HeartbeatState::new(config, Instant::now()));
    let ended = |error: Error, close_code: Option<u16>| Ended {
        error: Some(error),
        close_code,
        cancelled: false,
    };
    loop {
        let deadline = heartbeat.as_ref().map(HeartbeatState::deadline);
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                socket.close(settings.close_timeout).await;
                return Ended { error: None, close_code: None, cancelled: true };
            }
            // Writes before reads: what the application sent in answer to a message (from
            // an `on_message` callback, which runs here before the next frame is read) goes
            // out before that frame, even when it fails the connection (the Autobahn
            // suite's "fail fast" cases check exactly that order).
            Some(message) = outgoing.recv() => {
                if let Err(error) = socket.send(message).await {
                    return ended(error, None);
                }
            }
            incoming = socket.recv() => {
                if let Some(heartbeat) = &mut heartbeat {
                    heartbeat.received(Instant::now());
                }
                match incoming {
                    None => return ended(Error::ConnectionLost, None),
                    Some(Err(error)) => return ended(error, None),
                    Some(Ok(Incoming::Close { code, reason })) => {
                        // Let the library flush its close reply (RFC 6455 §5.5.1).
                        socket.close(settings.close_timeout).await;
                        return ended(Error::Closed { code, reason }, Some(code));
                    }
                    Some(Ok(Incoming::Control)) => {}
                    Some(Ok(Incoming::Message(message))) => {
                        if !shared.emit(Event::Message(message), cancel).await {
                            socket.close(settings.close_timeout).await;
                            return Ended { error: None, close_code: None, cancelled: true };
                        }
                    }
                }
            }
            () = sleep_until(deadline) => {
                let Some(state) = &mut heartbeat else { continue };
                match state.fire(Instant::now()) {
                    Beat::Ping => {
                        if let Err(error) = socket.ping().await {
                            return ended(error, None);
                        }
                    }
                    Beat::Dead => {
                        let timeout = settings.heartbeat.map(|h| h.timeout).unwrap_or_default();
                        tracing::debug!(?timeout, "heartbeat: the peer is not answering");
                        return ended(Error::HeartbeatTimeout(timeout), None);
                    }
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
