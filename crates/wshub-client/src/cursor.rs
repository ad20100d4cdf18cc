//! A room's cursor: the last message delivered, the `since` to resubscribe with, and the
//! rule that drops duplicates.
//!
//! Invariant: within one epoch, the application sees each offset at most once and in
//! increasing order. A message whose offset is not above the last delivered one of the
//! same epoch is a duplicate (a replay overlapping what was already delivered) and is
//! dropped. A new epoch means the room's history was replaced (docs/PROTOCOL.md: the epoch
//! changes whenever history is lost), so numbering starts over and nothing from it is a
//! duplicate.

use wshub_protocol::{Epoch, MessageFrame, Offset, StreamPosition};

/// How a subscription resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resumed {
    /// The first subscribe: only messages after `offset` follow.
    Fresh,
    /// Every message after `since` is replayed.
    Recovered,
    /// Messages after `since` may be lost (history too short, or a new epoch).
    Failed,
}

/// The position of one subscription.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cursor {
    position: Option<StreamPosition>,
}

impl Cursor {
    /// Where to resume from: `since` of the next subscribe, `None` before the first.
    pub(crate) fn since(&self) -> Option<StreamPosition> {
        self.position.clone()
    }

    /// The subscribe sent with `since` was answered `ok` with the room's `epoch`, latest
    /// `offset` and `recovered`.
    pub(crate) fn subscribed(
        &mut self,
        since: Option<&StreamPosition>,
        epoch: Epoch,
        offset: Offset,
        recovered: Option<bool>,
    ) -> Resumed {
        let Some(since) = since else {
            // Without `since`, only messages published after the `ok` are delivered.
            self.position = Some(StreamPosition::new(epoch, offset));
            return Resumed::Fresh;
        };
        if since.epoch != epoch {
            // A new history: the server replays it from its start, all of it new to us.
            self.position = Some(StreamPosition::new(epoch, Offset::ZERO));
            return if recovered == Some(true) {
                Resumed::Recovered
            } else {
                Resumed::Failed
            };
        }
        // Never back within an epoch, even when the server reports a lower latest offset
        // (a node behind the one we came from): an offset names one message for the whole
        // epoch, so what we already have stays delivered, and is not delivered again.
        self.position = Some(since.clone());
        if recovered == Some(false) {
            Resumed::Failed
        } else {
            Resumed::Recovered
        }
    }

    /// The server says publications up to `position` are lost (`unrecoverable`): resume
    /// after it (or after what was delivered, when that is further in the same epoch).
    pub(crate) fn lost(&mut self, position: StreamPosition) {
        match &self.position {
            Some(current)
                if current.epoch == position.epoch && current.offset > position.offset => {}
            _ => self.position = Some(position),
        }
    }

    /// Whether to deliver `message`; advances the cursor when so.
    pub(crate) fn accept(&mut self, message: &MessageFrame) -> bool {
        match &mut self.position {
            Some(position) if position.epoch == message.epoch => {
                if message.offset <= position.offset {
                    return false;
                }
                position.offset = message.offset;
                true
            }
            // No ok yet, or the history was replaced while subscribed.
            _ => {
                self.position = Some(message.position());
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use wshub_protocol::{Payload, RoomName};

    use super::*;

    fn message(epoch: &str, offset: u64) -> MessageFrame {
        MessageFrame {
            room: RoomName::parse("r").unwrap(),
            data: Payload::from_value(&offset).unwrap(),
            from: None,
            offset: Offset(offset),
            epoch: Epoch::from(epoch),
        }
    }

    #[test]
    fn an_unrecoverable_gap_moves_the_cursor_past_it() {
        let mut cursor = Cursor::default();
        cursor.subscribed(None, Epoch::from("e1"), Offset(3), None);
        assert_eq!(deliver(&mut cursor, &[message("e1", 4)]), [4]);
        // Offsets 5 to 9 were lost; delivery continues after 9 in a new epoch.
        cursor.lost(StreamPosition::new(Epoch::from("e2"), Offset(9)));
        assert_eq!(
            cursor.since(),
            Some(StreamPosition::new(Epoch::from("e2"), Offset(9)))
        );
        assert_eq!(
            deliver(&mut cursor, &[message("e2", 9), message("e2", 10)]),
            [10]
        );
    }

    fn deliver(cursor: &mut Cursor, frames: &[MessageFrame]) -> Vec<u64> {
        frames
            .iter()
            .filter(|m| cursor.accept(m))
            .map(|m| m.offset.0)
            .collect()
    }

    #[test]
    fn fresh_subscription_then_duplicates_dropped() {
        let mut cursor = Cursor::default();
        assert_eq!(cursor.since(), None);
        let resumed = cursor.subscribed(None, "e".into(), Offset(10), None);
        assert_eq!(resumed, Resumed::Fresh);
        let frames: Vec<_> = [9, 11, 12, 12, 11, 13].map(|o| message("e", o)).into();
        assert_eq!(deliver(&mut cursor, &frames), [11, 12, 13]);
        assert_eq!(
            cursor.since(),
            Some(StreamPosition::new("e".into(), Offset(13)))
        );
    }

    #[test]
    fn recovery_replays_only_what_was_missed() {
        let mut cursor = Cursor::default();
        cursor.subscribed(None, "e".into(), Offset(0), None);
        let first: Vec<_> = (1..=5).map(|o| message("e", o)).collect();
        assert_eq!(deliver(&mut cursor, &first), [1, 2, 3, 4, 5]);
        let since = cursor.since().unwrap();
        let resumed = cursor.subscribed(Some(&since), "e".into(), Offset(25), Some(true));
        assert_eq!(resumed, Resumed::Recovered);
        // A replay overlapping what was delivered (3..=25), then live 26.
        let replay: Vec<_> = (3..=26).map(|o| message("e", o)).collect();
        assert_eq!(deliver(&mut cursor, &replay), (6..=26).collect::<Vec<_>>());
    }

    #[test]
    fn a_new_epoch_fails_recovery_and_starts_numbering_over() {
        let mut cursor = Cursor::default();
        cursor.subscribed(None, "old".into(), Offset(40), None);
        assert_eq!(deliver(&mut cursor, &[message("old", 41)]), [41]);
        let since = cursor.since().unwrap();
        let resumed = cursor.subscribed(Some(&since), "new".into(), Offset(50), Some(false));
        assert_eq!(resumed, Resumed::Failed);
        let replay: Vec<_> = (1..=50).map(|o| message("new", o)).collect();
        assert_eq!(deliver(&mut cursor, &replay), (1..=50).collect::<Vec<_>>());
        // A stray frame of the old epoch is not confused with the new numbering.
        assert_eq!(
            deliver(&mut cursor, &[message("new", 50)]),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn same_epoch_without_recovery_and_offsets_beyond_the_server() {
        let mut cursor = Cursor::default();
        cursor.subscribed(None, "e".into(), Offset(100), None);
        let since = cursor.since().unwrap();
        // History no longer reaches back: whatever is replayed is new.
        assert_eq!(
            cursor.subscribed(Some(&since), "e".into(), Offset(300), Some(false)),
            Resumed::Failed
        );
        assert_eq!(deliver(&mut cursor, &[message("e", 200)]), [200]);
        // The server is behind our position in the same epoch (a node that lags the one
        // we came from): we keep ours, and what it sends that we have is not delivered
        // again.
        let since = StreamPosition::new("e".into(), Offset(500));
        cursor.subscribed(Some(&since), "e".into(), Offset(300), Some(false));
        assert_eq!(cursor.since(), Some(since.clone()));
        assert_eq!(
            deliver(
                &mut cursor,
                &[message("e", 301), message("e", 500), message("e", 501)]
            ),
            [501]
        );
        // Nor does an `unrecoverable` behind our position take us back.
        cursor.lost(StreamPosition::new("e".into(), Offset(400)));
        assert_eq!(
            cursor.since(),
            Some(StreamPosition::new("e".into(), Offset(501)))
        );
    }
}
