//! A room's place in its history: [`Offset`], [`Epoch`] and [`StreamPosition`].
//!
//! Every room numbers its messages 1, 2, 3, ... with no gaps ([`Offset`]) and names the
//! history those numbers belong to ([`Epoch`]). When a room's history is lost (it expired,
//! or a node restarted), numbering starts again under a new epoch, so a client asking to
//! resume from "offset 7 of epoch X" can tell a clean recovery from a history that was
//! replaced under its feet.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The position of a message in its room: 1 for the first, +1 for each next one.
///
/// Offset 0 means "before the first message": it is the latest offset of a room nothing has
/// been published to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset before any message.
    pub const ZERO: Offset = Offset(0);

    /// The numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next offset, or `None` on overflow (after 2⁶⁴−1 messages).
    pub const fn checked_next(self) -> Option<Offset> {
        match self.0.checked_add(1) {
            Some(next) => Some(Offset(next)),
            None => None,
        }
    }
}

impl From<u64> for Offset {
    fn from(offset: u64) -> Self {
        Offset(offset)
    }
}

impl From<Offset> for u64 {
    fn from(offset: Offset) -> Self {
        offset.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The name of one continuous history of a room; it changes whenever that history is lost.
///
/// An opaque string: servers choose it (randomly), clients only store it and send it back.
/// Cloning is cheap (a reference count).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// Wraps a string chosen by a server, or received from a client.
    pub fn new(epoch: impl Into<Arc<str>>) -> Epoch {
        Epoch(epoch.into())
    }

    /// The epoch as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Epoch {
    fn from(epoch: &str) -> Self {
        Epoch(Arc::from(epoch))
    }
}

impl From<String> for Epoch {
    fn from(epoch: String) -> Self {
        Epoch(Arc::from(epoch))
    }
}

impl AsRef<str> for Epoch {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Epoch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Epoch::from)
    }
}

/// A point in a room's history: `{"epoch": "...", "offset": n}`, as sent in a `since`.
///
/// For a client it means "I have seen every message of this epoch up to this offset".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The history the offset belongs to.
    pub epoch: Epoch,
    /// The last offset seen (0 for none).
    pub offset: Offset,
}

impl StreamPosition {
    /// A position from its parts.
    pub fn new(epoch: Epoch, offset: Offset) -> StreamPosition {
        StreamPosition { epoch, offset }
    }
}

/// A run of a room's offsets that a client did not receive and never will:
/// `{"epoch": "...", "from": F, "to": T}`, both ends inclusive, in `epoch`.
///
/// `to` is absent when the end is unknown: the epoch ended (the room's history was lost
/// and a new epoch began), so every offset of `epoch` from `from` on is gone, however many
/// there were. See "Lost ranges" in docs/PROTOCOL.md.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LostRange {
    /// The epoch the offsets belong to.
    pub epoch: Epoch,
    /// The first lost offset.
    pub from: Offset,
    /// The last lost offset; `None` when every offset of `epoch` from `from` on is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Offset>,
}

impl LostRange {
    /// What a client at `since` lost when it is told to carry on from `resumed` (an `ok`'s
    /// or an `unrecoverable` frame's position) and is sent, before live messages, the
    /// offsets of `resumed.epoch` from `first_replayed` to `resumed.offset` (`None`: no
    /// replay). Empty when nothing is missing: `since` is `resumed`'s epoch and the replay
    /// (or the live messages) follow it directly, or `since` claims more than `resumed`.
    ///
    /// At most two ranges, oldest first: when the epoch changed, the rest of `since`'s epoch
    /// (without an end), then the start of the new epoch that is not replayed.
    pub fn between(
        since: &StreamPosition,
        resumed: &StreamPosition,
        first_replayed: Option<Offset>,
    ) -> Vec<LostRange> {
        let mut lost = Vec::new();
        let from = if since.epoch == resumed.epoch {
            since.offset.get().saturating_add(1)
        } else {
            lost.push(LostRange {
                epoch: since.epoch.clone(),
                from: Offset(since.offset.get().saturating_add(1)),
                to: None,
            });
            1
        };
        let to = first_replayed.map_or(resumed.offset.get(), |first| first.get().saturating_sub(1));
        if from <= to {
            lost.push(LostRange {
                epoch: resumed.epoch.clone(),
                from: Offset(from),
                to: Some(Offset(to)),
            });
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        assert_eq!(Offset::ZERO.checked_next(), Some(Offset(1)));
        assert_eq!(Offset(u64::MAX).checked_next(), None);
        assert_eq!(serde_json::to_string(&Offset(5)).unwrap(), "5");
        assert_eq!(serde_json::from_str::<Offset>("5").unwrap(), Offset(5));
        assert!(serde_json::from_str::<Offset>("-1").is_err());
        assert!(serde_json::from_str::<Offset>("1.5").is_err());
    }

    #[test]
    fn positions() {
        let pos: StreamPosition = serde_json::from_str(r#"{"epoch":"ab","offset":3}"#).unwrap();
        assert_eq!(pos, StreamPosition::new("ab".into(), Offset(3)));
        assert_eq!(
            serde_json::to_string(&pos).unwrap(),
            r#"{"epoch":"ab","offset":3}"#
        );
        assert!(serde_json::from_str::<StreamPosition>(r#"{"epoch":1,"offset":3}"#).is_err());
        assert!(serde_json::from_str::<StreamPosition>(r#"{"epoch":"a"}"#).is_err());
    }

    fn range(epoch: &str, from: u64, to: Option<u64>) -> LostRange {
        LostRange {
            epoch: epoch.into(),
            from: Offset(from),
            to: to.map(Offset),
        }
    }

    #[test]
    fn lost_ranges() {
        let at = |epoch: &str, offset: u64| StreamPosition::new(epoch.into(), Offset(offset));
        // Trimmed: 3..=7 gone, 8..=12 replayed.
        assert_eq!(
            LostRange::between(&at("e", 2), &at("e", 12), Some(Offset(8))),
            [range("e", 3, Some(7))]
        );
        // Nothing retained at all: everything after `since` is gone.
        assert_eq!(
            LostRange::between(&at("e", 2), &at("e", 12), None),
            [range("e", 3, Some(12))]
        );
        // Fully recovered, or nothing missed, or a claim beyond the room: nothing lost.
        assert!(LostRange::between(&at("e", 2), &at("e", 12), Some(Offset(3))).is_empty());
        assert!(LostRange::between(&at("e", 12), &at("e", 12), None).is_empty());
        assert!(LostRange::between(&at("e", 20), &at("e", 12), None).is_empty());
        // A new epoch: the rest of the old one, then what the new one no longer holds.
        assert_eq!(
            LostRange::between(&at("old", 7), &at("new", 9), Some(Offset(5))),
            [range("old", 8, None), range("new", 1, Some(4))]
        );
        assert_eq!(
            LostRange::between(&at("old", 7), &at("new", 9), Some(Offset(1))),
            [range("old", 8, None)]
        );
        assert_eq!(
            LostRange::between(&at("old", 7), &at("new", 0), None),
            [range("old", 8, None)]
        );
        assert_eq!(
            serde_json::to_string(&LostRange::between(&at("old", 7), &at("new", 2), None)).unwrap(),
            r#"[{"epoch":"old","from":8},{"epoch":"new","from":1,"to":2}]"#
        );
        let parsed: LostRange = serde_json::from_str(r#"{"epoch":"e","from":3,"to":7}"#).unwrap();
        assert_eq!(parsed, range("e", 3, Some(7)));
    }
}
