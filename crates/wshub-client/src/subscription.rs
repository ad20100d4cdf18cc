//! [`Subscription`]: one room's stream of messages and presence events, which survives
//! reconnects.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;
use wshub_protocol::{
    Epoch, LostRange, MessageFrame, Offset, PresenceEvent, RoomName, StreamPosition,
};

use crate::error::Error;
use crate::protocol::Core;

/// What a [`Subscription`] yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// A message published to the room, each offset once, in order.
    Message(MessageFrame),
    /// Another connection joined the room.
    Join(PresenceEvent),
    /// Another connection left the room.
    Leave(PresenceEvent),
    /// After a reconnect, the room was joined again and every message published meanwhile
    /// is replayed next: nothing was lost.
    Recovered {
        /// The last message delivered before the drop.
        since: StreamPosition,
        /// The room's latest offset when it was joined again.
        latest: Offset,
    },
    /// Messages of the room were lost: after a reconnect, the room was joined again but the
    /// retained history no longer reaches back to `since` (or the replay was cut for size),
    /// or the room's history was replaced (a new `epoch`, e.g. the server restarted); or,
    /// while subscribed, the server sent `unrecoverable`. Whatever history is left is
    /// replayed next. `lost` says exactly which offsets are gone, so that only those need
    /// fetching from elsewhere.
    RecoveryFailed {
        /// The last message delivered before the loss.
        since: StreamPosition,
        /// The room's epoch now.
        epoch: Epoch,
        /// The room's latest offset now (for `unrecoverable`: the position delivery
        /// continues after).
        latest: Offset,
        /// The offsets that are lost, oldest first (docs/PROTOCOL.md, "Lost ranges"): in
        /// `since.epoch` from `since.offset + 1`, without an end (`to: None`) when the epoch
        /// changed, and in `epoch` up to the offset before the first replayed message. Empty
        /// when the server does not say (a version before lost ranges, or a `since` beyond
        /// the room's latest offset).
        lost: Vec<LostRange>,
    },
    /// The server refused to join the room again after a reconnect (say, the token no
    /// longer allows it); the subscription ends after this event.
    Failed(Error),
}

/// A room subscription: a [`Stream`] of [`SubscriptionEvent`]s.
///
/// It outlives reconnects: after each one the client joins the room again with `since`
/// set to the last message delivered, so messages published meanwhile are replayed and
/// none is delivered twice. Dropping it leaves the room (without waiting for the reply);
/// [`Subscription::unsubscribe`] leaves and waits. The stream ends when the client is
/// closed or the subscription fails.
#[derive(Debug)]
pub struct Subscription {
    room: RoomName,
    generation: u64,
    events: mpsc::Receiver<SubscriptionEvent>,
    core: Arc<Core>,
    left: bool,
}

impl Subscription {
    pub(crate) fn new(
        room: RoomName,
        generation: u64,
        events: mpsc::Receiver<SubscriptionEvent>,
        core: Arc<Core>,
    ) -> Subscription {
        Subscription {
            room,
            generation,
            events,
            core,
            left: false,
        }
    }

    /// The room.
    pub fn room(&self) -> &RoomName {
        &self.room
    }

    /// The next event; `None` when the subscription ended. Cancel-safe.
    pub async fn recv(&mut self) -> Option<SubscriptionEvent> {
        self.events.recv().await
    }

    /// The next message, skipping presence and recovery events. Cancel-safe.
    pub async fn next_message(&mut self) -> Option<MessageFrame> {
        loop {
            if let SubscriptionEvent::Message(message) = self.events.recv().await? {
                return Some(message);
            }
        }
    }

    /// The position of the last message delivered to this subscription (as sent in
    /// `since` after a reconnect), to persist and resume from elsewhere.
    pub fn position(&self) -> Option<StreamPosition> {
        self.core.position(&self.room)
    }

    /// Leaves the room and waits for the server's reply.
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        self.left = true;
        self.core
            .unsubscribe(&self.room, Some(self.generation))
            .await
    }
}

impl Stream for Subscription {
    type Item = SubscriptionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.left {
            self.core.forget(&self.room, self.generation);
        }
    }
}
