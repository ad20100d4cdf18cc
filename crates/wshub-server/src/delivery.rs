//! What this node delivers to its own connections: each room's publications in offset
//! order, exactly once, and subscribes (with `since`) with no gap and no duplicate between
//! the replay and the live messages.
//!
//! # Per-room state
//!
//! For each room with local subscribers the node keeps a [`RoomState`]: the position
//! (epoch, offset) of the last publication it delivered, the publications that arrived
//! ahead of a missing one, and how many local subscribers (and subscribes under way) need
//! the room. A publication can reach the node from two places, the reply to its own
//! publish and the backplane's room channel, in either order, and publishes of other nodes
//! can overtake one another on the way. [`ServerState::offer`] takes each under the room's
//! lock: an offset already delivered is dropped, the next one is delivered (then whatever
//! waited for it), a later one waits. If the missing one has not come after
//! [`GAP_WAIT`], it is read from the backplane's history; if history no longer has it (or
//! the room's epoch changed: its history was lost), the node skips ahead and tells the
//! room's local subscribers with an `unrecoverable` frame (docs/PROTOCOL.md): what
//! they would have learnt as `recovered: false` had they resubscribed.
//!
//! # Subscribing
//!
//! A subscribe first makes sure the node receives the room's channel (the first local
//! subscriber subscribes it, under a node-wide async lock that orders channel subscribes
//! and unsubscribes), then reads the backplane's history outside any lock, then, under the
//! room's lock: the node has delivered up to offset `X`; the subscriber is sent the `ok`
//! (reporting `X`), the history after its `since` up to `X`, and joins the room, so that
//! `X + 1` onwards reaches it live. If the history read ended before `X` (publications
//! arrived meanwhile), or the subscriber claims an offset the node has not delivered yet,
//! it reads again. The room lock is a `std::sync::Mutex`, never held across an `.await`;
//! lock order is room lock → the hub's locks.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use wshub::{CloseCode, Connection, Hub};
use wshub_backplane::{Answer, Event, Events, HistoryQuery, Publication};
use wshub_protocol::{Offset, RoomName, StreamPosition};

use crate::{
    metrics::OutKind,
    state::{Failure, ServerState, message_frame, text},
};

/// How long a missing publication may be late before it is read from history.
pub(crate) const GAP_WAIT: Duration = Duration::from_millis(100);

/// How many times a subscribe reads history before it gives up on a replay.
const SUBSCRIBE_ATTEMPTS: usize = 20;

/// One room's delivery state on this node; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct RoomState {
    /// Local subscribers, and subscribes under way.
    refs: usize,
    /// The last delivered publication's epoch and offset; `None` until the first subscribe
    /// has read the room's position.
    delivered: Option<StreamPosition>,
    /// Publications that arrived early, by offset, with their frame when known.
    pending: BTreeMap<u64, (Publication, Option<Bytes>)>,
    /// Whether a task is filling a gap.
    filling: bool,
}

/// Every room with local subscribers.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    map: Mutex<HashMap<RoomName, Arc<Mutex<RoomState>>>>,
    /// Orders the channel subscribes and unsubscribes, and the `refs` changes that decide
    /// them.
    channels: tokio::sync::Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Rooms {
    fn get(&self, room: &RoomName) -> Option<Arc<Mutex<RoomState>>> {
        lock(&self.map).get(room).cloned()
    }

    /// How many rooms this node follows.
    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

/// The outcome of a subscribe, for its `ok`.
#[derive(Debug)]
pub(crate) struct Subscribed {
    /// Whether the connection was not in the room before.
    pub(crate) joined: bool,
}

impl ServerState {
    /// Makes sure this node receives `room`'s publications, and counts one more local
    /// need for it. Pair with [`ServerState::untrack`].
    pub(crate) async fn track(&self, room: &RoomName) -> Result<(), Failure> {
        let _channels = self.rooms.channels.lock().await;
        let (state, new) = {
            let mut map = lock(&self.rooms.map);
            let state = Arc::clone(map.entry(room.clone()).or_default());
            let mut guard = lock(&state);
            guard.refs += 1;
            let new = guard.refs == 1;
            drop(guard);
            (state, new)
        };
        if new && let Err(error) = self.backplane().subscribe(room).await {
            let mut map = lock(&self.rooms.map);
            let mut guard = lock(&state);
            guard.refs -= 1;
            if guard.refs == 0 {
                map.remove(room);
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// One local need for `room` fewer; the last one unsubscribes its channel.
    pub(crate) async fn untrack(&self, room: &RoomName) {
        let _channels = self.rooms.channels.lock().await;
        let last = {
            let mut map = lock(&self.rooms.map);
            let Some(state) = map.get(room).cloned() else {
                return;
            };
            let mut guard = lock(&state);
            guard.refs = guard.refs.saturating_sub(1);
            let last = guard.refs == 0;
            if last {
                map.remove(room);
            }
            last
        };
        if last && let Err(error) = self.backplane().unsubscribe(room).await {
            tracing::warn!(%error, %room, "could not unsubscribe the room's channel");
        }
    }

    /// Delivers a publication to this node's subscribers of its room, in offset order,
    /// exactly once (see the [module docs](self)). `frame` is its `message` frame when the
    /// caller has it.
    pub(crate) fn offer(
        self: &Arc<Self>,
        hub: &Hub,
        publication: Publication,
        frame: Option<Bytes>,
    ) {
        let Some(state) = self.rooms.get(&publication.room) else {
            // Nobody here is subscribed.
            return;
        };
        let room = publication.room.clone();
        let mut guard = lock(&state);
        let gap = self.offer_locked(hub, &mut guard, publication, frame);
        if gap && !guard.filling {
            guard.filling = true;
            drop(guard);
            self.spawn_gap_fill(hub.clone(), room, false);
        }
    }

    /// [`ServerState::offer`] under the room's lock; returns whether a gap is waiting.
    fn offer_locked(
        &self,
        hub: &Hub,
        state: &mut RoomState,
        publication: Publication,
        frame: Option<Bytes>,
    ) -> bool {
        let position = publication.position.clone();
        let Some(delivered) = &mut state.delivered else {
            // Before the first subscribe read the room's position: keep it for then.
            state
                .pending
                .insert(position.offset.get(), (publication, frame));
            return false;
        };
        if delivered.epoch != position.epoch {
            // The room's history was lost and numbering started again: follow the new
            // epoch, and tell the subscribers that what they missed is gone.
            tracing::warn!(room = %publication.room, "the room's epoch changed");
            *delivered = StreamPosition::new(position.epoch.clone(), Offset::ZERO);
            state
                .pending
                .retain(|_, (p, _)| p.position.epoch == position.epoch);
            self.tell_unrecoverable(hub, &publication.room, delivered);
        }
        let next = delivered.offset.get().saturating_add(1);
        match position.offset.get() {
            offset if offset < next => false,
            offset if offset == next => {
                self.deliver(hub, &publication, frame);
                delivered.offset = position.offset;
                self.drain(hub, state);
                false
            }
            offset => {
                state.pending.insert(offset, (publication, frame));
                true
            }
        }
    }

    /// Delivers the pending publications that follow the last delivered one; drops those
    /// already delivered.
    fn drain(&self, hub: &Hub, state: &mut RoomState) {
        let Some(delivered) = &mut state.delivered else {
            return;
        };
        while let Some(entry) = state.pending.first_entry() {
            let offset = *entry.key();
            if offset <= delivered.offset.get() || entry.get().0.position.epoch != delivered.epoch {
                entry.remove();
                continue;
            }
            if offset != delivered.offset.get().saturating_add(1) {
                break;
            }
            let (publication, frame) = entry.remove();
            self.deliver(hub, &publication, frame);
            delivered.offset = Offset(offset);
        }
    }

    /// Tells this node's subscribers of `room` that publications before `resumed` that they
    /// have not received are lost, and that delivery continues after `resumed`.
    fn tell_unrecoverable(&self, hub: &Hub, room: &RoomName, resumed: &StreamPosition) {
        if let Some(message) = text(wshub_protocol::encode::unrecoverable(room, resumed)) {
            let delivered = hub.broadcast_to_room(room.as_str(), message);
            self.counters.record_out(OutKind::Reply, delivered);
        }
    }

    fn deliver(&self, hub: &Hub, publication: &Publication, frame: Option<Bytes>) {
        let frame = frame.or_else(|| message_frame(publication));
        if let Some(message) = frame.and_then(text) {
            let delivered = hub.broadcast_to_room(publication.room.as_str(), message);
            self.counters.record_out(OutKind::Message, delivered);
        }
    }

    /// Waits [`GAP_WAIT`] for a late publication, then reads what is missing from history;
    /// with `catch_up`, reads once even without a known gap (after the backplane
    /// connection came back).
    fn spawn_gap_fill(self: &Arc<Self>, hub: Hub, room: RoomName, catch_up: bool) {
        let state = Arc::clone(self);
        tokio::spawn(async move {
            let mut force = catch_up;
            loop {
                tokio::time::sleep(GAP_WAIT).await;
                let Some(room_state) = state.rooms.get(&room) else {
                    return;
                };
                let from = {
                    let mut guard = lock(&room_state);
                    match &guard.delivered {
                        Some(delivered) if force || !guard.pending.is_empty() => delivered.clone(),
                        _ => {
                            guard.filling = false;
                            return;
                        }
                    }
                };
                force = false;
                let query = HistoryQuery::Since {
                    position: from,
                    limit: usize::MAX,
                };
                let page = match state.backplane().history(&room, query).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(%error, %room, "cannot read history to fill a gap");
                        continue;
                    }
                };
                let mut guard = lock(&room_state);
                for publication in page.publications {
                    state.offer_locked(&hub, &mut guard, publication, None);
                }
                if !page.recovered {
                    // History no longer reaches back: skip to what is there (the first
                    // waiting publication, or the room's latest offset), and say so.
                    let first = guard.pending.keys().next().copied();
                    let skipped = match &mut guard.delivered {
                        Some(delivered) if delivered.epoch != page.position.epoch => {
                            *delivered = page.position.clone();
                            Some(delivered.clone())
                        }
                        Some(delivered) => {
                            let to = match first {
                                Some(first) => first.saturating_sub(1),
                                None => page.position.offset.get(),
                            };
                            (to > delivered.offset.get()).then(|| {
                                tracing::warn!(%room, from = %delivered.offset, to, "publications lost; skipping ahead");
                                delivered.offset = Offset(to);
                                delivered.clone()
                            })
                        }
                        None => None,
                    };
                    if let Some(resumed) = skipped {
                        let epoch = resumed.epoch.clone();
                        guard.pending.retain(|_, (p, _)| p.position.epoch == epoch);
                        state.tell_unrecoverable(&hub, &room, &resumed);
                    }
                    state.drain(&hub, &mut guard);
                }
            }
        });
    }

    /// Subscribes `conn` to `room` (see the [module docs](self)): `reply` is called under
    /// the room's lock with the `ok`'s position, `recovered` (with `since`) and the
    /// replay, just before the connection joins.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        conn: &Connection,
        room: &RoomName,
        since: Option<&StreamPosition>,
        reply: impl FnOnce(&StreamPosition, Option<bool>, Vec<Bytes>),
    ) -> Result<Subscribed, Failure> {
        let hub = conn.hub().clone();
        let already_in = conn.rooms().iter().any(|r| r == room.as_str());
        if !already_in {
            self.track(room).await?;
            self.presence_add(room, conn).await;
        }
        let result = self.join(&hub, conn, room, since, reply).await;
        match result {
            Ok(true) => Ok(Subscribed { joined: true }),
            Ok(false) => Ok(Subscribed { joined: false }),
            Err(failure) => {
                if !already_in {
                    self.leave_backplane(room, conn).await;
                }
                Err(failure)
            }
        }
    }

    async fn join(
        self: &Arc<Self>,
        hub: &Hub,
        conn: &Connection,
        room: &RoomName,
        since: Option<&StreamPosition>,
        reply: impl FnOnce(&StreamPosition, Option<bool>, Vec<Bytes>),
    ) -> Result<bool, Failure> {
        let state = self.rooms.get(room).ok_or(Failure::Internal)?;
        let mut reply = Some(reply);
        for attempt in 1..=SUBSCRIBE_ATTEMPTS {
            let query = match since {
                Some(since) => HistoryQuery::Since {
                    position: since.clone(),
                    limit: usize::MAX,
                },
                None => HistoryQuery::Latest { limit: 0 },
            };
            let page = self.backplane().history(room, query).await?;
            let last_attempt = attempt == SUBSCRIBE_ATTEMPTS;
            if let Some(joined) =
                self.try_join(hub, &state, conn, room, since, &page, attempt, &mut reply)
            {
                return joined;
            }
            if last_attempt {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(Failure::Internal)
    }

    /// One attempt of [`ServerState::join`] under the room's lock: `None` when the history
    /// read does not cover what the node delivered (read again).
    #[allow(clippy::too_many_arguments)]
    fn try_join(
        &self,
        hub: &Hub,
        state: &Mutex<RoomState>,
        conn: &Connection,
        room: &RoomName,
        since: Option<&StreamPosition>,
        page: &wshub_backplane::HistoryPage,
        attempt: usize,
        reply: &mut Option<impl FnOnce(&StreamPosition, Option<bool>, Vec<Bytes>)>,
    ) -> Option<Result<bool, Failure>> {
        let mut guard = lock(state);
        let stale = guard
            .delivered
            .as_ref()
            .is_some_and(|d| d.epoch != page.position.epoch);
        // A first subscribe starts from the room's position; so does one that finds the
        // node following an epoch the room no longer has (read twice to be sure it is not
        // the read that is stale).
        if guard.delivered.is_none() || (stale && attempt > 1) {
            let epoch = page.position.epoch.clone();
            guard.pending.retain(|_, (p, _)| p.position.epoch == epoch);
            guard.delivered = Some(page.position.clone());
            self.drain(hub, &mut guard);
        }
        let delivered = guard
            .delivered
            .clone()
            .unwrap_or_else(|| page.position.clone());
        let (replay, recovered) = match since {
            None => (Vec::new(), None),
            Some(_) if attempt == SUBSCRIBE_ATTEMPTS => {
                tracing::warn!(%room, "subscribe could not catch up with the room; no replay");
                (Vec::new(), Some(false))
            }
            Some(since) => {
                let same_epoch = delivered.epoch == page.position.epoch;
                let covered = page.position.offset >= delivered.offset;
                // A subscriber that already saw more than this node delivered (it came from
                // a node further ahead) waits for this one to catch up.
                let ahead = since.epoch == delivered.epoch
                    && since.offset > delivered.offset
                    && since.offset <= page.position.offset;
                if !same_epoch || !covered || ahead {
                    return None;
                }
                let replay = page
                    .publications
                    .iter()
                    .filter(|p| p.position.offset <= delivered.offset)
                    .filter_map(message_frame)
                    .collect();
                (replay, Some(page.recovered))
            }
        };
        if let Some(reply) = reply.take() {
            reply(&delivered, recovered, replay);
        }
        let joined = conn.join(room.as_str());
        drop(guard);
        Some(joined.map_err(|_| Failure::Refused("the connection is closing".to_owned())))
    }

    /// Removes `conn` from `room` in the backplane's presence and this node's tracking
    /// (after it left the hub's room).
    pub(crate) async fn leave_backplane(&self, room: &RoomName, conn: &Connection) {
        if let Err(error) = self.backplane().presence_remove(room, conn.id()).await {
            tracing::warn!(%error, "presence not removed from the backplane");
        }
        self.untrack(room).await;
    }

    /// Delivers what other nodes send until the backplane's events end.
    pub(crate) async fn pump(self: Arc<Self>, hub: Hub, mut events: Events) {
        while let Some(event) = events.recv().await {
            match event {
                Event::Publication(publication) => self.offer(&hub, publication, None),
                Event::Broadcast { payload } => {
                    if let Some(message) = text(payload) {
                        let delivered = hub.broadcast(message);
                        self.counters.record_out(OutKind::Broadcast, delivered);
                    }
                }
                // The answer travels back to the node that asked, which answers its client
                // as a local send or disconnect would have been answered (see `state`).
                Event::Send { to, payload, reply } => {
                    let answer = match text(payload).map(|message| hub.send_to(to, message)) {
                        Some(Ok(())) => {
                            self.counters.record_out(OutKind::Direct, 1);
                            Answer::Delivered
                        }
                        Some(Err(wshub::Error::NotFound(_))) => Answer::NoSuchConnection,
                        // Closing, or its queue is full (or, on a bug, not UTF-8).
                        Some(Err(_)) | None => Answer::Refused,
                    };
                    reply.answer(answer);
                }
                Event::Disconnect { client, reply } => {
                    let answer = match hub.connection(client) {
                        Some(conn) => {
                            conn.close(CloseCode::NORMAL, "disconnected by server");
                            Answer::Delivered
                        }
                        None => Answer::NoSuchConnection,
                    };
                    reply.answer(answer);
                }
                Event::RoomEvent { room, payload } => {
                    if let Some(message) = text(payload) {
                        let delivered = hub.broadcast_to_room(room.as_str(), message);
                        self.counters.record_out(OutKind::Presence, delivered);
                    }
                }
                Event::Resumed => {
                    let rooms: Vec<RoomName> = lock(&self.rooms.map).keys().cloned().collect();
                    for room in rooms {
                        if let Some(state) = self.rooms.get(&room) {
                            let mut guard = lock(&state);
                            if !guard.filling {
                                guard.filling = true;
                                drop(guard);
                                self.spawn_gap_fill(hub.clone(), room, true);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
