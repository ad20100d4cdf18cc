//! `join` and `leave` events of big rooms, coalesced per tick: each member's net change
//! within [`TICK`] is announced once, and a change undone within the tick (subscribe then
//! unsubscribe) is not announced at all.
//!
//! A room's events cost one frame per member each, so one client subscribing and
//! unsubscribing in a loop would make a 1000-member room receive 1000 frames per command.
//! In rooms with fewer than [`COALESCE_FROM_MEMBERS`] members on this node events go out at
//! once, in order with the room's messages; from that size on, a connection can cause at
//! most one event per room per tick however fast it toggles.

use std::{
    collections::HashMap,
    mem,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use wshub::{Connection, ConnectionId, Hub};
use wshub_protocol::RoomName;

use crate::state::{ServerState, user_of};

/// How long changes of a big room's members are gathered before they are announced.
pub const TICK: Duration = Duration::from_millis(100);

/// From how many members on this node a room's presence events are coalesced.
pub const COALESCE_FROM_MEMBERS: usize = 100;

/// The changes of big rooms' members during the current tick.
#[derive(Debug, Default)]
pub(crate) struct PresenceBatcher {
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    rooms: HashMap<RoomName, Vec<Change>>,
    flush_scheduled: bool,
}

/// One connection's membership of one room during a tick.
#[derive(Debug)]
struct Change {
    id: ConnectionId,
    user: Option<String>,
    /// Whether it was a member when the tick began.
    was_member: bool,
    /// Whether it is a member now.
    is_member: bool,
    /// How many joins and leaves it made during the tick.
    events: u64,
}

/// A change that outlived its tick, to announce.
#[derive(Debug)]
pub(crate) struct Announcement {
    pub(crate) room: RoomName,
    pub(crate) id: ConnectionId,
    pub(crate) user: Option<String>,
    pub(crate) joined: bool,
}

impl PresenceBatcher {
    /// Keeps `conn`'s join (or leave) of `room` for the tick when the room is big, or
    /// already has changes waiting (so that one connection's events stay in order), and
    /// says whether it did; otherwise the caller announces it at once.
    pub(crate) fn hold(
        &self,
        state: &Arc<ServerState>,
        hub: &Hub,
        room: &RoomName,
        conn: &Connection,
        joined: bool,
    ) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let waiting = pending.rooms.contains_key(room);
        if !waiting && hub.room_size(room.as_str()) < COALESCE_FROM_MEMBERS {
            return false;
        }
        let changes = pending.rooms.entry(room.clone()).or_default();
        match changes.iter_mut().find(|change| change.id == conn.id()) {
            Some(change) => {
                change.is_member = joined;
                change.events += 1;
            }
            None => changes.push(Change {
                id: conn.id(),
                user: user_of(conn).map(str::to_owned),
                was_member: !joined,
                is_member: joined,
                events: 1,
            }),
        }
        if !mem::replace(&mut pending.flush_scheduled, true) {
            let state = Arc::clone(state);
            let hub = hub.clone();
            tokio::spawn(async move {
                tokio::time::sleep(TICK).await;
                let due = state.presence_batcher.take_due();
                for announcement in due.announcements {
                    state.announce_presence(&hub, announcement);
                }
                state.counters.record_presence_coalesced(due.withheld);
            });
        }
        true
    }

    /// Ends the tick: the net changes to announce, and how many events were withheld.
    fn take_due(&self) -> Due {
        let rooms = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.flush_scheduled = false;
            mem::take(&mut pending.rooms)
        };
        let mut due = Due::default();
        for (room, changes) in rooms {
            for change in changes {
                let announced = change.was_member != change.is_member;
                due.withheld += change.events - u64::from(announced);
                if !announced {
                    continue;
                }
                due.announcements.push(Announcement {
                    room: room.clone(),
                    id: change.id,
                    user: change.user,
                    joined: change.is_member,
                });
            }
        }
        due
    }
}

#[derive(Debug, Default)]
struct Due {
    announcements: Vec<Announcement>,
    /// Joins and leaves that were not announced: undone within the tick, or superseded.
    withheld: u64,
}
