//! Matching replies to commands: every command gets a fresh numeric `id` from a counter, and
//! the reply carrying that `id` (`ok`, `pong` or `error`, docs/PROTOCOL.md "Client to server")
//! finds its waiter here.
//!
//! Ids are never reused for the life of a client, across reconnects too, so a reply can
//! never be taken for the answer to another command.

use std::collections::HashMap;

use wshub_protocol::CommandId;

/// The commands waiting for their reply, each with its waiter `W`.
#[derive(Debug)]
pub(crate) struct Pending<W> {
    last_id: u64,
    waiting: HashMap<CommandId, W>,
}

impl<W> Default for Pending<W> {
    fn default() -> Self {
        Pending {
            last_id: 0,
            waiting: HashMap::new(),
        }
    }
}

impl<W> Pending<W> {
    /// Allocates the next id and records its waiter.
    pub(crate) fn register(&mut self, waiter: W) -> CommandId {
        // 2^64 commands will not be sent; wrapping keeps this total anyway.
        self.last_id = self.last_id.wrapping_add(1);
        let id = CommandId::from(self.last_id);
        self.waiting.insert(id.clone(), waiter);
        id
    }

    /// The waiter of the command with this id, removed.
    pub(crate) fn take(&mut self, id: &CommandId) -> Option<W> {
        self.waiting.remove(id)
    }

    /// Every waiter, removed (the connection dropped: no reply will come).
    pub(crate) fn drain(&mut self) -> Vec<(CommandId, W)> {
        self.waiting.drain().collect()
    }

    /// How many commands wait.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use wshub_protocol::ServerFrame;

    use super::*;

    #[test]
    fn replies_find_their_command_by_id_in_any_order() {
        let mut pending = Pending::default();
        let a = pending.register("a");
        let b = pending.register("b");
        let c = pending.register("c");
        assert_eq!([&a, &b, &c].map(ToString::to_string), ["1", "2", "3"]);
        // Replies arrive out of order, as a server may answer them.
        let replies = [
            r#"{"type":"pong","id":3}"#,
            r#"{"type":"error","id":1,"code":"forbidden","message":"no"}"#,
            r#"{"type":"ok","id":2,"room":"r","offset":9}"#,
        ];
        let mut matched = Vec::new();
        for text in replies {
            let frame = ServerFrame::decode(text).unwrap();
            let id = frame.reply_id().unwrap();
            matched.push(pending.take(id).unwrap());
        }
        assert_eq!(matched, ["c", "a", "b"]);
        assert_eq!(pending.len(), 0);
        // A duplicate or unknown reply matches nothing.
        assert_eq!(pending.take(&CommandId::from(2u64)), None);
        assert_eq!(pending.take(&CommandId::from("2".to_owned())), None);
    }

    #[test]
    fn ids_are_not_reused_after_a_drop() {
        let mut pending = Pending::default();
        pending.register(1);
        pending.register(2);
        let dropped = pending.drain();
        assert_eq!(dropped.len(), 2);
        assert_eq!(pending.register(3), CommandId::from(3u64));
    }
}
