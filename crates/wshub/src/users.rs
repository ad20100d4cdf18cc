//! The index of connections by user id, and the cap on connections per user.
//!
//! A connection belongs to a user when the auth hook returned an [`Identity`](crate::Identity)
//! with a non-empty user id, or when the application called
//! [`Connection::set_user`](crate::Connection::set_user). The index maps each user to its
//! open connections, so finding, messaging or disconnecting one user costs one hash lookup
//! whatever the number of connections.
//!
//! Each entry counts *slots*: its registered connections plus upgrades accepted for that
//! user whose socket has not arrived yet. The cap is checked against slots, so two
//! simultaneous handshakes of one user cannot both slip under it. A slot taken at the
//! handshake is a [`UserSlot`]; it is given back when dropped, unless the connection was
//! registered, in which case the slot is released when the connection unregisters.
//!
//! Locking: one `std::sync::Mutex` held for map operations and for pushing into queues
//! (which never waits), never across an `.await`, and never while holding another hub lock.
//! A connection's user ([`Shared::user`]) changes only under this lock.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{ConnectionId, connection::Shared, hub::HubInner};

/// One user's connections.
#[derive(Debug, Default)]
struct Entry {
    /// Registered connections plus handshakes in flight for this user.
    slots: usize,
    connections: Vec<Arc<Shared>>,
}

/// Connections by user id.
#[derive(Debug, Default)]
pub(crate) struct Users {
    map: Mutex<HashMap<Arc<str>, Entry>>,
}

/// Why a connection could not be given a user.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The user already has the most connections allowed.
    Full,
    /// The connection has ended.
    Gone,
}

impl Users {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        // Every critical section leaves the map consistent, so a poisoned lock is usable.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for `user` unless it already holds `cap` (0: no cap).
    fn reserve(&self, user: &str, cap: usize) -> bool {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(user) {
            if cap != 0 && entry.slots >= cap {
                return false;
            }
            entry.slots += 1;
        } else {
            map.insert(
                Arc::from(user),
                Entry {
                    slots: 1,
                    connections: Vec::new(),
                },
            );
        }
        true
    }

    /// Gives back a slot that never became a registered connection.
    fn release(&self, user: &str) {
        let mut map = self.lock();
        release_slot(&mut map, user);
    }

    /// Files a registered connection under the user its slot was taken for.
    fn attach(&self, user: &str, shared: &Arc<Shared>) {
        let mut map = self.lock();
        let Some(key) = map.get_key_value(user).map(|(k, _)| Arc::clone(k)) else {
            return;
        };
        if let Some(entry) = map.get_mut(user) {
            entry.connections.push(Arc::clone(shared));
            *shared.user() = Some(key);
        }
    }

    /// Moves a connection to `user` (or to no user), checking the cap.
    pub(crate) fn assign(
        &self,
        shared: &Arc<Shared>,
        user: Option<&str>,
        cap: usize,
    ) -> Result<(), Refusal> {
        let mut map = self.lock();
        if shared.gone.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Refusal::Gone);
        }
        let current = shared.user().clone();
        if current.as_deref() == user {
            return Ok(());
        }
        let key = match user {
            None => None,
            Some(user) => {
                let entry = map.entry(Arc::from(user)).or_default();
                if cap != 0 && entry.slots >= cap {
                    return Err(Refusal::Full);
                }
                entry.slots += 1;
                entry.connections.push(Arc::clone(shared));
                map.get_key_value(user).map(|(k, _)| Arc::clone(k))
            }
        };
        if let Some(old) = current {
            remove_connection(&mut map, &old, shared.info.id);
        }
        *shared.user() = key;
        Ok(())
    }

    /// Drops an ended connection from the index (a no-op for a connection without a user).
    pub(crate) fn detach(&self, shared: &Arc<Shared>) {
        let mut map = self.lock();
        let Some(user) = shared.user().clone() else {
            return;
        };
        remove_connection(&mut map, &user, shared.info.id);
    }

    /// Calls `f` with the user's connections, under the lock (so `f` must not wait).
    pub(crate) fn with_connections<T>(&self, user: &str, f: impl FnOnce(&[Arc<Shared>]) -> T) -> T {
        let map = self.lock();
        f(map.get(user).map_or(&[][..], |e| e.connections.as_slice()))
    }

    /// How many users have at least one open connection.
    pub(crate) fn count(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| !e.connections.is_empty())
            .count()
    }
}

fn release_slot(map: &mut HashMap<Arc<str>, Entry>, user: &str) {
    if let Some(entry) = map.get_mut(user) {
        entry.slots = entry.slots.saturating_sub(1);
        if entry.slots == 0 && entry.connections.is_empty() {
            map.remove(user);
        }
    }
}

fn remove_connection(map: &mut HashMap<Arc<str>, Entry>, user: &str, id: ConnectionId) {
    if let Some(entry) = map.get_mut(user)
        && let Some(position) = entry.connections.iter().position(|c| c.info.id == id)
    {
        entry.connections.swap_remove(position);
        release_slot(map, user);
    }
}

/// A slot under the per-user cap, taken at the handshake for the user the auth hook named.
#[derive(Debug)]
pub(crate) struct UserSlot {
    hub: Arc<HubInner>,
    user: Arc<str>,
    /// Still owed back: the connection has not been registered.
    held: bool,
}

impl UserSlot {
    /// Takes a slot for `user`, or `None` when the user is at the cap.
    pub(crate) fn take(hub: &Arc<HubInner>, user: &str) -> Option<Self> {
        hub.users
            .reserve(user, hub.config.max_connections_per_user)
            .then(|| Self {
                hub: Arc::clone(hub),
                user: Arc::from(user),
                held: true,
            })
    }

    /// Files the registered connection under the slot's user; from now on the slot is
    /// released when the connection unregisters.
    pub(crate) fn attach(mut self, shared: &Arc<Shared>) {
        self.held = false;
        self.hub.users.attach(&self.user, shared);
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if self.held {
            self.hub.users.release(&self.user);
        }
    }
}
