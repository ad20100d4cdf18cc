//! One WebSocket connection speaking the JSON protocol (docs/PROTOCOL.md): the welcome frame,
//! then each command in, its reply out, until the connection ends or its token expires.

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use wshub::{CloseCode, Connection, ConnectionId, Message};
use wshub_backplane::HistoryRange;
use wshub_protocol::{
    Claims, Command, ErrorCode, LostRange, Offset, ProtocolError, RoomName, encode,
};

use crate::{
    history::{MAX_HISTORY_REPLY_BYTES, cut_to_bytes},
    metrics::OutKind,
    rate_limit::{AddressLimits, AddressSlot, Decision, RateLimiter, TokenBucket},
    state::{Failure, ServerState, text, user_of},
    token,
};

/// Serves one connection until it ends: the async handler of the server's hub.
pub async fn run(state: Arc<ServerState>, conn: Connection) {
    let claims = conn
        .identity()
        .and_then(|identity| identity.data::<Claims>())
        .cloned();
    let now = Instant::now();
    let address = conn
        .remote_addr()
        .map(|peer| AddressLimits::admit(&state.addresses, peer.ip(), now));
    if let Some(None) = address {
        state.counters.record_address_refused();
        conn.close(
            CloseCode::POLICY_VIOLATION,
            "too many connections from your address",
        );
        // Wait for the close handshake so the socket is released promptly.
        while conn.recv().await.is_some() {}
        return;
    }
    let address = address.flatten();
    let mut session = Session {
        limiter: state.options.rate_limit.map(|config| {
            let limiter = if address.as_ref().is_some_and(AddressSlot::returning) {
                RateLimiter::for_returning_address(&config, now)
            } else {
                RateLimiter::new(&config, now)
            };
            match address.as_ref().and_then(AddressSlot::commands) {
                Some(shared) => limiter.sharing(shared),
                None => limiter,
            }
        }),
        _address: address,
        published: state
            .options
            .max_publish_bytes_per_second
            .map(|per_second| {
                let per_second = u32::try_from(per_second).unwrap_or(u32::MAX);
                TokenBucket::new(f64::from(per_second), per_second.saturating_mul(4), now)
            }),
        state,
        conn,
        claims,
    };
    session.reply(encode::welcome(
        &session.conn.id().to_string(),
        user_of(&session.conn),
        session.state.options.hub.ping_interval,
    ));

    // A token's `exp` ends the connection with 1008 when it passes (docs/PROTOCOL.md, Tokens).
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
    /// This connection's place among those of its address, given back when it ends.
    _address: Option<AddressSlot>,
    /// The payload bytes it may still publish, broadcast or send now.
    published: Option<TokenBucket>,
}

/// A command's failure: the error code and message for its `error` frame.
type ErrorReply = (ErrorCode, String);

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
            // docs/PROTOCOL.md, Transport: a binary frame on this endpoint closes with 1003.
            self.conn.close(
                CloseCode::UNSUPPORTED_DATA,
                "binary frames are not accepted; send JSON text",
            );
            return;
        };
        // Every frame is charged to the rate limiter, whether it decodes or not: a flood of
        // invalid commands costs as much to decode as one of valid ones.
        let decoded = Command::decode(text);
        let id = match &decoded {
            Ok(command) => command.id().cloned(),
            Err(error) => error.id().cloned(),
        };
        if !self.within_rate_limit(id) {
            return;
        }
        let command = match decoded {
            Ok(command) => command,
            Err(error) => {
                self.state.counters.record_command("invalid");
                self.reply(error.to_frame());
                return;
            }
        };
        self.state.counters.record_command(command.type_name());
        let id = command.id().cloned();
        match self.execute(command).await {
            Ok(Some(reply)) => self.reply(reply),
            Ok(None) => {}
            Err((code, message)) => self.reply(encode::error(id.as_ref(), code, &message)),
        }
    }

    /// Charges one frame to the rate limiter. Over the limit the frame is answered with
    /// `rate_limited` and not executed, and sustained abuse closes the connection with 1008.
    fn within_rate_limit(&mut self, id: Option<wshub_protocol::CommandId>) -> bool {
        let Some(limiter) = &mut self.limiter else {
            return true;
        };
        let decision = limiter.check(Instant::now());
        if decision == Decision::Allow {
            return true;
        }
        self.state.counters.record_rate_limited();
        self.reply(
            ProtocolError::new(id, ErrorCode::RateLimited, "too many commands; slow down")
                .to_frame(),
        );
        if decision == Decision::Close {
            self.conn
                .close(CloseCode::POLICY_VIOLATION, "sustained rate-limit abuse");
        }
        false
    }

    /// Runs one command; returns its reply (when it has an id) or its failure.
    async fn execute(&mut self, command: Command) -> Result<Option<Bytes>, ErrorReply> {
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
                let max_replay = state.options.hub.send_queue_max_bytes / 2;
                let subscribed = state
                    .subscribe(
                        &self.conn,
                        &cmd.room,
                        cmd.since.as_ref(),
                        |position, recovered, replay| {
                            // Under the room's delivery lock: nothing is delivered to the room
                            // between the replay and the join (see `delivery`).
                            // A replay larger than half the send queue would get the client
                            // cut off as slow, and again at each reconnect: its oldest part
                            // is given up, and the client told it was not recovered.
                            let (offsets, mut replay): (Vec<Offset>, Vec<Bytes>) =
                                replay.into_iter().unzip();
                            let recovered = if cut_to_bytes(&mut replay, max_replay, true) {
                                Some(false)
                            } else {
                                recovered
                            };
                            // What is neither replayed nor coming live, said exactly.
                            let lost = match (&cmd.since, recovered) {
                                (Some(since), Some(false)) => {
                                    let first = offsets.get(offsets.len() - replay.len());
                                    LostRange::between(since, position, first.copied())
                                }
                                _ => Vec::new(),
                            };
                            if let Some(id) = &cmd.id {
                                self.reply(encode::ok_subscribe(
                                    id, &cmd.room, position, recovered, &lost,
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
                    Err(Failure::Refused(_)) => return Ok(None),
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
                self.charge_payload(cmd.data.as_raw().get().len())?;
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
                if self
                    .claims
                    .as_ref()
                    .is_some_and(|claims| claims.send.is_some())
                {
                    // The target's user is known only for a connection of this node; a
                    // token that limits targets cannot reach the others.
                    let target = hub.connection(to);
                    let user = target.as_ref().and_then(user_of);
                    if !token::may_send_to(self.claims.as_ref(), user) {
                        return Err((
                            ErrorCode::Forbidden,
                            format!("your token does not allow you to send to {}", cmd.to),
                        ));
                    }
                }
                self.charge_payload(cmd.data.as_raw().get().len())?;
                state
                    .send(&hub, to, Some(self.conn.id()), cmd.data.as_raw())
                    .await
                    .map_err(from_state)?;
                Ok(cmd.id.map(|id| encode::ok(&id)))
            }
            Command::Broadcast(cmd) => {
                if !token::may_broadcast(self.claims.as_ref()) {
                    return Err((
                        ErrorCode::Forbidden,
                        "your token does not allow you to broadcast".to_owned(),
                    ));
                }
                self.charge_payload(cmd.data.as_raw().get().len())?;
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
                    Some(since) => HistoryRange::Since {
                        position: since.clone(),
                        limit,
                    },
                    None => HistoryRange::Latest { limit },
                };
                let mut page = state.history(&cmd.room, query).await.map_err(from_state)?;
                let more = cut_to_bytes(
                    &mut page.messages,
                    MAX_HISTORY_REPLY_BYTES,
                    cmd.since.is_none(),
                );
                Ok(Some(encode::ok_history(
                    &id,
                    &cmd.room,
                    &page.position.epoch,
                    cmd.since.is_some().then_some(page.recovered),
                    &page.messages,
                    more,
                )))
            }
            // A ping is answered even without an id (with `"id": null`): plain WebSocket
            // tools use it to check the connection by hand.
            Command::Ping(cmd) => Ok(Some(encode::pong(cmd.id.as_ref()))),
        }
    }

    /// Takes `bytes` of payload from the connection's publishing budget, or refuses the
    /// command with `rate_limited` when it has not that much left.
    fn charge_payload(&mut self, bytes: usize) -> Result<(), ErrorReply> {
        let Some(budget) = &mut self.published else {
            return Ok(());
        };
        if budget.try_take(Instant::now(), bytes as f64) {
            return Ok(());
        }
        self.state.counters.record_rate_limited();
        Err((
            ErrorCode::RateLimited,
            "too many payload bytes per second; slow down".to_owned(),
        ))
    }

    fn check_subscribe(&self, room: &RoomName) -> Result<(), ErrorReply> {
        if token::may_subscribe(self.claims.as_ref(), room.as_str()) {
            Ok(())
        } else {
            Err(forbidden(room, "subscribe to"))
        }
    }
}

fn forbidden(room: &RoomName, action: &str) -> ErrorReply {
    (
        ErrorCode::Forbidden,
        format!("your token does not allow you to {action} room {room}"),
    )
}

fn not_found(client: &str) -> ErrorReply {
    (ErrorCode::NotFound, format!("no connection {client}"))
}

/// The error frame's code and message for a failure of a shared operation.
fn from_state(failure: Failure) -> ErrorReply {
    let code = match &failure {
        Failure::NotFound(_) => ErrorCode::NotFound,
        Failure::Unavailable(_) => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    };
    (code, failure.to_string())
}

/// A connection id from a command; an id that cannot exist is simply not found.
pub(crate) fn parse_connection_id(text: &str) -> Result<ConnectionId, ErrorReply> {
    text.parse().map_err(|_| not_found(text))
}
