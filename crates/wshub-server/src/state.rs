//! What every connection and every HTTP handler of the server shares: the hub, the
//! history, the token verifier, the options, and the operations both the WebSocket
//! protocol and the HTTP API perform (publish, presence).

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use serde_json::value::RawValue;
use wshub::{Connection, ConnectionId, Hub, HubConfig, Message};
use wshub_protocol::{PresenceClient, RoomName, StreamPosition, encode};

use crate::{
    history::{History, HistoryConfig},
    metrics::{OutKind, ServerCounters},
    rate_limit::RateLimitConfig,
    token::TokenVerifier,
};

/// The server's behaviour, independent of where it was configured (flags, environment,
/// file: see `settings`).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The hub's limits and timings.
    pub hub: HubConfig,
    /// How much history each room keeps.
    pub history: HistoryConfig,
    /// The HS256 secret; with it every connection needs a valid token.
    pub jwt_secret: Option<String>,
    /// The key of the HTTP API; without it the API answers 401 to everyone.
    pub api_key: Option<String>,
    /// Whether subscribers get `join` and `leave` events.
    pub presence_events: bool,
    /// Per-connection command rate limit; `None` for no limit.
    pub rate_limit: Option<RateLimitConfig>,
    /// The most rooms one connection may be in.
    pub max_rooms_per_connection: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            hub: HubConfig::default().ping_interval(std::time::Duration::from_secs(25)),
            history: HistoryConfig::default(),
            jwt_secret: None,
            api_key: None,
            presence_events: true,
            rate_limit: Some(RateLimitConfig::default()),
            max_rooms_per_connection: 100,
        }
    }
}

impl From<&crate::settings::Settings> for ServerOptions {
    fn from(settings: &crate::settings::Settings) -> Self {
        Self {
            hub: settings.hub_config(),
            history: settings.history_config(),
            jwt_secret: settings.jwt_secret.clone(),
            api_key: settings.api_key.clone(),
            presence_events: settings.presence_events,
            rate_limit: settings.rate_limit_config(),
            max_rooms_per_connection: settings.max_rooms_per_connection,
        }
    }
}

/// The state shared by every connection task and HTTP handler.
#[derive(Debug)]
pub struct ServerState {
    /// The options the server runs with.
    pub options: ServerOptions,
    /// Per-room history, offsets and epochs.
    pub history: History,
    /// Verifies tokens when a secret is configured.
    pub verifier: Option<TokenVerifier>,
    /// When the server started.
    pub started: Instant,
    /// Counters the hub does not keep.
    pub counters: ServerCounters,
}

impl ServerState {
    /// State for these options.
    pub fn new(options: ServerOptions) -> Arc<Self> {
        Arc::new(Self {
            history: History::new(options.history),
            verifier: options
                .jwt_secret
                .as_ref()
                .map(|secret| TokenVerifier::new(secret.as_bytes())),
            started: Instant::now(),
            counters: ServerCounters::default(),
            options,
        })
    }

    /// Numbers a message, stores it in the room's history and delivers it to the room's
    /// subscribers, all under the room's history lock, so that a concurrent subscribe with
    /// recovery sees it either in the replay or live, never both or neither.
    pub fn publish(
        &self,
        hub: &Hub,
        room: &RoomName,
        data: &RawValue,
        from: Option<ConnectionId>,
    ) -> StreamPosition {
        let from = from.map(|id| id.to_string());
        self.history.with_room(room, |state| {
            let appended =
                state.append(|position| encode::message(room, data, from.as_deref(), position));
            if let Some(message) = text(appended.frame) {
                let delivered = hub.broadcast_to_room(room.as_str(), message);
                self.counters.record_out(OutKind::Message, delivered);
            }
            appended.position
        })
    }

    /// The members of a room with their users.
    pub fn presence(&self, hub: &Hub, room: &RoomName) -> Vec<PresenceClient> {
        hub.room_members(room.as_str())
            .into_iter()
            .filter_map(|id| hub.connection(id))
            .map(|conn| PresenceClient {
                client: conn.id().to_string(),
                user: user_of(&conn).map(str::to_owned),
            })
            .collect()
    }

    /// Tells a room's other members that `conn` joined or left.
    pub fn presence_event(&self, hub: &Hub, room: &RoomName, conn: &Connection, joined: bool) {
        if !self.options.presence_events {
            return;
        }
        let client = conn.id().to_string();
        let user = user_of(conn);
        let frame = if joined {
            encode::join(room, &client, user)
        } else {
            encode::leave(room, &client, user)
        };
        if let Some(message) = text(frame) {
            let delivered = hub.broadcast_to_room_except(room.as_str(), message, conn.id());
            self.counters.record_out(OutKind::Presence, delivered);
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
