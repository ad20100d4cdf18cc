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
//! # When the backplane is disturbed
//!
//! - **Epochs follow the backplane, never a publication.** A publication of another epoch
//!   than the delivered one is dropped and makes the node read the room's history, which
//!   says which epoch is current: a new one is followed from its oldest retained
//!   publication, announced to every local subscriber with `unrecoverable` (whether a
//!   publication, a catch-up or a subscribe found it); a late one of an old epoch changes
//!   nothing.
//! - **History that goes back is a lost history.** A read that shows the delivered epoch
//!   with a latest offset below the delivered one (the backplane's data was restored from
//!   an older copy) makes the node renew the room's epoch
//!   ([`Backplane::renew_epoch`](wshub_backplane::Backplane::renew_epoch)) and announce it,
//!   rather than number offsets it already delivered a second time.
//! - **Outages are caught up.** [`Event::Resumed`] (the backplane connection closed and is
//!   back, however briefly) makes every followed room read its history once, a gap fill
//!   already running included.
//!
//! # Subscribing
//!
//! A subscribe first makes sure the node receives the room's channel (the first local
//! subscriber subscribes it, under a node-wide async lock that orders channel subscribes
//! and unsubscribes), then reads the backplane's history outside any lock, then, under the
//! room's lock: the node has delivered up to offset `X`; the subscriber is sent the `ok`
//! (reporting `X`), the history after its `since` up to `X`, and joins the room, so that
//! `X + 1` onwards reaches it live. If the history read does not match the node's position
//! (another epoch, or it ended before `X`), or the subscriber claims an offset the node has
//! not delivered yet but the backplane has, the node catches up from history first (as a
//! gap fill would), then the subscribe reads again. The room lock is a `std::sync::Mutex`,
//! never held across an `.await`; lock order is room lock → the hub's locks.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use wshub::{CloseCode, Connection, Hub};
use wshub_backplane::{Answer, Event, Events, HistoryPage, HistoryRange, Publication};
use wshub_protocol::{LostRange, Offset, RoomName, StreamPosition};

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
    /// Read the room's history once even without a known gap: the backplane connection
    /// came back (what was published meanwhile may not have come).
    catch_up: bool,
    /// A publication of another epoch arrived: either the room's history was replaced (a
    /// new epoch) or it is a late one of an epoch the room has left. Only the backplane
    /// can tell which, so the next read decides; until then such publications are dropped
    /// (history gives them again).
    check_epoch: bool,
}

/// What one subscribe attempt under the room's lock found.
enum Attempt {
    /// Joined (or failed to, the connection closing).
    Done(Result<bool, Failure>),
    /// The read does not match what this node delivered (another epoch, or offsets beyond
    /// it): this node catches up from the backplane first, then the subscribe reads again.
    CatchUp,
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
            self.spawn_gap_fill(hub.clone(), room);
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
            // Never follow an epoch on a publication's word: a late one of an epoch the
            // room has left would take the node back. The next read of the backplane says
            // which epoch is the room's (see `apply_page`).
            state.check_epoch = true;
            return true;
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

    /// Tells this node's subscribers of `room`, who received everything up to `delivered`,
    /// that publications before `resumed` that they have not received are lost (the frame
    /// lists them), and that delivery continues after `resumed`.
    fn tell_unrecoverable(
        &self,
        hub: &Hub,
        room: &RoomName,
        delivered: &StreamPosition,
        resumed: &StreamPosition,
    ) {
        let lost = LostRange::between(delivered, resumed, None);
        if let Some(message) = text(wshub_protocol::encode::unrecoverable(room, resumed, &lost)) {
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

    /// Waits [`GAP_WAIT`] for a late publication, then catches up from history while
    /// something asks for it: a gap, [`RoomState::catch_up`] or [`RoomState::check_epoch`].
    fn spawn_gap_fill(self: &Arc<Self>, hub: Hub, room: RoomName) {
        let state = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(GAP_WAIT).await;
                let Some(room_state) = state.rooms.get(&room) else {
                    return;
                };
                {
                    let mut guard = lock(&room_state);
                    let wanted = guard.delivered.is_some()
                        && (guard.catch_up || guard.check_epoch || !guard.pending.is_empty());
                    if !wanted {
                        guard.filling = false;
                        return;
                    }
                    guard.catch_up = false;
                    guard.check_epoch = false;
                }
                if let Err(error) = state.catch_up(&hub, &room).await {
                    tracing::warn!(%error, %room, "cannot read history to catch up");
                    lock(&room_state).catch_up = true;
                }
            }
        });
    }

    /// Reads the room's history after what this node delivered and delivers what it
    /// missed, following the backplane's epoch (see [`ServerState::apply_page`]). A room
    /// whose latest offset is below what this node delivered in the same epoch (the
    /// backplane's history went back) gets a new epoch first.
    async fn catch_up(self: &Arc<Self>, hub: &Hub, room: &RoomName) -> Result<(), Failure> {
        for _ in 0..3 {
            let Some(room_state) = self.rooms.get(room) else {
                return Ok(());
            };
            let Some(from) = lock(&room_state).delivered.clone() else {
                return Ok(());
            };
            let query = HistoryRange::Since {
                position: from.clone(),
                limit: usize::MAX,
            };
            let page = self.backplane().history(room, query).await?;
            // `from` was delivered, so the backplane had it before this read.
            if page.position.epoch == from.epoch && page.position.offset < from.offset {
                tracing::warn!(
                    %room, delivered = %from.offset, latest = %page.position.offset,
                    "the room's history went back; renewing its epoch"
                );
                self.backplane().renew_epoch(room, &from).await?;
                continue;
            }
            self.apply_page(hub, &mut lock(&room_state), room, page);
            return Ok(());
        }
        Err(Failure::Unavailable(format!(
            "the history of {room} keeps going back"
        )))
    }

    /// Delivers what a history read after this node's position holds, under the room's
    /// lock. When the read shows another epoch, the room's history was replaced: the node
    /// follows it from its oldest retained publication and tells the room's subscribers
    /// that what came before is lost. When history no longer reaches back, it skips to
    /// what is there, and says so too.
    fn apply_page(&self, hub: &Hub, state: &mut RoomState, room: &RoomName, page: HistoryPage) {
        let Some(delivered) = state.delivered.clone() else {
            return;
        };
        if page.position.epoch != delivered.epoch {
            let start = page
                .publications
                .first()
                .map_or(page.position.offset, |first| {
                    Offset(first.position.offset.get().saturating_sub(1))
                });
            let resumed = StreamPosition::new(page.position.epoch.clone(), start);
            tracing::warn!(%room, epoch = %resumed.epoch, "the room's epoch changed");
            state.delivered = Some(resumed.clone());
            // Only publications of the delivered epoch wait here.
            state.pending.clear();
            self.tell_unrecoverable(hub, room, &delivered, &resumed);
            for publication in page.publications {
                self.offer_locked(hub, state, publication, None);
            }
            return;
        }
        for publication in page.publications {
            self.offer_locked(hub, state, publication, None);
        }
        if page.recovered {
            return;
        }
        // History no longer reaches back: skip to what is there (the first waiting
        // publication, or the room's latest offset), and say so.
        let first = state.pending.keys().next().copied();
        let Some(delivered) = &mut state.delivered else {
            return;
        };
        let to = match first {
            Some(first) => first.saturating_sub(1),
            None => page.position.offset.get(),
        };
        if to > delivered.offset.get() {
            tracing::warn!(%room, from = %delivered.offset, to, "publications lost; skipping ahead");
            let before = delivered.clone();
            delivered.offset = Offset(to);
            let resumed = delivered.clone();
            self.tell_unrecoverable(hub, room, &before, &resumed);
            self.drain(hub, state);
        }
    }

    /// Subscribes `conn` to `room` (see the [module docs](self)): `reply` is called under
    /// the room's lock with the `ok`'s position, `recovered` (with `since`) and the
    /// replay, just before the connection joins.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        conn: &Connection,
        room: &RoomName,
        since: Option<&StreamPosition>,
        reply: impl FnOnce(&StreamPosition, Option<bool>, Vec<(Offset, Bytes)>),
    ) -> Result<Subscribed, Failure> {
        // Refused at once rather than after a command's timeout: the client tries again.
        if let wshub_backplane::Health::Degraded(why) = self.backplane().health() {
            return Err(Failure::Unavailable(why));
        }
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
        reply: impl FnOnce(&StreamPosition, Option<bool>, Vec<(Offset, Bytes)>),
    ) -> Result<bool, Failure> {
        let state = self.rooms.get(room).ok_or(Failure::Internal)?;
        let mut reply = Some(reply);
        for attempt in 1..=SUBSCRIBE_ATTEMPTS {
            let query = match since {
                Some(since) => HistoryRange::Since {
                    position: since.clone(),
                    limit: usize::MAX,
                },
                None => HistoryRange::Latest { limit: 0 },
            };
            let page = self.backplane().history(room, query).await?;
            match self.try_join(hub, &state, conn, room, since, &page, attempt, &mut reply) {
                Attempt::Done(joined) => return joined,
                Attempt::CatchUp => self.catch_up(hub, room).await?,
            }
        }
        Err(Failure::Internal)
    }

    /// One attempt of [`ServerState::join`] under the room's lock.
    #[allow(clippy::too_many_arguments)]
    fn try_join(
        &self,
        hub: &Hub,
        state: &Mutex<RoomState>,
        conn: &Connection,
        room: &RoomName,
        since: Option<&StreamPosition>,
        page: &HistoryPage,
        attempt: usize,
        reply: &mut Option<impl FnOnce(&StreamPosition, Option<bool>, Vec<(Offset, Bytes)>)>,
    ) -> Attempt {
        let mut guard = lock(state);
        // The first subscribe starts from the room's position.
        if guard.delivered.is_none() {
            let epoch = page.position.epoch.clone();
            guard.pending.retain(|_, (p, _)| p.position.epoch == epoch);
            guard.delivered = Some(page.position.clone());
            self.drain(hub, &mut guard);
        }
        let delivered = guard
            .delivered
            .clone()
            .unwrap_or_else(|| page.position.clone());
        let last_attempt = attempt == SUBSCRIBE_ATTEMPTS;
        // Another epoch than this node follows (one of the two is stale: the catch-up
        // tells which, and announces a change to the room's subscribers), or a read older
        // than what this node delivered since.
        let mismatch =
            delivered.epoch != page.position.epoch || page.position.offset < delivered.offset;
        // A subscriber that already saw more than this node delivered (it came from a node
        // further ahead) is served once this node has caught up.
        let ahead = since.is_some_and(|since| {
            since.epoch == delivered.epoch
                && since.offset > delivered.offset
                && since.offset <= page.position.offset
        });
        if (mismatch || ahead) && !last_attempt {
            return Attempt::CatchUp;
        }
        let (replay, recovered) = match since {
            None => (Vec::new(), None),
            Some(_) if mismatch || ahead => {
                tracing::warn!(%room, "subscribe could not catch up with the room; no replay");
                (Vec::new(), Some(false))
            }
            Some(_) => {
                let replay = page
                    .publications
                    .iter()
                    .filter(|p| p.position.offset <= delivered.offset)
                    .filter_map(|p| message_frame(p).map(|frame| (p.position.offset, frame)))
                    .collect();
                (replay, Some(page.recovered))
            }
        };
        if let Some(reply) = reply.take() {
            reply(&delivered, recovered, replay);
        }
        let joined = conn.join(room.as_str());
        drop(guard);
        Attempt::Done(joined.map_err(|_| Failure::Refused("the connection is closing".to_owned())))
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
                            // A fill already running reads once more too: its last read
                            // may have come before what was lost.
                            guard.catch_up = true;
                            if !guard.filling {
                                guard.filling = true;
                                drop(guard);
                                self.spawn_gap_fill(hub.clone(), room);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
