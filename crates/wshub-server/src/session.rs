//! One WebSocket connection speaking the JSON protocol (PROTOCOL.md): the welcome frame,
//! then each command in, its reply out, until the connection ends or its token expires.

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use wshub::{CloseCode, Connection, ConnectionId, Message};
use wshub_backplane::HistoryQuery;
use wshub_protocol::{Claims, Command, ErrorCode, ProtocolError, RoomName, encode};

use crate::{
    metrics::OutKind,
    rate_limit::{Decision, RateLimiter},
    state::{Failure as StateFailure, ServerState, text, user_of},
    token,
};

/// Serves one connection until it ends: the async handler of the server's hub.
pub async fn run(state: Arc<ServerState>, conn: Connection) {
    let claims = conn
        .identity()
        .and_then(|identity| identity.data::<Claims>())
        .cloned();
    let mut session = Session {
        limiter: state
            .options
            .rate_limit
            .map(|config| RateLimiter::new(&config, Instant::now())),
        state,
        conn,
        claims,
    };
    session.reply(encode::welcome(
        &session.conn.id().to_string(),
        user_of(&session.conn),
        session.state.options.hub.ping_interval,
    ));

    // A token's `exp` ends the connection with 1008 when it passes (PROTOCOL.md, Tokens).
    let expiry = session
        .claims
        .as_ref()
        .and_then(Claims::expires_at)
        .map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
    let expired = async {
        match expiry {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    let mut closing = false;
    loop {
        tokio::select! {
            message = session.conn.recv() => match message {
                Some(message) => session.handle(message).await,
                None => break,
            },
            () = &mut expired, if !closing => {
                session.conn.close(CloseCode::POLICY_VIOLATION, "token expired");
                // Keep reading until the close handshake ends the connection.
                closing = true;
            }
        }
    }
}

struct Session {
    state: Arc<ServerState>,
    conn: Connection,
    claims: Option<Claims>,
    limiter: Option<RateLimiter>,
}

/// A command's failure: the error code and message for its `error` frame.
type Failure = (ErrorCode, String);

impl Session {
    fn reply(&self, frame: Bytes) {
        if let Some(message) = text(frame)
            && self.conn.send(message).is_ok()
        {
            self.state.counters.record_out(OutKind::Reply, 1);
        }
    }

    async fn handle(&mut self, message: Message) {
        let Some(text) = message.as_text() else {
            // PROTOCOL.md, Transport: a binary frame on this endpoint closes with 1003.
            self.conn.close(
                CloseCode::UNSUPPORTED_DATA,
                "binary frames are not accepted; send JSON text",
            );
            return;
        };
        let command = match Command::decode(text) {
            Ok(command) => command,
            Err(error) => {
                self.state.counters.record_command("invalid");
                self.reply(error.to_frame());
                return;
            }
        };
        self.state.counters.record_command(command.type_name());
        if let Some(limiter) = &mut self.limiter {
            match limiter.check(Instant::now()) {
                Decision::Allow => {}
                decision => {
                    self.state.counters.record_rate_limited();
                    self.reply(
                        ProtocolError::new(
                            command.id().cloned(),
                            ErrorCode::RateLimited,
                            "too many commands; slow down",
                        )
                        .to_frame(),
                    );
                    if decision == Decision::Close {
                        self.conn
                            .close(CloseCode::POLICY_VIOLATION, "sustained rate-limit abuse");
                    }
                    return;
                }
            }
        }
        let id = command.id().cloned();
        match self.execute(command).await {
            Ok(Some(reply)) => self.reply(reply),
            Ok(None) => {}
            Err((code, message)) => self.reply(encode::error(id.as_ref(), code, &message)),
        }
    }

    /// Runs one command; returns its reply (when it has an id) or its failure.
    async fn execute(&mut self, command: Command) -> Result<Option<Bytes>, Failure> {
        let hub = self.conn.hub().clone();
        let state = Arc::clone(&self.state);
        match command {
            Command::Subscribe(cmd) => {
                self.check_subscribe(&cmd.room)?;
                let rooms = self.conn.rooms();
                let in_room = rooms.iter().any(|r| r == cmd.room.as_str());
                if !in_room && rooms.len() >= state.options.max_rooms_per_connection {
                    return Err((
                        ErrorCode::LimitExceeded,
                        format!(
                            "a connection may be in at most {} rooms",
                            state.options.max_rooms_per_connection
                        ),
                    ));
                }
                let subscribed = state
                    .subscribe(
                        &self.conn,
                        &cmd.room,
                        cmd.since.as_ref(),
                        |position, recovered, replay| {
                            // Under the room's delivery lock: nothing is delivered to the room
                            // between the replay and the join (see `delivery`).
                            if let Some(id) = &cmd.id {
                                self.reply(encode::ok_subscribe(
                                    id, &cmd.room, position, recovered,
                                ));
                            }
                            for frame in replay {
                                self.reply(frame);
                            }
                        },
                    )
                    .await;
                match subscribed {
                    Ok(subscribed) if subscribed.joined => {
                        state.presence_event(&hub, &cmd.room, &self.conn, true);
                    }
                    Ok(_) => {}
                    Err(StateFailure::Refused(_)) => return Ok(None),
                    Err(failure) => return Err(from_state(failure)),
                }
                Ok(None)
            }
            Command::Unsubscribe(cmd) => {
                if self.conn.leave(cmd.room.as_str()) {
                    state.presence_event(&hub, &cmd.room, &self.conn, false);
                    state.leave_backplane(&cmd.room, &self.conn).await;
                }
                Ok(cmd.id.map(|id| encode::ok_room(&id, &cmd.room)))
            }
            Command::Publish(cmd) => {
                if !token::may_publish(self.claims.as_ref(), cmd.room.as_str()) {
                    return Err(forbidden(&cmd.room, "publish to"));
                }
                let position = state
                    .publish(&hub, &cmd.room, cmd.data.as_raw(), Some(self.conn.id()))
                    .await
                    .map_err(from_state)?;
                Ok(cmd
                    .id
                    .map(|id| encode::ok_publish(&id, &cmd.room, position.offset)))
            }
            Command::Send(cmd) => {
                let to = parse_connection_id(&cmd.to)?;
                state
                    .send(&hub, to, Some(self.conn.id()), cmd.data.as_raw())
                    .await
                    .map_err(from_state)?;
                Ok(cmd.id.map(|id| encode::ok(&id)))
            }
            Command::Broadcast(cmd) => {
                state
                    .broadcast(&hub, Some(self.conn.id()), cmd.data.as_raw())
                    .await
                    .map_err(from_state)?;
                Ok(cmd.id.map(|id| encode::ok(&id)))
            }
            Command::Presence(cmd) => {
                self.check_subscribe(&cmd.room)?;
                let clients = state.presence(&hub, &cmd.room).await;
                Ok(cmd
                    .id
                    .map(|id| encode::ok_presence(&id, &cmd.room, &clients)))
            }
            Command::History(cmd) => {
                self.check_subscribe(&cmd.room)?;
                let Some(id) = cmd.id else {
                    return Ok(None);
                };
                let limit = state.backplane().clamp_limit(cmd.limit);
                let query = match &cmd.since {
                    Some(since) => HistoryQuery::Since {
                        position: since.clone(),
                        limit,
                    },
                    None => HistoryQuery::Latest { limit },
                };
                let page = state.history(&cmd.room, query).await.map_err(from_state)?;
                Ok(Some(encode::ok_history(
                    &id,
                    &cmd.room,
                    &page.position.epoch,
                    cmd.since.is_some().then_some(page.recovered),
                    &page.messages,
                )))
            }
            // A ping is answered even without an id (with `"id": null`): plain WebSocket
            // tools use it to check the connection by hand.
            Command::Ping(cmd) => Ok(Some(encode::pong(cmd.id.as_ref()))),
        }
    }

    fn check_subscribe(&self, room: &RoomName) -> Result<(), Failure> {
        if token::may_subscribe(self.claims.as_ref(), room.as_str()) {
            Ok(())
        } else {
            Err(forbidden(room, "subscribe to"))
        }
    }
}

fn forbidden(room: &RoomName, action: &str) -> Failure {
    (
        ErrorCode::Forbidden,
        format!("your token does not allow you to {action} room {room}"),
    )
}

fn not_found(client: &str) -> Failure {
    (ErrorCode::NotFound, format!("no connection {client}"))
}

/// The error frame's code and message for a failure of a shared operation.
fn from_state(failure: StateFailure) -> Failure {
    let code = match &failure {
        StateFailure::NotFound(_) => ErrorCode::NotFound,
        StateFailure::Unavailable(_) => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    };
    (code, failure.to_string())
}

/// A connection id from a command; an id that cannot exist is simply not found.
pub(crate) fn parse_connection_id(text: &str) -> Result<ConnectionId, Failure> {
    text.parse().map_err(|_| not_found(text))
}
