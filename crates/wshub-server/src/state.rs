//! What every connection and every HTTP handler of the server shares: the hub's options,
//! the backplane, the token verifier, and the operations both the WebSocket protocol and
//! the HTTP API perform (publish, send, broadcast, disconnect, presence, history).
//!
//! Every one of them goes through the [`Backplane`]: the memory one on a single node, Redis
//! or NATS in a cluster. What this node delivers to its own connections is decided in the
//! crate's `delivery` module: per room, in offset order, exactly once.

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use bytes::Bytes;
use serde_json::value::RawValue;
use wshub::{CloseCode, Connection, ConnectionId, Hub, HubConfig, Message};
use wshub_backplane::history::HistoryConfig;
use wshub_backplane::{
    Backplane, HistoryPage, HistoryRange, MemoryBackplane, MemoryConfig, PresenceMember,
    Publication, Routed,
};
use wshub_protocol::{PresenceClient, RoomName, StreamPosition, encode};

use crate::{
    delivery::Rooms,
    metrics::{OutKind, ServerCounters},
    presence_events::{Announcement, PresenceBatcher},
    rate_limit::{AddressLimits, RateLimitConfig},
    token::TokenVerifier,
};

/// Which backplane the server uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BackplaneOptions {
    /// Everything in this process: one node (the default).
    #[default]
    Memory,
    /// A Redis server shared by every node (`--backplane redis://…`).
    Redis {
        /// The server's URL, e.g. `redis://127.0.0.1:6379`.
        url: String,
        /// What every key and channel name starts with, followed by `:` (`wshub` by
        /// default; see `wshub_backplane::BackplaneConfig::prefix`).
        prefix: String,
    },
    /// A NATS server with JetStream shared by every node (`--backplane nats://…`).
    Nats {
        /// The server's URL, e.g. `nats://127.0.0.1:4222`.
        url: String,
        /// The first token of every subject and the start of the stream names (`wshub` by
        /// default; letters, digits, `-` and `_`).
        prefix: String,
    },
}

/// The server's behaviour, independent of where it was configured (flags, environment,
/// file: see `settings`). Its [`Default`] is made from
/// [`Settings::default`](crate::settings::Settings): each default is written once, in the
/// declaration of the setting each field names.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The hub's limits and timings. Its overflow policy must stay
    /// [`OverflowPolicy::Close`](wshub::OverflowPolicy::Close) (the default): the server
    /// refuses to start with one that drops messages
    /// ([`StartError::LossyOverflowPolicy`](crate::app::StartError::LossyOverflowPolicy)).
    pub hub: HubConfig,
    /// How much history each room keeps.
    pub history: HistoryConfig,
    /// The HS256 secret; with it every connection needs a valid token.
    pub jwt_secret: Option<String>,
    /// The audience a token's `aud` must name, when set.
    pub jwt_audience: Option<String>,
    /// The issuer a token's `iss` must be, when set.
    pub jwt_issuer: Option<String>,
    /// The key of the HTTP API; without it the API answers 401 to everyone.
    pub api_key: Option<String>,
    /// The largest HTTP API request body; a larger one is answered 413 (`--api-max-body`).
    pub api_max_body_bytes: usize,
    /// How long an HTTP API request body may take to arrive; a slower one is answered 408
    /// and its connection closed (`--api-body-timeout`).
    pub api_body_timeout: std::time::Duration,
    /// Whether subscribers get `join` and `leave` events.
    pub presence_events: bool,
    /// Per-connection command rate limit; `None` for no limit.
    pub rate_limit: Option<RateLimitConfig>,
    /// The payload bytes one connection may publish, broadcast or send per second, with
    /// bursts of four times as much; `None` for no limit (`--max-publish-bytes-per-second`).
    pub max_publish_bytes_per_second: Option<usize>,
    /// The most rooms one connection may be in.
    pub max_rooms_per_connection: usize,
    /// The most WebSocket connections open at once from one IP address; one more is
    /// closed with 1008 before its welcome (`--max-connections-per-ip`).
    pub max_connections_per_ip: usize,
    /// The backplane: memory (one node) by default (`--backplane`, `--backplane-prefix`).
    pub backplane: BackplaneOptions,
    /// On a shared backplane, how long this node's presence entries outlive it when it
    /// stops refreshing them (`--presence-ttl`).
    pub presence_ttl: std::time::Duration,
    /// TLS: with it the server serves `wss://` and `https://`. Default none.
    pub tls: Option<wshub::TlsConfig>,
    /// How long a drain spreads the closing of connections over (`--drain-window`).
    pub drain_window: std::time::Duration,
}

/// The `wshub` binary's defaults: each is written once, in its setting's declaration
/// (crate::settings).
impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions::from(&crate::settings::Settings::default())
    }
}

impl From<&crate::settings::Settings> for ServerOptions {
    fn from(settings: &crate::settings::Settings) -> Self {
        use crate::settings::BackplaneUrl;
        let backplane = match &settings.backplane {
            BackplaneUrl::Redis(url) => BackplaneOptions::Redis {
                url: url.clone(),
                prefix: settings.backplane_prefix.clone(),
            },
            BackplaneUrl::Nats(url) => BackplaneOptions::Nats {
                url: url.clone(),
                prefix: settings.backplane_prefix.clone(),
            },
            BackplaneUrl::Memory => BackplaneOptions::Memory,
        };
        Self {
            hub: settings.hub_config(),
            history: settings.history_config(),
            jwt_secret: settings.jwt_secret.clone(),
            jwt_audience: settings.jwt_audience.clone(),
            jwt_issuer: settings.jwt_issuer.clone(),
            api_key: settings.api_key.clone(),
            api_max_body_bytes: settings.api_max_body_bytes,
            api_body_timeout: settings.api_body_timeout,
            presence_events: settings.presence_events,
            rate_limit: settings.rate_limit_config(),
            max_publish_bytes_per_second: Some(settings.max_publish_bytes_per_second),
            max_rooms_per_connection: settings.max_rooms_per_connection,
            max_connections_per_ip: settings.max_connections_per_ip,
            backplane,
            presence_ttl: settings.presence_ttl,
            // Reading the certificate can fail; `main` loads it and reports which file.
            tls: None,
            drain_window: settings.drain_window,
        }
    }
}

/// Why an operation that crosses the backplane failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// No such connection (on any node).
    #[error("no connection {0}")]
    NotFound(String),
    /// The connection exists but is closing or overflowing.
    #[error("{0}")]
    Refused(String),
    /// The backplane is unreachable. The backplane's own error is kept for the logs (it
    /// is logged where it happens) and never shown: it can name hosts and credentials.
    #[error("backplane unavailable")]
    Unavailable(String),
    /// A bug.
    #[error("internal error")]
    Internal,
}

impl From<wshub_backplane::Error> for Failure {
    fn from(error: wshub_backplane::Error) -> Self {
        tracing::warn!(%error, "backplane operation failed");
        Failure::Unavailable(error.to_string())
    }
}

/// A history read, with its `message` frames encoded.
#[derive(Debug, Clone)]
pub struct HistoryFrames {
    /// `message` frames, oldest first.
    pub messages: Vec<Bytes>,
    /// The room's epoch and latest offset.
    pub position: StreamPosition,
    /// Whether the history reached back (for reads with `since`).
    pub recovered: bool,
}

/// The state shared by every connection task and HTTP handler.
#[derive(Debug)]
pub struct ServerState {
    /// The options the server runs with.
    pub options: ServerOptions,
    /// Set once, right after the hub is built (the backplane routes by the hub's node id).
    backplane: OnceLock<Arc<dyn Backplane>>,
    /// Per-room delivery state of this node.
    pub(crate) rooms: Rooms,
    /// Verifies tokens when a secret is configured.
    pub verifier: Option<TokenVerifier>,
    /// When the server started.
    pub started: Instant,
    /// Counters the hub does not keep.
    pub counters: ServerCounters,
    /// Connections and commands per client IP address.
    pub addresses: Arc<AddressLimits>,
    /// The presence events of big rooms waiting for the end of their tick.
    pub(crate) presence_batcher: PresenceBatcher,
    /// Told when `POST /api/drain` starts a drain, so the binary exits once it is over.
    pub(crate) drain_requested: tokio::sync::Notify,
}

impl ServerState {
    /// State for these options; [`ServerState::attach`] gives it its backplane.
    pub fn new(options: ServerOptions) -> Arc<Self> {
        Arc::new(Self {
            backplane: OnceLock::new(),
            rooms: Rooms::default(),
            verifier: options.jwt_secret.as_ref().map(|secret| {
                TokenVerifier::new(secret.as_bytes()).expecting(
                    options.jwt_audience.as_deref(),
                    options.jwt_issuer.as_deref(),
                )
            }),
            started: Instant::now(),
            counters: ServerCounters::default(),
            addresses: Arc::new(AddressLimits::new(
                options.max_connections_per_ip,
                options.rate_limit.and_then(|limit| limit.per_address),
            )),
            presence_batcher: PresenceBatcher::default(),
            drain_requested: tokio::sync::Notify::new(),
            options,
        })
    }

    /// Sets the backplane (once; later calls are ignored).
    pub fn attach(&self, backplane: Arc<dyn Backplane>) {
        if self.backplane.set(backplane).is_err() {
            tracing::error!("the server's backplane was set twice");
        }
    }

    /// The backplane.
    pub fn backplane(&self) -> &dyn Backplane {
        match self.backplane.get() {
            Some(backplane) => &**backplane,
            None => {
                // Only a bug gets here: `app` attaches it before serving anyone.
                static DETACHED: OnceLock<MemoryBackplane> = OnceLock::new();
                tracing::error!("the server's backplane is used before it is attached");
                DETACHED.get_or_init(|| MemoryBackplane::new(MemoryConfig::default()))
            }
        }
    }

    /// Publishes to a room through the backplane and delivers it to this node's
    /// subscribers, before returning, unless an earlier publication of the room is still
    /// on its way to this node (it then follows it, in offset order).
    pub async fn publish(
        self: &Arc<Self>,
        hub: &Hub,
        room: &RoomName,
        data: &RawValue,
        from: Option<ConnectionId>,
    ) -> Result<StreamPosition, Failure> {
        let from = from.map(|id| id.to_string());
        let payload = envelope(from.as_deref(), data);
        let publication = self.backplane().publish(room, payload).await?;
        let frame = encode::message(room, data, from.as_deref(), &publication.position);
        let position = publication.position.clone();
        self.offer(hub, publication, Some(frame));
        Ok(position)
    }

    /// Sends to one connection, on this node or another.
    pub async fn send(
        &self,
        hub: &Hub,
        to: ConnectionId,
        from: Option<ConnectionId>,
        data: &RawValue,
    ) -> Result<(), Failure> {
        let frame = encode::direct(from.map(|id| id.to_string()).as_deref(), data);
        if to.node() == hub.node_id() {
            let message = text(frame).ok_or(Failure::Internal)?;
            hub.send_to(to, message).map_err(|error| match error {
                wshub::Error::NotFound(_) => Failure::NotFound(to.to_string()),
                other => Failure::Refused(other.to_string()),
            })?;
            self.counters.record_out(OutKind::Direct, 1);
            return Ok(());
        }
        let routed = self.backplane().send(to, frame).await?;
        answered(routed, to)
    }

    /// Delivers to every connection of this node, then hands it to the other nodes.
    pub async fn broadcast(
        &self,
        hub: &Hub,
        from: Option<ConnectionId>,
        data: &RawValue,
    ) -> Result<(), Failure> {
        let frame = encode::broadcast(from.map(|id| id.to_string()).as_deref(), data);
        let delivered = hub.broadcast(text(frame.clone()).ok_or(Failure::Internal)?);
        self.counters.record_out(OutKind::Broadcast, delivered);
        self.backplane().broadcast(frame).await?;
        Ok(())
    }

    /// Closes a connection with 1000, on this node or another.
    pub async fn disconnect(&self, hub: &Hub, client: ConnectionId) -> Result<(), Failure> {
        if client.node() == hub.node_id() {
            let conn = hub
                .connection(client)
                .ok_or_else(|| Failure::NotFound(client.to_string()))?;
            conn.close(CloseCode::NORMAL, "disconnected by server");
            return Ok(());
        }
        let routed = self.backplane().disconnect(client).await?;
        answered(routed, client)
    }

    /// The members of a room on every node: this node's from the hub, the others' from the
    /// backplane (only this node's when the backplane is unreachable).
    pub async fn presence(&self, hub: &Hub, room: &RoomName) -> Vec<PresenceClient> {
        let mut clients: Vec<PresenceClient> = hub
            .room_members(room.as_str())
            .into_iter()
            .filter_map(|id| hub.connection(id))
            .map(|conn| PresenceClient {
                client: conn.id().to_string(),
                user: user_of(&conn).map(str::to_owned),
            })
            .collect();
        match self.backplane().presence(room).await {
            Ok(members) => {
                let mut others: Vec<PresenceClient> = members
                    .into_iter()
                    .filter(|member| member.client.node() != hub.node_id())
                    .map(|member| PresenceClient {
                        client: member.client.to_string(),
                        user: member.user,
                    })
                    .collect();
                others.sort_by(|a, b| a.client.cmp(&b.client));
                clients.append(&mut others);
            }
            Err(error) => tracing::warn!(%error, "presence of other nodes unavailable"),
        }
        clients
    }

    /// Records `conn` as a member of `room` in the backplane's presence.
    pub(crate) async fn presence_add(&self, room: &RoomName, conn: &Connection) {
        let member = PresenceMember {
            client: conn.id(),
            user: user_of(conn).map(str::to_owned),
        };
        if let Err(error) = self.backplane().presence_add(room, member).await {
            tracing::warn!(%error, "presence not recorded in the backplane");
        }
    }

    /// Reads a room's history for `history` (creating no state for a room that has
    /// none) and encodes its `message` frames.
    pub async fn history(
        &self,
        room: &RoomName,
        query: HistoryRange,
    ) -> Result<HistoryFrames, Failure> {
        let HistoryPage {
            publications,
            position,
            recovered,
        } = self.backplane().read_history(room, query).await?;
        Ok(HistoryFrames {
            messages: publications.iter().filter_map(message_frame).collect(),
            position,
            recovered,
        })
    }

    /// Tells a room's other members, on every node, that `conn` joined or left: at once in
    /// a small room, at the end of the tick in a big one (see [`crate::presence_events`]).
    pub fn presence_event(
        self: &Arc<Self>,
        hub: &Hub,
        room: &RoomName,
        conn: &Connection,
        joined: bool,
    ) {
        if !self.options.presence_events
            || self.presence_batcher.hold(self, hub, room, conn, joined)
        {
            return;
        }
        self.announce_presence(
            hub,
            Announcement {
                room: room.clone(),
                id: conn.id(),
                user: user_of(conn).map(str::to_owned),
                joined,
            },
        );
    }

    /// Sends one `join` or `leave` to the room's members here and on the other nodes.
    pub(crate) fn announce_presence(self: &Arc<Self>, hub: &Hub, announcement: Announcement) {
        let Announcement {
            room,
            id,
            user,
            joined,
        } = announcement;
        let client = id.to_string();
        let frame = if joined {
            encode::join(&room, &client, user.as_deref())
        } else {
            encode::leave(&room, &client, user.as_deref())
        };
        if let Some(message) = text(frame.clone()) {
            let delivered = hub.broadcast_to_room_except(room.as_str(), message, id);
            self.counters.record_out(OutKind::Presence, delivered);
        }
        let state = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = state.backplane().room_event(&room, frame).await {
                tracing::debug!(%error, "presence event not sent to other nodes");
            }
        });
    }

    /// Whether the backplane is working, and if not why.
    pub fn backplane_health(&self) -> wshub_backplane::Health {
        self.backplane().health()
    }
}

/// The outcome of a send or disconnect that went to another node, as the same operation on
/// that node would have ended: `not_found` when it has no such connection, `Refused` when
/// the connection is closing or overflowing. A node that is gone has no connection either.
/// A node that did not answer in time (hung or overloaded) is taken as having none too, so
/// the caller hears `not_found` after the backplane's answer timeout rather than waiting
/// on: the payload may still reach the connection if that node was only slow.
fn answered(routed: Routed, client: ConnectionId) -> Result<(), Failure> {
    match routed {
        Routed::Delivered => Ok(()),
        Routed::NoSuchConnection | Routed::NoSuchNode => Err(Failure::NotFound(client.to_string())),
        Routed::Refused => Err(Failure::Refused(format!(
            "connection {client} is closing or does not read fast enough"
        ))),
        Routed::Unanswered => {
            tracing::warn!(
                %client,
                node = %wshub_backplane::node_hex(client.node()),
                "the node holding the connection did not answer in time; answering not_found"
            );
            Err(Failure::NotFound(client.to_string()))
        }
    }
}

/// What a publication carries through the backplane: the publisher's connection id (empty
/// for the HTTP API), a newline, and the `data` JSON as the publisher sent it. Each node
/// encodes its `message` frame from it once.
fn envelope(from: Option<&str>, data: &RawValue) -> Bytes {
    let from = from.unwrap_or_default();
    let mut payload = Vec::with_capacity(from.len() + 1 + data.get().len());
    payload.extend_from_slice(from.as_bytes());
    payload.push(b'\n');
    payload.extend_from_slice(data.get().as_bytes());
    Bytes::from(payload)
}

/// The `message` frame of a publication whose payload is an [`envelope`]; `None` (logged)
/// for a payload no wshub node wrote.
pub(crate) fn message_frame(publication: &Publication) -> Option<Bytes> {
    let payload = &publication.payload;
    let decoded = payload
        .iter()
        .position(|b| *b == b'\n')
        .and_then(|newline| {
            let from = std::str::from_utf8(&payload[..newline]).ok()?;
            let data: &RawValue = serde_json::from_slice(&payload[newline + 1..]).ok()?;
            Some((from, data))
        });
    match decoded {
        Some((from, data)) => Some(encode::message(
            &publication.room,
            data,
            (!from.is_empty()).then_some(from),
            &publication.position,
        )),
        None => {
            tracing::error!(room = %publication.room, "unreadable publication from the backplane");
            None
        }
    }
}

/// The user id of a connection (its token's `sub`), if it has one.
pub fn user_of(conn: &Connection) -> Option<&str> {
    conn.identity().map(|identity| identity.user())
}

/// A frame we encoded, as a text message. Our encoders only write UTF-8 JSON, so this
/// fails only on a bug, which is logged.
pub fn text(frame: Bytes) -> Option<Message> {
    match Message::text_from_bytes(frame) {
        Ok(message) => Some(message),
        Err(error) => {
            tracing::error!(%error, "encoded frame is not UTF-8");
            None
        }
    }
}
