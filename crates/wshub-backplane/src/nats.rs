//! The NATS backplane (feature `nats`): any number of nodes sharing one NATS server with
//! JetStream.
//!
//! # Data layout (every subject starts with [`BackplaneConfig::prefix`], written `P` here)
//!
//! | subject or stream | what |
//! |---|---|
//! | stream `P_history`, subjects `P.h.<room>` | a room's publications: headers `Wshub-Offset`, `Wshub-Epoch`, payload unchanged; at most `max_messages + 1` per room, each kept `meta_ttl` |
//! | `P.live.<room>` | the stream's republication of every stored message, in stream order (JetStream `RePublish`): live delivery |
//! | `P.ev.<room>` | room events (presence `join`/`leave`), header `Wshub-Origin` |
//! | `P.node.<12 hex digits>` | request to one node: header `Wshub-Kind` `S` (send) or `D` (disconnect), `Wshub-Client`; the node answers `ok`, `none` or `refused` once its server has handled it |
//! | `P.broadcast` | header `Wshub-Origin`, the payload |
//! | stream `P_presence`, subjects `P.pz.<room>.<client>` | one presence entry: the user (`u<name>` or `-`), or empty once removed; one per subject, each kept `presence_ttl` |
//!
//! `<room>` is the room name in lowercase hex, so any room name is one subject token.
//!
//! # Why it keeps the promises of [`Backplane`]
//!
//! - **Gap-free offsets, identical on every node.** The stream is the one record of a
//!   room: the last message on `P.h.<room>` carries the room's epoch and latest offset.
//!   A publish reads it (stream sequence `s`, offset `n`, epoch `e`; this node caches the
//!   last one it wrote or received live) and publishes offset `n + 1` in epoch `e` with
//!   `Nats-Expected-Last-Subject-Sequence: s`. JetStream stores it only if nothing was
//!   stored on the subject since `s`, so two nodes can never store the same offset and
//!   none is skipped; the loser of a race reads the new last message and tries again.
//!   The numbering and the storing are one write: there is no counter that could advance
//!   without a stored publication.
//! - **History that goes back.** A publish that finds the room's last stored message
//!   behind the cached one in the same epoch (the stream was restored from an older copy,
//!   or messages were deleted) starts a new epoch instead of numbering offsets again; so
//!   does [`Backplane::renew_epoch`]. A live message that numbers a cached epoch's offset
//!   again does not replace the cached tip, so a node that only follows the room notices
//!   too.
//! - **Epochs.** A room with no message on its subject (never used, expired after
//!   `meta_ttl` without a publish, or the stream was deleted) gets a new epoch from the
//!   first write that finds it empty (expected last subject sequence 0). A read of such a
//!   room writes a marker (offset 0, header `Wshub-Kind: m`) so the epoch exists before any
//!   publish, as the trait asks. One extra message per room is kept (`max_messages + 1`)
//!   so that the record survives `max_messages = 0`; reads never return more than
//!   `max_messages`, nor anything older than `ttl` (by the stream's timestamps, against
//!   this node's clock).
//! - **Delivery in offset order.** Live messages are the stream's own republications,
//!   sent by the server in stream order right after storing, so a room's channel carries
//!   its offsets in order, on core NATS subjects (no consumer per node or per room).
//!   What is lost while a node is disconnected comes back through [`Event::Resumed`] and
//!   [`Backplane::history`].
//! - **Routing.** `send` and `disconnect` are NATS requests to the node's subject. The node
//!   hands the [`Event::Send`] or [`Event::Disconnect`] to its server and replies with the
//!   server's [`Answer`](crate::Answer) (`ok`, `none`: no such connection, `refused`) once
//!   it is given through the event's [`Reply`]. "No responders" (no node
//!   subscribed: it is gone, whether it stopped or was killed, since NATS drops its
//!   subscriptions with its connection) is [`Routed::NoSuchNode`], at once; no reply within
//!   [`BackplaneConfig::answer_timeout`] (the node is hung or overloaded) is
//!   [`Routed::Unanswered`]. An empty reply comes from a node of an older version, which
//!   answered on receipt: [`Routed::Delivered`], as it meant then.
//! - **Presence.** One stream message per member, refreshed by its node every third of
//!   [`BackplaneConfig::presence_ttl`]; the stream's `max_age` drops the entries of a node that
//!   stopped refreshing them. Listing reads the last message of each member's subject.
//!
//! # Differences from the Redis backplane
//!
//! - A room's record lives `meta_ttl` after its last *write* (publish or marker), where
//!   Redis also counts reads.
//! - History and presence reads go through a short-lived consumer (three round trips
//!   whatever the number of messages); a publish is one round trip when this node wrote
//!   the room's last message, more when nodes race on one room.
//! - The streams are created by the first node with this node's settings; nodes of one
//!   cluster must use the same history settings (as with Redis). The presence stream's
//!   `max_age` follows [`BackplaneConfig::presence_ttl`]: a node started with another one updates
//!   it, so nodes of one cluster must also share their presence ttl.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_nats::{
    Client, ConnectOptions, HeaderMap, ServerAddr,
    jetstream::{
        self,
        consumer::{AckPolicy, DeliverPolicy, pull},
        context::PublishErrorKind,
        stream::{self, DiscardPolicy, LastRawMessageErrorKind, Republish, StorageType},
    },
};
use bytes::Bytes;
use futures_util::{StreamExt, stream::FuturesUnordered};
use tokio::{
    sync::{Notify, mpsc},
    task::JoinHandle,
};
use wshub_protocol::{ConnectionId, Epoch, Offset, RoomName, StreamPosition};

use crate::{
    Backplane, BackplaneConfig, BoxFuture, Error, Event, Events, Health, HistoryPage, HistoryRange,
    PresenceMember, Publication, Reply, Routed, answer_within, answer_word, history::new_epoch,
    node_hex, parse_answer,
};

const OFFSET: &str = "Wshub-Offset";
const EPOCH: &str = "Wshub-Epoch";
const KIND: &str = "Wshub-Kind";
const ORIGIN: &str = "Wshub-Origin";
const CLIENT: &str = "Wshub-Client";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// The stream sequence of a republished message (set by JetStream's `RePublish`).
const SEQUENCE: &str = "Nats-Sequence";

/// How many times a publish retries after losing a race for a room's next offset.
const PUBLISH_ATTEMPTS: usize = 1000;

/// How many rooms' last stored message a node remembers ([`Inner::tips`]): beyond it, one
/// is forgotten for each new one (a forgotten room costs one more read on its next
/// publish). About 200 bytes each: 2 MB at most.
const MAX_TIPS: usize = 10_000;

/// The names of the NATS backplane's streams, from its [`BackplaneConfig::prefix`].
impl BackplaneConfig {
    /// The stream holding every room's publications.
    pub fn history_stream(&self) -> String {
        format!("{}_history", self.prefix)
    }

    /// The stream holding every presence entry.
    pub fn presence_stream(&self) -> String {
        format!("{}_presence", self.prefix)
    }
}

/// The NATS backplane. See the [module docs](self). Dropping it stops its background
/// tasks.
#[derive(Debug)]
pub struct NatsBackplane {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

/// The last message stored on a room's subject, as this node knows it.
#[derive(Debug, Clone)]
struct Tip {
    sequence: u64,
    offset: u64,
    epoch: Epoch,
}

struct Inner {
    client: Client,
    js: jetstream::Context,
    config: BackplaneConfig,
    health: Arc<Mutex<Health>>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: Mutex<Option<Events>>,
    /// The last message this node stored or received live per room, for at most
    /// [`MAX_TIPS`] rooms: a publish tries it first, and a room whose stored record is
    /// found behind it (same epoch, lower offset: the stream was restored from an older
    /// copy, or messages deleted) gets a new epoch instead of numbering offsets twice.
    tips: Mutex<HashMap<RoomName, Tip>>,
    /// Each followed room's forwarding task.
    rooms: Mutex<HashMap<RoomName, JoinHandle<()>>>,
    /// This node's presence entries, refreshed periodically: room → client → user.
    own_presence: Mutex<HashMap<RoomName, HashMap<ConnectionId, Option<String>>>>,
    /// Woken when the connection is back after an outage: presence is written again at once.
    reconnected: Arc<Notify>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackplane")
            .field("prefix", &self.config.prefix)
            .field("node", &node_hex(self.config.node_id))
            .field("health", &*lock(&self.health))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable(error: impl std::fmt::Display) -> Error {
    Error::Unavailable(error.to_string())
}

/// A room name as one subject token: lowercase hex of its bytes.
fn room_token(room: &RoomName) -> String {
    let mut token = String::with_capacity(room.as_str().len() * 2);
    for byte in room.as_str().bytes() {
        let _ = write!(token, "{byte:02x}");
    }
    token
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|value| value.as_str())
}

/// Offset and epoch of a stored or republished publication; `None` for anything else.
fn position_of(headers: Option<&HeaderMap>) -> Option<(u64, Epoch)> {
    let offset = header(headers, OFFSET)?.parse().ok()?;
    let epoch = Epoch::from(header(headers, EPOCH)?);
    Some((offset, epoch))
}

fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i128::try_from(elapsed.as_nanos()).unwrap_or(i128::MAX)
        })
}

impl NatsBackplane {
    /// Connects to NATS, creates the streams when they do not exist, and subscribes to this
    /// node's subjects. Needs a Tokio runtime (it spawns the forwarding tasks and the
    /// presence refresh).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a malformed URL or prefix, [`Error::Unavailable`] when
    /// NATS (or its JetStream) cannot be reached now (later outages are survived: see
    /// [`Health`]).
    pub async fn connect(config: BackplaneConfig) -> Result<NatsBackplane, Error> {
        let addr: ServerAddr = config
            .url
            .parse()
            .map_err(|error| Error::InvalidConfig(format!("{}: {error}", config.url)))?;
        if config.prefix.is_empty()
            || !config
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::InvalidConfig(format!(
                "NATS prefix {:?}: letters, digits, '-' and '_' only",
                config.prefix
            )));
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let health = Arc::new(Mutex::new(Health::Connected));
        let reconnected = Arc::new(Notify::new());
        let (callback_health, callback_events, callback_reconnected) = (
            Arc::clone(&health),
            events_tx.clone(),
            Arc::clone(&reconnected),
        );
        let options = ConnectOptions::new()
            .connection_timeout(config.response_timeout)
            .request_timeout(Some(config.response_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                let exponent = u32::try_from(attempts.min(5)).unwrap_or(5);
                Duration::from_millis(50 * 2u64.pow(exponent)).min(Duration::from_secs(2))
            })
            .event_callback(move |event| {
                let (health, events, reconnected) = (
                    Arc::clone(&callback_health),
                    callback_events.clone(),
                    Arc::clone(&callback_reconnected),
                );
                async move { on_connection_event(&health, &events, &reconnected, event) }
            });
        let client = tokio::time::timeout(config.response_timeout, options.connect(addr))
            .await
            .map_err(|_| Error::Unavailable(format!("{}: connection timed out", config.url)))?
            .map_err(|error| Error::Unavailable(format!("{}: {error}", config.url)))?;
        let js = jetstream::new(client.clone());
        let inner = Arc::new(Inner {
            client,
            js,
            health,
            events_tx,
            events_rx: Mutex::new(Some(events_rx)),
            tips: Mutex::new(HashMap::new()),
            rooms: Mutex::new(HashMap::new()),
            own_presence: Mutex::new(HashMap::new()),
            reconnected,
            config,
        });
        inner.ensure_streams().await?;
        let node = inner
            .within(
                inner
                    .client
                    .subscribe(inner.node_subject(inner.config.node_id)),
            )
            .await?
            .map_err(unavailable)?;
        let broadcast = inner
            .within(inner.client.subscribe(inner.broadcast_subject()))
            .await?
            .map_err(unavailable)?;
        inner.round_trip().await?;
        let tasks = vec![
            tokio::spawn(forward_node(Arc::clone(&inner), node)),
            tokio::spawn(forward_broadcasts(Arc::clone(&inner), broadcast)),
            tokio::spawn(refresh_presence(Arc::clone(&inner))),
        ];
        Ok(NatsBackplane { inner, tasks })
    }

    /// The settings it runs with.
    pub fn config(&self) -> &BackplaneConfig {
        &self.inner.config
    }
}

impl Drop for NatsBackplane {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for (_, task) in lock(&self.inner.rooms).drain() {
            task.abort();
        }
    }
}

/// Tracks the connection: degraded while it is down, and [`Event::Resumed`] when it is back.
fn on_connection_event(
    health: &Mutex<Health>,
    events: &mpsc::UnboundedSender<Event>,
    reconnected: &Notify,
    event: async_nats::Event,
) {
    match event {
        async_nats::Event::Disconnected => {
            tracing::warn!("nats backplane unreachable");
            *lock(health) = Health::Degraded("disconnected from NATS".to_owned());
        }
        async_nats::Event::Connected => {
            let mut health = lock(health);
            if !health.is_connected() {
                tracing::info!("nats backplane reachable again");
                *health = Health::Connected;
                let _ = events.send(Event::Resumed);
                // A restarted server may have lost the presence stream's messages.
                reconnected.notify_one();
            }
        }
        async_nats::Event::SlowConsumer(_) => {
            // Messages were dropped on the way to this node: catch up from history.
            tracing::warn!("nats backplane: slow consumer, catching up from history");
            let _ = events.send(Event::Resumed);
        }
        _ => {}
    }
}

impl Inner {
    async fn within<T>(&self, future: impl Future<Output = T>) -> Result<T, Error> {
        tokio::time::timeout(self.config.response_timeout, future)
            .await
            .map_err(|_| Error::Unavailable("NATS did not answer in time".to_owned()))
    }

    fn history_subject(&self, room: &RoomName) -> String {
        format!("{}.h.{}", self.config.prefix, room_token(room))
    }

    fn live_subject(&self, room: &RoomName) -> String {
        format!("{}.live.{}", self.config.prefix, room_token(room))
    }

    fn event_subject(&self, room: &RoomName) -> String {
        format!("{}.ev.{}", self.config.prefix, room_token(room))
    }

    fn presence_subject(&self, room: &RoomName, client: &str) -> String {
        format!("{}.pz.{}.{client}", self.config.prefix, room_token(room))
    }

    fn node_subject(&self, node: u64) -> String {
        format!("{}.node.{}", self.config.prefix, node_hex(node))
    }

    fn broadcast_subject(&self) -> String {
        format!("{}.broadcast", self.config.prefix)
    }

    fn meta_ttl(&self) -> Duration {
        self.config.history.meta_ttl.max(self.config.history.ttl)
    }

    /// A request answered by the server after everything this connection sent before it
    /// (subscriptions included) was processed.
    async fn round_trip(&self) -> Result<(), Error> {
        self.within(self.client.flush())
            .await?
            .map_err(unavailable)?;
        // Any request does; this one's answer is not even read (its schema varies with
        // server versions).
        let subject = format!("$JS.API.STREAM.INFO.{}", self.config.history_stream());
        self.within(self.client.request(subject, Bytes::new()))
            .await?
            .map(drop)
            .map_err(unavailable)
    }

    /// Creates both streams when they do not exist (an existing one is used as it is).
    async fn ensure_streams(&self) -> Result<(), Error> {
        let prefix = &self.config.prefix;
        let max_age = self.meta_ttl();
        let history = stream::Config {
            name: self.config.history_stream(),
            subjects: vec![format!("{prefix}.h.>")],
            max_messages_per_subject: i64::try_from(self.config.history.max_messages)
                .unwrap_or(i64::MAX - 1)
                .saturating_add(1),
            max_age,
            duplicate_window: max_age.min(Duration::from_secs(120)),
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            allow_direct: true,
            republish: Some(Republish {
                source: format!("{prefix}.h.>"),
                destination: format!("{prefix}.live.>"),
                headers_only: false,
            }),
            ..Default::default()
        };
        let presence_age = self.config.presence_ttl.max(Duration::from_millis(100));
        let presence = stream::Config {
            name: self.config.presence_stream(),
            subjects: vec![format!("{prefix}.pz.>")],
            max_messages_per_subject: 1,
            max_age: presence_age,
            duplicate_window: presence_age.min(Duration::from_secs(120)),
            discard: DiscardPolicy::Old,
            storage: StorageType::Memory,
            allow_direct: true,
            ..Default::default()
        };
        for config in [history, presence] {
            let name = config.name.clone();
            let stream = self
                .within(self.js.get_or_create_stream(config.clone()))
                .await?
                .map_err(|error| Error::Unavailable(format!("stream {name}: {error}")))?;
            // The presence ttl is the presence stream's `max_age`: a node started with
            // another one (the setting was changed) sets it. The history stream is used as
            // it is.
            if name == self.config.presence_stream()
                && stream.cached_info().config.max_age != config.max_age
            {
                tracing::info!(
                    stream = %name,
                    from = ?stream.cached_info().config.max_age,
                    to = ?config.max_age,
                    "nats backplane: setting the presence stream's max_age to the presence ttl"
                );
                self.within(self.js.update_stream(config))
                    .await?
                    .map_err(|error| Error::Unavailable(format!("stream {name}: {error}")))?;
            }
        }
        Ok(())
    }

    /// The last message stored on the room's subject, read from the server.
    async fn read_tip(&self, room: &RoomName) -> Result<Option<Tip>, Error> {
        let stream = self
            .within(self.js.get_stream_no_info(self.config.history_stream()))
            .await?
            .map_err(unavailable)?;
        let subject = self.history_subject(room);
        match self
            .within(stream.get_last_raw_message_by_subject(&subject))
            .await?
        {
            Ok(message) => {
                let (offset, epoch) = position_of(Some(&message.headers)).ok_or_else(|| {
                    Error::Protocol(format!("message {} without offset", message.sequence))
                })?;
                Ok(Some(Tip {
                    sequence: message.sequence,
                    offset,
                    epoch,
                }))
            }
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Stores a message on the room's subject if the subject's last message is still
    /// `expected` (None: no message). `Ok(None)` when it was not (a race lost).
    async fn store(
        &self,
        room: &RoomName,
        expected: Option<&Tip>,
        offset: u64,
        epoch: &Epoch,
        marker: bool,
        payload: Bytes,
    ) -> Result<Option<Tip>, Error> {
        let mut headers = HeaderMap::new();
        let expected_sequence = expected.map_or(0, |tip| tip.sequence);
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected_sequence.to_string(),
        );
        headers.insert(OFFSET, offset.to_string());
        headers.insert(EPOCH, epoch.as_str());
        if marker {
            headers.insert(KIND, "m");
        }
        let subject = self.history_subject(room);
        let result = self
            .within(async {
                let ack = self
                    .js
                    .publish_with_headers(subject, headers, payload)
                    .await?;
                ack.await
            })
            .await?;
        match result {
            Ok(ack) => Ok(Some(Tip {
                sequence: ack.sequence,
                offset,
                epoch: epoch.clone(),
            })),
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(error) if error.kind() == PublishErrorKind::StreamNotFound => {
                // The server lost its streams (restarted without storage): make them again.
                tracing::warn!("nats backplane: the history stream is gone; creating it");
                self.ensure_streams().await?;
                Ok(None)
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Remembers the last message stored on a room's subject (see [`Inner::tips`]).
    fn remember(&self, room: &RoomName, tip: Tip) {
        let mut tips = lock(&self.tips);
        if tips.len() >= MAX_TIPS && !tips.contains_key(room) {
            let forgotten = tips.keys().next().cloned();
            if let Some(forgotten) = forgotten {
                tips.remove(&forgotten);
            }
        }
        tips.insert(room.clone(), tip);
    }

    /// A live publication of a room this node follows: its tip now, unless it is not
    /// newer in the stream than the known one, or it numbers an offset of the known epoch
    /// again (messages of an older copy written back): the known tip is kept, and the next
    /// publish finds the room behind it.
    fn saw(&self, room: &RoomName, tip: Tip) {
        let newer = lock(&self.tips).get(room).is_none_or(|known| {
            tip.sequence > known.sequence && (tip.epoch != known.epoch || tip.offset > known.offset)
        });
        if newer {
            self.remember(room, tip);
        }
    }

    async fn publish(&self, room: &RoomName, payload: Bytes) -> Result<Publication, Error> {
        let cached = lock(&self.tips).get(room).cloned();
        let mut tip = match &cached {
            Some(tip) => Some(tip.clone()),
            None => self.read_tip(room).await?,
        };
        for _ in 0..PUBLISH_ATTEMPTS {
            // Behind what this node stored in the same epoch: the room's history went
            // back, so it starts again in a new epoch.
            let went_back = matches!(
                (&cached, &tip),
                (Some(cached), Some(tip)) if cached.epoch == tip.epoch && tip.offset < cached.offset
            );
            let (offset, epoch) = match &tip {
                Some(_) if went_back => {
                    tracing::warn!(%room, "nats backplane: the room's history went back; new epoch");
                    (1, new_epoch())
                }
                Some(tip) => (tip.offset.saturating_add(1), tip.epoch.clone()),
                None => (1, new_epoch()),
            };
            match self
                .store(room, tip.as_ref(), offset, &epoch, false, payload.clone())
                .await?
            {
                Some(stored) => {
                    self.remember(room, stored);
                    return Ok(Publication {
                        room: room.clone(),
                        position: StreamPosition::new(epoch, Offset(offset)),
                        payload,
                    });
                }
                None => tip = self.read_tip(room).await?,
            }
        }
        Err(Error::Unavailable(format!(
            "no offset for {room} after {PUBLISH_ATTEMPTS} attempts"
        )))
    }

    /// See [`Backplane::renew_epoch`]: a marker of a new epoch at offset 0 after the room's
    /// last message, unless the room has moved on.
    async fn renew_epoch(
        &self,
        room: &RoomName,
        seen: &StreamPosition,
    ) -> Result<StreamPosition, Error> {
        for _ in 0..PUBLISH_ATTEMPTS {
            let tip = self.tip_or_create(room).await?;
            if tip.epoch != seen.epoch || tip.offset >= seen.offset.get() {
                return Ok(StreamPosition::new(tip.epoch, Offset(tip.offset)));
            }
            let epoch = new_epoch();
            if let Some(stored) = self
                .store(room, Some(&tip), 0, &epoch, true, Bytes::new())
                .await?
            {
                tracing::warn!(%room, "nats backplane: the room's history went back; new epoch");
                self.remember(room, stored);
                return Ok(StreamPosition::new(epoch, Offset::ZERO));
            }
        }
        Err(Error::Unavailable(format!("no record for {room}")))
    }

    /// The room's record, written as a marker (a new epoch at offset 0) when it has none.
    async fn tip_or_create(&self, room: &RoomName) -> Result<Tip, Error> {
        for _ in 0..PUBLISH_ATTEMPTS {
            if let Some(tip) = self.read_tip(room).await? {
                return Ok(tip);
            }
            let epoch = new_epoch();
            if let Some(tip) = self
                .store(room, None, 0, &epoch, true, Bytes::new())
                .await?
            {
                return Ok(tip);
            }
        }
        Err(Error::Unavailable(format!("no record for {room}")))
    }

    /// Every message of `stream` on `filter` (with `deliver`), through a short-lived
    /// consumer; stops at stream sequence `until` when given.
    async fn read_messages(
        &self,
        stream: String,
        filter: String,
        deliver: DeliverPolicy,
        until: Option<u64>,
    ) -> Result<Vec<jetstream::Message>, Error> {
        let stream = self
            .within(self.js.get_stream_no_info(stream))
            .await?
            .map_err(unavailable)?;
        let consumer = self
            .within(stream.create_consumer(pull::Config {
                filter_subject: filter,
                deliver_policy: deliver,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            }))
            .await?
            .map_err(unavailable)?;
        let name = consumer.cached_info().name.clone();
        let pending = usize::try_from(consumer.cached_info().num_pending).unwrap_or(usize::MAX);
        let mut messages = Vec::with_capacity(pending.min(1024));
        if pending > 0 {
            let mut batch = self
                .within(
                    consumer
                        .fetch()
                        .max_messages(pending)
                        .expires(self.config.response_timeout)
                        .messages(),
                )
                .await?
                .map_err(unavailable)?;
            while messages.len() < pending {
                let Some(message) = self.within(batch.next()).await? else {
                    break;
                };
                let message = message.map_err(unavailable)?;
                let sequence = message.info().map_or(0, |info| info.stream_sequence);
                let done = until.is_some_and(|until| sequence >= until);
                messages.push(message);
                if done {
                    break;
                }
            }
        }
        // The consumer would vanish by itself after its inactivity threshold; deleting it
        // now keeps the server tidy without making the reader wait.
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
        Ok(messages)
    }

    /// Reads a room's history; a room without a record gets one when `create`, and reads
    /// as [`HistoryPage::of_unused_room`] otherwise.
    async fn history(
        &self,
        room: &RoomName,
        query: HistoryRange,
        create: bool,
    ) -> Result<HistoryPage, Error> {
        let tip = if create {
            self.tip_or_create(room).await?
        } else {
            match self.read_tip(room).await? {
                Some(tip) => tip,
                None => return Ok(HistoryPage::of_unused_room(&query)),
            }
        };
        let epoch = tip.epoch.clone();
        let latest = tip.offset;
        let max = self.config.history.max_messages;
        let (limit, wanted_after) = match &query {
            HistoryRange::Since { position, limit } if position.epoch == epoch => {
                (*limit, position.offset.get())
            }
            HistoryRange::Since { limit, .. } => (*limit, 0),
            HistoryRange::Latest { limit } => (*limit, 0),
        };
        let limit = limit.min(max);
        // Whether anything must be read: the publications, or (for `recovered`) the oldest
        // retained one.
        let must_read = match &query {
            HistoryRange::Since { position, .. } => {
                position.epoch != epoch || position.offset.get() < latest
            }
            HistoryRange::Latest { limit } => *limit > 0 && latest > 0,
        };
        let mut retained = Vec::new();
        if must_read && latest > 0 {
            let horizon = now_nanos()
                - i128::try_from(self.config.history.ttl.as_nanos()).unwrap_or(i128::MAX);
            let floor = latest.saturating_sub(u64::try_from(max).unwrap_or(u64::MAX));
            let messages = self
                .read_messages(
                    self.config.history_stream(),
                    self.history_subject(room),
                    DeliverPolicy::All,
                    Some(tip.sequence),
                )
                .await?;
            for message in messages {
                let Ok(info) = message.info() else { continue };
                if info.stream_sequence > tip.sequence
                    || info.published.unix_timestamp_nanos() < horizon
                {
                    continue;
                }
                let Some((offset, message_epoch)) = position_of(message.headers.as_ref()) else {
                    continue;
                };
                if offset == 0 || offset <= floor || message_epoch != epoch {
                    continue;
                }
                retained.push(Publication {
                    room: room.clone(),
                    position: StreamPosition::new(epoch.clone(), Offset(offset)),
                    payload: message.message.payload.clone(),
                });
            }
        }
        let oldest = retained
            .first()
            .map_or(latest.saturating_add(1), |p| p.position.offset.get());
        let (publications, recovered) = match &query {
            HistoryRange::Latest { .. } => {
                let skip = retained.len().saturating_sub(limit);
                (retained.split_off(skip), true)
            }
            HistoryRange::Since { position, .. } => {
                let recovered = position.epoch == epoch
                    && position.offset.get() <= latest
                    && oldest <= position.offset.get().saturating_add(1);
                let publications = retained
                    .into_iter()
                    .filter(|p| p.position.offset.get() > wanted_after)
                    .take(limit)
                    .collect();
                (publications, recovered)
            }
        };
        Ok(HistoryPage {
            publications,
            position: StreamPosition::new(epoch, Offset(latest)),
            recovered,
        })
    }

    async fn put_presence(
        &self,
        room: &RoomName,
        client: &str,
        value: &'static [u8],
        user: Option<&str>,
    ) -> Result<(), Error> {
        let payload = match user {
            Some(user) => Bytes::from(format!("u{user}")),
            None => Bytes::from_static(value),
        };
        let result = self
            .within(async {
                let ack = self
                    .js
                    .publish(self.presence_subject(room, client), payload)
                    .await?;
                ack.await
            })
            .await?;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == PublishErrorKind::StreamNotFound => {
                self.ensure_streams().await?;
                Err(unavailable(error))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn add_presence(
        &self,
        room: &RoomName,
        client: ConnectionId,
        user: Option<&str>,
    ) -> Result<(), Error> {
        self.put_presence(room, &client.to_string(), b"-", user)
            .await
    }

    async fn follow(self: &Arc<Self>, room: &RoomName) -> Result<(), Error> {
        let live = self
            .within(self.client.subscribe(self.live_subject(room)))
            .await?
            .map_err(unavailable)?;
        let events = self
            .within(self.client.subscribe(self.event_subject(room)))
            .await?
            .map_err(unavailable)?;
        let task = tokio::spawn(forward_room(Arc::clone(self), room.clone(), live, events));
        if let Some(previous) = lock(&self.rooms).insert(room.clone(), task) {
            previous.abort();
        }
        // When the server answers this, it has the subscriptions: every later publish
        // reaches this node.
        self.round_trip().await
    }
}

/// Forwards one room's live publications and room events.
async fn forward_room(
    inner: Arc<Inner>,
    room: RoomName,
    mut live: async_nats::Subscriber,
    mut events: async_nats::Subscriber,
) {
    let own = node_hex(inner.config.node_id);
    loop {
        let event = tokio::select! {
            message = live.next() => {
                let Some(message) = message else { return };
                if header(message.headers.as_ref(), KIND).is_some() {
                    continue;
                }
                let Some((offset, epoch)) = position_of(message.headers.as_ref()) else {
                    tracing::debug!("ignored an unreadable backplane message");
                    continue;
                };
                let sequence = header(message.headers.as_ref(), SEQUENCE)
                    .and_then(|sequence| sequence.parse().ok());
                if let Some(sequence) = sequence {
                    let tip = Tip { sequence, offset, epoch: epoch.clone() };
                    inner.saw(&room, tip);
                }
                Event::Publication(Publication {
                    room: room.clone(),
                    position: StreamPosition::new(epoch, Offset(offset)),
                    payload: message.payload,
                })
            }
            message = events.next() => {
                let Some(message) = message else { return };
                if header(message.headers.as_ref(), ORIGIN) == Some(own.as_str()) {
                    continue;
                }
                Event::RoomEvent { room: room.clone(), payload: message.payload }
            }
        };
        if inner.events_tx.send(event).is_err() {
            return;
        }
    }
}

/// Forwards sends and disconnects addressed to this node, and replies to each request with
/// the server's answer once it is given (in any order; an answer that does not come within
/// the answer timeout is never sent: the asker has stopped waiting).
async fn forward_node(inner: Arc<Inner>, mut node: async_nats::Subscriber) {
    let mut answering = FuturesUnordered::new();
    loop {
        let message = tokio::select! {
            message = node.next() => match message {
                Some(message) => message,
                None => return,
            },
            Some(()) = answering.next() => continue,
        };
        let headers = message.headers.as_ref();
        let client = header(headers, CLIENT).and_then(|client| client.parse().ok());
        let (reply, answer) = Reply::channel();
        let event = match (header(headers, KIND), client) {
            (Some("S"), Some(to)) => Some(Event::Send {
                to,
                payload: message.payload.clone(),
                reply,
            }),
            (Some("D"), Some(client)) => Some(Event::Disconnect { client, reply }),
            _ => None,
        };
        let Some(event) = event else {
            tracing::debug!("ignored an unreadable backplane message");
            continue;
        };
        // When the server no longer takes events, the dropped reply answers `none`.
        let _ = inner.events_tx.send(event);
        if let Some(subject) = message.reply {
            let inner = Arc::clone(&inner);
            answering.push(async move {
                if let Some(answer) = answer_within(answer, inner.config.answer_timeout).await {
                    let word = Bytes::from_static(answer_word(answer).as_bytes());
                    let _ = inner.client.publish(subject, word).await;
                }
            });
        }
    }
}

/// Forwards other nodes' broadcasts.
async fn forward_broadcasts(inner: Arc<Inner>, mut broadcasts: async_nats::Subscriber) {
    let own = node_hex(inner.config.node_id);
    while let Some(message) = broadcasts.next().await {
        if header(message.headers.as_ref(), ORIGIN) == Some(own.as_str()) {
            continue;
        }
        let event = Event::Broadcast {
            payload: message.payload,
        };
        if inner.events_tx.send(event).is_err() {
            return;
        }
    }
}

/// Refreshes this node's presence entries every third of the presence ttl, and right after
/// an outage.
async fn refresh_presence(inner: Arc<Inner>) {
    let period = (inner.config.presence_ttl / 3).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = inner.reconnected.notified() => {}
        }
        let entries: Vec<(RoomName, ConnectionId, Option<String>)> = lock(&inner.own_presence)
            .iter()
            .flat_map(|(room, members)| {
                members
                    .iter()
                    .map(|(client, user)| (room.clone(), *client, user.clone()))
            })
            .collect();
        for (room, client, user) in entries {
            if inner
                .add_presence(&room, client, user.as_deref())
                .await
                .is_err()
            {
                // Degraded: the next tick tries again.
                break;
            }
        }
    }
}

impl NatsBackplane {
    async fn request_node(
        &self,
        node: u64,
        kind: &'static str,
        client: ConnectionId,
        payload: Bytes,
    ) -> Result<Routed, Error> {
        let mut headers = HeaderMap::new();
        headers.insert(KIND, kind);
        headers.insert(CLIENT, client.to_string());
        let inner = &self.inner;
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload)
            .timeout(Some(inner.config.answer_timeout));
        let bound = inner
            .config
            .answer_timeout
            .saturating_add(inner.config.response_timeout);
        let result = tokio::time::timeout(
            bound,
            inner.client.send_request(inner.node_subject(node), request),
        )
        .await
        .map_err(|_| Error::Unavailable("NATS did not answer in time".to_owned()))?;
        match result {
            // An empty reply: a node that answers on receipt (an older version).
            Ok(message) if message.payload.is_empty() => Ok(Routed::Delivered),
            Ok(message) => Ok(parse_answer(&message.payload).map_or_else(
                || {
                    tracing::debug!("ignored an unreadable answer");
                    Routed::Unanswered
                },
                Routed::from,
            )),
            Err(error) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
                Ok(Routed::NoSuchNode)
            }
            // Not the node's fault when NATS itself is out of reach.
            Err(error)
                if error.kind() == async_nats::RequestErrorKind::TimedOut
                    && lock(&inner.health).is_connected() =>
            {
                Ok(Routed::Unanswered)
            }
            Err(error) => Err(unavailable(error)),
        }
    }
}

impl Backplane for NatsBackplane {
    fn node_id(&self) -> u64 {
        self.inner.config.node_id
    }

    fn take_events(&self) -> Option<Events> {
        lock(&self.inner.events_rx).take()
    }

    fn publish<'a>(
        &'a self,
        room: &'a RoomName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Publication, Error>> {
        Box::pin(self.inner.publish(room, payload))
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        query: HistoryRange,
    ) -> BoxFuture<'a, Result<HistoryPage, Error>> {
        Box::pin(self.inner.history(room, query, true))
    }

    fn read_history<'a>(
        &'a self,
        room: &'a RoomName,
        query: HistoryRange,
    ) -> BoxFuture<'a, Result<HistoryPage, Error>> {
        Box::pin(self.inner.history(room, query, false))
    }

    fn renew_epoch<'a>(
        &'a self,
        room: &'a RoomName,
        seen: &'a StreamPosition,
    ) -> BoxFuture<'a, Result<StreamPosition, Error>> {
        Box::pin(self.inner.renew_epoch(room, seen))
    }

    fn subscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.inner.follow(room))
    }

    fn unsubscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), Error>> {
        // Dropping the subscribers (with the task) unsubscribes them.
        if let Some(task) = lock(&self.inner.rooms).remove(room) {
            task.abort();
        }
        Box::pin(async { Ok(()) })
    }

    fn broadcast(&self, payload: Bytes) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut headers = HeaderMap::new();
            headers.insert(ORIGIN, node_hex(self.inner.config.node_id));
            let inner = &self.inner;
            inner
                .within(inner.client.publish_with_headers(
                    inner.broadcast_subject(),
                    headers,
                    payload,
                ))
                .await?
                .map_err(unavailable)
        })
    }

    fn send(&self, to: ConnectionId, payload: Bytes) -> BoxFuture<'_, Result<Routed, Error>> {
        Box::pin(self.request_node(to.node(), "S", to, payload))
    }

    fn disconnect(&self, client: ConnectionId) -> BoxFuture<'_, Result<Routed, Error>> {
        Box::pin(self.request_node(client.node(), "D", client, Bytes::new()))
    }

    fn room_event<'a>(
        &'a self,
        room: &'a RoomName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut headers = HeaderMap::new();
            headers.insert(ORIGIN, node_hex(self.inner.config.node_id));
            let inner = &self.inner;
            inner
                .within(inner.client.publish_with_headers(
                    inner.event_subject(room),
                    headers,
                    payload,
                ))
                .await?
                .map_err(unavailable)
        })
    }

    fn presence_add<'a>(
        &'a self,
        room: &'a RoomName,
        member: PresenceMember,
    ) -> BoxFuture<'a, Result<(), Error>> {
        lock(&self.inner.own_presence)
            .entry(room.clone())
            .or_default()
            .insert(member.client, member.user.clone());
        Box::pin(async move {
            self.inner
                .add_presence(room, member.client, member.user.as_deref())
                .await
        })
    }

    fn presence_remove<'a>(
        &'a self,
        room: &'a RoomName,
        client: ConnectionId,
    ) -> BoxFuture<'a, Result<(), Error>> {
        {
            let mut own = lock(&self.inner.own_presence);
            if let Some(members) = own.get_mut(room) {
                members.remove(&client);
                if members.is_empty() {
                    own.remove(room);
                }
            }
        }
        // An empty entry replaces the member's (one message per subject).
        Box::pin(async move {
            self.inner
                .put_presence(room, &client.to_string(), b"", None)
                .await
        })
    }

    fn presence<'a>(
        &'a self,
        room: &'a RoomName,
    ) -> BoxFuture<'a, Result<Vec<PresenceMember>, Error>> {
        Box::pin(async move {
            let inner = &self.inner;
            let filter = inner.presence_subject(room, "*");
            let messages = inner
                .read_messages(
                    inner.config.presence_stream(),
                    filter,
                    DeliverPolicy::LastPerSubject,
                    None,
                )
                .await?;
            let mut members = Vec::with_capacity(messages.len());
            for message in messages {
                let Some(client) = message.subject.as_str().rsplit('.').next() else {
                    continue;
                };
                let Ok(client) = client.parse() else { continue };
                let user = match message.payload.as_ref() {
                    b"" => continue,
                    b"-" => None,
                    value => match value.strip_prefix(b"u") {
                        Some(user) => Some(String::from_utf8_lossy(user).into_owned()),
                        None => continue,
                    },
                };
                members.push(PresenceMember { client, user });
            }
            Ok(members)
        })
    }

    fn health(&self) -> Health {
        lock(&self.inner.health).clone()
    }

    fn clamp_limit(&self, requested: Option<usize>) -> usize {
        let max = self.inner.config.history.max_messages;
        requested.map_or(max, |limit| limit.min(max))
    }

    fn kind(&self) -> &'static str {
        "nats"
    }
}
