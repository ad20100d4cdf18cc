//! The memory backplane: one node, everything in this process (the default).
//!
//! History is a [`History`] of publication payloads; offsets are numbered under the room's
//! history lock, so they are gap-free. There are no other nodes: broadcasts and room events
//! go nowhere, a send or disconnect reaches only this node's own ids (and waits, at most
//! [`DEFAULT_ANSWER_TIMEOUT`], for the node's answer), and presence is a map. Every
//! operation takes effect before its future is first polled, so a caller that spawns the
//! future still sees the effect in order.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

use bytes::Bytes;
use tokio::sync::mpsc;

use wshub_protocol::{ConnectionId, RoomName, StreamPosition};

use crate::{
    Backplane, BoxFuture, DEFAULT_ANSWER_TIMEOUT, Error, Event, Events, Health, HistoryPage,
    HistoryRange, PresenceMember, Publication, Reply, Routed, answer_within,
    history::{History, HistoryConfig},
};

/// The memory backplane's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryConfig {
    /// How much history each room keeps.
    pub history: HistoryConfig,
    /// The node id of this node's connections (`Hub::node_id`); 0 by default.
    pub node_id: u64,
}

/// The single-node backplane. See the [module docs](self).
#[derive(Debug)]
pub struct MemoryBackplane {
    node_id: u64,
    history: History,
    /// Room → members, in the order they were added.
    presence: Mutex<HashMap<RoomName, Vec<PresenceMember>>>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: Mutex<Option<Events>>,
}

impl MemoryBackplane {
    /// An empty backplane.
    pub fn new(config: MemoryConfig) -> MemoryBackplane {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        MemoryBackplane {
            node_id: config.node_id,
            history: History::new(config.history),
            presence: Mutex::new(HashMap::new()),
            events_tx,
            events_rx: Mutex::new(Some(events_rx)),
        }
    }

    /// The history store.
    pub fn store(&self) -> &History {
        &self.history
    }

    /// A page of `room`'s history; with `create`, the room gets state (and an epoch) if it
    /// had none, as a subscribe needs.
    fn read(&self, room: &RoomName, query: &HistoryRange, create: bool) -> HistoryPage {
        let publication = |position: StreamPosition, payload: Bytes| Publication {
            room: room.clone(),
            position,
            payload,
        };
        let read = |state: &mut crate::history::RoomHistory| {
            let (messages, first, recovered) = match query {
                HistoryRange::Since { position, limit } => {
                    let recovery = state.since(position, *limit);
                    (recovery.messages, recovery.first, recovery.recovered)
                }
                HistoryRange::Latest { limit } => {
                    let page = state.latest(*limit);
                    (page.messages, page.first, true)
                }
            };
            let epoch = state.epoch().clone();
            let publications = messages
                .into_iter()
                .zip(first.get()..)
                .map(|(payload, offset)| {
                    publication(StreamPosition::new(epoch.clone(), offset.into()), payload)
                })
                .collect();
            HistoryPage {
                publications,
                position: state.position(),
                recovered,
            }
        };
        let page = if create {
            Some(self.history.with_room(room, read))
        } else {
            self.history.peek(room, read)
        };
        page.unwrap_or_else(|| HistoryPage::of_unused_room(query))
    }

    /// Hands the event made with a fresh [`Reply`] to this node when `to` is one of its
    /// own; the future waits for the answer.
    fn route(
        &self,
        to: ConnectionId,
        event: impl FnOnce(Reply) -> Event,
    ) -> BoxFuture<'_, Result<Routed, Error>> {
        let (reply, answer) = Reply::channel();
        let handed = to.node() == self.node_id && self.events_tx.send(event(reply)).is_ok();
        Box::pin(async move {
            if !handed {
                return Ok(Routed::NoSuchNode);
            }
            Ok(answer_within(answer, DEFAULT_ANSWER_TIMEOUT)
                .await
                .map_or(Routed::Unanswered, Routed::from))
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Backplane for MemoryBackplane {
    fn node_id(&self) -> u64 {
        self.node_id
    }

    fn take_events(&self) -> Option<Events> {
        lock(&self.events_rx).take()
    }

    fn publish<'a>(
        &'a self,
        room: &'a RoomName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Publication, Error>> {
        let appended = self.history.append(room, |_| payload.clone());
        ready(Ok(Publication {
            room: room.clone(),
            position: appended.position,
            payload,
        }))
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        query: HistoryRange,
    ) -> BoxFuture<'a, Result<HistoryPage, Error>> {
        ready(Ok(self.read(room, &query, true)))
    }

    fn renew_epoch<'a>(
        &'a self,
        room: &'a RoomName,
        _seen: &'a StreamPosition,
    ) -> BoxFuture<'a, Result<StreamPosition, Error>> {
        // This process numbered every offset it could have seen, and its history never
        // goes back: there is nothing to renew.
        ready(Ok(self.history.position(room)))
    }

    fn read_history<'a>(
        &'a self,
        room: &'a RoomName,
        query: HistoryRange,
    ) -> BoxFuture<'a, Result<HistoryPage, Error>> {
        ready(Ok(self.read(room, &query, false)))
    }

    fn subscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), Error>> {
        // Publications are numbered and returned by `publish` on this very node; following
        // the room keeps its state while someone is subscribed.
        self.history.follow(room, true);
        ready(Ok(()))
    }

    fn unsubscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), Error>> {
        self.history.follow(room, false);
        ready(Ok(()))
    }

    fn broadcast(&self, _payload: Bytes) -> BoxFuture<'_, Result<(), Error>> {
        ready(Ok(()))
    }

    fn send(&self, to: ConnectionId, payload: Bytes) -> BoxFuture<'_, Result<Routed, Error>> {
        self.route(to, |reply| Event::Send { to, payload, reply })
    }

    fn disconnect(&self, client: ConnectionId) -> BoxFuture<'_, Result<Routed, Error>> {
        self.route(client, |reply| Event::Disconnect { client, reply })
    }

    fn room_event<'a>(
        &'a self,
        _room: &'a RoomName,
        _payload: Bytes,
    ) -> BoxFuture<'a, Result<(), Error>> {
        ready(Ok(()))
    }

    fn presence_add<'a>(
        &'a self,
        room: &'a RoomName,
        member: PresenceMember,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let mut presence = lock(&self.presence);
        let members = presence.entry(room.clone()).or_default();
        match members.iter_mut().find(|m| m.client == member.client) {
            Some(existing) => *existing = member,
            None => members.push(member),
        }
        ready(Ok(()))
    }

    fn presence_remove<'a>(
        &'a self,
        room: &'a RoomName,
        client: ConnectionId,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let mut presence = lock(&self.presence);
        if let Some(members) = presence.get_mut(room) {
            members.retain(|m| m.client != client);
            if members.is_empty() {
                presence.remove(room);
            }
        }
        ready(Ok(()))
    }

    fn presence<'a>(
        &'a self,
        room: &'a RoomName,
    ) -> BoxFuture<'a, Result<Vec<PresenceMember>, Error>> {
        let members = lock(&self.presence).get(room).cloned().unwrap_or_default();
        ready(Ok(members))
    }

    fn health(&self) -> Health {
        Health::Connected
    }

    fn clamp_limit(&self, requested: Option<usize>) -> usize {
        self.history.clamp_limit(requested)
    }

    fn local_rooms(&self) -> Option<usize> {
        Some(self.history.room_count())
    }

    fn history_usage(&self) -> Option<crate::history::HistoryUsage> {
        Some(self.history.usage())
    }

    fn sweep(&self) {
        self.history.sweep();
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
